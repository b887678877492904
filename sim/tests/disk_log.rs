//! The metadata log ([`DiskLog`]) on the simulated disk: random leader
//! appends, flushes, truncations and snapshots (taken or installed), then
//! power losses that drop what was never fsynced and tear the last writes,
//! and reopens. After each reopen the log must hold the last snapshot
//! stored, start at its end, and hold a prefix of what it held before the
//! crash that reaches at least its durable offset: never a hole, never a
//! batch it did not hold.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use faultline_broker::config::LogConfig;
use faultline_broker::io::Fs;
use faultline_broker::quorum::log::{data_batch, decode_batches};
use faultline_broker::quorum::{DiskLog, RaftLog, SnapshotId};
use faultline_broker::record_batch::Batches;
use faultline_sim::disk::{DiskFaults, SimDisk};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn open(fs: &Arc<dyn Fs>) -> DiskLog {
    let config = LogConfig { internal_segment_bytes: Some(400), index_interval_bytes: 128, ..LogConfig::default() };
    DiskLog::open(fs.clone(), &PathBuf::from("/data/__cluster_metadata-0"), config, 1 << 20, 0).unwrap()
}

/// The stored batches from the log start, as bytes.
fn batches(log: &DiskLog) -> Vec<Bytes> {
    let all = log.read(log.log_start_offset(), usize::MAX).unwrap();
    Batches::new(&all, false).map(|b| b.unwrap()).map(|(pos, _, raw)| all.slice(pos..pos + raw.len())).collect()
}

fn run(seed: u64) -> (u64, u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let faults =
        DiskFaults { torn_write: 0.5, torn_write_holes: 0.5, dir_entries_need_sync: true, ..Default::default() };
    let disk = SimDisk::new(seed, faults);
    let fs: Arc<dyn Fs> = Arc::new(disk.clone());
    // The data directory exists durably, as the node's does.
    fs.create_dir_all(&PathBuf::from("/data")).unwrap();
    fs.sync_dir(&PathBuf::from("/")).unwrap();
    let mut log = open(&fs);
    let mut epoch = 1;
    let (mut crashes, mut lost_unflushed) = (0, 0);
    for step in 0..300u64 {
        match rng.random_range(0..100) {
            0..50 => {
                epoch += rng.random_bool(0.05) as i32;
                let values: Vec<Bytes> =
                    (0..rng.random_range(1..6)).map(|i| Bytes::from(format!("{step}-{i}"))).collect();
                log.append_as_leader(&data_batch(&values, 1).unwrap(), epoch).unwrap();
            }
            50..70 => log.flush().unwrap(),
            70..76 => {
                let to = rng.random_range(log.log_start_offset()..=log.end_offset());
                log.truncate_to(to).unwrap();
            }
            76..84 => {
                let ends: Vec<i64> = decode_batches(&log.read(log.log_start_offset(), usize::MAX).unwrap(), 0)
                    .unwrap()
                    .iter()
                    .map(|b| b.next_offset())
                    .collect();
                if let Some(&end) = ends.get(rng.random_range(0..ends.len().max(1))) {
                    let id = SnapshotId { end_offset: end, epoch: log.epoch_at(end - 1).unwrap() };
                    log.store_snapshot(id, Bytes::from(format!("state {end}"))).unwrap();
                }
            }
            84..87 => {
                epoch += 1;
                let id = SnapshotId { end_offset: log.end_offset() + rng.random_range(0..30), epoch };
                log.store_snapshot(id, Bytes::from(format!("leader state {}", id.end_offset))).unwrap();
            }
            _ => {
                let before = batches(&log);
                let (start, durable, end) = (log.log_start_offset(), log.durable_offset(), log.end_offset());
                let snapshot = log.snapshot();
                drop(log);
                disk.crash();
                crashes += 1;
                log = open(&fs);
                let after = batches(&log);
                let ctx = format!("seed {seed} step {step}: [{start}, {end}) durable {durable}");
                assert_eq!(log.snapshot(), snapshot, "{ctx}");
                assert_eq!(log.log_start_offset(), start, "{ctx}");
                assert!(log.end_offset() >= durable, "{ctx}: flushed batches lost, end {}", log.end_offset());
                assert!(after.len() <= before.len() && after[..] == before[..after.len()], "{ctx}: not a prefix");
                lost_unflushed += (end - log.end_offset()) as u64;
            }
        }
    }
    (crashes, lost_unflushed)
}

#[test]
fn only_unflushed_batches_are_lost_in_a_power_loss() {
    let seeds = std::env::var("DISK_LOG_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30u64);
    let (mut crashes, mut lost) = (0, 0);
    for seed in 0..seeds {
        let (c, l) = run(seed);
        crashes += c;
        lost += l;
    }
    eprintln!("{seeds} seeds: {crashes} power losses, {lost} unflushed offsets lost");
    assert!(crashes > 0 && lost > 0, "the test never lost anything: it tests nothing");
}
