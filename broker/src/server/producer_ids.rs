//! Producer id allocation for idempotent producers (InitProducerId).
//!
//! A producer id must never be handed out twice, across restarts and crashes
//! included: a reused id would make the partitions' producer state take a new
//! producer's batches for an old one's retries. Like Kafka's controller, ids
//! are reserved in blocks: `<data_dir>/producer_ids.json` records the end of
//! the reserved range, written atomically and synced *before* any id of the
//! block is given out. A crash may skip the rest of a block, never repeat it,
//! and only one request in [`BLOCK_SIZE`] waits for an fsync.
//!
//! The reservation is written to two files, each with a CRC-32C of its block
//! end, and loaded as the larger valid one: a medium that rots one copy (the
//! simulator's bit rot found this) neither stops the broker from starting nor
//! makes it hand out an id twice.
//!
//! In a cluster the reservation is the active controller's (KIP-730): a
//! broker asks for a block with AllocateProducerIds, whose answer is sent
//! only once the controller's `ProducerIds` record is committed, and hands
//! ids out of it ([`ControllerBlocks`]). Nothing is kept on the broker's
//! disk then: a restarted broker asks for a new block, skipping the rest of
//! the old one, never repeating it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::topics::write_atomically;
use crate::io::{DiskScope, Fs, OpenOptions};

/// Ids reserved per write; Kafka's controller hands out blocks of 1000.
pub const BLOCK_SIZE: i64 = 1000;
const FILE_NAME: &str = "producer_ids.json";
const COPY_NAME: &str = "producer_ids.copy.json";

/// The file's contents: every id below `block_end` may have been given out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reserved {
    block_end: i64,
    /// CRC-32C of `block_end`'s decimal text; absent in files written
    /// before copies carried one.
    #[serde(default)]
    crc: Option<u32>,
}

impl Reserved {
    fn new(block_end: i64) -> Reserved {
        Reserved { block_end, crc: Some(crc32c::crc32c(block_end.to_string().as_bytes())) }
    }

    fn valid(&self) -> bool {
        self.block_end >= 0 && self.crc.is_none_or(|c| c == crc32c::crc32c(self.block_end.to_string().as_bytes()))
    }
}

/// Cluster mode: the block of producer ids the active controller last gave
/// this broker. Cheap to clone; clones share the block, so a request that
/// awaits a new block can install it.
#[derive(Debug, Clone, Default)]
pub struct ControllerBlocks {
    block: Arc<Mutex<Block>>,
}

/// `[next, end)`: ids of a controller's block not yet handed out.
#[derive(Debug, Default)]
struct Block {
    next: i64,
    end: i64,
}

impl ControllerBlocks {
    /// The next id of the current block; `None` when it is used up (ask the
    /// controller for another).
    pub fn take(&self) -> Option<i64> {
        let mut b = self.block.lock().unwrap_or_else(|p| p.into_inner());
        invariant!(b.next <= b.end, "a producer id outside the controller's block");
        (b.next < b.end).then(|| {
            b.next += 1;
            b.next - 1
        })
    }

    /// A block `[start, start + len)` from the controller: hand out its
    /// first id and keep the rest, unless the current block still has ids
    /// (two requests fetched blocks at once); then the new block's rest is
    /// skipped, which costs ids but never repeats one. `None` for a block
    /// that is empty or negative.
    pub fn install_and_take(&self, start: i64, len: i32) -> Option<i64> {
        let end = start.checked_add(len as i64)?;
        if start < 0 || len <= 0 {
            return None;
        }
        let mut b = self.block.lock().unwrap_or_else(|p| p.into_inner());
        if b.next >= b.end {
            *b = Block { next: start + 1, end };
        }
        Some(start)
    }
}

struct State {
    /// The next id to hand out.
    next: i64,
    /// End (exclusive) of the block reserved on disk.
    block_end: i64,
}

/// Hands out fresh producer ids.
pub struct ProducerIds {
    fs: Arc<dyn Fs>,
    /// The reservation and its copy.
    paths: [PathBuf; 2],
    state: Mutex<State>,
    controller_blocks: ControllerBlocks,
}

impl ProducerIds {
    /// Load the reservation from `data_dir`. Ids resume after the last
    /// reserved block, whether or not all of it was used.
    pub fn open(fs: Arc<dyn Fs>, data_dir: &Path) -> anyhow::Result<ProducerIds> {
        let paths = [data_dir.join(FILE_NAME), data_dir.join(COPY_NAME)];
        let mut found = Vec::new();
        let mut damaged = Vec::new();
        for path in &paths {
            if !fs.exists(path) {
                continue;
            }
            match read_reservation(&*fs, path) {
                Ok(r) => found.push(r.block_end),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "a producer id reservation copy is damaged");
                    damaged.push(format!("{}: {e:#}", path.display()));
                }
            }
        }
        // Both copies damaged: nothing says which ids were handed out, so
        // refuse rather than risk giving one out twice.
        anyhow::ensure!(
            !found.is_empty() || damaged.is_empty(),
            "every copy of the producer id reservation is damaged: {}",
            damaged.join("; ")
        );
        let block_end = found.into_iter().max().unwrap_or(0);
        tracing::info!(next_producer_id = block_end, "producer ids loaded");
        Ok(ProducerIds {
            fs,
            paths,
            state: Mutex::new(State { next: block_end, block_end }),
            controller_blocks: ControllerBlocks::default(),
        })
    }

    /// Cluster mode: the blocks the controller gives this broker.
    pub fn controller_blocks(&self) -> ControllerBlocks {
        self.controller_blocks.clone()
    }

    /// A producer id never handed out before, reserving a new block on disk
    /// when the current one is used up.
    pub fn allocate(&self, _disk: &DiskScope) -> std::io::Result<i64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        assert!(s.next <= s.block_end);
        if s.next == s.block_end {
            let block_end = s
                .block_end
                .checked_add(BLOCK_SIZE)
                .ok_or_else(|| std::io::Error::other("producer ids are exhausted"))?;
            let json = serde_json::to_vec(&Reserved::new(block_end)).map_err(std::io::Error::other)?;
            // Durable before use, in both copies: the reservation is what a
            // restart resumes from.
            for path in &self.paths {
                write_atomically(&*self.fs, path, &json)?;
            }
            s.block_end = block_end;
            tracing::debug!(block_end, "reserved a block of producer ids");
        }
        let id = s.next;
        s.next += 1;
        assert!(s.next <= s.block_end, "a producer id outside its reserved block");
        Ok(id)
    }
}

