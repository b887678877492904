//! The partition log proper: segments, rolling, flushing, reading, recovery,
//! and the state derived from batch headers (idempotent producers, leader
//! epochs).
//!
//! A partition is a directory of segments keyed by base offset. Appends go to
//! the last (active) segment in one write; the flush policy fsyncs and
//! advances the durable offset (the recovery point). The log reports its log
//! end offset and durable offset; which offsets consumers may see (the high
//! watermark) is decided above it, by the partition.
//!
//! Two append paths: a leader's ([`PartitionLog::append_as_leader`]) assigns
//! offsets, deduplicates idempotent producers' retries and stamps its leader
//! epoch into every batch; a follower's ([`PartitionLog::append_as_follower`])
//! stores replicated batches verbatim and refuses any that do not continue
//! the log. Both take [`ValidatedBatches`], whose CRCs were checked once on
//! the way in.
//!
//! An append that cannot be made durable when the flush policy asks is undone
//! from what the log holds in memory (the active segment's size, next offset
//! and index entries before it), never by reading the log back: a read that
//! comes back corrupted must not decide where the log ends.
//!
//! The log owns its partition's idempotent-producer state
//! ([`ProducerStateManager`], snapshotted at each roll) and leader-epoch
//! cache ([`LeaderEpochCache`]). Both are derived from batch headers: on open
//! and after a truncation they are loaded from their files and brought up to
//! the log end by replaying only the headers their files do not cover.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::leader_epoch::{EpochEntry, LeaderEpochCache};
use super::producer_state::{self, ProducerEntry, ProducerStateManager, Verdict};
use super::recovery::{self, write_checkpoint};
use super::segment::Segment;
use super::{AppendInfo, ReadResult, RecoveryReport, StorageError};
use crate::compression::DecompressError;
use crate::config::{LogConfig, PlantedBugs};
use crate::io::Fs;
use crate::record_batch::{self as batch, BatchHeader, ValidatedBatches};

/// One partition's log on one broker.
pub struct PartitionLog {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    config: LogConfig,
    log_append_time: bool,
    segments: BTreeMap<i64, Segment>,
    /// Everything below is fsynced.
    recovery_point: i64,
    unflushed_records: u64,
    first_unflushed_ms: Option<i64>,
    /// A segment was created since the directory was last fsynced.
    dir_dirty: bool,
    /// Writing the recovery-point checkpoint failed; try again at the next flush.
    checkpoint_due: bool,
    /// Idempotent producers with batches in this log.
    producers: ProducerStateManager,
    /// Leader epoch -> offset of its first batch.
    epochs: LeaderEpochCache,
}

/// Times a rebuild of derived state re-reads the log before settling for
/// what it could read.
const REBUILD_ATTEMPTS: u32 = 3;
/// Producer-state snapshots kept: the newest few, so that a truncation into
/// the last segments still finds one below its cut.
const SNAPSHOTS_KEPT: usize = 3;

/// Batches on their way into the active segment, offsets assigned.
struct Staged {
    buf: Vec<u8>,
    headers: Vec<(usize, BatchHeader)>,
    record_count: u64,
}

fn invalid_config(msg: String) -> StorageError {
    StorageError::Io(io::Error::new(io::ErrorKind::InvalidInput, msg))
}

fn check_config(config: &LogConfig) -> Result<bool, StorageError> {
    if config.effective_segment_bytes() < batch::HEADER_SIZE as u64 {
        return Err(invalid_config(format!(
            "segment.bytes {} is below one batch header",
            config.effective_segment_bytes()
        )));
    }
    if config.segment_ms <= 0 || config.flush_ms < 0 {
        return Err(invalid_config("segment.ms must be positive and flush.ms non-negative".into()));
    }
    if config.max_message_bytes < batch::HEADER_SIZE {
        return Err(invalid_config(format!(
            "max.message.bytes {} is below one batch header",
            config.max_message_bytes
        )));
    }
    match config.message_timestamp_type.as_str() {
        "CreateTime" => Ok(false),
        "LogAppendTime" => Ok(true),
        other => Err(invalid_config(format!("message.timestamp.type {other:?} is not CreateTime or LogAppendTime"))),
    }
}

