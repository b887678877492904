//! Model-based test of the partition log on the simulated disk: random
//! appends, reads, flushes, truncations, disk errors, crashes (unsynced bytes
//! dropped, last writes torn) and reopens, checked against an in-memory list
//! of the batches written. Nothing fsynced may ever be lost, every read
//! returns exactly what was written at those offsets (leader epoch stamps
//! included), and the leader-epoch cache always matches the batches.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use faultline_broker::client::batch::{encode_v2, OutRecord, ProducerFields};
use faultline_broker::config::{LogConfig, PlantedBugs};
use faultline_broker::io::Fs;
use faultline_broker::record_batch::{
    set_base_offset, set_partition_leader_epoch, BatchHeader, Batches, ValidatedBatches,
};
use faultline_broker::storage::{PartitionLog, StorageError};
use faultline_sim::disk::{DiskEvent, DiskFaults, FaultKind, SimDisk};
use kafka_protocol::records::Compression;
use proptest::prelude::*;

/// A producer batch: `records` records whose values are `pad` bytes long.
#[derive(Debug, Clone)]
struct BatchSpec {
    records: u8,
    pad: u16,
    gzip: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<BatchSpec>),
    Read {
        at: u16,
        max_bytes: u16,
        below_hw: bool,
    },
    Flush,
    MaybeFlush,
    Truncate {
        at: u16,
    },
    /// The next append's write fails with EIO.
    AppendWriteError(BatchSpec),
    /// The next fsyncs fail with EIO, and reads come back corrupted at times.
    AppendSyncError(BatchSpec),
    /// With `torn`, the last unsynced writes are torn, half the time by
    /// holes that keep the file length.
    Crash {
        torn: bool,
    },
    Reopen,
    /// Later appends come from a leader of a newer epoch.
    NewLeaderEpoch,
    /// Reopen while the next `n` reads of every file come back with a bit
    /// flipped in transit: recovery reads a bad batch again, up to three
    /// times, rather than cut, so up to two flips per file cost nothing.
    ReopenWithFlakyReads {
        n: u32,
    },
}

fn batch_spec() -> impl Strategy<Value = BatchSpec> {
    (1u8..6, 0u16..300, prop::bool::weighted(0.2)).prop_map(|(records, pad, gzip)| BatchSpec { records, pad, gzip })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec(batch_spec(), 1..4).prop_map(Op::Append),
        4 => (any::<u16>(), 1u16..2000, any::<bool>()).prop_map(|(at, max_bytes, below_hw)| Op::Read { at, max_bytes, below_hw }),
        1 => Just(Op::Flush),
        1 => Just(Op::MaybeFlush),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => batch_spec().prop_map(Op::AppendWriteError),
        1 => batch_spec().prop_map(Op::AppendSyncError),
        2 => any::<bool>().prop_map(|torn| Op::Crash { torn }),
        1 => Just(Op::Reopen),
        1 => Just(Op::NewLeaderEpoch),
        1 => (1u32..3).prop_map(|n| Op::ReopenWithFlakyReads { n }),
    ]
}

/// Encode one producer batch with values unique to `tag`.
fn encode(spec: &BatchSpec, tag: u64) -> Vec<u8> {
    let records: Vec<OutRecord> = (0..spec.records as i64)
        .map(|i| OutRecord {
            key: None,
            value: Some(Bytes::from(format!("{tag}-{i}-{}", "x".repeat(spec.pad as usize)))),
            headers: vec![],
            timestamp: 1_000 + tag as i64,
        })
        .collect();
    let compression = if spec.gzip { Compression::Gzip } else { Compression::None };
    // Sequence numbers from 0 with no producer id, as this model has always written.
    let producer = ProducerFields { id: -1, epoch: -1, base_sequence: 0 };
    encode_v2(&records, producer, compression).unwrap().to_vec()
}

/// The log as it should be: every batch appended, with its offsets.
#[derive(Default)]
struct Model {
    /// (base offset, next offset, stored bytes)
    batches: Vec<(i64, i64, Vec<u8>)>,
    /// Offset below which the log promised durability.
    durable: i64,
}

impl Model {
    fn end(&self) -> i64 {
        self.batches.last().map_or(0, |b| b.1)
    }

