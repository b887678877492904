//! Sparse segment indexes: the offset index (relative offset -> file position)
//! and the time index (max timestamp so far -> relative offset), Kafka's
//! `.index` and `.timeindex` files.
//!
//! Entries live in memory and are appended to the file only when the segment
//! is flushed, so an append costs no index I/O. An index is derived data: when
//! its file is missing or fails [`IndexFile::load`]'s checks, recovery rebuilds
//! it from the log.

use std::io;
use std::path::Path;

use crate::io::{File, Fs, OpenOptions};

/// One fixed-size, big-endian index entry.
pub(super) trait Entry: Copy + PartialEq + std::fmt::Debug {
    const SIZE: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(buf: &[u8]) -> Self;
    /// The key lookups search by; strictly increasing along the index.
    fn key(&self) -> i64;
}

/// Offset index entry: the last offset of a batch (relative to the segment
/// base) and the batch's position in the segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl Entry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn decode(buf: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes(buf[0..4].try_into().expect("entry size")),
            position: u32::from_be_bytes(buf[4..8].try_into().expect("entry size")),
        }
    }
    fn key(&self) -> i64 {
        self.relative_offset as i64
    }
}

/// Time index entry: the largest timestamp seen so far in the segment and
/// the (relative) offset of the batch carrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl Entry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn decode(buf: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64::from_be_bytes(buf[0..8].try_into().expect("entry size")),
            relative_offset: u32::from_be_bytes(buf[8..12].try_into().expect("entry size")),
        }
    }
    fn key(&self) -> i64 {
        self.timestamp
    }
}

/// An index file and its in-memory entries.
pub(super) struct IndexFile<E: Entry> {
    file: Box<dyn File>,
    entries: Vec<E>,
    /// Entries already written to the file.
    written: usize,
    /// The file holds stale entries past `written`, to be cut at the next flush.
    stale_tail: bool,
    needs_sync: bool,
}

impl<E: Entry> IndexFile<E> {
    /// Open (creating if absent) with no entries loaded.
    pub fn open(fs: &dyn Fs, path: &Path) -> io::Result<Self> {
        let file = fs.open(path, OpenOptions::CREATE)?;
        Ok(IndexFile { file, entries: Vec::new(), written: 0, stale_tail: false, needs_sync: false })
    }

    /// Load the entries on file, checking them with `valid` (given the
    /// previous entry). On any damage, explain it; the caller rebuilds.
    pub fn load(&mut self, valid: impl Fn(Option<&E>, &E) -> bool) -> Result<(), String> {
        let len = self.file.len().map_err(|e| format!("cannot stat: {e}"))? as usize;
        if !len.is_multiple_of(E::SIZE) {
            return Err(format!("size {len} is not a multiple of {}", E::SIZE));
        }
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, 0).map_err(|e| format!("cannot read: {e}"))?;
        let mut entries = Vec::with_capacity(len / E::SIZE);
        for chunk in buf.chunks_exact(E::SIZE) {
            let e = E::decode(chunk);
            if !valid(entries.last(), &e) {
                return Err(format!("entry {} ({e:?}) is out of order or points beyond the log", entries.len()));
            }
            entries.push(e);
        }
        self.written = entries.len();
        self.entries = entries;
        Ok(())
    }

    /// Drop all entries, on file too; the caller re-adds them.
    pub fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.entries.clear();
        self.written = 0;
        self.needs_sync = true;
        Ok(())
    }

    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    pub fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    pub fn push(&mut self, e: E) {
        invariant!(self.entries.last().is_none_or(|l| l.key() < e.key()), "index keys must increase");
        self.entries.push(e);
    }

    /// Keep the longest prefix of entries that satisfy `keep`.
    pub fn truncate_where(&mut self, keep: impl Fn(&E) -> bool) {
        let n = self.entries.partition_point(keep);
        self.truncate(n);
    }

    /// Keep the first `n` entries; the file follows at the next flush.
    pub fn truncate(&mut self, n: usize) {
        self.entries.truncate(n);
        if self.written > n {
            self.written = n;
            self.stale_tail = true;
        }
    }

    /// The last entry whose key is <= `key`.
    pub fn floor(&self, key: i64) -> Option<&E> {
        let n = self.entries.partition_point(|e| e.key() <= key);
        n.checked_sub(1).map(|i| &self.entries[i])
    }

    /// The last entry whose key is < `key`.
    pub fn below(&self, key: i64) -> Option<&E> {
        let n = self.entries.partition_point(|e| e.key() < key);
        n.checked_sub(1).map(|i| &self.entries[i])
    }

    /// Write entries not yet on file, trim any the file has beyond ours,
    /// and fsync.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.stale_tail {
            self.file.set_len((self.written * E::SIZE) as u64)?;
            self.stale_tail = false;
            self.needs_sync = true;
        }
        if self.written < self.entries.len() {
            let mut buf = Vec::with_capacity((self.entries.len() - self.written) * E::SIZE);
            for e in &self.entries[self.written..] {
                e.encode(&mut buf);
            }
            self.file.write_at(&buf, (self.written * E::SIZE) as u64)?;
            self.written = self.entries.len();
            self.needs_sync = true;
        }
        if self.needs_sync {
            self.file.sync()?;
            self.needs_sync = false;
        }
        Ok(())
    }
}
