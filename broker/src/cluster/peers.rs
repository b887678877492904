//! The inner-cluster transport: one node's requests to the other nodes of
//! the cluster (quorum voters, the active controller, brokers), sent over
//! client [`Connection`]s, answered as [`PeerEvent`]s on one channel.
//!
//! Per peer there are two lanes, each one task over its own connection: the
//! fetch lane carries Fetch and FetchSnapshot, the control lane everything
//! else. The quorum's Fetch is a long poll (the leader holds it for up to
//! `fetch_max_wait_ms`), so on one connection it would hold the votes and
//! heartbeats queued behind it past their timeouts.
//!
//! A lane sends its requests one at a time, in order: Kafka answers a
//! connection's requests in order anyway, and the quorum and the controller
//! keep at most a few requests outstanding per peer.
//!
//! Every request gets exactly one event: its response, or
//! [`PeerEvent::Failed`] when the peer is unknown, the lane's queue is full,
//! the connection cannot be opened, times out or breaks, the peer does not
//! speak a version the request needs, or the peer set is stopped (or the
//! peer's address changed) before the answer came.
//!
//! Limits: [`LANE_QUEUE_LIMIT`] queued requests per lane (beyond it `send`
//! fails the request at once); one connection per lane; a request waits
//! its [`Timeouts`] (a Fetch plus its `max_wait_ms`), counted from when it
//! was queued: one still queued by then fails unsent.
//! The quorum's own request timeout must be the same, or it would give up
//! on a request and queue its retry behind the stale one.
//! After a failed connection attempt the lane fails requests at once until
//! its backoff (from [`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`], with seeded
//! jitter) has passed, so a dead peer is not hammered; the first request
//! after that reconnects.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::{
    AllocateProducerIdsRequest, AllocateProducerIdsResponse, AlterPartitionRequest, AlterPartitionResponse,
    BeginQuorumEpochRequest, BeginQuorumEpochResponse, BrokerHeartbeatRequest, BrokerHeartbeatResponse,
    BrokerRegistrationRequest, BrokerRegistrationResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeQuorumRequest, DescribeQuorumResponse, ElectLeadersRequest,
    ElectLeadersResponse, EndQuorumEpochRequest, EndQuorumEpochResponse, FetchRequest, FetchResponse,
    FetchSnapshotRequest, FetchSnapshotResponse, UnregisterBrokerRequest, UnregisterBrokerResponse, VoteRequest,
    VoteResponse,
};
use kafka_protocol::protocol::Request as _;
use tokio::sync::{mpsc, oneshot};

use crate::client::connection::Connection;
use crate::io::{self, Env};
use crate::quorum;

/// Requests queued on one lane, waiting or in flight not counted; a request
/// beyond it fails at once. The quorum keeps one Fetch and a handful of
/// control requests per peer outstanding, so reaching it means the peer is
/// stuck and more queueing would only grow memory.
pub const LANE_QUEUE_LIMIT: usize = 64;

/// The first wait after a failed connection attempt.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest wait between connection attempts to a dead peer.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

macro_rules! peer_apis {
    ($($api:ident($req:ty, $resp:ty)),* $(,)?) => {
        /// A request to another node of the cluster.
        #[derive(Debug, Clone, PartialEq)]
        pub enum PeerRequest {
            $($api($req),)*
        }

        /// The answer to a [`PeerRequest`] of the same kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum PeerResponse {
            $($api($resp),)*
        }

        impl PeerRequest {
            /// The Kafka API key.
            pub fn api_key(&self) -> i16 {
                match self {
                    $(PeerRequest::$api(_) => <$req>::KEY,)*
                }
            }

            /// Send on `conn` at the highest version both sides speak.
            async fn exchange(&self, conn: &Connection, timeout: Duration) -> Result<PeerResponse, String> {
                match self {
                    $(PeerRequest::$api(r) => {
                        let v = conn.version::<$req>().map_err(|e| e.to_string())?;
                        let min = min_version(<$req>::KEY);
                        if v < min {
                            return Err(format!(
                                "{} speaks {} only up to v{v}; the cluster needs v{min}",
                                conn.addr(),
                                stringify!($api)
                            ));
                        }
                        conn.request(r, v, timeout).await.map(PeerResponse::$api).map_err(|e| e.to_string())
                    })*
                }
            }
        }
    };
}

