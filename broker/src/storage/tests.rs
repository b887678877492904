//! Partition log tests on real files: appends, reads, rolls, flush policy,
//! truncation, and recovery from torn, corrupt or missing data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::Compression;

use super::{AppendInfo, PartitionLog, RecoveryReport, StorageError};
use crate::config::{LogConfig, PlantedBugs};
use crate::io::real::RealFs;
use crate::io::{Fs, OpenOptions};
use crate::record_batch::tests::encode_at;
use crate::record_batch::{BatchHeader, Batches, ValidatedBatches};

/// Producer bytes as the server hands them over: validated once, then
/// appended by a leader in epoch 0.
trait AppendBytes {
    fn append(&mut self, bytes: &[u8], now_ms: i64) -> Result<AppendInfo, StorageError>;
}

impl AppendBytes for PartitionLog {
    fn append(&mut self, bytes: &[u8], now_ms: i64) -> Result<AppendInfo, StorageError> {
        let batches = ValidatedBatches::new(Bytes::copy_from_slice(bytes))?;
        self.append_as_leader(&batches, now_ms, 0)
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    fs: Arc<dyn Fs>,
    dir: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("topic-0");
    Fixture { _tmp: tmp, fs: Arc::new(RealFs), dir }
}

fn small_config() -> LogConfig {
    LogConfig { segment_bytes: 1024, index_interval_bytes: 256, ..LogConfig::default() }
}

impl Fixture {
    fn open_with(&self, config: LogConfig, bugs: PlantedBugs) -> (PartitionLog, RecoveryReport) {
        PartitionLog::open(self.fs.clone(), self.dir.clone(), config, bugs, 0).unwrap()
    }
    fn open(&self) -> (PartitionLog, RecoveryReport) {
        self.open_with(small_config(), PlantedBugs::default())
    }
    fn segment(&self, base: i64, suffix: &str) -> PathBuf {
        self.dir.join(format!("{base:020}.{suffix}"))
    }
    fn file_len(&self, path: &Path) -> u64 {
        self.fs.open(path, OpenOptions::EXISTING).unwrap().len().unwrap()
    }
    fn flip_byte(&self, path: &Path, pos: u64) {
        let mut f = self.fs.open(path, OpenOptions::EXISTING).unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, pos).unwrap();
        f.write_at(&[b[0] ^ 0x5a], pos).unwrap();
    }
    fn set_len(&self, path: &Path, len: u64) {
        self.fs.open(path, OpenOptions::EXISTING).unwrap().set_len(len).unwrap();
    }
}

/// Append `n` batches of `records` records each; returns the stored bytes of each.
fn fill(log: &mut PartitionLog, n: usize, records: i64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let info = log.append(&encode_at(records, 10_000 + i as i64 * 10, Compression::None), 0).unwrap();
            let r = log.read(info.base_offset, 1, i64::MAX).unwrap();
            r.records.to_vec()
        })
        .collect()
}

fn headers(bytes: &[u8]) -> Vec<BatchHeader> {
    Batches::new(bytes, true).map(|r| r.unwrap().1).collect()
}

fn read_all(log: &PartitionLog) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 1 << 20, i64::MAX).unwrap();
        let hs = headers(&r.records);
        offset = hs.last().unwrap().next_offset();
        out.extend_from_slice(&r.records);
    }
    out
}

#[test]
fn append_assigns_offsets_and_reads_return_whole_batches() {
    let f = fixture();
    let (mut log, report) = f.open();
    assert_eq!(report.log_end_offset, 0);
    let a = log.append(&encode_at(3, 1, Compression::None), 0).unwrap();
    assert_eq!((a.base_offset, a.last_offset, a.record_count, a.log_append_time), (0, 2, 3, -1));
    let mut two = encode_at(2, 5, Compression::Gzip);
    two.extend(encode_at(4, 9, Compression::None));
    let b = log.append(&two, 0).unwrap();
    assert_eq!((b.base_offset, b.last_offset, b.record_count), (3, 8, 6));
    assert_eq!((log.log_end_offset(), log.durable_offset()), (9, 9));

    // An offset inside a batch returns that whole batch; at least one batch
    // even when it exceeds max_bytes.
    let r = log.read(4, 1, i64::MAX).unwrap();
    let hs = headers(&r.records);
    assert_eq!(hs.len(), 1);
    assert_eq!((hs[0].base_offset, hs[0].last_offset()), (3, 4));
    assert_eq!(r.log_end_offset, 9);
    // Enough bytes for everything.
    let all = log.read(0, 1 << 20, i64::MAX).unwrap();
    assert_eq!(headers(&all.records).iter().map(|h| h.base_offset).collect::<Vec<_>>(), vec![0, 3, 5]);
    // A batch is visible only if its last offset is below max_offset.
    let r = log.read(0, 1 << 20, 5).unwrap();
    assert_eq!(headers(&r.records).len(), 2);
    assert!(log.read(5, 1 << 20, 8).unwrap().records.is_empty());
    // The log end is empty; beyond it or before the start is out of range.
    assert!(log.read(9, 1 << 20, i64::MAX).unwrap().records.is_empty());
    assert!(matches!(
        log.read(10, 100, i64::MAX),
        Err(StorageError::OffsetOutOfRange { offset: 10, start: 0, end: 9 })
    ));
    assert!(matches!(log.read(-1, 100, i64::MAX), Err(StorageError::OffsetOutOfRange { .. })));
}

