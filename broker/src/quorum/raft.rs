//! The quorum core: one node's Raft state machine, as Kafka's KRaft runs it
//! (KIP-595 with pre-vote from KIP-996 and snapshots from KIP-630), sans IO.
//!
//! The shell feeds [`Input`]s with the time and performs the [`Output`]s in
//! order. Requests and responses are `kafka-protocol`'s structs, so the
//! shell only frames them. The core owns its [`RaftLog`] and appends,
//! truncates and flushes it itself, before anything that depends on the
//! write goes out; the quorum state (epoch, vote, leader) it hands out as
//! [`Output::PersistQuorumState`], which the shell must make durable before
//! performing any later output of the same call.
//!
//! Roles: unattached (no leader known), prospective (pre-vote round: the
//! epoch is not bumped, so a voter returning from a partition cannot disrupt
//! a working quorum), candidate, leader, follower, resigned. Nodes outside
//! the voter set are observers: they fetch but never vote or count.
//!
//! Replication is pull-based: followers Fetch with their log end and last
//! epoch; the leader answers records, or the diverging epoch to truncate to,
//! or the snapshot to download (FetchSnapshot) when the follower is below
//! the log start. The high watermark is the offset a majority of voters have
//! fetched (each voter flushes before fetching further), and it only moves
//! once that offset covers the leader's own LeaderChange entry: entries of
//! earlier epochs are committed only by an entry of the leader's own epoch
//! (Raft's figure 8). A leader that no majority has fetched from within the
//! fetch timeout resigns (check-quorum).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    begin_quorum_epoch_request as bqe_req, begin_quorum_epoch_response as bqe_resp, describe_quorum_request as dq_req,
    describe_quorum_response as dq_resp, end_quorum_epoch_request as eqe_req, end_quorum_epoch_response as eqe_resp,
    fetch_request as f_req, fetch_response as f_resp, fetch_snapshot_request as fs_req,
    fetch_snapshot_response as fs_resp, vote_request as v_req, vote_response as v_resp, BeginQuorumEpochRequest,
    BeginQuorumEpochResponse, DescribeQuorumRequest, DescribeQuorumResponse, EndQuorumEpochRequest,
    EndQuorumEpochResponse, FetchRequest, FetchResponse, FetchSnapshotRequest, FetchSnapshotResponse, TopicName,
    VoteRequest, VoteResponse,
};
use kafka_protocol::protocol::StrBytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use super::config::QuorumConfig;
use super::log::{data_batch, decode_batches, leader_change_batch, LogBatch, RaftLog, SnapshotId};
use super::state::QuorumState;
use crate::record_batch::ValidatedBatches;

/// The metadata log's topic, as KRaft names it.
pub const METADATA_TOPIC: &str = "__cluster_metadata";
pub const METADATA_PARTITION: i32 = 0;
/// Kafka's `Uuid.METADATA_TOPIC_ID`.
pub const METADATA_TOPIC_ID: Uuid = Uuid::from_u64_pair(0, 1);

/// A request between quorum members (or, for DescribeQuorum, from a tool).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Vote(VoteRequest),
    BeginQuorumEpoch(BeginQuorumEpochRequest),
    EndQuorumEpoch(EndQuorumEpochRequest),
    Fetch(FetchRequest),
    FetchSnapshot(FetchSnapshotRequest),
    DescribeQuorum(DescribeQuorumRequest),
}

/// The answer to a [`Request`] of the same kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Vote(VoteResponse),
    BeginQuorumEpoch(BeginQuorumEpochResponse),
    EndQuorumEpoch(EndQuorumEpochResponse),
    Fetch(FetchResponse),
    FetchSnapshot(FetchSnapshotResponse),
    DescribeQuorum(DescribeQuorumResponse),
}

/// What happened, as the shell tells the core.
#[derive(Debug, Clone)]
pub enum Input {
    /// Time passed; see [`Raft::next_deadline`].
    Tick,
    /// A request arrived; answer it with [`Output::Respond`] and the same
    /// `token` (possibly in a later call: the leader holds Fetches that have
    /// nothing new for up to `fetch_max_wait_ms`).
    Request { token: u64, request: Request },
    /// The answer to [`Output::Send`] `request_id`.
    Response { from: i32, request_id: u64, response: Response },
    /// [`Output::Send`] `request_id` could not be delivered (no connection,
    /// broken connection); the core retries after `retry_backoff_ms`.
    SendFailed { to: i32, request_id: u64 },
    /// Append these records (the controller's encoded metadata records) as
    /// the leader. Answered by one [`Output::Proposed`].
    Propose { records: Vec<Bytes> },
    /// The application's state through `end_offset` (exclusive), which it
    /// has applied from [`Output::Committed`]: keep it as the snapshot and
    /// drop the log below it. Answered by one [`Output::SnapshotTaken`].
    Snapshot { end_offset: i64, bytes: Bytes },
    /// Leave leadership gracefully (EndQuorumEpoch), as before a shutdown.
    Resign,
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write this durably (see [`super::QuorumStateFile`]) before performing
    /// any later output of this call.
    PersistQuorumState(QuorumState),
    /// Send `request` to node `to`; report its answer as
    /// [`Input::Response`] with `request_id`, or [`Input::SendFailed`].
    Send { to: i32, request_id: u64, request: Request },
    /// Answer the request that came in with `token`.
    Respond { token: u64, response: Response },
    /// The high watermark moved: `batches` are newly committed, in offset
    /// order, continuing exactly where the previous ones (or the last
    /// [`Output::LoadSnapshot`]) ended. Control batches are included; the
    /// application skips them.
    Committed { high_watermark: i64, batches: Vec<LogBatch> },
    /// Replace the application's state by this snapshot (downloaded from
    /// the leader, or the log's own at start-up); committed batches continue
    /// from `id.end_offset`.
    LoadSnapshot { id: SnapshotId, bytes: Bytes },
    /// The epoch or the known leader changed.
    LeaderChange { epoch: i32, leader_id: Option<i32> },
    /// The answer to [`Input::Propose`].
    Proposed(Result<Proposal, ProposeError>),
    /// The answer to [`Input::Snapshot`].
    SnapshotTaken(Result<SnapshotId, String>),
    /// This voter granted its (real, not pre-) vote to `candidate` in
    /// `epoch`; listed right after the [`Output::Respond`] carrying it, so
    /// an observer learns of the grant when it leaves.
    VoteGranted { epoch: i32, candidate: i32 },
}

/// Where a proposal was appended. It is committed once a
/// [`Output::Committed`] delivers `last_offset` in `epoch`; if a batch of
/// another epoch arrives at that offset instead, the proposal was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    pub epoch: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

/// Why a proposal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader; the leader of epoch {epoch} is {leader_id:?}")]
    NotLeader { leader_id: Option<i32>, epoch: i32 },
    #[error("a batch of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("a proposal holds at least one record")]
    Empty,
    #[error("the metadata log failed: {0}")]
    Storage(String),
}

impl ProposeError {
    /// The Kafka error a forwarded request gets.
    pub fn kafka_error(&self) -> ResponseError {
        match self {
            ProposeError::NotLeader { .. } => ResponseError::NotController,
            ProposeError::TooLarge { .. } => ResponseError::RecordListTooLarge,
            ProposeError::Empty => ResponseError::InvalidRequest,
            ProposeError::Storage(_) => ResponseError::KafkaStorageError,
        }
    }
}

/// A role's name, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleName {
    Unattached,
    Prospective,
    Candidate,
    Leader,
    Follower,
    Resigned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Vote,
    BeginQuorumEpoch,
    EndQuorumEpoch,
    Fetch,
    FetchSnapshot,
}

#[derive(Debug, Clone)]
struct Pending {
    to: i32,
    kind: Kind,
    expires: i64,
}

/// An election round, pre-vote (prospective) or vote (candidate).
#[derive(Debug, Clone)]
struct Election {
    /// No requests before this (the backoff after a lost round).
    start_at: i64,
    /// The round is lost if not won by then.
    deadline: i64,
    granted: BTreeSet<i32>,
    rejected: BTreeSet<i32>,
}

#[derive(Debug, Clone, Default)]
struct Progress {
    /// The offset the replica last fetched from (it holds everything below);
    /// -1 until it fetches in this epoch.
    fetched_offset: i64,
    last_fetch_ms: i64,
    last_caught_up_ms: i64,
}

impl Progress {
    fn new() -> Progress {
        Progress { fetched_offset: -1, last_fetch_ms: -1, last_caught_up_ms: -1 }
    }
}

#[derive(Debug, Clone)]
struct Parked {
    token: u64,
    request: FetchRequest,
    deadline: i64,
}