    /// The leader epochs the batches carry, as the epoch cache must hold them.
    fn epochs(&self) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = Vec::new();
        for (base, _, bytes) in &self.batches {
            let epoch = BatchHeader::parse(bytes).unwrap().partition_leader_epoch;
            if out.last().is_none_or(|&(e, _)| e < epoch) {
                out.push((epoch, *base));
            }
        }
        out
    }

    /// Store producer batches as the log should: at the end, offsets assigned,
    /// stamped with the leader's epoch.
    fn append(&mut self, input: &[u8], epoch: i32) {
        for item in Batches::new(input, true) {
            let (_, h, bytes) = item.unwrap();
            let base = self.end();
            let mut stored = bytes.to_vec();
            set_base_offset(&mut stored, base);
            set_partition_leader_epoch(&mut stored, epoch);
            self.batches.push((base, base + h.record_count as i64, stored));
        }
    }

    /// Index of the batch holding `offset`.
    fn holding(&self, offset: i64) -> usize {
        self.batches.partition_point(|b| b.1 <= offset)
    }

    /// What a read must return, by the rules of `PartitionLog::read`.
    fn expected_read(&self, offset: i64, max_bytes: usize, max_offset: i64) -> Vec<u8> {
        let mut out = Vec::new();
        for (_, next, bytes) in &self.batches[self.holding(offset)..] {
            if *next > max_offset || (!out.is_empty() && out.len() + bytes.len() > max_bytes) {
                break;
            }
            out.extend_from_slice(bytes);
        }
        out
    }

    fn truncate(&mut self, offset: i64) {
        let keep = self.holding(offset);
        self.batches.truncate(keep);
        self.durable = self.durable.min(self.end());
    }
}

struct Harness {
    disk: SimDisk,
    dir: PathBuf,
    config: LogConfig,
    log: Option<PartitionLog>,
    model: Model,
    tag: u64,
    leader_epoch: i32,
}

impl Harness {
    fn new(seed: u64, flush_messages: u64) -> Self {
        let config =
            LogConfig { segment_bytes: 700, index_interval_bytes: 200, flush_messages, ..LogConfig::default() };
        Self::with_config(seed, config)
    }

    fn with_config(seed: u64, config: LogConfig) -> Self {
        let mut h = Harness {
            disk: SimDisk::perfect(seed),
            dir: PathBuf::from("data/topic-0"),
            config,
            log: None,
            model: Model::default(),
            tag: 0,
            leader_epoch: 0,
        };
        h.reopen();
        h
    }

    fn log(&mut self) -> &mut PartitionLog {
        self.log.as_mut().expect("log is open")
    }

    fn reopen(&mut self) {
        self.log = None;
        let (log, report) = PartitionLog::open(
            Arc::new(self.disk.clone()),
            self.dir.clone(),
            self.config.clone(),
            PlantedBugs::default(),
            0,
        )
        .unwrap();
        let end = log.log_end_offset();
        assert!(end >= self.model.durable, "recovery lost durable data: end {end} < durable {}", self.model.durable);
        assert!(end <= self.model.end(), "recovery invented data: end {end} > written {}", self.model.end());
        assert_eq!(report.log_end_offset, end);
        self.model.truncate(end);
        assert_eq!(self.model.end(), end, "recovered end {end} is not a batch boundary");
        self.log = Some(log);
        self.check_all();
        self.model.durable = self.log().durable_offset();
    }

    fn next_batches(&mut self, specs: &[BatchSpec]) -> Vec<u8> {
        let mut input = Vec::new();
        for spec in specs {
            self.tag += 1;
            input.extend(encode(spec, self.tag));
        }
        input
    }

    /// Append; the model follows only if the log says it worked.
    fn append(&mut self, input: &[u8]) -> Result<(), StorageError> {
        let end = self.model.end();
        let batches = ValidatedBatches::new(Bytes::copy_from_slice(input)).unwrap();
        let epoch = self.leader_epoch;
        match self.log().append_as_leader(&batches, 0, epoch) {
            Ok(info) => {
                assert_eq!(info.base_offset, end);
                self.model.append(input, epoch);
                assert_eq!(info.last_offset + 1, self.model.end());
                Ok(())
            }
            Err(e) => {
                assert_eq!(self.log().log_end_offset(), end, "a failed append changed the log end");
                Err(e)
            }
        }
    }

