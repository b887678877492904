//! Opening a partition directory after any kind of shutdown: the
//! recovery-point checkpoint, and the scan that validates segments from it,
//! cuts a torn or corrupt tail and rebuilds damaged indexes.
//!
//! Segments wholly before the recovery point were fsynced before it was
//! written, so they are trusted (their indexes are checked, and only the bytes
//! after the last index entry are validated). From the segment holding the
//! recovery point on, every batch is validated. The checkpoint may be stale
//! or missing — then more is scanned — but never ahead of durable data.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::segment::{parse_segment_name, segment_path, Segment, LOG_SUFFIX};
use super::{RecoveryReport, StorageError};
use crate::io::{write_atomically, Fs, OpenOptions};

const CHECKPOINT: &str = "recovery-point-offset-checkpoint";
const CHECKPOINT_VERSION: u32 = 0;

fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT)
}

/// Read the recovery point; `None` if absent or unreadable (then recovery
/// scans everything).
pub(super) fn read_checkpoint(fs: &dyn Fs, dir: &Path) -> Option<i64> {
    let file = fs.open(&checkpoint_path(dir), OpenOptions::EXISTING).ok()?;
    let len = file.len().ok()? as usize;
    if len > 64 {
        return None;
    }
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0).ok()?;
    let text = String::from_utf8(buf).ok()?;
    let mut lines = text.lines();
    let version: u32 = lines.next()?.parse().ok()?;
    let offset: i64 = lines.next()?.parse().ok()?;
    let crc: u32 = lines.next()?.parse().ok()?;
    (version == CHECKPOINT_VERSION && crc == crc32c::crc32c(&offset.to_be_bytes()) && offset >= 0).then_some(offset)
}

/// Durably replace the recovery point.
pub(super) fn write_checkpoint(fs: &dyn Fs, dir: &Path, offset: i64) -> io::Result<()> {
    let text = format!("{CHECKPOINT_VERSION}\n{offset}\n{}\n", crc32c::crc32c(&offset.to_be_bytes()));
    write_atomically(fs, &checkpoint_path(dir), text.as_bytes())
}

/// A recovered directory.
pub(super) struct Recovered {
    pub segments: BTreeMap<i64, Segment>,
    pub report: RecoveryReport,
    /// The checkpoint as found (for the planted offset-reuse bug).
    pub recovery_point: Option<i64>,
    /// Base offset of the first segment validated batch by batch: derived
    /// state (leader epochs) is re-derived from there on.
    pub scanned_from: Option<i64>,
}

/// Open every segment in `dir`, validate from the recovery point, cut
/// whatever is torn or corrupt (and every later segment), and make the
/// result durable.
pub(super) fn recover(
    fs: &dyn Fs,
    dir: &Path,
    index_interval_bytes: u64,
    check_crc: bool,
) -> Result<Recovered, StorageError> {
    let recovery_point = read_checkpoint(fs, dir);
    let mut bases = Vec::new();
    let mut strays = Vec::new();
    for path in fs.list_dir(dir)? {
        match parse_segment_name(&path) {
            Some((base, LOG_SUFFIX)) => bases.push(base),
            Some(_) => {}
            None if path.extension().is_some_and(|e| e == "tmp") => strays.push(path),
            None => {}
        }
    }
    bases.sort_unstable();
    let mut dir_changed = false;
    for path in strays {
        fs.remove_file(&path)?;
        dir_changed = true;
    }
    // Index files whose log is gone are leftovers of a deletion.
    for path in fs.list_dir(dir)? {
        if let Some((base, suffix)) = parse_segment_name(&path) {
            if suffix != LOG_SUFFIX && bases.binary_search(&base).is_err() {
                fs.remove_file(&path)?;
                dir_changed = true;
            }
        }
    }
    // Scan fully from the segment holding the recovery point.
    let first_scanned = match recovery_point {
        Some(rp) => bases.iter().rposition(|&b| b <= rp).unwrap_or(0),
        None => 0,
    };
    let mut report = RecoveryReport::default();
    let mut segments = BTreeMap::new();
    let mut expected_base: Option<i64> = None;
    let mut cut_rest = false;
    let mut scanned_from = None;
    for (i, &base) in bases.iter().enumerate() {
        if cut_rest || expected_base.is_some_and(|e| e != base) {
            if !cut_rest {
                tracing::warn!(dir = %dir.display(), base, expected = ?expected_base, "segment does not continue the log; deleting it and every later segment");
            }
            cut_rest = true;
            report.truncated_bytes += fs.open(&segment_path(dir, base, LOG_SUFFIX), OpenOptions::EXISTING)?.len()?;
            Segment::delete_files(fs, dir, base)?;
            dir_changed = true;
            continue;
        }
        let mut seg = Segment::open(fs, dir, base, index_interval_bytes)?;
        let file_len = seg.file_len()?;
        let mut problem = None;
        let mut scanned = i >= first_scanned;
        if !scanned {
            match seg.load(check_crc)? {
                Ok(p) => problem = p,
                Err(why) => {
                    tracing::warn!(dir = %dir.display(), base, %why, "index damaged; rebuilding from the log");
                    scanned = true;
                }
            }
        }
        if scanned {
            scanned_from.get_or_insert(base);
            report.segments_scanned += 1;
            let r = seg.recover(check_crc)?;
            report.indexes_rebuilt += r.index_was_damaged as usize;
            problem = r.problem;
        }
        if let Some(problem) = problem {
            let cut = file_len - seg.size();
            tracing::warn!(dir = %dir.display(), base, %problem, truncated_bytes = cut, "truncating the log");
            report.truncated_bytes += cut;
            cut_rest = true;
        }
        // An empty segment ends the log: any later one cannot continue it.
        expected_base = Some(seg.next_offset());
        seg.flush(true)?;
        segments.insert(base, seg);
    }
    if dir_changed {
        fs.sync_dir(dir)?;
    }
    report.log_end_offset = segments.last_key_value().map_or(0, |(_, s)| s.next_offset());
    Ok(Recovered { segments, report, recovery_point, scanned_from })
}
