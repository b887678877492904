//! Tests of [`DiskLog`]: the behaviour every [`RaftLog`] shares, run against
//! both logs; a differential run against [`MemoryLog`] as the model, with
//! reopens; snapshot files; and the core running on a `DiskLog`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::config::LogConfig;
use crate::fuzz_targets::MemFs;
use crate::io::Fs;
use crate::quorum::log::{data_batch, decode_batches, MemoryLog};
use crate::quorum::{Input, Output, QuorumConfig, Raft};
use crate::record_batch::{set_base_offset, set_partition_leader_epoch, ValidatedBatches};

const MAX_SNAPSHOT: usize = 1 << 20;

fn small_segments() -> LogConfig {
    LogConfig { internal_segment_bytes: Some(300), ..LogConfig::default() }
}

fn dir() -> PathBuf {
    PathBuf::from("/data/__cluster_metadata-0")
}

fn open(fs: &Arc<dyn Fs>) -> DiskLog {
    DiskLog::open(fs.clone(), &dir(), small_segments(), MAX_SNAPSHOT, 0).unwrap()
}

fn records(n: usize, tag: u64) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(format!("record-{tag}-{i}"))).collect()
}

/// A batch as a leader of `epoch` would have written it at `base`.
fn replicated(base: i64, epoch: i32, n: usize, tag: u64) -> ValidatedBatches {
    let b = data_batch(&records(n, tag), 1).unwrap();
    let mut bytes = b.bytes().to_vec();
    set_base_offset(&mut bytes, base);
    set_partition_leader_epoch(&mut bytes, epoch);
    ValidatedBatches::new(Bytes::from(bytes)).unwrap()
}

/// What every log must do, asserted the same way for each.
fn shared_behaviour<L: RaftLog>(log: &mut L) {
    assert_eq!((log.log_start_offset(), log.end_offset(), log.last_epoch()), (0, 0, 0));
    assert_eq!(log.read(0, 1000).unwrap(), Bytes::new());
    assert!(matches!(log.read(1, 1000), Err(LogError::OutOfRange { .. })));
    assert_eq!(log.append_as_leader(&data_batch(&records(3, 1), 1).unwrap(), 1).unwrap(), (0, 2));
    assert_eq!(log.append_as_leader(&data_batch(&records(2, 2), 1).unwrap(), 2).unwrap(), (3, 4));
    assert_eq!(log.end_offset(), 5);
    assert!(log.durable_offset() <= 5);
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), 5);
    assert_eq!((log.epoch_at(0), log.epoch_at(2), log.epoch_at(3), log.epoch_at(5)), (Some(1), Some(1), Some(2), None));
    assert_eq!(log.last_epoch(), 2);
    assert_eq!(log.end_offset_for_epoch(1), (1, 3));
    assert_eq!(log.end_offset_for_epoch(2), (2, 5));
    // Older epochs are fenced, on both paths.
    assert!(log.append_as_leader(&data_batch(&records(1, 3), 1).unwrap(), 1).is_err());
    assert!(log.append_as_follower(&replicated(5, 1, 1, 3)).is_err());
    // Followers must continue the log exactly.
    assert!(log.append_as_follower(&replicated(6, 3, 1, 3)).is_err());
    log.append_as_follower(&replicated(5, 3, 2, 3)).unwrap();
    assert_eq!((log.end_offset(), log.last_epoch()), (7, 3));
    let all = decode_batches(&log.read(0, usize::MAX).unwrap(), 0).unwrap();
    assert_eq!(all.iter().map(|b| (b.base_offset, b.epoch)).collect::<Vec<_>>(), vec![(0, 1), (3, 2), (5, 3)]);
    // At least one batch, whatever the limit.
    assert_eq!(decode_batches(&log.read(3, 1).unwrap(), 0).unwrap().len(), 1);
    // Truncation inside a batch takes the whole batch.
    log.truncate_to(6).unwrap();
    assert_eq!((log.end_offset(), log.last_epoch()), (5, 2));
    assert_eq!(log.durable_offset(), 5);
    // A snapshot the log holds drops the prefix.
    let id = SnapshotId { end_offset: 3, epoch: 1 };
    log.store_snapshot(id, Bytes::from_static(b"state@3")).unwrap();
    assert_eq!((log.log_start_offset(), log.end_offset()), (3, 5));
    assert_eq!(log.snapshot(), Some((id, Bytes::from_static(b"state@3"))));
    assert_eq!((log.epoch_at(2), log.epoch_at(1), log.epoch_at(3)), (Some(1), None, Some(2)));
    assert!(matches!(log.read(2, 1000), Err(LogError::OutOfRange { .. })));
    assert_eq!(decode_batches(&log.read(3, 1000).unwrap(), 0).unwrap()[0].base_offset, 3);
    // Truncation never goes below the start.
    log.truncate_to(0).unwrap();
    assert_eq!((log.log_start_offset(), log.end_offset(), log.last_epoch()), (3, 3, 1));
    // A snapshot beyond the log replaces it.
    let far = SnapshotId { end_offset: 40, epoch: 4 };
    log.store_snapshot(far, Bytes::from_static(b"state@40")).unwrap();
    assert_eq!((log.log_start_offset(), log.end_offset(), log.durable_offset()), (40, 40, 40));
    assert_eq!((log.last_epoch(), log.epoch_at(39), log.epoch_at(40)), (4, Some(4), None));
    assert_eq!(log.read(40, 1000).unwrap(), Bytes::new());
    assert_eq!(log.append_as_leader(&data_batch(&records(2, 5), 1).unwrap(), 5).unwrap(), (40, 41));
    assert_eq!(log.epoch_at(40), Some(5));
    assert_eq!(log.end_offset_for_epoch(5), (5, 42));
}

