//! Simulated disk tests: durability of data and directory entries, torn
//! writes, injected errors, latency and determinism.

use super::*;

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

/// A disk with directory `d` and a durable, empty file `d/f`.
fn setup(faults: DiskFaults) -> (SimDisk, Box<dyn File>) {
    let disk = SimDisk::new(7, faults);
    disk.create_dir_all(&p("d")).unwrap();
    let f = disk.open(&p("d/f"), OpenOptions::CREATE).unwrap();
    disk.sync_dir(&p("d")).unwrap();
    (disk, f)
}

#[test]
fn unsynced_write_is_lost_on_crash_and_synced_write_kept() {
    let (disk, mut f) = setup(DiskFaults::default());
    f.write_at(b"durable", 0).unwrap();
    f.sync().unwrap();
    f.write_at(b" volatile", 7).unwrap();
    assert_eq!(disk.contents(&p("d/f")).unwrap(), b"durable volatile");
    disk.crash();
    assert_eq!(disk.contents(&p("d/f")).unwrap(), b"durable");
    // The handle died with the host.
    assert!(f.len().is_err());
    let f = disk.open(&p("d/f"), OpenOptions::EXISTING).unwrap();
    assert_eq!(f.len().unwrap(), 7);
    assert!(matches!(disk.drain_events().last(), Some(DiskEvent::Crash { files_reverted: 1, torn: 0, holed: 0 })));
}

#[test]
fn torn_write_keeps_a_block_aligned_prefix() {
    let (disk, mut f) = setup(DiskFaults { torn_write: 1.0, ..Default::default() });
    f.write_at(&[1u8; 100], 0).unwrap();
    f.sync().unwrap();
    let big = vec![2u8; 4000];
    f.write_at(&big, 100).unwrap();
    disk.crash();
    let after = disk.contents(&p("d/f")).unwrap();
    assert!(after.len() > 100 && after.len() < 4100, "len {}", after.len());
    assert_eq!(after.len() as u64 % BLOCK_SIZE, 0);
    assert!(after[..100].iter().all(|&b| b == 1));
    assert!(after[100..].iter().all(|&b| b == 2));
}

#[test]
fn write_smaller_than_a_block_is_never_torn() {
    let (disk, mut f) = setup(DiskFaults { torn_write: 1.0, ..Default::default() });
    f.write_at(&[9u8; 100], 0).unwrap();
    disk.crash();
    assert!(disk.contents(&p("d/f")).unwrap().is_empty());
}

#[test]
fn capacity_limit_gives_enospc_and_writes_nothing() {
    let (disk, mut f) = setup(DiskFaults { capacity_bytes: 10, ..Default::default() });
    f.write_at(b"12345678", 0).unwrap();
    let err = f.write_at(b"abc", 8).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(ENOSPC));
    assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    assert_eq!(disk.contents(&p("d/f")).unwrap(), b"12345678");
    // Overwriting in place needs no new space.
    f.write_at(b"ab", 0).unwrap();
    assert_eq!(disk.used_bytes(), 8);
}

#[test]
fn write_and_sync_errors_are_eio() {
    let (disk, mut f) = setup(DiskFaults { write_error: 1.0, ..Default::default() });
    let err = f.write_at(b"x", 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(EIO));
    assert!(disk.contents(&p("d/f")).unwrap().is_empty());
    disk.set_faults(DiskFaults { sync_error: 1.0, ..Default::default() });
    f.write_at(b"x", 0).unwrap();
    assert_eq!(f.sync().unwrap_err().raw_os_error(), Some(EIO));
    disk.crash();
    assert!(disk.contents(&p("d/f")).unwrap().is_empty(), "a failed fsync made nothing durable");
    let events = disk.drain_events();
    assert!(events.iter().any(|e| matches!(e, DiskEvent::Fault { kind: FaultKind::WriteError, .. })));
    assert!(events.iter().any(|e| matches!(e, DiskEvent::Fault { kind: FaultKind::SyncError, .. })));
}

