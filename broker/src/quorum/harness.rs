//! A deterministic harness for the quorum core: voters and observers driven
//! through a seeded in-memory network with delay, loss, reordering and
//! partitions (the leader cut off from the other voters included), crashes
//! that lose what was never flushed (some in the middle of performing a
//! call's outputs), restarts and clock jumps, and a leader-churn profile
//! that crashes new leaders. Pure and single-threaded: one seed is one run
//! (35 simulated seconds, a few milliseconds of CPU in a release build).
//!
//! Checkers: at most one leader per epoch; at most one vote per voter per
//! epoch; every committed entry, once any node applied it, is the same on
//! every node that applies that offset, and each node applies offsets in
//! order without gaps (so every applied sequence is a prefix of the
//! longest); every new leader holds every entry committed so far (leader
//! completeness); after the faults heal a leader is
//! elected and followed by every voter within [`ELECTION_BOUND_MS`], and a
//! record proposed then reaches every node. The core's own invariants
//! (`invariant!`) fail the run by panicking.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::{BufMut, Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// A leader must be elected, and followed by every voter, this long after
/// the last fault heals.
pub const ELECTION_BOUND_MS: i64 = 15_000;
/// And a record proposed then must reach every node within this.
const CONVERGENCE_BOUND_MS: i64 = 15_000;

/// What one run simulates.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Faults are injected during `[0, fault_ms)`, then healed.
    pub fault_ms: i64,
    pub bugs: QuorumBugs,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig { fault_ms: 20_000, bugs: QuorumBugs::default() }
    }
}

/// What one run found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The first violated property, if any.
    pub failure: Option<String>,
    /// From the heal to a leader followed by every voter.
    pub heal_to_leader_ms: Option<i64>,
    /// Offsets committed in all.
    pub committed: i64,
    /// Epochs that had a leader.
    pub leader_epochs: usize,
    /// Snapshots downloaded by followers.
    pub snapshot_loads: usize,
}

enum Body {
    Request { request_id: u64, request: Request },
    Response { request_id: u64, response: Response },
    SendFailed { request_id: u64 },
}

struct Msg {
    from: i32,
    to: i32,
    /// The incarnation of the node the message is for (responses) or from
    /// (requests); a restart makes older ones undeliverable.
    incarnation: u64,
    body: Body,
}

struct App {
    next: i64,
    entries: Vec<(i64, i32, Bytes)>,
}

struct Node {
    id: i32,
    config: QuorumConfig,
    raft: Option<Raft<MemoryLog>>,
    /// The log while the node is down.
    disk: Option<MemoryLog>,
    persisted: Option<QuorumState>,
    incarnation: u64,
    skew: i64,
    tokens: BTreeMap<u64, (i32, u64, u64)>,
    /// Tokens of Vote requests (not pre-votes): candidate and epoch.
    vote_tokens: BTreeMap<u64, (i32, i32)>,
    next_token: u64,
    app: App,
    /// Global time of the next tick.
    wake: i64,
    restart_at: Option<i64>,
}

impl Node {
    fn local(&self, now: i64) -> i64 {
        now + self.skew
    }
}

struct Sim {
    rng: ChaCha8Rng,
    now: i64,
    nodes: Vec<Node>,
    queue: BTreeMap<(i64, u64), Msg>,
    seq: u64,
    loss: f64,
    max_delay: i64,
    /// Directed links that drop everything.
    cut: BTreeSet<(i32, i32)>,
    faults_on: bool,
    leaders: BTreeMap<i32, i32>,
    /// Offset -> (epoch, record) of every entry applied anywhere, and the
    /// highest leader epoch seen when it was first applied: it was committed
    /// in that epoch or an earlier one.
    committed: BTreeMap<i64, (i32, Bytes, i32)>,
    failure: Option<String>,
    proposals: u64,
    snapshot_loads: usize,
    snapshot_every: i64,
    /// Events in a row at the same instant, to catch a core that asks to
    /// be woken now forever.
    spins: u64,
    trace: bool,
    /// Set once the faults healed: the record every node must then apply.
    marker: Option<Bytes>,
    /// (voter, epoch) -> the candidate it granted its vote.
    votes: BTreeMap<(i32, i32), i32>,
    /// Chance of a crash part-way through a call's outputs that write the
    /// quorum state.
    mid_output_crash: f64,
    /// The leader-churn profile: faults often, mostly at the leader.
    churn: bool,
    /// Crashes to come: (time, node, incarnation).
    doomed: Vec<(i64, i32, u64)>,
}