#[test]
fn bad_batches_are_rejected_and_leave_the_log_unchanged() {
    let f = fixture();
    let (mut log, _) = f.open();
    log.append(&encode_at(2, 1, Compression::None), 0).unwrap();
    let mut bad = encode_at(2, 1, Compression::None);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let mut mixed = encode_at(1, 1, Compression::None);
    mixed.extend(&bad);
    assert!(matches!(log.append(&mixed, 0), Err(StorageError::CorruptMessage(_))));
    assert!(matches!(log.append(&[1, 2, 3], 0), Err(StorageError::CorruptMessage(_))));
    assert!(matches!(log.append(&[], 0), Err(StorageError::CorruptMessage(_))));
    let g = fixture();
    let (mut small, _) = g.open_with(LogConfig { max_message_bytes: 100, ..small_config() }, PlantedBugs::default());
    assert!(matches!(
        small.append(&encode_at(20, 1, Compression::None), 0),
        Err(StorageError::MessageTooLarge { max: 100, .. })
    ));
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.size_bytes(), f.file_len(&f.segment(0, "log")));
}

#[test]
fn rolls_segments_by_size_and_age_and_reads_across_them() {
    let f = fixture();
    let (mut log, _) = f.open();
    let stored = fill(&mut log, 40, 5);
    let bases = log.segment_base_offsets();
    assert!(bases.len() > 3, "{bases:?}");
    for &b in &bases {
        assert!(f.fs.exists(&f.segment(b, "log")) && f.fs.exists(&f.segment(b, "index")));
        assert!(f.file_len(&f.segment(b, "log")) <= 1024);
    }
    assert_eq!(read_all(&log), stored.concat());
    // Every batch is found from any of its offsets.
    for (i, batch) in stored.iter().enumerate() {
        for offset in [i as i64 * 5, i as i64 * 5 + 4] {
            assert_eq!(&log.read(offset, 1, i64::MAX).unwrap().records[..], &batch[..]);
        }
    }
    // segment.ms, measured from the active segment's first batch timestamp.
    let n = log.segment_base_offsets().len();
    log.maybe_roll(10_400).unwrap();
    assert_eq!(log.segment_base_offsets().len(), n);
    log.maybe_roll(i64::MAX).unwrap();
    assert_eq!(log.segment_base_offsets().len(), n + 1);
    // A clean reopen finds the same log.
    drop(log);
    let (log, report) = f.open();
    assert_eq!((report.truncated_bytes, report.indexes_rebuilt), (0, 0));
    assert!(report.segments_scanned <= 2, "{report:?}");
    assert_eq!(read_all(&log), stored.concat());
}

#[test]
fn flush_policy_holds_back_the_durable_offset() {
    let f = fixture();
    let config = LogConfig { flush_messages: 10, flush_ms: 1000, ..small_config() };
    let (mut log, _) = f.open_with(config, PlantedBugs::default());
    log.append(&encode_at(4, 1, Compression::None), 100).unwrap();
    assert_eq!((log.log_end_offset(), log.durable_offset()), (4, 0));
    assert!(log.read(0, 1 << 20, log.durable_offset()).unwrap().records.is_empty());
    assert!(!log.maybe_flush(500).unwrap());
    assert!(log.maybe_flush(1100).unwrap());
    assert_eq!(log.durable_offset(), 4);
    log.append(&encode_at(6, 1, Compression::None), 2000).unwrap();
    log.append(&encode_at(1, 1, Compression::None), 2000).unwrap();
    assert_eq!(log.durable_offset(), 4);
    log.append(&encode_at(3, 1, Compression::None), 2000).unwrap();
    assert_eq!(log.durable_offset(), 14, "ten unflushed records trigger a flush");
    // The wall clock steps back past the first unflushed append: flush now,
    // rather than hold acknowledgements until the clock catches up.
    log.append(&encode_at(1, 1, Compression::None), 5000).unwrap();
    assert!(!log.maybe_flush(5500).unwrap());
    assert!(log.maybe_flush(4000).unwrap());
    assert_eq!(log.durable_offset(), 15);
}

#[test]
fn log_append_time_stamps_batches() {
    let f = fixture();
    let config = LogConfig { message_timestamp_type: "LogAppendTime".into(), ..small_config() };
    let (mut log, _) = f.open_with(config, PlantedBugs::default());
    let info = log.append(&encode_at(3, 1, Compression::Snappy), 777).unwrap();
    assert_eq!(info.log_append_time, 777);
    let h = headers(&log.read(0, 1, i64::MAX).unwrap().records)[0];
    assert!(h.is_log_append_time());
    assert_eq!(h.max_timestamp, 777);
    let bad = LogConfig { message_timestamp_type: "Whenever".into(), ..small_config() };
    assert!(PartitionLog::open(f.fs.clone(), f.dir.clone(), bad, PlantedBugs::default(), 0).is_err());
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let f = fixture();
    let (mut log, _) = f.open();
    // Batch i holds records timestamped 10_000 + 10 i .. + 4, offsets 5 i ..
    fill(&mut log, 40, 5);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 10_000)));
    assert_eq!(log.offset_for_timestamp(10_002).unwrap(), Some((2, 10_002)));
    assert_eq!(log.offset_for_timestamp(10_005).unwrap(), Some((5, 10_010)));
    assert_eq!(log.offset_for_timestamp(10_333).unwrap(), Some((33 * 5 + 3, 10_333)));
    assert_eq!(log.offset_for_timestamp(10_394).unwrap(), Some((199, 10_394)));
    assert_eq!(log.offset_for_timestamp(10_395).unwrap(), None);
}

