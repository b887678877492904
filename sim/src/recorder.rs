//! The recorder: the state every workload host and the runner share while a
//! simulation runs — the history being written, the session (process)
//! numbers, each host's operations in flight (one per slot: a producer
//! with several sends in flight uses a slot for each), and the phase flags.
//!
//! Operations are numbered in completion order. An operation still in flight
//! when its client host crashes is completed by the runner as `info`: it may
//! or may not have taken effect, exactly as Jepsen records it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

use crate::history::{History, Op, OpKind, Outcome, TopicPartition};
use crate::trace::{EventKind, Trace};

/// How a poll's error begins when the fetched data failed the client's CRC
/// check.
pub const CORRUPT_POLL: &str = "corrupt data: ";

/// An operation invoked and not yet completed.
#[derive(Debug, Clone)]
pub struct Pending {
    pub process: u64,
    pub invoke_ns: u64,
    pub kind: OpKind,
}

impl Pending {
    /// The operation completed by `node` at `now`; `kind` replaces the
    /// invoked kind when given. Its index is assigned when it is pushed.
    fn into_op(self, node: &str, now: Duration, kind: Option<OpKind>, outcome: Outcome, final_read: bool) -> Op {
        Op {
            index: 0,
            process: self.process,
            node: node.to_string(),
            invoke_ns: self.invoke_ns,
            complete_ns: now.as_nanos() as u64,
            kind: kind.unwrap_or(self.kind),
            outcome,
            final_read,
        }
    }
}

/// An offset the final read could never decode: its every fetch of the
/// batch there failed the client's CRC check for the whole retry budget,
/// after the run had healed. The corruption is in the stored log, not in
/// one read of it, and the data there is gone for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub partition: TopicPartition,
    pub offset: i64,
    /// Consecutive final-read fetches of `offset` that failed.
    pub attempts: u32,
    /// Simulated time of the first and the last of those fetches.
    #[serde(serialize_with = "ser_ms")]
    pub first_attempt: Duration,
    #[serde(serialize_with = "ser_ms")]
    pub last_attempt: Duration,
    /// When any poll (the final read's or an ordinary consumer's) first
    /// failed to decode this offset.
    #[serde(serialize_with = "ser_ms")]
    pub first_seen: Duration,
    /// The client's error on the last attempt.
    pub error: String,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// How the final read ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinalRead {
    /// Every partition was read up to the log end offset the healed broker
    /// reported (false if any was given up as unreadable).
    pub complete: bool,
    /// Offsets given up on as persistently corrupt.
    pub unreadable: Vec<Unreadable>,
}

#[derive(Debug, Default)]
struct State {
    history: History,
    next_process: u64,
    /// The current session of each client host.
    sessions: BTreeMap<String, u64>,
    pending: BTreeMap<(String, u32), Pending>,
    /// When the heal ended the faults, and when a write and a read (both
    /// started after it) first succeeded.
    healed_at: Option<Duration>,
    first_write_after_heal: Option<Duration>,
    first_read_after_heal: Option<Duration>,
    topics_ready: bool,
    final_read: Option<FinalRead>,
    /// Polls that failed because fetched data failed its CRC check.
    corrupt_polls: usize,
    /// Each producer session's count of its oldest unfinished batch refused
    /// as out of sequence (`Producer::sequence_refusals`).
    sequence_refusals: BTreeMap<u64, u64>,
    /// When a poll first failed to decode each (partition, offset).
    first_corrupt: BTreeMap<(TopicPartition, i64), Duration>,
    /// Protocol probes the broker answered wrongly (`crate::probes`).
    probe_failures: Vec<String>,
}

/// Shared handle to the recorder.
#[derive(Clone)]
pub struct Recorder {
    state: Arc<Mutex<State>>,
    trace: Trace,
}

impl Recorder {
    pub fn new(trace: Trace) -> Recorder {
        Recorder { state: Arc::new(Mutex::new(State::default())), trace }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("recorder lock")
    }

    /// Start a new client session on `node`; returns its process id.
    pub fn new_session(&self, node: &str) -> u64 {
        let mut s = self.lock();
        let p = s.next_process;
        s.next_process += 1;
        s.sessions.insert(node.to_string(), p);
        p
    }

    /// Note that `node` invoked `kind` at `now`.
    pub fn invoke(&self, node: &str, process: u64, now: Duration, kind: OpKind) {
        self.invoke_in(node, 0, process, now, kind)
    }