peer_apis! {
    Vote(VoteRequest, VoteResponse),
    BeginQuorumEpoch(BeginQuorumEpochRequest, BeginQuorumEpochResponse),
    EndQuorumEpoch(EndQuorumEpochRequest, EndQuorumEpochResponse),
    Fetch(FetchRequest, FetchResponse),
    FetchSnapshot(FetchSnapshotRequest, FetchSnapshotResponse),
    DescribeQuorum(DescribeQuorumRequest, DescribeQuorumResponse),
    BrokerRegistration(BrokerRegistrationRequest, BrokerRegistrationResponse),
    BrokerHeartbeat(BrokerHeartbeatRequest, BrokerHeartbeatResponse),
    UnregisterBroker(UnregisterBrokerRequest, UnregisterBrokerResponse),
    CreateTopics(CreateTopicsRequest, CreateTopicsResponse),
    DeleteTopics(DeleteTopicsRequest, DeleteTopicsResponse),
    AlterPartition(AlterPartitionRequest, AlterPartitionResponse),
    ElectLeaders(ElectLeadersRequest, ElectLeadersResponse),
    AllocateProducerIds(AllocateProducerIdsRequest, AllocateProducerIdsResponse),
}

/// The lowest version a request between nodes may go out at: pre-vote needs
/// Vote v2; the quorum's Fetch needs v12 (`last_fetched_epoch`, and the
/// diverging epoch and snapshot id in the answer); AlterPartition needs v3,
/// whose ISR carries broker epochs (`new_isr_with_epochs`, the only ISR
/// field the controller reads when it is set; v3 cannot carry `new_isr`);
/// ElectLeaders v1, the first with an election type.
fn min_version(key: i16) -> i16 {
    match key {
        k if k == VoteRequest::KEY => 2,
        k if k == FetchRequest::KEY => 12,
        k if k == AlterPartitionRequest::KEY => 3,
        k if k == ElectLeadersRequest::KEY => 1,
        _ => 0,
    }
}

impl PeerRequest {
    fn lane(&self) -> Lane {
        match self {
            PeerRequest::Fetch(_) | PeerRequest::FetchSnapshot(_) => Lane::Fetch,
            _ => Lane::Control,
        }
    }

    /// How long to wait for the answer: the quorum's own requests as long
    /// as the quorum waits for them (a Fetch may be held by the leader for
    /// its `max_wait_ms` on top), the others `timeouts.request`.
    fn timeout(&self, timeouts: Timeouts) -> Duration {
        match self {
            PeerRequest::Fetch(f) => timeouts.quorum + Duration::from_millis(f.max_wait_ms.max(0) as u64),
            PeerRequest::FetchSnapshot(_)
            | PeerRequest::Vote(_)
            | PeerRequest::BeginQuorumEpoch(_)
            | PeerRequest::EndQuorumEpoch(_) => timeouts.quorum,
            _ => timeouts.request,
        }
    }
}

/// How long peer requests may go unanswered.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The metadata quorum's requests: the quorum's own request timeout, so
    /// that the transport gives up when the quorum does.
    pub quorum: Duration,
    /// Everything else (broker registration and heartbeats, forwarded
    /// controller requests).
    pub request: Duration,
}

impl From<quorum::Request> for PeerRequest {
    fn from(r: quorum::Request) -> PeerRequest {
        match r {
            quorum::Request::Vote(r) => PeerRequest::Vote(r),
            quorum::Request::BeginQuorumEpoch(r) => PeerRequest::BeginQuorumEpoch(r),
            quorum::Request::EndQuorumEpoch(r) => PeerRequest::EndQuorumEpoch(r),
            quorum::Request::Fetch(r) => PeerRequest::Fetch(r),
            quorum::Request::FetchSnapshot(r) => PeerRequest::FetchSnapshot(r),
            quorum::Request::DescribeQuorum(r) => PeerRequest::DescribeQuorum(r),
        }
    }
}

impl From<quorum::Response> for PeerResponse {
    fn from(r: quorum::Response) -> PeerResponse {
        match r {
            quorum::Response::Vote(r) => PeerResponse::Vote(r),
            quorum::Response::BeginQuorumEpoch(r) => PeerResponse::BeginQuorumEpoch(r),
            quorum::Response::EndQuorumEpoch(r) => PeerResponse::EndQuorumEpoch(r),
            quorum::Response::Fetch(r) => PeerResponse::Fetch(r),
            quorum::Response::FetchSnapshot(r) => PeerResponse::FetchSnapshot(r),
            quorum::Response::DescribeQuorum(r) => PeerResponse::DescribeQuorum(r),
        }
    }
}