#[test]
fn offset_for_timestamp_never_decompresses_past_the_limit() {
    use crate::client::batch::{encode_v2, OutRecord, ProducerFields};
    let f = fixture();
    // The limit is max.message.bytes here (1 MiB): the setting itself is lower.
    let config = LogConfig { max_decompressed_batch_bytes: 1, segment_bytes: 1 << 20, ..small_config() };
    let limit = config.decompressed_batch_limit();
    assert_eq!(limit, config.max_message_bytes);
    let (mut log, _) = f.open_with(config.clone(), PlantedBugs::default());
    // A small gzip batch, then a bomb: its second record's value is 4 MiB of
    // zeros, a few KiB compressed.
    log.append(&encode_at(5, 1_000, Compression::Gzip), 0).unwrap();
    let rec = |ts: i64, len: usize| OutRecord {
        key: None,
        value: Some(Bytes::from(vec![0u8; len])),
        headers: vec![],
        timestamp: ts,
    };
    let first = ProducerFields { id: -1, epoch: -1, base_sequence: 0 };
    let bomb = encode_v2(&[rec(2_000, 10), rec(2_001, 4 << 20), rec(2_002, 10)], first, Compression::Gzip).unwrap();
    assert!(bomb.len() < 64 << 10);
    log.append(&bomb, 0).unwrap();
    for reopened in [false, true] {
        // Inside a normal compressed batch: the records are looked at.
        assert_eq!(log.offset_for_timestamp(1_003).unwrap(), Some((3, 1_003)), "reopened {reopened}");
        // The header answers: the bomb's first record carries its base timestamp.
        assert_eq!(log.offset_for_timestamp(2_000).unwrap(), Some((5, 2_000)));
        // Inside the bomb: answered from the header at its base offset, without
        // expanding past the limit.
        assert_eq!(log.offset_for_timestamp(2_002).unwrap(), Some((5, 2_002)));
        assert_eq!(log.offset_for_timestamp(2_003).unwrap(), None);
        drop(log);
        log = f.open_with(config.clone(), PlantedBugs::default()).0;
    }
}

#[test]
fn truncate_to_removes_batches_and_later_segments() {
    let f = fixture();
    let (mut log, _) = f.open();
    let stored = fill(&mut log, 40, 5);
    let before = log.segment_base_offsets();
    // Offset 52 is inside batch 10 (offsets 50..54): the whole batch goes.
    log.truncate_to(52).unwrap();
    assert_eq!((log.log_end_offset(), log.durable_offset()), (50, 50));
    assert_eq!(read_all(&log), stored[..10].concat());
    let after = log.segment_base_offsets();
    assert!(after.len() < before.len());
    for b in before.iter().filter(|b| !after.contains(b)) {
        assert!(!f.fs.exists(&f.segment(*b, "log")));
    }
    // Appends continue from the new end, and a reopen agrees.
    assert_eq!(log.append(&encode_at(1, 1, Compression::None), 0).unwrap().base_offset, 50);
    drop(log);
    let (log, report) = f.open();
    assert_eq!((report.log_end_offset, report.truncated_bytes), (51, 0));
    log.read(50, 1, i64::MAX).unwrap();
}

/// A log of 40 batches (5 records each) over several segments, closed.
fn closed_log(f: &Fixture) -> (Vec<Vec<u8>>, Vec<i64>) {
    let (mut log, _) = f.open();
    let stored = fill(&mut log, 40, 5);
    (stored, log.segment_base_offsets())
}

#[test]
fn recovery_cuts_a_torn_tail() {
    let f = fixture();
    let (stored, bases) = closed_log(&f);
    let last = f.segment(*bases.last().unwrap(), "log");
    let len = f.file_len(&last);
    f.set_len(&last, len - 7);
    let (log, report) = f.open();
    assert_eq!(report.truncated_bytes, stored[39].len() as u64 - 7);
    assert_eq!(report.log_end_offset, 39 * 5);
    assert_eq!(read_all(&log), stored[..39].concat());
    // Garbage appended past the end is cut too.
    drop(log);
    let mut file = f.fs.open(&last, OpenOptions::EXISTING).unwrap();
    let len = file.len().unwrap();
    file.write_at(&[0u8; 100], len).unwrap();
    let (_, report) = f.open();
    assert_eq!((report.truncated_bytes, report.log_end_offset), (100, 195));
}

#[test]
fn recovery_cuts_a_corrupt_last_batch() {
    let f = fixture();
    let (stored, bases) = closed_log(&f);
    let last = f.segment(*bases.last().unwrap(), "log");
    f.flip_byte(&last, f.file_len(&last) - 3);
    let (log, report) = f.open();
    assert_eq!(report.truncated_bytes, stored[39].len() as u64);
    assert_eq!(read_all(&log), stored[..39].concat());
}

