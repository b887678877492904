//! The metadata quorum: a KRaft-style Raft core (KIP-595, pre-vote from
//! KIP-996, snapshots from KIP-630) that replicates the cluster metadata log
//! among the controllers (voters) and to the brokers (observers).
//!
//! - [`raft`]: the sans-IO state machine, `handle(now, Input) -> Vec<Output>`,
//!   speaking Kafka's Vote, BeginQuorumEpoch, EndQuorumEpoch, Fetch,
//!   FetchSnapshot and DescribeQuorum through `kafka-protocol`'s structs.
//! - [`log`]: the log it replicates ([`RaftLog`], [`MemoryLog`]) and the v2
//!   record batches in it.
//! - [`disk_log`]: [`DiskLog`], the durable [`RaftLog`]: a partition log
//!   plus snapshot files, in one directory through the I/O seam.
//! - [`state`]: the persisted epoch, vote and leader, and its file format.
//! - [`config`]: `controller.quorum.*` settings and the planted bugs.
//!
//! Driving it: construct [`Raft::new`] with the persisted state (from
//! [`QuorumStateFile::load`]), the log (a [`DiskLog`] opened with
//! [`DiskLog::open`]) and a seed for the election timers;
//! feed it every request, response, send failure and proposal, plus a
//! [`Input::Tick`] at [`Raft::next_deadline`]; perform its outputs in order,
//! making each [`Output::PersistQuorumState`] durable before the next output.
//! The deterministic harness in `harness.rs` (tests only) is a complete
//! driver over a simulated network.

pub mod config;
pub mod disk_log;
pub mod log;
pub mod raft;
pub mod state;

#[cfg(test)]
mod harness;
#[cfg(test)]
mod tests;

pub use config::{QuorumBugs, QuorumConfig};
pub use disk_log::DiskLog;
pub use log::{LogBatch, LogError, MemoryLog, RaftLog, SnapshotId};
pub use raft::{
    describe_quorum_request, Input, Output, Proposal, ProposeError, Raft, Request, Response, RoleName, METADATA_TOPIC,
    METADATA_TOPIC_ID,
};
pub use state::{QuorumState, QuorumStateFile};
