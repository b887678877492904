//! The simulated disk: one per simulated host, implementing the seam's [`Fs`]
//! and [`File`] with the durability rules a storage engineer must live by.
//!
//! Every file has a volatile view (what reads see) and a durable view (what
//! survives a crash). Writes change the volatile view; [`File::sync`] makes them
//! durable. File directory entries live in two namespaces the same way: creating,
//! renaming or removing a file changes the volatile namespace, and
//! [`Fs::sync_dir`] on the parent makes it durable. [`SimDisk::crash`] throws the
//! volatile state away (a power loss), optionally tearing each file's last
//! unsynced write in one of two ways real disks do: a block-aligned prefix
//! survives (the file is short), or the file length survives but some of the
//! write's blocks — the first one included — never reached the medium and read
//! back as what was there before, zeros past the old end (holes). Only a
//! checksum catches the second kind. [`SimDisk::process_crash`] is the other kind
//! of crash: the process dies but the operating system does not, so the page
//! cache (the volatile view) survives and only open handles die; a later power
//! loss still loses whatever was never fsynced.
//!
//! The medium can also betray fsynced data: a lost write never reaches it, a
//! misdirected write lands blocks away from where it belongs, and with
//! `sync_error_drops_pages` a failed fsync drops the dirty pages it could not
//! write, so the next fsync succeeds without them (Linux's behaviour).
//!
//! Files are inodes named by entries, so a rename moves the entry, not the data,
//! and an open handle outlives the removal of its name, as on POSIX.
//! Directories are durable the moment they are created, unless
//! `dir_entries_need_sync` asks for the truer rule that a new directory survives
//! a power loss only once its parent is fsynced; removing or renaming a
//! directory is always durable at once.
//!
//! Faults ([`DiskFaults`]) are drawn from a ChaCha8 stream seeded at creation,
//! so the same seed and the same calls give the same faults. Everything the disk
//! does is recorded as a [`DiskEvent`] for the simulator's trace.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use faultline_broker::io::{File, Fs, OpenOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Unit a torn write is cut at: a sector.
pub const BLOCK_SIZE: u64 = 512;

const EIO: i32 = 5;
const ENOSPC: i32 = 28;
const ESTALE: i32 = 116;

/// Fault probabilities and limits. All zero (the default) is a perfect disk.
/// Probabilities are per operation and clamped to [0, 1].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskFaults {
    /// A read returns bytes with one bit flipped; the medium is intact.
    pub read_corruption: f64,
    /// A read flips one bit on the medium (volatile and durable) in the range
    /// it reads, and returns the rotten bytes: every later read sees it too.
    pub bit_rot: f64,
    /// A write fails with EIO and writes nothing.
    pub write_error: f64,
    /// An fsync (file or directory) fails with EIO; the data stays volatile.
    pub sync_error: f64,
    /// At a crash, a file's last unsynced write is torn: a prefix of it, cut
    /// at a [`BLOCK_SIZE`] boundary, survives.
    pub torn_write: f64,
    /// Given a tear, the probability that it keeps the write's full length
    /// instead, with a random non-empty subset of its blocks after the first
    /// lost: they read back as the durable bytes they replaced, zeros past the
    /// old end of the file. The length alone then looks right.
    pub torn_write_holes: f64,
    /// A write reports success and reaches the page cache, but never the
    /// medium: fsyncs skip it, and a power loss reverts it.
    pub lost_write: f64,
    /// A write reaches the medium at the wrong place: when it is fsynced,
    /// its bytes land one or more blocks away from where they belong (the
    /// page cache shows them where they belong until a power loss).
    pub misdirected_write: f64,
    /// A failed fsync drops the dirty pages it failed to write, as Linux
    /// does ("fsyncgate"): they read back fine from the page cache and the
    /// next fsync succeeds, but they never reach the medium.
    pub sync_error_drops_pages: bool,
    /// Directories follow the `sync_dir` rule too: a new directory survives
    /// a power loss only once its parent directory is fsynced.
    pub dir_entries_need_sync: bool,
    /// Total bytes the disk holds (volatile view); writes beyond fail with
    /// ENOSPC. 0 means unlimited.
    pub capacity_bytes: u64,
    /// Latency charged to every operation, uniform in [min, max] microseconds.
    pub latency_min_us: u64,
    pub latency_max_us: u64,
    /// Extra latency charged to every fsync, uniform in [min, max] microseconds.
    pub sync_latency_min_us: u64,
    pub sync_latency_max_us: u64,
}