#[test]
fn memory_log_shares_the_behaviour() {
    shared_behaviour(&mut MemoryLog::new());
}

#[test]
fn disk_log_shares_the_behaviour_and_keeps_it_across_a_reopen() {
    let fs: Arc<dyn Fs> = Arc::new(MemFs::default());
    let mut log = open(&fs);
    shared_behaviour(&mut log);
    log.flush().unwrap();
    let snapshot = log.snapshot();
    drop(log);
    let log = open(&fs);
    assert_eq!((log.log_start_offset(), log.end_offset(), log.durable_offset()), (40, 42, 42));
    assert_eq!(log.snapshot(), snapshot);
    assert_eq!((log.last_epoch(), log.epoch_at(39), log.epoch_at(41)), (5, Some(4), Some(5)));
    // A replaced log keeps only the snapshot that replaced it.
    assert_eq!(log.list_snapshots().unwrap(), vec![SnapshotId { end_offset: 40, epoch: 4 }]);
}

#[test]
fn snapshot_files_round_trip_and_refuse_damage() {
    let id = SnapshotId { end_offset: 1234, epoch: 7 };
    assert_eq!(snapshot_file_name(id), "00000000000000001234-0000000007.checkpoint");
    assert_eq!(parse_snapshot_name(Path::new(&snapshot_file_name(id))), Some(id));
    let b = encode_snapshot(id, b"payload");
    assert_eq!(decode_snapshot(id, &b).unwrap(), Bytes::from_static(b"payload"));
    for i in 0..b.len() {
        let mut d = b.clone();
        d[i] ^= 0x04;
        assert!(decode_snapshot(id, &d).is_err(), "flip at byte {i} not caught");
    }
    assert!(decode_snapshot(id, &b[..b.len() - 1]).is_err());
    assert!(decode_snapshot(SnapshotId { end_offset: 1234, epoch: 8 }, &b).is_err());
}

