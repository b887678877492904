//! Per-partition state of idempotent producers, as Kafka's
//! `ProducerStateManager` keeps it: for each producer id, its epoch and the
//! metadata of its last [`MAX_BATCHES_PER_PRODUCER`] appended batches. It
//! decides, before a batch is appended, whether the batch is new, a retry of
//! one already in the log (answered with the original offsets, not appended
//! again), fenced by a newer epoch, or out of order.
//!
//! The state is derived from the log alone: [`super::PartitionLog`] rebuilds
//! it by scanning batch headers when it opens and after a truncation, and
//! records each batch only once its append succeeded. Kafka also snapshots
//! this state next to each segment so a restart reads only the tail; at our
//! log sizes a header scan is cheap, so there are no snapshots yet.

use std::collections::{BTreeMap, VecDeque};

use super::batch::BatchHeader;
use super::StorageError;

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
    debug_assert!(seq >= 0 && by >= 0);
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
        debug_assert!(self.batches.len() <= MAX_BATCHES_PER_PRODUCER);
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

    /// Install entries judged and appended together (see [`super::PartitionLog::append`]).
    pub fn install(&mut self, entries: BTreeMap<i64, ProducerEntry>) {
        self.producers.extend(entries);
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
    fn plain_batches_are_ignored() {
        let mut s = ProducerStateManager::new();
        let plain = header(-1, -1, -1, 3, 0);
        assert_eq!(s.check(&plain).unwrap(), Verdict::Append);
        s.record(&plain);
        assert!(s.is_empty());
    }
}
