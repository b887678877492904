//! One partition as this node hosts it: the log plus the replica state Kafka
//! keeps beside it — role, leader epoch and high watermark.
//!
//! The high watermark is a partition concept, not a storage one: it is the
//! offset below which a record is acknowledged by every replica the
//! durability policy counts, and the bound on what consumers may read. With
//! one replica and acknowledgement-on-fsync (today's policy) it follows the
//! durable offset; with followers it will be the smallest log end offset of
//! the ISR. Storage only reports the log end and the durable offset.
//!
//! The log is a synchronous state machine behind a plain mutex that is never
//! held across an await. Every method that touches the disk takes a
//! [`DiskScope`], so it can only be called where the latency is paid.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use crate::io::DiskScope;
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
    /// This replica is not the leader; the client must ask Metadata again.
    #[error("this broker is not the leader of the partition")]
    NotLeader,
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
            PartitionError::NotLeader => ResponseError::NotLeaderOrFollower,
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

/// What this replica does for the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes produce requests, assigns offsets, stamps its epoch.
    Leader,
    /// Copies the leader's log verbatim (replication, not built yet).
    Follower { leader_id: i32 },
}

struct State {
    log: PartitionLog,
    role: Role,
    leader_epoch: i32,
    high_watermark: i64,
    deleted: bool,
}

impl State {
    /// Recompute the high watermark after the log moved. One replica, acks on
    /// fsync: everything durable is acknowledged. Returns whether it advanced.
    fn update_high_watermark(&mut self) -> bool {
        let candidate = self.log.durable_offset();
        let leo = self.log.log_end_offset();
        invariant!(candidate <= leo, "durable offset {candidate} past the log end {leo}");
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            true
        } else {
            false
        }
    }

    fn check_invariants(&self) {
        let (start, leo) = (self.log.log_start_offset(), self.log.log_end_offset());
        invariant!(
            start <= self.high_watermark && self.high_watermark <= leo,
            "high watermark {} outside [log start {start}, log end {leo}]",
            self.high_watermark
        );
        invariant!(self.log.durable_offset() <= leo, "durable offset past the log end");
        invariant!(self.leader_epoch >= 0, "negative leader epoch {}", self.leader_epoch);
    }
}

/// A hosted partition.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// Bumped whenever the high watermark moves, so a waiter can tell whether
    /// it missed a change between reading the partition and starting to wait.
    hw_version: AtomicU64,
    state: Mutex<State>,
    /// The planted stale-end-offsets bug's snapshot: (taken at, high
    /// watermark then). Unused unless that bug is switched on.
    stale_high_watermark: Mutex<Option<(Duration, i64)>>,
}

impl Partition {
    /// A partition this node leads, opened from a recovered log. What
    /// recovery kept was fsynced, so all of it is below the high watermark.
    /// Its leader epoch is the latest in the log's leader-epoch cache, so
    /// batches appended after a restart carry the epoch they did before.
    pub fn new(topic: String, index: i32, log: PartitionLog) -> Partition {
        let high_watermark = log.durable_offset();
        let leader_epoch = log.latest_epoch().unwrap_or(0);
        let state = State { log, role: Role::Leader, leader_epoch, high_watermark, deleted: false };
        state.check_invariants();
        Partition {
            topic,
            index,
            hw_version: AtomicU64::new(0),
            state: Mutex::new(state),
            stale_high_watermark: Mutex::new(None),
        }
    }

