//! The descriptor budget: an [`Fs`] wrapper that keeps at most
//! `max_open_files` of the files opened through it open at once. Every
//! handle it gives out stays valid; the least recently used real file is
//! closed when another must open, and reopened (by path, never creating or
//! truncating) on its next use. Segment, index and metadata files all go
//! through it, so a flood of tiny segments costs disk, not descriptors.
//!
//! A file written since its last fsync is not closed: an fsync through a
//! reopened descriptor does cover the writes made through the old one (the
//! data lives with the file, not the descriptor), but the old descriptor is
//! the one a write-back error is reported to first. Only the active segments
//! of partitions with unflushed appends are pinned so; a resize (creating or
//! cutting a file) does not pin it, or every new partition's empty files
//! would stay open until its first roll. Renames through
//! the wrapper carry open handles to the new name. The budget may be passed
//! while every open file is pinned; it is a target, not a hard wall.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::io::{File, Fs, OpenOptions};

/// Default for [`crate::config::BrokerConfig::max_open_files`].
pub const DEFAULT_MAX_OPEN_FILES: usize = 512;

type Shared = Arc<Mutex<Box<dyn File>>>;

/// An [`Fs`] whose open files are held to a budget.
pub struct OpenFiles {
    inner: Arc<dyn Fs>,
    state: Arc<Mutex<State>>,
}

struct State {
    inner: Arc<dyn Fs>,
    max_open: usize,
    next_id: u64,
    clock: u64,
    handles: BTreeMap<u64, Handle>,
    /// Last use -> handle id, for handles whose file is open.
    lru: BTreeMap<u64, u64>,
    open: usize,
    peak_open: usize,
}

struct Handle {
    path: PathBuf,
    file: Option<(Shared, u64)>,
    /// Written since the last successful fsync.
    dirty: bool,
}

impl OpenFiles {
    pub fn new(inner: Arc<dyn Fs>, max_open: usize) -> OpenFiles {
        assert!(max_open >= 1, "max_open_files must be at least 1");
        let state = State {
            inner: inner.clone(),
            max_open,
            next_id: 0,
            clock: 0,
            handles: BTreeMap::new(),
            lru: BTreeMap::new(),
            open: 0,
            peak_open: 0,
        };
        OpenFiles { inner, state: Arc::new(Mutex::new(state)) }
    }