#[test]
fn recovery_cuts_from_a_corrupt_middle_batch_and_drops_later_segments() {
    let f = fixture();
    let (stored, bases) = closed_log(&f);
    // Forget the checkpoint so every segment is scanned, as after a crash
    // that lost it; corrupt the third batch of the first segment.
    f.fs.remove_file(&f.dir.join("recovery-point-offset-checkpoint")).unwrap();
    let pos = (stored[0].len() + stored[1].len() + 70) as u64;
    f.flip_byte(&f.segment(0, "log"), pos);
    let (mut log, report) = f.open();
    assert_eq!(report.log_end_offset, 10);
    assert_eq!(report.segments_scanned, 1);
    assert_eq!(log.segment_base_offsets(), vec![0]);
    for b in &bases[1..] {
        assert!(!f.fs.exists(&f.segment(*b, "log")));
    }
    assert_eq!(read_all(&log), stored[..2].concat());
    assert_eq!(log.append(&encode_at(1, 1, Compression::None), 0).unwrap().base_offset, 10);
}

#[test]
fn planted_skip_crc_on_recovery_keeps_corrupt_batches() {
    let f = fixture();
    let (stored, bases) = closed_log(&f);
    let last = f.segment(*bases.last().unwrap(), "log");
    f.flip_byte(&last, f.file_len(&last) - 3);
    let bugs = PlantedBugs { skip_crc_on_recovery: true, ..PlantedBugs::default() };
    let (log, report) = f.open_with(small_config(), bugs);
    assert_eq!((report.truncated_bytes, report.log_end_offset), (0, 200));
    let served = log.read(199, 1, i64::MAX).unwrap().records;
    assert_eq!(served.len(), stored[39].len());
    assert_ne!(&served[..], &stored[39][..]);
}

#[test]
fn planted_duplicate_offset_after_crash_reuses_offsets() {
    let f = fixture();
    closed_log(&f);
    let bugs = PlantedBugs { duplicate_offset_after_crash: true, ..PlantedBugs::default() };
    let (mut log, report) = f.open_with(small_config(), bugs);
    assert_eq!(report.log_end_offset, 200);
    let info = log.append(&encode_at(1, 1, Compression::None), 0).unwrap();
    assert!(info.base_offset < 200, "offset {} was not reused", info.base_offset);
}

#[test]
fn recovery_rebuilds_missing_or_damaged_indexes() {
    let f = fixture();
    let (stored, bases) = closed_log(&f);
    assert!(bases.len() >= 4);
    // Missing, wrong size, and pointing beyond the log.
    f.fs.remove_file(&f.segment(bases[0], "index")).unwrap();
    f.set_len(&f.segment(bases[1], "index"), 13);
    let mut idx = f.fs.open(&f.segment(bases[2], "index"), OpenOptions::EXISTING).unwrap();
    idx.write_at(&[0, 0, 0, 1, 0x7f, 0, 0, 0], 0).unwrap();
    drop(idx);
    f.fs.remove_file(&f.segment(bases[2], "timeindex")).unwrap();
    let (log, report) = f.open();
    assert_eq!(report.indexes_rebuilt, 3, "{report:?}");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(read_all(&log), stored.concat());
    for (i, batch) in stored.iter().enumerate() {
        assert_eq!(&log.read(i as i64 * 5 + 2, 1, i64::MAX).unwrap().records[..], &batch[..]);
    }
    assert_eq!(log.offset_for_timestamp(10_333).unwrap(), Some((168, 10_333)));
    drop(log);
    // Rebuilt indexes were written back: the next open trusts them.
    let (_, report) = f.open();
    assert_eq!(report.indexes_rebuilt, 0);
}

#[test]
fn recovery_copes_with_a_stale_or_garbage_checkpoint() {
    let f = fixture();
    let (stored, bases) = closed_log(&f);
    let checkpoint = f.dir.join("recovery-point-offset-checkpoint");
    // Stale: pointing at the start means everything is scanned.
    super::recovery::write_checkpoint(&*f.fs, &f.dir, 0).unwrap();
    let (log, report) = f.open();
    assert_eq!(report.segments_scanned, bases.len());
    assert_eq!(read_all(&log), stored.concat());
    drop(log);
    // Garbage: treated as missing.
    let mut c = f.fs.open(&checkpoint, OpenOptions::EXISTING).unwrap();
    c.write_at(b"9\nnonsense\n", 0).unwrap();
    drop(c);
    let (log, report) = f.open();
    assert_eq!(report.segments_scanned, bases.len());
    assert_eq!((report.truncated_bytes, report.log_end_offset), (0, 200));
    assert_eq!(read_all(&log), stored.concat());
}

/// A torn write that kept the file's length but not all of its blocks: the
/// last batch's header is intact and its length checks out, only a block of
/// its body reads back as zeros. Only the CRC can tell; the planted bug that
/// skips it on recovery serves the zeros as records.
#[test]
fn recovery_cuts_a_batch_with_a_zeroed_block_by_crc_and_the_planted_bug_keeps_it() {
    for skip_crc in [false, true] {
        let f = fixture();
        let config = LogConfig { segment_bytes: 1 << 20, ..small_config() };
        let (mut log, _) = f.open_with(config.clone(), PlantedBugs::default());
        log.append(&encode_at(2, 1, Compression::None), 0).unwrap();
        let big = log.append(&encode_at(60, 100, Compression::None), 0).unwrap();
        let end = log.log_end_offset();
        let stored = log.read(big.base_offset, 1, i64::MAX).unwrap().records.to_vec();
        drop(log);
        let path = f.segment(0, "log");
        let len = f.file_len(&path);
        let pos = len - stored.len() as u64;
        // The first whole 512-byte block past the header, inside the batch.
        let hole = (pos + 61).div_ceil(512) * 512;
        assert!(hole + 512 <= len, "the batch ({} bytes at {pos}) spans a whole block", stored.len());
        f.fs.open(&path, OpenOptions::EXISTING).unwrap().write_at(&[0u8; 512], hole).unwrap();
        assert_eq!(f.file_len(&path), len);
        let bugs = PlantedBugs { skip_crc_on_recovery: skip_crc, ..PlantedBugs::default() };
        let (log, report) = f.open_with(config, bugs);
        if skip_crc {
            assert_eq!((report.truncated_bytes, report.log_end_offset), (0, end));
            let served = log.read(big.base_offset, 1, i64::MAX).unwrap().records;
            assert_eq!(served.len(), stored.len());
            assert!(served[(hole - pos) as usize..][..512].iter().all(|&b| b == 0), "the hole is served");
        } else {
            assert_eq!((report.truncated_bytes, report.log_end_offset), (stored.len() as u64, big.base_offset));
            assert_eq!(log.log_end_offset(), 2);
        }
    }
}

