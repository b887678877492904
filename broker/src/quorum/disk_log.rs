//! The durable metadata log: [`DiskLog`], a [`RaftLog`] kept in one
//! directory (`<data_dir>/__cluster_metadata-0/`) through the I/O seam.
//!
//! The batches live in a [`PartitionLog`] (segments, indexes, recovery of
//! torn tails, the leader-epoch cache), exactly as a topic partition's do.
//! What the partition log lacks is the snapshot at the log start; it is kept
//! beside the segments in files named by the snapshot's id, as KRaft names
//! them: `<end offset, 20 digits>-<epoch, 10 digits>.checkpoint`.
//!
//! Snapshot file layout (big-endian):
//!
//! ```text
//! 0 magic "FLRS"   4 version i16 (1)   6 reserved i16 (0)
//! 8 end_offset i64   16 epoch i32   20 payload length u32
//! 24 crc32c u32 of bytes 0..24 and the payload   28 payload
//! ```
//!
//! Each is written atomically (temporary file, fsync, rename, fsync of the
//! directory), so a crash leaves a whole file or none; the CRC catches a
//! medium that rots one. The newest two are kept. The log start offset is
//! the newest snapshot's end offset, but segments are deleted only below the
//! older one's: if the newest snapshot is ever found damaged, opening falls
//! back to the older one and the log still holds everything after it.
//!
//! Storing a snapshot the log does not reach (a follower installing its
//! leader's) writes the snapshot first, then resets the partition log to
//! start empty at its end offset ([`PartitionLog::reset_to`]). Opening
//! reconciles the two whatever a crash left: if the log holds the snapshot's
//! last entry, or starts at its end, it is kept; otherwise it is reset again.
//!
//! Limits: a snapshot is at most the `max_snapshot_bytes` given to
//! [`DiskLog::open`] (the quorum's `max_snapshot_bytes`; larger ones are
//! refused on store and passed over on open), and is held in memory whole;
//! reads return at most `max_bytes` (at least one whole batch, as Kafka's).
//!
//! Disk latency: the [`RaftLog`] methods touch the disk but take no
//! [`crate::io::DiskScope`], since the core that calls them is sans-IO. The
//! driver runs the core inside [`crate::io::on_disk`], so every call that
//! may write is paid for by the input that caused it.
//!
//! Segments roll by size only: the trait carries no clock, so the
//! `segment.ms` and `flush.ms` ages are judged against the time the log was
//! opened, and the core flushes explicitly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::log::{LogError, RaftLog, SnapshotId};
use crate::config::{LogConfig, PlantedBugs};
use crate::io::{write_atomically, Fs, OpenOptions};
use crate::record_batch::ValidatedBatches;
use crate::storage::{PartitionLog, StorageError};

const MAGIC: &[u8; 4] = b"FLRS";
const VERSION: i16 = 1;
/// Bytes before a snapshot's payload.
pub const SNAPSHOT_HEADER_LEN: usize = 28;
const SNAPSHOT_SUFFIX: &str = ".checkpoint";
/// Snapshots kept on disk: the newest, and one to fall back to.
pub const SNAPSHOTS_KEPT: usize = 2;

fn storage_error(e: StorageError) -> LogError {
    match e {
        StorageError::CorruptMessage(m) => LogError::Corrupt(m),
        StorageError::OffsetOutOfRange { offset, start, end } => LogError::OutOfRange { offset, start, end },
        e @ (StorageError::FencedLeaderEpoch(_) | StorageError::UnexpectedAppendOffset(_)) => {
            LogError::OutOfOrder(e.to_string())
        }
        e => LogError::Io(e.to_string()),
    }
}

fn io_error(e: std::io::Error) -> LogError {
    LogError::Io(e.to_string())
}

/// The file name of snapshot `id`.
pub fn snapshot_file_name(id: SnapshotId) -> String {
    format!("{:020}-{:010}{SNAPSHOT_SUFFIX}", id.end_offset, id.epoch)
}

fn parse_snapshot_name(path: &Path) -> Option<SnapshotId> {
    let name = path.file_name()?.to_str()?.strip_suffix(SNAPSHOT_SUFFIX)?;
    let (end, epoch) = name.split_once('-')?;
    if end.len() != 20 || epoch.len() != 10 {
        return None;
    }
    let id = SnapshotId { end_offset: end.parse().ok()?, epoch: epoch.parse().ok()? };
    (id.end_offset >= 0 && id.epoch >= 0).then_some(id)
}

