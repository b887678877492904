//! The metadata log behind the quorum core: the [`RaftLog`] trait, an
//! in-memory [`MemoryLog`] for tests and the harness, and the record batches
//! the log holds.
//!
//! The log holds Kafka v2 record batches (the layout of
//! [`crate::record_batch`]), each stamped with the leader epoch that wrote
//! it, exactly as a partition log does: the leader assigns offsets and
//! stamps its epoch, followers store the leader's batches verbatim. The
//! trait's methods mirror [`crate::storage::PartitionLog`]'s
//! (`append_as_leader`, `append_as_follower`, `truncate_to`,
//! `end_offset_for_epoch`, `read`, `flush`, `durable_offset`), so a
//! `__cluster_metadata` partition can back it unchanged; what the partition
//! log lacks is the snapshot at the log start. [`super::DiskLog`] is that
//! durable log: a partition log plus snapshot files.
//!
//! Records are opaque bytes (the controller's own serde), one record per
//! entry, with no key. Each epoch opens with a LeaderChange control batch
//! (control record type 2, value a `LeaderChangeMessage` v0), as KRaft's.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::leader_change_message::{LeaderChangeMessage, Voter};
use kafka_protocol::protocol::Encodable;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};

use crate::client::batch::{encode_v2, OutRecord, ProducerFields};
use crate::record_batch::{self as batch, Batches, ValidatedBatches};
use crate::storage::leader_epoch::LeaderEpochCache;

/// The control record type of a LeaderChange (Kafka's `ControlRecordType`).
pub const LEADER_CHANGE_CONTROL_TYPE: i16 = 2;

/// A snapshot's identity: the application state through `end_offset`
/// (exclusive), whose last entry was written in `epoch` (Kafka's
/// `OffsetAndEpoch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotId {
    pub end_offset: i64,
    pub epoch: i32,
}

/// Why a log operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The batches do not continue the log (a stale fetch answer).
    #[error("append out of order: {0}")]
    OutOfOrder(String),
    #[error("offset {offset} outside the log [{start}, {end}]")]
    OutOfRange { offset: i64, start: i64, end: i64 },
    #[error("corrupt batch: {0}")]
    Corrupt(String),
    #[error("storage error: {0}")]
    Io(String),
}

/// What the quorum core needs of its log. Offsets are Kafka's; "epoch" is
/// the leader epoch stamped in each batch.
pub trait RaftLog {
    /// First offset held; the end offset of the snapshot, if any.
    fn log_start_offset(&self) -> i64;
    /// The log end offset: the next offset to be written.
    fn end_offset(&self) -> i64;
    /// Everything below this is on durable storage.
    fn durable_offset(&self) -> i64;
    /// The epoch of the last batch, else the snapshot's, else 0.
    fn last_epoch(&self) -> i32;
    /// The epoch of the batch holding `offset`, or the snapshot's epoch for
    /// `log_start_offset() - 1`; `None` outside the log.
    fn epoch_at(&self, offset: i64) -> Option<i32>;
    /// Kafka's OffsetForLeaderEpoch answer (as
    /// [`crate::storage::PartitionLog::end_offset_for_epoch`]): the largest
    /// epoch `<= epoch` in the log and the offset where it ended.
    fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64);
    /// Whole batches from the one holding `offset`, at least one if any,
    /// up to `max_bytes`.
    fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, LogError>;
    /// Append as the leader of `epoch`: offsets from the log end, the epoch
    /// stamped in every batch. Returns the first and last offsets.
    fn append_as_leader(&mut self, batches: &ValidatedBatches, epoch: i32) -> Result<(i64, i64), LogError>;
    /// Append the leader's batches verbatim; they must start at the log end.
    fn append_as_follower(&mut self, batches: &ValidatedBatches) -> Result<(), LogError>;
    /// Remove every batch at or after `offset`.
    fn truncate_to(&mut self, offset: i64) -> Result<(), LogError>;
    /// Make everything appended durable.
    fn flush(&mut self) -> Result<(), LogError>;
    /// The latest snapshot and its bytes.
    fn snapshot(&self) -> Option<(SnapshotId, Bytes)>;
    /// Durably keep `bytes` as the snapshot `id` and drop the log below
    /// `id.end_offset`. If the log does not hold `id`'s last entry (a
    /// follower installing its leader's snapshot), the whole log is replaced
    /// by one that starts at `id.end_offset`.
    fn store_snapshot(&mut self, id: SnapshotId, bytes: Bytes) -> Result<(), LogError>;
}