/// Which fault was injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    ReadCorruption,
    BitRot,
    WriteError,
    SyncError,
    NoSpace,
    TornWrite,
    LostWrite,
    MisdirectedWrite,
    LostDirectory,
}

/// One thing the disk did, for the simulator's trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DiskEvent {
    Write {
        path: String,
        offset: u64,
        len: u64,
    },
    Sync {
        path: String,
    },
    SyncDir {
        path: String,
    },
    Create {
        path: String,
    },
    CreateDir {
        path: String,
    },
    /// The process died; the page cache survived.
    ProcessCrash,
    Rename {
        from: String,
        to: String,
    },
    Remove {
        path: String,
    },
    Truncate {
        path: String,
        len: u64,
    },
    Fault {
        kind: FaultKind,
        path: String,
        detail: String,
    },
    /// `holed` counts the torn writes (among `torn`) that kept their length
    /// but lost blocks inside it.
    Crash {
        files_reverted: usize,
        torn: usize,
        #[serde(default, skip_serializing_if = "is_zero")]
        holed: usize,
    },
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl fmt::Display for DiskEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskEvent::Write { path, offset, len } => write!(f, "write {path} @{offset} +{len}"),
            DiskEvent::Sync { path } => write!(f, "fsync {path}"),
            DiskEvent::SyncDir { path } => write!(f, "fsync-dir {path}"),
            DiskEvent::Create { path } => write!(f, "create {path}"),
            DiskEvent::CreateDir { path } => write!(f, "mkdir {path}"),
            DiskEvent::ProcessCrash => write!(f, "PROCESS CRASH: page cache kept, handles closed"),
            DiskEvent::Rename { from, to } => write!(f, "rename {from} -> {to}"),
            DiskEvent::Remove { path } => write!(f, "remove {path}"),
            DiskEvent::Truncate { path, len } => write!(f, "truncate {path} to {len}"),
            DiskEvent::Fault { kind, path, detail } => write!(f, "FAULT {kind:?} {path}: {detail}"),
            DiskEvent::Crash { files_reverted, torn, holed } => {
                write!(f, "CRASH {files_reverted} files reverted, {torn} torn writes")?;
                // Only when there are any, so traces of runs without holes keep their hashes.
                if *holed > 0 {
                    write!(f, " ({holed} with holes)")?;
                }
                Ok(())
            }
        }
    }
}

/// A simulated disk. Clones share the same disk.
#[derive(Clone)]
pub struct SimDisk {
    inner: Arc<Mutex<Disk>>,
}

/// An inode: the bytes behind one or more names.
struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Byte range of `data` that may differ from `durable`, beyond length changes.
    dirty: Option<(u64, u64)>,
    /// The last write since the last sync: the candidate for tearing.
    last_write: Option<(u64, u64)>,
    /// Writes since the last sync that will never reach the medium.
    lost: Vec<(u64, u64)>,
    /// Writes since the last sync that will reach the medium shifted by the
    /// given number of bytes: (offset, length, shift).
    misdirected: Vec<(u64, u64, i64)>,
    /// Open handles; an unnamed inode is freed when the last one closes.
    handles: usize,
}

impl Inode {
    fn new() -> Self {
        Inode {
            data: Vec::new(),
            durable: Vec::new(),
            dirty: None,
            last_write: None,
            lost: Vec::new(),
            misdirected: Vec::new(),
            handles: 0,
        }
    }

    fn is_synced(&self) -> bool {
        self.dirty.is_none() && self.data.len() == self.durable.len()
    }

    fn mark_dirty(&mut self, lo: u64, hi: u64) {
        self.dirty = Some(match self.dirty {
            Some((a, b)) => (a.min(lo), b.max(hi)),
            None => (lo, hi),
        });
    }