/// Truncation rebuilds the kept segment's tail and indexes from the batches
/// it read; appends then continue from there, and a reopen finds those
/// indexes sound and the same batches.
#[test]
fn truncate_then_reopen_finds_the_same_indexes() {
    let f = fixture();
    let (mut log, _) = f.open();
    let stored = fill(&mut log, 40, 5);
    log.truncate_to(123).unwrap();
    assert_eq!(log.log_end_offset(), 120);
    let more = fill(&mut log, 3, 5);
    drop(log);
    let (log, report) = f.open();
    assert_eq!((report.truncated_bytes, report.indexes_rebuilt, report.log_end_offset), (0, 0, 135));
    let mut want = stored[..24].concat();
    want.extend(more.concat());
    assert_eq!(read_all(&log), want);
}

/// A batch of `n` records from idempotent producer `pid` at `epoch`, starting at sequence `seq`.
fn idempotent(n: i64, pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let mut b = encode_at(n, 10_000, Compression::None);
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crate::record_batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn idempotent_retries_are_not_appended_twice() {
    let f = fixture();
    let (mut log, _) = f.open();
    fill(&mut log, 2, 5);
    let first = log.append(&idempotent(3, 42, 0, 0), 0).unwrap();
    assert_eq!((first.base_offset, first.last_offset, first.duplicate), (10, 12, false));
    let retry = log.append(&idempotent(3, 42, 0, 0), 0).unwrap();
    assert_eq!((retry.base_offset, retry.last_offset, retry.duplicate), (10, 12, true));
    assert_eq!(log.log_end_offset(), 13);
    assert!(matches!(log.append(&idempotent(1, 42, 0, 5), 0), Err(StorageError::OutOfOrderSequence(_))));
    let r = log.append(&idempotent(1, 42, -1, 3), 0);
    assert!(matches!(r, Err(StorageError::CorruptMessage(_))), "{r:?}");
    // Two batches of one producer in one request: the second follows the first.
    let two = [idempotent(2, 42, 0, 3), idempotent(2, 42, 0, 5)].concat();
    assert_eq!(log.append(&two, 0).unwrap().last_offset, 16);
    let gap = [idempotent(1, 42, 0, 7), idempotent(1, 42, 0, 9)].concat();
    assert!(matches!(log.append(&gap, 0), Err(StorageError::OutOfOrderSequence(_))));
    assert_eq!(log.log_end_offset(), 17, "a refused request appends nothing");
    // A newer epoch fences the older one.
    log.append(&idempotent(1, 42, 1, 0), 0).unwrap();
    assert!(matches!(log.append(&idempotent(1, 42, 0, 7), 0), Err(StorageError::InvalidProducerEpoch(_))));
}

#[test]
fn producer_state_survives_reopen_and_follows_truncation() {
    let f = fixture();
    let (mut log, _) = f.open();
    // Enough batches to span several segments.
    for i in 0..30 {
        let b = idempotent(4, 7, 0, i * 4);
        assert_eq!(log.append(&b, 0).unwrap().base_offset, i as i64 * 4);
    }
    assert!(log.segment_base_offsets().len() > 1);
    let state = log.producer_state().clone();
    drop(log);
    let (mut log, _) = f.open();
    assert_eq!(log.producer_state(), &state, "rebuilt from batch headers");
    let retry = log.append(&idempotent(4, 7, 0, 29 * 4), 0).unwrap();
    assert_eq!((retry.base_offset, retry.duplicate), (116, true));
    // Cut the last two batches: the producer's expected sequence goes back with them.
    log.truncate_to(112).unwrap();
    assert_eq!(log.producer_state().get(7).unwrap().batches.back().unwrap().last_seq, 111);
    assert!(matches!(log.append(&idempotent(4, 7, 0, 116), 0), Err(StorageError::OutOfOrderSequence(_))));
    let again = log.append(&idempotent(4, 7, 0, 112), 0).unwrap();
    assert_eq!((again.base_offset, again.duplicate), (112, false));
    let mut seen = Vec::new();
    log.for_each_batch_header(100, |h| seen.push((h.base_offset, h.base_sequence))).unwrap();
    assert_eq!(seen, vec![(100, 100), (104, 104), (108, 108), (112, 112)]);
}

/// `bytes` validated, as a replica fetch hands them over.
fn validated(bytes: &[u8]) -> ValidatedBatches {
    ValidatedBatches::new(Bytes::copy_from_slice(bytes)).unwrap()
}

fn epochs(log: &PartitionLog) -> Vec<(i32, i64)> {
    log.leader_epochs().iter().map(|e| (e.epoch, e.start_offset)).collect()
}

#[test]
fn the_leader_stamps_its_epoch_into_every_batch_outside_the_crc() {
    let f = fixture();
    let (mut log, _) = f.open();
    let two = [encode_at(2, 1, Compression::None), encode_at(3, 2, Compression::Gzip)].concat();
    log.append_as_leader(&validated(&two), 0, 3).unwrap();
    log.append_as_leader(&validated(&encode_at(1, 3, Compression::None)), 0, 5).unwrap();
    let read = log.read(0, 1 << 20, i64::MAX).unwrap().records;
    let stamped: Vec<(i64, i32)> = headers(&read).iter().map(|h| (h.base_offset, h.partition_leader_epoch)).collect();
    assert_eq!(stamped, vec![(0, 3), (2, 3), (5, 5)], "CRCs checked by `headers`");
    assert_eq!(epochs(&log), vec![(3, 0), (5, 5)]);
    // A leader of an older epoch is fenced and appends nothing.
    let r = log.append_as_leader(&validated(&encode_at(1, 4, Compression::None)), 0, 4);
    assert!(matches!(r, Err(StorageError::FencedLeaderEpoch(_))), "{r:?}");
    assert_eq!(log.log_end_offset(), 6);
    // LogAppendTime recomputes the CRC after the stamp; both survive.
    let g = fixture();
    let config = LogConfig { message_timestamp_type: "LogAppendTime".into(), ..small_config() };
    let (mut log, _) = g.open_with(config, PlantedBugs::default());
    log.append_as_leader(&validated(&encode_at(2, 1, Compression::None)), 77, 9).unwrap();
    let h = headers(&log.read(0, 1 << 20, i64::MAX).unwrap().records)[0];
    assert_eq!((h.partition_leader_epoch, h.max_timestamp, h.is_log_append_time()), (9, 77, true));
}

#[test]
fn a_follower_appends_replicated_batches_verbatim_and_refuses_what_does_not_continue() {
    let f = fixture();
    let (mut leader, _) = f.open();
    leader.append_as_leader(&validated(&encode_at(2, 1, Compression::None)), 0, 1).unwrap();
    leader.append_as_leader(&validated(&idempotent(3, 8, 0, 0)), 0, 1).unwrap();
    leader.append_as_leader(&validated(&encode_at(1, 2, Compression::Lz4)), 0, 4).unwrap();
    let shipped = leader.read(0, 1 << 20, i64::MAX).unwrap().records;

    let g = fixture();
    let (mut follower, _) = g.open();
    // Not at the log end: refused.
    let tail = headers(&shipped);
    let second = &shipped[tail[0].size()..];
    let r = follower.append_as_follower(&validated(second), 0);
    assert!(matches!(r, Err(StorageError::UnexpectedAppendOffset(_))), "{r:?}");
    // The whole log, verbatim: same bytes, offsets, epochs and producer state.
    let info = follower.append_as_follower(&validated(&shipped), 0).unwrap();
    assert_eq!((info.base_offset, info.last_offset, info.record_count, info.duplicate), (0, 5, 6, false));
    assert_eq!(follower.read(0, 1 << 20, i64::MAX).unwrap().records, shipped);
    assert_eq!(epochs(&follower), vec![(1, 0), (4, 5)]);
    assert_eq!(follower.producer_state(), leader.producer_state());
    // A gap, a repeat, or an epoch going backwards: refused, nothing appended.
    let mut gap = encode_at(1, 5, Compression::None);
    crate::record_batch::set_base_offset(&mut gap, 7);
    crate::record_batch::set_partition_leader_epoch(&mut gap, 4);
    let mut older = encode_at(1, 5, Compression::None);
    crate::record_batch::set_base_offset(&mut older, 6);
    crate::record_batch::set_partition_leader_epoch(&mut older, 3);
    for bad in [gap, shipped.to_vec(), older.clone()] {
        let r = follower.append_as_follower(&validated(&bad), 0);
        assert!(matches!(r, Err(StorageError::UnexpectedAppendOffset(_))), "{r:?}");
        assert_eq!(follower.log_end_offset(), 6);
    }
    // A retry of an idempotent batch is stored again: dedupe is the leader's job.
    crate::record_batch::set_partition_leader_epoch(&mut older, 4);
    follower.append_as_follower(&validated(&older), 0).unwrap();
    assert_eq!(follower.log_end_offset(), 7);
}

#[test]
fn the_epoch_cache_is_recovered_rebuilt_when_damaged_and_truncated_with_the_log() {
    let f = fixture();
    let (mut log, _) = f.open();
    for (i, epoch) in [0, 0, 2, 2, 2, 5, 7, 7].into_iter().enumerate() {
        log.append_as_leader(&validated(&encode_at(5, 100 + i as i64, Compression::None)), 0, epoch).unwrap();
    }
    let want = vec![(0, 0), (2, 10), (5, 25), (7, 30)];
    assert_eq!(epochs(&log), want);
    // OffsetForLeaderEpoch as Kafka answers it.
    assert_eq!(log.end_offset_for_epoch(7), (7, 40));
    assert_eq!(log.end_offset_for_epoch(2), (2, 25));
    assert_eq!(log.end_offset_for_epoch(4), (2, 25));
    assert_eq!(log.end_offset_for_epoch(8), (-1, -1));
    assert_eq!(log.end_offset_for_epoch(-1), (-1, -1));
    log.flush().unwrap();
    drop(log);
    let checkpoint = f.dir.join(super::leader_epoch::CHECKPOINT_FILE);
    assert!(f.fs.exists(&checkpoint));
    let (log, report) = f.open();
    assert_eq!(epochs(&log), want);
    assert!(!report.leader_epochs_rebuilt);
    drop(log);
    // Missing or damaged: rebuilt from the batches.
    for damage in [None, Some(&b"0\n3\n0 0\n"[..]), Some(&b"0\n2\n5 0\n2 10\n"[..])] {
        match damage {
            None => f.fs.remove_file(&checkpoint).unwrap(),
            Some(text) => crate::io::write_atomically(&*f.fs, &checkpoint, text).unwrap(),
        }
        let (log, report) = f.open();
        assert!(report.leader_epochs_rebuilt, "{damage:?}");
        assert_eq!(epochs(&log), want, "{damage:?}");
    }
    // A checkpoint ahead of the log (its tail lost in a crash) is cut back.
    let (mut log, _) = f.open();
    log.append_as_leader(&validated(&encode_at(5, 200, Compression::None)), 0, 9).unwrap();
    log.flush().unwrap();
    drop(log);
    let segment = f.segment(*f.open().0.segment_base_offsets().last().unwrap(), "log");
    let len = f.file_len(&segment);
    f.set_len(&segment, len - 3);
    let (log, _) = f.open();
    assert_eq!(log.log_end_offset(), 40);
    assert_eq!(epochs(&log), want);
    drop(log);
    // Truncation drops the epochs that start at or after the cut, on file too.
    let (mut log, _) = f.open();
    log.truncate_to(27).unwrap();
    assert_eq!(log.log_end_offset(), 25);
    assert_eq!(epochs(&log), vec![(0, 0), (2, 10)]);
    assert_eq!(log.end_offset_for_epoch(2), (2, 25));
    assert_eq!(log.end_offset_for_epoch(5), (-1, -1));
    // The next leader's epoch starts where the log now ends.
    log.append_as_leader(&validated(&encode_at(1, 300, Compression::None)), 0, 8).unwrap();
    drop(log);
    let (log, _) = f.open();
    assert_eq!(epochs(&log), vec![(0, 0), (2, 10), (8, 25)]);
    assert_eq!(log.end_offset_for_epoch(5), (2, 25));
}

#[test]
fn open_loads_the_newest_snapshot_and_replays_only_the_tail() {
    let f = fixture();
    let (mut log, report) = f.open();
    assert_eq!((report.producer_snapshot_offset, report.producer_batches_replayed), (None, 0));
    for i in 0..40 {
        log.append(&idempotent(4, 1 + i as i64 % 3, 0, (i / 3) * 4), 0).unwrap();
    }
    let bases = log.segment_base_offsets();
    assert!(bases.len() > 3, "{bases:?}");
    let state = log.producer_state().clone();
    let active_batches = (log.log_end_offset() - bases.last().unwrap()) as u64 / 4;
    drop(log);
    // Unclean: the snapshot of the last roll, then the active segment's headers.
    let (log, report) = f.open();
    assert_eq!(report.producer_snapshot_offset, Some(*bases.last().unwrap()));
    assert_eq!(report.producer_batches_replayed, active_batches);
    assert!(active_batches < 40);
    assert_eq!(log.producer_state(), &state);
    let mut log = log;
    log.close().unwrap();
    drop(log);
    // Clean: the snapshot at the log end, nothing replayed.
    let (log, report) = f.open();
    assert_eq!((report.producer_snapshot_offset, report.producer_batches_replayed), (Some(160), 0));
    assert_eq!(log.producer_state(), &state);
    drop(log);
    // A damaged snapshot falls back to the one before it.
    f.flip_byte(&f.dir.join(format!("{:020}.snapshot", 160)), 9);
    let (log, report) = f.open();
    assert_eq!(report.producer_snapshot_offset, Some(*bases.last().unwrap()));
    assert_eq!(log.producer_state(), &state);
    drop(log);
    // Every snapshot damaged or gone: a replay from the log start.
    for path in f.fs.list_dir(&f.dir).unwrap() {
        if path.extension().is_some_and(|e| e == "snapshot") {
            f.set_len(&path, 3);
        }
    }
    let (log, report) = f.open();
    assert_eq!((report.producer_snapshot_offset, report.producer_batches_replayed), (None, 40));
    assert_eq!(log.producer_state(), &state);
}

#[test]
fn truncation_deletes_snapshots_past_the_cut_and_reloads_producer_state() {
    let f = fixture();
    let (mut log, _) = f.open();
    for i in 0..30 {
        log.append(&idempotent(4, 7, 0, i * 4), 0).unwrap();
    }
    let bases = log.segment_base_offsets();
    let cut = bases[bases.len() - 2] + 4;
    log.truncate_to(cut).unwrap();
    let snapshots = super::producer_state::list_snapshots(&*f.fs, &f.dir).unwrap();
    assert!(snapshots.iter().all(|&o| o <= cut), "{snapshots:?} past {cut}");
    let last = log.producer_state().get(7).unwrap().batches.back().copied().unwrap();
    assert_eq!((last.first_offset, last.last_seq), (cut - 4, cut as i32 - 1));
    // A new batch may now reuse the cut offsets; reopening agrees.
    log.append(&idempotent(4, 7, 0, cut as i32), 0).unwrap();
    let state = log.producer_state().clone();
    drop(log);
    assert_eq!(f.open().0.producer_state(), &state);
}

#[test]
fn idle_producers_expire_and_start_over_at_any_sequence() {
    let f = fixture();
    let config = LogConfig { producer_id_expiration_ms: 1_000, ..small_config() };
    let (mut log, _) = f.open_with(config.clone(), PlantedBugs::default());
    log.append(&idempotent(2, 5, 0, 0), 0).unwrap(); // max timestamp 10_001
    assert_eq!(log.expire_producers(11_000), 0);
    assert!(matches!(log.append(&idempotent(1, 5, 0, 9), 0), Err(StorageError::OutOfOrderSequence(_))));
    assert_eq!(log.expire_producers(11_001), 1);
    assert!(log.producer_state().is_empty());
    // Forgotten: its next batch is taken like a new producer's.
    let info = log.append(&idempotent(1, 5, 0, 9), 0).unwrap();
    assert!(!info.duplicate);
    drop(log);
    // Opening at a later time does not bring it back.
    let (log, _) = PartitionLog::open(f.fs.clone(), f.dir.clone(), config, PlantedBugs::default(), 50_000).unwrap();
    assert!(log.producer_state().is_empty());
}

/// A batch whose offsets rot on the medium must fail a read that reaches
/// it, not make every fetch there return nothing forever.
#[test]
fn a_read_at_a_batch_whose_offsets_rotted_fails_instead_of_returning_nothing() {
    let f = fixture();
    let (mut log, _) = f.open_with(LogConfig { segment_bytes: 1 << 20, ..small_config() }, PlantedBugs::default());
    let stored = fill(&mut log, 4, 2);
    log.flush().unwrap();
    // The second batch's lastOffsetDelta (bytes 23..27 of its header).
    let second = stored[0].len() as u64;
    f.flip_byte(&f.segment(0, "log"), second + 26);
    assert!(matches!(log.read(2, 1 << 20, log.durable_offset()), Err(StorageError::CorruptMessage(_))));
    assert!(matches!(log.read(4, 1 << 20, log.durable_offset()), Err(StorageError::CorruptMessage(_))));
    // Reads before the damage still work.
    assert!(!log.read(0, 1, log.durable_offset()).unwrap().records.is_empty());
}

#[test]
fn deleting_segments_below_an_offset_moves_the_log_start_and_survives_a_reopen() {
    let f = fixture();
    let (mut log, _) = f.open();
    let written = fill(&mut log, 40, 5);
    log.flush().unwrap();
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 4, "{bases:?}");
    let cut = bases[2] + 1;
    assert_eq!(log.delete_segments_below(cut).unwrap(), bases[2]);
    assert_eq!(log.log_start_offset(), bases[2]);
    assert!(!f.segment(bases[0], "log").exists() && !f.segment(bases[1], "index").exists());
    let end = log.log_end_offset();
    let epochs = log.leader_epochs().to_vec();
    assert!(matches!(log.read(bases[2] - 1, 100, i64::MAX), Err(StorageError::OffsetOutOfRange { .. })));
    // Below the first segment, or inside it: nothing to delete.
    assert_eq!(log.delete_segments_below(0).unwrap(), bases[2]);
    drop(log);
    let (log, report) = f.open();
    assert_eq!((log.log_start_offset(), log.log_end_offset(), report.truncated_bytes), (bases[2], end, 0));
    assert_eq!(log.leader_epochs(), &epochs[..]);
    let kept: Vec<u8> =
        written.iter().skip_while(|b| headers(b)[0].base_offset < bases[2]).flatten().copied().collect();
    assert_eq!(read_all(&log), kept);
}