impl PartitionLog {
    /// Open (or create) the log in `dir`, recovering from any unclean shutdown.
    /// There is no clean-shutdown marker, so every open validates from the
    /// recovery point on. Producers idle since before `now_ms` minus
    /// `producer.id.expiration.ms` are not loaded.
    pub fn open(
        fs: Arc<dyn Fs>,
        dir: PathBuf,
        config: LogConfig,
        bugs: PlantedBugs,
        now_ms: i64,
    ) -> Result<(PartitionLog, RecoveryReport), StorageError> {
        let log_append_time = check_config(&config)?;
        if !fs.is_dir(&dir) {
            fs.create_dir_all(&dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs.sync_dir(parent)?;
            }
        }
        let rec = recovery::recover(&*fs, &dir, config.index_interval_bytes, !bugs.skip_crc_on_recovery)?;
        let mut report = rec.report;
        let mut segments = rec.segments;
        let mut dir_dirty = false;
        if segments.is_empty() {
            segments.insert(0, Segment::create(&*fs, &dir, 0, config.index_interval_bytes)?);
            dir_dirty = true;
        }
        let mut log = PartitionLog {
            fs,
            dir,
            config,
            log_append_time,
            segments,
            recovery_point: 0,
            unflushed_records: 0,
            first_unflushed_ms: None,
            dir_dirty,
            checkpoint_due: false,
            producers: ProducerStateManager::new(),
            epochs: LeaderEpochCache::new(),
        };
        // Recovery fsynced what it kept, so it is all durable.
        let log_end = log.log_end_offset();
        log.recovery_point = log_end;
        if log.dir_dirty {
            log.fs.sync_dir(&log.dir)?;
            log.dir_dirty = false;
        }
        // Leader epochs from the segments recovery validated on are derived
        // again from their batches; earlier ones were checkpointed before the
        // recovery point passed them.
        let epochs_from = match LeaderEpochCache::load(&*log.fs, &log.dir) {
            Some(cache) => {
                log.epochs = cache;
                rec.scanned_from.unwrap_or(log_end)
            }
            None => {
                // Written below if the rebuild finds any epoch.
                report.leader_epochs_rebuilt = log_end > log.log_start_offset();
                log.log_start_offset()
            }
        };
        let (snapshot, replayed) = log.rebuild_derived_state(Some(epochs_from))?;
        report.producer_snapshot_offset = snapshot;
        report.producer_batches_replayed = replayed;
        let expired = log.expire_producers(now_ms);
        if expired > 0 {
            tracing::debug!(dir = %log.dir.display(), expired, "idle producers expired on open");
        }
        // Derived state first: the recovery point may only vouch for what
        // the epoch checkpoint covers.
        // Best effort, as at every flush: on a full disk the log still opens
        // (reads work; appends fail until space returns).
        if let Some(e) = log.write_checkpoints(true) {
            tracing::warn!(
                dir = %log.dir.display(),
                error = %e,
                "partition opened but its directory cannot be written (disk full?): reads are served, appends fail \
                 with KAFKA_STORAGE_ERROR until space returns"
            );
        }
        // PLANTED BUG `duplicate_offset_after_crash`: restart offset assignment
        // from the last index entry (or the stale recovery point) instead of
        // the recovered log end, so new batches reuse existing offsets.
        if bugs.duplicate_offset_after_crash && log_end > 0 {
            let active = log.segments.values_mut().next_back().expect("a log has an active segment");
            let restart = active.last_indexed_offset().or(rec.recovery_point).unwrap_or(log_end);
            let restart = restart.clamp(active.base_offset(), log_end);
            active.reuse_offsets_from(restart);
            log.recovery_point = restart;
        }
        Ok((log, report))
    }

    fn active(&mut self) -> &mut Segment {
        self.segments.values_mut().next_back().expect("a log always has an active segment")
    }

