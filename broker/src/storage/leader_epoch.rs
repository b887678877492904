//! The leader-epoch cache of one partition, Kafka's `LeaderEpochFileCache`:
//! for each leader epoch that wrote to the log, the offset of its first
//! batch. It answers OffsetForLeaderEpoch, the question a follower asks to
//! find where its log diverged from the leader's, and is kept in the
//! partition directory as `leader-epoch-checkpoint`, in Kafka's text format:
//!
//! ```text
//! 0              version
//! 2              number of entries
//! 0 0            epoch start-offset
//! 3 120
//! ```
//!
//! Entries are derived from the `partitionLeaderEpoch` of the batches, so the
//! file is a cache: when it is missing or does not parse, the log rebuilds it
//! from batch headers. What must stay true is that the file never lacks an
//! epoch that starts below the recovery-point checkpoint: the log writes it
//! before it moves that checkpoint, and recovery re-derives entries from
//! every segment it scans.

use std::io;
use std::path::{Path, PathBuf};

use crate::io::{write_atomically, Fs, OpenOptions};

pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
const VERSION: u32 = 0;
/// Kafka's `UNDEFINED_EPOCH`.
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's `UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// An epoch and the offset of the first batch it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The cache: entries with strictly increasing epochs and non-decreasing
/// start offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
    /// Changed since last written to the checkpoint file.
    dirty: bool,
}

pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