/// Snapshot `id` with `payload`, as stored.
pub fn encode_snapshot(id: SnapshotId, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("snapshots are limited below 4 GiB");
    let mut b = Vec::with_capacity(SNAPSHOT_HEADER_LEN + payload.len());
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&id.end_offset.to_be_bytes());
    b.extend_from_slice(&id.epoch.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&b), payload);
    b.extend_from_slice(&crc.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// The payload of a stored snapshot that must be `id`, or why it is not.
pub fn decode_snapshot(id: SnapshotId, b: &[u8]) -> Result<Bytes, String> {
    if b.len() < SNAPSHOT_HEADER_LEN {
        return Err(format!("{} bytes, shorter than the header", b.len()));
    }
    if &b[0..4] != MAGIC {
        return Err("bad magic".into());
    }
    let len = u32::from_be_bytes(b[20..24].try_into().expect("4 bytes")) as usize;
    if b.len() != SNAPSHOT_HEADER_LEN + len {
        return Err(format!("{} bytes where the header says {}", b.len(), SNAPSHOT_HEADER_LEN + len));
    }
    let crc = u32::from_be_bytes(b[24..28].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c_append(crc32c::crc32c(&b[..24]), &b[SNAPSHOT_HEADER_LEN..]) {
        return Err("CRC mismatch".into());
    }
    let version = i16::from_be_bytes([b[4], b[5]]);
    if version != VERSION {
        return Err(format!("unknown version {version}"));
    }
    let stored = SnapshotId {
        end_offset: i64::from_be_bytes(b[8..16].try_into().expect("8 bytes")),
        epoch: i32::from_be_bytes(b[16..20].try_into().expect("4 bytes")),
    };
    if stored != id {
        return Err(format!("holds {stored:?} under the name of {id:?}"));
    }
    Ok(Bytes::copy_from_slice(&b[SNAPSHOT_HEADER_LEN..]))
}

/// The metadata log on disk. See the module documentation.
pub struct DiskLog {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    log: PartitionLog,
    /// The log start offset: the newest snapshot's end offset, else the
    /// partition log's start (0). Batches of the partition log below it are
    /// kept only as the fallback for the older snapshot.
    start: i64,
    snapshot: Option<(SnapshotId, Bytes)>,
    max_snapshot_bytes: usize,
    /// Passed to the partition log for its age checks; see the module doc.
    opened_ms: i64,
    /// A snapshot store failed after the snapshot was durable, half-way
    /// through the log beneath it: the log refuses further changes until it
    /// is opened again, which reconciles the two.
    broken: Option<String>,
}

impl DiskLog {
    /// Open (or create) the metadata log in `dir`: recover the partition
    /// log (torn tails are cut), load the newest valid snapshot and make the
    /// log agree with it (see the module doc). `config` is the partition
    /// log's (its segment size, index interval, and `max.message.bytes` as
    /// the largest batch; its flush policy is ignored, as the core flushes
    /// itself); `max_snapshot_bytes` bounds a snapshot (below
    /// 4 GiB).
    ///
    /// Errors when the directory cannot be read or written, or when the log
    /// starts past offset 0 and no snapshot covers what came before (every
    /// snapshot damaged): the node must not start with a hole in its log.
    pub fn open(
        fs: Arc<dyn Fs>,
        dir: &Path,
        config: LogConfig,
        max_snapshot_bytes: usize,
        now_ms: i64,
    ) -> Result<DiskLog, LogError> {
        if max_snapshot_bytes > u32::MAX as usize {
            return Err(LogError::Io(format!("max snapshot bytes {max_snapshot_bytes} is not below 4 GiB")));
        }
        // The core flushes when Raft needs it (before a vote counts, before
        // fetching further); a flush policy of its own would only add fsyncs.
        let config = LogConfig { flush_messages: u64::MAX, flush_ms: i64::MAX, ..config };
        let (log, report) = PartitionLog::open(fs.clone(), dir.to_path_buf(), config, PlantedBugs::default(), now_ms)
            .map_err(storage_error)?;
        if report.truncated_bytes > 0 {
            tracing::warn!(dir = %dir.display(), truncated = report.truncated_bytes, "metadata log tail cut on open");
        }
        let mut this = DiskLog {
            fs,
            dir: dir.to_path_buf(),
            log,
            start: 0,
            snapshot: None,
            max_snapshot_bytes,
            opened_ms: now_ms,
            broken: None,
        };
        let physical_start = this.log.log_start_offset();
        let mut chosen = None;
        for id in this.list_snapshots()?.into_iter().rev() {
            match this.read_snapshot(id) {
                Ok(bytes) if id.end_offset >= physical_start => {
                    chosen = Some((id, bytes));
                    break;
                }
                Ok(_) => {
                    tracing::warn!(dir = %dir.display(), ?id, physical_start, "snapshot below the log start ignored")
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), ?id, error = %e, "snapshot damaged; trying an older one")
                }
            }
        }
        match chosen {
            None if physical_start > 0 => {
                return Err(LogError::Corrupt(format!(
                    "the metadata log in {} starts at {physical_start} but no valid snapshot covers what precedes it",
                    dir.display()
                )));
            }
            None => {}
            Some((id, bytes)) => {
                if !this.holds_last_entry_of(id) && physical_start != id.end_offset {
                    tracing::info!(dir = %dir.display(), ?id, "log does not reach the snapshot; resetting it");
                    this.log.reset_to(id.end_offset).map_err(storage_error)?;
                }
                this.start = id.end_offset;
                this.snapshot = Some((id, bytes));
            }
        }
        this.check();
        Ok(this)
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The partition log holding the batches (for inspection and tests).
    pub fn partition_log(&self) -> &PartitionLog {
        &self.log
    }

    /// Snapshot ids on disk, oldest first, valid or not.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotId>, LogError> {
        let mut ids: Vec<SnapshotId> =
            self.fs.list_dir(&self.dir).map_err(io_error)?.iter().filter_map(|p| parse_snapshot_name(p)).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn read_snapshot(&self, id: SnapshotId) -> Result<Bytes, String> {
        let file =
            self.fs.open(&self.dir.join(snapshot_file_name(id)), OpenOptions::EXISTING).map_err(|e| e.to_string())?;
        let len = file.len().map_err(|e| e.to_string())?;
        if len > (SNAPSHOT_HEADER_LEN + self.max_snapshot_bytes) as u64 {
            return Err(format!("{len} bytes, over the limit of {}", self.max_snapshot_bytes));
        }
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0).map_err(|e| e.to_string())?;
        decode_snapshot(id, &buf)
    }

    /// The partition log holds the entry at `id.end_offset - 1`, written in
    /// `id.epoch`, within this log's bounds.
    fn holds_last_entry_of(&self, id: SnapshotId) -> bool {
        let last = id.end_offset - 1;
        last >= self.start
            && last >= self.log.log_start_offset()
            && last < self.log.log_end_offset()
            && self.log.epoch_at(last) == Some(id.epoch)
    }

    fn refuse_if_broken(&self) -> Result<(), LogError> {
        match &self.broken {
            Some(why) => Err(LogError::Io(format!("the metadata log must be reopened: {why}"))),
            None => Ok(()),
        }
    }

    /// What must hold between calls.
    fn check(&self) {
        if self.broken.is_some() {
            return;
        }
        let (start, end, durable) = (self.start, self.log.log_end_offset(), self.durable_offset());
        invariant!(start <= end, "metadata log starts at {start} past its end {end}");
        invariant!(durable <= end, "metadata log durable to {durable} past its end {end}");
        invariant!(
            self.log.log_start_offset() <= start,
            "partition log starts at {} above the metadata log start {start}",
            self.log.log_start_offset()
        );
        match &self.snapshot {
            Some((id, _)) => {
                invariant!(id.end_offset == start, "snapshot {id:?} does not end at the log start {start}");
                invariant!(
                    self.last_epoch() >= id.epoch,
                    "last epoch {} below the snapshot's {}",
                    self.last_epoch(),
                    id.epoch
                );
            }
            None => invariant!(start == 0, "a log without a snapshot starts at {start}"),
        }
        if end > start {
            invariant!(
                self.log.epoch_at(start) <= self.log.epoch_at(end - 1),
                "epochs go backwards between {start} and {}",
                end - 1
            );
        }
    }

    /// Remove snapshot files: those other than `keep` if given, else all but
    /// the newest [`SNAPSHOTS_KEPT`].
    fn prune_snapshots(&self, keep: Option<SnapshotId>) -> Result<(), LogError> {
        let ids = self.list_snapshots()?;
        let doomed: Vec<SnapshotId> = match keep {
            Some(k) => ids.into_iter().filter(|&i| i != k).collect(),
            None => ids[..ids.len().saturating_sub(SNAPSHOTS_KEPT)].to_vec(),
        };
        for &id in &doomed {
            self.fs.remove_file(&self.dir.join(snapshot_file_name(id))).map_err(io_error)?;
        }
        if !doomed.is_empty() {
            self.fs.sync_dir(&self.dir).map_err(io_error)?;
        }
        Ok(())
    }
}

