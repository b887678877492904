//! One node's metadata machinery as a single sans-IO state machine: the
//! quorum core ([`Raft`]), the controller when the node has that role
//! ([`QuorumController`]), the broker's registration life cycle when it has
//! the broker role ([`BrokerLifecycle`]), and the metadata image it applies
//! from the committed log.
//!
//! The driver (`super::driver`) feeds it requests from connections, answers
//! from peers and ticks, and performs what it returns, in order. Everything
//! here is deterministic: time comes in as `now_ms`.
//!
//! How a controller operation flows (Kafka's): a CreateTopics (likewise
//! DeleteTopics, ElectLeaders, a leader's AlterPartition, a broker's
//! registration and heartbeats) reaches any
//! node; a node whose controller is not active forwards it to the quorum
//! leader; the active controller turns it into records and a response
//! ([`ControllerResult`]); the records are proposed to the quorum as one
//! batch; the response is released once the high watermark passes the
//! result's `commit_offset`. A controller that loses leadership answers
//! what is pending with NOT_CONTROLLER, and the client retries.
//!
//! When the quorum leader's controller becomes active: once the LeaderChange
//! control batch that opens its epoch is committed, every record before it
//! has been replayed, and the next record it proposes is numbered from the
//! log end, exactly as [`QuorumController::activate`] demands.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::peers::{PeerRequest, PeerResponse};
use crate::controller::broker_lifecycle::{
    BrokerLifecycle, BrokerState, LifecycleConfig, LifecycleRequest, LifecycleResponse,
};
use crate::controller::image::{LocalChanges, MetadataImage};
use crate::controller::quorum_controller::{ControllerConfig, ControllerResult, QuorumController};
use crate::controller::records::MetadataRecord;
use crate::quorum::{self, QuorumConfig, QuorumState, Raft, RaftLog};

/// Request ids this machine gives its own sends (forwards, registration,
/// heartbeats) have this bit set; the quorum core's never do (they stay
/// below 2^48 plus its count of requests).
const OWN_REQUEST_BIT: u64 = 1 << 62;

/// The longest the machine goes without a tick.
pub const IDLE_TICK_MS: i64 = 250;

/// Settings of one node's metadata machinery.
#[derive(Debug, Clone)]
pub struct MetadataNodeConfig {
    pub node_id: i32,
    pub quorum: QuorumConfig,
    /// Present when the node has the controller role.
    pub controller: Option<ControllerConfig>,
    /// Present when the node has the broker role.
    pub lifecycle: Option<LifecycleConfig>,
    /// Take a snapshot after this many committed records since the last one
    /// (Kafka bounds it in bytes with
    /// `metadata.log.max.record.bytes.between.snapshots`).
    pub snapshot_interval_records: i64,
    /// Most controller answers waiting for their commit, plus forwarded
    /// requests waiting for the leader's answer; beyond it a request is
    /// answered at once with a retriable error.
    pub max_pending: usize,
    /// Planted bug [`crate::config::PlantedBugs::publish_before_registered`].
    pub publish_before_registered: bool,
}

/// Where an answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// The connection request `token` came in on.
    Token(u64),
    /// The local broker life cycle's request `id`.
    Lifecycle(u64),
}

/// Why one of this machine's own sends was made.
#[derive(Debug, Clone)]
enum Route {
    /// A request forwarded to the leader on behalf of a connection (boxed:
    /// a request is large next to the other routes).
    Forward { token: u64, request: Box<PeerRequest> },
    /// A registration or heartbeat of the broker life cycle.
    Lifecycle(u64),
}

/// What the machine was told.
#[derive(Debug, Clone)]
pub enum Input {
    /// Time passed; see [`MetadataNode::next_deadline`].
    Tick,
    /// A request arrived on connection `token`. `from_peer` requests came
    /// from another node and are never forwarded again, so two nodes with
    /// different ideas of the leader cannot bounce one between them.
    Request { token: u64, request: PeerRequest, from_peer: bool },
    /// The answer to [`Output::Send`] `request_id`.
    Response { from: i32, request_id: u64, response: PeerResponse },
    /// [`Output::Send`] `request_id` was not answered.
    SendFailed { to: i32, request_id: u64 },
    /// Leave quorum leadership gracefully before a shutdown.
    Resign,
    /// Begin a controlled shutdown: the broker asks the controller to move
    /// its leadership away (see [`MetadataNode::shutdown_ready`]).
    ControlledShutdown,
}

