//! The partition log proper: segments, rolling, flushing, reading, recovery.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::{AppendInfo, ReadResult, RecoveryReport, StorageError};
use crate::config::{LogConfig, PlantedBugs};
use crate::io::Fs;

/// One partition's log on one broker.
pub struct PartitionLog {
    _dir: PathBuf,
}

impl PartitionLog {
    /// Open (or create) the log in `dir`, recovering from any unclean shutdown.
    pub fn open(
        _fs: Arc<dyn Fs>,
        _dir: PathBuf,
        _config: LogConfig,
        _bugs: PlantedBugs,
        _now_ms: i64,
    ) -> Result<(PartitionLog, RecoveryReport), StorageError> {
        todo!("storage engine")
    }
    /// Validate and append one or more v2 record batches, assigning offsets.
    /// Does not fsync unless the flush policy says so; see [`Self::flush`].
    pub fn append(&mut self, _batches: &[u8], _now_ms: i64) -> Result<AppendInfo, StorageError> {
        todo!()
    }
    /// Read whole batches starting with the one containing `offset`, up to
    /// `max_bytes` (at least one batch is returned if any is available, as
    /// Kafka does), never past `max_offset` (exclusive; the high watermark).
    pub fn read(&self, _offset: i64, _max_bytes: usize, _max_offset: i64) -> Result<ReadResult, StorageError> {
        todo!()
    }
    /// fsync everything appended so far; advances the durable offset.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        todo!()
    }
    /// Flush if `flush.messages` or `flush.ms` says it is time. Returns whether it flushed.
    pub fn maybe_flush(&mut self, _now_ms: i64) -> Result<bool, StorageError> {
        todo!()
    }
    /// Roll the active segment if `segment.ms` has passed.
    pub fn maybe_roll(&mut self, _now_ms: i64) -> Result<(), StorageError> {
        todo!()
    }
    /// Remove everything at or after `offset` (for epoch-based truncation later).
    pub fn truncate_to(&mut self, _offset: i64) -> Result<(), StorageError> {
        todo!()
    }
    pub fn log_start_offset(&self) -> i64 {
        todo!()
    }
    pub fn log_end_offset(&self) -> i64 {
        todo!()
    }
    /// Offset up to which data is durable (fsynced).
    pub fn durable_offset(&self) -> i64 {
        todo!()
    }
    /// High watermark: on a single replica, the durable log end.
    pub fn high_watermark(&self) -> i64 {
        todo!()
    }
    /// First offset whose record timestamp is >= `ts`, with that timestamp.
    pub fn offset_for_timestamp(&self, _ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        todo!()
    }
    /// Bytes on disk across all segments.
    pub fn size_bytes(&self) -> u64 {
        todo!()
    }
    pub fn dir(&self) -> &PathBuf {
        &self._dir
    }
}

#[allow(dead_code)]
fn _unused(_: Bytes) {}