impl RaftLog for DiskLog {
    fn log_start_offset(&self) -> i64 {
        self.start
    }

    fn end_offset(&self) -> i64 {
        // Only a broken log (a reset cut short) can end below its start.
        self.log.log_end_offset().max(self.start)
    }

    fn durable_offset(&self) -> i64 {
        // What lies below the start is in the snapshot, which is durable.
        self.log.durable_offset().max(self.start).min(self.end_offset())
    }

    fn last_epoch(&self) -> i32 {
        match (self.log.log_end_offset() > self.start, self.log.latest_epoch(), &self.snapshot) {
            (true, Some(e), _) => e,
            (_, _, Some((id, _))) => id.epoch,
            _ => 0,
        }
    }

    fn epoch_at(&self, offset: i64) -> Option<i32> {
        match &self.snapshot {
            Some((id, _)) if offset == id.end_offset - 1 && offset == self.start - 1 => Some(id.epoch),
            _ if offset >= self.start && offset < self.log.log_end_offset() => self.log.epoch_at(offset),
            _ => None,
        }
    }

    fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.log.end_offset_for_epoch(epoch)
    }

    fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        self.refuse_if_broken()?;
        let end = self.end_offset();
        if offset < self.start || offset > end {
            return Err(LogError::OutOfRange { offset, start: self.start, end });
        }
        Ok(self.log.read(offset, max_bytes, end).map_err(storage_error)?.records)
    }

    fn append_as_leader(&mut self, batches: &ValidatedBatches, epoch: i32) -> Result<(i64, i64), LogError> {
        self.refuse_if_broken()?;
        if epoch < self.last_epoch() {
            return Err(LogError::OutOfOrder(format!("epoch {epoch} is older than the log's {}", self.last_epoch())));
        }
        let info = self.log.append_as_leader(batches, self.opened_ms, epoch).map_err(storage_error)?;
        self.check();
        Ok((info.base_offset, info.last_offset))
    }

    fn append_as_follower(&mut self, batches: &ValidatedBatches) -> Result<(), LogError> {
        self.refuse_if_broken()?;
        // The partition log checks epochs against its batches; an empty log
        // after a snapshot must not go below the snapshot's epoch either.
        let latest = self.last_epoch();
        if let Some((_, h)) = batches.iter().find(|(_, h)| h.partition_leader_epoch < latest) {
            return Err(LogError::OutOfOrder(format!(
                "batch at {} of epoch {} where the log is in epoch {latest}",
                h.base_offset, h.partition_leader_epoch
            )));
        }
        self.log.append_as_follower(batches, self.opened_ms).map_err(storage_error)?;
        self.check();
        Ok(())
    }

    fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        self.refuse_if_broken()?;
        self.log.truncate_to(offset.max(self.start)).map_err(storage_error)?;
        self.check();
        Ok(())
    }

    fn flush(&mut self) -> Result<(), LogError> {
        self.refuse_if_broken()?;
        self.log.flush().map_err(storage_error)
    }

    fn snapshot(&self) -> Option<(SnapshotId, Bytes)> {
        self.snapshot.clone()
    }

    fn store_snapshot(&mut self, id: SnapshotId, bytes: Bytes) -> Result<(), LogError> {
        self.refuse_if_broken()?;
        if bytes.len() > self.max_snapshot_bytes {
            return Err(LogError::Io(format!(
                "snapshot of {} bytes exceeds the limit of {} bytes",
                bytes.len(),
                self.max_snapshot_bytes
            )));
        }
        if id.end_offset < self.start || id.end_offset < 0 || id.epoch < 0 {
            return Err(LogError::OutOfOrder(format!("snapshot {id:?} below the log start {}", self.start)));
        }
        let holds_last = self.holds_last_entry_of(id);
        if holds_last && id.end_offset < self.log.log_end_offset() {
            let next = self.log.read(id.end_offset, 1, self.log.log_end_offset()).map_err(storage_error)?;
            let boundary = crate::record_batch::Batches::new(&next.records, false)
                .next()
                .is_some_and(|b| b.is_ok_and(|(_, h, _)| h.base_offset == id.end_offset));
            if !boundary {
                return Err(LogError::OutOfOrder(format!("snapshot end {} is inside a batch", id.end_offset)));
            }
        }
        write_atomically(&*self.fs, &self.dir.join(snapshot_file_name(id)), &encode_snapshot(id, &bytes))
            .map_err(io_error)?;
        // The snapshot is durable: from here a failure leaves the disk for
        // the next open to reconcile.
        let previous = self.snapshot.as_ref().map(|(p, _)| *p);
        let outcome = if holds_last {
            // Segments go only below the older snapshot kept, the fallback.
            let below = previous.filter(|p| p.end_offset < id.end_offset).map_or(0, |p| p.end_offset);
            self.prune_snapshots(None)
                .and_then(|()| self.log.delete_segments_below(below.max(self.start)).map_err(storage_error))
                .map(|_| ())
        } else {
            self.log.reset_to(id.end_offset).map_err(storage_error).and_then(|()| self.prune_snapshots(Some(id)))
        };
        self.start = id.end_offset;
        self.snapshot = Some((id, bytes));
        if let Err(e) = &outcome {
            if !holds_last {
                self.broken = Some(e.to_string());
            }
            tracing::warn!(dir = %self.dir.display(), ?id, error = %e, "snapshot stored but the log beneath it was not tidied");
        }
        self.check();
        if holds_last {
            // Old segments and snapshots left behind cost only space.
            return Ok(());
        }
        outcome
    }
}

#[cfg(test)]
#[path = "disk_log_tests.rs"]
mod tests;