/// What happened that an observer (logs, the simulator's checkers) cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// This node learned of a new epoch or leader.
    LeaderChange { epoch: i32, leader: Option<i32> },
    /// This node applied the committed metadata record at `offset`; `digest`
    /// fingerprints its bytes, so every node's applied sequence can be
    /// compared.
    Applied { offset: i64, digest: u64 },
    /// This node's controller became active at the start of `epoch`.
    ControllerActivated { epoch: i32, next_offset: i64 },
    /// This voter's grant of its vote to `candidate` in `epoch` is leaving
    /// (after the quorum-state write that makes it durable, if any).
    VoteGranted { epoch: i32, candidate: i32 },
}

/// What the driver must do, in order.
#[derive(Debug, Clone)]
pub enum Output {
    /// Write durably before performing any later output.
    PersistQuorumState(QuorumState),
    Send {
        to: i32,
        request_id: u64,
        request: PeerRequest,
    },
    Respond {
        token: u64,
        response: PeerResponse,
    },
    /// A new image to serve from, with what changed for this broker.
    Publish {
        image: Arc<MetadataImage>,
        changes: LocalChanges,
        controller_id: Option<i32>,
    },
    Event(Event),
}

/// An answer held until the log commits through `commit_offset`.
struct Pending {
    commit_offset: i64,
    reply: Reply,
    response: PeerResponse,
}

/// The machine. See the module doc.
pub struct MetadataNode<L: RaftLog> {
    config: MetadataNodeConfig,
    raft: Raft<L>,
    controller: Option<QuorumController>,
    lifecycle: Option<BrokerLifecycle>,
    /// Every committed record applied, in offset order.
    image: MetadataImage,
    /// The image last published, to compute what changed locally.
    published: Arc<MetadataImage>,
    /// Whether this node has caught up with the metadata log since it
    /// started: a leader is known, everything it has committed is applied
    /// here and, for a broker, the image holds this run's own registration.
    /// Nothing is published before (Kafka installs its publishers only
    /// after the initial catch-up), so a restarted broker replaying its log
    /// does not act on an image long gone: answer Metadata with old leaders,
    /// or lead again, at the leader epoch its previous run held, a
    /// partition the previous run led. The controller moves leadership away
    /// from a broker's previous run in the batch that registers the new one
    /// (`QuorumController::register_broker`), so the first image published
    /// already names the new leaders at new epochs.
    caught_up: bool,
    pending: Vec<Pending>,
    routes: BTreeMap<u64, Route>,
    next_own_id: u64,
    records_since_snapshot: i64,
    snapshot_in_flight: bool,
    /// (epoch, leader) as last reported.
    known_leader: (i32, Option<i32>),
    out: Vec<Output>,
    now: i64,
}

