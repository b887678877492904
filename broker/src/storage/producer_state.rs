//! Per-partition state of idempotent producers, as Kafka's
//! `ProducerStateManager` keeps it: for each producer id, its epoch and the
//! metadata of its last [`MAX_BATCHES_PER_PRODUCER`] appended batches. It
//! decides, before a batch is appended, whether the batch is new, a retry of
//! one already in the log (answered with the original offsets, not appended
//! again), fenced by a newer epoch, or out of order.
//!
//! The state is derived from the log alone, and records each batch only once
//! its append succeeded. Like Kafka, the log writes it to a snapshot file
//! (`<offset>.snapshot`, the state of every batch below that offset) when a
//! segment rolls and on a clean close, so opening the log (or truncating it)
//! loads the newest usable snapshot and replays only the batch headers after
//! it. A snapshot is checked by its CRC; one that fails is skipped for an
//! older one, or a replay from the log start, never trusted.
//!
//! Producers idle for `producer.id.expiration.ms` (measured, as Kafka does,
//! against the max timestamp of their last batch) are forgotten. A forgotten
//! producer is like one never seen: its next batch is accepted at any
//! sequence, which is what Kafka 3.x does for a producer id it has no entry for.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};

use super::StorageError;
use crate::io::{write_atomically, Fs, OpenOptions};
use crate::record_batch::BatchHeader;

/// Kafka keeps this many batches per producer: a producer has at most five
/// requests in flight per connection, so a retry is always one of them.
pub const MAX_BATCHES_PER_PRODUCER: usize = 5;

/// What the log remembers of one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// One producer's state in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first; never more than [`MAX_BATCHES_PER_PRODUCER`].
    pub batches: VecDeque<BatchMetadata>,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not from an idempotent producer, or the next batch in its sequence.
    Append,
    /// A retry of a batch already in the log: answer with its offsets.
    Duplicate(BatchMetadata),
}

/// Kafka's sequence arithmetic: sequences wrap from `i32::MAX` to 0.
pub fn increment_sequence(seq: i32, by: i32) -> i32 {
    invariant!(seq >= 0 && by >= 0, "sequence arithmetic on a negative sequence {seq} + {by}");
    if seq > i32::MAX - by {
        by - (i32::MAX - seq) - 1
    } else {
        seq + by
    }
}

/// The sequence of a batch's last record.
pub fn last_sequence(h: &BatchHeader) -> i32 {
    increment_sequence(h.base_sequence, h.last_offset_delta)
}

/// Whether a batch takes part in idempotence: it carries a producer id, an
/// epoch and a sequence, and is a data batch (control markers belong to
/// transactions). The log refuses batches with a producer id but no valid
/// epoch or sequence, so a rebuild only meets them in logs written before.
pub fn is_idempotent(h: &BatchHeader) -> bool {
    h.has_producer_id() && !h.is_control() && h.producer_epoch >= 0 && h.base_sequence >= 0
}

impl ProducerEntry {
    fn find_duplicate(&self, h: &BatchHeader) -> Option<BatchMetadata> {
        if h.producer_epoch != self.epoch {
            return None;
        }
        let last = last_sequence(h);
        self.batches.iter().find(|b| b.first_seq == h.base_sequence && b.last_seq == last).copied()
    }

    /// Judge `h` against this producer's state, with Kafka's rules.
    pub fn check(&self, h: &BatchHeader) -> Result<Verdict, StorageError> {
        if h.producer_epoch < self.epoch {
            return Err(StorageError::InvalidProducerEpoch(format!(
                "producer {} epoch {} is older than the current epoch {}",
                h.producer_id, h.producer_epoch, self.epoch
            )));
        }
        if let Some(dup) = self.find_duplicate(h) {
            return Ok(Verdict::Duplicate(dup));
        }
        if h.producer_epoch > self.epoch {
            // A new epoch restarts the sequence (KIP-360 bumps and
            // re-initialised producers alike).
            if h.base_sequence != 0 {
                return Err(StorageError::OutOfOrderSequence(format!(
                    "producer {} starts epoch {} at sequence {}, not 0",
                    h.producer_id, h.producer_epoch, h.base_sequence
                )));
            }
            return Ok(Verdict::Append);
        }
        match self.batches.back() {
            // Known epoch but no batches left in the log (truncated away):
            // accept any sequence, as for an unknown producer.
            None => Ok(Verdict::Append),
            Some(last) => {
                let expected = increment_sequence(last.last_seq, 1);
                if h.base_sequence == expected {
                    Ok(Verdict::Append)
                } else {
                    Err(StorageError::OutOfOrderSequence(format!(
                        "producer {} epoch {} sent sequence {}; expected {expected}",
                        h.producer_id, h.producer_epoch, h.base_sequence
                    )))
                }
            }
        }
    }