    /// Note that `node` invoked `kind` at `now` in its slot `slot`.
    pub fn invoke_in(&self, node: &str, slot: u32, process: u64, now: Duration, kind: OpKind) {
        let key = (node.to_string(), slot);
        let prev = self.lock().pending.insert(key, Pending { process, invoke_ns: now.as_nanos() as u64, kind });
        assert!(prev.is_none(), "{node} invoked an operation in slot {slot} while another was in flight");
    }

    /// Complete `node`'s operation in flight with `outcome`; `kind` replaces
    /// the invoked kind when the result adds to it (an offset, records).
    pub fn complete(&self, node: &str, now: Duration, kind: Option<OpKind>, outcome: Outcome, final_read: bool) {
        self.complete_in(node, 0, now, kind, outcome, final_read)
    }

    /// Complete the operation in `node`'s slot `slot`.
    pub fn complete_in(
        &self,
        node: &str,
        slot: u32,
        now: Duration,
        kind: Option<OpKind>,
        outcome: Outcome,
        final_read: bool,
    ) {
        let mut s = self.lock();
        let Some(p) = s.pending.remove(&(node.to_string(), slot)) else {
            panic!("{node} completed an operation it never invoked in slot {slot}");
        };
        if let Some(healed) = s.healed_at {
            let started_after = Duration::from_nanos(p.invoke_ns) >= healed;
            let kind_now = kind.as_ref().unwrap_or(&p.kind);
            // A poll refused only by the client's CRC check still got an
            // answer from the broker: rotted data is not a dead broker.
            let answered_poll = match &outcome {
                Outcome::Ok => true,
                Outcome::Fail { error } => error.starts_with(CORRUPT_POLL),
                Outcome::Info { .. } => false,
            };
            match kind_now {
                OpKind::Send { offset: Some(_), .. } if started_after && outcome == Outcome::Ok => {
                    s.first_write_after_heal.get_or_insert(now);
                }
                OpKind::Poll { .. } if started_after && answered_poll => {
                    s.first_read_after_heal.get_or_insert(now);
                }
                _ => {}
            }
        }
        let op = p.into_op(node, now, kind, outcome, final_read);
        self.push(&mut s, op);
    }

    /// The faults were healed at `now`: liveness is measured from here.
    pub fn set_healed(&self, now: Duration) {
        self.lock().healed_at = Some(now);
    }

    /// (heal time, first acknowledged write after it, first successful
    /// poll after it), each as far as known.
    pub fn liveness(&self) -> (Option<Duration>, Option<Duration>, Option<Duration>) {
        let s = self.lock();
        (s.healed_at, s.first_write_after_heal, s.first_read_after_heal)
    }

    /// Record an operation that ran from `invoke` to `now` while the node
    /// went on with others (the final read's `Assign` spans its polls).
    #[allow(clippy::too_many_arguments)]
    pub fn span(
        &self,
        node: &str,
        process: u64,
        invoke: Duration,
        now: Duration,
        kind: OpKind,
        outcome: Outcome,
        final_read: bool,
    ) {
        let op = Op {
            index: 0,
            process,
            node: node.to_string(),
            invoke_ns: invoke.as_nanos() as u64,
            complete_ns: now.as_nanos() as u64,
            kind,
            outcome,
            final_read,
        };
        let mut s = self.lock();
        self.push(&mut s, op);
    }

    /// Record an operation that completes the moment it is invoked.
    pub fn instant(&self, node: &str, process: u64, now: Duration, kind: OpKind, outcome: Outcome, final_read: bool) {
        self.invoke(node, process, now, kind);
        self.complete(node, now, None, outcome, final_read);
    }