#[test]
fn directory_entries_need_sync_dir() {
    let (disk, _f) = setup(DiskFaults::default());
    // Created and fsynced, but its entry never made durable.
    let mut g = disk.open(&p("d/g"), OpenOptions::CREATE).unwrap();
    g.write_at(b"data", 0).unwrap();
    g.sync().unwrap();
    // Renamed without sync_dir: the rename reverts.
    disk.rename(&p("d/f"), &p("d/h")).unwrap();
    disk.crash();
    assert!(!disk.exists(&p("d/g")));
    assert!(disk.exists(&p("d/f")));
    assert!(!disk.exists(&p("d/h")));
    // Now with sync_dir everything sticks, including a removal.
    let mut g = disk.open(&p("d/g"), OpenOptions::CREATE).unwrap();
    g.write_at(b"data", 0).unwrap();
    g.sync().unwrap();
    disk.rename(&p("d/f"), &p("d/h")).unwrap();
    disk.sync_dir(&p("d")).unwrap();
    disk.remove_file(&p("d/h")).unwrap();
    disk.crash();
    assert_eq!(disk.contents(&p("d/g")).unwrap(), b"data");
    assert!(disk.exists(&p("d/h")), "removal was not made durable");
    disk.remove_file(&p("d/h")).unwrap();
    disk.sync_dir(&p("d")).unwrap();
    disk.crash();
    assert!(!disk.exists(&p("d/h")));
    assert_eq!(disk.list_dir(&p("d")).unwrap(), vec![p("d/g")]);
}

#[test]
fn read_corruption_is_transient_and_bit_rot_is_not() {
    let (disk, mut f) = setup(DiskFaults::default());
    f.write_at(&[0u8; 64], 0).unwrap();
    disk.set_faults(DiskFaults { read_corruption: 1.0, ..Default::default() });
    let mut buf = [0u8; 64];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
    assert!(disk.contents(&p("d/f")).unwrap().iter().all(|&b| b == 0));
    disk.set_faults(DiskFaults { bit_rot: 1.0, ..Default::default() });
    f.read_exact_at(&mut buf, 0).unwrap();
    disk.set_faults(DiskFaults::default());
    let mut again = [0u8; 64];
    f.read_exact_at(&mut again, 0).unwrap();
    assert_eq!(buf, again);
    assert_eq!(again.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
}

#[test]
fn latency_accumulates_and_resets() {
    let faults = DiskFaults {
        latency_min_us: 10,
        latency_max_us: 10,
        sync_latency_min_us: 100,
        sync_latency_max_us: 100,
        ..Default::default()
    };
    let (disk, mut f) = setup(faults);
    disk.take_latency();
    f.write_at(b"x", 0).unwrap();
    f.sync().unwrap();
    assert_eq!(disk.take_latency(), Duration::from_micros(120));
    assert_eq!(disk.take_latency(), Duration::ZERO);
}

#[test]
fn same_seed_same_faults() {
    let run = || {
        let faults = DiskFaults { write_error: 0.3, torn_write: 0.5, latency_max_us: 50, ..Default::default() };
        let (disk, mut f) = setup(faults);
        for i in 0..50u64 {
            let _ = f.write_at(&[i as u8; 700], i * 700);
        }
        disk.crash();
        (disk.contents(&p("d/f")), disk.take_latency(), disk.drain_events())
    };
    assert_eq!(run(), run());
}

#[test]
fn open_handle_survives_removal_of_its_name() {
    let (disk, mut f) = setup(DiskFaults::default());
    f.write_at(b"abc", 0).unwrap();
    disk.remove_file(&p("d/f")).unwrap();
    let mut buf = [0u8; 3];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"abc");
    assert!(disk.open(&p("d/f"), OpenOptions::EXISTING).is_err());
}