/// Leader appends of `n` batches of 2 records in `epoch`.
fn fill<L: RaftLog>(log: &mut L, n: usize, epoch: i32) {
    for i in 0..n {
        log.append_as_leader(&data_batch(&records(2, i as u64), 1).unwrap(), epoch).unwrap();
    }
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_older_one() {
    let fs: Arc<dyn Fs> = Arc::new(MemFs::default());
    let mut log = open(&fs);
    fill(&mut log, 30, 1);
    log.flush().unwrap();
    let older = SnapshotId { end_offset: 20, epoch: 1 };
    let newer = SnapshotId { end_offset: 50, epoch: 1 };
    log.store_snapshot(older, Bytes::from_static(b"older")).unwrap();
    log.store_snapshot(newer, Bytes::from_static(b"newer")).unwrap();
    // Segments below the older snapshot went; the rest stays for it.
    let physical = log.partition_log().log_start_offset();
    assert!(physical > 0 && physical <= 20, "partition log starts at {physical}");
    log.store_snapshot(SnapshotId { end_offset: 54, epoch: 1 }, Bytes::from_static(b"newest")).unwrap();
    assert_eq!(log.list_snapshots().unwrap(), vec![newer, SnapshotId { end_offset: 54, epoch: 1 }]);
    drop(log);
    // Rot the newest.
    let path = dir().join(snapshot_file_name(SnapshotId { end_offset: 54, epoch: 1 }));
    let mut f = fs.open(&path, crate::io::OpenOptions::EXISTING).unwrap();
    f.write_at(b"X", 30).unwrap();
    drop(f);
    let log = open(&fs);
    assert_eq!(log.snapshot(), Some((newer, Bytes::from_static(b"newer"))));
    assert_eq!((log.log_start_offset(), log.end_offset()), (50, 60));
    assert_eq!(decode_batches(&log.read(50, usize::MAX).unwrap(), 0).unwrap().len(), 5);
}

#[test]
fn every_snapshot_damaged_over_a_cut_log_refuses_to_open() {
    let fs: Arc<dyn Fs> = Arc::new(MemFs::default());
    let mut log = open(&fs);
    let id = SnapshotId { end_offset: 100, epoch: 3 };
    log.store_snapshot(id, Bytes::from_static(b"s")).unwrap();
    drop(log);
    fs.remove_file(&dir().join(snapshot_file_name(id))).unwrap();
    assert!(matches!(DiskLog::open(fs.clone(), &dir(), small_segments(), MAX_SNAPSHOT, 0), Err(LogError::Corrupt(_))));
}

#[test]
fn a_snapshot_over_the_limit_is_refused_and_changes_nothing() {
    let fs: Arc<dyn Fs> = Arc::new(MemFs::default());
    let mut log = DiskLog::open(fs.clone(), &dir(), small_segments(), 16, 0).unwrap();
    fill(&mut log, 2, 1);
    let id = SnapshotId { end_offset: 2, epoch: 1 };
    assert!(matches!(log.store_snapshot(id, Bytes::from(vec![0u8; 17])), Err(LogError::Io(_))));
    assert_eq!((log.log_start_offset(), log.snapshot()), (0, None));
    log.store_snapshot(id, Bytes::from(vec![0u8; 16])).unwrap();
    assert_eq!(log.log_start_offset(), 2);
    // A snapshot inside a batch is refused.
    assert!(log.store_snapshot(SnapshotId { end_offset: 3, epoch: 1 }, Bytes::new()).is_err());
    assert_eq!(log.log_start_offset(), 2);
}

/// Everything observable of a log, to compare two.
fn observe<L: RaftLog>(log: &L, max_epoch: i32) -> String {
    let (start, end) = (log.log_start_offset(), log.end_offset());
    let mut s = format!("start {start} end {end} last {} snapshot {:?}\n", log.last_epoch(), log.snapshot());
    for o in (start - 1)..=end {
        s += &format!("epoch_at {o} {:?}\n", log.epoch_at(o));
    }
    for e in 0..=max_epoch + 1 {
        s += &format!("end_for {e} {:?}\n", log.end_offset_for_epoch(e));
    }
    for o in start..=end {
        for max in [1, 150, 1 << 20] {
            s += &format!("read {o} {max} {:?}\n", log.read(o, max).map(|b| crc32c::crc32c(&b)));
        }
    }
    s
}

fn batch_boundaries<L: RaftLog>(log: &L) -> Vec<i64> {
    let all = decode_batches(&log.read(log.log_start_offset(), usize::MAX).unwrap(), 0).unwrap();
    all.iter().map(|b| b.next_offset()).collect()
}

/// Random operations on a `MemoryLog` (the model) and a `DiskLog` in step;
/// after each, everything observable must agree. Flushed reopens of the
/// `DiskLog` must change nothing.
#[test]
fn disk_log_matches_memory_log_under_random_operations() {
    let seeds = std::env::var("DISK_LOG_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40u64);
    for seed in 0..seeds {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let fs: Arc<dyn Fs> = Arc::new(MemFs::default());
        let mut disk = open(&fs);
        let mut model = MemoryLog::new();
        let mut epoch = 1;
        let mut trace = Vec::new();
        for step in 0..120 {
            let op = rng.random_range(0..100);
            let what = match op {
                0..40 => {
                    if rng.random_bool(0.15) {
                        epoch += 1;
                    }
                    let b = data_batch(&records(rng.random_range(1..5), step), 1).unwrap();
                    let (a, m) = (disk.append_as_leader(&b, epoch), model.append_as_leader(&b, epoch));
                    assert_eq!(a, m, "seed {seed} step {step}");
                    format!("leader append in {epoch}")
                }
                40..55 => {
                    if rng.random_bool(0.3) {
                        epoch += 1;
                    }
                    let b = replicated(model.end_offset(), epoch, rng.random_range(1..4), step);
                    let (a, m) = (disk.append_as_follower(&b), model.append_as_follower(&b));
                    assert_eq!(a.is_ok(), m.is_ok(), "seed {seed} step {step}: {a:?} vs {m:?}");
                    format!("follower append in {epoch}")
                }
                55..65 => {
                    let to = rng.random_range(model.log_start_offset()..=model.end_offset());
                    disk.truncate_to(to).unwrap();
                    model.truncate_to(to).unwrap();
                    format!("truncate to {to}")
                }
                65..80 => {
                    disk.flush().unwrap();
                    model.flush().unwrap();
                    "flush".into()
                }
                80..88 => {
                    let bounds = batch_boundaries(&model);
                    if bounds.is_empty() {
                        continue;
                    }
                    let end = bounds[rng.random_range(0..bounds.len())];
                    let id = SnapshotId { end_offset: end, epoch: model.epoch_at(end - 1).unwrap() };
                    let bytes = Bytes::from(format!("state through {end}"));
                    disk.store_snapshot(id, bytes.clone()).unwrap();
                    model.store_snapshot(id, bytes).unwrap();
                    format!("snapshot {id:?}")
                }
                88..92 => {
                    epoch += 1;
                    let end = model.end_offset() + rng.random_range(0..20);
                    let id = SnapshotId { end_offset: end, epoch };
                    let bytes = Bytes::from(format!("leader state through {end}"));
                    disk.store_snapshot(id, bytes.clone()).unwrap();
                    model.store_snapshot(id, bytes).unwrap();
                    format!("installed {id:?}")
                }
                _ => {
                    disk.flush().unwrap();
                    model.flush().unwrap();
                    drop(disk);
                    disk = open(&fs);
                    "flush and reopen".into()
                }
            };
            trace.push(what);
            // The partition log's truncation flushes, the model's does not:
            // the disk may be durable further, never less.
            assert!(disk.durable_offset() >= model.durable_offset(), "seed {seed} step {step}");
            let (d, m) = (observe(&disk, epoch), observe(&model, epoch));
            if d != m {
                for (l, r) in d.lines().zip(m.lines()).filter(|(l, r)| l != r).take(5) {
                    eprintln!("disk:  {l}\nmodel: {r}");
                }
                panic!(
                    "seed {seed} step {step}: DiskLog and MemoryLog differ after {:?}",
                    &trace[trace.len().saturating_sub(6)..]
                );
            }
        }
    }
}

/// The core runs on a `DiskLog`: a single voter elects itself, commits,
/// snapshots, and a restarted node comes back with its log and snapshot.
#[test]
fn the_quorum_core_runs_on_a_disk_log_across_a_restart() {
    let fs: Arc<dyn Fs> = Arc::new(MemFs::default());
    let config = QuorumConfig::new(1, [1]);
    let mut raft = Raft::new(config.clone(), None, open(&fs), 1, 0);
    let mut now = 0;
    let mut state = None;
    let mut committed_to = 0;
    for _ in 0..50 {
        now = raft.next_deadline().unwrap_or(now + 100).max(now + 1);
        for out in raft.handle(now, Input::Tick) {
            match out {
                Output::PersistQuorumState(s) => state = Some(s),
                Output::Committed { high_watermark, .. } => committed_to = high_watermark,
                _ => {}
            }
        }
        if raft.is_leader() {
            break;
        }
    }
    assert!(raft.is_leader(), "{:?}", raft.role());
    for i in 0..5 {
        for out in raft.handle(now, Input::Propose { records: records(3, i) }) {
            if let Output::Committed { high_watermark, .. } = out {
                committed_to = high_watermark;
            }
        }
    }
    assert_eq!(committed_to, raft.log().end_offset());
    let out = raft.handle(now, Input::Snapshot { end_offset: committed_to, bytes: Bytes::from_static(b"app") });
    assert!(out.iter().any(|o| matches!(o, Output::SnapshotTaken(Ok(_)))), "{out:?}");
    assert_eq!(raft.log().log_start_offset(), committed_to);
    let end = raft.log().end_offset();
    drop(raft);
    let mut raft = Raft::new(config, state, open(&fs), 2, now);
    assert_eq!((raft.log().log_start_offset(), raft.log().end_offset()), (committed_to, end));
    let out = raft.handle(now, Input::Tick);
    assert!(out.iter().any(|o| matches!(o, Output::LoadSnapshot { bytes, .. } if bytes == "app")), "{out:?}");
}