    fn live(&self) -> Result<MutexGuard<'_, State>, PartitionError> {
        // A panic while holding the lock already failed the run (assertions
        // are on everywhere); in real mode the log keeps no half-applied
        // state across calls, so keep serving.
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.deleted {
            return Err(PartitionError::Deleted);
        }
        Ok(state)
    }

    fn moved(&self, advanced: bool) -> bool {
        if advanced {
            self.hw_version.fetch_add(1, Ordering::Release);
        }
        advanced
    }

    /// See [`Partition::hw_version`]'s field doc.
    pub fn hw_version(&self) -> u64 {
        self.hw_version.load(Ordering::Acquire)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).leader_epoch
    }

    pub fn role(&self) -> Role {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).role
    }

    /// Append a producer's validated batches as the leader. Acknowledged
    /// only once [`Self::offsets`] shows a high watermark past `last_offset`.
    /// A producer's retry of batches already in the log appends nothing and
    /// reports the original offsets. Returns the append and whether the
    /// high watermark advanced.
    pub fn append(
        &self,
        _disk: &DiskScope,
        batches: &ValidatedBatches,
        now_ms: i64,
    ) -> Result<(AppendInfo, bool), PartitionError> {
        let mut s = self.live()?;
        if s.role != Role::Leader {
            return Err(PartitionError::NotLeader);
        }
        let before = s.log.log_end_offset();
        let epoch = s.leader_epoch;
        let info = s.log.append_as_leader(batches, now_ms, epoch)?;
        invariant!(
            info.base_offset == before || (info.duplicate && info.last_offset < before),
            "offsets are assigned densely from the log end ({before}), or are an earlier batch's: {info:?}"
        );
        invariant!(info.last_offset >= info.base_offset, "an append of no records: {info:?}");
        invariant!(
            info.duplicate || s.log.log_end_offset() == info.last_offset + 1,
            "log end {} does not follow the appended last offset {}",
            s.log.log_end_offset(),
            info.last_offset
        );
        let advanced = s.update_high_watermark();
        s.check_invariants();
        Ok((info, self.moved(advanced)))
    }

    /// Append batches copied verbatim from the leader (replica fetch): their
    /// offsets and epochs are the leader's, checked to continue this log.
    /// The high watermark does not move here: a follower learns it from the
    /// leader ([`Self::follow_high_watermark`]).
    pub fn append_replicated(
        &self,
        _disk: &DiskScope,
        batches: &ValidatedBatches,
        now_ms: i64,
    ) -> Result<AppendInfo, PartitionError> {
        let mut s = self.live()?;
        if !matches!(s.role, Role::Follower { .. }) {
            return Err(PartitionError::NotLeader);
        }
        let info = s.log.append_as_follower(batches, now_ms)?;
        s.check_invariants();
        Ok(info)
    }

    /// A follower takes the leader's high watermark, bounded by what it holds.
    /// Returns whether it advanced.
    pub fn follow_high_watermark(&self, leader_hw: i64) -> Result<bool, PartitionError> {
        let mut s = self.live()?;
        invariant!(matches!(s.role, Role::Follower { .. }), "only a follower takes the leader's high watermark");
        let candidate = leader_hw.min(s.log.log_end_offset());
        let advanced = candidate > s.high_watermark;
        if advanced {
            s.high_watermark = candidate;
        }
        s.check_invariants();
        Ok(self.moved(advanced))
    }

    /// Take a new role in a new (or the same) leader epoch, as the controller
    /// decides. Epochs never go back: a stale decision is refused.
    pub fn change_role(&self, role: Role, leader_epoch: i32) -> Result<(), ResponseError> {
        self.set_role(role, leader_epoch, false)
    }

    /// Take the role the metadata image gives this partition. The image is
    /// the authority, so within one leader epoch its word replaces the role
    /// a freshly opened log assumed; only an older epoch is refused.
    pub fn assume_role(&self, role: Role, leader_epoch: i32) -> Result<(), ResponseError> {
        self.set_role(role, leader_epoch, true)
    }

    fn set_role(&self, role: Role, leader_epoch: i32, same_epoch_may_change: bool) -> Result<(), ResponseError> {
        let mut s = self.live().map_err(|e| e.code())?;
        let stale = leader_epoch == s.leader_epoch && role != s.role && !same_epoch_may_change;
        if leader_epoch < s.leader_epoch || stale {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        s.role = role;
        s.leader_epoch = leader_epoch;
        s.check_invariants();
        self.moved(true);
        Ok(())
    }

    /// Cut the log back to `offset` (a follower whose suffix diverged from
    /// the leader's, found by OffsetForLeaderEpoch). Never below the high
    /// watermark: what is there is acknowledged.
    pub fn truncate_to(&self, _disk: &DiskScope, offset: i64) -> Result<(), PartitionError> {
        let mut s = self.live()?;
        invariant!(offset >= s.high_watermark, "truncating to {offset}, below the high watermark {}", s.high_watermark);
        s.log.truncate_to(offset)?;
        s.check_invariants();
        Ok(())
    }

    /// The end offset of `epoch` in this log, as OffsetForLeaderEpoch answers:
    /// (the largest epoch ≤ `epoch` this log knows, where it ends).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Result<(i32, i64), PartitionError> {
        Ok(self.live()?.log.end_offset_for_epoch(epoch))
    }

    /// Read from `offset`, never at or past the high watermark.
    pub fn read(&self, _disk: &DiskScope, offset: i64, max_bytes: usize) -> Result<ReadResult, PartitionError> {
        let s = self.live()?;
        Ok(s.log.read(offset, max_bytes, s.high_watermark)?)
    }

    pub fn offsets(&self) -> Result<Offsets, PartitionError> {
        let s = self.live()?;
        Ok(Offsets {
            log_start_offset: s.log.log_start_offset(),
            high_watermark: s.high_watermark,
            log_end_offset: s.log.log_end_offset(),
        })
    }

    /// The planted stale-end-offsets bug: the high watermark as of a
    /// snapshot refreshed only once it is older than `max_age`.
    pub fn stale_high_watermark(&self, now: Duration, max_age: Duration) -> Result<i64, PartitionError> {
        let hw = self.offsets()?.high_watermark;
        let mut snap = self.stale_high_watermark.lock().unwrap_or_else(|p| p.into_inner());
        match *snap {
            Some((taken, stale)) if now.saturating_sub(taken) < max_age => Ok(stale),
            _ => {
                *snap = Some((now, hw));
                Ok(hw)
            }
        }
    }

    /// First offset below the high watermark with a timestamp at or after `ts`.
    pub fn offset_for_timestamp(&self, _disk: &DiskScope, ts: i64) -> Result<Option<(i64, i64)>, PartitionError> {
        let s = self.live()?;
        let hw = s.high_watermark;
        Ok(s.log.offset_for_timestamp(ts)?.filter(|&(offset, _)| offset < hw))
    }

    /// Apply `flush.ms`, `segment.ms` and `producer.id.expiration.ms`.
    /// Returns whether the high watermark moved.
    pub fn tick(&self, _disk: &DiskScope, now_ms: i64) -> Result<bool, PartitionError> {
        let mut s = self.live()?;
        s.log.maybe_flush(now_ms)?;
        s.log.maybe_roll(now_ms)?;
        let expired = s.log.expire_producers(now_ms);
        if expired > 0 {
            tracing::debug!(topic = %self.topic, partition = self.index, expired, "idle producer ids expired");
        }
        let advanced = s.update_high_watermark();
        s.check_invariants();
        Ok(self.moved(advanced))
    }

    /// fsync everything appended and snapshot producer state (clean shutdown).
    pub fn flush(&self, _disk: &DiskScope) -> Result<bool, PartitionError> {
        let mut s = self.live()?;
        s.log.close()?;
        let advanced = s.update_high_watermark();
        s.check_invariants();
        Ok(self.moved(advanced))
    }

    /// Stop serving this partition; later calls fail with [`PartitionError::Deleted`].
    pub fn mark_deleted(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).deleted = true;
        // Waiters re-read and find the partition gone.
        self.moved(true);
    }
}