fn read_reservation(fs: &dyn Fs, path: &Path) -> anyhow::Result<Reserved> {
    let file = fs.open(path, OpenOptions::EXISTING)?;
    let mut buf = vec![0u8; file.len()? as usize];
    file.read_exact_at(&mut buf, 0)?;
    let r: Reserved = serde_json::from_slice(&buf).context("not a producer id reservation")?;
    anyhow::ensure!(r.valid(), "block end {} fails its check", r.block_end);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::real::RealIo;

    #[test]
    fn ids_are_unique_across_reopens_and_reserved_in_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealIo::new().fs();
        let ids = ProducerIds::open(fs.clone(), dir.path()).unwrap();
        assert_eq!(
            (ids.allocate(&DiskScope::unmetered()).unwrap(), ids.allocate(&DiskScope::unmetered()).unwrap()),
            (0, 1)
        );
        // Reopening (a restart or crash) skips the rest of the block.
        let ids = ProducerIds::open(fs.clone(), dir.path()).unwrap();
        let first = ids.allocate(&DiskScope::unmetered()).unwrap();
        assert_eq!(first, BLOCK_SIZE);
        for expected in first + 1..first + BLOCK_SIZE + 5 {
            assert_eq!(ids.allocate(&DiskScope::unmetered()).unwrap(), expected);
        }
        let ids = ProducerIds::open(fs.clone(), dir.path()).unwrap();
        assert_eq!(ids.allocate(&DiskScope::unmetered()).unwrap(), 3 * BLOCK_SIZE);
    }

    #[test]
    fn a_damaged_reservation_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealIo::new().fs();
        write_atomically(&*fs, &dir.path().join(FILE_NAME), b"{\"block_end\": -5}").unwrap();
        assert!(ProducerIds::open(fs.clone(), dir.path()).is_err());
        write_atomically(&*fs, &dir.path().join(FILE_NAME), b"garbage").unwrap();
        assert!(ProducerIds::open(fs, dir.path()).is_err());
    }

    #[test]
    fn one_rotted_copy_is_survived_without_reusing_ids() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealIo::new().fs();
        let disk = DiskScope::unmetered();
        let ids = ProducerIds::open(fs.clone(), dir.path()).unwrap();
        for _ in 0..=BLOCK_SIZE {
            ids.allocate(&disk).unwrap();
        }
        // A flipped digit keeps the JSON valid but fails the CRC; garbage fails the parse.
        for (name, damage) in [(FILE_NAME, &b"{\"block_end\":2001,\"crc\":1}"[..]), (COPY_NAME, &b"garbage"[..])] {
            let ids = ProducerIds::open(fs.clone(), dir.path()).unwrap();
            ids.allocate(&disk).unwrap();
            write_atomically(&*fs, &dir.path().join(name), damage).unwrap();
            let reopened = ProducerIds::open(fs.clone(), dir.path()).unwrap();
            assert!(reopened.allocate(&disk).unwrap() >= 3 * BLOCK_SIZE, "an id was handed out twice");
        }
        // An older file with no CRC (a single copy) still loads.
        let old = tempfile::tempdir().unwrap();
        write_atomically(&*fs, &old.path().join(FILE_NAME), b"{\"block_end\": 7000}").unwrap();
        assert_eq!(ProducerIds::open(fs, old.path()).unwrap().allocate(&disk).unwrap(), 7000);
    }
}

#[cfg(test)]
mod controller_block_tests {
    use super::*;

    #[test]
    fn ids_come_from_the_controllers_blocks_only() {
        let blocks = ControllerBlocks::default();
        assert_eq!(blocks.take(), None, "no block yet");
        assert_eq!(blocks.install_and_take(3000, 3), Some(3000));
        let shared = blocks.clone();
        assert_eq!((shared.take(), blocks.take(), blocks.take()), (Some(3001), Some(3002), None));
        // Two blocks fetched at once: the second's rest is skipped while the first lasts.
        assert_eq!(blocks.install_and_take(5000, 2), Some(5000));
        assert_eq!(blocks.install_and_take(7000, 2), Some(7000));
        assert_eq!((blocks.take(), blocks.take()), (Some(5001), None));
        assert_eq!(blocks.install_and_take(-1, 1000), None);
        assert_eq!(blocks.install_and_take(9000, 0), None);
        assert_eq!(blocks.install_and_take(i64::MAX, 10), None);
    }
}
