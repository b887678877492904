//! The history of client operations a simulation records, one JSON object per
//! line, and the format every checker reads.
//!
//! Each operation carries its invoke and complete times in simulated
//! nanoseconds, its inputs, its outcome and what it returned. The model follows
//! Jepsen's Kafka workload: producers `send` unique values, consumers `poll`
//! and see (partition, offset, value) triples. A value is unique across the
//! whole run, so a value identifies the send that wrote it. Consumers also
//! ask for end offsets (`end_offsets`), which the linearizability checker
//! judges. Histories written before an operation kind existed still read:
//! kinds are only ever added.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// A topic-partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    /// The key of a commit's offsets: `topic-partition`.
    pub fn key(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// It happened, and the result is known.
    Ok,
    /// It definitely did not happen (e.g. the broker rejected it).
    Fail { error: String },
    /// Unknown: it may or may not have happened (timeout, connection lost).
    Info { error: String },
}

/// One record a poll returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Polled {
    pub partition: TopicPartition,
    pub offset: i64,
    pub value: String,
}

/// One partition's end offset, as ListOffsets reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndOffset {
    pub partition: TopicPartition,
    pub offset: i64,
}

/// What an operation was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum OpKind {
    /// Produce one record. On success `offset` is where it landed.
    Send {
        topic: String,
        key: Option<String>,
        value: String,
        #[serde(default)]
        partition: Option<i32>,
        #[serde(default)]
        offset: Option<i64>,
    },
    /// Fetch records; `records` is what came back, in the order returned.
    Poll {
        #[serde(default)]
        records: Vec<Polled>,
    },
    /// Manually assign partitions (and the offsets the consumer starts from).
    /// In the final read phase (`final_read = true`) the reader records one
    /// `Assign` of every partition, completed only when the phase ends: `ok`
    /// if it read every partition up to the log end offset the healed broker
    /// reported, `info` if it gave up first. Checkers rely on that promise.
    Assign { partitions: Vec<TopicPartition> },
    /// A group member commits offsets (`topic-partition` → the next offset
    /// to read) with its generation.
    Commit {
        offsets: BTreeMap<String, i64>,
        #[serde(default)]
        generation: Option<i32>,
    },
    /// A group member's assignment in one generation, as its rebalance ended.
    Generation { member: String, generation: i32, partitions: Vec<TopicPartition> },
    /// The group's committed offsets read back at the end (`topic-partition` → offset).
    Committed { offsets: BTreeMap<String, i64> },
    /// Ask for end offsets (ListOffsets with timestamp -1: each partition's
    /// high watermark). `ends` holds what came back; empty unless `ok`.
    /// Only the linearizability checker reads it: the ordering checkers
    /// have nothing to say about an end offset.
    EndOffsets {
        #[serde(default)]
        ends: Vec<EndOffset>,
    },
    /// The client process crashed; its session ends here.
    Crash,
    /// CreateTopics of one topic (sent to any broker, which forwards it to
    /// the active controller). `ok` means the cluster acknowledged it (or
    /// answered TOPIC_ALREADY_EXISTS: the topic is there either way).
    CreateTopic { topic: String, partitions: i32 },
    /// A Metadata request (all topics) to one broker after the heal:
    /// `topics` is what it listed without error.
    Metadata {
        broker: String,
        #[serde(default)]
        topics: Vec<String>,
        /// Each partition's in-sync replicas (`topic-partition` → node ids)
        /// as the broker listed them.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        isr: BTreeMap<String, Vec<i32>>,
    },
}

/// One completed operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history (order of completion).
    pub index: u64,
    /// Client session: a producer or consumer instance. A client that crashes
    /// and restarts gets a new process id, as in Jepsen.
    pub process: u64,
    /// Simulated host the client runs on.
    pub node: String,
    /// Simulated time the operation was invoked and completed, in ns.
    pub invoke_ns: u64,
    pub complete_ns: u64,
    #[serde(flatten)]
    pub kind: OpKind,
    pub outcome: Outcome,
    /// True for the operations of the final read-everything phase.
    #[serde(default)]
    pub final_read: bool,
}

/// A whole recorded history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Op>,
    /// What the servers reported through the seam about their metadata
    /// quorum, in the order they reported it (empty for a single broker).
    /// Not part of the JSON-lines form, which holds client operations only.
    #[serde(default, skip)]
    pub observations: Vec<Observed>,
    /// Every broker's copy of every data partition's log as it stood when
    /// the run ended (empty for a history read back from JSON lines, whose
    /// runs kept no disks): what the replica checker compares.
    #[serde(default, skip)]
    pub replicas: Vec<ReplicaLog>,
}

/// One broker's copy of one partition's log, batch by batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaLog {
    /// The broker's host and node id.
    pub host: String,
    pub node: i32,
    pub partition: TopicPartition,
    /// Its batches in offset order, up to the first one that did not parse
    /// or pass its CRC check (a torn tail recovery has not cut yet).
    pub batches: Vec<ReplicaBatch>,
    /// Why reading stopped before the end of the files, if it did.
    pub stopped: Option<String>,
}