fn brief(i: &Input) -> String {
    match i {
        Input::Request { request, .. } => format!("request {}", brief_msg(&format!("{request:?}"))),
        Input::Response { from, response, .. } => {
            format!("response from {from} {}", brief_msg(&format!("{response:?}")))
        }
        other => format!("{other:?}").chars().take(200).collect(),
    }
}

fn brief_out(o: &Output) -> String {
    match o {
        Output::Send { to, request, .. } => format!("send to {to} {}", brief_msg(&format!("{request:?}"))),
        Output::Respond { response, .. } => format!("respond {}", brief_msg(&format!("{response:?}"))),
        other => format!("{other:?}").chars().take(300).collect(),
    }
}

fn brief_msg(s: &str) -> String {
    s.replace("unknown_tagged_fields: {}, ", "").replace("unknown_tagged_fields: {} ", "").chars().take(1200).collect()
}

fn encode_app(entries: &[(i64, i32, Bytes)]) -> Bytes {
    let mut b = BytesMut::new();
    for (o, e, v) in entries {
        b.put_i64(*o);
        b.put_i32(*e);
        b.put_u32(v.len() as u32);
        b.put_slice(v);
    }
    b.freeze()
}

fn decode_app(mut b: &[u8]) -> Vec<(i64, i32, Bytes)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let o = i64::from_be_bytes(b[0..8].try_into().unwrap());
        let e = i32::from_be_bytes(b[8..12].try_into().unwrap());
        let n = u32::from_be_bytes(b[12..16].try_into().unwrap()) as usize;
        out.push((o, e, Bytes::copy_from_slice(&b[16..16 + n])));
        b = &b[16 + n..];
    }
    out
}

