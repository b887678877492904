//! One log segment: a `.log` file of batches starting at a base offset, with
//! its offset and time indexes. Owns appending, locating an offset, reading
//! whole batches, scanning (validating) its file and truncating.
//!
//! Only open-time recovery ([`Segment::recover`], [`Segment::load`]) cuts the
//! file where its bytes stop making sense, and even it reads a bad batch again
//! before believing it: a read can be corrupted in transit while the medium is
//! fine. Everywhere else the cut point comes from state held in memory (an
//! append is undone with [`Segment::rollback`]) or from batches that read back
//! intact ([`Segment::truncate_to`]); bytes that do not check out make the
//! operation fail, never cut deeper.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::index::{IndexFile, OffsetEntry, TimeEntry};
use super::StorageError;
use crate::io::{File, Fs, OpenOptions};
use crate::record_batch::{self as batch, BatchHeader, HEADER_SIZE};

/// Timestamp of a segment with no batches (Kafka's `NO_TIMESTAMP`).
pub(super) const NO_TIMESTAMP: i64 = -1;

/// Bytes read at a time when scanning a segment.
const SCAN_CHUNK: usize = 1 << 20;
/// Smallest read when locating an offset.
const MIN_READ_CHUNK: usize = 16 << 10;
/// Reads of a batch that does not check out before believing it is bad. A
/// bit flipped in transit (a flaky cable, controller or DMA) is gone on the
/// next read; rot on the medium is not. Three reads make a transient fault
/// that lands on the same batch every time vanishingly rare, at the cost of
/// two extra reads where the log really is torn, which happens once per crash.
const READ_ATTEMPTS: u32 = 3;

pub(super) const LOG_SUFFIX: &str = "log";
const SUFFIXES: [&str; 3] = [LOG_SUFFIX, "index", "timeindex"];

/// Path of a segment file: the base offset, 20 digits, zero padded.
pub(super) fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}"))
}

/// The base offset a segment file name encodes, if it is one of ours.
pub(super) fn parse_segment_name(path: &Path) -> Option<(i64, &str)> {
    let name = path.file_name()?.to_str()?;
    let (stem, suffix) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) || !SUFFIXES.contains(&suffix) {
        return None;
    }
    Some((stem.parse().ok()?, suffix))
}

/// What the segment holds, as far as its valid batches go.
#[derive(Debug, Clone, Copy)]
struct Tail {
    size: u64,
    next_offset: i64,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    /// Max timestamp of the first batch: the clock `segment.ms` rolls by.
    first_batch_timestamp: Option<i64>,
    bytes_since_index_entry: u64,
}

impl Tail {
    fn empty(base_offset: i64) -> Self {
        Tail {
            size: 0,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            first_batch_timestamp: None,
            bytes_since_index_entry: 0,
        }
    }
}

pub(super) struct Segment {
    base_offset: i64,
    log: Box<dyn File>,
    index: IndexFile<OffsetEntry>,
    time_index: IndexFile<TimeEntry>,
    index_interval_bytes: u64,
    tail: Tail,
    needs_sync: bool,
    /// The index files did not exist when the segment was opened.
    index_missing: bool,
    /// The file may hold bytes past `tail.size` that are not part of the log
    /// (a cut back after a failed append did not go through): cut them
    /// before the next write or fsync, so they can never be read as batches.
    stale_end: bool,
}

/// The state of a segment before an append, to undo it exactly.
#[derive(Debug, Clone, Copy)]
pub(super) struct AppendMark {
    tail: Tail,
    index_len: usize,
    time_index_len: usize,
}

/// Positioned reads through a buffer, so that walking many small batch
/// headers costs few reads.
struct Reader<'a> {
    file: &'a dyn File,
    limit: u64,
    chunk: usize,
    start: u64,
    buf: Vec<u8>,
}

impl<'a> Reader<'a> {
    fn new(file: &'a dyn File, limit: u64, chunk: usize) -> Self {
        Reader { file, limit, chunk, start: 0, buf: Vec::new() }
    }

    /// Forget what was read, so the next [`Reader::get`] reads the file again.
    fn invalidate(&mut self) {
        self.buf.clear();
    }