    fn sync(&mut self) {
        let len = self.data.len();
        let before = self.durable.clone();
        self.durable.resize(len, 0);
        if let Some((lo, hi)) = self.dirty.take() {
            let (lo, hi) = ((lo as usize).min(len), (hi as usize).min(len));
            self.durable[lo..hi].copy_from_slice(&self.data[lo..hi]);
        }
        let old = |i: usize| before.get(i).copied().unwrap_or(0);
        // A lost or misdirected write leaves what the medium had before.
        for (off, n, _) in self.lost.iter().map(|&(o, n)| (o, n, 0)).chain(self.misdirected.iter().copied()) {
            for i in (off as usize)..((off + n) as usize).min(len) {
                self.durable[i] = old(i);
            }
        }
        for (off, n, shift) in std::mem::take(&mut self.misdirected) {
            for i in (off as usize)..((off + n) as usize).min(len) {
                let to = i as i64 + shift;
                if to >= 0 && (to as usize) < len {
                    self.durable[to as usize] = self.data[i];
                }
            }
        }
        self.lost.clear();
        self.last_write = None;
        assert_eq!(self.data.len(), self.durable.len());
    }

    /// A failed fsync that drops the dirty pages: they are clean now as far
    /// as the page cache knows, but the medium never got them.
    fn drop_dirty_pages(&mut self) {
        self.dirty = None;
        self.last_write = None;
        self.lost.clear();
        self.misdirected.clear();
        if self.data.len() < self.durable.len() {
            self.durable.truncate(self.data.len());
        }
    }
}

struct Disk {
    rng: ChaCha8Rng,
    faults: DiskFaults,
    dirs: BTreeSet<PathBuf>,
    /// Directories created but not yet made durable by an fsync of their
    /// parent (only with `dir_entries_need_sync`).
    volatile_dirs: BTreeSet<PathBuf>,
    /// File entries as reads see them.
    names: BTreeMap<PathBuf, u64>,
    /// File entries as a crash leaves them.
    durable_names: BTreeMap<PathBuf, u64>,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    /// Bytes in the volatile view of all inodes.
    used: u64,
    /// Bumped by every crash; handles from an older generation are dead.
    generation: u64,
    latency: Duration,
    events: Vec<DiskEvent>,
    /// Forced transient read corruptions still to inject, by file path (see
    /// [`SimDisk::corrupt_next_reads`]).
    forced_read_corruption: BTreeMap<PathBuf, u32>,
}

