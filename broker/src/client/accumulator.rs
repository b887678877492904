//! The producer's record accumulator: one queue of batches per partition.
//!
//! Records append to the partition's last batch until it reaches
//! `batch.size`; a batch becomes ready to send when it is full, when
//! `linger.ms` has passed since it was opened, when a flush asks for it, or
//! when it is waiting to be retried. Each partition may have up to
//! `max_in_flight` batches in flight. With one, the partition is muted while
//! its batch is out, so a retried batch can never land behind a later one.
//! With more (Kafka's `max.in.flight.requests.per.connection` > 1), a retry
//! may land behind a later batch unless the producer is idempotent, whose
//! sequence numbers make the broker refuse batches out of order; a retried
//! batch goes back into the queue in creation order either way. This module
//! only keeps time and queues; the sender does the I/O.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use super::batch::{OutRecord, BATCH_HEADER_BYTES};
use super::TopicPartition;

/// A record waiting in a batch, with whatever completes it.
#[derive(Debug)]
pub struct PendingRecord<C> {
    pub record: OutRecord,
    pub completion: C,
}

/// A batch of records for one partition.
#[derive(Debug)]
pub struct ProducerBatch<C> {
    pub tp: TopicPartition,
    /// Creation order within the accumulator: retries go back in this order.
    pub id: u64,
    pub records: Vec<PendingRecord<C>>,
    /// Estimated encoded size in bytes (header plus record upper bounds).
    pub size: usize,
    /// When the batch was opened (monotonic); linger and delivery timeout
    /// count from here.
    pub created: Duration,
    /// Times it was handed to the sender.
    pub attempts: u32,
    /// True once any attempt may have reached the log: a later failure is
    /// then indeterminate, not definite.
    pub maybe_written: bool,
    /// Not to be sent again before this time (retry backoff).
    pub retry_at: Option<Duration>,
    /// The encoded batch, kept so a retry sends the very same bytes.
    pub encoded: Option<Bytes>,
}

impl<C> ProducerBatch<C> {
    fn new(tp: TopicPartition, id: u64, now: Duration) -> Self {
        ProducerBatch {
            tp,
            id,
            records: Vec::new(),
            size: BATCH_HEADER_BYTES,
            created: now,
            attempts: 0,
            maybe_written: false,
            retry_at: None,
            encoded: None,
        }
    }
}

#[derive(Debug)]
struct Queue<C> {
    batches: VecDeque<ProducerBatch<C>>,
    in_flight: usize,
}

/// Per-partition batch queues.
#[derive(Debug)]
pub struct Accumulator<C> {
    batch_size: usize,
    linger: Duration,
    /// Batches of one partition that may be in flight at once.
    max_in_flight: usize,
    next_id: u64,
    queues: BTreeMap<TopicPartition, Queue<C>>,
}

impl<C> Accumulator<C> {
    /// One batch in flight per partition.
    pub fn new(batch_size: usize, linger: Duration) -> Self {
        Self::with_max_in_flight(batch_size, linger, 1)
    }

    /// Up to `max_in_flight` batches in flight per partition.
    pub fn with_max_in_flight(batch_size: usize, linger: Duration, max_in_flight: usize) -> Self {
        Accumulator {
            batch_size: batch_size.max(1),
            linger,
            max_in_flight: max_in_flight.max(1),
            next_id: 0,
            queues: BTreeMap::new(),
        }
    }

    /// Add a record to `tp`'s open batch, opening a new one if it would
    /// overflow `batch.size` (a record bigger than that gets a batch of its
    /// own). Returns true if this opened a new batch.
    pub fn append(&mut self, tp: &TopicPartition, record: OutRecord, completion: C, now: Duration) -> bool {
        let queue = self.queues.entry(tp.clone()).or_insert_with(|| Queue { batches: VecDeque::new(), in_flight: 0 });
        let size = record.size_estimate();
        // A batch that was sent once is closed: retries resend it unchanged.
        let open = queue.batches.back_mut().filter(|b| b.attempts == 0 && b.size + size <= self.batch_size);
        let (batch, opened) = match open {
            Some(b) => (b, false),
            None => {
                queue.batches.push_back(ProducerBatch::new(tp.clone(), self.next_id, now));
                self.next_id += 1;
                (queue.batches.back_mut().expect("just pushed"), true)
            }
        };
        batch.size += size;
        batch.records.push(PendingRecord { record, completion });
        opened
    }