    /// Append a producer's batches as this partition's leader in
    /// `leader_epoch`: assign offsets from the log end, stamp the epoch into
    /// every batch, switch to LogAppendTime if the topic uses it, and answer
    /// an idempotent producer's retry with the original offsets instead of
    /// appending it again. Does not fsync unless the flush policy says so;
    /// see [`Self::flush`]. On any error nothing of `batches` is visible.
    pub fn append_as_leader(
        &mut self,
        batches: &ValidatedBatches,
        now_ms: i64,
        leader_epoch: i32,
    ) -> Result<AppendInfo, StorageError> {
        let base_offset = self.log_end_offset();
        if !self.epochs.accepts(leader_epoch, base_offset) {
            return Err(StorageError::FencedLeaderEpoch(format!(
                "leader epoch {leader_epoch} is older than epoch {:?} already in the log",
                self.epochs.latest_epoch()
            )));
        }
        let mut buf = batches.bytes().to_vec();
        let mut headers: Vec<(usize, BatchHeader)> = Vec::with_capacity(batches.batches().len());
        let mut next = base_offset;
        let mut record_count = 0u64;
        let mut touched: BTreeMap<i64, ProducerEntry> = BTreeMap::new();
        for &(pos, h) in batches.batches() {
            if h.size() > self.config.max_message_bytes {
                return Err(StorageError::MessageTooLarge { size: h.size(), max: self.config.max_message_bytes });
            }
            h.validate_for_append()?;
            if h.has_producer_id() && !h.is_control() && !producer_state::is_idempotent(&h) {
                return Err(StorageError::CorruptMessage(format!(
                    "batch from producer {} has epoch {} and base sequence {}; both must be non-negative",
                    h.producer_id, h.producer_epoch, h.base_sequence
                )));
            }
            // Judge the batch against the producer's state, including batches
            // earlier in this same request; nothing is installed until the
            // append has succeeded.
            let mut entry = None;
            if producer_state::is_idempotent(&h) {
                let current = touched.get(&h.producer_id).or_else(|| self.producers.get(h.producer_id));
                if let Some(e) = current {
                    if let Verdict::Duplicate(m) = e.check(&h)? {
                        // Kafka answers a retry with the original offsets and
                        // appends nothing of the request.
                        tracing::debug!(dir = %self.dir.display(), producer_id = h.producer_id, first_seq = m.first_seq, base_offset = m.first_offset, "duplicate batch not appended again");
                        return Ok(AppendInfo {
                            base_offset: m.first_offset,
                            last_offset: m.last_offset,
                            log_append_time: -1,
                            record_count: 0,
                            duplicate: true,
                        });
                    }
                    entry = Some(e.clone());
                }
            }
            // The base offset and the leader epoch lie outside the CRC; only
            // LogAppendTime makes the CRC be computed again.
            let stored = &mut buf[pos..pos + h.size()];
            batch::set_base_offset(stored, next);
            batch::set_partition_leader_epoch(stored, leader_epoch);
            let mut h = h;
            h.base_offset = next;
            h.partition_leader_epoch = leader_epoch;
            if self.log_append_time {
                batch::set_log_append_time(stored, now_ms);
                h = BatchHeader::parse(stored)?;
            }
            if producer_state::is_idempotent(&h) {
                let e = entry.unwrap_or_else(|| ProducerEntry { epoch: h.producer_epoch, batches: Default::default() });
                touched.entry(h.producer_id).or_insert(e).record(&h);
            }
            next = h.next_offset();
            record_count += h.record_count as u64;
            headers.push((pos, h));
        }
        self.append_staged(Staged { buf, headers, record_count }, now_ms)?;
        self.producers.install(touched);
        let log_append_time = if self.log_append_time { now_ms } else { -1 };
        Ok(AppendInfo { base_offset, last_offset: next - 1, log_append_time, record_count, duplicate: false })
    }

    /// Append batches replicated from the leader exactly as they are: no
    /// offsets assigned, no retries recognised, timestamps and epochs as the
    /// leader wrote them. They must start at the log end, be contiguous, and
    /// never go back to an older leader epoch; otherwise nothing is appended.
    /// The producer state and the epoch cache follow them.
    pub fn append_as_follower(&mut self, batches: &ValidatedBatches, now_ms: i64) -> Result<AppendInfo, StorageError> {
        let base_offset = self.log_end_offset();
        let mut next = base_offset;
        let mut latest_epoch = self.epochs.latest();
        let mut record_count = 0u64;
        for &(_, h) in batches.batches() {
            if h.base_offset != next {
                return Err(StorageError::UnexpectedAppendOffset(format!(
                    "batch at offset {} where the log continues at {next}",
                    h.base_offset
                )));
            }
            h.validate_for_append()?;
            let epoch = h.partition_leader_epoch;
            let backwards = epoch >= 0 && latest_epoch.is_some_and(|l| epoch < l.epoch);
            if backwards {
                return Err(StorageError::UnexpectedAppendOffset(format!(
                    "batch at offset {} has leader epoch {epoch}, older than epoch {:?} in the log",
                    h.base_offset, latest_epoch
                )));
            }
            if epoch >= 0 && latest_epoch.is_none_or(|l| l.epoch < epoch) {
                latest_epoch = Some(EpochEntry { epoch, start_offset: h.base_offset });
            }
            next = h.next_offset();
            record_count += h.record_count as u64;
        }
        let staged = Staged { buf: batches.bytes().to_vec(), headers: batches.batches().to_vec(), record_count };
        self.append_staged(staged, now_ms)?;
        for (_, h) in batches.batches() {
            self.producers.record(h);
        }
        Ok(AppendInfo { base_offset, last_offset: next - 1, log_append_time: -1, record_count, duplicate: false })
    }