/// How a crash tears a file's last unsynced write.
enum Tear {
    /// The bytes of the write before `cut` survive; the file ends there (or
    /// at its durable length, if that is longer).
    Prefix { off: u64, cut: u64 },
    /// The whole write's length survives, but the blocks starting at `lost`
    /// (each [`BLOCK_SIZE`] long, clipped to the write) keep their durable bytes.
    Holes { off: u64, end: u64, lost: Vec<u64> },
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

fn os_err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn parent_of(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl Disk {
    fn chance(&mut self, p: f64) -> bool {
        // Only draw when the fault is enabled, so a perfect disk consumes no randomness.
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    fn charge(&mut self, sync: bool) {
        let mut us = self.draw_range(self.faults.latency_min_us, self.faults.latency_max_us);
        if sync {
            us += self.draw_range(self.faults.sync_latency_min_us, self.faults.sync_latency_max_us);
        }
        self.latency += Duration::from_micros(us);
    }

    fn draw_range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            self.rng.random_range(lo..=hi)
        }
    }

    fn fault(&mut self, kind: FaultKind, path: &Path, detail: String) {
        self.events.push(DiskEvent::Fault { kind, path: show(path), detail });
    }

    fn dir_exists(&self, p: &Path) -> bool {
        p.as_os_str().is_empty() || p == Path::new("/") || self.dirs.contains(p)
    }

    /// Free an inode nobody can reach any more.
    fn collect(&mut self, ino: u64) {
        let reachable = self.names.values().any(|&i| i == ino) || self.durable_names.values().any(|&i| i == ino);
        if let Some(node) = self.inodes.get(&ino) {
            if node.handles == 0 && !reachable {
                self.used -= node.data.len() as u64;
                self.inodes.remove(&ino);
            }
        }
    }

    fn inode(&mut self, ino: u64, generation: u64) -> io::Result<&mut Inode> {
        if generation != self.generation {
            return Err(io::Error::other(StaleHandle));
        }
        self.inodes.get_mut(&ino).ok_or_else(|| os_err(ESTALE))
    }

    /// Resize an inode's volatile view, honouring the capacity limit.
    fn resize(&mut self, ino: u64, path: &Path, new_len: u64) -> io::Result<()> {
        let old_len = self.inodes[&ino].data.len() as u64;
        if new_len > old_len {
            let cap = self.faults.capacity_bytes;
            if cap > 0 && self.used + (new_len - old_len) > cap {
                self.fault(
                    FaultKind::NoSpace,
                    path,
                    format!("need {} bytes, {} of {cap} used", new_len - old_len, self.used),
                );
                return Err(os_err(ENOSPC));
            }
        }
        let node = self.inodes.get_mut(&ino).expect("inode checked by caller");
        node.data.resize(new_len as usize, 0);
        if new_len > old_len {
            // The new bytes (zeros or about to be written) are not durable yet.
            node.mark_dirty(old_len, new_len);
        }
        self.used = self.used - old_len + new_len;
        Ok(())
    }

    /// The process died, not the machine: handles die, the page cache stays.
    fn process_crash(&mut self) {
        self.generation += 1;
        for node in self.inodes.values_mut() {
            node.handles = 0;
        }
        let inos: Vec<u64> = self.inodes.keys().copied().collect();
        for ino in inos {
            self.collect(ino);
        }
        self.events.push(DiskEvent::ProcessCrash);
    }

    fn crash(&mut self) {
        self.generation += 1;
        // Directories never made durable vanish with everything under them.
        let gone: Vec<PathBuf> = std::mem::take(&mut self.volatile_dirs).into_iter().collect();
        for dir in &gone {
            self.dirs.retain(|p| !p.starts_with(dir));
            self.durable_names.retain(|p, _| !p.starts_with(dir));
            let detail = "its parent was never fsynced after it was created".to_string();
            self.fault(FaultKind::LostDirectory, dir, detail);
        }
        self.names = self.durable_names.clone();
        let live: BTreeSet<u64> = self.names.values().copied().collect();
        let dead: Vec<u64> = self.inodes.keys().copied().filter(|i| !live.contains(i)).collect();
        let mut reverted = dead.len();
        for ino in dead {
            self.inodes.remove(&ino);
        }
        let mut torn = 0;
        let mut holed = 0;
        let names: Vec<(PathBuf, u64)> = self.names.iter().map(|(p, &i)| (p.clone(), i)).collect();
        for (path, ino) in names {
            // Compared byte for byte: a lost write or dropped pages leave a
            // file that fsync calls clean but whose medium differs.
            let synced = {
                let node = &self.inodes[&ino];
                node.is_synced() && node.data == node.durable
            };
            if synced {
                self.inodes.get_mut(&ino).expect("live inode").handles = 0;
                continue;
            }
            reverted += 1;
            let last_write = self.inodes[&ino].last_write;
            let written = self.inodes[&ino].data.len() as u64;
            let tear = match last_write {
                Some((off, len)) if len > 0 && self.chance(self.faults.torn_write) => self.draw_tear(off, len, written),
                _ => None,
            };
            let node = self.inodes.get_mut(&ino).expect("live inode");
            let mut data = node.durable.clone();
            let len = last_write.map_or(0, |w| w.1);
            match tear {
                Some(Tear::Prefix { off, cut }) => {
                    if data.len() < cut as usize {
                        data.resize(cut as usize, 0);
                    }
                    data[off as usize..cut as usize].copy_from_slice(&node.data[off as usize..cut as usize]);
                    torn += 1;
                    let detail = format!("kept {} of {len} bytes written at {off}", cut - off);
                    self.fault(FaultKind::TornWrite, &path, detail);
                }
                Some(Tear::Holes { off, end, lost }) => {
                    let old = data.clone();
                    if data.len() < end as usize {
                        data.resize(end as usize, 0);
                    }
                    data[off as usize..end as usize].copy_from_slice(&node.data[off as usize..end as usize]);
                    for &at in &lost {
                        let hole_end = ((at / BLOCK_SIZE + 1) * BLOCK_SIZE).min(end) as usize;
                        for (i, b) in data[at as usize..hole_end].iter_mut().enumerate() {
                            *b = old.get(at as usize + i).copied().unwrap_or(0);
                        }
                    }
                    torn += 1;
                    holed += 1;
                    let lost: Vec<String> = lost.iter().map(u64::to_string).collect();
                    let detail = format!(
                        "kept the length of {len} bytes written at {off} but lost the {}-byte blocks at {}",
                        BLOCK_SIZE,
                        lost.join(", ")
                    );
                    self.fault(FaultKind::TornWrite, &path, detail);
                }
                None => {}
            }
            let node = self.inodes.get_mut(&ino).expect("live inode");
            node.durable = data.clone();
            node.data = data;
            node.dirty = None;
            node.last_write = None;
            node.lost.clear();
            node.misdirected.clear();
            node.handles = 0;
        }
        self.used = self.inodes.values().map(|n| n.data.len() as u64).sum();
        self.events.push(DiskEvent::Crash { files_reverted: reverted, torn, holed });
    }

    /// How to tear a write of `len` bytes at `off` in a file whose volatile
    /// length is `file_len`; `None` if it cannot be torn (it lies within one
    /// block, so it reaches the medium whole or not at all).
    fn draw_tear(&mut self, off: u64, len: u64, file_len: u64) -> Option<Tear> {
        // Block boundaries strictly inside the write: the cut points of a
        // prefix, and the starts of the blocks a hole can take.
        let first = (off / BLOCK_SIZE + 1) * BLOCK_SIZE;
        let end = (off + len).min(file_len);
        if first >= end {
            return None;
        }
        let blocks = (end - 1 - first) / BLOCK_SIZE + 1;
        if self.chance(self.faults.torn_write_holes) {
            // Any block may be lost, the write's first (partial) block too:
            // then the head of the write (a record batch header, say) reads
            // back as the old bytes while the rest arrived. Each block is
            // lost at even odds, at least one, never all.
            let starts: Vec<u64> = std::iter::once(off).chain((0..blocks).map(|k| first + k * BLOCK_SIZE)).collect();
            let mut lost: Vec<u64> = starts.iter().copied().filter(|_| self.rng.random_bool(0.5)).collect();
            if lost.len() == starts.len() {
                lost.remove(self.rng.random_range(0..lost.len()));
            }
            if lost.is_empty() {
                lost.push(starts[self.rng.random_range(0..starts.len())]);
            }
            return Some(Tear::Holes { off, end, lost });
        }
        let k = self.rng.random_range(0..blocks);
        Some(Tear::Prefix { off, cut: first + k * BLOCK_SIZE })
    }
}

/// Marker error for a handle opened before a crash.
#[derive(Debug)]
struct StaleHandle;

impl fmt::Display for StaleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stale file handle: opened before a crash")
    }
}

