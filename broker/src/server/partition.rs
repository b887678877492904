//! One partition as this broker hosts it: the log plus the leadership state
//! replication will grow (leader epoch now; followers and the ISR later).
//!
//! The log is a synchronous state machine behind a plain mutex that is never
//! held across an await; callers pay the simulated disk latency afterwards.

use std::sync::{Mutex, MutexGuard};

use kafka_protocol::error::ResponseError;

use crate::record_batch::ValidatedBatches;
use crate::storage::{AppendInfo, PartitionLog, ReadResult, StorageError};

/// Why an operation on a partition failed.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The topic was deleted while the request was in flight.
    #[error("partition was deleted")]
    Deleted,
}

impl PartitionError {
    /// The Kafka error code a client sees.
    pub fn code(&self) -> ResponseError {
        match self {
            PartitionError::Storage(StorageError::CorruptMessage(_)) => ResponseError::CorruptMessage,
            PartitionError::Storage(StorageError::MessageTooLarge { .. }) => ResponseError::MessageTooLarge,
            PartitionError::Storage(StorageError::OffsetOutOfRange { .. }) => ResponseError::OffsetOutOfRange,
            PartitionError::Storage(StorageError::OutOfOrderSequence(_)) => ResponseError::OutOfOrderSequenceNumber,
            PartitionError::Storage(StorageError::InvalidProducerEpoch(_)) => ResponseError::InvalidProducerEpoch,
            PartitionError::Storage(StorageError::Io(_)) => ResponseError::KafkaStorageError,
            PartitionError::Storage(StorageError::FencedLeaderEpoch(_)) => ResponseError::FencedLeaderEpoch,
            PartitionError::Storage(StorageError::UnexpectedAppendOffset(_)) => ResponseError::UnknownServerError,
            PartitionError::Deleted => ResponseError::UnknownTopicOrPartition,
        }
    }
}

/// Offsets a client is told about alongside any answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub log_end_offset: i64,
}

struct State {
    log: PartitionLog,
    deleted: bool,
}

/// A hosted partition.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// Leader epoch; 0 until leadership can change hands.
    pub leader_epoch: i32,
    state: Mutex<State>,
}

impl Partition {
    pub fn new(topic: String, index: i32, log: PartitionLog) -> Partition {
        Partition { topic, index, leader_epoch: 0, state: Mutex::new(State { log, deleted: false }) }
    }

    fn live(&self) -> Result<MutexGuard<'_, State>, PartitionError> {
        // A panic while holding the lock is a bug elsewhere; the log itself
        // keeps no half-applied state across calls, so keep serving.
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.deleted {
            return Err(PartitionError::Deleted);
        }
        Ok(state)
    }

    /// Append validated batches. Durable only once [`Self::offsets`] shows a
    /// high watermark past `last_offset`. A producer's retry of batches
    /// already in the log appends nothing and reports the original offsets.
    pub fn append(&self, batches: &ValidatedBatches, now_ms: i64) -> Result<AppendInfo, PartitionError> {
        let mut s = self.live()?;
        let before = s.log.log_end_offset();
        let info = s.log.append_as_leader(batches, now_ms, self.leader_epoch)?;
        debug_assert!(
            info.base_offset == before || (info.duplicate && info.last_offset < before),
            "offsets are assigned from the log end, or are an earlier batch's"
        );
        debug_assert!(info.last_offset >= info.base_offset);
        Ok(info)
    }

    /// Read from `offset`, never past the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, PartitionError> {
        let s = self.live()?;
        let hw = s.log.durable_offset();
        Ok(s.log.read(offset, max_bytes, hw)?)
    }

    pub fn offsets(&self) -> Result<Offsets, PartitionError> {
        let s = self.live()?;
        let o = Offsets {
            log_start_offset: s.log.log_start_offset(),
            high_watermark: s.log.durable_offset(),
            log_end_offset: s.log.log_end_offset(),
        };
        debug_assert!(o.log_start_offset <= o.high_watermark && o.high_watermark <= o.log_end_offset, "{o:?}");
        Ok(o)
    }

    /// First offset below the high watermark with a timestamp at or after `ts`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, PartitionError> {
        let s = self.live()?;
        let hw = s.log.durable_offset();
        Ok(s.log.offset_for_timestamp(ts)?.filter(|&(offset, _)| offset < hw))
    }

    /// Apply `flush.ms` and `segment.ms`. Returns whether the high watermark moved.
    pub fn tick(&self, now_ms: i64) -> Result<bool, PartitionError> {
        let mut s = self.live()?;
        let hw = s.log.durable_offset();
        s.log.maybe_flush(now_ms)?;
        s.log.maybe_roll(now_ms)?;
        Ok(s.log.durable_offset() != hw)
    }

    /// fsync everything appended and snapshot the producer state (clean shutdown).
    pub fn flush(&self) -> Result<(), PartitionError> {
        Ok(self.live()?.log.close()?)
    }

    /// Stop serving this partition; later calls fail with [`PartitionError::Deleted`].
    pub fn mark_deleted(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).deleted = true;
    }
}

/// Kafka's answer when a request names a leader epoch other than ours.
pub fn check_leader_epoch(partition: &Partition, requested: i32) -> Result<(), ResponseError> {
    use std::cmp::Ordering;
    if requested < 0 {
        return Ok(());
    }
    match requested.cmp(&partition.leader_epoch) {
        Ordering::Less => Err(ResponseError::FencedLeaderEpoch),
        Ordering::Greater => Err(ResponseError::UnknownLeaderEpoch),
        Ordering::Equal => Ok(()),
    }
}