/// One stored batch of a [`MemoryLog`].
#[derive(Debug, Clone)]
struct StoredBatch {
    base_offset: i64,
    next_offset: i64,
    bytes: Bytes,
}

/// An in-memory [`RaftLog`] whose unflushed suffix is lost in a simulated
/// crash ([`MemoryLog::crash`]); snapshots are durable when stored.
#[derive(Debug, Clone, Default)]
pub struct MemoryLog {
    batches: Vec<StoredBatch>,
    epochs: LeaderEpochCache,
    snapshot: Option<(SnapshotId, Bytes)>,
    start: i64,
    durable: i64,
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// What survives a power loss: the flushed prefix and the snapshot.
    pub fn crash(&mut self) {
        let keep = self.batches.partition_point(|b| b.next_offset <= self.durable);
        self.batches.truncate(keep);
        self.epochs.truncate_from_end(self.end_offset());
    }

    fn index_of(&self, offset: i64) -> Option<usize> {
        let i = self.batches.partition_point(|b| b.next_offset <= offset);
        (i < self.batches.len() && self.batches[i].base_offset <= offset).then_some(i)
    }

    fn push(&mut self, bytes: Bytes, h: &batch::BatchHeader) {
        self.epochs.assign(h.partition_leader_epoch, h.base_offset);
        self.batches.push(StoredBatch { base_offset: h.base_offset, next_offset: h.next_offset(), bytes });
    }
}

impl RaftLog for MemoryLog {
    fn log_start_offset(&self) -> i64 {
        self.start
    }

    fn end_offset(&self) -> i64 {
        self.batches.last().map_or(self.start, |b| b.next_offset)
    }

    fn durable_offset(&self) -> i64 {
        self.durable.min(self.end_offset())
    }

    fn last_epoch(&self) -> i32 {
        match (self.batches.is_empty(), self.epochs.latest_epoch(), &self.snapshot) {
            (false, Some(e), _) => e,
            (_, _, Some((id, _))) => id.epoch,
            _ => 0,
        }
    }

    fn epoch_at(&self, offset: i64) -> Option<i32> {
        match &self.snapshot {
            Some((id, _)) if offset == id.end_offset - 1 && offset == self.start - 1 => Some(id.epoch),
            _ => self.index_of(offset).and_then(|_| self.epochs.epoch_for_offset(offset)),
        }
    }

    fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.end_offset())
    }

    fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        let end = self.end_offset();
        if offset < self.start || offset > end {
            return Err(LogError::OutOfRange { offset, start: self.start, end });
        }
        let Some(first) = self.index_of(offset) else {
            return Ok(Bytes::new());
        };
        let mut out = BytesMut::new();
        for b in &self.batches[first..] {
            if !out.is_empty() && out.len() + b.bytes.len() > max_bytes {
                break;
            }
            out.extend_from_slice(&b.bytes);
        }
        Ok(out.freeze())
    }

    fn append_as_leader(&mut self, batches: &ValidatedBatches, epoch: i32) -> Result<(i64, i64), LogError> {
        let base = self.end_offset();
        if self.epochs.latest_epoch().is_some_and(|l| l > epoch) {
            return Err(LogError::OutOfOrder(format!(
                "epoch {epoch} is older than the log's {:?}",
                self.epochs.latest_epoch()
            )));
        }
        let mut next = base;
        for (bytes, h) in batches.iter() {
            let mut stored = bytes.to_vec();
            batch::set_base_offset(&mut stored, next);
            batch::set_partition_leader_epoch(&mut stored, epoch);
            let mut h = *h;
            h.base_offset = next;
            h.partition_leader_epoch = epoch;
            next = h.next_offset();
            self.push(Bytes::from(stored), &h);
        }
        Ok((base, next - 1))
    }

    fn append_as_follower(&mut self, batches: &ValidatedBatches) -> Result<(), LogError> {
        let mut next = self.end_offset();
        let mut latest = self.last_epoch();
        for (_, h) in batches.iter() {
            if h.base_offset != next || h.partition_leader_epoch < latest {
                return Err(LogError::OutOfOrder(format!(
                    "batch at {} of epoch {} where the log continues at {next} in epoch {latest}",
                    h.base_offset, h.partition_leader_epoch
                )));
            }
            next = h.next_offset();
            latest = h.partition_leader_epoch;
        }
        for (bytes, h) in batches.iter() {
            self.push(batches.bytes().slice_ref(bytes), h);
        }
        Ok(())
    }

    fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        let offset = offset.max(self.start);
        let keep = self.batches.partition_point(|b| b.next_offset <= offset);
        self.batches.truncate(keep);
        let end = self.end_offset();
        self.epochs.truncate_from_end(end);
        // A truncation is durable at once, as the partition log's is.
        self.durable = self.durable.min(end);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), LogError> {
        self.durable = self.end_offset();
        Ok(())
    }

    fn snapshot(&self) -> Option<(SnapshotId, Bytes)> {
        self.snapshot.clone()
    }

    fn store_snapshot(&mut self, id: SnapshotId, bytes: Bytes) -> Result<(), LogError> {
        let holds_last =
            self.index_of(id.end_offset - 1).is_some() && self.epoch_at(id.end_offset - 1) == Some(id.epoch);
        if holds_last {
            let drop = self.batches.partition_point(|b| b.next_offset <= id.end_offset);
            invariant!(
                drop == self.batches.len() || self.batches[drop].base_offset == id.end_offset,
                "a snapshot must end on a batch boundary"
            );
            self.batches.drain(..drop);
        } else {
            self.batches.clear();
            self.epochs = LeaderEpochCache::new();
            self.durable = id.end_offset;
        }
        self.start = id.end_offset;
        self.durable = self.durable.max(self.start);
        self.snapshot = Some((id, bytes));
        Ok(())
    }
}

