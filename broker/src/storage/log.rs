//! The partition log proper: segments, rolling, flushing, reading, recovery.
//!
//! A partition is a directory of segments keyed by base offset. Appends go to
//! the last (active) segment in one write; the flush policy fsyncs and
//! advances the recovery point, which is also the high watermark: with a
//! single replica only fsynced data is exposed, so a crash never takes back
//! what a consumer saw.
//!
//! An append that cannot be made durable when the flush policy asks is undone
//! from what the log holds in memory (the active segment's size, next offset
//! and index entries before it), never by reading the log back: a read that
//! comes back corrupted must not decide where the log ends.
//!
//! The log also owns its partition's idempotent-producer state
//! ([`ProducerStateManager`]): derived from the batch headers, rebuilt on
//! open and after a truncation, and consulted by every append.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use super::batch::{self, BatchHeader, Batches};
use super::producer_state::{self, ProducerEntry, ProducerStateManager, Verdict};
use super::recovery::{self, write_checkpoint};
use super::segment::Segment;
use super::{AppendInfo, ReadResult, RecoveryReport, StorageError};
use crate::config::{LogConfig, PlantedBugs};
use crate::io::Fs;

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
}

/// Times a producer-state rebuild re-reads the log before settling for what
/// it could read.
const REBUILD_ATTEMPTS: u32 = 3;

fn invalid_config(msg: String) -> StorageError {
    StorageError::Io(io::Error::new(io::ErrorKind::InvalidInput, msg))
}