    /// Write batches whose offsets are settled to the active segment, note
    /// their epochs, and apply the flush policy; on failure undo all of it.
    fn append_staged(&mut self, staged: Staged, now_ms: i64) -> Result<(), StorageError> {
        let Staged { buf, headers, record_count } = staged;
        let base_offset = self.log_end_offset();
        let next = headers.last().map_or(base_offset, |(_, h)| h.next_offset());
        self.maybe_roll_for(buf.len() as u64, next, now_ms)?;
        let mark = self.active().mark();
        self.active().append(&buf, &headers)?;
        for (_, h) in &headers {
            self.epochs.assign(h.partition_leader_epoch, h.base_offset);
        }
        self.check_appended(buf.len() as u64, headers.last().map(|(_, h)| h.partition_leader_epoch));
        let first_unflushed_ms = self.first_unflushed_ms;
        self.unflushed_records += record_count;
        self.first_unflushed_ms.get_or_insert(now_ms);
        if let Err(e) = self.maybe_flush(now_ms) {
            // Not durable and maybe never will be: take it back so a failed
            // append is not visible and its offsets go to the next one. A
            // failed flush never advances the recovery point, so nothing
            // acknowledged is above `base_offset`.
            invariant!(
                self.recovery_point <= base_offset,
                "durable offset {} is past a failed append at {base_offset}",
                self.recovery_point
            );
            self.unflushed_records -= record_count;
            self.first_unflushed_ms = first_unflushed_ms;
            self.epochs.truncate_from_end(base_offset);
            let active = self.active();
            // The active segment's own fsync may have gone through before a
            // later step failed (the directory fsync): then the batch is on
            // the medium and the cut must be too, or a crash would bring
            // back an append its producer was told had failed.
            let was_synced = active.is_synced();
            let undone = active.rollback(mark).and_then(|()| if was_synced { active.flush(false) } else { Ok(()) });
            if let Err(undo) = undone {
                // The in-memory state is back regardless; the segment cuts
                // the file before its next write or fsync.
                tracing::warn!(dir = %self.dir.display(), base_offset, error = %undo, "cutting back a failed append did not finish");
            }
            return Err(e);
        }
        invariant!(
            self.log_end_offset() == next && self.recovery_point <= next,
            "after an append ending at {next}: log end {}, durable {}",
            self.log_end_offset(),
            self.recovery_point
        );
        Ok(())
    }

    /// What must hold right after an append of `len` bytes whose last batch
    /// carries `last_epoch`: the active segment holds at most `segment.bytes`
    /// unless this append alone is bigger (a batch never spans segments), and
    /// the epoch cache ends with the epoch the log now ends with, so that
    /// OffsetForLeaderEpoch answers from what the batches say.
    fn check_appended(&mut self, len: u64, last_epoch: Option<i32>) {
        let segment_bytes = self.config.effective_segment_bytes().min(u32::MAX as u64);
        let size = self.active().size();
        invariant!(
            size <= segment_bytes.max(len),
            "active segment holds {size} bytes after a {len}-byte append; segment.bytes is {segment_bytes}"
        );
        if let Some(epoch) = last_epoch.filter(|&e| e >= 0) {
            invariant!(
                self.epochs.latest_epoch() == Some(epoch),
                "the log ends with a batch of leader epoch {epoch} but the epoch cache ends with {:?}",
                self.epochs.latest()
            );
        }
    }

    /// Roll before an append of `len` bytes ending at `next` if the active
    /// segment is full by size, offset range or age. A batch never spans segments.
    fn maybe_roll_for(&mut self, len: u64, next: i64, now_ms: i64) -> Result<(), StorageError> {
        let segment_bytes = self.config.effective_segment_bytes().min(u32::MAX as u64);
        let segment_ms = self.config.segment_ms;
        let active = self.active();
        if active.is_empty() {
            return Ok(());
        }
        let full = active.size() + len > segment_bytes;
        let offsets_overflow = next - active.base_offset() > i32::MAX as i64;
        let aged = active.first_batch_timestamp().is_some_and(|t| now_ms.saturating_sub(t) >= segment_ms);
        if full || offsets_overflow || aged {
            self.roll()?;
        }
        Ok(())
    }

    /// Start a new active segment at the log end, and snapshot the producer
    /// state there so that opening the log replays only what follows.
    fn roll(&mut self) -> Result<(), StorageError> {
        let base = self.log_end_offset();
        invariant!(!self.active().is_empty(), "rolling an empty segment at {base}");
        // The outgoing segment's indexes become part of the trusted log.
        self.active().flush(true)?;
        let seg = Segment::create(&*self.fs, &self.dir, base, self.config.index_interval_bytes)?;
        self.segments.insert(base, seg);
        self.dir_dirty = true;
        self.take_snapshot(base);
        tracing::debug!(dir = %self.dir.display(), base, "rolled a new segment");
        Ok(())
    }

    /// Write the producer-state snapshot at `offset` (the log end) and drop
    /// the oldest beyond [`SNAPSHOTS_KEPT`]. A snapshot only shortens a
    /// later replay, so failing to write one is logged, not returned.
    fn take_snapshot(&mut self, offset: i64) {
        invariant!(offset == self.log_end_offset(), "a snapshot at {offset} is not at the log end");
        let written = producer_state::write_snapshot(&*self.fs, &self.dir, offset, &self.producers).and_then(|()| {
            let all = producer_state::list_snapshots(&*self.fs, &self.dir)?;
            for &old in &all[..all.len().saturating_sub(SNAPSHOTS_KEPT)] {
                producer_state::delete_snapshot(&*self.fs, &self.dir, old)?;
            }
            Ok(())
        });
        if let Err(e) = written {
            tracing::warn!(dir = %self.dir.display(), offset, error = %e, "writing a producer-state snapshot failed");
        }
    }