/// A batch of the log, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBatch {
    pub base_offset: i64,
    /// The leader epoch that wrote it.
    pub epoch: i32,
    /// A LeaderChange control batch (its one record is the encoded
    /// `LeaderChangeMessage`).
    pub control: bool,
    /// The records' values, one per offset from `base_offset`.
    pub records: Vec<Bytes>,
}

impl LogBatch {
    pub fn next_offset(&self) -> i64 {
        self.base_offset + self.records.len() as i64
    }
}

/// One v2 batch of `records` (offsets from 0; the leader assigns real ones).
pub fn data_batch(records: &[Bytes], now_ms: i64) -> Result<ValidatedBatches, LogError> {
    let out: Vec<OutRecord> = records
        .iter()
        .map(|v| OutRecord { key: None, value: Some(v.clone()), headers: Vec::new(), timestamp: now_ms })
        .collect();
    let bytes =
        encode_v2(&out, ProducerFields::NONE, Compression::None).map_err(|e| LogError::Corrupt(e.to_string()))?;
    ValidatedBatches::new(bytes).map_err(|e| LogError::Corrupt(e.0))
}

/// The LeaderChange control batch that opens `leader_id`'s epoch.
pub fn leader_change_batch(leader_id: i32, voters: &[i32], granting: &[i32], now_ms: i64) -> ValidatedBatches {
    let message = LeaderChangeMessage::default()
        .with_version(0)
        .with_leader_id(leader_id.into())
        .with_voters(voters.iter().map(|&v| Voter::default().with_voter_id(v)).collect())
        .with_granting_voters(granting.iter().map(|&v| Voter::default().with_voter_id(v)).collect());
    let mut value = BytesMut::new();
    message.encode(&mut value, 0).expect("a LeaderChangeMessage encodes");
    let mut key = BytesMut::new();
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&LEADER_CHANGE_CONTROL_TYPE.to_be_bytes());
    let record = Record {
        transactional: false,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: now_ms,
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .expect("a control batch encodes");
    ValidatedBatches::new(buf.freeze()).expect("a freshly encoded batch is valid")
}

/// Decode whole batches read from a log, dropping records before `from`.
pub fn decode_batches(bytes: &Bytes, from: i64) -> Result<Vec<LogBatch>, LogError> {
    let mut out = Vec::new();
    for item in Batches::new(bytes, false) {
        let (pos, h, raw) = item.map_err(|e| LogError::Corrupt(e.0))?;
        let mut one = bytes.slice(pos..pos + raw.len());
        let set = RecordBatchDecoder::decode(&mut one).map_err(|e| LogError::Corrupt(e.to_string()))?;
        let mut b = LogBatch {
            base_offset: h.base_offset,
            epoch: h.partition_leader_epoch,
            control: h.is_control(),
            records: Vec::new(),
        };
        for r in set.records {
            b.records.push(r.value.unwrap_or_default());
        }
        if b.records.len() as i64 != h.next_offset() - h.base_offset {
            return Err(LogError::Corrupt(format!("batch at {} has a gap in its offsets", h.base_offset)));
        }
        if b.next_offset() <= from {
            continue;
        }
        if b.base_offset < from {
            b.records.drain(..(from - b.base_offset) as usize);
            b.base_offset = from;
        }
        out.push(b);
    }
    Ok(out)
}
