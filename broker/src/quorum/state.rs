//! The quorum state a voter must not forget: the current epoch, whom it
//! voted for in that epoch, and the leader it knows of. Kafka keeps the same
//! in `quorum-state`.
//!
//! The core emits it as [`super::Output::PersistQuorumState`]; the shell
//! writes it durably before acting on any later output of the same batch (a
//! vote granted and then forgotten in a crash lets a voter vote twice in one
//! epoch). [`QuorumStateFile`] is that write: two copies, each written
//! atomically (temporary file, fsync, rename, fsync of the directory), each
//! 24 bytes with its own CRC, so a medium that rots one copy loses nothing.
//!
//! Layout (big-endian):
//!
//! ```text
//! 0 magic "FLQS"   4 version i16 (1)   6 reserved i16 (0)
//! 8 epoch i32      12 voted_for i32 (-1 none)   16 leader_id i32 (-1 none)
//! 20 crc32c u32 of bytes 0..20
//! ```
//!
//! Loading takes the newest valid copy: the higher epoch, and within one
//! epoch the one that records more (a vote or a leader, which only ever get
//! set within an epoch).

use std::path::{Path, PathBuf};

use crate::io::{write_atomically, Fs, OpenOptions};

const MAGIC: &[u8; 4] = b"FLQS";
const VERSION: i16 = 1;
/// Size of one encoded copy.
pub const ENCODED_LEN: usize = 24;
const FILE_NAME: &str = "quorum-state";
const COPY_NAME: &str = "quorum-state.copy";

/// What a voter persists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuorumState {
    /// The highest epoch this node has seen; never decreases.
    pub epoch: i32,
    /// The candidate this node voted for in `epoch`.
    pub voted_for: Option<i32>,
    /// The leader of `epoch`, once known.
    pub leader_id: Option<i32>,
}

impl QuorumState {
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut b = [0u8; ENCODED_LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_be_bytes());
        b[8..12].copy_from_slice(&self.epoch.to_be_bytes());
        b[12..16].copy_from_slice(&self.voted_for.unwrap_or(-1).to_be_bytes());
        b[16..20].copy_from_slice(&self.leader_id.unwrap_or(-1).to_be_bytes());
        let crc = crc32c::crc32c(&b[..20]);
        b[20..24].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// The state in `b`, or why it is not one.
    pub fn decode(b: &[u8]) -> Result<QuorumState, String> {
        if b.len() != ENCODED_LEN {
            return Err(format!("{} bytes, expected {ENCODED_LEN}", b.len()));
        }
        if &b[0..4] != MAGIC {
            return Err("bad magic".into());
        }
        let crc = u32::from_be_bytes(b[20..24].try_into().expect("4 bytes"));
        if crc != crc32c::crc32c(&b[..20]) {
            return Err("CRC mismatch".into());
        }
        let version = i16::from_be_bytes([b[4], b[5]]);
        if version != VERSION {
            return Err(format!("unknown version {version}"));
        }
        let int = |at: usize| i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        let id = |v: i32| (v >= 0).then_some(v);
        let epoch = int(8);
        if epoch < 0 {
            return Err(format!("negative epoch {epoch}"));
        }
        Ok(QuorumState { epoch, voted_for: id(int(12)), leader_id: id(int(16)) })
    }

    /// Order of recency between two valid copies.
    fn recency(&self) -> (i32, bool, bool) {
        (self.epoch, self.voted_for.is_some(), self.leader_id.is_some())
    }

    /// The newest of the copies that decode; `None` if none was given.
    /// Errors only when copies were given and every one is damaged.
    pub fn newest<'a>(copies: impl IntoIterator<Item = &'a [u8]>) -> Result<Option<QuorumState>, String> {
        let mut best: Option<QuorumState> = None;
        let mut damaged = Vec::new();
        for c in copies {
            match QuorumState::decode(c) {
                Ok(s) if best.is_none_or(|b| s.recency() > b.recency()) => best = Some(s),
                Ok(_) => {}
                Err(e) => damaged.push(e),
            }
        }
        match best {
            None if !damaged.is_empty() => {
                Err(format!("every copy of the quorum state is damaged: {}", damaged.join("; ")))
            }
            b => Ok(b),
        }
    }
}