#[test]
fn torn_write_with_holes_keeps_the_length_and_loses_some_blocks() {
    let faults = DiskFaults { torn_write: 1.0, torn_write_holes: 1.0, ..Default::default() };
    let (disk, mut f) = setup(faults);
    f.write_at(&[1u8; 100], 0).unwrap();
    f.sync().unwrap();
    // Overwrites the durable tail [80, 100) and extends the file to 4100.
    f.write_at(&[2u8; 4020], 80).unwrap();
    disk.crash();
    let after = disk.contents(&p("d/f")).unwrap();
    assert_eq!(after.len(), 4100, "the length survives");
    assert!(after[..80].iter().all(|&b| b == 1));
    // The write's first, partial block may be lost too: then it reads back
    // as the durable bytes it replaced.
    let head = &after[80..512];
    let mut lost = 0;
    if head.iter().all(|&b| b == 1 || b == 0) {
        lost += 1;
    } else {
        assert!(head.iter().all(|&b| b == 2), "the first block is partly there");
    }
    for start in (512..4100).step_by(BLOCK_SIZE as usize) {
        let block = &after[start..(start + BLOCK_SIZE as usize).min(4100)];
        match block[0] {
            2 => assert!(block.iter().all(|&b| b == 2), "block at {start} is partly there"),
            0 => {
                assert!(block.iter().all(|&b| b == 0), "a hole past the old end reads as zeros");
                lost += 1;
            }
            other => panic!("unexpected byte {other} at {start}"),
        }
    }
    assert!(lost >= 1, "a holed tear loses at least one block");
    let events = disk.drain_events();
    let detail = events
        .iter()
        .find_map(|e| match e {
            DiskEvent::Fault { kind: FaultKind::TornWrite, detail, .. } => Some(detail.clone()),
            _ => None,
        })
        .expect("the tear is recorded");
    assert!(detail.contains("lost"), "{detail}");
    assert!(matches!(events.last(), Some(DiskEvent::Crash { torn: 1, holed: 1, .. })));
    assert!(events.last().unwrap().to_string().contains("1 with holes"));
}

#[test]
fn a_hole_inside_the_old_length_reads_back_the_old_bytes() {
    let faults = DiskFaults { torn_write: 1.0, torn_write_holes: 1.0, ..Default::default() };
    let (disk, mut f) = setup(faults);
    f.write_at(&[1u8; 2048], 0).unwrap();
    f.sync().unwrap();
    // Two blocks overwritten in place: exactly one of them is lost.
    f.write_at(&[2u8; 1024], 0).unwrap();
    disk.crash();
    let after = disk.contents(&p("d/f")).unwrap();
    assert_eq!(after.len(), 2048);
    let (a, b) = (after[0], after[512]);
    assert!(after[..512].iter().all(|&x| x == a) && after[512..1024].iter().all(|&x| x == b));
    assert!((a, b) == (2, 1) || (a, b) == (1, 2), "blocks read {a} and {b}");
    assert!(after[1024..].iter().all(|&b| b == 1));
}

#[test]
fn the_first_block_of_a_write_can_be_the_hole() {
    let faults = DiskFaults { torn_write: 1.0, torn_write_holes: 1.0, ..Default::default() };
    let lost_head = (0..64).any(|seed| {
        let disk = SimDisk::new(seed, faults.clone());
        disk.create_dir_all(&p("d")).unwrap();
        let mut f = disk.open(&p("d/f"), OpenOptions::CREATE).unwrap();
        disk.sync_dir(&p("d")).unwrap();
        f.write_at(&[2u8; 2048], 0).unwrap();
        disk.crash();
        let after = disk.contents(&p("d/f")).unwrap();
        after.len() == 2048 && after[..512].iter().all(|&b| b == 0) && after[512..].contains(&2)
    });
    assert!(lost_head, "no seed lost the head of a write and kept its tail");
}

#[test]
fn process_crash_keeps_the_page_cache_until_power_loss() {
    let (disk, mut f) = setup(DiskFaults::default());
    f.write_at(b"synced", 0).unwrap();
    f.sync().unwrap();
    f.write_at(b" cached", 6).unwrap();
    disk.process_crash();
    assert!(f.len().is_err(), "handles die with the process");
    assert_eq!(disk.contents(&p("d/f")).unwrap(), b"synced cached", "the page cache survives");
    // A new process opens it again; a power loss later still loses the
    // unsynced part.
    let g = disk.open(&p("d/f"), OpenOptions::EXISTING).unwrap();
    assert_eq!(g.len().unwrap(), 13);
    drop(g);
    disk.crash();
    assert_eq!(disk.contents(&p("d/f")).unwrap(), b"synced");
    assert!(disk.drain_events().iter().any(|e| matches!(e, DiskEvent::ProcessCrash)));
}