    /// `len` bytes at `pos`; `None` if they lie beyond the limit.
    fn get(&mut self, pos: u64, len: usize) -> io::Result<Option<&[u8]>> {
        if pos + len as u64 > self.limit {
            return Ok(None);
        }
        let have = pos >= self.start && pos + len as u64 <= self.start + self.buf.len() as u64;
        if !have {
            let n = (len.max(self.chunk) as u64).min(self.limit - pos) as usize;
            self.buf.resize(n, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            self.start = pos;
        }
        let at = (pos - self.start) as usize;
        Ok(Some(&self.buf[at..at + len]))
    }
}

/// Record a batch just placed at `pos` in the segment's state and indexes,
/// with Kafka's rule: an index entry once more than `index.interval.bytes`
/// were added since the last one.
fn note_batch(
    tail: &mut Tail,
    index: &mut IndexFile<OffsetEntry>,
    time_index: &mut IndexFile<TimeEntry>,
    base_offset: i64,
    interval: u64,
    pos: u64,
    h: &BatchHeader,
) {
    if h.max_timestamp > tail.max_timestamp {
        tail.max_timestamp = h.max_timestamp;
        tail.offset_of_max_timestamp = h.last_offset();
    }
    if tail.bytes_since_index_entry > interval {
        let relative_offset = (h.last_offset() - base_offset) as u32;
        // Offsets only go backwards under a planted bug; keep the index sorted regardless.
        if index.last().is_none_or(|e| e.relative_offset < relative_offset) {
            index.push(OffsetEntry { relative_offset, position: pos as u32 });
        }
        let relative_offset = (tail.offset_of_max_timestamp - base_offset) as u32;
        if time_index.last().is_none_or(|e| e.timestamp < tail.max_timestamp) {
            time_index.push(TimeEntry { timestamp: tail.max_timestamp, relative_offset });
        }
        tail.bytes_since_index_entry = 0;
    }
    tail.bytes_since_index_entry += h.size() as u64;
    tail.first_batch_timestamp.get_or_insert(h.max_timestamp);
    tail.size = pos + h.size() as u64;
    tail.next_offset = h.next_offset();
}

impl Segment {
    /// Open the segment's files (creating any that are missing). Its state
    /// is empty until [`Segment::recover`] or [`Segment::load`] reads the log.
    pub fn open(fs: &dyn Fs, dir: &Path, base_offset: i64, index_interval_bytes: u64) -> io::Result<Segment> {
        let index_missing = ["index", "timeindex"].iter().any(|s| !fs.exists(&segment_path(dir, base_offset, s)));
        Ok(Segment {
            index_missing,
            base_offset,
            log: fs.open(&segment_path(dir, base_offset, LOG_SUFFIX), OpenOptions::CREATE)?,
            index: IndexFile::open(fs, &segment_path(dir, base_offset, "index"))?,
            time_index: IndexFile::open(fs, &segment_path(dir, base_offset, "timeindex"))?,
            index_interval_bytes,
            tail: Tail::empty(base_offset),
            needs_sync: false,
            stale_end: false,
        })
    }

    /// A new, empty segment; stale files under its name are emptied.
    pub fn create(fs: &dyn Fs, dir: &Path, base_offset: i64, index_interval_bytes: u64) -> io::Result<Segment> {
        let mut seg = Segment::open(fs, dir, base_offset, index_interval_bytes)?;
        seg.index_missing = false;
        seg.log.set_len(0)?;
        seg.index.reset()?;
        seg.time_index.reset()?;
        Ok(seg)
    }

    /// PLANTED BUG `duplicate_offset_after_crash`: hand out offsets from
    /// `offset` again although the segment already holds them.
    pub fn reuse_offsets_from(&mut self, offset: i64) {
        self.tail.next_offset = offset;
    }