/// The two copies of the quorum state in a directory.
pub struct QuorumStateFile {
    paths: [PathBuf; 2],
}

impl QuorumStateFile {
    pub fn new(dir: &Path) -> QuorumStateFile {
        QuorumStateFile { paths: [dir.join(FILE_NAME), dir.join(COPY_NAME)] }
    }

    /// The persisted state; `None` on a fresh node. Both copies damaged is
    /// an error: the node might have voted, so it must not start.
    pub fn load(&self, fs: &dyn Fs) -> anyhow::Result<Option<QuorumState>> {
        let mut copies = Vec::new();
        for path in &self.paths {
            if !fs.exists(path) {
                continue;
            }
            let file = fs.open(path, OpenOptions::EXISTING)?;
            let len = file.len()?.min(ENCODED_LEN as u64 + 1) as usize;
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, 0)?;
            copies.push(buf);
        }
        QuorumState::newest(copies.iter().map(|c| &c[..])).map_err(anyhow::Error::msg)
    }

    /// Write both copies durably, one after the other: a crash leaves at
    /// least one whole copy, old or new.
    pub fn store(&self, fs: &dyn Fs, state: &QuorumState) -> std::io::Result<()> {
        let bytes = state.encode();
        for path in &self.paths {
            write_atomically(fs, path, &bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::real::RealIo;

    #[test]
    fn round_trips_and_refuses_damage() {
        let s = QuorumState { epoch: 7, voted_for: Some(2), leader_id: None };
        let b = s.encode();
        assert_eq!(QuorumState::decode(&b), Ok(s));
        for i in 0..ENCODED_LEN {
            let mut d = b;
            d[i] ^= 0x10;
            assert!(QuorumState::decode(&d).is_err(), "flip at byte {i} not caught");
        }
        assert!(QuorumState::decode(&b[..20]).is_err());
    }

    #[test]
    fn newest_copy_wins_and_one_damaged_copy_is_survived() {
        let old = QuorumState { epoch: 3, voted_for: None, leader_id: None }.encode();
        let voted = QuorumState { epoch: 3, voted_for: Some(1), leader_id: None }.encode();
        let newer = QuorumState { epoch: 4, voted_for: None, leader_id: None }.encode();
        assert_eq!(QuorumState::newest([&old[..], &voted[..]]).unwrap().unwrap().voted_for, Some(1));
        assert_eq!(QuorumState::newest([&newer[..], &voted[..]]).unwrap().unwrap().epoch, 4);
        let mut rotten = newer;
        rotten[9] ^= 1;
        assert_eq!(QuorumState::newest([&rotten[..], &voted[..]]).unwrap().unwrap().voted_for, Some(1));
        assert!(QuorumState::newest([&rotten[..]]).is_err());
        assert_eq!(QuorumState::newest(std::iter::empty()).unwrap(), None);
    }

    #[test]
    fn file_store_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealIo::new().fs();
        let f = QuorumStateFile::new(dir.path());
        assert_eq!(f.load(&*fs).unwrap(), None);
        let s = QuorumState { epoch: 9, voted_for: Some(1), leader_id: Some(1) };
        f.store(&*fs, &s).unwrap();
        assert_eq!(f.load(&*fs).unwrap(), Some(s));
        write_atomically(&*fs, &dir.path().join(FILE_NAME), b"garbage").unwrap();
        assert_eq!(f.load(&*fs).unwrap(), Some(s));
        write_atomically(&*fs, &dir.path().join(COPY_NAME), b"garbage").unwrap();
        assert!(f.load(&*fs).is_err());
    }
}