impl LeaderEpochCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Read the checkpoint file. `None` if it is absent or damaged (bad
    /// syntax, wrong count, or entries that break the ordering): the caller
    /// rebuilds from the log.
    pub fn load(fs: &dyn Fs, dir: &Path) -> Option<LeaderEpochCache> {
        let file = fs.open(&checkpoint_path(dir), OpenOptions::EXISTING).ok()?;
        let len = file.len().ok()? as usize;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, 0).ok()?;
        Self::parse(std::str::from_utf8(&buf).ok()?)
    }

    fn parse(text: &str) -> Option<LeaderEpochCache> {
        let mut lines = text.lines();
        if lines.next()?.trim().parse::<u32>().ok()? != VERSION {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut entries: Vec<EpochEntry> = Vec::with_capacity(count.min(1024));
        for line in lines.by_ref().take(count) {
            let mut fields = line.split_whitespace();
            let epoch: i32 = fields.next()?.parse().ok()?;
            let start_offset: i64 = fields.next()?.parse().ok()?;
            let e = EpochEntry { epoch, start_offset };
            if fields.next().is_some() || epoch < 0 || start_offset < 0 || !Self::may_follow(entries.last(), &e) {
                return None;
            }
            entries.push(e);
        }
        if entries.len() != count || lines.any(|l| !l.trim().is_empty()) {
            return None;
        }
        Some(LeaderEpochCache { entries, dirty: false })
    }

    fn may_follow(last: Option<&EpochEntry>, e: &EpochEntry) -> bool {
        last.is_none_or(|l| l.epoch < e.epoch && l.start_offset <= e.start_offset)
    }

    fn encode(&self) -> String {
        let mut out = format!("{VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        out
    }

    /// Write the checkpoint file if the cache changed since it was last written.
    pub fn write_if_dirty(&mut self, fs: &dyn Fs, dir: &Path) -> io::Result<()> {
        if self.dirty {
            write_atomically(fs, &checkpoint_path(dir), self.encode().as_bytes())?;
            self.dirty = false;
        }
        Ok(())
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Say whether the cache differs from its file (after a load that had
    /// to repair it, or a rebuild that found nothing new).
    pub fn set_dirty(&mut self, dirty: bool) {
        self.dirty = dirty;
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.latest().map(|e| e.epoch)
    }

    /// Whether a batch stamped `epoch` at `start_offset` may be appended next:
    /// it neither goes back to an older epoch nor starts before the latest
    /// epoch began.
    pub fn accepts(&self, epoch: i32, start_offset: i64) -> bool {
        epoch < 0
            || self.latest().is_none_or(|l| (l.epoch < epoch && l.start_offset <= start_offset) || l.epoch == epoch)
    }

    /// Note that `epoch` wrote a batch at `start_offset`. A batch of the
    /// latest epoch changes nothing; a newer epoch adds an entry. Unstamped
    /// batches (epoch -1) are ignored. Appends check [`Self::accepts`] first;
    /// only a recovery rebuild can meet an epoch that goes backwards, and
    /// then, as Kafka does, the entries it contradicts are dropped.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) {
        if epoch < 0 || self.latest_epoch() == Some(epoch) {
            return;
        }
        if !self.accepts(epoch, start_offset) {
            let keep = self.entries.partition_point(|e| e.epoch < epoch && e.start_offset < start_offset);
            tracing::warn!(epoch, start_offset, dropped = ?&self.entries[keep..], "leader epoch goes backwards in the log; dropping the entries it contradicts");
            self.entries.truncate(keep);
        }
        let e = EpochEntry { epoch, start_offset };
        invariant!(
            Self::may_follow(self.entries.last(), &e),
            "leader epochs must increase and their start offsets must not decrease: {:?} then {e:?}",
            self.entries.last()
        );
        self.entries.push(e);
        self.dirty = true;
    }

    /// Forget every epoch that starts at or after `offset` (the log is being
    /// cut there), as Kafka's `truncateFromEnd`.
    pub fn truncate_from_end(&mut self, offset: i64) {
        let keep = self.entries.partition_point(|e| e.start_offset < offset);
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            self.dirty = true;
        }
    }

    /// Kafka's OffsetForLeaderEpoch answer for `requested`, given the log
    /// end: the largest epoch <= `requested` and the end offset of that
    /// epoch, which is the start offset of the next higher epoch, or the log
    /// end if `requested` is the latest epoch.
    ///
    /// As in Kafka's `endOffsetFor`: a requested epoch below the first known
    /// one returns itself with the first epoch's start offset (the data of
    /// older epochs is gone, and the follower should replicate from there);
    /// an undefined requested epoch, one above the latest, or an empty cache
    /// returns `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)`.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested == UNDEFINED_EPOCH {
            return UNDEFINED;
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let Some(next) = self.entries.get(higher) else {
            return UNDEFINED;
        };
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            None => (requested, next.start_offset),
            Some(floor) => (floor.epoch, next.start_offset),
        }
    }

    /// The epoch that wrote `offset`, if known.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let n = self.entries.partition_point(|e| e.start_offset <= offset);
        n.checked_sub(1).map(|i| self.entries[i].epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::real::RealFs;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::new();
        for &(epoch, start) in entries {
            c.assign(epoch, start);
        }
        c
    }

    #[test]
    fn assign_adds_only_new_epochs_and_ignores_unstamped_batches() {
        let mut c = cache(&[(0, 0), (0, 5), (-1, 7), (2, 10), (2, 12), (5, 20)]);
        assert_eq!(
            c.entries(),
            &[
                EpochEntry { epoch: 0, start_offset: 0 },
                EpochEntry { epoch: 2, start_offset: 10 },
                EpochEntry { epoch: 5, start_offset: 20 }
            ]
        );
        assert!(c.accepts(5, 30) && c.accepts(6, 20) && c.accepts(-1, 0));
        assert!(!c.accepts(4, 30), "an older epoch");
        assert!(!c.accepts(6, 19), "a newer epoch may not start before the latest");
        // A rebuild that meets an older epoch drops what it contradicts.
        c.assign(1, 15);
        assert_eq!(c.entries().iter().map(|e| e.epoch).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let c = cache(&[(1, 0), (3, 10), (4, 25)]);
        let leo = 40;
        // The latest epoch ends at the log end.
        assert_eq!(c.end_offset_for(4, leo), (4, 40));
        // A known epoch ends where the next one starts.
        assert_eq!(c.end_offset_for(1, leo), (1, 10));
        assert_eq!(c.end_offset_for(3, leo), (3, 25));
        // An unknown epoch between known ones: the largest epoch below it.
        assert_eq!(c.end_offset_for(2, leo), (1, 10));
        // Below the first epoch: itself, ending where the first one starts.
        assert_eq!(c.end_offset_for(0, leo), (0, 0));
        // Undefined, above the latest, or nothing known.
        assert_eq!(c.end_offset_for(UNDEFINED_EPOCH, leo), (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET));
        assert_eq!(c.end_offset_for(5, leo), (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET));
        assert_eq!(LeaderEpochCache::new().end_offset_for(0, leo), (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET));
        assert_eq!(c.epoch_for_offset(9), Some(1));
        assert_eq!(c.epoch_for_offset(10), Some(3));
    }

    #[test]
    fn truncate_from_end_drops_epochs_starting_at_or_after_the_cut() {
        let mut c = cache(&[(1, 0), (3, 10), (4, 25)]);
        c.dirty = false;
        c.truncate_from_end(26);
        assert!(!c.is_dirty(), "nothing starts at or after 26");
        c.truncate_from_end(25);
        assert_eq!(c.latest_epoch(), Some(3));
        assert!(c.is_dirty());
        c.truncate_from_end(0);
        assert!(c.entries().is_empty());
    }

    #[test]
    fn checkpoint_round_trips_and_damage_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let fs = RealFs;
        assert!(LeaderEpochCache::load(&fs, tmp.path()).is_none(), "no file");
        let mut c = cache(&[(0, 0), (2, 17)]);
        c.write_if_dirty(&fs, tmp.path()).unwrap();
        assert!(!c.is_dirty());
        assert_eq!(c.encode(), "0\n2\n0 0\n2 17\n");
        assert_eq!(LeaderEpochCache::load(&fs, tmp.path()).unwrap(), c);
        for bad in [
            "",
            "1\n0\n",
            "0\n3\n0 0\n2 17\n",
            "0\n1\n0 0\n2 17\n",
            "0\n2\n2 0\n1 17\n",
            "0\n2\n0 20\n1 17\n",
            "0\n1\n0 x\n",
            "0\n1\n-1 0\n",
        ] {
            assert!(LeaderEpochCache::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(LeaderEpochCache::parse("0\n0\n").unwrap().entries(), &[]);
    }
}