    /// Remove a segment's files; missing files are fine.
    pub fn delete_files(fs: &dyn Fs, dir: &Path, base_offset: i64) -> io::Result<()> {
        for suffix in SUFFIXES {
            match fs.remove_file(&segment_path(dir, base_offset, suffix)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn size(&self) -> u64 {
        self.tail.size
    }
    pub fn next_offset(&self) -> i64 {
        self.tail.next_offset
    }
    pub fn first_batch_timestamp(&self) -> Option<i64> {
        self.tail.first_batch_timestamp
    }
    /// Length of the log file, which may exceed [`Segment::size`] before recovery.
    pub fn file_len(&self) -> io::Result<u64> {
        self.log.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tail.size == 0
    }
    /// The offset of the last offset-index entry, if any.
    pub fn last_indexed_offset(&self) -> Option<i64> {
        self.index.last().map(|e| self.base_offset + e.relative_offset as i64)
    }

    /// Append batches already given their offsets, in one write. On failure
    /// the file is cut back and the segment is unchanged.
    pub fn append(&mut self, buf: &[u8], headers: &[(usize, BatchHeader)]) -> io::Result<()> {
        self.trim_stale_end()?;
        let pos = self.tail.size;
        invariant!(headers.first().map(|(p, _)| *p) == Some(0), "an append's first batch starts its buffer");
        if let Err(e) = self.log.write_at(buf, pos) {
            // A failed write may have left a partial tail. If cutting it
            // fails too, the next write or fsync tries again.
            self.stale_end = true;
            let _ = self.trim_stale_end();
            return Err(e);
        }
        let Segment { tail, index, time_index, base_offset, index_interval_bytes, .. } = self;
        for (p, h) in headers {
            invariant!(
                h.base_offset == tail.next_offset,
                "offsets must be dense: batch at {} appended where segment {base_offset} continues at {}",
                h.base_offset,
                tail.next_offset
            );
            note_batch(tail, index, time_index, *base_offset, *index_interval_bytes, pos + *p as u64, h);
        }
        invariant!(self.tail.size == pos + buf.len() as u64, "the batches of an append fill its buffer exactly");
        self.needs_sync = true;
        Ok(())
    }

    /// fsync the log, and with `indexes` write and fsync the indexes too.
    /// The active segment's indexes can wait: recovery always rescans the
    /// active segment, so they matter only once it is rolled.
    pub fn flush(&mut self, indexes: bool) -> io::Result<()> {
        self.trim_stale_end()?;
        if self.needs_sync {
            self.log.sync()?;
            self.needs_sync = false;
        }
        if indexes {
            self.index.flush()?;
            self.time_index.flush()?;
        }
        Ok(())
    }

    /// Whether the log file has been fsynced since it last changed.
    pub fn is_synced(&self) -> bool {
        !self.needs_sync && !self.stale_end
    }

    /// Where the segment stands, for [`Segment::rollback`].
    pub fn mark(&self) -> AppendMark {
        AppendMark {
            tail: self.tail,
            index_len: self.index.entries().len(),
            time_index_len: self.time_index.entries().len(),
        }
    }

    /// Undo every append since `mark`: back to the size, next offset and
    /// index entries held then. Nothing is read — those are known — so no
    /// bad read can move the cut. If the file cannot be cut back now, the
    /// segment remembers to do it before its next write or fsync; the
    /// in-memory state is restored either way.
    pub fn rollback(&mut self, mark: AppendMark) -> io::Result<()> {
        invariant!(
            mark.tail.size <= self.tail.size && mark.tail.next_offset <= self.tail.next_offset,
            "a rollback only goes back"
        );
        self.tail = mark.tail;
        self.index.truncate(mark.index_len);
        self.time_index.truncate(mark.time_index_len);
        self.stale_end = true;
        self.trim_stale_end()
    }

    /// Cut bytes past the segment's size left by an append that was undone.
    fn trim_stale_end(&mut self) -> io::Result<()> {
        if self.stale_end {
            self.log.set_len(self.tail.size)?;
            self.stale_end = false;
            // The cut must reach the medium too, or a crash could bring the
            // undone batches back.
            self.needs_sync = true;
        }
        Ok(())
    }

    /// Rebuild everything from the log file: every batch validated from the
    /// start, indexes rebuilt. The segment then holds only the batches
    /// before the first bad one, if any.
    pub fn recover(&mut self, check_crc: bool) -> io::Result<Recovered> {
        let log_len = self.log.len()?;
        let on_file = match self.index.load(|_, e| (e.position as u64) < log_len) {
            Ok(()) if !(self.index_missing && log_len > 0) => Some(self.index.entries().to_vec()),
            _ => None,
        };
        self.index.reset()?;
        self.time_index.reset()?;
        self.tail = Tail::empty(self.base_offset);
        // What was read may still be only in the page cache: make it durable
        // before the log vouches for it.
        self.needs_sync = true;
        let problem = self.scan_from(0, self.base_offset, check_crc)?;
        let size = self.tail.size;
        let rebuilt = self.index.entries();
        let index_was_damaged = on_file.is_none_or(|old| {
            let old: Vec<_> = old.into_iter().filter(|e| (e.position as u64) < size).collect();
            old.len() > rebuilt.len() || rebuilt[..old.len()] != old[..]
        });
        Ok(Recovered { problem, index_was_damaged })
    }

    /// Trust the log up to its last offset-index entry, loaded from file, and
    /// validate only what follows. `Err` explains why the indexes cannot be
    /// trusted (the caller then calls [`Segment::recover`]).
    pub fn load(&mut self, check_crc: bool) -> io::Result<Result<Option<String>, String>> {
        let log_len = self.log.len()?;
        let base = self.base_offset;
        if self.index_missing && log_len > 0 {
            return Ok(Err("index files missing".into()));
        }
        if let Err(why) = self.index.load(|prev, e| {
            (e.position as u64) < log_len
                && prev.is_none_or(|p| p.relative_offset < e.relative_offset && p.position < e.position)
        }) {
            return Ok(Err(format!("offset index: {why}")));
        }
        if let Err(why) = self.time_index.load(|prev, e| prev.is_none_or(|p| p.timestamp < e.timestamp)) {
            return Ok(Err(format!("time index: {why}")));
        }
        self.tail = Tail::empty(base);
        let Some(entry) = self.index.last().copied() else {
            return Ok(Ok(self.scan_from(0, base, check_crc)?));
        };
        let pos = entry.position as u64;
        let mut reader = Reader::new(&*self.log, log_len, HEADER_SIZE);
        let header = reader.get(pos, HEADER_SIZE)?.and_then(|b| BatchHeader::parse(b).ok());
        let Some(h) = header.filter(|h| h.last_offset() == base + entry.relative_offset as i64) else {
            return Ok(Err(format!("offset index entry {entry:?} does not point at its batch")));
        };
        if let Some(t) = self.time_index.last() {
            self.tail.max_timestamp = t.timestamp;
            self.tail.offset_of_max_timestamp = base + t.relative_offset as i64;
        }
        // The first batch's timestamp is not indexed; read it for the roll clock.
        if let Some(first) = reader.get(0, HEADER_SIZE)?.and_then(|b| BatchHeader::parse(b).ok()) {
            self.tail.first_batch_timestamp = Some(first.max_timestamp);
        }
        Ok(Ok(self.scan_from(pos, h.base_offset, check_crc)?))
    }

    /// Validate batches from `pos` (where offset `expected` must start) to
    /// the end of the file, noting each. Stops at the first bad one, cuts the
    /// file there, and explains. Open-time recovery only: this is the one
    /// place that cuts the log because of what it read, so a batch is read
    /// [`READ_ATTEMPTS`] times before it is judged bad.
    fn scan_from(&mut self, mut pos: u64, mut expected: i64, check_crc: bool) -> io::Result<Option<String>> {
        let len = self.log.len()?;
        let mut problem = None;
        {
            let Segment { log, tail, index, time_index, base_offset, index_interval_bytes, .. } = self;
            let mut reader = Reader::new(&**log, len, SCAN_CHUNK);
            let mut attempt = 1;
            while pos < len {
                match check_batch(&mut reader, pos, len, expected, check_crc)? {
                    Ok(h) => {
                        if attempt > 1 {
                            tracing::warn!(
                                segment = *base_offset,
                                pos,
                                attempt,
                                "batch read back intact: an earlier read was corrupted in transit"
                            );
                        }
                        note_batch(tail, index, time_index, *base_offset, *index_interval_bytes, pos, &h);
                        expected = h.next_offset();
                        pos += h.size() as u64;
                        attempt = 1;
                    }
                    Err(why) if attempt < READ_ATTEMPTS => {
                        tracing::debug!(segment = *base_offset, pos, attempt, %why, "reading the batch again");
                        attempt += 1;
                        reader.invalidate();
                    }
                    Err(why) => {
                        problem = Some(why);
                        break;
                    }
                }
            }
        }
        if problem.is_some() {
            self.cut(pos)?;
        }
        Ok(problem)
    }

    /// Cut the log file at `pos`, dropping index entries at or past it.
    fn cut(&mut self, pos: u64) -> io::Result<()> {
        self.log.set_len(pos)?;
        self.index.truncate_where(|e| (e.position as u64) < pos);
        let next = self.tail.next_offset;
        self.time_index.truncate_where(|e| self.base_offset + (e.relative_offset as i64) < next);
        self.needs_sync = true;
        Ok(())
    }

    /// Position of the batch holding `offset` (or the first after it), with
    /// its header; `None` if the segment ends before `offset`.
    fn locate(&self, offset: i64, reader: &mut Reader<'_>) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let floor = self.index.floor(offset - self.base_offset);
        let mut pos = floor.map_or(0, |e| e.position as u64);
        // Offsets are dense: each batch continues the one before, starting
        // from the index entry (or the segment's base). A header that does
        // not is damage on the medium, reported instead of skipped, so a
        // fetch never returns nothing forever at a rotted batch.
        // An index entry names the last offset of the batch at its position.
        let mut first_last = floor.map(|e| self.base_offset + e.relative_offset as i64);
        let mut expected = self.base_offset;
        while pos < self.tail.size {
            let h = self.header_at(reader, pos)?;
            let continues = match first_last.take() {
                Some(last) => h.last_offset() == last,
                None => h.base_offset == expected,
            };
            if !continues {
                return Err(StorageError::CorruptMessage(format!(
                    "batch at byte {pos} of segment {} holds offsets {}..={}, which do not continue the log",
                    self.base_offset,
                    h.base_offset,
                    h.last_offset()
                )));
            }
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            expected = h.next_offset();
            pos += h.size() as u64;
        }
        Ok(None)
    }

    fn header_at(&self, reader: &mut Reader<'_>, pos: u64) -> Result<BatchHeader, StorageError> {
        let bytes = reader.get(pos, HEADER_SIZE)?.ok_or_else(|| {
            StorageError::CorruptMessage(format!("segment {} ends inside the header at byte {pos}", self.base_offset))
        })?;
        let h = BatchHeader::parse(bytes)?;
        if pos + h.size() as u64 > self.tail.size {
            return Err(StorageError::CorruptMessage(format!(
                "batch at byte {pos} runs past segment {}",
                self.base_offset
            )));
        }
        Ok(h)
    }

    /// Whole batches from the one holding `offset`, while they fit in
    /// `max_bytes` (the first one regardless if `min_one`), none whose last
    /// offset reaches `max_offset`. Returns the bytes and the offset after
    /// them; `None` if the segment ends before `offset`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one: bool,
    ) -> Result<Option<(Bytes, i64)>, StorageError> {
        let chunk = max_bytes.clamp(MIN_READ_CHUNK, SCAN_CHUNK.max(max_bytes));
        let mut reader = Reader::new(&*self.log, self.tail.size, chunk);
        let Some((start, first)) = self.locate(offset, &mut reader)? else {
            return Ok(None);
        };
        let mut end = start;
        let mut next = first.base_offset;
        let mut h = first;
        loop {
            let fits = (end - start) + h.size() as u64 <= max_bytes as u64 || (min_one && end == start);
            if h.last_offset() >= max_offset || !fits {
                if end == start && end + (h.size() as u64) < self.tail.size {
                    // Nothing to return, yet a batch follows: it must continue
                    // this one, or this header's offsets are damaged and the
                    // fetch would wait for them forever.
                    let after = self.header_at(&mut reader, end + h.size() as u64)?;
                    if after.base_offset != h.next_offset() {
                        return Err(StorageError::CorruptMessage(format!(
                            "batch at byte {end} of segment {} ends at offset {}, but the next starts at {}",
                            self.base_offset,
                            h.last_offset(),
                            after.base_offset
                        )));
                    }
                }
                break;
            }
            end += h.size() as u64;
            next = h.next_offset();
            if end >= self.tail.size {
                break;
            }
            h = self.header_at(&mut reader, end)?;
        }
        let len = (end - start) as usize;
        let bytes = reader.get(start, len)?.expect("range checked against the segment size");
        Ok(Some((Bytes::copy_from_slice(bytes), next)))
    }

    /// Call `f` with the header of every batch from the one holding `offset`
    /// to the end of the segment, in order. Only headers are parsed; each
    /// must continue the offsets of the one before, so a damaged read fails
    /// the walk instead of feeding it nonsense.
    pub fn for_each_header(&self, offset: i64, f: &mut dyn FnMut(&BatchHeader)) -> Result<(), StorageError> {
        let mut reader = Reader::new(&*self.log, self.tail.size, MIN_READ_CHUNK);
        let Some((mut pos, mut h)) = self.locate(offset, &mut reader)? else {
            return Ok(());
        };
        loop {
            f(&h);
            pos += h.size() as u64;
            if pos >= self.tail.size {
                return Ok(());
            }
            let next = self.header_at(&mut reader, pos)?;
            if next.base_offset != h.next_offset() {
                return Err(StorageError::CorruptMessage(format!(
                    "batch at byte {pos} of segment {} starts at offset {}, expected {}",
                    self.base_offset,
                    next.base_offset,
                    h.next_offset()
                )));
            }
            h = next;
        }
    }

    /// The first batch whose max timestamp is >= `ts`, as bytes.
    pub fn batch_at_timestamp(&self, ts: i64) -> Result<Option<Bytes>, StorageError> {
        if self.tail.max_timestamp < ts {
            return Ok(None);
        }
        let from = self.time_index.below(ts).map_or(self.base_offset, |e| self.base_offset + e.relative_offset as i64);
        let mut reader = Reader::new(&*self.log, self.tail.size, MIN_READ_CHUNK);
        let Some((mut pos, mut h)) = self.locate(from, &mut reader)? else {
            return Ok(None);
        };
        loop {
            if h.max_timestamp >= ts {
                let bytes = reader.get(pos, h.size())?.expect("checked by header_at");
                return Ok(Some(Bytes::copy_from_slice(bytes)));
            }
            pos += h.size() as u64;
            if pos >= self.tail.size {
                return Ok(None);
            }
            h = self.header_at(&mut reader, pos)?;
        }
    }

    /// Remove every batch at or after the one holding `offset`. Returns the
    /// bytes removed.
    ///
    /// The cut point has to be found by reading: from the last index entry
    /// before `offset`, every batch up to the cut is read whole and must
    /// continue the offsets and pass its CRC (re-read up to [`READ_ATTEMPTS`]
    /// times). If one never does, the segment is left untouched and the call
    /// fails: a bad read must not choose where the log ends.
    pub fn truncate_to(&mut self, offset: i64) -> Result<u64, StorageError> {
        if offset >= self.tail.next_offset {
            return Ok(0);
        }
        let base = self.base_offset;
        // Entries before the batch holding `offset` are exactly those whose
        // batch ends below it; they survive the cut.
        let start = self.index.below(offset - base).copied();
        let (mut pos, mut expected) = match start {
            Some(e) => (e.position as u64, Expect::Last(base + e.relative_offset as i64)),
            None => (0, Expect::Base(base)),
        };
        let mut kept: Vec<(u64, BatchHeader)> = Vec::new();
        let (cut, next) = loop {
            if pos >= self.tail.size {
                return Err(StorageError::CorruptMessage(format!(
                    "segment {base} ends at byte {pos} before offset {offset}"
                )));
            }
            let h = self.read_batch_checked(pos, expected)?;
            if h.last_offset() >= offset {
                break (pos, h.base_offset);
            }
            kept.push((pos, h));
            expected = Expect::Base(h.next_offset());
            pos += h.size() as u64;
        };
        // Everything checked out: now change the file, then the state.
        let removed = self.tail.size - cut;
        self.log.set_len(cut)?;
        self.stale_end = false;
        self.tail.next_offset = next;
        self.tail.size = cut;
        self.index.truncate_where(|e| (e.position as u64) < cut);
        self.time_index.truncate_where(|e| base + (e.relative_offset as i64) < next);
        self.needs_sync = true;
        // Rebuild the in-memory tail from the surviving indexes and the
        // batches just read, as the appends had built it.
        let first = self.tail.first_batch_timestamp;
        self.tail = Tail::empty(base);
        if let Some(t) = self.time_index.last() {
            self.tail.max_timestamp = t.timestamp;
            self.tail.offset_of_max_timestamp = base + t.relative_offset as i64;
        }
        if cut > 0 {
            self.tail.first_batch_timestamp = first;
        }
        let Segment { tail, index, time_index, index_interval_bytes, .. } = self;
        for (p, h) in &kept {
            note_batch(tail, index, time_index, base, *index_interval_bytes, *p, h);
        }
        invariant!(
            (self.tail.size, self.tail.next_offset) == (cut, next),
            "segment {base} after truncation: size and next offset match the cut"
        );
        Ok(removed)
    }

    /// The header of the batch at `pos`, read whole and checked: it lies
    /// within the segment, starts or ends at the offset `expected`, and
    /// passes its CRC. A failing batch is read again, up to [`READ_ATTEMPTS`]
    /// times, since a read can be corrupted in transit.
    fn read_batch_checked(&self, pos: u64, expected: Expect) -> Result<BatchHeader, StorageError> {
        let mut why = String::new();
        for attempt in 1..=READ_ATTEMPTS {
            match self.try_read_batch(pos, expected)? {
                Ok(h) => {
                    if attempt > 1 {
                        tracing::warn!(
                            segment = self.base_offset,
                            pos,
                            attempt,
                            "batch read back intact: an earlier read was corrupted in transit"
                        );
                    }
                    return Ok(h);
                }
                Err(e) => why = e,
            }
        }
        Err(StorageError::CorruptMessage(format!(
            "segment {}: batch at byte {pos} failed {READ_ATTEMPTS} reads: {why}",
            self.base_offset
        )))
    }

    fn try_read_batch(&self, pos: u64, expected: Expect) -> io::Result<Result<BatchHeader, String>> {
        let mut head = [0u8; HEADER_SIZE];
        if pos + HEADER_SIZE as u64 > self.tail.size {
            return Ok(Err("the segment ends inside the header".into()));
        }
        self.log.read_exact_at(&mut head, pos)?;
        let size = match BatchHeader::parse(&head) {
            Ok(h) => h.size(),
            Err(e) => return Ok(Err(e.to_string())),
        };
        if pos + size as u64 > self.tail.size {
            return Ok(Err(format!("a batch of {size} bytes runs past the segment")));
        }
        // One read for the whole batch, and everything judged from it: the
        // header read above only told how much to read.
        let mut bytes = vec![0u8; size];
        self.log.read_exact_at(&mut bytes, pos)?;
        let h = match BatchHeader::parse(&bytes).and_then(|h| h.validate_for_append().map(|()| h)) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if h.size() != size {
            return Ok(Err(format!("batch length read as {} and then {}", size, h.size())));
        }
        let offsets_ok = match expected {
            Expect::Base(b) => h.base_offset == b,
            Expect::Last(l) => h.last_offset() == l,
        };
        if !offsets_ok {
            return Ok(Err(format!("batch at offset {} where {expected:?} was expected", h.base_offset)));
        }
        if let Err(e) = batch::validate_crc(&h, &bytes) {
            return Ok(Err(e.to_string()));
        }
        Ok(Ok(h))
    }
}

/// Which offset a batch read during truncation must carry.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Its base offset: it follows a batch already read.
    Base(i64),
    /// Its last offset: an index entry points at it.
    Last(i64),
}

/// Read and check the batch at `pos` in a file of `len` bytes, for the
/// recovery scan: `Ok(Err(why))` if it is torn, malformed, out of sequence
/// or (with `check_crc`) fails its CRC.
fn check_batch(
    reader: &mut Reader<'_>,
    pos: u64,
    len: u64,
    expected: i64,
    check_crc: bool,
) -> io::Result<Result<BatchHeader, String>> {
    let Some(head) = reader.get(pos, HEADER_SIZE)? else {
        return Ok(Err(format!("torn batch header at byte {pos}")));
    };
    let h = match BatchHeader::parse(head).and_then(|h| h.validate_for_append().map(|()| h)) {
        Ok(h) => h,
        Err(e) => return Ok(Err(format!("at byte {pos}: {e}"))),
    };
    if h.base_offset != expected {
        return Ok(Err(format!("at byte {pos}: batch at offset {} where {expected} was expected", h.base_offset)));
    }
    let Some(bytes) = reader.get(pos, h.size())? else {
        return Ok(Err(format!("torn batch at byte {pos}: {} bytes, {} on file", h.size(), len - pos)));
    };
    // PLANTED BUG `skip_crc_on_recovery`: with `check_crc` false, corrupt
    // batches survive recovery and are served.
    if check_crc {
        if let Err(e) = batch::validate_crc(&h, bytes) {
            return Ok(Err(format!("at byte {pos}: {e}")));
        }
    }
    Ok(Ok(h))
}

/// What a full scan of a segment found.
pub(super) struct Recovered {
    /// Why the scan stopped before the end of the file, if it did.
    pub problem: Option<String>,
    /// The offset index on file was missing, unreadable or wrong.
    pub index_was_damaged: bool,
}
