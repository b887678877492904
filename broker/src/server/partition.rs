//! One partition as this node hosts it: the log plus the replica state Kafka
//! keeps beside it — role, leader epoch and high watermark.
//!
//! The high watermark is a partition concept, not a storage one: it is the
//! offset below which a record is acknowledged by every replica the
//! durability policy counts, and the bound on what consumers may read. As
//! leader it is the smallest acknowledged offset over the ISR (the leader's
//! own: its durable offset under the strict policy, its log end under
//! Kafka's); as follower it is the leader's, as the leader's fetch answers
//! tell it. Storage only reports the log end and the durable offset; the
//! leader's view of its followers is [`crate::replication::LeaderView`].
//!
//! The log is a synchronous state machine behind a plain mutex that is never
//! held across an await. Every method that touches the disk takes a
//! [`DiskScope`], so it can only be called where the latency is paid.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use crate::config::PlantedBugs;
use crate::io::DiskScope;
use crate::record_batch::ValidatedBatches;
use crate::replication::{Assignment, DurabilityPolicy, LeaderView, PendingIsr};
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
    /// Copies the leader's log verbatim; -1: no leader known (offline, or
    /// not yet told by the metadata image).
    Follower { leader_id: i32 },
}

/// What a follower asks its leader for (Kafka's replica Fetch fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerPosition {
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub fetch_offset: i64,
    /// Epoch of the last batch in the log; -1 for an empty log (or under
    /// the planted pre-KIP-101 bug, which does not check divergence).
    pub last_fetched_epoch: i32,
    pub log_start_offset: i64,
}

/// A leader's answer to one follower's fetch of this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRead {
    pub records: bytes::Bytes,
    pub offsets: Offsets,
    /// The follower's log diverged: (epoch, end offset) as the leader has
    /// them; the follower truncates before fetching again.
    pub diverging: Option<(i32, i64)>,
    /// The high watermark moved (requests parked on it may complete).
    pub advanced: bool,
    /// An ISR change to ask the controller for.
    pub isr_change: Option<PendingIsr>,
}

struct State {
    log: PartitionLog,
    role: Role,
    leader_epoch: i32,
    high_watermark: i64,
    deleted: bool,
    /// Set while leading in a cluster; `None` for a single broker's sole replica.
    leader_view: Option<LeaderView>,
    bugs: PlantedBugs,
}

impl State {
    fn policy(&self) -> DurabilityPolicy {
        self.log.config().durability_policy
    }

    /// What this replica itself acknowledges: its durable offset under the
    /// strict policy, its log end under Kafka's.
    fn own_ack_offset(&self) -> i64 {
        match self.policy() {
            DurabilityPolicy::Strict => self.log.durable_offset(),
            DurabilityPolicy::Kafka => self.log.log_end_offset(),
        }
    }

    /// Recompute the high watermark after the log or a follower moved: the
    /// offset every ISR member acknowledges (the leader alone for a sole
    /// replica). A follower's comes from its leader. Never moves back.
    /// Returns whether it advanced.
    fn update_high_watermark(&mut self) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        let own = self.own_ack_offset();
        let candidate = match &self.leader_view {
            None => Some(own),
            Some(v) => v.acknowledged_offset(own, self.bugs.replica_high_watermark_outside_isr),
        };
        let leo = self.log.log_end_offset();
        let Some(candidate) = candidate.map(|c| c.min(leo)) else { return false };
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
    pub fn new(topic: String, index: i32, log: PartitionLog, bugs: PlantedBugs) -> Partition {
        let high_watermark = log.durable_offset();
        let leader_epoch = log.latest_epoch().unwrap_or(0);
        let state =
            State { log, role: Role::Leader, leader_epoch, high_watermark, deleted: false, leader_view: None, bugs };
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
    /// only once [`Self::offsets`] shows a high watermark past `last_offset`
    /// (acks=all) or [`Self::own_ack_offset`] does (acks=1). A producer's
    /// retry of batches already in the log appends nothing and reports the
    /// original offsets. Returns the append and whether anything a waiter
    /// watches moved (the log end, for followers' long polls, or the high
    /// watermark).
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
        if s.policy() == DurabilityPolicy::Strict && s.leader_view.is_some() {
            // The strict policy acknowledges only what every ISR member has
            // fsynced, the leader included, whatever flush.messages says.
            s.log.flush()?;
        }
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
        // Followers long-poll on the log end; with none, only the high
        // watermark wakes anyone.
        let has_followers = s.leader_view.as_ref().is_some_and(|v| v.assignment().replicas.len() > 1);
        let grew = has_followers && s.log.log_end_offset() > before;
        Ok((info, self.moved(advanced || grew)))
    }