    /// Everything the log holds equals the model, and the bookkeeping agrees.
    fn check_all(&mut self) {
        let log = self.log.as_ref().unwrap();
        assert_eq!(log.log_end_offset(), self.model.end());
        assert!(log.durable_offset() <= log.log_end_offset());
        let mut offset = log.log_start_offset();
        let mut got = Vec::new();
        while offset < log.log_end_offset() {
            let r = log.read(offset, 1 << 16, i64::MAX).unwrap();
            let last = Batches::new(&r.records, true).last().expect("a read below the end returns a batch").unwrap().1;
            offset = last.next_offset();
            got.extend_from_slice(&r.records);
        }
        let want: Vec<u8> = self.model.batches.iter().flat_map(|b| b.2.iter().copied()).collect();
        assert!(got == want, "log content differs from what was written");
        let epochs: Vec<(i32, i64)> = log.leader_epochs().iter().map(|e| (e.epoch, e.start_offset)).collect();
        assert_eq!(epochs, self.model.epochs(), "the leader-epoch cache differs from the batches");
        if let Some(&(latest, _)) = epochs.last() {
            assert_eq!(log.end_offset_for_epoch(latest), (latest, log.log_end_offset()));
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(specs) => {
                let input = self.next_batches(specs);
                self.append(&input).unwrap();
            }
            Op::Read { at, max_bytes, below_hw } => {
                let end = self.model.end();
                let offset = *at as i64 % (end + 1);
                let max_offset = if *below_hw { self.log().durable_offset() } else { i64::MAX };
                let r = self.log().read(offset, *max_bytes as usize, max_offset).unwrap();
                assert_eq!(r.log_end_offset, end);
                let want = self.model.expected_read(offset, *max_bytes as usize, max_offset.min(end));
                assert!(r.records[..] == want[..], "read({offset}, {max_bytes}, {max_offset}) differs");
                if let Some(Ok((_, first, _))) = Batches::new(&r.records, true).next() {
                    let h: BatchHeader = first;
                    assert!(h.base_offset <= offset && offset <= h.last_offset());
                }
                assert!(matches!(self.log().read(end + 1, 100, i64::MAX), Err(StorageError::OffsetOutOfRange { .. })));
            }
            Op::Flush => {
                self.log().flush().unwrap();
                assert_eq!(self.log().durable_offset(), self.model.end());
            }
            Op::MaybeFlush => {
                self.log().maybe_flush(i64::MAX).unwrap();
                assert_eq!(self.log().durable_offset(), self.model.end());
            }
            Op::Truncate { at } => {
                let offset = *at as i64 % (self.model.end() + 1);
                self.log().truncate_to(offset).unwrap();
                self.model.truncate(offset);
                assert_eq!(self.log().durable_offset(), self.model.end());
                self.check_all();
            }
            Op::AppendWriteError(spec) => {
                let input = self.next_batches(std::slice::from_ref(spec));
                self.disk.set_faults(DiskFaults { write_error: 1.0, ..DiskFaults::default() });
                let r = self.append(&input);
                self.disk.set_faults(DiskFaults::default());
                assert!(matches!(r, Err(StorageError::Io(_))), "{r:?}");
                self.check_all();
            }
            Op::AppendSyncError(spec) => {
                let input = self.next_batches(std::slice::from_ref(spec));
                self.disk.set_faults(DiskFaults { sync_error: 1.0, read_corruption: 0.5, ..DiskFaults::default() });
                // Fails only if the flush policy flushes on this append.
                let _ = self.append(&input);
                self.disk.set_faults(DiskFaults::default());
                self.check_all();
            }
            Op::Crash { torn } => {
                let torn_write = if *torn { 1.0 } else { 0.0 };
                self.disk.set_faults(DiskFaults { torn_write, torn_write_holes: 0.5, ..DiskFaults::default() });
                self.disk.crash();
                self.disk.set_faults(DiskFaults::default());
                self.reopen();
            }
            Op::NewLeaderEpoch => {
                self.leader_epoch += 1;
            }
            Op::Reopen => {
                let end = self.model.end();
                self.reopen();
                assert_eq!(self.model.end(), end, "a reopen without a crash lost data");
            }
            Op::ReopenWithFlakyReads { n } => {
                let end = self.model.end();
                self.log().flush().unwrap();
                self.log = None;
                for path in self.disk.list_dir(&self.dir).unwrap() {
                    self.disk.corrupt_next_reads(&path, *n);
                }
                let opened = PartitionLog::open(
                    Arc::new(self.disk.clone()),
                    self.dir.clone(),
                    self.config.clone(),
                    PlantedBugs::default(),
                    0,
                );
                // Disarm what recovery did not use, so later reads are clean.
                for path in self.disk.list_dir(&self.dir).unwrap() {
                    self.disk.corrupt_next_reads(&path, 0);
                }
                self.log = Some(opened.unwrap().0);
                assert_eq!(self.log().log_end_offset(), end, "transient read faults at recovery lost data");
                self.model.durable = end;
                self.check_all();
            }
        }
        let durable = self.log().durable_offset();
        assert!(durable >= self.model.durable.min(self.model.end()), "the durable offset went backwards");
        self.model.durable = durable;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model_under_crashes_and_disk_errors(
        seed in any::<u64>(),
        flush_messages in 1u64..6,
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let mut h = Harness::new(seed, flush_messages);
        for op in &ops {
            h.apply(op);
        }
        h.log().flush().unwrap();
        h.disk.crash();
        h.reopen();
    }
}

#[test]
fn a_full_disk_rejects_appends_and_keeps_the_log_intact() {
    let mut h = Harness::new(1, 1);
    let input = h.next_batches(&[BatchSpec { records: 3, pad: 50, gzip: false }]);
    h.append(&input).unwrap();
    let used = h.disk.used_bytes();
    h.disk.set_faults(DiskFaults { capacity_bytes: used + 10, ..DiskFaults::default() });
    let input = h.next_batches(&[BatchSpec { records: 3, pad: 50, gzip: false }]);
    let err = h.append(&input).unwrap_err();
    let StorageError::Io(e) = err else { panic!("expected an I/O error") };
    assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
    h.check_all();
    h.disk.set_faults(DiskFaults::default());
    h.append(&input).unwrap();
    h.disk.crash();
    h.reopen();
    assert_eq!(h.model.batches.len(), 2);
}

#[test]
fn unflushed_appends_are_lost_on_crash_and_flushed_ones_kept() {
    let mut h = Harness::new(2, 1_000);
    let first = h.next_batches(&[BatchSpec { records: 2, pad: 10, gzip: false }]);
    h.append(&first).unwrap();
    h.log().flush().unwrap();
    let second = h.next_batches(&[BatchSpec { records: 2, pad: 10, gzip: false }]);
    h.append(&second).unwrap();
    assert_eq!((h.log().log_end_offset(), h.log().durable_offset()), (4, 2));
    h.disk.crash();
    h.reopen();
    assert_eq!(h.log().log_end_offset(), 2);
}

/// Default segment and index sizes: one segment, no index entry for the
/// first 4 KiB, so reads and scans start at the segment's first byte.
fn one_segment(flush_messages: u64) -> LogConfig {
    LogConfig { flush_messages, ..LogConfig::default() }
}

fn first_segment(h: &Harness) -> PathBuf {
    h.dir.join(format!("{:020}.log", 0))
}

fn count_faults(events: &[DiskEvent], kind: FaultKind) -> usize {
    events.iter().filter(|e| matches!(e, DiskEvent::Fault { kind: k, .. } if *k == kind)).count()
}

/// An fsync fails while every read returns a flipped bit: the rollback of
/// the failed append must not read, so it cannot be misled into cutting
/// acknowledged batches or handing their offsets out again.
#[test]
fn a_failed_fsync_rolls_back_exactly_the_failed_append_whatever_reads_return() {
    let mut h = Harness::with_config(3, one_segment(1));
    for _ in 0..8 {
        let input = h.next_batches(&[BatchSpec { records: 3, pad: 40, gzip: false }]);
        h.append(&input).unwrap();
    }
    let acked = h.model.end();
    assert_eq!(h.log().durable_offset(), acked);
    let size = h.log().size_bytes();
    h.disk.drain_events();
    h.disk.set_faults(DiskFaults { sync_error: 1.0, read_corruption: 1.0, ..DiskFaults::default() });
    let input = h.next_batches(&[BatchSpec { records: 2, pad: 30, gzip: false }]);
    let err = h.append(&input).unwrap_err();
    assert!(matches!(err, StorageError::Io(_)), "{err:?}");
    let events = h.disk.drain_events();
    h.disk.set_faults(DiskFaults::default());
    assert!(count_faults(&events, FaultKind::SyncError) >= 1);
    assert_eq!(count_faults(&events, FaultKind::ReadCorruption), 0, "the rollback read the log: {events:?}");
    assert_eq!((h.log().log_end_offset(), h.log().durable_offset()), (acked, acked));
    assert_eq!(h.log().size_bytes(), size);
    assert_eq!(h.disk.contents(&first_segment(&h)).unwrap().len() as u64, size, "the file is cut back exactly");
    h.check_all();
    // The offsets of the failed append are free again, and nothing acknowledged moved.
    let input = h.next_batches(&[BatchSpec { records: 2, pad: 30, gzip: false }]);
    h.append(&input).unwrap();
    h.disk.crash();
    h.reopen();
    assert_eq!(h.model.batches.len(), 9);
}

/// A write fault, then an fsync fault, on a log whose segment has index
/// entries: each rollback restores the indexes too, so reads by offset still
/// land on batch boundaries and a reopen trusts nothing stale.
#[test]
fn rollbacks_restore_indexes_and_a_later_reopen_agrees() {
    let mut h = Harness::with_config(4, LogConfig { index_interval_bytes: 150, ..one_segment(1) });
    for _ in 0..6 {
        let input = h.next_batches(&[BatchSpec { records: 2, pad: 60, gzip: false }]);
        h.append(&input).unwrap();
    }
    for faults in [
        DiskFaults { write_error: 1.0, ..DiskFaults::default() },
        DiskFaults { sync_error: 1.0, ..DiskFaults::default() },
    ] {
        h.disk.set_faults(faults);
        let input = h.next_batches(&[BatchSpec { records: 4, pad: 200, gzip: false }]);
        assert!(h.append(&input).is_err());
        h.disk.set_faults(DiskFaults::default());
        h.check_all();
        for at in 0..h.model.end() {
            h.apply(&Op::Read { at: at as u16, max_bytes: 1, below_hw: false });
        }
    }
    for _ in 0..4 {
        let input = h.next_batches(&[BatchSpec { records: 2, pad: 60, gzip: false }]);
        h.append(&input).unwrap();
    }
    h.apply(&Op::Reopen);
    h.apply(&Op::Crash { torn: false });
    assert_eq!(h.model.batches.len(), 10);
}

/// Truncation locates its cut by reading; a transient bit flip while it does
/// must make it retry or refuse, never cut elsewhere.
#[test]
fn truncation_under_transient_read_corruption_cuts_exactly_where_asked_or_not_at_all() {
    let mut h = Harness::with_config(5, LogConfig { index_interval_bytes: 300, ..one_segment(1) });
    for _ in 0..10 {
        let input = h.next_batches(&[BatchSpec { records: 3, pad: 50, gzip: false }]);
        h.append(&input).unwrap();
    }
    let path = first_segment(&h);
    // Two flips: the walk re-reads and gets through.
    h.disk.corrupt_next_reads(&path, 2);
    h.log().truncate_to(20).unwrap();
    h.model.truncate(20);
    h.check_all();
    // Every read flipped: the walk gives up and the log is unchanged.
    h.disk.set_faults(DiskFaults { read_corruption: 1.0, ..DiskFaults::default() });
    let before = (h.log().log_end_offset(), h.log().size_bytes());
    assert!(h.log().truncate_to(10).is_err());
    h.disk.set_faults(DiskFaults::default());
    assert_eq!((h.log().log_end_offset(), h.log().size_bytes()), before);
    h.check_all();
    h.apply(&Op::Crash { torn: false });
    assert_eq!(h.model.end(), 18, "offset 20 sits in the batch 18..21, which goes whole");
}

/// Recovery reads a durable batch whose bytes arrive with a flipped bit: it
/// reads it again rather than cutting acknowledged data.
#[test]
fn recovery_rereads_a_batch_that_a_transient_fault_corrupted() {
    let mut h = Harness::with_config(6, one_segment(1));
    for _ in 0..8 {
        let input = h.next_batches(&[BatchSpec { records: 3, pad: 80, gzip: false }]);
        h.append(&input).unwrap();
    }
    let path = first_segment(&h);
    h.disk.crash();
    h.disk.drain_events();
    h.disk.corrupt_next_reads(&path, 2);
    // `reopen` asserts that nothing durable was lost.
    h.reopen();
    assert_eq!(count_faults(&h.disk.drain_events(), FaultKind::ReadCorruption), 2);
    assert_eq!(h.model.batches.len(), 8);
}

/// The same batch rotten on the medium fails every re-read: recovery cuts it,
/// as Kafka would.
#[test]
fn recovery_still_cuts_a_batch_rotten_on_the_medium() {
    let mut h = Harness::with_config(7, one_segment(1));
    for _ in 0..4 {
        let input = h.next_batches(&[BatchSpec { records: 3, pad: 80, gzip: false }]);
        h.append(&input).unwrap();
    }
    let path = first_segment(&h);
    let len = h.disk.contents(&path).unwrap().len() as u64;
    h.log = None;
    assert!(h.disk.flip_bit(&path, len - 5, 3));
    let (log, report) =
        PartitionLog::open(Arc::new(h.disk.clone()), h.dir.clone(), h.config.clone(), PlantedBugs::default(), 0)
            .unwrap();
    assert_eq!(report.log_end_offset, 9);
    assert_eq!(report.truncated_bytes, h.model.batches[3].2.len() as u64);
    assert_eq!(log.log_end_offset(), 9);
}

/// Crash while a large append is unsynced, with a tear that keeps the file's
/// length but loses blocks inside the batch: only the CRC can tell.
fn crash_with_holes(bugs: PlantedBugs) -> (Harness, PartitionLog, faultline_broker::storage::RecoveryReport) {
    // A small first batch, so the big one's header sits in its write's first
    // block. A holed tear may lose that block too; take the first disk seed
    // whose tear keeps it, so the header looks right and only the CRC can
    // tell.
    let (h, _path, written, after) = (8..)
        .map(|seed| {
            let mut h = Harness::with_config(seed, one_segment(1_000));
            let input = h.next_batches(&[BatchSpec { records: 1, pad: 10, gzip: false }]);
            h.append(&input).unwrap();
            h.log().flush().unwrap();
            let input = h.next_batches(&[BatchSpec { records: 4, pad: 400, gzip: false }]);
            h.append(&input).unwrap();
            let path = first_segment(&h);
            let written = h.disk.contents(&path).unwrap();
            h.log = None;
            h.disk.set_faults(DiskFaults { torn_write: 1.0, torn_write_holes: 1.0, ..DiskFaults::default() });
            h.disk.crash();
            h.disk.set_faults(DiskFaults::default());
            let after = h.disk.contents(&path).unwrap();
            (h, path, written, after)
        })
        .find(|(_, _, written, after)| after.len() >= 512 && after[..512] == written[..512])
        .expect("some seed keeps the first block");
    assert_eq!(after.len(), written.len(), "a holed tear keeps the length");
    assert_ne!(after, written, "and loses blocks");
    let events = h.disk.drain_events();
    assert!(matches!(events.last(), Some(DiskEvent::Crash { holed: 1, .. })), "{events:?}");
    let (log, report) = PartitionLog::open(Arc::new(h.disk.clone()), h.dir.clone(), h.config.clone(), bugs, 0).unwrap();
    (h, log, report)
}

#[test]
fn recovery_cuts_a_batch_with_holes_by_its_crc() {
    let (h, log, report) = crash_with_holes(PlantedBugs::default());
    assert_eq!(report.log_end_offset, 1);
    assert_eq!(report.truncated_bytes, h.model.batches[1].2.len() as u64);
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn planted_skip_crc_on_recovery_lets_a_batch_with_holes_survive() {
    let bugs = PlantedBugs { skip_crc_on_recovery: true, ..PlantedBugs::default() };
    let (h, log, report) = crash_with_holes(bugs);
    assert_eq!((report.log_end_offset, report.truncated_bytes), (5, 0));
    let served = log.read(1, 1 << 16, i64::MAX).unwrap().records;
    assert_eq!(served.len(), h.model.batches[1].2.len());
    assert_ne!(&served[..], &h.model.batches[1].2[..], "the zeroed blocks are served as data");
}