#[test]
fn resetting_the_log_starts_it_empty_at_any_offset_and_survives_a_reopen() {
    let f = fixture();
    let (mut log, _) = f.open();
    fill(&mut log, 30, 5);
    log.append_as_leader(&ValidatedBatches::new(encode_at(2, 1, Compression::None).into()).unwrap(), 0, 3).unwrap();
    for target in [500, 20] {
        log.reset_to(target).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset(), log.durable_offset()), (target, target, target));
        assert_eq!((log.leader_epochs(), log.epoch_at(target)), (&[][..], None));
        let a = log.append_as_leader(&ValidatedBatches::new(encode_at(2, 1, Compression::None).into()).unwrap(), 0, 1);
        assert_eq!(a.unwrap().base_offset, target);
        log.flush().unwrap();
        drop(log);
        let reopened = f.open().0;
        assert_eq!((reopened.log_start_offset(), reopened.log_end_offset()), (target, target + 2));
        assert_eq!(reopened.leader_epochs(), &[super::EpochEntry { epoch: 1, start_offset: target }][..]);
        assert_eq!(reopened.segment_base_offsets(), vec![target]);
        log = reopened;
    }
    assert!(log.reset_to(-1).is_err());
}

#[test]
fn a_crash_half_way_through_a_reset_leaves_one_of_the_two_logs() {
    // The new empty segment exists beside the old log's: recovery keeps the
    // old log, the new segment not continuing it.
    let f = fixture();
    let (mut log, _) = f.open();
    fill(&mut log, 5, 5);
    log.flush().unwrap();
    let end = log.log_end_offset();
    drop(log);
    crate::storage::segment::Segment::create(&*f.fs, &f.dir, 1000, 256).unwrap();
    let (log, _) = f.open();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, end));
    assert!(!f.segment(1000, "log").exists());
}