/// FNV-1a over a record's bytes: a stable fingerprint for checkers.
pub fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl<L: RaftLog> MetadataNode<L> {
    pub fn new(config: MetadataNodeConfig, persisted: Option<QuorumState>, log: L, seed: u64, now_ms: i64) -> Self {
        assert!(config.max_pending >= 1, "max_pending must be at least 1");
        assert!(config.snapshot_interval_records >= 1, "snapshot_interval_records must be at least 1");
        let raft = Raft::new(config.quorum.clone(), persisted, log, seed, now_ms);
        let controller = config.controller.clone().map(|c| QuorumController::new(c, seed ^ 0x5eed));
        let lifecycle = config.lifecycle.clone().map(|c| BrokerLifecycle::new(c, now_ms));
        MetadataNode {
            config,
            raft,
            controller,
            lifecycle,
            image: MetadataImage::empty(),
            published: Arc::new(MetadataImage::empty()),
            caught_up: false,
            pending: Vec::new(),
            routes: BTreeMap::new(),
            next_own_id: 0,
            records_since_snapshot: 0,
            snapshot_in_flight: false,
            known_leader: (-1, None),
            out: Vec::new(),
            now: now_ms,
        }
    }

    /// The log, as storage holds it (a test's crash model takes it back).
    pub fn into_log(self) -> L {
        self.raft.into_log()
    }

    pub fn raft(&self) -> &Raft<L> {
        &self.raft
    }

    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    /// Whether a controlled shutdown may stop the node now: the controller
    /// has moved this broker's leadership away (or it has no broker role).
    pub fn shutdown_ready(&self) -> bool {
        self.lifecycle.as_ref().is_none_or(|l| l.state() == BrokerState::ShuttingDown)
    }

    pub fn lifecycle(&self) -> Option<&BrokerLifecycle> {
        self.lifecycle.as_ref()
    }

    pub fn controller(&self) -> Option<&QuorumController> {
        self.controller.as_ref()
    }

    /// The active controller as far as this node knows: the quorum leader.
    pub fn controller_id(&self) -> Option<i32> {
        self.raft.leader_id()
    }

    /// Feed one input at `now_ms`; returns what to do, in order.
    pub fn handle(&mut self, now_ms: i64, input: Input) -> Vec<Output> {
        self.now = now_ms;
        match input {
            Input::Tick => self.raft_input(quorum::Input::Tick),
            Input::Request { token, request, from_peer } => self.on_request(Reply::Token(token), request, from_peer),
            Input::Response { from, request_id, response } => self.on_response(from, request_id, response),
            Input::SendFailed { to, request_id } => self.on_send_failed(to, request_id),
            Input::Resign => self.raft_input(quorum::Input::Resign),
            Input::ControlledShutdown => {
                let now = self.now;
                if let Some(l) = self.lifecycle.as_mut() {
                    l.begin_controlled_shutdown(now);
                }
            }
        }
        self.sync_leader();
        self.tick_controller();
        self.poll_lifecycle();
        if !self.caught_up {
            // Catching up may complete with no new record to apply.
            self.publish();
        }
        self.maybe_snapshot();
        self.check_invariants();
        std::mem::take(&mut self.out)
    }

    /// When the machine next needs [`Input::Tick`] if nothing else arrives:
    /// at the latest [`IDLE_TICK_MS`] from the last input, so an observer
    /// that knows no leader keeps asking the voters.
    pub fn next_deadline(&self) -> i64 {
        [
            self.raft.next_deadline(),
            self.controller.as_ref().and_then(|c| c.next_deadline()),
            self.lifecycle.as_ref().and_then(|l| l.next_wakeup()),
            Some(self.now + IDLE_TICK_MS),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("the idle tick is always there")
    }

    fn check_invariants(&self) {
        invariant!(
            self.image.last_offset() < self.raft.delivered_offset().max(0),
            "applied through {} but only {} delivered",
            self.image.last_offset(),
            self.raft.delivered_offset()
        );
        invariant!(self.pending.len() <= self.config.max_pending, "pending answers past their bound");
        if let Some(c) = &self.controller {
            invariant!(!c.is_active() || self.raft.is_leader(), "an active controller whose quorum is not leader");
        }
    }

    // ---- requests ----------------------------------------------------

    fn on_request(&mut self, reply: Reply, request: PeerRequest, from_peer: bool) {
        let token = match reply {
            Reply::Token(t) => Some(t),
            Reply::Lifecycle(_) => None,
        };
        match request {
            PeerRequest::Vote(r) => self.raft_request(token, quorum::Request::Vote(r)),
            PeerRequest::BeginQuorumEpoch(r) => self.raft_request(token, quorum::Request::BeginQuorumEpoch(r)),
            PeerRequest::EndQuorumEpoch(r) => self.raft_request(token, quorum::Request::EndQuorumEpoch(r)),
            PeerRequest::Fetch(r) => self.raft_request(token, quorum::Request::Fetch(r)),
            PeerRequest::FetchSnapshot(r) => self.raft_request(token, quorum::Request::FetchSnapshot(r)),
            PeerRequest::DescribeQuorum(r) => {
                // Only the leader knows every voter's progress; anyone else
                // asks it, so a tool may ask whichever node it knows.
                match self.raft.leader_id() {
                    Some(l) if l != self.config.node_id && !from_peer => {
                        self.forward(reply, l, PeerRequest::DescribeQuorum(r))
                    }
                    _ => self.raft_request(token, quorum::Request::DescribeQuorum(r)),
                }
            }
            other => self.controller_request(reply, other, from_peer),
        }
    }

    fn raft_request(&mut self, token: Option<u64>, request: quorum::Request) {
        let Some(token) = token else { return };
        self.raft_input(quorum::Input::Request { token, request });
    }

    /// A controller operation: handled if this node's controller is active,
    /// forwarded to the quorum leader if not (and the request may be
    /// forwarded), else refused with NOT_CONTROLLER.
    fn controller_request(&mut self, reply: Reply, request: PeerRequest, from_peer: bool) {
        let active = self.controller.as_ref().is_some_and(|c| c.is_active());
        if !active {
            match self.raft.leader_id() {
                Some(l) if l != self.config.node_id && !from_peer => return self.forward(reply, l, request),
                _ => return self.answer(reply, error_response(&request, ResponseError::NotController)),
            }
        }
        if self.pending.len() >= self.config.max_pending {
            return self.answer(reply, error_response(&request, ResponseError::ThrottlingQuotaExceeded));
        }
        let now = self.now;
        let ctl = self.controller.as_mut().expect("active controller");
        let (records, commit_offset, response) = match &request {
            PeerRequest::BrokerRegistration(r) => split(ctl.register_broker(r, now), PeerResponse::BrokerRegistration),
            PeerRequest::BrokerHeartbeat(r) => split(ctl.broker_heartbeat(r, now), PeerResponse::BrokerHeartbeat),
            PeerRequest::UnregisterBroker(r) => split(ctl.unregister_broker(r), PeerResponse::UnregisterBroker),
            PeerRequest::CreateTopics(r) => split(ctl.create_topics(r), PeerResponse::CreateTopics),
            // Brokers hand DeleteTopics over in its v6 shape (names or ids
            // in `topics`).
            PeerRequest::DeleteTopics(r) => split(ctl.delete_topics(r, 6), PeerResponse::DeleteTopics),
            PeerRequest::AlterPartition(r) => split(ctl.alter_partition(r), PeerResponse::AlterPartition),
            PeerRequest::ElectLeaders(r) => split(ctl.elect_leaders(r), PeerResponse::ElectLeaders),
            PeerRequest::AllocateProducerIds(r) => {
                split(ctl.allocate_producer_ids(r), PeerResponse::AllocateProducerIds)
            }
            _ => unreachable!("quorum requests are routed before"),
        };
        if !records.is_empty() && !self.propose(&records) {
            return self.answer(reply, error_response(&request, ResponseError::NotController));
        }
        match commit_offset {
            None => self.answer(reply, response),
            Some(offset) if offset < self.raft.high_watermark() => self.answer(reply, response),
            Some(offset) => self.pending.push(Pending { commit_offset: offset, reply, response }),
        }
    }

    /// Propose one controller result's records as one batch. False (and the
    /// controller resigned) if the quorum refused them or the numbering
    /// drifted.
    fn propose(&mut self, records: &[MetadataRecord]) -> bool {
        let expected_base = self.raft.log().end_offset();
        let ctl_next = self.controller.as_ref().and_then(|c| c.next_offset());
        let encoded: Vec<Bytes> = records.iter().map(MetadataRecord::encode).collect();
        let outputs = self.raft.handle(self.now, quorum::Input::Propose { records: encoded });
        let mut ok = false;
        let mut rest = Vec::new();
        for o in outputs {
            match o {
                quorum::Output::Proposed(Ok(p)) => {
                    // The controller numbered the records before proposing
                    // them: they must land exactly there.
                    let want_last = ctl_next.unwrap_or(-1) - 1;
                    ok = p.base_offset == expected_base && p.last_offset == want_last;
                    if !ok {
                        tracing::error!(?p, expected_base, want_last, "metadata records landed off their numbering");
                    }
                }
                quorum::Output::Proposed(Err(e)) => {
                    tracing::warn!(error = %e, "the quorum refused the controller's records");
                }
                other => rest.push(other),
            }
        }
        if !ok {
            self.resign_controller();
        }
        self.raft_outputs(rest);
        ok
    }

    fn forward(&mut self, reply: Reply, to: i32, request: PeerRequest) {
        let Reply::Token(token) = reply else {
            // Local callers (the life cycle) send to the controller themselves.
            return self.answer(reply, error_response(&request, ResponseError::NotController));
        };
        if self.routes.len() >= self.config.max_pending {
            return self.answer(reply, error_response(&request, ResponseError::ThrottlingQuotaExceeded));
        }
        let id = self.own_id();
        self.routes.insert(id, Route::Forward { token, request: Box::new(request.clone()) });
        self.out.push(Output::Send { to, request_id: id, request });
    }

    fn own_id(&mut self) -> u64 {
        self.next_own_id += 1;
        OWN_REQUEST_BIT | self.next_own_id
    }

    fn answer(&mut self, reply: Reply, response: PeerResponse) {
        match reply {
            Reply::Token(token) => self.out.push(Output::Respond { token, response }),
            Reply::Lifecycle(id) => self.lifecycle_answer(id, response),
        }
    }

    fn lifecycle_answer(&mut self, id: u64, response: PeerResponse) {
        let now = self.now;
        let Some(l) = self.lifecycle.as_mut() else { return };
        match response {
            PeerResponse::BrokerRegistration(r) => l.on_response(id, LifecycleResponse::Register(r), now),
            PeerResponse::BrokerHeartbeat(r) => l.on_response(id, LifecycleResponse::Heartbeat(r), now),
            _ => l.on_failure(id, now),
        }
    }

    // ---- answers from peers -----------------------------------------

    fn on_response(&mut self, from: i32, request_id: u64, response: PeerResponse) {
        if request_id & OWN_REQUEST_BIT == 0 {
            if let Ok(r) = quorum::Response::try_from(response) {
                self.raft_input(quorum::Input::Response { from, request_id, response: r });
            }
            return;
        }
        match self.routes.remove(&request_id) {
            Some(Route::Forward { token, .. }) => self.out.push(Output::Respond { token, response }),
            Some(Route::Lifecycle(id)) => self.lifecycle_answer(id, response),
            None => {}
        }
    }

    fn on_send_failed(&mut self, to: i32, request_id: u64) {
        if request_id & OWN_REQUEST_BIT == 0 {
            return self.raft_input(quorum::Input::SendFailed { to, request_id });
        }
        match self.routes.remove(&request_id) {
            Some(Route::Forward { token, request }) => {
                let response = error_response(&request, ResponseError::NotController);
                self.out.push(Output::Respond { token, response });
            }
            Some(Route::Lifecycle(id)) => {
                let now = self.now;
                if let Some(l) = self.lifecycle.as_mut() {
                    l.on_failure(id, now);
                }
            }
            None => {}
        }
    }

    // ---- the quorum's outputs ----------------------------------------

    fn raft_input(&mut self, input: quorum::Input) {
        let outputs = self.raft.handle(self.now, input);
        self.raft_outputs(outputs);
    }

    fn raft_outputs(&mut self, outputs: Vec<quorum::Output>) {
        // Leadership can end without a new epoch (a leader that lost its
        // majority resigns): the controller goes with it.
        if !self.raft.is_leader() {
            self.resign_controller();
        }
        for o in outputs {
            match o {
                quorum::Output::PersistQuorumState(s) => self.out.push(Output::PersistQuorumState(s)),
                quorum::Output::Send { to, request_id, request } => {
                    self.out.push(Output::Send { to, request_id, request: request.into() })
                }
                quorum::Output::Respond { token, response } => {
                    self.out.push(Output::Respond { token, response: response.into() })
                }
                quorum::Output::Committed { high_watermark, batches } => self.on_committed(high_watermark, batches),
                quorum::Output::LoadSnapshot { id, bytes } => self.on_snapshot(id, &bytes),
                // Read from the state instead (`sync_leader`).
                quorum::Output::LeaderChange { .. } => {}
                quorum::Output::VoteGranted { epoch, candidate } => {
                    self.out.push(Output::Event(Event::VoteGranted { epoch, candidate }))
                }
                quorum::Output::Proposed(r) => {
                    // Only `propose` proposes, and it reads its own answer.
                    invariant!(false, "an unexpected proposal answer: {r:?}");
                }
                quorum::Output::SnapshotTaken(r) => {
                    self.snapshot_in_flight = false;
                    match r {
                        Ok(id) => tracing::info!(node = self.config.node_id, ?id, "metadata snapshot taken"),
                        Err(e) => tracing::warn!(node = self.config.node_id, error = %e, "metadata snapshot failed"),
                    }
                }
            }
        }
    }

    /// Tell the life cycle, the observers and the driver when the leader
    /// this node knows of changes. Read from the quorum's state after every
    /// input rather than from its LeaderChange outputs: a node restarting
    /// into its persisted epoch learns that its leader is alive from the
    /// first answer, with no new epoch and so no LeaderChange.
    fn sync_leader(&mut self) {
        let now_known = (self.raft.epoch(), self.raft.leader_id());
        if now_known == self.known_leader {
            return;
        }
        self.known_leader = now_known;
        let (epoch, leader) = now_known;
        self.out.push(Output::Event(Event::LeaderChange { epoch, leader }));
        if leader != Some(self.config.node_id) {
            self.resign_controller();
        }
        let now = self.now;
        if let Some(l) = self.lifecycle.as_mut() {
            l.on_controller_change(leader, now);
        }
    }

    fn resign_controller(&mut self) {
        let Some(c) = self.controller.as_mut() else { return };
        if !c.is_active() && self.pending.is_empty() {
            return;
        }
        c.resign();
        for p in std::mem::take(&mut self.pending) {
            let response = error_from_response(&p.response, ResponseError::NotController);
            self.answer(p.reply, response);
        }
    }

    fn on_committed(&mut self, high_watermark: i64, batches: Vec<quorum::LogBatch>) {
        let mut activate = false;
        for b in batches {
            if b.control {
                activate |= self.raft.is_leader() && b.epoch == self.raft.epoch();
                // Nothing to apply, but observed all the same: a committed
                // LeaderChange overwritten later is as much a divergence.
                for (i, bytes) in b.records.iter().enumerate() {
                    let offset = b.base_offset + i as i64;
                    self.out.push(Output::Event(Event::Applied { offset, digest: digest(bytes) }));
                }
                continue;
            }
            for (i, bytes) in b.records.iter().enumerate() {
                let offset = b.base_offset + i as i64;
                let record = MetadataRecord::decode(bytes);
                invariant!(record.is_ok(), "committed metadata record at {offset} does not decode: {record:?}");
                let Ok(record) = record else { continue };
                let applied = self.image.apply(offset, &record);
                invariant!(applied.is_ok(), "a committed record the image refuses: {applied:?}");
                if let Some(c) = self.controller.as_mut() {
                    let replayed = c.replay(offset, &record);
                    invariant!(replayed.is_ok(), "a committed record the controller refuses: {replayed:?}");
                }
                self.records_since_snapshot += 1;
                self.out.push(Output::Event(Event::Applied { offset, digest: digest(bytes) }));
            }
        }
        let now = self.now;
        if let Some(l) = self.lifecycle.as_mut() {
            l.on_metadata_applied(high_watermark - 1, now);
        }
        self.release_pending(high_watermark);
        self.publish();
        if activate {
            self.activate_controller();
        }
    }

    fn release_pending(&mut self, high_watermark: i64) {
        let (done, waiting): (Vec<Pending>, Vec<Pending>) =
            std::mem::take(&mut self.pending).into_iter().partition(|p| p.commit_offset < high_watermark);
        self.pending = waiting;
        for p in done {
            self.answer(p.reply, p.response);
        }
    }

    fn activate_controller(&mut self) {
        let next_offset = self.raft.log().end_offset();
        let now = self.now;
        let Some(c) = self.controller.as_mut() else { return };
        if c.is_active() || next_offset <= c.image().last_offset() {
            return;
        }
        let result = c.activate(next_offset, now);
        self.out.push(Output::Event(Event::ControllerActivated { epoch: self.raft.epoch(), next_offset }));
        tracing::info!(node = self.config.node_id, epoch = self.raft.epoch(), next_offset, "controller active");
        if !result.records.is_empty() {
            self.propose(&result.records);
        }
    }

    fn on_snapshot(&mut self, id: quorum::SnapshotId, bytes: &[u8]) {
        let image = MetadataImage::from_snapshot(bytes);
        invariant!(image.is_ok(), "metadata snapshot {id:?} does not decode: {image:?}");
        let Ok(image) = image else { return };
        if let Some(c) = self.controller.as_mut() {
            c.load_snapshot(image.clone());
        }
        for p in std::mem::take(&mut self.pending) {
            let response = error_from_response(&p.response, ResponseError::NotController);
            self.answer(p.reply, response);
        }
        self.image = image;
        self.records_since_snapshot = 0;
        self.publish();
    }

    fn publish(&mut self) {
        if !self.caught_up {
            if self.raft.leader_id().is_none() || self.raft.delivered_offset() < self.raft.high_watermark() {
                return;
            }
            if let Some(l) = self.lifecycle.as_ref().filter(|_| !self.config.publish_before_registered) {
                let mine =
                    self.image.broker(self.config.node_id).is_some_and(|b| b.incarnation_id == l.incarnation_id());
                if !mine {
                    return;
                }
            }
            self.caught_up = true;
            tracing::info!(
                node = self.config.node_id,
                offset = self.raft.delivered_offset(),
                "metadata caught up; publishing images"
            );
        }
        if *self.published == self.image {
            return;
        }
        let image = Arc::new(self.image.clone());
        let changes = image.local_changes(&self.published, self.config.node_id);
        self.published = image.clone();
        self.out.push(Output::Publish { image, changes, controller_id: self.raft.leader_id() });
    }

    // ---- periodic work ---------------------------------------------------

    fn tick_controller(&mut self) {
        let now = self.now;
        let Some(c) = self.controller.as_mut() else { return };
        if !c.is_active() {
            return;
        }
        let result = c.tick(now);
        if !result.records.is_empty() {
            self.propose(&result.records);
        }
    }

    fn poll_lifecycle(&mut self) {
        // A bounded loop: a local controller answers at once, and the life
        // cycle sends at most one request at a time.
        for _ in 0..4 {
            let now = self.now;
            let Some(l) = self.lifecycle.as_mut() else { return };
            let Some(out) = l.poll(now) else { return };
            let request = match out.request {
                LifecycleRequest::Register(r) => PeerRequest::BrokerRegistration(r),
                LifecycleRequest::Heartbeat(r) => PeerRequest::BrokerHeartbeat(r),
            };
            if out.controller_id == self.config.node_id {
                self.controller_request(Reply::Lifecycle(out.id), request, true);
            } else {
                let id = self.own_id();
                self.routes.insert(id, Route::Lifecycle(out.id));
                self.out.push(Output::Send { to: out.controller_id, request_id: id, request });
                return;
            }
        }
    }

    fn maybe_snapshot(&mut self) {
        if self.snapshot_in_flight || self.records_since_snapshot < self.config.snapshot_interval_records {
            return;
        }
        let end_offset = self.raft.delivered_offset();
        if end_offset <= self.raft.log().log_start_offset() {
            return;
        }
        self.snapshot_in_flight = true;
        self.records_since_snapshot = 0;
        let bytes = self.image.to_snapshot();
        self.raft_input(quorum::Input::Snapshot { end_offset, bytes });
        self.snapshot_in_flight = false;
    }
}

fn split<R>(r: ControllerResult<R>, wrap: fn(R) -> PeerResponse) -> (Vec<MetadataRecord>, Option<i64>, PeerResponse) {
    (r.records, r.commit_offset, wrap(r.response))
}

fn str_bytes(s: &str) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.to_string()))
}