impl std::error::Error for StaleHandle {}

impl SimDisk {
    /// A disk whose faults are drawn from `seed`.
    pub fn new(seed: u64, faults: DiskFaults) -> Self {
        let disk = Disk {
            rng: ChaCha8Rng::seed_from_u64(seed),
            faults,
            dirs: BTreeSet::new(),
            volatile_dirs: BTreeSet::new(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            inodes: BTreeMap::new(),
            next_ino: 1,
            used: 0,
            generation: 0,
            latency: Duration::ZERO,
            events: Vec::new(),
            forced_read_corruption: BTreeMap::new(),
        };
        SimDisk { inner: Arc::new(Mutex::new(disk)) }
    }

    /// A disk that never fails (until faults are set).
    pub fn perfect(seed: u64) -> Self {
        Self::new(seed, DiskFaults::default())
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        // A panic while holding the lock already failed the simulation; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change the fault configuration from now on.
    pub fn set_faults(&self, faults: DiskFaults) {
        self.lock().faults = faults;
    }

    pub fn faults(&self) -> DiskFaults {
        self.lock().faults.clone()
    }

    /// The host crashed: every file reverts to its durable content and the
    /// namespace to its durable entries; handles opened before are dead.
    pub fn crash(&self) {
        self.lock().crash();
    }

    /// The host's process died but its operating system did not: open
    /// handles are dead, and everything written, synced or not, stays.
    pub fn process_crash(&self) {
        self.lock().process_crash();
    }

    /// Latency charged since the last call; the simulator sleeps it.
    pub fn take_latency(&self) -> Duration {
        std::mem::take(&mut self.lock().latency)
    }

    /// Events since the last call, oldest first.
    pub fn drain_events(&self) -> Vec<DiskEvent> {
        std::mem::take(&mut self.lock().events)
    }

    /// The volatile content of the file at `path`, if it exists.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let guard = self.lock();
        let d = &*guard;
        d.names.get(path).map(|i| d.inodes[i].data.clone())
    }

    /// The durable content of the file at `path`: what a crash would leave
    /// under that name.
    pub fn durable_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let guard = self.lock();
        let d = &*guard;
        d.durable_names.get(path).map(|i| d.inodes[i].durable.clone())
    }