    /// Max timestamp of the producer's last batch: the clock its expiry runs by.
    pub fn last_timestamp(&self) -> i64 {
        self.batches.back().map_or(i64::MIN, |b| b.max_timestamp)
    }

    /// Remember a batch that is now in the log (its offsets assigned).
    pub fn record(&mut self, h: &BatchHeader) {
        if h.producer_epoch != self.epoch {
            // Appends only ever raise the epoch; a rebuild follows the log.
            self.epoch = h.producer_epoch;
            self.batches.clear();
        }
        if self.batches.len() == MAX_BATCHES_PER_PRODUCER {
            self.batches.pop_front();
        }
        self.batches.push_back(BatchMetadata {
            first_seq: h.base_sequence,
            last_seq: last_sequence(h),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp,
        });
        invariant!(self.batches.len() <= MAX_BATCHES_PER_PRODUCER, "a producer keeps at most five batches");
    }
}

/// Every idempotent producer that has batches in one partition's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStateManager {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Forget everything (before a rebuild).
    pub fn clear(&mut self) {
        self.producers.clear();
    }

    /// Judge a batch. An unknown producer may start at any sequence: its
    /// state may have left the log (Kafka accepts it for the same reason).
    pub fn check(&self, h: &BatchHeader) -> Result<Verdict, StorageError> {
        if !is_idempotent(h) {
            return Ok(Verdict::Append);
        }
        match self.producers.get(&h.producer_id) {
            Some(entry) => entry.check(h),
            None => Ok(Verdict::Append),
        }
    }

    /// Remember a batch now in the log; batches without a producer id are ignored.
    pub fn record(&mut self, h: &BatchHeader) {
        if !is_idempotent(h) {
            return;
        }
        self.producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry { epoch: h.producer_epoch, batches: VecDeque::new() })
            .record(h);
    }

    /// Install entries judged and appended together (see
    /// [`super::PartitionLog::append_as_leader`]).
    pub fn install(&mut self, entries: BTreeMap<i64, ProducerEntry>) {
        self.producers.extend(entries);
    }

    /// Forget producers whose last batch is `expiration_ms` or more older
    /// than `now_ms` (Kafka's `removeExpiredProducers`). Returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| now_ms.saturating_sub(e.last_timestamp()) < expiration_ms);
        before - self.producers.len()
    }

    /// This state as a snapshot file's contents.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(4 + self.producers.len() * (11 + 36 * MAX_BATCHES_PER_PRODUCER));
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (id, e) in &self.producers {
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.push(e.batches.len() as u8);
            for b in &e.batches {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.first_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
                body.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(6 + body.len());
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend(body);
        out
    }

    /// Decode a snapshot taken at `offset`; `None` if it is damaged in any
    /// way, including batches at or past `offset`.
    pub fn decode_snapshot(buf: &[u8], offset: i64) -> Option<ProducerStateManager> {
        let mut r = Cursor(buf);
        if u16::from_be_bytes(r.take()?) != SNAPSHOT_VERSION {
            return None;
        }
        let crc = u32::from_be_bytes(r.take()?);
        if crc32c::crc32c(r.0) != crc {
            return None;
        }
        let count = u32::from_be_bytes(r.take()?);
        let mut producers = BTreeMap::new();
        let mut last_id = -1;
        for _ in 0..count {
            let id = i64::from_be_bytes(r.take()?);
            let epoch = i16::from_be_bytes(r.take()?);
            let n = r.take::<1>()?[0] as usize;
            if id <= last_id || epoch < 0 || n == 0 || n > MAX_BATCHES_PER_PRODUCER {
                return None;
            }
            last_id = id;
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                let b = BatchMetadata {
                    first_seq: i32::from_be_bytes(r.take()?),
                    last_seq: i32::from_be_bytes(r.take()?),
                    first_offset: i64::from_be_bytes(r.take()?),
                    last_offset: i64::from_be_bytes(r.take()?),
                    max_timestamp: i64::from_be_bytes(r.take()?),
                };
                let after_previous = batches.back().is_none_or(|p: &BatchMetadata| p.last_offset < b.first_offset);
                if b.first_offset > b.last_offset || b.last_offset >= offset || !after_previous {
                    return None;
                }
                batches.push_back(b);
            }
            producers.insert(id, ProducerEntry { epoch, batches });
        }
        r.0.is_empty().then_some(ProducerStateManager { producers })
    }
}