/// The answer refusing `request` with `code`, in the request's own shape.
pub fn error_response(request: &PeerRequest, code: ResponseError) -> PeerResponse {
    let e = code.code();
    match request {
        PeerRequest::Vote(_) => PeerResponse::Vote(VoteResponse::default().with_error_code(e)),
        PeerRequest::BeginQuorumEpoch(_) => {
            PeerResponse::BeginQuorumEpoch(BeginQuorumEpochResponse::default().with_error_code(e))
        }
        PeerRequest::EndQuorumEpoch(_) => {
            PeerResponse::EndQuorumEpoch(EndQuorumEpochResponse::default().with_error_code(e))
        }
        PeerRequest::Fetch(_) => PeerResponse::Fetch(FetchResponse::default().with_error_code(e)),
        PeerRequest::FetchSnapshot(_) => {
            PeerResponse::FetchSnapshot(FetchSnapshotResponse::default().with_error_code(e))
        }
        // (No error message: the field exists only from v2 on.)
        PeerRequest::DescribeQuorum(_) => {
            PeerResponse::DescribeQuorum(DescribeQuorumResponse::default().with_error_code(e))
        }
        PeerRequest::BrokerRegistration(_) => PeerResponse::BrokerRegistration(
            BrokerRegistrationResponse::default().with_error_code(e).with_broker_epoch(-1),
        ),
        PeerRequest::BrokerHeartbeat(_) => {
            PeerResponse::BrokerHeartbeat(BrokerHeartbeatResponse::default().with_error_code(e).with_is_fenced(true))
        }
        PeerRequest::UnregisterBroker(_) => {
            PeerResponse::UnregisterBroker(UnregisterBrokerResponse::default().with_error_code(e))
        }
        PeerRequest::CreateTopics(r) => PeerResponse::CreateTopics(
            CreateTopicsResponse::default().with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        CreatableTopicResult::default()
                            .with_name(t.name.clone())
                            .with_error_code(e)
                            .with_error_message(str_bytes("this node is not the active controller; retry"))
                            .with_num_partitions(-1)
                            .with_replication_factor(-1)
                    })
                    .collect(),
            ),
        ),
        PeerRequest::AlterPartition(_) => {
            PeerResponse::AlterPartition(AlterPartitionResponse::default().with_error_code(e))
        }
        PeerRequest::ElectLeaders(_) => PeerResponse::ElectLeaders(ElectLeadersResponse::default().with_error_code(e)),
        PeerRequest::AllocateProducerIds(_) => PeerResponse::AllocateProducerIds(
            AllocateProducerIdsResponse::default().with_error_code(e).with_producer_id_start((-1).into()),
        ),
        PeerRequest::DeleteTopics(r) => PeerResponse::DeleteTopics(
            DeleteTopicsResponse::default().with_responses(
                r.topics
                    .iter()
                    .map(|t| {
                        DeletableTopicResult::default()
                            .with_name(t.name.clone())
                            .with_topic_id(t.topic_id)
                            .with_error_code(e)
                            .with_error_message(str_bytes("this node is not the active controller; retry"))
                    })
                    .collect(),
            ),
        ),
    }
}