    /// Flip one bit on the medium (both views), as bit rot would. Returns
    /// false if the file or byte does not exist.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> bool {
        let mut guard = self.lock();
        let d = &mut *guard;
        let Some(&ino) = d.names.get(path) else {
            return false;
        };
        let node = d.inodes.get_mut(&ino).expect("named inode");
        let mut hit = false;
        for view in [&mut node.data, &mut node.durable] {
            if let Some(b) = view.get_mut(offset as usize) {
                *b ^= 1 << (bit % 8);
                hit = true;
            }
        }
        if hit {
            d.fault(FaultKind::BitRot, path, format!("bit {} of byte {offset} flipped", bit % 8));
        }
        hit
    }

    /// Make the next `n` reads of the file at `path` (through any handle
    /// opened under that name) return one flipped bit each, as
    /// [`DiskFaults::read_corruption`] does, whatever the probabilities: a
    /// transient fault a test can aim. The medium stays intact.
    pub fn corrupt_next_reads(&self, path: &Path, n: u32) {
        self.lock().forced_read_corruption.insert(path.to_path_buf(), n);
    }

    /// Bytes in the volatile view of all files.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used
    }
}

impl Fs for SimDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut guard = self.lock();
        let d = &mut *guard;
        if d.names.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} is a file", show(path))));
        }
        for anc in path.ancestors() {
            if !anc.as_os_str().is_empty() && d.dirs.insert(anc.to_path_buf()) {
                if d.faults.dir_entries_need_sync && anc != Path::new("/") {
                    d.volatile_dirs.insert(anc.to_path_buf());
                }
                d.events.push(DiskEvent::CreateDir { path: show(anc) });
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let guard = self.lock();
        let d = &*guard;
        if !d.dir_exists(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no directory {}", show(path))));
        }
        let mut out: Vec<PathBuf> =
            d.names.keys().chain(d.dirs.iter()).filter(|p| p.parent() == Some(path)).cloned().collect();
        out.sort();
        Ok(out)
    }

    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<Box<dyn File>> {
        let mut guard = self.lock();
        let d = &mut *guard;
        d.charge(false);
        if d.dirs.contains(path) {
            return Err(io::Error::other(format!("{} is a directory", show(path))));
        }
        let ino = match d.names.get(path).copied() {
            Some(_) if opts.create_new => {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, show(path)));
            }
            Some(ino) => {
                if opts.truncate {
                    d.resize(ino, path, 0)?;
                    let node = d.inodes.get_mut(&ino).expect("named inode");
                    node.last_write = None;
                    d.events.push(DiskEvent::Truncate { path: show(path), len: 0 });
                }
                ino
            }
            None if opts.create || opts.create_new => {
                if !d.dir_exists(&parent_of(path)) {
                    return Err(io::Error::new(io::ErrorKind::NotFound, format!("no directory for {}", show(path))));
                }
                let ino = d.next_ino;
                d.next_ino += 1;
                d.inodes.insert(ino, Inode::new());
                d.names.insert(path.to_path_buf(), ino);
                d.events.push(DiskEvent::Create { path: show(path) });
                ino
            }
            None => return Err(io::Error::new(io::ErrorKind::NotFound, format!("no file {}", show(path)))),
        };
        d.inodes.get_mut(&ino).expect("named inode").handles += 1;
        let generation = d.generation;
        Ok(Box::new(SimFile { disk: self.inner.clone(), ino, generation, path: path.to_path_buf() }))
    }

    fn exists(&self, path: &Path) -> bool {
        let guard = self.lock();
        let d = &*guard;
        d.names.contains_key(path) || d.dir_exists(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.lock().dir_exists(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut guard = self.lock();
        let d = &mut *guard;
        d.charge(false);
        let ino = d
            .names
            .remove(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {}", show(path))))?;
        d.events.push(DiskEvent::Remove { path: show(path) });
        d.collect(ino);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut guard = self.lock();
        let d = &mut *guard;
        d.charge(false);
        if !d.dirs.contains(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no directory {}", show(path))));
        }
        // Directory removal is modelled as immediately durable (see module docs).
        d.dirs.retain(|p| !p.starts_with(path));
        let mut gone = Vec::new();
        for names in [&mut d.names, &mut d.durable_names] {
            let doomed: Vec<PathBuf> = names.keys().filter(|p| p.starts_with(path)).cloned().collect();
            for p in doomed {
                gone.extend(names.remove(&p));
            }
        }
        d.events.push(DiskEvent::Remove { path: show(path) });
        for ino in gone {
            d.collect(ino);
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut guard = self.lock();
        let d = &mut *guard;
        d.charge(false);
        if d.dirs.contains(from) {
            // Directory renames move whole subtrees and, like all directory
            // operations here, are durable at once.
            if d.names.contains_key(to) || d.dirs.contains(to) {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, show(to)));
            }
            let moved = |p: &Path| to.join(p.strip_prefix(from).expect("prefix checked"));
            d.dirs = d.dirs.iter().map(|p| if p.starts_with(from) { moved(p) } else { p.clone() }).collect();
            d.dirs.insert(to.to_path_buf());
            for names in [&mut d.names, &mut d.durable_names] {
                *names =
                    names.iter().map(|(p, &i)| (if p.starts_with(from) { moved(p) } else { p.clone() }, i)).collect();
            }
        } else {
            if d.dirs.contains(to) {
                return Err(io::Error::other(format!("{} is a directory", show(to))));
            }
            if !d.dir_exists(&parent_of(to)) {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("no directory for {}", show(to))));
            }
            let ino = d
                .names
                .remove(from)
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {}", show(from))))?;
            if let Some(old) = d.names.insert(to.to_path_buf(), ino) {
                d.collect(old);
            }
        }
        d.events.push(DiskEvent::Rename { from: show(from), to: show(to) });
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut guard = self.lock();
        let d = &mut *guard;
        d.charge(true);
        if !d.dir_exists(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no directory {}", show(path))));
        }
        if d.chance(d.faults.sync_error) {
            d.fault(FaultKind::SyncError, path, "directory fsync failed with EIO".into());
            return Err(os_err(EIO));
        }
        let child = |p: &PathBuf| p.parent() == Some(path);
        d.volatile_dirs.retain(|p| !child(p));
        let mut dropped: Vec<u64> = d.durable_names.iter().filter(|(p, _)| child(p)).map(|(_, &i)| i).collect();
        d.durable_names.retain(|p, _| !child(p));
        let now: Vec<(PathBuf, u64)> = d.names.iter().filter(|(p, _)| child(p)).map(|(p, &i)| (p.clone(), i)).collect();
        d.durable_names.extend(now);
        d.events.push(DiskEvent::SyncDir { path: show(path) });
        dropped.dedup();
        for ino in dropped {
            d.collect(ino);
        }
        Ok(())
    }
}