/// A quorum response, or the response itself back when it is the
/// controller's.
impl TryFrom<PeerResponse> for quorum::Response {
    type Error = PeerResponse;

    fn try_from(r: PeerResponse) -> Result<quorum::Response, PeerResponse> {
        Ok(match r {
            PeerResponse::Vote(r) => quorum::Response::Vote(r),
            PeerResponse::BeginQuorumEpoch(r) => quorum::Response::BeginQuorumEpoch(r),
            PeerResponse::EndQuorumEpoch(r) => quorum::Response::EndQuorumEpoch(r),
            PeerResponse::Fetch(r) => quorum::Response::Fetch(r),
            PeerResponse::FetchSnapshot(r) => quorum::Response::FetchSnapshot(r),
            PeerResponse::DescribeQuorum(r) => quorum::Response::DescribeQuorum(r),
            other => return Err(other),
        })
    }
}

/// What became of a request given to [`Peers::send`].
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    Response { from: i32, request_id: u64, response: PeerResponse },
    Failed { to: i32, request_id: u64, why: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Lane {
    Control,
    Fetch,
}

impl Lane {
    fn name(self) -> &'static str {
        match self {
            Lane::Control => "control",
            Lane::Fetch => "fetch",
        }
    }
}

struct Job {
    request_id: u64,
    request: PeerRequest,
    /// When it was queued: one that waited its whole timeout behind a
    /// stuck request is failed unsent, since its sender has given up on it
    /// (and sent a fresh one) by then.
    queued_at: Duration,
}

/// The sending side of one lane's task. Dropping it stops the task, which
/// then fails whatever it still holds.
struct LaneHandle {
    jobs: mpsc::Sender<Job>,
    _stop: oneshot::Sender<()>,
}

struct Peer {
    addr: String,
    lanes: BTreeMap<Lane, LaneHandle>,
}

struct State {
    peers: BTreeMap<i32, Peer>,
    stopped: bool,
}

/// One node's connections to the other nodes. Cheap to share behind an
/// `Arc`; every method returns at once.
pub struct Peers {
    env: Env,
    client_id: String,
    timeouts: Timeouts,
    events: mpsc::UnboundedSender<PeerEvent>,
    state: Mutex<State>,
}

impl Peers {
    /// No peers known yet; add them with [`Peers::set_address`].
    pub fn new(env: Env, client_id: String, timeouts: Timeouts, events: mpsc::UnboundedSender<PeerEvent>) -> Peers {
        Peers { env, client_id, timeouts, events, state: Mutex::new(State { peers: BTreeMap::new(), stopped: false }) }
    }

    /// Where node `node_id` listens. A changed address drops the old lanes:
    /// their queued and in-flight requests fail, later ones go to `addr`.
    pub fn set_address(&self, node_id: i32, addr: String) {
        let mut state = self.state.lock().expect("peers lock");
        if state.stopped || state.peers.get(&node_id).is_some_and(|p| p.addr == addr) {
            return;
        }
        let lanes = [Lane::Control, Lane::Fetch]
            .into_iter()
            .map(|lane| (lane, self.start_lane(node_id, &addr, lane)))
            .collect();
        // Replacing the old entry drops its handles, which stops its tasks.
        state.peers.insert(node_id, Peer { addr, lanes });
    }

    /// The address known for `node_id`.
    pub fn address(&self, node_id: i32) -> Option<String> {
        self.state.lock().expect("peers lock").peers.get(&node_id).map(|p| p.addr.clone())
    }