fn check_config(config: &LogConfig) -> Result<bool, StorageError> {
    if config.segment_bytes < batch::HEADER_SIZE as u64 {
        return Err(invalid_config(format!("segment.bytes {} is below one batch header", config.segment_bytes)));
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
    /// recovery point on.
    pub fn open(
        fs: Arc<dyn Fs>,
        dir: PathBuf,
        config: LogConfig,
        bugs: PlantedBugs,
        _now_ms: i64,
    ) -> Result<(PartitionLog, RecoveryReport), StorageError> {
        let log_append_time = check_config(&config)?;
        if !fs.is_dir(&dir) {
            fs.create_dir_all(&dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs.sync_dir(parent)?;
            }
        }
        let rec = recovery::recover(&*fs, &dir, config.index_interval_bytes, !bugs.skip_crc_on_recovery)?;
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
        };
        // Recovery fsynced what it kept, so it is all durable.
        let log_end = log.log_end_offset();
        log.recovery_point = log_end;
        if log.dir_dirty {
            log.fs.sync_dir(&log.dir)?;
            log.dir_dirty = false;
        }
        write_checkpoint(&*log.fs, &log.dir, log_end)?;
        log.rebuild_producer_state();
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
        Ok((log, rec.report))
    }

    fn active(&mut self) -> &mut Segment {
        self.segments.values_mut().next_back().expect("a log always has an active segment")
    }

    /// Validate and append one or more v2 record batches, assigning offsets.
    /// Does not fsync unless the flush policy says so; see [`Self::flush`].
    /// On any error nothing of `batches` is visible.
    pub fn append(&mut self, batches: &[u8], now_ms: i64) -> Result<AppendInfo, StorageError> {
        if batches.is_empty() {
            return Err(StorageError::CorruptMessage("no record batches".into()));
        }
        let base_offset = self.log_end_offset();
        let mut buf = batches.to_vec();
        let mut headers: Vec<(usize, BatchHeader)> = Vec::new();
        let mut next = base_offset;
        let mut record_count = 0u64;
        let mut touched: BTreeMap<i64, ProducerEntry> = BTreeMap::new();
        for item in Batches::new(batches, false) {
            let (pos, h, bytes) = item?;
            if h.size() > self.config.max_message_bytes {
                return Err(StorageError::MessageTooLarge { size: h.size(), max: self.config.max_message_bytes });
            }
            h.validate_for_append()?;
            batch::validate_crc(&h, bytes)?;
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
            let stored = &mut buf[pos..pos + h.size()];
            batch::set_base_offset(stored, next);
            if self.log_append_time {
                batch::set_log_append_time(stored, now_ms);
            }
            let h = BatchHeader::parse(stored)?;
            if producer_state::is_idempotent(&h) {
                let e = entry.unwrap_or_else(|| ProducerEntry { epoch: h.producer_epoch, batches: Default::default() });
                touched.entry(h.producer_id).or_insert(e).record(&h);
            }
            next = h.next_offset();
            record_count += h.record_count as u64;
            headers.push((pos, h));
        }
        self.maybe_roll_for(buf.len() as u64, next, now_ms)?;
        let mark = self.active().mark();
        self.active().append(&buf, &headers)?;
        let first_unflushed_ms = self.first_unflushed_ms;
        self.unflushed_records += record_count;
        self.first_unflushed_ms.get_or_insert(now_ms);
        if let Err(e) = self.maybe_flush(now_ms) {
            // Not durable and maybe never will be: take it back so a failed
            // append is not visible and its offsets go to the next one. A
            // failed flush never advances the recovery point, so nothing
            // acknowledged is above `base_offset`.
            debug_assert!(self.recovery_point <= base_offset);
            self.unflushed_records -= record_count;
            self.first_unflushed_ms = first_unflushed_ms;
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
        self.producers.install(touched);
        let log_append_time = if self.log_append_time { now_ms } else { -1 };
        Ok(AppendInfo { base_offset, last_offset: next - 1, log_append_time, record_count, duplicate: false })
    }

    /// Roll before an append of `len` bytes ending at `next` if the active
    /// segment is full by size, offset range or age. A batch never spans segments.
    fn maybe_roll_for(&mut self, len: u64, next: i64, now_ms: i64) -> Result<(), StorageError> {
        let segment_bytes = self.config.segment_bytes.min(u32::MAX as u64);
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

    /// Start a new active segment at the log end.
    fn roll(&mut self) -> Result<(), StorageError> {
        let base = self.log_end_offset();
        debug_assert!(!self.active().is_empty(), "rolling an empty segment");
        // The outgoing segment's indexes become part of the trusted log.
        self.active().flush(true)?;
        let seg = Segment::create(&*self.fs, &self.dir, base, self.config.index_interval_bytes)?;
        self.segments.insert(base, seg);
        self.dir_dirty = true;
        tracing::debug!(dir = %self.dir.display(), base, "rolled a new segment");
        Ok(())
    }

    /// Read whole batches starting with the one containing `offset`, up to
    /// `max_bytes` (at least one batch is returned if any is available, as
    /// Kafka does), never past `max_offset` (exclusive; the high watermark).
    pub fn read(&self, offset: i64, max_bytes: usize, max_offset: i64) -> Result<ReadResult, StorageError> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset < start || offset > end {
            return Err(StorageError::OffsetOutOfRange { offset, start, end });
        }
        let mut result = ReadResult {
            records: Bytes::new(),
            log_end_offset: end,
            high_watermark: self.high_watermark(),
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
        if self.recovery_point == log_end && !self.dir_dirty {
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
        self.recovery_point = log_end;
        self.unflushed_records = 0;
        self.first_unflushed_ms = None;
        // The checkpoint only bounds recovery's scan; refreshing it once per
        // roll keeps that scan to the last segment or two. The data is
        // durable by now, so failing to write it fails nothing: the old
        // checkpoint stays (the new one lands by an atomic rename or not at
        // all) and is behind, never ahead. Retry at the next flush.
        if rolled || self.checkpoint_due {
            match write_checkpoint(&*self.fs, &self.dir, log_end) {
                Ok(()) => self.checkpoint_due = false,
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "writing the recovery-point checkpoint failed; will retry");
                    self.checkpoint_due = true;
                }
            }
        }
        Ok(())
    }

    /// Flush if `flush.messages` or `flush.ms` says it is time. Returns whether it flushed.
    pub fn maybe_flush(&mut self, now_ms: i64) -> Result<bool, StorageError> {
        let by_count = self.unflushed_records >= self.config.flush_messages.max(1);
        let by_age = self.first_unflushed_ms.is_some_and(|t| now_ms.saturating_sub(t) >= self.config.flush_ms);
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

    /// Remove everything at or after `offset` (for epoch-based truncation
    /// later). If `offset` falls inside a batch, the whole batch goes.
    /// Leaves the log fully flushed.
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
        removed += seg.truncate_to(offset)?;
        seg.flush(true)?;
        tracing::info!(dir = %self.dir.display(), offset, removed_bytes = removed, "log truncated");
        self.recovery_point = self.recovery_point.min(self.log_end_offset());
        // Producers' last batches may have gone with the tail.
        self.rebuild_producer_state();
        self.flush()
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

    /// Rebuild the producer state from the whole log. Kafka reads a snapshot
    /// and scans only past it; our logs are small enough to scan in full.
    /// The state only serves to recognise retries, so if the log cannot be
    /// read back, keep what was read and carry on: producers past the bad
    /// spot are treated as unknown, which accepts their next batch.
    fn rebuild_producer_state(&mut self) {
        let start = self.log_start_offset();
        for attempt in 1..=REBUILD_ATTEMPTS {
            let mut state = ProducerStateManager::new();
            let scanned = self.for_each_batch_header(start, |h| state.record(h));
            let complete = scanned.is_ok();
            if let Err(e) = scanned {
                tracing::warn!(dir = %self.dir.display(), attempt, error = %e, "reading batch headers for producer state failed");
            }
            self.producers = state;
            if complete {
                return;
            }
        }
        tracing::warn!(dir = %self.dir.display(), producers = self.producers.len(), "producer state rebuilt from part of the log");
    }

    /// The idempotent producers this log knows.
    pub fn producer_state(&self) -> &ProducerStateManager {
        &self.producers
    }

    pub fn log_start_offset(&self) -> i64 {
        *self.segments.keys().next().expect("a log always has a segment")
    }

    pub fn log_end_offset(&self) -> i64 {
        self.segments.values().next_back().expect("a log always has a segment").next_offset()
    }

    /// Offset up to which data is durable (fsynced).
    pub fn durable_offset(&self) -> i64 {
        self.recovery_point
    }

    /// High watermark: on a single replica, the durable log end.
    pub fn high_watermark(&self) -> i64 {
        self.recovery_point
    }

    /// First offset whose record timestamp is >= `ts`, with that timestamp.
    /// Looks at the whole log, not only below the high watermark.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        for seg in self.segments.values() {
            let Some(bytes) = seg.batch_at_timestamp(ts)? else { continue };
            let h = BatchHeader::parse(&bytes)?;
            if h.is_log_append_time() {
                // Every record carries the batch's append time.
                return Ok(Some((h.base_offset, h.max_timestamp)));
            }
            let set = RecordBatchDecoder::decode(&mut bytes.clone())
                .map_err(|e| StorageError::CorruptMessage(format!("batch at offset {}: {e}", h.base_offset)))?;
            let hit = set.records.iter().find(|r| r.timestamp >= ts).map(|r| (r.offset, r.timestamp));
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