const SNAPSHOT_VERSION: u16 = 1;
pub(super) const SNAPSHOT_SUFFIX: &str = "snapshot";

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

/// Path of the snapshot of the state below `offset`.
pub(super) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.{SNAPSHOT_SUFFIX}"))
}

/// Offsets of the snapshot files in `dir`, ascending.
pub(super) fn list_snapshots(fs: &dyn Fs, dir: &Path) -> io::Result<Vec<i64>> {
    let mut offsets: Vec<i64> = fs
        .list_dir(dir)?
        .iter()
        .filter_map(|p| {
            let (stem, suffix) = p.file_name()?.to_str()?.split_once('.')?;
            let digits = stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit());
            (suffix == SNAPSHOT_SUFFIX && digits).then(|| stem.parse().ok()).flatten()
        })
        .collect();
    offsets.sort_unstable();
    Ok(offsets)
}

/// Durably write the snapshot of `state` as of `offset`.
pub(super) fn write_snapshot(fs: &dyn Fs, dir: &Path, offset: i64, state: &ProducerStateManager) -> io::Result<()> {
    write_atomically(fs, &snapshot_path(dir, offset), &state.encode_snapshot())
}

/// Read the snapshot at `offset`; `None` if unreadable or damaged.
pub(super) fn read_snapshot(fs: &dyn Fs, dir: &Path, offset: i64) -> Option<ProducerStateManager> {
    let file = fs.open(&snapshot_path(dir, offset), OpenOptions::EXISTING).ok()?;
    let mut buf = vec![0u8; file.len().ok()? as usize];
    file.read_exact_at(&mut buf, 0).ok()?;
    ProducerStateManager::decode_snapshot(&buf, offset)
}

