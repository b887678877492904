//! The partition log: an ordered, durable sequence of Kafka record batches.
//!
//! Public surface used by the server and the simulator. Internals (segments,
//! indexes, recovery, the leader-epoch cache, producer-state snapshots) live
//! in submodules. Storage knows the log end offset and the durable (fsynced)
//! offset; the high watermark is the partition's business, above storage.

mod index;
pub mod leader_epoch;
mod log;
pub mod open_files;
pub mod producer_state;
mod recovery;
mod segment;
#[cfg(test)]
mod tests;

pub use leader_epoch::{EpochEntry, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
pub use log::PartitionLog;
pub use open_files::OpenFiles;

use bytes::Bytes;

use crate::record_batch::CorruptBatch;

/// Errors the storage engine reports. Each maps to one Kafka error code.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A batch failed validation (bad CRC, bad length, wrong magic).
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    /// A batch is larger than `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: usize },
    /// A read asked for an offset outside [log start, log end].
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    /// An idempotent producer's batch does not continue its sequence.
    #[error("out of order sequence number: {0}")]
    OutOfOrderSequence(String),
    /// An idempotent producer's epoch is older than one already in the log:
    /// a newer instance of the producer fenced it.
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    /// The disk failed (EIO, ENOSPC, ...). The log stays consistent: the
    /// failed append is not visible.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A leader append stamped with an epoch older than one already in the
    /// log: a newer leader has written since.
    #[error("fenced leader epoch: {0}")]
    FencedLeaderEpoch(String),
    /// Replicated batches that do not continue the log: their base offset is
    /// not the log end, their offsets are not contiguous, or their leader
    /// epochs go backwards (Kafka's `UnexpectedAppendOffsetException`).
    #[error("replicated batches do not continue the log: {0}")]
    UnexpectedAppendOffset(String),
}

impl From<CorruptBatch> for StorageError {
    fn from(e: CorruptBatch) -> Self {
        StorageError::CorruptMessage(e.0)
    }
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset given to the first record of the first batch.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// Broker time if the topic uses LogAppendTime, else -1.
    pub log_append_time: i64,
    /// Number of records appended.
    pub record_count: u64,
    /// The batches were a producer's retry of batches already in the log:
    /// nothing was appended and the offsets are the originals'.
    pub duplicate: bool,
}

/// The result of a read: whole batches, as stored.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    /// Concatenated record batches; may be empty.
    pub records: Bytes,
    /// Log end and durable offset at the time of the read.
    pub log_end_offset: i64,
    pub durable_offset: i64,
    pub log_start_offset: i64,
}

/// What recovery found and fixed when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments validated batch by batch: those from the recovery point on,
    /// and any whose index could not be trusted.
    pub segments_scanned: usize,
    /// Bytes cut from the tail because they were torn or corrupt.
    pub truncated_bytes: u64,
    /// Index files rebuilt because they were missing or damaged.
    pub indexes_rebuilt: usize,
    /// Log end offset after recovery.
    pub log_end_offset: i64,
    /// The producer-state snapshot the producer state was loaded from, if
    /// any was usable: its offset.
    pub producer_snapshot_offset: Option<i64>,
    /// Batch headers read to bring the producer state from the snapshot (or
    /// the log start) to the log end.
    pub producer_batches_replayed: u64,
    /// The leader-epoch checkpoint was missing or damaged and the cache was
    /// rebuilt from every batch header.
    pub leader_epochs_rebuilt: bool,
}