    /// Partitions whose head batch should be sent now. With `flush`, linger
    /// is ignored.
    pub fn ready(&self, now: Duration, flush: bool) -> Vec<TopicPartition> {
        self.queues
            .iter()
            .filter(|(_, q)| q.in_flight < self.max_in_flight)
            .filter_map(|(tp, q)| {
                let head = q.batches.front()?;
                if head.retry_at.is_some_and(|t| t > now) {
                    return None;
                }
                let full = q.batches.len() > 1 || head.size >= self.batch_size;
                let lingered = now >= head.created + self.linger;
                (full || lingered || flush || head.retry_at.is_some()).then(|| tp.clone())
            })
            .collect()
    }

    /// The earliest time a batch not ready now becomes ready by waiting.
    pub fn next_ready_time(&self, now: Duration) -> Option<Duration> {
        self.queues
            .values()
            .filter(|q| q.in_flight < self.max_in_flight)
            .filter_map(|q| q.batches.front())
            .map(|b| b.retry_at.unwrap_or(b.created + self.linger))
            .filter(|t| *t > now)
            .min()
    }

    /// Take `tp`'s head batch to send it; it counts against the partition's
    /// in-flight limit until [`Accumulator::requeue`] or [`Accumulator::done`].
    pub fn drain(&mut self, tp: &TopicPartition) -> Option<ProducerBatch<C>> {
        let q = self.queues.get_mut(tp)?;
        assert!(q.in_flight < self.max_in_flight, "partition {tp} already has its batches in flight");
        let mut batch = q.batches.pop_front()?;
        q.in_flight += 1;
        batch.attempts += 1;
        Some(batch)
    }

    /// Put a batch that must be retried back into its queue, ahead of every
    /// batch opened after it.
    pub fn requeue(&mut self, mut batch: ProducerBatch<C>, retry_at: Duration) {
        let q = self.queues.get_mut(&batch.tp).expect("a requeued batch's partition has a queue");
        assert!(q.in_flight > 0, "requeued batch for {} was not in flight", batch.tp);
        batch.retry_at = Some(retry_at);
        q.in_flight -= 1;
        let at = q.batches.partition_point(|b| b.id < batch.id);
        q.batches.insert(at, batch);
    }

    /// How many of `tp`'s batches are in flight.
    pub fn in_flight(&self, tp: &TopicPartition) -> usize {
        self.queues.get(tp).map_or(0, |q| q.in_flight)
    }

    /// The in-flight batch of `tp` is finished (delivered or failed).
    pub fn done(&mut self, tp: &TopicPartition) {
        let q = self.queues.get_mut(tp).expect("a finished batch's partition has a queue");
        assert!(q.in_flight > 0, "finished batch for {tp} was not in flight");
        q.in_flight -= 1;
        if q.batches.is_empty() && q.in_flight == 0 {
            self.queues.remove(tp);
        }
    }

    /// Remove and return every queued (not in-flight) batch opened at or
    /// before `deadline`: their delivery timeout has passed.
    /// When the oldest queued batch was opened: the next one [`Self::expire`]
    /// can fail.
    pub fn oldest_created(&self) -> Option<Duration> {
        self.queues.values().filter_map(|q| q.batches.front().map(|b| b.created)).min()
    }

    pub fn expire(&mut self, deadline: Duration) -> Vec<ProducerBatch<C>> {
        let mut out = Vec::new();
        for q in self.queues.values_mut() {
            // Batches are in opening order, so expired ones are a prefix.
            while q.batches.front().is_some_and(|b| b.created <= deadline) {
                out.extend(q.batches.pop_front());
            }
        }
        self.queues.retain(|_, q| q.in_flight > 0 || !q.batches.is_empty());
        out
    }

    /// Every queued batch, in partition then creation order, for the
    /// idempotent producer to renumber or fail when its id is replaced.
    pub fn queued_mut(&mut self) -> impl Iterator<Item = &mut ProducerBatch<C>> {
        self.queues.values_mut().flat_map(|q| q.batches.iter_mut())
    }

    /// Remove and return the queued batches `pick` selects.
    pub fn take_queued(&mut self, pick: impl Fn(&ProducerBatch<C>) -> bool) -> Vec<ProducerBatch<C>> {
        let mut out = Vec::new();
        for q in self.queues.values_mut() {
            let (taken, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut q.batches).into_iter().partition(&pick);
            q.batches = kept;
            out.extend(taken);
        }
        self.queues.retain(|_, q| q.in_flight > 0 || !q.batches.is_empty());
        out
    }