    /// Real files open now, and the most ever open at once.
    pub fn open_counts(&self) -> (usize, usize) {
        let s = lock(&self.state);
        (s.open, s.peak_open)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn touch(&mut self, id: u64) -> Option<Shared> {
        self.clock += 1;
        let now = self.clock;
        let h = self.handles.get_mut(&id)?;
        let (file, used) = h.file.as_mut()?;
        self.lru.remove(used);
        *used = now;
        let file = file.clone();
        self.lru.insert(now, id);
        Some(file)
    }

    /// Close least recently used clean files until one more fits.
    fn make_room(&mut self) {
        while self.open >= self.max_open {
            let victim = self.lru.iter().map(|(_, &id)| id).find(|id| self.handles.get(id).is_some_and(|h| !h.dirty));
            let Some(id) = victim else { return };
            self.close(id);
        }
    }

    fn close(&mut self, id: u64) {
        if let Some((_, used)) = self.handles.get_mut(&id).and_then(|h| h.file.take()) {
            self.lru.remove(&used);
            self.open -= 1;
        }
    }

    fn install(&mut self, id: u64, file: Box<dyn File>) -> Shared {
        self.make_room();
        self.clock += 1;
        let shared: Shared = Arc::new(Mutex::new(file));
        let h = self.handles.get_mut(&id).expect("installing into a live handle");
        invariant!(h.file.is_none(), "a handle holds at most one open file");
        h.file = Some((shared.clone(), self.clock));
        self.lru.insert(self.clock, id);
        self.open += 1;
        self.peak_open = self.peak_open.max(self.open);
        shared
    }

    /// The handle's file, reopened if it was closed.
    fn get(&mut self, id: u64) -> io::Result<Shared> {
        if let Some(f) = self.touch(id) {
            return Ok(f);
        }
        let path = self.handles.get(&id).expect("a live handle").path.clone();
        let file = self.inner.open(&path, OpenOptions::EXISTING)?;
        Ok(self.install(id, file))
    }
}

impl Fs for OpenFiles {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list_dir(path)
    }
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<Box<dyn File>> {
        let mut s = lock(&self.state);
        // Room first, so the open below cannot be the one that runs out.
        s.make_room();
        let file = self.inner.open(path, opts)?;
        let id = s.next_id;
        s.next_id += 1;
        s.handles.insert(id, Handle { path: path.to_path_buf(), file: None, dirty: false });
        s.install(id, file);
        Ok(Box::new(BudgetedFile { id, state: self.state.clone() }))
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.inner.is_dir(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        self.inner.rename(from, to)?;
        for h in s.handles.values_mut().filter(|h| h.path == from) {
            h.path = to.to_path_buf();
        }
        Ok(())
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
}

/// A handle from [`OpenFiles`]: valid whether or not its file is open now.
struct BudgetedFile {
    id: u64,
    state: Arc<Mutex<State>>,
}

impl BudgetedFile {
    /// The open file, with the budget's lock released before it is used, so
    /// one slow read or fsync holds up no other file.
    fn file(&self) -> io::Result<Shared> {
        lock(&self.state).get(self.id)
    }

    fn set_dirty(&self, dirty: bool) {
        if let Some(h) = lock(&self.state).handles.get_mut(&self.id) {
            h.dirty = dirty;
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Box<dyn File>) -> io::Result<T>) -> io::Result<T> {
        let file = self.file()?;
        let mut guard = file.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

impl File for BudgetedFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|f| f.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|f| f.read_at(buf, offset))
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        // Pinned before the write: a partial write is unsynced data too.
        self.set_dirty(true);
        self.with(|f| f.write_at(buf, offset))
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with(|f| f.set_len(len))
    }
    fn sync(&mut self) -> io::Result<()> {
        self.with(|f| f.sync())?;
        self.set_dirty(false);
        Ok(())
    }
}

impl Drop for BudgetedFile {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        s.close(self.id);
        s.handles.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::real::RealFs;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts real files open right now.
    struct Counting {
        inner: RealFs,
        open: Arc<AtomicUsize>,
    }
    struct CountedFile(Box<dyn File>, Arc<AtomicUsize>);
    impl Drop for CountedFile {
        fn drop(&mut self) {
            self.1.fetch_sub(1, Ordering::SeqCst);
        }
    }
    impl File for CountedFile {
        fn len(&self) -> io::Result<u64> {
            self.0.len()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.0.read_at(buf, offset)
        }
        fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.0.write_at(buf, offset)
        }
        fn set_len(&mut self, len: u64) -> io::Result<()> {
            self.0.set_len(len)
        }
        fn sync(&mut self) -> io::Result<()> {
            self.0.sync()
        }
    }
    impl Fs for Counting {
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            self.inner.create_dir_all(path)
        }
        fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
            self.inner.list_dir(path)
        }
        fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<Box<dyn File>> {
            let f = self.inner.open(path, opts)?;
            self.open.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(CountedFile(f, self.open.clone())))
        }
        fn exists(&self, path: &Path) -> bool {
            self.inner.exists(path)
        }
        fn is_dir(&self, path: &Path) -> bool {
            self.inner.is_dir(path)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            self.inner.remove_file(path)
        }
        fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
            self.inner.remove_dir_all(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.inner.rename(from, to)
        }
        fn sync_dir(&self, path: &Path) -> io::Result<()> {
            self.inner.sync_dir(path)
        }
    }

    #[test]
    fn many_segments_stay_under_the_budget_and_readable_across_a_restart() {
        use crate::config::{LogConfig, PlantedBugs};
        use crate::record_batch::{tests::encode_at, ValidatedBatches};
        use crate::storage::PartitionLog;
        use bytes::Bytes;
        use kafka_protocol::records::Compression;

        let tmp = tempfile::tempdir().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let real: Arc<dyn Fs> = Arc::new(Counting { inner: RealFs, open: open.clone() });
        const CAP: usize = 12;
        let config = LogConfig { internal_segment_bytes: Some(200), ..LogConfig::default() };
        let batches: Vec<Vec<u8>> = (0..150).map(|i| encode_at(2, 1_000 + 2 * i, Compression::None)).collect();
        let read_all = |log: &PartitionLog| {
            let mut n = 0;
            let mut at = 0;
            while at < log.log_end_offset() {
                let r = log.read(at, 1 << 20, log.log_end_offset()).unwrap();
                let last = crate::record_batch::Batches::new(&r.records, true).map(|b| b.unwrap().1).last().unwrap();
                n += crate::record_batch::Batches::new(&r.records, true).count();
                at = last.next_offset();
            }
            n
        };
        for restart in 0..2 {
            let fs = Arc::new(OpenFiles::new(real.clone(), CAP));
            let dir = tmp.path().join("t-0");
            let (mut log, _) = PartitionLog::open(fs.clone(), dir, config.clone(), PlantedBugs::default(), 0).unwrap();
            if restart == 0 {
                for b in &batches {
                    let v = ValidatedBatches::new(Bytes::copy_from_slice(b)).unwrap();
                    log.append_as_leader(&v, 0, 0).unwrap();
                    assert!(open.load(Ordering::SeqCst) <= CAP, "{} files open", open.load(Ordering::SeqCst));
                }
            }
            assert!(log.segment_base_offsets().len() >= 50, "{} segments", log.segment_base_offsets().len());
            assert_eq!(read_all(&log), batches.len(), "restart {restart}");
            assert_eq!(log.offset_for_timestamp(1_000 + 2 * 77).unwrap().map(|(o, _)| o), Some(2 * 77));
            let (now, peak) = fs.open_counts();
            assert!(peak <= CAP && now <= CAP, "open {now}, peak {peak}, budget {CAP}");
            assert!(open.load(Ordering::SeqCst) <= CAP);
        }
    }

    #[test]
    fn renames_follow_open_handles_and_dirty_files_stay_open() {
        let tmp = tempfile::tempdir().unwrap();
        let fs = OpenFiles::new(Arc::new(RealFs), 1);
        let a = tmp.path().join("a");
        let mut fa = fs.open(&a, OpenOptions::CREATE).unwrap();
        fa.write_at(b"hello", 0).unwrap();
        // `a` is unsynced: opening `b` may not close it.
        let mut fb = fs.open(&tmp.path().join("b"), OpenOptions::CREATE).unwrap();
        assert_eq!(fs.open_counts().0, 2);
        fa.sync().unwrap();
        fb.write_at(b"x", 0).unwrap();
        fb.sync().unwrap();
        // Both clean now: opening a third closes them; reading `a` reopens
        // it and closes the third; a renamed `a` reopens by its new name.
        let _fd = fs.open(&tmp.path().join("d"), OpenOptions::CREATE).unwrap();
        assert_eq!(fs.open_counts().0, 1);
        let mut buf = [0u8; 5];
        fa.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(fs.open_counts().0, 1);
        fs.rename(&a, &tmp.path().join("c")).unwrap();
        fb.len().unwrap();
        fa.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello");
    }
}