    /// Queue `request` to node `to`; its answer or failure arrives as one
    /// [`PeerEvent`] with `request_id`.
    pub fn send(&self, to: i32, request_id: u64, request: PeerRequest) {
        let state = self.state.lock().expect("peers lock");
        let why = if state.stopped {
            "the node's peer connections are stopped".to_string()
        } else {
            match state.peers.get(&to) {
                None => format!("no address known for node {to}"),
                Some(peer) => {
                    let lane = request.lane();
                    let handle = peer.lanes.get(&lane).expect("every peer has both lanes");
                    match handle.jobs.try_send(Job { request_id, request, queued_at: self.env.elapsed() }) {
                        Ok(()) => return,
                        Err(mpsc::error::TrySendError::Full(_)) => format!(
                            "the {} lane to node {to} ({}) already holds {LANE_QUEUE_LIMIT} requests",
                            lane.name(),
                            peer.addr
                        ),
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            format!("the {} lane to node {to} has stopped", lane.name())
                        }
                    }
                }
            }
        };
        drop(state);
        let _ = self.events.send(PeerEvent::Failed { to, request_id, why });
    }

    /// End every peer task; their queued and in-flight requests fail, and so
    /// does every later [`Peers::send`].
    pub fn stop(&self) {
        let mut state = self.state.lock().expect("peers lock");
        state.stopped = true;
        state.peers.clear();
    }

    fn start_lane(&self, to: i32, addr: &str, lane: Lane) -> LaneHandle {
        let (jobs_tx, jobs_rx) = mpsc::channel(LANE_QUEUE_LIMIT);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = LaneTask {
            env: self.env.clone(),
            to,
            addr: addr.to_string(),
            client_id: self.client_id.clone(),
            timeouts: self.timeouts,
            events: self.events.clone(),
            conn: None,
            backoff: Backoff::default(),
        };
        io::spawn(&self.env, &format!("peer-{to}-{}", lane.name()), task.run(jobs_rx, stop_rx));
        LaneHandle { jobs: jobs_tx, _stop: stop_tx }
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// When a lane may next try to connect.
#[derive(Default)]
struct Backoff {
    /// Failed attempts in a row.
    failures: u32,
    /// `Io::elapsed` before which no attempt is made.
    retry_at: Duration,
}

impl Backoff {
    fn failed(&mut self, now: Duration, random: u64) {
        let base = BACKOFF_MIN.saturating_mul(1 << self.failures.min(16)).min(BACKOFF_MAX);
        // Up to a quarter more, so that nodes restarted together do not
        // reconnect in lockstep.
        let jitter_ms = random % (base.as_millis() as u64 / 4 + 1);
        self.retry_at = now + base + Duration::from_millis(jitter_ms);
        self.failures = self.failures.saturating_add(1);
    }
}

struct LaneTask {
    env: Env,
    to: i32,
    addr: String,
    client_id: String,
    timeouts: Timeouts,
    events: mpsc::UnboundedSender<PeerEvent>,
    conn: Option<Arc<Connection>>,
    backoff: Backoff,
}

impl LaneTask {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>, mut stop: oneshot::Receiver<()>) {
        // Dropping the handle (stop or a new address) ends the task; the
        // `stop` sender is never used otherwise.
        loop {
            let job = tokio::select! {
                biased;
                _ = &mut stop => break,
                job = jobs.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
            };
            let waited = self.env.elapsed().saturating_sub(job.queued_at);
            let Some(left) = job.request.timeout(self.timeouts).checked_sub(waited).filter(|d| !d.is_zero()) else {
                self.fail(job.request_id, format!("given up after {} ms in the queue", waited.as_millis()));
                continue;
            };
            let outcome = tokio::select! {
                biased;
                _ = &mut stop => None,
                r = self.exchange(&job.request, left) => Some(r),
            };
            let Some(outcome) = outcome else {
                self.fail(job.request_id, "stopped before the answer came".into());
                break;
            };
            let event = match outcome {
                Ok(response) => PeerEvent::Response { from: self.to, request_id: job.request_id, response },
                Err(why) => PeerEvent::Failed { to: self.to, request_id: job.request_id, why },
            };
            let _ = self.events.send(event);
        }
        jobs.close();
        while let Ok(job) = jobs.try_recv() {
            self.fail(job.request_id, "stopped before the request was sent".into());
        }
    }

    fn fail(&self, request_id: u64, why: String) {
        let _ = self.events.send(PeerEvent::Failed { to: self.to, request_id, why });
    }

    async fn exchange(&mut self, request: &PeerRequest, timeout: Duration) -> Result<PeerResponse, String> {
        let conn = self.connection(timeout).await?;
        let result = request.exchange(&conn, timeout).await;
        if !conn.is_usable() {
            // Timed out or broken: the next request opens a new connection.
            self.conn = None;
        }
        result
    }

    async fn connection(&mut self, timeout: Duration) -> Result<Arc<Connection>, String> {
        if let Some(conn) = self.conn.as_ref().filter(|c| c.is_usable()) {
            return Ok(conn.clone());
        }
        self.conn = None;
        let now = self.env.elapsed();
        if now < self.backoff.retry_at {
            return Err(format!(
                "node {} ({}) is unreachable; next connection attempt in {} ms",
                self.to,
                self.addr,
                (self.backoff.retry_at - now).as_millis()
            ));
        }
        match Connection::connect(&self.env, &self.addr, &self.client_id, timeout).await {
            Ok(conn) => {
                self.backoff = Backoff::default();
                self.conn = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                self.backoff.failed(self.env.elapsed(), self.env.random_u64());
                Err(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetches_take_the_fetch_lane() {
        assert_eq!(PeerRequest::Fetch(FetchRequest::default()).lane(), Lane::Fetch);
        assert_eq!(PeerRequest::FetchSnapshot(FetchSnapshotRequest::default()).lane(), Lane::Fetch);
        assert_eq!(PeerRequest::Vote(VoteRequest::default()).lane(), Lane::Control);
        assert_eq!(PeerRequest::BrokerHeartbeat(BrokerHeartbeatRequest::default()).lane(), Lane::Control);
    }

    /// Unlike `every_peer_api_is_one_the_client_can_send`, this covers peer
    /// requests the brokers do not serve yet (AlterPartition): one with no
    /// client version range made `Connection::version` panic inside the lane
    /// task, which took the node's heartbeats with it (a leader asking for an
    /// ISR change got itself fenced).
    #[test]
    fn every_peer_request_has_a_client_version_range() {
        let all = [
            PeerRequest::Vote(VoteRequest::default()),
            PeerRequest::BeginQuorumEpoch(BeginQuorumEpochRequest::default()),
            PeerRequest::EndQuorumEpoch(EndQuorumEpochRequest::default()),
            PeerRequest::Fetch(FetchRequest::default()),
            PeerRequest::FetchSnapshot(FetchSnapshotRequest::default()),
            PeerRequest::DescribeQuorum(DescribeQuorumRequest::default()),
            PeerRequest::BrokerRegistration(BrokerRegistrationRequest::default()),
            PeerRequest::BrokerHeartbeat(BrokerHeartbeatRequest::default()),
            PeerRequest::UnregisterBroker(UnregisterBrokerRequest::default()),
            PeerRequest::CreateTopics(CreateTopicsRequest::default()),
            PeerRequest::DeleteTopics(DeleteTopicsRequest::default()),
            PeerRequest::AlterPartition(AlterPartitionRequest::default()),
        ];
        for req in all {
            assert!(crate::client::connection::client_versions(req.api_key()).is_some(), "{req:?}");
        }
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut b = Backoff::default();
        let now = Duration::from_secs(10);
        b.failed(now, 0);
        assert_eq!(b.retry_at, now + BACKOFF_MIN);
        for _ in 0..40 {
            b.failed(now, u64::MAX);
        }
        assert!(b.retry_at <= now + BACKOFF_MAX + BACKOFF_MAX / 4);
        assert!(b.retry_at >= now + BACKOFF_MAX);
    }

    #[test]
    fn quorum_requests_convert_both_ways() {
        let req: PeerRequest = quorum::Request::Vote(VoteRequest::default()).into();
        assert_eq!(req.api_key(), VoteRequest::KEY);
        let resp = quorum::Response::try_from(PeerResponse::Vote(VoteResponse::default()));
        assert_eq!(resp, Ok(quorum::Response::Vote(VoteResponse::default())));
        let other = PeerResponse::BrokerHeartbeat(BrokerHeartbeatResponse::default());
        assert_eq!(quorum::Response::try_from(other.clone()), Err(other));
    }

    #[test]
    fn every_peer_api_is_one_the_client_can_send() {
        for key in [
            VoteRequest::KEY,
            BeginQuorumEpochRequest::KEY,
            EndQuorumEpochRequest::KEY,
            FetchRequest::KEY,
            FetchSnapshotRequest::KEY,
            DescribeQuorumRequest::KEY,
            BrokerRegistrationRequest::KEY,
            BrokerHeartbeatRequest::KEY,
            UnregisterBrokerRequest::KEY,
            CreateTopicsRequest::KEY,
            DeleteTopicsRequest::KEY,
        ] {
            let (_, max) = crate::client::connection::client_versions(key).expect("client speaks it");
            assert!(max >= min_version(key), "api {key}");
            let accepted = crate::wire::accepted_versions(kafka_protocol::messages::ApiKey::try_from(key).unwrap());
            assert!(accepted.is_some_and(|r| r.max >= min_version(key)), "api {key}");
        }
    }
}