    /// The offset below which this replica itself acknowledges (acks=1).
    pub fn own_ack_offset(&self) -> Result<i64, PartitionError> {
        Ok(self.live()?.own_ack_offset())
    }

    /// (ISR size, `min.insync.replicas`) as acks=all checks them; a sole
    /// replica is an ISR of one.
    pub fn insync(&self) -> Result<(usize, usize), PartitionError> {
        let s = self.live()?;
        // Only the leader counts its ISR; anyone else sends the client to
        // refresh its metadata (NOT_LEADER_OR_FOLLOWER), never to retry here.
        if s.role != Role::Leader {
            return Err(PartitionError::NotLeader);
        }
        let isr = s.leader_view.as_ref().map_or(1, |v| v.isr_len());
        Ok((isr, s.log.config().min_insync_replicas.max(1) as usize))
    }

    /// Whether a planted bug answers acks=all at the leader's own append.
    pub fn bug_ack_before_isr(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).bugs.replica_ack_before_isr
    }

    /// Append batches copied verbatim from the leader (replica fetch): their
    /// offsets and epochs are the leader's, checked to continue this log.
    /// Under the strict policy they are fsynced before this returns, so the
    /// next fetch offset the leader sees is durable here. The high watermark
    /// does not move here: a follower learns it from the leader
    /// ([`Self::follow_high_watermark`]).
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
        if s.policy() == DurabilityPolicy::Strict {
            s.log.flush()?;
        }
        s.check_invariants();
        Ok(info)
    }

    /// The controller refused the ISR change `change` without applying it.
    pub fn isr_change_refused(&self, change: &PendingIsr) {
        let Ok(mut s) = self.live() else { return };
        if let Some(v) = s.leader_view.as_mut() {
            v.refused(change);
        }
    }

    /// A follower takes the leader's high watermark, bounded by what it holds.
    /// Returns whether it advanced.
    pub fn follow_high_watermark(&self, leader_hw: i64) -> Result<bool, PartitionError> {
        let mut s = self.live()?;
        if !matches!(s.role, Role::Follower { .. }) {
            return Ok(false);
        }
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
        if role != Role::Leader {
            s.leader_view = None;
        }
        s.role = role;
        s.leader_epoch = leader_epoch;
        s.check_invariants();
        self.moved(true);
        Ok(())
    }

    /// A node starting in a cluster: follow nobody until the metadata image
    /// says who leads, and forget the high watermark, which only the leader
    /// can vouch for (a restarted replica may hold an unacknowledged suffix
    /// of an old epoch; Kafka keeps a checkpoint, this replica starts low and
    /// learns it again).
    pub fn restart_as_follower(&self) {
        let Ok(mut s) = self.live() else { return };
        s.role = Role::Follower { leader_id: -1 };
        s.leader_view = None;
        s.high_watermark = s.log.log_start_offset();
        s.check_invariants();
        self.moved(true);
    }

    /// Take the role, leader epoch, replicas and ISR the metadata image gives
    /// this partition, as broker `me` at monotonic time `now_ms`. A new
    /// leadership starts its view of the followers afresh; the same one takes
    /// the new replicas and ISR. Returns whether the role or epoch changed.
    pub fn apply_registration(
        &self,
        me: i32,
        role: Role,
        leader_epoch: i32,
        assignment: Assignment,
        now_ms: i64,
    ) -> Result<bool, ResponseError> {
        let changed = {
            let s = self.live().map_err(|e| e.code())?;
            s.role != role || s.leader_epoch != leader_epoch
        };
        if changed {
            self.assume_role(role, leader_epoch)?;
        }
        let mut s = self.live().map_err(|e| e.code())?;
        if role == Role::Leader {
            match &mut s.leader_view {
                Some(v) if !changed => v.update_assignment(assignment, now_ms),
                _ => {
                    let start = s.log.log_end_offset();
                    s.leader_view = Some(LeaderView::new(me, assignment, start, now_ms));
                }
            }
            let advanced = s.update_high_watermark();
            self.moved(advanced);
        } else if changed && s.bugs.replica_truncate_to_high_watermark {
            // The planted pre-KIP-101 behaviour: cut back to what this
            // replica believes committed, then fetch from there.
            let hw = s.high_watermark;
            s.log.truncate_to(hw).map_err(|e| PartitionError::from(e).code())?;
        }
        s.check_invariants();
        Ok(changed)
    }

    /// Where a follower fetches from, if it follows a known leader.
    pub fn follower_position(&self) -> Option<FollowerPosition> {
        let s = self.live().ok()?;
        let Role::Follower { leader_id } = s.role else { return None };
        if leader_id < 0 {
            return None;
        }
        let last_fetched_epoch =
            if s.bugs.replica_truncate_to_high_watermark { -1 } else { s.log.latest_epoch().unwrap_or(-1) };
        Some(FollowerPosition {
            leader_id,
            leader_epoch: s.leader_epoch,
            fetch_offset: s.log.log_end_offset(),
            last_fetched_epoch,
            log_start_offset: s.log.log_start_offset(),
        })
    }

    /// Serve follower `replica` at `fetch_offset` (its log end) as leader:
    /// records up to the log end (not the high watermark), or where their
    /// logs diverge if its last batch's epoch `last_fetched_epoch` ends
    /// earlier here (KIP-320). The fetch tells the leader how far the
    /// follower has come, which may move the high watermark and the ISR.
    pub fn read_for_follower(
        &self,
        _disk: &DiskScope,
        replica: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
        max_bytes: usize,
        now_ms: i64,
        lag_max_ms: i64,
    ) -> Result<ReplicaRead, ResponseError> {
        let mut s = self.live().map_err(|e| e.code())?;
        if s.role != Role::Leader {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        if !s.leader_view.as_ref().is_some_and(|v| v.is_replica(replica)) {
            // Not a replica of this partition (or a single broker): refused
            // like a fetch from a stranger.
            return Err(ResponseError::NotLeaderOrFollower);
        }
        let leo = s.log.log_end_offset();
        let start = s.log.log_start_offset();
        tracing::trace!(topic = %self.topic, partition = self.index, replica, fetch_offset, last_fetched_epoch, leo,
            hw = s.high_watermark, epoch = s.leader_epoch, "replica fetch");
        if last_fetched_epoch >= 0 {
            let (epoch, end) = end_offset_for_epoch(&s, last_fetched_epoch);
            if epoch < last_fetched_epoch || end < fetch_offset {
                let offsets =
                    Offsets { log_start_offset: start, high_watermark: s.high_watermark, log_end_offset: leo };
                return Ok(ReplicaRead {
                    records: bytes::Bytes::new(),
                    offsets,
                    diverging: Some((epoch, end)),
                    advanced: false,
                    isr_change: None,
                });
            }
        }
        if fetch_offset < start || fetch_offset > leo {
            return Err(ResponseError::OffsetOutOfRange);
        }
        // Only a fetch that continues this log says how far the follower is.
        let view = s.leader_view.as_mut().expect("checked above");
        view.on_fetch(replica, fetch_offset, leo, now_ms);
        let advanced = s.update_high_watermark();
        let hw = s.high_watermark;
        let isr_change = s.leader_view.as_mut().and_then(|v| v.isr_change_due(hw, now_ms, lag_max_ms));
        let records = if fetch_offset < leo {
            s.log.read(fetch_offset, max_bytes, leo).map_err(|e| PartitionError::from(e).code())?.records
        } else {
            bytes::Bytes::new()
        };
        s.check_invariants();
        let offsets = Offsets { log_start_offset: start, high_watermark: s.high_watermark, log_end_offset: leo };
        Ok(ReplicaRead { records, offsets, diverging: None, advanced: self.moved(advanced), isr_change })
    }

    /// A follower whose log diverged from its leader's: the leader says its
    /// `epoch` ends at `end`; cut this log where the two can first differ
    /// (Kafka's truncation on a diverging epoch, KIP-320). Below the high
    /// watermark only where that can be legitimate: Kafka's durability policy
    /// (power loss may have taken acknowledged data from the new leader too).
    /// Returns the offset cut to.
    pub fn truncate_diverging(&self, disk: &DiskScope, epoch: i32, end: i64) -> Result<i64, PartitionError> {
        let to = {
            let s = self.live()?;
            let (local_epoch, local_end) = s.log.end_offset_for_epoch(epoch);
            let leo = s.log.log_end_offset();
            let to = if local_epoch < 0 { end.min(leo) } else { local_end.min(end).min(leo) };
            if to < s.high_watermark {
                let legitimate = s.policy() == DurabilityPolicy::Kafka;
                invariant!(
                    legitimate,
                    "{}-{}: truncating to {to}, below the high watermark {}, under the strict policy",
                    self.topic,
                    self.index,
                    s.high_watermark
                );
                tracing::warn!(topic = %self.topic, partition = self.index, to, hw = s.high_watermark,
                    "truncating below the high watermark: acknowledged records were lost");
            }
            to.max(0)
        };
        {
            let mut s = self.live()?;
            if to < s.high_watermark {
                s.high_watermark = to.max(s.log.log_start_offset());
            }
        }
        self.truncate_to(disk, to)?;
        Ok(to)
    }

    /// Cut the log back to `offset` (a follower whose suffix diverged from
    /// the leader's). Never below the high watermark: what is there is
    /// acknowledged.
    pub fn truncate_to(&self, _disk: &DiskScope, offset: i64) -> Result<(), PartitionError> {
        let mut s = self.live()?;
        invariant!(offset >= s.high_watermark, "truncating to {offset}, below the high watermark {}", s.high_watermark);
        s.log.truncate_to(offset)?;
        s.check_invariants();
        Ok(())
    }

    /// The end offset of `epoch` in this log, as OffsetForLeaderEpoch answers:
    /// (the largest epoch ≤ `epoch` this log knows, where it ends), counting
    /// a leader's own epoch from its start even before its first batch.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Result<(i32, i64), PartitionError> {
        let s = self.live()?;
        Ok(if s.role == Role::Leader { end_offset_for_epoch(&s, epoch) } else { s.log.end_offset_for_epoch(epoch) })
    }

    /// KIP-207: a new leader's high watermark may trail the old one's until
    /// its followers fetch again; until it reaches the start of this
    /// leader's epoch, end offsets are not answered (OFFSET_NOT_AVAILABLE,
    /// retriable), so no client sees the end go backwards.
    pub fn high_watermark_settled(&self) -> Result<(), ResponseError> {
        let s = self.live().map_err(|e| e.code())?;
        match &s.leader_view {
            Some(v) if s.high_watermark < v.epoch_start_offset() => Err(ResponseError::OffsetNotAvailable),
            _ => Ok(()),
        }
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

    /// Apply `flush.ms`, `segment.ms` and `producer.id.expiration.ms`, and
    /// as leader check the ISR for followers that stopped catching up
    /// (`lag_max_ms` of monotonic time `mono_ms`). Returns whether anything a
    /// waiter watches moved, and an ISR change to ask the controller for.
    pub fn tick(
        &self,
        _disk: &DiskScope,
        now_ms: i64,
        mono_ms: i64,
        lag_max_ms: i64,
    ) -> Result<(bool, Option<PendingIsr>), PartitionError> {
        let mut s = self.live()?;
        let flushed = s.log.maybe_flush(now_ms)?;
        s.log.maybe_roll(now_ms)?;
        let expired = s.log.expire_producers(now_ms);
        if expired > 0 {
            tracing::debug!(topic = %self.topic, partition = self.index, expired, "idle producer ids expired");
        }
        let advanced = s.update_high_watermark();
        let hw = s.high_watermark;
        let isr_change = if s.role == Role::Leader {
            s.leader_view.as_mut().and_then(|v| v.isr_change_due(hw, mono_ms, lag_max_ms))
        } else {
            None
        };
        s.check_invariants();
        Ok((self.moved(advanced || flushed), isr_change))
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

/// Where `epoch` ends in a leader's log, counting the leader's current epoch
/// as begun at its epoch start offset even before it has written a batch
/// (Kafka assigns it in the epoch cache at election).
fn end_offset_for_epoch(s: &State, epoch: i32) -> (i32, i64) {
    let latest = s.log.latest_epoch().unwrap_or(-1);
    let leo = s.log.log_end_offset();
    if epoch >= s.leader_epoch {
        return (s.leader_epoch, leo);
    }
    if epoch > latest && s.leader_epoch > latest {
        let start = s.leader_view.as_ref().map_or(leo, |v| v.epoch_start_offset());
        return if latest >= 0 { (latest, start) } else { (epoch, start) };
    }
    s.log.end_offset_for_epoch(epoch)
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
    use crate::config::LogConfig;
    use crate::io::real::RealFs;

    fn open(dir: &std::path::Path) -> Partition {
        crate::io::Fs::create_dir_all(&RealFs, &dir.join("t-0")).unwrap();
        let (log, _) =
            PartitionLog::open(Arc::new(RealFs), dir.join("t-0"), LogConfig::default(), PlantedBugs::default(), 0)
                .unwrap();
        Partition::new("t".into(), 0, log, PlantedBugs::default())
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