#[derive(Debug, Clone)]
struct LeaderState {
    /// Offset of this epoch's LeaderChange entry.
    epoch_start_offset: i64,
    since_ms: i64,
    voters: BTreeMap<i32, Progress>,
    observers: BTreeMap<i32, Progress>,
    /// Voters that acknowledged BeginQuorumEpoch or fetched.
    begun: BTreeSet<i32>,
    /// When BeginQuorumEpoch was last sent to each voter.
    begin_sent: BTreeMap<i32, i64>,
    /// Fetches with nothing new, held until there is or their deadline.
    parked: BTreeMap<i32, Parked>,
}

#[derive(Debug, Clone)]
struct SnapshotDownload {
    id: SnapshotId,
    buf: Vec<u8>,
}

#[derive(Debug, Clone)]
struct FollowerState {
    leader: i32,
    /// Without a successful answer from the leader by then, stand (voters)
    /// or look for the leader again (observers).
    fetch_deadline: i64,
    snapshot: Option<SnapshotDownload>,
    /// The leader itself answered (a fetch, or its BeginQuorumEpoch) in this
    /// role. Until then the leader is hearsay: not repeated to peers, and
    /// no reason to refuse a pre-vote. Otherwise voters that lost a dead
    /// leader would keep telling each other about it and never elect.
    heard: bool,
}

#[derive(Debug, Clone)]
enum Role {
    /// No leader known; a voter stands at `election_deadline`, an observer
    /// asks voters in turn.
    Unattached {
        election_deadline: i64,
        next_voter: usize,
    },
    Prospective(Election),
    Candidate(Election),
    Leader(LeaderState),
    Follower(FollowerState),
    /// Gave up leadership of the epoch; tells the voters (EndQuorumEpoch)
    /// until `deadline`, then stands again.
    Resigned {
        deadline: i64,
        acked: BTreeSet<i32>,
        successors: Vec<i32>,
    },
}

/// One node's quorum core. See the module docs.
pub struct Raft<L: RaftLog> {
    config: QuorumConfig,
    log: L,
    rng: ChaCha8Rng,
    quorum: QuorumState,
    role: Role,
    high_watermark: i64,
    /// Committed batches below this have been handed to the application.
    delivered: i64,
    /// Lost elections in a row, for the backoff.
    election_retries: u32,
    next_request_id: u64,
    inflight: BTreeMap<u64, Pending>,
    backoff: BTreeMap<(i32, Kind), i64>,
    now: i64,
    out: Vec<Output>,
    /// Role changes so far; a poll that changed the role polls again.
    transitions: u64,
}

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str(METADATA_TOPIC))
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

const NONE: i16 = 0;

impl<L: RaftLog> Raft<L> {
    /// A core over `log`, resuming from `persisted` (`None` on a fresh
    /// node). The first call to [`Self::handle`] also returns the log's
    /// snapshot as [`Output::LoadSnapshot`], if it has one.
    pub fn new(config: QuorumConfig, persisted: Option<QuorumState>, log: L, rng_seed: u64, now_ms: i64) -> Raft<L> {
        let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
        // Request ids start at a random point so that an answer meant for a
        // previous incarnation of this node is not taken for a new request's.
        let next_request_id = rng.random_range(0..1u64 << 48);
        let start = log.log_start_offset();
        let quorum = persisted.unwrap_or_default();
        let mut raft = Raft {
            config,
            log,
            rng,
            quorum,
            role: Role::Unattached { election_deadline: i64::MAX, next_voter: 0 },
            high_watermark: start,
            delivered: start,
            election_retries: 0,
            next_request_id,
            inflight: BTreeMap::new(),
            backoff: BTreeMap::new(),
            now: now_ms,
            out: Vec::new(),
            transitions: 0,
        };
        if let Some((id, bytes)) = raft.log.snapshot() {
            raft.out.push(Output::LoadSnapshot { id, bytes });
        }
        raft.role = match quorum.leader_id {
            // A leader that restarts cannot resume: it no longer knows its
            // followers' progress. It resigns the epoch.
            Some(l) if l == raft.config.node_id => {
                let deadline = now_ms + raft.random_election_timeout();
                Role::Resigned { deadline, acked: BTreeSet::new(), successors: Vec::new() }
            }
            Some(l) => Role::Follower(FollowerState {
                leader: l,
                fetch_deadline: now_ms + raft.config.fetch_timeout_ms,
                snapshot: None,
                heard: false,
            }),
            None => Role::Unattached { election_deadline: now_ms + raft.random_election_timeout(), next_voter: 0 },
        };
        raft
    }

    pub fn config(&self) -> &QuorumConfig {
        &self.config
    }

    pub fn log(&self) -> &L {
        &self.log
    }

    /// The log, as the node's storage holds it (the harness's crash model
    /// takes it back to drop what was never flushed).
    pub fn into_log(self) -> L {
        self.log
    }

    pub fn epoch(&self) -> i32 {
        self.quorum.epoch
    }

    pub fn quorum_state(&self) -> QuorumState {
        self.quorum
    }