/// Remove the snapshot at `offset`; a missing one is fine.
pub(super) fn delete_snapshot(fs: &dyn Fs, dir: &Path, offset: i64) -> io::Result<()> {
    match fs.remove_file(&snapshot_path(dir, offset)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 49,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 7,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    fn is_out_of_order(r: Result<Verdict, StorageError>) -> bool {
        matches!(r, Err(StorageError::OutOfOrderSequence(_)))
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(increment_sequence(5, 1), 6);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(last_sequence(&header(1, 0, i32::MAX - 1, 4, 0)), 1);
    }

    #[test]
    fn next_sequence_appends_and_retries_are_duplicates() {
        let mut s = ProducerStateManager::new();
        // An unknown producer may start anywhere.
        let a = header(7, 0, 100, 3, 10);
        assert_eq!(s.check(&a).unwrap(), Verdict::Append);
        s.record(&a);
        let b = header(7, 0, 103, 2, 13);
        assert_eq!(s.check(&b).unwrap(), Verdict::Append);
        s.record(&b);
        // Retrying either batch finds it, with its original offsets.
        let Verdict::Duplicate(m) = s.check(&header(7, 0, 100, 3, -1)).unwrap() else { panic!("not a duplicate") };
        assert_eq!((m.first_offset, m.last_offset, m.first_seq, m.last_seq), (10, 12, 100, 102));
        let Verdict::Duplicate(m) = s.check(&header(7, 0, 103, 2, -1)).unwrap() else { panic!("not a duplicate") };
        assert_eq!(m.first_offset, 13);
        // Same base sequence but a different length is not the same batch.
        assert!(is_out_of_order(s.check(&header(7, 0, 100, 2, -1))));
        // A gap or a step back is out of order.
        assert!(is_out_of_order(s.check(&header(7, 0, 106, 1, -1))));
        assert!(is_out_of_order(s.check(&header(7, 0, 104, 1, -1))));
        // Other producers are independent.
        assert_eq!(s.check(&header(8, 0, 55, 1, -1)).unwrap(), Verdict::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStateManager::new();
        for i in 0..7 {
            s.record(&header(1, 0, i, 1, i as i64));
        }
        assert_eq!(s.get(1).unwrap().batches.len(), MAX_BATCHES_PER_PRODUCER);
        // Batches 0 and 1 have left the window: a retry of them is out of order.
        assert!(is_out_of_order(s.check(&header(1, 0, 1, 1, -1))));
        assert!(matches!(s.check(&header(1, 0, 2, 1, -1)).unwrap(), Verdict::Duplicate(_)));
        assert_eq!(s.check(&header(1, 0, 7, 1, -1)).unwrap(), Verdict::Append);
    }

    #[test]
    fn older_epochs_are_fenced_and_new_epochs_restart_at_zero() {
        let mut s = ProducerStateManager::new();
        s.record(&header(3, 2, 0, 5, 0));
        assert!(matches!(s.check(&header(3, 1, 5, 1, -1)), Err(StorageError::InvalidProducerEpoch(_))));
        // Even an exact retry from the old epoch is fenced.
        assert!(matches!(s.check(&header(3, 1, 0, 5, -1)), Err(StorageError::InvalidProducerEpoch(_))));
        assert!(is_out_of_order(s.check(&header(3, 3, 5, 1, -1))));
        let bumped = header(3, 3, 0, 1, 5);
        assert_eq!(s.check(&bumped).unwrap(), Verdict::Append);
        s.record(&bumped);
        assert_eq!(s.get(3).unwrap().epoch, 3);
        assert_eq!(s.get(3).unwrap().batches.len(), 1);
        // The same sequence under the old epoch is no longer a duplicate.
        assert!(matches!(s.check(&header(3, 2, 0, 5, -1)), Err(StorageError::InvalidProducerEpoch(_))));
    }

    #[test]
    fn sequences_continue_across_the_wrap() {
        let mut s = ProducerStateManager::new();
        let a = header(9, 0, i32::MAX - 1, 2, 0);
        s.record(&a);
        assert_eq!(s.get(9).unwrap().batches[0].last_seq, i32::MAX);
        assert_eq!(s.check(&header(9, 0, 0, 3, -1)).unwrap(), Verdict::Append);
        assert!(is_out_of_order(s.check(&header(9, 0, 1, 1, -1))));
        // A batch spanning the wrap is found again when retried.
        let b = header(9, 0, i32::MAX, 2, 2);
        let mut t = ProducerStateManager::new();
        t.record(&b);
        assert_eq!(t.get(9).unwrap().batches[0].last_seq, 0);
        assert!(matches!(t.check(&header(9, 0, i32::MAX, 2, -1)).unwrap(), Verdict::Duplicate(_)));
        assert_eq!(t.check(&header(9, 0, 1, 1, -1)).unwrap(), Verdict::Append);
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_refused() {
        let mut s = ProducerStateManager::new();
        for i in 0..7 {
            s.record(&header(1, 0, i, 2, 2 * i as i64));
        }
        s.record(&header(4, 3, 9, 1, 20));
        let snap = s.encode_snapshot();
        assert_eq!(ProducerStateManager::decode_snapshot(&snap, 21), Some(s.clone()));
        assert_eq!(ProducerStateManager::decode_snapshot(&snap, 20), None, "a batch at the snapshot offset");
        assert_eq!(ProducerStateManager::decode_snapshot(&snap[..snap.len() - 1], 21), None);
        for at in [0, 3, 10, snap.len() - 1] {
            let mut bad = snap.clone();
            bad[at] ^= 0x10;
            assert_eq!(ProducerStateManager::decode_snapshot(&bad, 21), None, "byte {at}");
        }
        let empty = ProducerStateManager::new().encode_snapshot();
        assert_eq!(ProducerStateManager::decode_snapshot(&empty, 0), Some(ProducerStateManager::new()));
    }

    #[test]
    fn idle_producers_expire_by_their_last_batch_timestamp() {
        let mut s = ProducerStateManager::new();
        s.record(&header(1, 0, 0, 1, 0)); // max timestamp 7
        let mut later = header(2, 0, 0, 1, 1);
        later.max_timestamp = 100;
        s.record(&later);
        assert_eq!(s.expire(106, 100), 0);
        assert_eq!(s.expire(107, 100), 1);
        assert!(s.get(1).is_none() && s.get(2).is_some());
        // The forgotten producer's next batch is accepted at any sequence.
        assert_eq!(s.check(&header(1, 0, 57, 1, -1)).unwrap(), Verdict::Append);
    }

    #[test]
    fn plain_batches_are_ignored() {
        let mut s = ProducerStateManager::new();
        let plain = header(-1, -1, -1, 3, 0);
        assert_eq!(s.check(&plain).unwrap(), Verdict::Append);
        s.record(&plain);
        assert!(s.is_empty());
    }
}