    /// Nothing queued and nothing in flight.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: usize) -> OutRecord {
        OutRecord { key: None, value: Some(Bytes::from(vec![b'x'; n])), headers: vec![], timestamp: 0 }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn linger_then_ready() {
        let mut acc = Accumulator::new(16384, ms(5));
        assert!(acc.append(&tp(0), rec(10), 1, ms(100)));
        assert!(!acc.append(&tp(0), rec(10), 2, ms(101)));
        assert!(acc.ready(ms(104), false).is_empty());
        assert_eq!(acc.next_ready_time(ms(104)), Some(ms(105)));
        assert_eq!(acc.ready(ms(105), false), vec![tp(0)]);
        assert_eq!(acc.ready(ms(100), true), vec![tp(0)], "flush ignores linger");
        let b = acc.drain(&tp(0)).unwrap();
        assert_eq!(b.records.iter().map(|r| r.completion).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(b.attempts, 1);
        assert!(!acc.is_empty(), "in flight counts");
        acc.done(&tp(0));
        assert!(acc.is_empty());
    }

    #[test]
    fn full_batches_are_ready_at_once_and_split_at_batch_size() {
        let mut acc = Accumulator::new(200, ms(1000));
        let each = rec(40).size_estimate();
        let fit = (200 - BATCH_HEADER_BYTES) / each;
        for i in 0..fit {
            acc.append(&tp(0), rec(40), i, ms(0));
        }
        assert!(acc.ready(ms(0), false).is_empty(), "exactly full is not over");
        assert!(acc.append(&tp(0), rec(40), 99, ms(0)), "overflow opens a new batch");
        assert_eq!(acc.ready(ms(0), false), vec![tp(0)]);
        assert_eq!(acc.drain(&tp(0)).unwrap().records.len(), fit);
        // An oversized record gets a batch of its own.
        let mut acc = Accumulator::new(100, ms(0));
        acc.append(&tp(1), rec(500), 0, ms(0));
        assert_eq!(acc.drain(&tp(1)).unwrap().records.len(), 1);
    }

    #[test]
    fn in_flight_partition_is_muted_and_retry_goes_first() {
        let mut acc = Accumulator::new(16384, ms(0));
        acc.append(&tp(0), rec(1), "a", ms(0));
        let b = acc.drain(&tp(0)).unwrap();
        acc.append(&tp(0), rec(1), "b", ms(1));
        assert!(acc.ready(ms(10), true).is_empty(), "muted while in flight");
        acc.requeue(b, ms(50));
        assert!(acc.ready(ms(49), true).is_empty(), "backoff holds the head");
        assert_eq!(acc.next_ready_time(ms(49)), Some(ms(50)));
        let again = acc.drain(&tp(0)).unwrap();
        assert_eq!(again.records[0].completion, "a");
        assert_eq!(again.attempts, 2);
        acc.done(&tp(0));
        assert_eq!(acc.drain(&tp(0)).unwrap().records[0].completion, "b");
    }

    #[test]
    fn several_in_flight_and_retries_keep_creation_order() {
        let mut acc = Accumulator::with_max_in_flight(10, ms(0), 2);
        for i in 0..3 {
            acc.append(&tp(0), rec(50), i, ms(0));
        }
        let a = acc.drain(&tp(0)).unwrap();
        let b = acc.drain(&tp(0)).unwrap();
        assert!(acc.ready(ms(0), true).is_empty(), "two in flight is the limit");
        acc.requeue(b, ms(0));
        acc.requeue(a, ms(0));
        let order: Vec<usize> = (0..3)
            .map(|_| {
                let b = acc.drain(&tp(0)).unwrap();
                let c = b.records[0].completion;
                acc.done(&tp(0));
                c
            })
            .collect();
        assert_eq!(order, vec![0, 1, 2]);
        assert!(acc.is_empty());
    }

    #[test]
    fn sent_batches_take_no_new_records() {
        let mut acc = Accumulator::new(16384, ms(0));
        acc.append(&tp(0), rec(1), 1, ms(0));
        let b = acc.drain(&tp(0)).unwrap();
        acc.requeue(b, ms(5));
        assert!(acc.append(&tp(0), rec(1), 2, ms(1)), "a retried batch is closed");
        assert_eq!(acc.drain(&tp(0)).unwrap().records.len(), 1);
    }

    #[test]
    fn expire_takes_old_queued_batches_only() {
        let mut acc = Accumulator::new(10, ms(0));
        acc.append(&tp(0), rec(50), 1, ms(0));
        acc.append(&tp(0), rec(50), 2, ms(10));
        acc.append(&tp(1), rec(50), 3, ms(0));
        let _in_flight = acc.drain(&tp(1)).unwrap();
        let expired = acc.expire(ms(5));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].records[0].completion, 1);
        assert_eq!(acc.ready(ms(10), false), vec![tp(0)]);
        acc.done(&tp(1));
    }
}