    /// The leader this node knows to be alive: itself as leader, or the
    /// one it follows. Told to peers and clients; a node that stopped
    /// hearing from its leader tells no one.
    pub fn leader_id(&self) -> Option<i32> {
        match &self.role {
            Role::Leader(_) => Some(self.config.node_id),
            Role::Follower(f) if f.heard => Some(f.leader),
            _ => None,
        }
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    pub fn role(&self) -> RoleName {
        match self.role {
            Role::Unattached { .. } => RoleName::Unattached,
            Role::Prospective(_) => RoleName::Prospective,
            Role::Candidate(_) => RoleName::Candidate,
            Role::Leader(_) => RoleName::Leader,
            Role::Follower(_) => RoleName::Follower,
            Role::Resigned { .. } => RoleName::Resigned,
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Committed batches below this have been delivered.
    pub fn delivered_offset(&self) -> i64 {
        self.delivered
    }

    /// Feed one input at `now_ms`; returns what to do, in order.
    pub fn handle(&mut self, now_ms: i64, input: Input) -> Vec<Output> {
        self.now = now_ms;
        match input {
            Input::Tick => {}
            Input::Request { token, request } => self.on_request(token, request),
            Input::Response { from, request_id, response } => {
                // Answers to requests of an earlier role or incarnation are
                // stale: the state they were asked from is gone.
                if self.inflight.remove(&request_id).is_some() {
                    self.on_response(from, response);
                }
            }
            Input::SendFailed { to, request_id } => {
                if let Some(p) = self.inflight.remove(&request_id) {
                    self.backoff.insert((to, p.kind), self.now + self.config.retry_backoff_ms);
                }
            }
            Input::Propose { records } => {
                let r = self.propose(records);
                self.out.push(Output::Proposed(r));
            }
            Input::Snapshot { end_offset, bytes } => {
                let r = self.take_snapshot(end_offset, bytes);
                self.out.push(Output::SnapshotTaken(r));
            }
            Input::Resign => {
                if self.is_leader() {
                    self.resign();
                }
            }
        }
        self.poll();
        std::mem::take(&mut self.out)
    }

    /// When the core next needs [`Input::Tick`] if nothing else arrives.
    pub fn next_deadline(&self) -> Option<i64> {
        let mut d = i64::MAX;
        for p in self.inflight.values() {
            d = d.min(p.expires);
        }
        for &t in self.backoff.values() {
            d = d.min(t);
        }
        if self.delivered < self.high_watermark {
            d = d.min(self.now);
        }
        match &self.role {
            Role::Unattached { election_deadline, .. } => {
                if self.config.is_voter() {
                    d = d.min(*election_deadline)
                }
            }
            Role::Prospective(e) | Role::Candidate(e) => {
                if e.start_at > self.now {
                    d = d.min(e.start_at);
                }
                d = d.min(e.deadline);
            }
            Role::Leader(l) => {
                d = d.min(self.check_quorum_deadline(l));
                // (One already due waits on its request in flight or its
                // backoff, both counted above.)
                for &v in l.begun.iter() {
                    let due = self.begin_quorum_epoch_due(l, v);
                    if due > self.now {
                        d = d.min(due);
                    }
                }
                for p in l.parked.values() {
                    d = d.min(p.deadline);
                }
            }
            Role::Follower(f) => d = d.min(f.fetch_deadline),
            Role::Resigned { deadline, .. } => d = d.min(*deadline),
        }
        // Deadlines already due were handled by the last call; a backoff or
        // round start in the past needs no tick.
        (d != i64::MAX).then_some(d)
    }

    // ----- randomness and time -----

    fn random_election_timeout(&mut self) -> i64 {
        let t = self.config.election_timeout_ms.max(1);
        t + self.rng.random_range(0..t)
    }

    fn election_backoff(&mut self) -> i64 {
        let max = self.config.election_backoff_max_ms.max(1);
        let cap = (self.config.retry_backoff_ms.max(1) << self.election_retries.min(20)).min(max);
        self.rng.random_range(0..=cap)
    }

    // ----- quorum state and role changes -----

    fn set_quorum(&mut self, next: QuorumState) {
        let prev = self.quorum;
        invariant!(next.epoch >= prev.epoch, "epoch went back from {} to {}", prev.epoch, next.epoch);
        if next.epoch == prev.epoch {
            invariant!(
                prev.voted_for.is_none() || next.voted_for == prev.voted_for,
                "node {} voted twice in epoch {}: {:?} then {:?}",
                self.config.node_id,
                prev.epoch,
                prev.voted_for,
                next.voted_for
            );
            invariant!(
                prev.leader_id.is_none() || next.leader_id == prev.leader_id,
                "node {} saw two leaders in epoch {}: {:?} then {:?}",
                self.config.node_id,
                prev.epoch,
                prev.leader_id,
                next.leader_id
            );
        }
        if next == prev {
            return;
        }
        self.quorum = next;
        self.out.push(Output::PersistQuorumState(next));
        if (prev.epoch, prev.leader_id) != (next.epoch, next.leader_id) {
            self.out.push(Output::LeaderChange { epoch: next.epoch, leader_id: next.leader_id });
        }
    }

    /// Leave the current role: answer held fetches from the new role's
    /// point of view, and forget requests in flight.
    fn set_role(&mut self, role: Role) {
        let old = std::mem::replace(&mut self.role, role);
        tracing::debug!(node = self.config.node_id, epoch = self.quorum.epoch, role = ?self.role(), "quorum role");
        self.transitions += 1;
        self.inflight.clear();
        self.backoff.clear();
        if let Role::Leader(l) = old {
            for (_, p) in l.parked {
                let resp = self.fetch_answer(&p.request, false).expect("not parked when not the leader");
                self.out.push(Output::Respond { token: p.token, response: Response::Fetch(resp) });
            }
        }
    }

    fn to_unattached(&mut self, epoch: i32) {
        if epoch > self.quorum.epoch {
            self.set_quorum(QuorumState { epoch, voted_for: None, leader_id: None });
        }
        let election_deadline = self.now + self.random_election_timeout();
        self.set_role(Role::Unattached { election_deadline, next_voter: 0 });
    }

    /// When this voter would stand for election if nothing changed: the
    /// timer its role is running, if any.
    fn election_deadline_so_far(&self) -> Option<i64> {
        match &self.role {
            Role::Unattached { election_deadline, .. } => Some(*election_deadline),
            Role::Follower(f) => Some(f.fetch_deadline),
            Role::Prospective(e) | Role::Candidate(e) => Some(e.deadline),
            Role::Leader(_) | Role::Resigned { .. } => None,
        }
    }

    fn to_follower(&mut self, epoch: i32, leader: i32) {
        invariant!(leader != self.config.node_id, "following itself");
        let voted_for = if epoch == self.quorum.epoch { self.quorum.voted_for } else { None };
        self.set_quorum(QuorumState { epoch, voted_for, leader_id: Some(leader) });
        self.election_retries = 0;
        let fetch_deadline = self.now + self.config.fetch_timeout_ms;
        self.set_role(Role::Follower(FollowerState { leader, fetch_deadline, snapshot: None, heard: false }));
    }

    fn new_round(&mut self, backoff: i64) -> Election {
        let start_at = self.now + backoff;
        let deadline = start_at + self.random_election_timeout();
        Election { start_at, deadline, granted: BTreeSet::from([self.config.node_id]), rejected: BTreeSet::new() }
    }

    fn to_prospective(&mut self, backoff: i64) {
        invariant!(self.config.is_voter(), "an observer never stands for election");
        let round = self.new_round(backoff);
        self.set_role(Role::Prospective(round));
        self.check_election();
    }

    fn to_candidate(&mut self) {
        let epoch = self.quorum.epoch + 1;
        self.set_quorum(QuorumState { epoch, voted_for: Some(self.config.node_id), leader_id: None });
        let round = self.new_round(0);
        self.set_role(Role::Candidate(round));
        self.check_election();
    }

    fn to_leader(&mut self) {
        let q = self.quorum;
        invariant!(q.voted_for == Some(self.config.node_id), "a leader voted for itself");
        self.set_quorum(QuorumState { leader_id: Some(self.config.node_id), ..q });
        self.election_retries = 0;
        let granting = match &self.role {
            Role::Candidate(e) => e.granted.iter().copied().collect::<Vec<_>>(),
            _ => vec![self.config.node_id],
        };
        let voters: Vec<i32> = self.config.voters.iter().copied().collect();
        let epoch_start_offset = self.log.end_offset();
        let lc = leader_change_batch(self.config.node_id, &voters, &granting, self.now);
        let appended = self.log.append_as_leader(&lc, q.epoch).and_then(|_| self.log.flush());
        let others = self.config.voters.iter().filter(|&&v| v != self.config.node_id);
        let state = LeaderState {
            epoch_start_offset,
            since_ms: self.now,
            voters: others.map(|&v| (v, Progress::new())).collect(),
            observers: BTreeMap::new(),
            begun: BTreeSet::new(),
            begin_sent: BTreeMap::new(),
            parked: BTreeMap::new(),
        };
        self.set_role(Role::Leader(state));
        if let Err(e) = appended {
            tracing::warn!(node = self.config.node_id, error = %e, "cannot write the LeaderChange entry; resigning");
            self.resign();
            return;
        }
        tracing::debug!(node = self.config.node_id, epoch = q.epoch, epoch_start_offset, "became leader");
        self.update_leader_hw();
    }

    fn resign(&mut self) {
        let successors = match &self.role {
            Role::Leader(l) => {
                let mut v: Vec<(i64, i32)> = l.voters.iter().map(|(&id, p)| (p.fetched_offset, id)).collect();
                v.sort_by(|a, b| b.cmp(a));
                v.into_iter().map(|(_, id)| id).collect()
            }
            _ => Vec::new(),
        };
        let deadline = self.now + self.random_election_timeout();
        self.set_role(Role::Resigned { deadline, acked: BTreeSet::new(), successors });
    }

    /// React to an epoch and leader learnt from a peer. True if the role
    /// changed (the message that told it is then not processed further).
    fn observe_leader(&mut self, epoch: i32, leader_id: i32) -> bool {
        let leader = (leader_id >= 0 && leader_id != self.config.node_id).then_some(leader_id);
        if epoch > self.quorum.epoch {
            match leader {
                Some(l) => self.to_follower(epoch, l),
                None => self.to_unattached(epoch),
            }
            return true;
        }
        if epoch == self.quorum.epoch {
            if let Some(l) = leader {
                let switch = match &self.role {
                    Role::Leader(_) | Role::Resigned { .. } => false,
                    Role::Follower(f) => f.leader != l && self.quorum.leader_id.is_none(),
                    _ => self.quorum.leader_id.is_none_or(|known| known == l),
                };
                if switch {
                    self.to_follower(epoch, l);
                    return true;
                }
            }
        }
        false
    }

    fn check_election(&mut self) {
        let majority = self.config.majority();
        let voters = self.config.voters.len();
        let (won, lost, prospective) = match &self.role {
            Role::Prospective(e) if e.start_at <= self.now => {
                let won = e.granted.len() >= majority || !self.config.pre_vote;
                (won, e.rejected.len() > voters - majority || self.now >= e.deadline, true)
            }
            Role::Candidate(e) => {
                (e.granted.len() >= majority, e.rejected.len() > voters - majority || self.now >= e.deadline, false)
            }
            _ => return,
        };
        if won {
            if prospective {
                self.to_candidate();
            } else {
                self.to_leader();
            }
        } else if lost {
            self.election_retries = self.election_retries.saturating_add(1);
            let backoff = self.election_backoff();
            self.to_prospective(backoff);
        }
    }

    // ----- the periodic part -----

    fn poll(&mut self) {
        let transitions = self.transitions;
        self.poll_role();
        // A role entered just now starts its work (its requests) at once.
        if self.transitions != transitions {
            self.poll();
        }
    }

    fn poll_role(&mut self) {
        let now = self.now;
        let expired: Vec<u64> = self.inflight.iter().filter(|(_, p)| p.expires <= now).map(|(&id, _)| id).collect();
        for id in expired {
            let p = self.inflight.remove(&id).expect("listed above");
            self.backoff.insert((p.to, p.kind), now + self.config.retry_backoff_ms);
        }
        self.backoff.retain(|_, t| *t > now);
        match &mut self.role {
            Role::Unattached { election_deadline, next_voter } => {
                if self.config.is_voter() {
                    if now >= *election_deadline {
                        self.to_prospective(0);
                    }
                } else {
                    // An observer finds the leader by asking the voters.
                    let voters: Vec<i32> = self.config.voters.iter().copied().collect();
                    if !voters.is_empty() && !self.inflight.values().any(|p| p.kind == Kind::Fetch) {
                        let to = voters[*next_voter % voters.len()];
                        *next_voter += 1;
                        if self.can_send(to, Kind::Fetch) {
                            let req = self.fetch_request();
                            self.send(to, Kind::Fetch, Request::Fetch(req));
                        }
                    }
                }
            }
            Role::Prospective(_) | Role::Candidate(_) => {
                self.check_election();
                let pre_vote = matches!(self.role, Role::Prospective(_));
                if let Role::Prospective(e) | Role::Candidate(e) = &self.role {
                    if e.start_at <= now {
                        let asked: Vec<i32> = self
                            .config
                            .voters
                            .iter()
                            .copied()
                            .filter(|v| !e.granted.contains(v) && !e.rejected.contains(v))
                            .collect();
                        for to in asked {
                            if self.can_send(to, Kind::Vote) {
                                let req = self.vote_request(pre_vote);
                                self.send(to, Kind::Vote, Request::Vote(req));
                            }
                        }
                    }
                }
            }
            Role::Leader(_) => {
                if !self.poll_leader() {
                    return;
                }
            }
            Role::Follower(f) => {
                if now >= f.fetch_deadline {
                    if self.config.is_voter() {
                        self.to_prospective(0);
                    } else {
                        self.to_unattached(self.quorum.epoch);
                    }
                    return;
                }
                let leader = f.leader;
                let download = f.snapshot.as_ref().map(|s| (s.id, s.buf.len() as i64));
                let (kind, req) = match download {
                    Some((id, position)) => {
                        (Kind::FetchSnapshot, Request::FetchSnapshot(self.fetch_snapshot_request(id, position)))
                    }
                    None => (Kind::Fetch, Request::Fetch(self.fetch_request())),
                };
                let busy = self.inflight.values().any(|p| matches!(p.kind, Kind::Fetch | Kind::FetchSnapshot));
                if !busy && self.can_send(leader, kind) {
                    self.send(leader, kind, req);
                }
            }
            Role::Resigned { deadline, acked, successors } => {
                if now >= *deadline {
                    if self.config.is_voter() {
                        self.to_prospective(0);
                    } else {
                        self.to_unattached(self.quorum.epoch);
                    }
                    return;
                }
                let pending: Vec<i32> = self
                    .config
                    .voters
                    .iter()
                    .copied()
                    .filter(|&v| v != self.config.node_id && !acked.contains(&v))
                    .collect();
                let successors = successors.clone();
                for to in pending {
                    if self.can_send(to, Kind::EndQuorumEpoch) {
                        let req = self.end_quorum_epoch_request(&successors);
                        self.send(to, Kind::EndQuorumEpoch, Request::EndQuorumEpoch(req));
                    }
                }
            }
        }
        self.deliver();
    }

    /// The leader's timers; false if it resigned.
    fn poll_leader(&mut self) -> bool {
        let now = self.now;
        let Role::Leader(l) = &self.role else { return true };
        if now >= self.check_quorum_deadline(l) {
            tracing::debug!(
                node = self.config.node_id,
                epoch = self.quorum.epoch,
                "no majority fetched within the fetch timeout; resigning"
            );
            self.resign();
            return false;
        }
        let session = self.config.observer_session_timeout_ms;
        let Role::Leader(l) = &mut self.role else { unreachable!() };
        l.observers.retain(|_, p| now - p.last_fetch_ms < session);
        let due: Vec<i32> = l.parked.iter().filter(|(_, p)| p.deadline <= now).map(|(&r, _)| r).collect();
        for r in due {
            self.answer_parked(r);
        }
        // BeginQuorumEpoch until each voter answers it or fetches, and again
        // to a voter silent for half the fetch timeout (as Kafka's leader
        // does): one that moved to a higher epoch answers with it, and this
        // leader, unable to commit anyway, steps down instead of lingering.
        let Role::Leader(l) = &self.role else { unreachable!() };
        let due: Vec<i32> = l
            .voters
            .keys()
            .copied()
            .filter(|v| !l.begun.contains(v) || self.begin_quorum_epoch_due(l, *v) <= now)
            .collect();
        for to in due {
            if self.can_send(to, Kind::BeginQuorumEpoch) {
                let req = self.begin_quorum_epoch_request();
                self.send(to, Kind::BeginQuorumEpoch, Request::BeginQuorumEpoch(req));
                if let Role::Leader(l) = &mut self.role {
                    l.begin_sent.insert(to, now);
                }
            }
        }
        true
    }

    /// When a voter that has begun the epoch is next reminded of it.
    fn begin_quorum_epoch_due(&self, l: &LeaderState, voter: i32) -> i64 {
        let heard = l.voters.get(&voter).map_or(-1, |p| p.last_fetch_ms);
        let sent = l.begin_sent.get(&voter).copied().unwrap_or(-1);
        heard.max(sent).max(l.since_ms) + self.config.fetch_timeout_ms / 2
    }

    /// When check-quorum fails unless more voters fetch: the time at which
    /// fewer than a majority will have fetched within the fetch timeout.
    fn check_quorum_deadline(&self, l: &LeaderState) -> i64 {
        let needed = self.config.majority() - 1;
        if needed == 0 {
            return i64::MAX;
        }
        let mut times: Vec<i64> = l.voters.values().map(|p| p.last_fetch_ms).collect();
        times.sort_unstable_by(|a, b| b.cmp(a));
        let t = times.get(needed - 1).copied().unwrap_or(-1);
        t.max(l.since_ms) + self.config.fetch_timeout_ms
    }

    fn can_send(&self, to: i32, kind: Kind) -> bool {
        !self.inflight.values().any(|p| p.to == to && p.kind == kind) && !self.backoff.contains_key(&(to, kind))
    }

    fn send(&mut self, to: i32, kind: Kind, request: Request) {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let wait = match kind {
            Kind::Fetch => self.config.fetch_max_wait_ms,
            _ => 0,
        };
        self.inflight
            .insert(request_id, Pending { to, kind, expires: self.now + wait + self.config.request_timeout_ms });
        self.out.push(Output::Send { to, request_id, request });
    }

    /// Hand newly committed batches to the application, a bounded amount
    /// per call.
    fn deliver(&mut self) {
        if self.delivered >= self.high_watermark {
            return;
        }
        invariant!(
            self.delivered >= self.log.log_start_offset(),
            "committed entries below the log start were not delivered"
        );
        let read = self.log.read(self.delivered, self.config.fetch_max_bytes);
        let batches = match read.and_then(|b| decode_batches(&b, self.delivered)) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(node = self.config.node_id, error = %e, "cannot read committed entries");
                return;
            }
        };
        let mut out = Vec::new();
        for mut b in batches {
            if b.base_offset >= self.high_watermark {
                break;
            }
            invariant!(b.base_offset == self.delivered, "committed batches delivered out of order");
            let room = (self.high_watermark - b.base_offset) as usize;
            b.records.truncate(room);
            self.delivered = b.next_offset();
            out.push(b);
        }
        if !out.is_empty() {
            self.out.push(Output::Committed { high_watermark: self.high_watermark, batches: out });
        }
    }

    fn advance_hw(&mut self, hw: i64) -> bool {
        if hw <= self.high_watermark {
            return false;
        }
        invariant!(hw <= self.log.end_offset(), "high watermark {hw} past the log end {}", self.log.end_offset());
        self.high_watermark = hw;
        true
    }

    /// The leader's high watermark: the offset a majority of voters hold,
    /// once it covers this epoch's first entry.
    fn update_leader_hw(&mut self) -> bool {
        let Role::Leader(l) = &self.role else { return false };
        let mut offsets: Vec<i64> = l.voters.values().map(|p| p.fetched_offset).collect();
        offsets.push(self.log.durable_offset());
        offsets.sort_unstable_by(|a, b| b.cmp(a));
        let majority_offset = offsets[self.config.majority() - 1];
        let own_epoch_covered = majority_offset > l.epoch_start_offset;
        if !own_epoch_covered && !self.config.bugs.commit_previous_epoch {
            return false;
        }
        if !own_epoch_covered && majority_offset > self.high_watermark {
            tracing::debug!(
                node = self.config.node_id,
                majority_offset,
                "planted bug: committing an earlier epoch's entries by count"
            );
        }
        let moved = self.advance_hw(majority_offset);
        if moved {
            self.answer_all_parked();
        }
        moved
    }

    fn answer_parked(&mut self, replica: i32) {
        let Role::Leader(l) = &mut self.role else { return };
        let Some(p) = l.parked.remove(&replica) else { return };
        let resp = self.fetch_answer(&p.request, false).expect("not parked when told not to");
        self.out.push(Output::Respond { token: p.token, response: Response::Fetch(resp) });
    }

    fn answer_all_parked(&mut self) {
        let Role::Leader(l) = &self.role else { return };
        let replicas: Vec<i32> = l.parked.keys().copied().collect();
        for r in replicas {
            self.answer_parked(r);
        }
    }

    // ----- proposals and snapshots -----

    fn propose(&mut self, records: Vec<Bytes>) -> Result<Proposal, ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader { leader_id: self.leader_id(), epoch: self.quorum.epoch });
        }
        if records.is_empty() {
            return Err(ProposeError::Empty);
        }
        let size: usize = records.iter().map(|r| r.len()).sum();
        if size > self.config.max_batch_bytes {
            return Err(ProposeError::TooLarge { size, max: self.config.max_batch_bytes });
        }
        let batch = data_batch(&records, self.now).map_err(|e| ProposeError::Storage(e.to_string()))?;
        if batch.bytes().len() > self.config.max_batch_bytes {
            return Err(ProposeError::TooLarge { size: batch.bytes().len(), max: self.config.max_batch_bytes });
        }
        let epoch = self.quorum.epoch;
        let (base_offset, last_offset) =
            self.log.append_as_leader(&batch, epoch).map_err(|e| ProposeError::Storage(e.to_string()))?;
        // The leader counts its own log towards the high watermark only once
        // it is durable, as every voter's fetch offset is.
        self.log.flush().map_err(|e| ProposeError::Storage(e.to_string()))?;
        if !self.update_leader_hw() {
            self.answer_all_parked();
        }
        Ok(Proposal { epoch, base_offset, last_offset })
    }

    fn take_snapshot(&mut self, end_offset: i64, bytes: Bytes) -> Result<SnapshotId, String> {
        let start = self.log.log_start_offset();
        if end_offset <= start || end_offset > self.delivered {
            return Err(format!(
                "a snapshot must end after the log start {start} and at or before the delivered offset {}",
                self.delivered
            ));
        }
        let on_boundary = end_offset == self.log.end_offset()
            || self
                .log
                .read(end_offset, 1)
                .ok()
                .and_then(|b| decode_batches(&b, 0).ok())
                .is_some_and(|b| b.first().is_some_and(|b| b.base_offset == end_offset));
        if !on_boundary {
            return Err(format!("offset {end_offset} is inside a batch"));
        }
        let epoch = self.log.epoch_at(end_offset - 1).ok_or_else(|| format!("no entry at {}", end_offset - 1))?;
        let id = SnapshotId { end_offset, epoch };
        self.log.store_snapshot(id, bytes).map_err(|e| e.to_string())?;
        Ok(id)
    }

    // ----- requests -----

    fn on_request(&mut self, token: u64, request: Request) {
        let response = match request {
            Request::Vote(r) => return self.on_vote(token, r),
            Request::BeginQuorumEpoch(r) => Response::BeginQuorumEpoch(self.on_begin_quorum_epoch(r)),
            Request::EndQuorumEpoch(r) => Response::EndQuorumEpoch(self.on_end_quorum_epoch(r)),
            Request::Fetch(r) => return self.on_fetch(token, r),
            Request::FetchSnapshot(r) => Response::FetchSnapshot(self.on_fetch_snapshot(r)),
            Request::DescribeQuorum(r) => Response::DescribeQuorum(self.on_describe_quorum(r)),
        };
        self.out.push(Output::Respond { token, response });
    }

    fn cluster_ok(&self, cluster_id: &Option<StrBytes>) -> bool {
        match (&self.config.cluster_id, cluster_id) {
            (Some(ours), Some(theirs)) => ours.as_str() == theirs.as_str(),
            _ => true,
        }
    }

    fn known_leader(&self) -> i32 {
        self.leader_id().unwrap_or(-1)
    }

    fn on_vote(&mut self, token: u64, req: VoteRequest) {
        let mut resp = VoteResponse::default();
        let (topic, part) = match (req.topics.as_slice(), self.cluster_ok(&req.cluster_id)) {
            (_, false) => {
                resp.error_code = code(ResponseError::InconsistentClusterId);
                return self.out.push(Output::Respond { token, response: Response::Vote(resp) });
            }
            ([t], true) if t.partitions.len() == 1 => (t.topic_name.clone(), t.partitions[0].clone()),
            _ => {
                resp.error_code = code(ResponseError::InvalidRequest);
                return self.out.push(Output::Respond { token, response: Response::Vote(resp) });
            }
        };
        let mut p = v_resp::PartitionData::default();
        p.partition_index = part.partition_index;
        let candidate = part.replica_id.0;
        let mut defer_persist = None;
        let mut granted = false;
        if topic.0.as_str() != METADATA_TOPIC || part.partition_index != METADATA_PARTITION {
            p.error_code = code(ResponseError::UnknownTopicOrPartition);
        } else if !self.config.voters.contains(&candidate) || !self.config.is_voter() {
            p.error_code = code(ResponseError::InconsistentVoterSet);
        } else if part.pre_vote {
            p.vote_granted = self.grants_pre_vote(&part);
        } else {
            if part.replica_epoch > self.quorum.epoch {
                // Only a granted vote restarts the wait for a leader (below):
                // a candidate whose log is behind must not hold the others
                // back by bumping the epoch again and again (Raft §5.2; what
                // pre-vote also prevents).
                let deadline = self.election_deadline_so_far();
                self.to_unattached(part.replica_epoch);
                if let Role::Unattached { election_deadline, .. } = &mut self.role {
                    *election_deadline = deadline.unwrap_or(*election_deadline);
                }
            }
            if part.replica_epoch == self.quorum.epoch && self.may_vote_for(candidate, &part) {
                let q = self.quorum;
                let voted = QuorumState { voted_for: Some(candidate), ..q };
                if self.config.bugs.vote_before_persist && q.voted_for.is_none() {
                    // The planted bug: the grant leaves before the vote is durable.
                    self.quorum = voted;
                    defer_persist = Some(voted);
                } else {
                    self.set_quorum(voted);
                }
                p.vote_granted = true;
                granted = true;
                // Granting a vote restarts the wait for a leader.
                let election_deadline = self.now + self.random_election_timeout();
                if let Role::Unattached { election_deadline: d, .. } = &mut self.role {
                    *d = election_deadline;
                } else {
                    self.set_role(Role::Unattached { election_deadline, next_voter: 0 });
                }
            }
        }
        p.leader_id = self.known_leader().into();
        p.leader_epoch = self.quorum.epoch;
        let mut t = v_resp::TopicData::default();
        t.topic_name = topic;
        t.partitions = vec![p];
        resp.topics = vec![t];
        self.out.push(Output::Respond { token, response: Response::Vote(resp) });
        if granted {
            self.out.push(Output::VoteGranted { epoch: self.quorum.epoch, candidate });
        }
        if let Some(q) = defer_persist {
            self.out.push(Output::PersistQuorumState(q));
        }
    }

    fn log_is_up_to_date(&self, part: &v_req::PartitionData) -> bool {
        (part.last_offset_epoch, part.last_offset) >= (self.log.last_epoch(), self.log.end_offset())
    }

    /// KIP-996: grant a pre-vote only if no live leader is known here and
    /// the candidate's log is at least as complete. Nothing is persisted.
    fn grants_pre_vote(&self, part: &v_req::PartitionData) -> bool {
        let leader_alive = match &self.role {
            Role::Leader(_) => true,
            Role::Follower(f) => f.heard && self.now < f.fetch_deadline,
            _ => false,
        };
        let epoch_ok = part.replica_epoch > self.quorum.epoch
            || (part.replica_epoch == self.quorum.epoch && self.quorum.leader_id.is_none());
        part.replica_id.0 != self.config.node_id && !leader_alive && epoch_ok && self.log_is_up_to_date(part)
    }

    fn may_vote_for(&self, candidate: i32, part: &v_req::PartitionData) -> bool {
        let free = match &self.role {
            Role::Unattached { .. } | Role::Prospective(_) => true,
            Role::Candidate(_) | Role::Leader(_) | Role::Follower(_) | Role::Resigned { .. } => false,
        };
        let not_voted_elsewhere = self.quorum.voted_for.is_none_or(|v| v == candidate);
        free && self.quorum.leader_id.is_none() && not_voted_elsewhere && self.log_is_up_to_date(part)
    }

    fn on_begin_quorum_epoch(&mut self, req: BeginQuorumEpochRequest) -> BeginQuorumEpochResponse {
        let mut resp = BeginQuorumEpochResponse::default();
        if !self.cluster_ok(&req.cluster_id) {
            resp.error_code = code(ResponseError::InconsistentClusterId);
            return resp;
        }
        let [t] = req.topics.as_slice() else {
            resp.error_code = code(ResponseError::InvalidRequest);
            return resp;
        };
        let [part] = t.partitions.as_slice() else {
            resp.error_code = code(ResponseError::InvalidRequest);
            return resp;
        };
        let mut p = bqe_resp::PartitionData::default();
        p.partition_index = part.partition_index;
        let leader = part.leader_id.0;
        if t.topic_name.0.as_str() != METADATA_TOPIC || part.partition_index != METADATA_PARTITION {
            p.error_code = code(ResponseError::UnknownTopicOrPartition);
        } else if !self.config.voters.contains(&leader) {
            p.error_code = code(ResponseError::InconsistentVoterSet);
        } else if part.leader_epoch < self.quorum.epoch {
            p.error_code = code(ResponseError::FencedLeaderEpoch);
        } else if leader == self.config.node_id {
            p.error_code = code(ResponseError::InvalidRequest);
        } else {
            self.observe_leader(part.leader_epoch, leader);
            let follows = matches!(&self.role, Role::Follower(f) if f.leader == leader);
            if let Role::Follower(f) = &mut self.role {
                if follows && self.quorum.epoch == part.leader_epoch {
                    f.heard = true;
                    f.fetch_deadline = self.now + self.config.fetch_timeout_ms;
                }
            }
            if !follows || self.quorum.epoch != part.leader_epoch {
                // Another leader of the same epoch: only a broken quorum
                // gets here; refuse rather than follow two.
                p.error_code = code(ResponseError::InvalidRequest);
            }
        }
        p.leader_id = self.known_leader().into();
        p.leader_epoch = self.quorum.epoch;
        let mut rt = bqe_resp::TopicData::default();
        rt.topic_name = t.topic_name.clone();
        rt.partitions = vec![p];
        resp.topics = vec![rt];
        resp
    }

    fn on_end_quorum_epoch(&mut self, req: EndQuorumEpochRequest) -> EndQuorumEpochResponse {
        let mut resp = EndQuorumEpochResponse::default();
        if !self.cluster_ok(&req.cluster_id) {
            resp.error_code = code(ResponseError::InconsistentClusterId);
            return resp;
        }
        let [t] = req.topics.as_slice() else {
            resp.error_code = code(ResponseError::InvalidRequest);
            return resp;
        };
        let [part] = t.partitions.as_slice() else {
            resp.error_code = code(ResponseError::InvalidRequest);
            return resp;
        };
        let mut p = eqe_resp::PartitionData::default();
        p.partition_index = part.partition_index;
        if t.topic_name.0.as_str() != METADATA_TOPIC || part.partition_index != METADATA_PARTITION {
            p.error_code = code(ResponseError::UnknownTopicOrPartition);
        } else if part.leader_epoch < self.quorum.epoch {
            p.error_code = code(ResponseError::FencedLeaderEpoch);
        } else if part.leader_epoch > self.quorum.epoch {
            self.to_unattached(part.leader_epoch);
        } else if matches!(&self.role, Role::Follower(f) if f.leader == part.leader_id.0) {
            // The leader is going: stand soon, the most caught-up first.
            let successors: Vec<i32> = if part.preferred_candidates.is_empty() {
                part.preferred_successors.clone()
            } else {
                part.preferred_candidates.iter().map(|c| c.candidate_id.0).collect()
            };
            let pos = successors.iter().position(|&s| s == self.config.node_id);
            let wait = match pos {
                Some(0) => 0,
                Some(i) => (self.config.retry_backoff_ms << (i - 1).min(20)).min(self.config.election_backoff_max_ms),
                None => self.random_election_timeout(),
            };
            let election_deadline = self.now + wait;
            self.set_role(Role::Unattached { election_deadline, next_voter: 0 });
        }
        p.leader_id = self.known_leader().into();
        p.leader_epoch = self.quorum.epoch;
        let mut rt = eqe_resp::TopicData::default();
        rt.topic_name = t.topic_name.clone();
        rt.partitions = vec![p];
        resp.topics = vec![rt];
        resp
    }

    fn on_fetch(&mut self, token: u64, req: FetchRequest) {
        let Some(resp) = self.fetch_answer(&req, true) else {
            let replica = fetch_replica_id(&req);
            let deadline = self.now + (req.max_wait_ms as i64).clamp(0, self.config.fetch_max_wait_ms);
            let old = match &mut self.role {
                Role::Leader(l) => l.parked.insert(replica, Parked { token, request: req, deadline }),
                _ => unreachable!("only the leader holds fetches"),
            };
            if let Some(old) = old {
                let resp = self.fetch_answer(&old.request, false).expect("not parked when told not to");
                self.out.push(Output::Respond { token: old.token, response: Response::Fetch(resp) });
            }
            // This fetch may be the one that makes a majority; if so, every
            // held fetch (this one too) is answered with the new mark.
            self.update_leader_hw();
            return;
        };
        self.out.push(Output::Respond { token, response: Response::Fetch(resp) });
        // A voter's fetch may have moved the high watermark; the held
        // fetches of the others carry it to them.
        self.update_leader_hw();
    }

    /// The answer to a Fetch, or `None` if it should be held (only when
    /// `may_park`: the leader has nothing new for it).
    fn fetch_answer(&mut self, req: &FetchRequest, may_park: bool) -> Option<FetchResponse> {
        let mut resp = FetchResponse::default();
        if !self.cluster_ok(&req.cluster_id) {
            resp.error_code = code(ResponseError::InconsistentClusterId);
            return Some(resp);
        }
        let [t] = req.topics.as_slice() else {
            resp.error_code = code(ResponseError::InvalidRequest);
            return Some(resp);
        };
        let [part] = t.partitions.as_slice() else {
            resp.error_code = code(ResponseError::InvalidRequest);
            return Some(resp);
        };
        let mut p = f_resp::PartitionData::default();
        p.partition_index = part.partition;
        p.high_watermark = self.high_watermark;
        p.log_start_offset = self.log.log_start_offset();
        p.current_leader.leader_id = self.known_leader().into();
        p.current_leader.leader_epoch = self.quorum.epoch;
        let mut rt = f_resp::FetchableTopicResponse::default();
        rt.topic = t.topic.clone();
        rt.topic_id = t.topic_id;
        let topic_ok = t.topic.0.as_str() == METADATA_TOPIC || t.topic_id == METADATA_TOPIC_ID;
        let replica = fetch_replica_id(req);
        let error = if !topic_ok || part.partition != METADATA_PARTITION {
            Some(ResponseError::UnknownTopicOrPartition)
        } else if part.current_leader_epoch < self.quorum.epoch {
            Some(ResponseError::FencedLeaderEpoch)
        } else if part.current_leader_epoch > self.quorum.epoch {
            Some(ResponseError::UnknownLeaderEpoch)
        } else if !self.is_leader() {
            Some(ResponseError::NotLeaderOrFollower)
        } else if part.fetch_offset < 0 || part.last_fetched_epoch < -1 {
            Some(ResponseError::InvalidRequest)
        } else {
            None
        };
        if let Some(e) = error {
            p.error_code = code(e);
            rt.partitions = vec![p];
            resp.responses = vec![rt];
            return Some(resp);
        }
        let now = self.now;
        let is_voter = self.config.voters.contains(&replica) && replica != self.config.node_id;
        if is_voter {
            if let Role::Leader(l) = &mut self.role {
                let progress = l.voters.entry(replica).or_insert_with(Progress::new);
                progress.last_fetch_ms = now;
                l.begun.insert(replica);
            }
        }
        let (offset, lfe) = (part.fetch_offset, part.last_fetched_epoch);
        let start = self.log.log_start_offset();
        let snapshot = self.log.snapshot().map(|(id, _)| id).filter(|_| start > 0);
        let leo = self.log.end_offset();
        match snapshot {
            Some(sid) if offset < start || (offset == start && lfe != sid.epoch) || lfe < sid.epoch => {
                p.snapshot_id.end_offset = sid.end_offset;
                p.snapshot_id.epoch = sid.epoch;
            }
            _ => {
                let diverging = if offset == 0 && start == 0 {
                    None
                } else {
                    let (e, end) = self.log.end_offset_for_epoch(lfe);
                    (e != lfe || end < offset || offset > leo).then_some((e, end.min(leo)))
                };
                if let Some((e, end)) = diverging {
                    p.diverging_epoch.epoch = e;
                    p.diverging_epoch.end_offset = if e < 0 { start } else { end };
                } else {
                    if let Role::Leader(l) = &mut self.role {
                        let progress = if is_voter {
                            l.voters.get_mut(&replica)
                        } else if replica >= 0 && replica != self.config.node_id {
                            let room = l.observers.len() < self.config.max_observers;
                            if room || l.observers.contains_key(&replica) {
                                Some(l.observers.entry(replica).or_insert_with(Progress::new))
                            } else {
                                None
                            }
                        } else {
                            None
                        };
                        if let Some(progress) = progress {
                            progress.fetched_offset = offset;
                            progress.last_fetch_ms = now;
                            if offset >= leo {
                                progress.last_caught_up_ms = now;
                            }
                        }
                    }
                    let max = (part.partition_max_bytes.max(0) as usize)
                        .min(req.max_bytes.max(0) as usize)
                        .min(self.config.fetch_max_bytes);
                    let records = match self.log.read(offset, max) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(node = self.config.node_id, error = %e, "cannot read the metadata log");
                            p.error_code = code(ResponseError::KafkaStorageError);
                            Bytes::new()
                        }
                    };
                    if records.is_empty() && p.error_code == NONE && may_park && req.max_wait_ms > 0 && replica >= 0 {
                        return None;
                    }
                    p.records = Some(records);
                }
            }
        }
        rt.partitions = vec![p];
        resp.responses = vec![rt];
        Some(resp)
    }

    fn on_fetch_snapshot(&mut self, req: FetchSnapshotRequest) -> FetchSnapshotResponse {
        let mut resp = FetchSnapshotResponse::default();
        if !self.cluster_ok(&req.cluster_id) {
            resp.error_code = code(ResponseError::InconsistentClusterId);
            return resp;
        }
        let [t] = req.topics.as_slice() else {
            resp.error_code = code(ResponseError::InvalidRequest);
            return resp;
        };
        let [part] = t.partitions.as_slice() else {
            resp.error_code = code(ResponseError::InvalidRequest);
            return resp;
        };
        let mut p = fs_resp::PartitionSnapshot::default();
        p.index = part.partition;
        p.current_leader.leader_id = self.known_leader().into();
        p.current_leader.leader_epoch = self.quorum.epoch;
        p.snapshot_id.end_offset = part.snapshot_id.end_offset;
        p.snapshot_id.epoch = part.snapshot_id.epoch;
        let replica = req.replica_id.0;
        let snapshot = self.log.snapshot();
        let error = if t.name.0.as_str() != METADATA_TOPIC || part.partition != METADATA_PARTITION {
            Some(ResponseError::UnknownTopicOrPartition)
        } else if part.current_leader_epoch < self.quorum.epoch {
            Some(ResponseError::FencedLeaderEpoch)
        } else if part.current_leader_epoch > self.quorum.epoch {
            Some(ResponseError::UnknownLeaderEpoch)
        } else if !self.is_leader() {
            Some(ResponseError::NotLeaderOrFollower)
        } else {
            match &snapshot {
                Some((id, bytes))
                    if id.end_offset == part.snapshot_id.end_offset && id.epoch == part.snapshot_id.epoch =>
                {
                    if part.position < 0 || part.position > bytes.len() as i64 {
                        Some(ResponseError::PositionOutOfRange)
                    } else {
                        None
                    }
                }
                _ => Some(ResponseError::SnapshotNotFound),
            }
        };
        if let Role::Leader(l) = &mut self.role {
            if let Some(progress) = l.voters.get_mut(&replica) {
                progress.last_fetch_ms = self.now;
                l.begun.insert(replica);
            }
        }
        match error {
            Some(e) => p.error_code = code(e),
            None => {
                let (_, bytes) = snapshot.expect("checked above");
                let pos = part.position as usize;
                let max = (req.max_bytes.max(1) as usize).min(self.config.fetch_max_bytes.max(1));
                let end = bytes.len().min(pos.saturating_add(max));
                p.size = bytes.len() as i64;
                p.position = part.position;
                p.unaligned_records = bytes.slice(pos..end);
            }
        }
        let mut rt = fs_resp::TopicSnapshot::default();
        rt.name = t.name.clone();
        rt.partitions = vec![p];
        resp.topics = vec![rt];
        resp
    }

    fn on_describe_quorum(&mut self, req: DescribeQuorumRequest) -> DescribeQuorumResponse {
        let mut resp = DescribeQuorumResponse::default();
        let [t] = req.topics.as_slice() else {
            resp.error_code = code(ResponseError::InvalidRequest);
            return resp;
        };
        let [part] = t.partitions.as_slice() else {
            resp.error_code = code(ResponseError::InvalidRequest);
            return resp;
        };
        let mut p = dq_resp::PartitionData::default();
        p.partition_index = part.partition_index;
        p.leader_id = self.known_leader().into();
        p.leader_epoch = self.quorum.epoch;
        p.high_watermark = self.high_watermark;
        if t.topic_name.0.as_str() != METADATA_TOPIC || part.partition_index != METADATA_PARTITION {
            p.error_code = code(ResponseError::UnknownTopicOrPartition);
        } else if let Role::Leader(l) = &self.role {
            let state = |id: i32, pr: &Progress| {
                let mut s = dq_resp::ReplicaState::default();
                s.replica_id = id.into();
                s.log_end_offset = pr.fetched_offset;
                s.last_fetch_timestamp = pr.last_fetch_ms;
                s.last_caught_up_timestamp = pr.last_caught_up_ms;
                s
            };
            let own = Progress {
                fetched_offset: self.log.end_offset(),
                last_fetch_ms: self.now,
                last_caught_up_ms: self.now,
            };
            let mut voters = vec![state(self.config.node_id, &own)];
            voters.extend(l.voters.iter().map(|(&id, pr)| state(id, pr)));
            voters.sort_by_key(|s| s.replica_id.0);
            p.current_voters = voters;
            p.observers = l.observers.iter().map(|(&id, pr)| state(id, pr)).collect();
        } else {
            p.error_code = code(ResponseError::NotLeaderOrFollower);
        }
        let mut rt = dq_resp::TopicData::default();
        rt.topic_name = t.topic_name.clone();
        rt.partitions = vec![p];
        resp.topics = vec![rt];
        resp
    }

    // ----- responses -----

    fn on_response(&mut self, from: i32, response: Response) {
        match response {
            Response::Vote(r) => self.on_vote_response(from, r),
            Response::BeginQuorumEpoch(r) => {
                let Some(p) = r.topics.first().and_then(|t| t.partitions.first()) else { return };
                if self.observe_leader(p.leader_epoch, p.leader_id.0) {
                    return;
                }
                if let Role::Leader(l) = &mut self.role {
                    if r.error_code == NONE && p.error_code == NONE {
                        l.begun.insert(from);
                    }
                }
            }
            Response::EndQuorumEpoch(r) => {
                let Some(p) = r.topics.first().and_then(|t| t.partitions.first()) else { return };
                if self.observe_leader(p.leader_epoch, p.leader_id.0) {
                    return;
                }
                if let Role::Resigned { acked, .. } = &mut self.role {
                    acked.insert(from);
                }
            }
            Response::Fetch(r) => self.on_fetch_response(from, r),
            Response::FetchSnapshot(r) => self.on_fetch_snapshot_response(from, r),
            Response::DescribeQuorum(_) => {}
        }
    }

    fn on_vote_response(&mut self, from: i32, r: VoteResponse) {
        let p = r.topics.first().and_then(|t| t.partitions.first()).cloned();
        let (granted, epoch, leader) = match &p {
            Some(p) if r.error_code == NONE && p.error_code == NONE => (p.vote_granted, p.leader_epoch, p.leader_id.0),
            Some(p) => (false, p.leader_epoch, p.leader_id.0),
            None => (false, -1, -1),
        };
        tracing::debug!(node = self.config.node_id, from, granted, epoch, leader, "vote answer");
        if self.observe_leader(epoch, leader) {
            return;
        }
        match &mut self.role {
            Role::Prospective(e) | Role::Candidate(e) => {
                if granted {
                    e.granted.insert(from);
                } else {
                    e.rejected.insert(from);
                }
            }
            _ => return,
        }
        self.check_election();
    }

    fn on_fetch_response(&mut self, from: i32, r: FetchResponse) {
        let p = r.responses.first().and_then(|t| t.partitions.first()).cloned();
        let Some(p) = p.filter(|_| r.error_code == NONE) else {
            self.backoff.insert((from, Kind::Fetch), self.now + self.config.retry_backoff_ms);
            return;
        };
        if self.observe_leader(p.current_leader.leader_epoch, p.current_leader.leader_id.0) {
            return;
        }
        let following = matches!(&self.role, Role::Follower(f) if f.leader == from);
        if p.error_code != NONE || !following {
            self.backoff.insert((from, Kind::Fetch), self.now + self.config.retry_backoff_ms);
            return;
        }
        if let Role::Follower(f) = &mut self.role {
            f.fetch_deadline = self.now + self.config.fetch_timeout_ms;
            f.heard = true;
        }
        if p.diverging_epoch.end_offset >= 0 && !self.config.bugs.keep_divergent_suffix {
            self.truncate_diverging(p.diverging_epoch.epoch, p.diverging_epoch.end_offset);
            return;
        }
        if p.snapshot_id.end_offset >= 0 {
            let id = SnapshotId { end_offset: p.snapshot_id.end_offset, epoch: p.snapshot_id.epoch };
            if id.end_offset > self.log.end_offset() || id.epoch != self.log.last_epoch() {
                if let Role::Follower(f) = &mut self.role {
                    f.snapshot = Some(SnapshotDownload { id, buf: Vec::new() });
                }
            }
            return;
        }
        if let Some(records) = p.records.filter(|r| !r.is_empty()) {
            let appended = ValidatedBatches::new(records)
                .map_err(|e| e.0)
                .and_then(|b| self.log.append_as_follower(&b).map_err(|e| e.to_string()))
                .and_then(|_| self.log.flush().map_err(|e| e.to_string()));
            if let Err(e) = appended {
                tracing::warn!(node = self.config.node_id, error = %e, "fetched batches not appended");
                self.backoff.insert((from, Kind::Fetch), self.now + self.config.retry_backoff_ms);
                return;
            }
        }
        // Everything below the log end now matches the leader's log (the
        // leader checked the fetch offset and epoch), so the leader's high
        // watermark applies up to it.
        let hw = p.high_watermark.min(self.log.end_offset());
        self.advance_hw(hw);
    }

    /// Cut the log where it stops matching the leader's, as Kafka's
    /// `truncateToEndOffset`: at the end of the diverging epoch in the
    /// leader's log or in ours, whichever is earlier.
    fn truncate_diverging(&mut self, epoch: i32, end_offset: i64) {
        let (local_epoch, local_end) = self.log.end_offset_for_epoch(epoch);
        let to = if local_epoch == epoch {
            local_end.min(end_offset)
        } else if local_epoch < 0 {
            self.log.log_start_offset()
        } else {
            local_end
        };
        let to = to.min(self.log.end_offset()).max(self.log.log_start_offset());
        invariant!(
            to >= self.high_watermark,
            "node {} truncating to {to}, below its high watermark {}",
            self.config.node_id,
            self.high_watermark
        );
        if let Err(e) = self.log.truncate_to(to) {
            tracing::warn!(node = self.config.node_id, error = %e, "truncation failed");
        }
    }

    fn on_fetch_snapshot_response(&mut self, from: i32, r: FetchSnapshotResponse) {
        let p = r.topics.first().and_then(|t| t.partitions.first()).cloned();
        let Some(p) = p.filter(|_| r.error_code == NONE) else {
            self.backoff.insert((from, Kind::FetchSnapshot), self.now + self.config.retry_backoff_ms);
            return;
        };
        if self.observe_leader(p.current_leader.leader_epoch, p.current_leader.leader_id.0) {
            return;
        }
        let max = self.config.max_snapshot_bytes;
        let Role::Follower(f) = &mut self.role else { return };
        let Some(s) = &mut f.snapshot else { return };
        let same = p.snapshot_id.end_offset == s.id.end_offset && p.snapshot_id.epoch == s.id.epoch;
        if p.error_code != NONE || !same || p.size < 0 || p.size > max || p.position != s.buf.len() as i64 {
            // A newer snapshot replaced it, or the answer makes no sense:
            // start over from a Fetch.
            tracing::debug!(node = self.config.node_id, error = p.error_code, "snapshot download abandoned");
            f.snapshot = None;
            self.backoff.insert((from, Kind::FetchSnapshot), self.now + self.config.retry_backoff_ms);
            return;
        }
        f.fetch_deadline = self.now + self.config.fetch_timeout_ms;
        f.heard = true;
        let room = (p.size as usize).saturating_sub(s.buf.len());
        s.buf.extend_from_slice(&p.unaligned_records[..p.unaligned_records.len().min(room)]);
        if (s.buf.len() as i64) < p.size {
            return;
        }
        let s = f.snapshot.take().expect("checked above");
        let (id, bytes) = (s.id, Bytes::from(s.buf));
        if let Err(e) = self.log.store_snapshot(id, bytes.clone()) {
            tracing::warn!(node = self.config.node_id, error = %e, "cannot store the downloaded snapshot");
            return;
        }
        // A snapshot holds only committed state.
        self.high_watermark = self.high_watermark.max(id.end_offset);
        self.delivered = id.end_offset;
        self.out.push(Output::LoadSnapshot { id, bytes });
    }

    // ----- request builders -----

    fn vote_request(&self, pre_vote: bool) -> VoteRequest {
        let mut p = v_req::PartitionData::default();
        p.partition_index = METADATA_PARTITION;
        p.replica_id = self.config.node_id.into();
        // A pre-vote asks about the epoch it would stand in (KIP-996: the
        // current epoch + 1), without entering it.
        p.replica_epoch = if pre_vote { self.quorum.epoch + 1 } else { self.quorum.epoch };
        p.last_offset_epoch = self.log.last_epoch();
        p.last_offset = self.log.end_offset();
        p.pre_vote = pre_vote;
        let mut t = v_req::TopicData::default();
        t.topic_name = topic_name();
        t.partitions = vec![p];
        let mut r = VoteRequest::default();
        r.cluster_id = self.config.cluster_id.clone().map(StrBytes::from_string);
        r.voter_id = (-1).into();
        r.topics = vec![t];
        r
    }

    fn begin_quorum_epoch_request(&self) -> BeginQuorumEpochRequest {
        let mut p = bqe_req::PartitionData::default();
        p.partition_index = METADATA_PARTITION;
        p.leader_id = self.config.node_id.into();
        p.leader_epoch = self.quorum.epoch;
        let mut t = bqe_req::TopicData::default();
        t.topic_name = topic_name();
        t.partitions = vec![p];
        let mut r = BeginQuorumEpochRequest::default();
        r.cluster_id = self.config.cluster_id.clone().map(StrBytes::from_string);
        r.voter_id = (-1).into();
        r.topics = vec![t];
        r
    }

    fn end_quorum_epoch_request(&self, successors: &[i32]) -> EndQuorumEpochRequest {
        let mut p = eqe_req::PartitionData::default();
        p.partition_index = METADATA_PARTITION;
        p.leader_id = self.config.node_id.into();
        p.leader_epoch = self.quorum.epoch;
        p.preferred_successors = successors.to_vec();
        p.preferred_candidates = successors
            .iter()
            .map(|&id| {
                let mut c = eqe_req::ReplicaInfo::default();
                c.candidate_id = id.into();
                c
            })
            .collect();
        let mut t = eqe_req::TopicData::default();
        t.topic_name = topic_name();
        t.partitions = vec![p];
        let mut r = EndQuorumEpochRequest::default();
        r.cluster_id = self.config.cluster_id.clone().map(StrBytes::from_string);
        r.topics = vec![t];
        r
    }

    fn fetch_request(&self) -> FetchRequest {
        let mut p = f_req::FetchPartition::default();
        p.partition = METADATA_PARTITION;
        p.current_leader_epoch = self.quorum.epoch;
        p.fetch_offset = self.log.end_offset();
        p.last_fetched_epoch = self.log.last_epoch();
        p.log_start_offset = self.log.log_start_offset();
        p.partition_max_bytes = self.config.fetch_max_bytes.min(i32::MAX as usize) as i32;
        p.high_watermark = self.high_watermark;
        let mut t = f_req::FetchTopic::default();
        t.topic = topic_name();
        t.topic_id = METADATA_TOPIC_ID;
        t.partitions = vec![p];
        let mut r = FetchRequest::default();
        r.cluster_id = self.config.cluster_id.clone().map(StrBytes::from_string);
        r.replica_id = self.config.node_id.into();
        r.replica_state.replica_id = self.config.node_id.into();
        r.replica_state.replica_epoch = -1;
        r.max_wait_ms = self.config.fetch_max_wait_ms.min(i32::MAX as i64) as i32;
        r.min_bytes = 1;
        r.max_bytes = p_max(&self.config);
        r.topics = vec![t];
        r
    }

    fn fetch_snapshot_request(&self, id: SnapshotId, position: i64) -> FetchSnapshotRequest {
        let mut p = fs_req::PartitionSnapshot::default();
        p.partition = METADATA_PARTITION;
        p.current_leader_epoch = self.quorum.epoch;
        p.snapshot_id.end_offset = id.end_offset;
        p.snapshot_id.epoch = id.epoch;
        p.position = position;
        let mut t = fs_req::TopicSnapshot::default();
        t.name = topic_name();
        t.partitions = vec![p];
        let mut r = FetchSnapshotRequest::default();
        r.cluster_id = self.config.cluster_id.clone().map(StrBytes::from_string);
        r.replica_id = self.config.node_id.into();
        r.max_bytes = p_max(&self.config);
        r.topics = vec![t];
        r
    }
}

fn p_max(config: &QuorumConfig) -> i32 {
    config.fetch_max_bytes.min(i32::MAX as usize) as i32
}

/// The fetching replica: `replica_state` from v15, `replica_id` before.
pub fn fetch_replica_id(req: &FetchRequest) -> i32 {
    if req.replica_state.replica_id.0 >= 0 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    }
}

/// A DescribeQuorum request for the metadata partition, as a tool sends.
pub fn describe_quorum_request() -> DescribeQuorumRequest {
    let mut p = dq_req::PartitionData::default();
    p.partition_index = METADATA_PARTITION;
    let mut t = dq_req::TopicData::default();
    t.topic_name = topic_name();
    t.partitions = vec![p];
    let mut r = DescribeQuorumRequest::default();
    r.topics = vec![t];
    r
}