    /// Read whole batches starting with the one containing `offset`, up to
    /// `max_bytes` (at least one batch is returned if any is available, as
    /// Kafka does), never past `max_offset` (exclusive; the caller's bound,
    /// such as the high watermark).
    pub fn read(&self, offset: i64, max_bytes: usize, max_offset: i64) -> Result<ReadResult, StorageError> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset < start || offset > end {
            return Err(StorageError::OffsetOutOfRange { offset, start, end });
        }
        let mut result = ReadResult {
            records: Bytes::new(),
            log_end_offset: end,
            durable_offset: self.durable_offset(),
            log_start_offset: start,
        };
        let max_offset = max_offset.min(end);
        if offset >= max_offset {
            return Ok(result);
        }
        let first = *self.segments.range(..=offset).next_back().expect("offset is within the log").0;
        // Whole batches, continuing into later segments while room is left.
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut at = offset;
        let mut room = max_bytes;
        for seg in self.segments.range(first..).map(|(_, s)| s) {
            let Some((bytes, next)) = seg.read(at, room, max_offset, pieces.is_empty())? else {
                continue;
            };
            room = room.saturating_sub(bytes.len());
            if !bytes.is_empty() {
                pieces.push(bytes);
            }
            if next < seg.next_offset() || next >= max_offset || room == 0 {
                break;
            }
            at = next;
        }
        result.records = match pieces.len() {
            0 => Bytes::new(),
            1 => pieces.pop().expect("one piece"),
            _ => Bytes::from(pieces.concat()),
        };
        Ok(result)
    }

    /// fsync everything appended so far; advances the durable offset.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        let log_end = self.log_end_offset();
        if self.recovery_point == log_end && !self.dir_dirty && !self.epochs.is_dirty() {
            return Ok(());
        }
        let from = self.segments.range(..=self.recovery_point).next_back().map_or(0, |(b, _)| *b);
        let active = self.active().base_offset();
        for seg in self.segments.range_mut(from..).map(|(_, s)| s) {
            seg.flush(seg.base_offset() != active)?;
        }
        let rolled = self.dir_dirty;
        if rolled {
            self.fs.sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        invariant!(self.recovery_point <= log_end, "durable offset {} past the log end {log_end}", self.recovery_point);
        self.recovery_point = log_end;
        self.unflushed_records = 0;
        self.first_unflushed_ms = None;
        let _ = self.write_checkpoints(rolled);
        Ok(())
    }

    /// Write the leader-epoch checkpoint if it changed, then (if `due`, or a
    /// write is owed) the recovery-point checkpoint.
    ///
    /// The recovery-point checkpoint only bounds recovery's scan; refreshing
    /// it once per roll keeps that scan to the last segment or two. The data
    /// is durable before it is written, so failing to write it fails
    /// nothing: the old checkpoint stays (the new one lands by an atomic
    /// rename or not at all) and is behind, never ahead. Retried at the next
    /// flush. The epoch checkpoint goes first: recovery trusts it below the
    /// recovery point. Returns the error of a failed write.
    fn write_checkpoints(&mut self, due: bool) -> Option<io::Error> {
        let epochs_written = match self.epochs.write_if_dirty(&*self.fs, &self.dir) {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "writing the leader-epoch checkpoint failed; will retry");
                self.checkpoint_due = true;
                Some(e)
            }
        };
        if epochs_written.is_none() && (due || self.checkpoint_due) {
            let log_end = self.log_end_offset();
            match write_checkpoint(&*self.fs, &self.dir, log_end) {
                Ok(()) => self.checkpoint_due = false,
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "writing the recovery-point checkpoint failed; will retry");
                    self.checkpoint_due = true;
                    return Some(e);
                }
            }
        }
        epochs_written
    }

    /// Flush and snapshot the producer state at the log end, as a clean
    /// shutdown does, so the next open replays nothing.
    pub fn close(&mut self) -> Result<(), StorageError> {
        self.flush()?;
        let end = self.log_end_offset();
        if end > self.log_start_offset() {
            self.take_snapshot(end);
        }
        Ok(())
    }

    /// Flush if `flush.messages` or `flush.ms` says it is time. Returns whether it flushed.
    pub fn maybe_flush(&mut self, now_ms: i64) -> Result<bool, StorageError> {
        let by_count = self.unflushed_records >= self.config.flush_messages.max(1);
        // Ages come from the wall clock, which can go back (an NTP step): a
        // clock now earlier than the first unflushed append flushes at once,
        // instead of holding acknowledgements until the clock catches up.
        let by_age =
            self.first_unflushed_ms.is_some_and(|t| now_ms < t || now_ms.saturating_sub(t) >= self.config.flush_ms);
        if self.unflushed_records == 0 || !(by_count || by_age) {
            return Ok(false);
        }
        self.flush()?;
        Ok(true)
    }

    /// Roll the active segment if `segment.ms` has passed.
    pub fn maybe_roll(&mut self, now_ms: i64) -> Result<(), StorageError> {
        let next = self.log_end_offset();
        self.maybe_roll_for(0, next, now_ms)
    }

    /// Remove everything at or after `offset`, as a follower does when its
    /// log diverged from the leader's. If `offset` falls inside a batch, the
    /// whole batch goes. The indexes, the leader-epoch cache (epochs starting
    /// at or after the cut are forgotten) and the producer state (reloaded
    /// from the newest snapshot below the cut) follow. Leaves the log fully
    /// flushed.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), StorageError> {
        let offset = offset.max(self.log_start_offset());
        if offset >= self.log_end_offset() {
            return self.flush();
        }
        // Lower the recovery point first: a crash half-way must not leave a
        // checkpoint vouching for segments about to change.
        if self.recovery_point > offset {
            write_checkpoint(&*self.fs, &self.dir, offset)?;
            self.recovery_point = offset;
        }
        // Snapshots sit on batch boundaries, so those past `offset` are
        // exactly those past the cut. They go before the batches they
        // describe, lest a crash leave one to be read against new batches.
        self.delete_snapshots_after(offset)?;
        let keep = *self.segments.range(..=offset).next_back().expect("offset is within the log").0;
        let doomed: Vec<i64> = self.segments.range(keep + 1..).map(|(b, _)| *b).collect();
        let mut removed = 0;
        for base in doomed {
            let seg = self.segments.remove(&base).expect("listed above");
            removed += seg.size();
            drop(seg);
            Segment::delete_files(&*self.fs, &self.dir, base)?;
            self.dir_dirty = true;
        }
        let seg = self.segments.get_mut(&keep).expect("kept segment");
        let cut = seg.truncate_to(offset);
        // The cut may fall below `offset` (inside a batch): the recovery
        // point must not vouch for offsets the next appends rewrite, even
        // if the fsync below fails.
        let log_end = self.log_end_offset();
        self.recovery_point = self.recovery_point.min(log_end);
        // The epoch file is rewritten by the flush below, before the
        // recovery point can pass the cut again.
        self.epochs.truncate_from_end(log_end);
        removed += cut?;
        self.segments.get_mut(&keep).expect("kept segment").flush(true)?;
        tracing::info!(dir = %self.dir.display(), offset, log_end, removed_bytes = removed, "log truncated");
        invariant!(log_end <= offset, "truncation to {offset} left the log ending at {log_end}");
        // Producers' last batches may have gone with the tail.
        self.rebuild_derived_state(None)?;
        self.flush()
    }

    /// Remove the segments wholly below `offset` (each one whose successor
    /// starts at or below it), oldest first, as Kafka's log start offset
    /// moves up past them. The active segment always stays, so the log start
    /// becomes the base of the segment holding `offset`, at or below it.
    /// Each removal is made durable before the next: a crash leaves a log
    /// that still ends where it did and starts at one of the bases passed,
    /// never one with a hole. The leader-epoch cache keeps the epochs of the
    /// removed batches, as the checkpoint does. Returns the new log start.
    pub fn delete_segments_below(&mut self, offset: i64) -> Result<i64, StorageError> {
        let keep = *self
            .segments
            .range(..=offset)
            .next_back()
            .map_or(self.segments.keys().next().expect("a log always has a segment"), |(b, _)| b);
        let doomed: Vec<i64> = self.segments.range(..keep).map(|(b, _)| *b).collect();
        for base in doomed {
            drop(self.segments.remove(&base).expect("listed above"));
            Segment::delete_files(&*self.fs, &self.dir, base)?;
            self.fs.sync_dir(&self.dir)?;
            tracing::debug!(dir = %self.dir.display(), base, "segment below the log start deleted");
        }
        // Producer-state snapshots below the start describe nothing held.
        let stale: Vec<i64> =
            producer_state::list_snapshots(&*self.fs, &self.dir)?.into_iter().filter(|&o| o < keep).collect();
        for &o in &stale {
            producer_state::delete_snapshot(&*self.fs, &self.dir, o)?;
        }
        if !stale.is_empty() {
            self.fs.sync_dir(&self.dir)?;
        }
        invariant!(
            self.log_start_offset() == keep,
            "log start {} after deleting below {keep}",
            self.log_start_offset()
        );
        Ok(keep)
    }

    /// Empty the log and start it again, empty, at `offset`, as a KRaft
    /// follower does when it installs its leader's snapshot beyond (or off)
    /// its own log. The leader-epoch cache and the producer state are
    /// emptied with it. Leaves the log flushed.
    ///
    /// Crash safety: the log is first truncated to its start and the empty
    /// epoch cache written, then the new empty segment is created and the old
    /// one removed, each step fsynced. A crash leaves either the old log (or
    /// a prefix of it) or the empty one at `offset`: recovery deletes an empty
    /// segment at `offset` that does not continue the one before it. On an
    /// error the log is left valid in one of those states.
    pub fn reset_to(&mut self, offset: i64) -> Result<(), StorageError> {
        if offset < 0 {
            return Err(invalid_config(format!("a log cannot start at offset {offset}")));
        }
        let old = self.log_start_offset();
        self.truncate_to(old)?;
        self.epochs = LeaderEpochCache::new();
        self.epochs.set_dirty(true);
        self.epochs.write_if_dirty(&*self.fs, &self.dir)?;
        if old != offset {
            let seg = Segment::create(&*self.fs, &self.dir, offset, self.config.index_interval_bytes)?;
            self.fs.sync_dir(&self.dir)?;
            self.segments.insert(offset, seg);
            drop(self.segments.remove(&old).expect("the truncated log's one segment"));
            self.recovery_point = offset;
            Segment::delete_files(&*self.fs, &self.dir, old)?;
            self.delete_snapshots_after(-1)?;
            self.fs.sync_dir(&self.dir)?;
            write_checkpoint(&*self.fs, &self.dir, offset)?;
        }
        self.producers = ProducerStateManager::new();
        invariant!(
            self.segments.len() == 1 && self.log_start_offset() == offset && self.log_end_offset() == offset,
            "a log reset to {offset} spans [{}, {}) in {} segments",
            self.log_start_offset(),
            self.log_end_offset(),
            self.segments.len()
        );
        tracing::info!(dir = %self.dir.display(), offset, "log reset to start at a new offset");
        Ok(())
    }

    /// The leader epoch of the batch holding `offset`, as the epoch cache
    /// knows it; `None` before the first epoch.
    pub fn epoch_at(&self, offset: i64) -> Option<i32> {
        self.epochs.epoch_for_offset(offset)
    }

    /// Remove producer-state snapshots above `offset`.
    fn delete_snapshots_after(&mut self, offset: i64) -> Result<(), StorageError> {
        let stale: Vec<i64> =
            producer_state::list_snapshots(&*self.fs, &self.dir)?.into_iter().filter(|&o| o > offset).collect();
        for &o in &stale {
            producer_state::delete_snapshot(&*self.fs, &self.dir, o)?;
        }
        if !stale.is_empty() {
            self.fs.sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Call `f` with the header of every batch from the one holding `from`
    /// to the log end, in offset order. Reads headers only.
    pub fn for_each_batch_header(&self, from: i64, mut f: impl FnMut(&BatchHeader)) -> Result<(), StorageError> {
        let from = from.max(self.log_start_offset());
        let first = *self.segments.range(..=from).next_back().map(|(b, _)| b).unwrap_or(&from);
        for seg in self.segments.range(first..).map(|(_, s)| s) {
            seg.for_each_header(from, &mut f)?;
        }
        Ok(())
    }

    /// The newest producer-state snapshot at or below the log end that reads
    /// back intact, with its offset. A damaged one is passed over for an
    /// older one (and left on disk: the damage may have been in the read).
    fn load_snapshot(&self) -> (ProducerStateManager, Option<i64>) {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        let offsets = producer_state::list_snapshots(&*self.fs, &self.dir).unwrap_or_default();
        for &offset in offsets.iter().rev().filter(|&&o| start <= o && o <= end) {
            match producer_state::read_snapshot(&*self.fs, &self.dir, offset) {
                Some(state) => return (state, Some(offset)),
                None => {
                    tracing::warn!(dir = %self.dir.display(), offset, "producer-state snapshot is damaged; trying an older one")
                }
            }
        }
        (ProducerStateManager::new(), None)
    }

    /// Bring the state derived from batch headers up to the log end: the
    /// producer state from the newest usable snapshot (or the log start),
    /// and, with `epochs_from`, the leader epochs of batches from that
    /// offset on. Only the headers after the earlier of the two are read.
    /// Returns the snapshot used and the headers replayed into the producer
    /// state.
    ///
    /// The producer state only serves to recognise retries, so if the log
    /// cannot be read back, keep what was read and carry on: producers past
    /// the bad spot are treated as unknown, which accepts their next batch.
    fn rebuild_derived_state(&mut self, epochs_from: Option<i64>) -> Result<(Option<i64>, u64), StorageError> {
        let log_end = self.log_end_offset();
        // Snapshots past the log end describe batches recovery cut.
        self.delete_snapshots_after(log_end)?;
        let (snapshot_state, snapshot) = self.load_snapshot();
        let replay_from = snapshot.unwrap_or(self.log_start_offset());
        let epochs_before = self.epochs.clone();
        if let Some(from) = epochs_from {
            self.epochs.truncate_from_end(from);
        }
        let epochs_base = self.epochs.clone();
        let walk_from = epochs_from.map_or(replay_from, |e| e.min(replay_from));
        let mut replayed = 0;
        for attempt in 1..=REBUILD_ATTEMPTS {
            let mut state = snapshot_state.clone();
            let mut epochs = epochs_base.clone();
            replayed = 0;
            let walked = self.for_each_batch_header(walk_from, |h| {
                if h.base_offset >= replay_from {
                    state.record(h);
                    replayed += 1;
                }
                let newer = epochs.latest_epoch().is_none_or(|l| h.partition_leader_epoch > l);
                if epochs_from.is_some_and(|from| h.base_offset >= from) && newer {
                    epochs.assign(h.partition_leader_epoch, h.base_offset);
                }
            });
            self.producers = state;
            if epochs_from.is_some() {
                self.epochs = epochs;
            }
            match walked {
                Ok(()) => break,
                Err(e) if attempt < REBUILD_ATTEMPTS => {
                    tracing::warn!(dir = %self.dir.display(), attempt, error = %e, "reading batch headers for derived state failed");
                }
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), producers = self.producers.len(), error = %e, "producer state and leader epochs rebuilt from part of the log");
                }
            }
        }
        // Re-deriving what the file already said is no change to write.
        let dirty = epochs_before.is_dirty() || epochs_before.entries() != self.epochs.entries();
        self.epochs.set_dirty(dirty);
        Ok((snapshot, replayed))
    }

    /// Forget idempotent producers idle for `producer.id.expiration.ms`
    /// (their last batch's max timestamp that much older than `now_ms`).
    /// Returns how many were forgotten.
    pub fn expire_producers(&mut self, now_ms: i64) -> usize {
        self.producers.expire(now_ms, self.config.producer_id_expiration_ms)
    }

    /// Kafka's OffsetForLeaderEpoch answer: the largest epoch <= `epoch` in
    /// this log and the offset where it ended (see
    /// [`LeaderEpochCache::end_offset_for`]).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// The newest leader epoch in the log, if any batch was stamped.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// Every leader epoch in the log with its start offset, oldest first.
    pub fn leader_epochs(&self) -> &[EpochEntry] {
        self.epochs.entries()
    }

    /// The idempotent producers this log knows.
    pub fn producer_state(&self) -> &ProducerStateManager {
        &self.producers
    }

    /// The topic config this log runs with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn log_start_offset(&self) -> i64 {
        *self.segments.keys().next().expect("a log always has a segment")
    }

    pub fn log_end_offset(&self) -> i64 {
        self.segments.values().next_back().expect("a log always has a segment").next_offset()
    }

    /// Offset below which data is durable (fsynced): the recovery point.
    /// Never past the log end.
    pub fn durable_offset(&self) -> i64 {
        self.recovery_point
    }

    /// First offset whose record timestamp is >= `ts`, with that timestamp.
    /// Looks at the whole log; the caller bounds the answer.
    ///
    /// Batch headers choose the batch (the first whose max timestamp reaches
    /// `ts`); its records are looked at only when the header cannot answer,
    /// and then streamed within `max_decompressed_batch_bytes`. A stored
    /// batch that decompresses past the limit is answered from its header,
    /// with its base offset: an offset no later than the true one, so a
    /// consumer seeking there misses nothing.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        for seg in self.segments.values() {
            let Some(bytes) = seg.batch_at_timestamp(ts)? else { continue };
            let h = BatchHeader::parse(&bytes)?;
            // Every record of a LogAppendTime batch carries its max timestamp;
            // a one-record batch's only record carries it; and Kafka
            // producers give a batch's first record the base timestamp.
            if h.is_log_append_time() || h.record_count <= 1 || h.base_timestamp >= ts {
                let at = if h.is_log_append_time() || h.record_count <= 1 { h.max_timestamp } else { h.base_timestamp };
                return Ok(Some((h.base_offset, at)));
            }
            let mut hit = None;
            let walked = batch::walk_records(&bytes, &h, self.config.decompressed_batch_limit(), &mut |r| {
                let at = h.base_timestamp.saturating_add(r.timestamp_delta);
                if at >= ts {
                    hit = Some((h.base_offset + r.offset_delta as i64, at));
                }
                hit.is_none()
            });
            match walked {
                Ok(()) => {}
                Err(e @ DecompressError::TooLarge { .. }) => {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        offset = h.base_offset,
                        error = %e,
                        "timestamp lookup answered from the batch header"
                    );
                    return Ok(Some((h.base_offset, h.max_timestamp)));
                }
                Err(e) => {
                    return Err(StorageError::CorruptMessage(format!("batch at offset {}: {e}", h.base_offset)));
                }
            }
            return Ok(Some(hit.unwrap_or((h.last_offset(), h.max_timestamp))));
        }
        Ok(None)
    }

    /// Bytes on disk across all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }

    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }
}