/// An open file on a [`SimDisk`].
struct SimFile {
    disk: Arc<Mutex<Disk>>,
    ino: u64,
    generation: u64,
    path: PathBuf,
}

impl SimFile {
    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl File for SimFile {
    fn len(&self) -> io::Result<u64> {
        let mut guard = self.lock();
        let d = &mut *guard;
        Ok(d.inode(self.ino, self.generation)?.data.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut guard = self.lock();
        let d = &mut *guard;
        let generation = self.generation;
        d.inode(self.ino, generation)?;
        d.charge(false);
        let len = d.inodes[&self.ino].data.len() as u64;
        if offset >= len || buf.is_empty() {
            return Ok(0);
        }
        let n = (len - offset).min(buf.len() as u64) as usize;
        if d.chance(d.faults.bit_rot) {
            let pos = offset as usize + d.rng.random_range(0..n);
            let bit = d.rng.random_range(0..8u8);
            let node = d.inodes.get_mut(&self.ino).expect("checked inode");
            node.data[pos] ^= 1 << bit;
            if let Some(b) = node.durable.get_mut(pos) {
                *b ^= 1 << bit;
            }
            d.fault(FaultKind::BitRot, &self.path, format!("bit {bit} of byte {pos} flipped on the medium"));
        }
        let start = offset as usize;
        buf[..n].copy_from_slice(&d.inodes[&self.ino].data[start..start + n]);
        let forced = match d.forced_read_corruption.get_mut(&self.path) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        };
        // Forced first, so that an aimed fault draws no randomness of its own
        // beyond where the bit lands.
        if forced || d.chance(d.faults.read_corruption) {
            let pos = d.rng.random_range(0..n);
            let bit = d.rng.random_range(0..8u8);
            buf[pos] ^= 1 << bit;
            d.fault(
                FaultKind::ReadCorruption,
                &self.path,
                format!("bit {bit} of byte {} flipped in transit", offset as usize + pos),
            );
        }
        Ok(n)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut guard = self.lock();
        let d = &mut *guard;
        d.inode(self.ino, self.generation)?;
        d.charge(false);
        if d.chance(d.faults.write_error) {
            d.fault(
                FaultKind::WriteError,
                &self.path,
                format!("write of {} bytes at {offset} failed with EIO", buf.len()),
            );
            return Err(os_err(EIO));
        }
        let end = offset + buf.len() as u64;
        if end > d.inodes[&self.ino].data.len() as u64 {
            d.resize(self.ino, &self.path, end)?;
        }
        let lost = d.chance(d.faults.lost_write);
        let shift = if !lost && d.chance(d.faults.misdirected_write) {
            let blocks = d.rng.random_range(1..=4i64) * BLOCK_SIZE as i64;
            let shift = if d.rng.random_bool(0.5) || (offset as i64) < blocks { blocks } else { -blocks };
            let detail = format!("write of {} bytes at {offset} will land {shift:+} bytes off", buf.len());
            d.fault(FaultKind::MisdirectedWrite, &self.path, detail);
            Some(shift)
        } else {
            None
        };
        if lost {
            let detail = format!("write of {} bytes at {offset} will never reach the medium", buf.len());
            d.fault(FaultKind::LostWrite, &self.path, detail);
        }
        let node = d.inodes.get_mut(&self.ino).expect("checked inode");
        node.data[offset as usize..end as usize].copy_from_slice(buf);
        node.mark_dirty(offset, end);
        node.last_write = Some((offset, buf.len() as u64));
        if lost {
            node.lost.push((offset, buf.len() as u64));
        }
        if let Some(shift) = shift {
            node.misdirected.push((offset, buf.len() as u64, shift));
        }
        d.events.push(DiskEvent::Write { path: show(&self.path), offset, len: buf.len() as u64 });
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut guard = self.lock();
        let d = &mut *guard;
        d.inode(self.ino, self.generation)?;
        d.charge(false);
        d.resize(self.ino, &self.path, len)?;
        let node = d.inodes.get_mut(&self.ino).expect("checked inode");
        if let Some((off, n)) = node.last_write {
            if off + n > len {
                node.last_write = None;
            }
        }
        d.events.push(DiskEvent::Truncate { path: show(&self.path), len });
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut guard = self.lock();
        let d = &mut *guard;
        d.inode(self.ino, self.generation)?;
        d.charge(true);
        if d.chance(d.faults.sync_error) {
            if d.faults.sync_error_drops_pages {
                d.inodes.get_mut(&self.ino).expect("checked inode").drop_dirty_pages();
                d.fault(FaultKind::SyncError, &self.path, "fsync failed with EIO; its dirty pages are dropped".into());
            } else {
                d.fault(FaultKind::SyncError, &self.path, "fsync failed with EIO".into());
            }
            return Err(os_err(EIO));
        }
        d.inodes.get_mut(&self.ino).expect("checked inode").sync();
        d.events.push(DiskEvent::Sync { path: show(&self.path) });
        Ok(())
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut guard = self.lock();
        let d = &mut *guard;
        if d.generation != self.generation {
            return;
        }
        if let Some(node) = d.inodes.get_mut(&self.ino) {
            node.handles -= 1;
        }
        d.collect(self.ino);
    }
}

#[cfg(test)]
mod tests;