impl Sim {
    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(format!("t={}ms: {why}", self.now));
        }
    }

    /// Every node's view, for failure messages.
    fn describe(&self) -> String {
        let mut out = Vec::new();
        for n in &self.nodes {
            out.push(match &n.raft {
                None => format!("{}: down", n.id),
                Some(r) => format!(
                    "{}: {:?} epoch {} leader {:?} voted {:?} log [{}, {}) hw {} applied {}",
                    n.id,
                    r.role(),
                    r.epoch(),
                    r.leader_id(),
                    r.quorum_state().voted_for,
                    r.log().log_start_offset(),
                    r.log().end_offset(),
                    r.high_watermark(),
                    n.app.next
                ),
            });
        }
        format!("{}; cut {:?}", out.join("; "), self.cut)
    }

    fn idx(&self, id: i32) -> usize {
        id as usize
    }

    fn is_up(&self, id: i32) -> bool {
        self.nodes[self.idx(id)].raft.is_some()
    }

    fn enqueue(&mut self, at: i64, msg: Msg) {
        self.seq += 1;
        self.queue.insert((at, self.seq), msg);
    }

    /// Put a message on the wire: delayed (hence reordered), maybe lost,
    /// dropped on cut links; a sender sometimes learns at once that the
    /// peer is unreachable, as from a refused connection.
    fn transmit(&mut self, msg: Msg) {
        let cut = self.cut.contains(&(msg.from, msg.to));
        let down = !self.is_up(msg.to);
        let lost = self.rng.random_bool(self.loss);
        if cut || down || lost {
            if let Body::Request { request_id, .. } = msg.body {
                // A crashed process refuses connections; a cut link
                // sometimes fails fast and sometimes swallows the request.
                if down || (cut && self.rng.random_bool(0.5)) {
                    let from = self.nodes[self.idx(msg.from)].incarnation;
                    let back =
                        Msg { from: msg.to, to: msg.from, incarnation: from, body: Body::SendFailed { request_id } };
                    let at = self.now + 1;
                    self.enqueue(at, back);
                }
            }
            return;
        }
        let delay = 1 + self.rng.random_range(0..self.max_delay.max(1));
        let at = self.now + delay;
        self.enqueue(at, msg);
    }

    fn step(&mut self, id: i32, input: Input) {
        let i = self.idx(id);
        let local = self.nodes[i].local(self.now);
        let Some(raft) = self.nodes[i].raft.as_mut() else { return };
        if self.trace {
            println!("{} node {id} <- {}", self.now, brief(&input));
        }
        let result = catch_unwind(AssertUnwindSafe(|| raft.handle(local, input)));
        let outputs = match result {
            Ok(o) => o,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.fail(format!("node {id} panicked: {msg}"));
                return;
            }
        };
        let raft = self.nodes[i].raft.as_ref().expect("up");
        if raft.is_leader() {
            let epoch = raft.epoch();
            match self.leaders.get(&epoch) {
                Some(&l) if l != id => self.fail(format!("two leaders in epoch {epoch}: {l} and {id}")),
                Some(_) => {}
                None => {
                    self.leaders.insert(epoch, id);
                    // Churn kills new leaders soon after they are elected,
                    // before their epoch is established.
                    if self.churn && self.faults_on && self.rng.random_bool(0.3) {
                        let at = self.now + self.rng.random_range(0..300);
                        self.doomed.push((at, id, self.nodes[i].incarnation));
                    }
                    // Leader completeness: a new leader holds every entry
                    // committed so far. Checking the last one suffices: logs
                    // that agree on an offset and epoch agree before it.
                    // (Only entries committed in earlier epochs: a stale
                    // candidate may still win an older epoch late, and
                    // that leader commits nothing.)
                    let earlier = self.committed.iter().rev().find(|(_, c)| c.2 < epoch);
                    if let Some((&off, &(e, _, _))) = earlier {
                        let log = raft.log();
                        let held = if off < log.log_start_offset() { true } else { log.epoch_at(off) == Some(e) };
                        if !held {
                            let why = format!(
                                "node {id} became leader of epoch {epoch} without committed offset {off} of epoch {e} (it has {:?})",
                                log.epoch_at(off)
                            );
                            self.fail(why);
                            return;
                        }
                    }
                }
            }
        }
        // A crash while performing this call's outputs, most often around
        // a quorum-state write, where ordering matters.
        let writes_state = outputs.iter().any(|o| matches!(o, Output::PersistQuorumState(_)));
        // The crash comes right after something left the node (a message
        // out is what makes the ordering of the outputs observable).
        let after_message: Vec<usize> = outputs
            .iter()
            .enumerate()
            .filter(|(k, o)| *k + 1 < outputs.len() && matches!(o, Output::Send { .. } | Output::Respond { .. }))
            .map(|(k, _)| k + 1)
            .collect();
        let crash_at = if self.faults_on && writes_state && self.rng.random_bool(self.mid_output_crash) {
            if after_message.is_empty() {
                Some(self.rng.random_range(0..outputs.len()))
            } else {
                Some(after_message[self.rng.random_range(0..after_message.len())])
            }
        } else {
            None
        };
        for (k, out) in outputs.into_iter().enumerate() {
            if self.trace {
                println!("{} node {id} -> {}", self.now, brief_out(&out));
            }
            if crash_at == Some(k) {
                let down = 20 + self.rng.random_range(0..500);
                self.crash(id, down);
                return;
            }
            self.perform(id, out);
            if self.failure.is_some() || !self.is_up(id) {
                return;
            }
        }
        self.schedule(id);
    }

    fn schedule(&mut self, id: i32) {
        let i = self.idx(id);
        let n = &mut self.nodes[i];
        n.wake = match n.raft.as_ref().and_then(|r| r.next_deadline()) {
            Some(d) => (d - n.skew).max(self.now),
            None => i64::MAX,
        };
    }

    fn perform(&mut self, id: i32, out: Output) {
        let i = self.idx(id);
        match out {
            Output::PersistQuorumState(s) => self.nodes[i].persisted = Some(s),
            Output::Send { to, request_id, request } => {
                let inc = self.nodes[i].incarnation;
                if to < 0 || to as usize >= self.nodes.len() {
                    self.fail(format!("node {id} sent to unknown node {to}"));
                    return;
                }
                self.transmit(Msg { from: id, to, incarnation: inc, body: Body::Request { request_id, request } });
            }
            Output::Respond { token, response } => {
                let Some((to, request_id, inc)) = self.nodes[i].tokens.remove(&token) else {
                    self.fail(format!("node {id} answered unknown token {token}"));
                    return;
                };
                // Election safety rests on this: one vote per voter per epoch.
                if let (Some((candidate, epoch)), Response::Vote(v)) =
                    (self.nodes[i].vote_tokens.remove(&token), &response)
                {
                    let granted = v.topics.first().and_then(|t| t.partitions.first()).is_some_and(|p| p.vote_granted);
                    if granted {
                        match self.votes.insert((id, epoch), candidate) {
                            Some(c) if c != candidate => {
                                self.fail(format!("node {id} voted for {c} and then {candidate} in epoch {epoch}"));
                                return;
                            }
                            _ => {}
                        }
                    }
                }
                self.transmit(Msg { from: id, to, incarnation: inc, body: Body::Response { request_id, response } });
            }
            Output::Committed { batches, .. } => {
                for b in batches {
                    for (k, v) in b.records.iter().enumerate() {
                        let off = b.base_offset + k as i64;
                        self.apply(id, off, b.epoch, v.clone());
                        if self.failure.is_some() {
                            return;
                        }
                    }
                }
                self.maybe_snapshot(id);
            }
            Output::LoadSnapshot { id: sid, bytes } => {
                self.snapshot_loads += 1;
                let entries = decode_app(&bytes);
                for (o, e, v) in &entries {
                    self.check_committed(id, *o, *e, v);
                }
                let n = &mut self.nodes[i];
                n.app.entries = entries;
                n.app.next = sid.end_offset;
            }
            Output::LeaderChange { .. }
            | Output::Proposed(_)
            | Output::SnapshotTaken(_)
            | Output::VoteGranted { .. } => {}
        }
    }

    fn check_committed(&mut self, id: i32, off: i64, epoch: i32, v: &Bytes) {
        match self.committed.get(&off) {
            Some((e, x, _)) if (*e, x) != (epoch, v) => {
                let why = format!(
                    "node {id} committed offset {off} as epoch {epoch} {v:?}, but it was committed as epoch {e} {x:?}"
                );
                self.fail(why);
            }
            Some(_) => {}
            None => {
                let bound = self.leaders.keys().next_back().copied().unwrap_or(0);
                self.committed.insert(off, (epoch, v.clone(), bound));
            }
        }
    }

    fn apply(&mut self, id: i32, off: i64, epoch: i32, v: Bytes) {
        let i = self.idx(id);
        if self.nodes[i].app.next != off {
            let next = self.nodes[i].app.next;
            self.fail(format!("node {id} applied offset {off} after {next}: a gap or a repeat"));
            return;
        }
        self.check_committed(id, off, epoch, &v);
        let n = &mut self.nodes[i];
        n.app.entries.push((off, epoch, v));
        n.app.next = off + 1;
    }

    fn maybe_snapshot(&mut self, id: i32) {
        let i = self.idx(id);
        let n = &self.nodes[i];
        let Some(raft) = n.raft.as_ref() else { return };
        let start = raft.log().log_start_offset();
        if n.app.next - start < self.snapshot_every || n.app.next != raft.delivered_offset() {
            return;
        }
        let bytes = encode_app(&n.app.entries);
        let end_offset = n.app.next;
        self.step(id, Input::Snapshot { end_offset, bytes });
    }

    fn crash(&mut self, id: i32, down_ms: i64) {
        let i = self.idx(id);
        let now = self.now;
        let n = &mut self.nodes[i];
        let Some(raft) = n.raft.take() else { return };
        let mut log = raft.into_log();
        log.crash();
        n.disk = Some(log);
        n.tokens.clear();
        n.vote_tokens.clear();
        n.wake = i64::MAX;
        n.restart_at = Some(now + down_ms);
    }

    fn restart(&mut self, id: i32) {
        let i = self.idx(id);
        let seed = self.rng.random();
        let now = self.now;
        let n = &mut self.nodes[i];
        n.restart_at = None;
        n.incarnation += 1;
        n.app = App { next: 0, entries: Vec::new() };
        let log = n.disk.take().expect("a down node keeps its disk");
        let local = n.local(now);
        n.raft = Some(Raft::new(n.config.clone(), n.persisted, log, seed, local));
        self.step(id, Input::Tick);
    }

    fn deliver(&mut self, msg: Msg) {
        let i = self.idx(msg.to);
        if self.nodes[i].raft.is_none() {
            return;
        }
        match msg.body {
            Body::Request { request_id, request } => {
                let n = &mut self.nodes[i];
                let token = n.next_token;
                n.next_token += 1;
                if let Request::Vote(v) = &request {
                    if let Some(p) = v.topics.first().and_then(|t| t.partitions.first()).filter(|p| !p.pre_vote) {
                        n.vote_tokens.insert(token, (p.replica_id.0, p.replica_epoch));
                    }
                }
                n.tokens.insert(token, (msg.from, request_id, msg.incarnation));
                self.step(msg.to, Input::Request { token, request });
            }
            Body::Response { request_id, response } => {
                if self.nodes[i].incarnation == msg.incarnation {
                    self.step(msg.to, Input::Response { from: msg.from, request_id, response });
                }
            }
            Body::SendFailed { request_id } => {
                if self.nodes[i].incarnation == msg.incarnation {
                    self.step(msg.to, Input::SendFailed { to: msg.from, request_id });
                }
            }
        }
    }

    fn voters(&self) -> Vec<i32> {
        self.nodes[0].config.voters.iter().copied().collect()
    }

    fn leader(&self) -> Option<i32> {
        self.nodes
            .iter()
            .filter(|n| n.raft.as_ref().is_some_and(|r| r.is_leader()))
            .max_by_key(|n| n.raft.as_ref().map(|r| r.epoch()))
            .map(|n| n.id)
    }

    /// A leader that every voter is up and follows.
    fn stable_leader(&self) -> Option<i32> {
        let l = self.leader()?;
        let epoch = self.nodes[self.idx(l)].raft.as_ref()?.epoch();
        let all = self.voters().into_iter().all(|v| {
            self.nodes[self.idx(v)].raft.as_ref().is_some_and(|r| {
                r.epoch() == epoch && (v == l || (r.role() == RoleName::Follower && r.leader_id() == Some(l)))
            })
        });
        all.then_some(l)
    }

    fn propose(&mut self) {
        if let Some(marker) = self.marker.clone() {
            // After the heal: only the marker, again until it is committed
            // (a leadership change may have dropped an earlier copy).
            let committed = self.committed.values().rev().take(256).any(|(_, v, _)| *v == marker);
            if let (false, Some(l)) = (committed, self.leader()) {
                self.step(l, Input::Propose { records: vec![marker] });
            }
            return;
        }
        // Mostly to a node that believes it leads, stale leaders included:
        // what they append without a majority must never be committed.
        let leaders: Vec<i32> =
            self.nodes.iter().filter(|n| n.raft.as_ref().is_some_and(|r| r.is_leader())).map(|n| n.id).collect();
        let target = if !leaders.is_empty() && self.rng.random_bool(0.9) {
            leaders[self.rng.random_range(0..leaders.len())]
        } else {
            self.rng.random_range(0..self.nodes.len() as i32)
        };
        let count = 1 + self.rng.random_range(0..3);
        let records = (0..count)
            .map(|_| {
                self.proposals += 1;
                Bytes::from(format!("p{}", self.proposals))
            })
            .collect();
        self.step(target, Input::Propose { records });
    }

    fn heal(&mut self) {
        self.cut.clear();
        self.loss = 0.0;
        self.faults_on = false;
        for id in 0..self.nodes.len() as i32 {
            if self.nodes[self.idx(id)].raft.is_none() {
                self.restart(id);
            }
        }
    }

    fn isolate(&mut self, id: i32, from: &[i32]) {
        for &o in from {
            if o != id {
                self.cut.insert((id, o));
                self.cut.insert((o, id));
            }
        }
    }

    fn inject_fault(&mut self) {
        let all: Vec<i32> = (0..self.nodes.len() as i32).collect();
        let voters = self.voters();
        let pick = if self.churn {
            [0, 2, 2, 2, 3, 3, 6, 6, 9, 5][self.rng.random_range(0..10)]
        } else {
            self.rng.random_range(0..10)
        };
        match pick {
            0 | 1 => {
                let id = all[self.rng.random_range(0..all.len())];
                let down = 50 + self.rng.random_range(0..3000);
                self.crash(id, down);
            }
            2 => {
                if let Some(l) = self.leader() {
                    let down = 50 + self.rng.random_range(0..if self.churn { 800 } else { 3000 });
                    self.crash(l, down);
                }
            }
            3 => {
                // The leader cut off from the other voters: it must not
                // commit, and must step down.
                if let Some(l) = self.leader() {
                    self.isolate(l, &voters);
                }
            }
            4 => {
                let id = all[self.rng.random_range(0..all.len())];
                self.isolate(id, &all);
            }
            5 => {
                let mut side = BTreeSet::new();
                for &id in &all {
                    if self.rng.random_bool(0.5) {
                        side.insert(id);
                    }
                }
                for &a in &all {
                    for &b in &all {
                        if side.contains(&a) != side.contains(&b) {
                            self.cut.insert((a, b));
                        }
                    }
                }
            }
            6 | 7 => self.cut.clear(),
            8 => self.loss = [0.0, 0.02, 0.1, 0.3][self.rng.random_range(0..4)],
            _ => {
                let id = all[self.rng.random_range(0..all.len())];
                let jump = self.rng.random_range(-1000..5000);
                let i = self.idx(id);
                self.nodes[i].skew += jump;
                // The node notices its clock on its next tick.
                if self.nodes[i].raft.is_some() {
                    self.nodes[i].wake = self.now;
                }
            }
        }
    }

    /// Run until `until` (global ms) or a failure.
    fn run_until(
        &mut self,
        until: i64,
        next_fault: &mut i64,
        next_propose: &mut i64,
        stop: &mut dyn FnMut(&Sim) -> bool,
    ) {
        while self.failure.is_none() && !stop(self) {
            let msg_at = self.queue.keys().next().map_or(i64::MAX, |k| k.0);
            let (wake_at, waker) = self.nodes.iter().map(|n| (n.wake, n.id)).min().expect("nodes");
            let (restart_at, restarter) =
                self.nodes.iter().map(|n| (n.restart_at.unwrap_or(i64::MAX), n.id)).min().expect("nodes");
            let fault_at = if self.faults_on { *next_fault } else { i64::MAX };
            let (doom_at, doom_k) =
                self.doomed.iter().enumerate().map(|(k, d)| (d.0, k)).min().unwrap_or((i64::MAX, 0));
            let t = msg_at.min(wake_at).min(restart_at).min(fault_at).min(*next_propose).min(doom_at);
            if t > until {
                self.now = until;
                return;
            }
            if t <= self.now {
                self.spins += 1;
                if self.spins > 100_000 {
                    self.fail(format!("no progress: 100000 events at one instant (node {waker} wakes at {wake_at})"));
                    return;
                }
            } else {
                self.spins = 0;
            }
            self.now = self.now.max(t);
            if t == doom_at {
                let (_, id, inc) = self.doomed.swap_remove(doom_k);
                if self.faults_on && self.nodes[self.idx(id)].incarnation == inc {
                    let down = 50 + self.rng.random_range(0..800);
                    self.crash(id, down);
                }
            } else if t == msg_at {
                let (_, msg) = self.queue.pop_first().expect("a message");
                self.deliver(msg);
            } else if t == restart_at {
                self.restart(restarter);
            } else if t == wake_at {
                self.step(waker, Input::Tick);
            } else if t == fault_at {
                self.inject_fault();
                *next_fault = self.now
                    + if self.churn {
                        100 + self.rng.random_range(0..600)
                    } else {
                        100 + self.rng.random_range(0..1500)
                    };
            } else {
                self.propose();
                *next_propose = self.now + if self.marker.is_some() { 500 } else { 10 + self.rng.random_range(0..200) };
            }
        }
    }
}