    fn push(&self, s: &mut State, op: Op) {
        let at = op.complete_ns;
        let what = match &op.kind {
            OpKind::Send { value, partition, offset, .. } => format!("send {value} -> {partition:?}@{offset:?}"),
            OpKind::Poll { records } => format!("poll {} records", records.len()),
            OpKind::Assign { partitions } => format!("assign {} partitions", partitions.len()),
            OpKind::Commit { offsets, generation } => {
                format!("commit {} offsets in generation {generation:?}", offsets.len())
            }
            OpKind::EndOffsets { ends } => {
                let ends: Vec<String> = ends
                    .iter()
                    .map(|e| format!("{}-{}={}", e.partition.topic, e.partition.partition, e.offset))
                    .collect();
                format!("end offsets [{}]", ends.join(" "))
            }
            OpKind::Generation { member, generation, partitions } => {
                format!("generation {generation}: {member} owns {} partitions", partitions.len())
            }
            OpKind::Committed { offsets } => format!("committed offsets read back: {offsets:?}"),
            OpKind::Crash => "crash".to_string(),
            OpKind::CreateTopic { topic, partitions } => format!("create topic {topic} ({partitions} partitions)"),
            OpKind::Metadata { broker, topics, .. } => format!("metadata from {broker}: [{}]", topics.join(" ")),
        };
        let outcome = match &op.outcome {
            Outcome::Ok => "ok".to_string(),
            Outcome::Fail { error } => format!("fail: {error}"),
            Outcome::Info { error } => format!("info: {error}"),
        };
        self.trace.record(at, &op.node, EventKind::Op, format_args!("p{} {what} {outcome}", op.process));
        s.history.push(op);
    }

    /// The client host `node` crashed at `now`: its operation in flight
    /// becomes indeterminate and its session ends.
    pub fn client_crashed(&self, node: &str, now: Duration) {
        let mut s = self.lock();
        let Some(&process) = s.sessions.get(node) else { return };
        let slots: Vec<(String, u32)> = s.pending.keys().filter(|(n, _)| n == node).cloned().collect();
        for key in slots {
            let p = s.pending.remove(&key).expect("listed slot");
            let op = p.into_op(node, now, None, Outcome::Info { error: "client crashed".into() }, false);
            self.push(&mut s, op);
        }
        let t = now.as_nanos() as u64;
        let op = Op {
            index: 0,
            process,
            node: node.to_string(),
            invoke_ns: t,
            complete_ns: t,
            kind: OpKind::Crash,
            outcome: Outcome::Ok,
            final_read: false,
        };
        self.push(&mut s, op);
    }

    /// A poll failed at `now` because the data fetched from `partition` at
    /// `offset` did not pass the client's CRC check.
    pub fn note_corrupt_poll(&self, partition: TopicPartition, offset: i64, now: Duration) {
        let mut s = self.lock();
        s.corrupt_polls += 1;
        s.first_corrupt.entry((partition, offset)).or_insert(now);
    }

    /// Polls that failed their CRC check so far.
    pub fn corrupt_polls(&self) -> usize {
        self.lock().corrupt_polls
    }

    /// Producer session `process` has had `n` sequence refusals so far.
    pub fn note_sequence_refusals(&self, process: u64, n: u64) {
        self.lock().sequence_refusals.insert(process, n);
    }

    /// Sequence refusals over every producer session.
    pub fn sequence_refusals(&self) -> u64 {
        self.lock().sequence_refusals.values().sum()
    }

    /// When a poll first failed to decode `partition` at `offset`.
    pub fn first_corrupt(&self, partition: &TopicPartition, offset: i64) -> Option<Duration> {
        self.lock().first_corrupt.get(&(partition.clone(), offset)).copied()
    }

    /// The protocol probes' wrong answers.
    pub fn note_probe_failures(&self, wrong: Vec<String>) {
        self.lock().probe_failures.extend(wrong);
    }

    pub fn probe_failures(&self) -> Vec<String> {
        self.lock().probe_failures.clone()
    }

    pub fn set_topics_ready(&self) {
        self.lock().topics_ready = true;
    }

    pub fn topics_ready(&self) -> bool {
        self.lock().topics_ready
    }

    /// The final read finished.
    pub fn set_final_read_done(&self, outcome: FinalRead) {
        self.lock().final_read = Some(outcome);
    }

    /// How the final read ended, once it has.
    pub fn final_read_done(&self) -> Option<FinalRead> {
        self.lock().final_read.clone()
    }

    /// Operations recorded so far.
    pub fn ops(&self) -> usize {
        self.lock().history.ops.len()
    }

    /// Take the history, closing every operation still in flight as
    /// indeterminate at `now` (the simulation ends under them).
    pub fn finish(&self, now: Duration) -> History {
        let slots: Vec<(String, u32)> = self.lock().pending.keys().cloned().collect();
        for (n, slot) in slots {
            self.complete_in(&n, slot, now, None, Outcome::Info { error: "simulation ended".into() }, false);
        }
        std::mem::take(&mut self.lock().history)
    }
}