#[test]
fn a_failed_fsync_can_drop_its_pages_for_good() {
    let faults = DiskFaults { sync_error: 1.0, sync_error_drops_pages: true, ..Default::default() };
    let (disk, mut f) = setup(DiskFaults::default());
    f.write_at(b"old", 0).unwrap();
    f.sync().unwrap();
    f.write_at(b"new", 0).unwrap();
    disk.set_faults(faults);
    assert!(f.sync().is_err());
    disk.set_faults(DiskFaults::default());
    // The retry "succeeds", and reads still show the new bytes...
    f.sync().unwrap();
    assert_eq!(disk.contents(&p("d/f")).unwrap(), b"new");
    // ...but they never reached the medium.
    disk.crash();
    assert_eq!(disk.contents(&p("d/f")).unwrap(), b"old");
}

#[test]
fn lost_and_misdirected_writes_betray_fsynced_data() {
    let (disk, mut f) = setup(DiskFaults { lost_write: 1.0, ..Default::default() });
    f.write_at(&[7u8; 100], 0).unwrap();
    f.sync().unwrap();
    assert_eq!(disk.contents(&p("d/f")).unwrap(), vec![7u8; 100]);
    disk.crash();
    assert_eq!(disk.contents(&p("d/f")).unwrap(), vec![0u8; 100], "the write never reached the medium");

    let (disk, mut f) = setup(DiskFaults::default());
    f.write_at(&[1u8; 4096], 0).unwrap();
    f.sync().unwrap();
    disk.set_faults(DiskFaults { misdirected_write: 1.0, ..Default::default() });
    f.write_at(&[9u8; 512], 0).unwrap();
    f.sync().unwrap();
    disk.crash();
    let after = disk.contents(&p("d/f")).unwrap();
    assert!(after[..512].iter().all(|&b| b == 1), "the right place kept its old bytes");
    assert_eq!(after.iter().filter(|&&b| b == 9).count(), 512, "the bytes landed elsewhere");
    assert!(disk.drain_events().iter().any(|e| e.to_string().contains("MisdirectedWrite")));
}

#[test]
fn new_directories_need_their_parent_fsynced() {
    let disk = SimDisk::new(1, DiskFaults { dir_entries_need_sync: true, ..Default::default() });
    disk.create_dir_all(&p("/data")).unwrap();
    disk.sync_dir(&p("/")).unwrap();
    disk.create_dir_all(&p("/data/a")).unwrap();
    disk.create_dir_all(&p("/data/b")).unwrap();
    let mut f = disk.open(&p("/data/a/f"), OpenOptions::CREATE).unwrap();
    f.write_at(b"x", 0).unwrap();
    f.sync().unwrap();
    disk.sync_dir(&p("/data/a")).unwrap();
    disk.sync_dir(&p("/data")).unwrap();
    disk.create_dir_all(&p("/data/c")).unwrap();
    disk.crash();
    assert!(disk.is_dir(&p("/data/a")) && disk.is_dir(&p("/data/b")));
    assert!(!disk.is_dir(&p("/data/c")), "/data was not fsynced after /data/c was made");
    assert_eq!(disk.contents(&p("/data/a/f")).unwrap(), b"x");
}

#[test]
fn forced_read_corruption_is_transient_and_counted() {
    let (disk, mut f) = setup(DiskFaults::default());
    f.write_at(&[0u8; 64], 0).unwrap();
    disk.corrupt_next_reads(&p("d/f"), 2);
    let mut buf = [0u8; 64];
    for _ in 0..2 {
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
    }
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "the third read is clean");
    assert!(disk.contents(&p("d/f")).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn old_scenario_faults_parse_without_the_hole_setting() {
    let faults: DiskFaults = toml::from_str("torn_write = 0.5\nsync_error = 0.1\n").unwrap();
    assert_eq!(faults.torn_write_holes, 0.0);
    assert_eq!(faults.torn_write, 0.5);
}