/// Kafka's answer to a client's request for a partition: only its leader
/// serves clients, and a request naming a leader epoch other than ours is
/// refused.
pub fn check_leader_epoch(partition: &Partition, requested: i32) -> Result<(), ResponseError> {
    use std::cmp::Ordering;
    if partition.role() != Role::Leader {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    if requested < 0 {
        return Ok(());
    }
    match requested.cmp(&partition.leader_epoch()) {
        Ordering::Less => Err(ResponseError::FencedLeaderEpoch),
        Ordering::Greater => Err(ResponseError::UnknownLeaderEpoch),
        Ordering::Equal => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::client::batch::{encode, Compression, OutRecord};
    use crate::config::{LogConfig, PlantedBugs};
    use crate::io::real::RealFs;

    fn open(dir: &std::path::Path) -> Partition {
        crate::io::Fs::create_dir_all(&RealFs, &dir.join("t-0")).unwrap();
        let (log, _) =
            PartitionLog::open(Arc::new(RealFs), dir.join("t-0"), LogConfig::default(), PlantedBugs::default(), 0)
                .unwrap();
        Partition::new("t".into(), 0, log)
    }

    fn batch(values: &[&str]) -> ValidatedBatches {
        let records: Vec<OutRecord> = values
            .iter()
            .map(|v| OutRecord { key: None, value: Some(Bytes::from(v.to_string())), headers: vec![], timestamp: 1 })
            .collect();
        ValidatedBatches::new(encode(&records, Compression::None).unwrap()).unwrap()
    }

    #[test]
    fn a_leader_stamps_its_epoch_and_a_follower_copies_verbatim() {
        let disk = DiskScope::unmetered();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = open(a.path());
        leader.change_role(Role::Leader, 3).unwrap();
        let (info, advanced) = leader.append(&disk, &batch(&["a", "b"]), 10).unwrap();
        assert_eq!((info.base_offset, info.last_offset, advanced), (0, 1, true));
        assert_eq!(leader.end_offset_for_epoch(3).unwrap(), (3, 2));
        let read = leader.read(&disk, 0, 1 << 20).unwrap();
        // The leader's epoch is in the stored batch, at bytes 12..16.
        assert_eq!(i32::from_be_bytes(read.records[12..16].try_into().unwrap()), 3);

        let follower = open(b.path());
        follower.change_role(Role::Follower { leader_id: 1 }, 3).unwrap();
        assert!(matches!(follower.append(&disk, &batch(&["x"]), 10), Err(PartitionError::NotLeader)));
        let copied = ValidatedBatches::new(read.records.clone()).unwrap();
        let info = follower.append_replicated(&disk, &copied, 10).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (0, 1));
        assert_eq!(follower.offsets().unwrap().high_watermark, 0, "a follower's high watermark is the leader's");
        assert!(follower.follow_high_watermark(5).unwrap());
        assert_eq!(follower.offsets().unwrap().high_watermark, 2, "bounded by what the follower holds");
        // A replayed batch does not continue the log: refused.
        assert!(follower.append_replicated(&disk, &copied, 10).is_err());
        // Epochs never go back.
        assert_eq!(follower.change_role(Role::Leader, 2), Err(ResponseError::FencedLeaderEpoch));
    }

    #[test]
    fn truncation_stops_at_the_high_watermark() {
        let disk = DiskScope::unmetered();
        let dir = tempfile::tempdir().unwrap();
        let p = open(dir.path());
        p.append(&disk, &batch(&["a"]), 1).unwrap();
        p.append(&disk, &batch(&["b"]), 1).unwrap();
        p.truncate_to(&disk, 2).unwrap();
        let cut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.truncate_to(&disk, 1)));
        assert!(cut.is_err(), "truncating acknowledged data must trip the invariant");
    }
}