impl ReplicaLog {
    /// The offset after its last readable batch (0 when empty).
    pub fn end_offset(&self) -> i64 {
        self.batches.last().map_or(0, |b| b.last_offset + 1)
    }
}

/// One stored record batch, as much of it as comparing copies needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The partition leader epoch stamped in the batch header.
    pub leader_epoch: i32,
    /// The batch's CRC-32C as stored (it covers attributes onwards).
    pub crc: u32,
    pub size: u32,
    /// FNV-1a of every byte of the batch, base offset and leader epoch
    /// included (both lie outside the CRC).
    pub digest: u64,
}

/// One [`faultline_broker::io::Observation`] as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Simulated time of the report, in ns.
    pub at_ns: u64,
    /// The host that reported it.
    pub host: String,
    /// Which start of the host's software reported it (1 for the first):
    /// a restart begins a new incarnation, which replays the metadata log.
    pub incarnation: u64,
    pub event: ObservedEvent,
}

/// What a server reported (see [`faultline_broker::io::Observation`]), plus
/// the start of each incarnation, which the checkers need to tell a replay
/// after a restart from a node going backwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ObservedEvent {
    /// The host's software (re)started.
    Started,
    /// The nemesis stopped the host's software (a crash of either kind).
    Stopped,
    QuorumLeader {
        node: i32,
        epoch: i32,
        leader: Option<i32>,
    },
    MetadataApplied {
        node: i32,
        offset: i64,
        digest: u64,
    },
    ControllerActivated {
        node: i32,
        epoch: i32,
        next_offset: i64,
    },
    VoteGranted {
        node: i32,
        epoch: i32,
        candidate: i32,
    },
    /// Broker `node` took the lead of a data partition at `leader_epoch`.
    PartitionLeader {
        node: i32,
        topic: String,
        partition: i32,
        leader_epoch: i32,
    },
}

impl From<&faultline_broker::io::Observation> for ObservedEvent {
    fn from(o: &faultline_broker::io::Observation) -> Self {
        use faultline_broker::io::Observation as O;
        match o.clone() {
            O::QuorumLeader { node, epoch, leader } => ObservedEvent::QuorumLeader { node, epoch, leader },
            O::MetadataApplied { node, offset, digest } => ObservedEvent::MetadataApplied { node, offset, digest },
            O::ControllerActivated { node, epoch, next_offset } => {
                ObservedEvent::ControllerActivated { node, epoch, next_offset }
            }
            O::VoteGranted { node, epoch, candidate } => ObservedEvent::VoteGranted { node, epoch, candidate },
            O::PartitionLeader { node, topic, partition, leader_epoch } => {
                ObservedEvent::PartitionLeader { node, topic, partition, leader_epoch }
            }
        }
    }
}

impl std::fmt::Display for ObservedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObservedEvent::Started => write!(f, "started"),
            ObservedEvent::Stopped => write!(f, "stopped"),
            ObservedEvent::QuorumLeader { node, epoch, leader: Some(l) } => {
                write!(f, "node {node}: quorum leader {l} in epoch {epoch}")
            }
            ObservedEvent::QuorumLeader { node, epoch, leader: None } => {
                write!(f, "node {node}: no quorum leader in epoch {epoch}")
            }
            ObservedEvent::MetadataApplied { node, offset, digest } => {
                write!(f, "node {node}: applied metadata offset {offset} digest {digest:016x}")
            }
            ObservedEvent::ControllerActivated { node, epoch, next_offset } => {
                write!(f, "node {node}: controller active in epoch {epoch} from offset {next_offset}")
            }
            ObservedEvent::VoteGranted { node, epoch, candidate } => {
                write!(f, "node {node}: voted for {candidate} in epoch {epoch}")
            }
            ObservedEvent::PartitionLeader { node, topic, partition, leader_epoch } => {
                write!(f, "node {node}: leads {topic}-{partition} at leader epoch {leader_epoch}")
            }
        }
    }
}

impl History {
    /// Append an operation, numbering it.
    pub fn push(&mut self, mut op: Op) {
        op.index = self.ops.len() as u64;
        self.ops.push(op);
    }

    /// Write as JSON lines.
    pub fn write_jsonl<W: Write>(&self, mut w: W) -> std::io::Result<()> {
        for op in &self.ops {
            serde_json::to_writer(&mut w, op)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Read JSON lines written by [`History::write_jsonl`].
    pub fn read_jsonl<R: BufRead>(r: R) -> anyhow::Result<History> {
        let mut h = History::default();
        for (i, line) in r.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let op: Op = serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("history line {}: {e}", i + 1))?;
            h.ops.push(op);
        }
        Ok(h)
    }
}