/// Simulate one seed.
pub fn run(seed: u64, sim: &SimConfig) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let voters_drawn = [1usize, 3, 5, 5][rng.random_range(0..4)];
    let observers = rng.random_range(0..3usize);
    // Half the seeds run the leader-churn profile: faults every few hundred
    // ms, mostly crashing or isolating the leader, one batch per fetch.
    let churn = rng.random_bool(0.5);
    let voters = if churn { [3, 5][rng.random_range(0..2)] } else { voters_drawn };
    // (One byte: at least one batch is returned, so exactly one. Snapshots
    // would then download a byte per request; churn takes none.)
    let fetch_max_bytes = if churn { 1 } else { [200usize, 1000, 1 << 20][rng.random_range(0..3)] };
    let mid_output_crash = [0.02, 0.1, 0.3][rng.random_range(0..3)];
    let max_delay = [2i64, 20, 100][rng.random_range(0..3)];
    let snapshot_every = if churn { i64::MAX } else { [20i64, 100, i64::MAX][rng.random_range(0..3)] };
    let voter_ids: Vec<i32> = (0..voters as i32).collect();
    let mut nodes = Vec::new();
    for id in 0..(voters + observers) as i32 {
        let mut config = QuorumConfig::new(id, voter_ids.iter().copied());
        config.fetch_max_bytes = fetch_max_bytes;
        config.bugs = sim.bugs;
        let raft = Raft::new(config.clone(), None, MemoryLog::new(), rng.random(), 0);
        nodes.push(Node {
            id,
            config,
            raft: Some(raft),
            disk: None,
            persisted: None,
            incarnation: 0,
            skew: 0,
            tokens: BTreeMap::new(),
            vote_tokens: BTreeMap::new(),
            next_token: 0,
            app: App { next: 0, entries: Vec::new() },
            wake: 0,
            restart_at: None,
        });
    }
    let mut s = Sim {
        rng,
        now: 0,
        nodes,
        queue: BTreeMap::new(),
        seq: 0,
        loss: 0.0,
        max_delay,
        cut: BTreeSet::new(),
        faults_on: true,
        leaders: BTreeMap::new(),
        committed: BTreeMap::new(),
        failure: None,
        proposals: 0,
        snapshot_loads: 0,
        snapshot_every,
        spins: 0,
        marker: None,
        votes: BTreeMap::new(),
        mid_output_crash,
        churn,
        doomed: Vec::new(),
        trace: std::env::var("QUORUM_TRACE").is_ok_and(|v| v == seed.to_string()),
    };
    let mut next_fault = 200 + s.rng.random_range(0..1000);
    let mut next_propose = 0;
    s.run_until(sim.fault_ms, &mut next_fault, &mut next_propose, &mut |_| false);
    let mut outcome = Outcome::default();
    if s.failure.is_none() {
        s.heal();
        let healed = s.now;
        s.run_until(healed + ELECTION_BOUND_MS, &mut next_fault, &mut next_propose, &mut |s| {
            s.stable_leader().is_some()
        });
        match s.stable_leader() {
            None if s.failure.is_none() => {
                let state = s.describe();
                s.fail(format!("no leader followed by every voter {ELECTION_BOUND_MS} ms after the heal: {state}"))
            }
            None => {}
            Some(l) => {
                outcome.heal_to_leader_ms = Some(s.now - healed);
                // A marker record must reach every node.
                let marker = Bytes::from_static(b"marker");
                s.marker = Some(marker.clone());
                s.step(l, Input::Propose { records: vec![marker.clone()] });
                let start = s.now;
                let has_marker =
                    |s: &Sim| s.nodes.iter().all(|n| n.app.entries.iter().rev().take(64).any(|(_, _, v)| *v == marker));
                next_propose = s.now + 500;
                s.run_until(start + CONVERGENCE_BOUND_MS, &mut next_fault, &mut next_propose, &mut |s| has_marker(s));
                if s.failure.is_none() && !has_marker(&s) {
                    let state = s.describe();
                    s.fail(format!("the marker did not reach every node within {CONVERGENCE_BOUND_MS} ms: {state}"));
                }
            }
        }
    }
    outcome.failure = s.failure.take();
    outcome.committed = s.committed.len() as i64;
    outcome.leader_epochs = s.leaders.len();
    outcome.snapshot_loads = s.snapshot_loads;
    outcome
}

/// Run `seeds`, returning the first failing seed and its outcome, plus the
/// heal-to-leader times of the passing runs.
pub fn sweep(seeds: std::ops::Range<u64>, sim: &SimConfig) -> (Option<(u64, Outcome)>, Vec<Outcome>) {
    let mut passed = Vec::new();
    for seed in seeds {
        let o = run(seed, sim);
        if o.failure.is_some() {
            return (Some((seed, o)), passed);
        }
        passed.push(o);
    }
    (None, passed)
}