/// A held answer turned into a refusal, keeping its per-topic shape.
fn error_from_response(response: &PeerResponse, code: ResponseError) -> PeerResponse {
    let e = code.code();
    match response.clone() {
        PeerResponse::CreateTopics(mut r) => {
            for t in &mut r.topics {
                t.error_code = e;
                t.error_message = str_bytes("the controller lost leadership before the topic was committed; retry");
            }
            PeerResponse::CreateTopics(r)
        }
        PeerResponse::DeleteTopics(mut r) => {
            for t in &mut r.responses {
                t.error_code = e;
            }
            PeerResponse::DeleteTopics(r)
        }
        PeerResponse::BrokerRegistration(r) => {
            PeerResponse::BrokerRegistration(r.with_error_code(e).with_broker_epoch(-1))
        }
        PeerResponse::BrokerHeartbeat(r) => PeerResponse::BrokerHeartbeat(r.with_error_code(e)),
        PeerResponse::UnregisterBroker(r) => PeerResponse::UnregisterBroker(r.with_error_code(e)),
        // The records behind these answers may never commit: the whole
        // request is refused, so the leader retries against the new
        // controller.
        PeerResponse::AlterPartition(_) => {
            PeerResponse::AlterPartition(AlterPartitionResponse::default().with_error_code(e))
        }
        PeerResponse::ElectLeaders(_) => PeerResponse::ElectLeaders(ElectLeadersResponse::default().with_error_code(e)),
        PeerResponse::AllocateProducerIds(_) => PeerResponse::AllocateProducerIds(
            AllocateProducerIdsResponse::default().with_error_code(e).with_producer_id_start((-1).into()),
        ),
        other => other,
    }
}
