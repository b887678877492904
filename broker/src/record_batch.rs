//! The Kafka record batch v2 (magic 2) layout, defined once: field offsets,
//! header parsing, the CRC-32C, attribute bits, the in-place setters the
//! broker uses, and a bounded walk over the records inside a batch. Storage, the wire validation and the clients all read batches
//! through this module. Batches are stored as received.
//!
//! Layout of the 61-byte header (big-endian), as in Kafka's
//! `DefaultRecordBatch`:
//!
//! ```text
//!  0 baseOffset i64          8 batchLength i32      12 partitionLeaderEpoch i32
//! 16 magic i8               17 crc u32              21 attributes i16
//! 23 lastOffsetDelta i32    27 baseTimestamp i64    35 maxTimestamp i64
//! 43 producerId i64         51 producerEpoch i16    53 baseSequence i32
//! 57 recordCount i32        61 records...
//! ```
//!
//! The CRC covers attributes to the end of the batch, so the broker may rewrite
//! the base offset and the partition leader epoch without recomputing it.

use bytes::Bytes;

use crate::compression::{self, DecompressError};

/// Bytes before `batchLength` counts: baseOffset and batchLength itself.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the v2 batch header (Kafka's `RECORD_BATCH_OVERHEAD`).
pub const HEADER_SIZE: usize = 61;
/// The only record format this broker stores.
pub const MAGIC: i8 = 2;
/// `partitionLeaderEpoch` of a batch no leader has stamped.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC covers everything from here on.
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// A batch that is not a well-formed v2 batch; the text says why. Storage
/// reports it as CORRUPT_MESSAGE, clients as a corrupt record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CorruptBatch(pub String);

/// A parsed v2 batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    buf[at..at + N].try_into().expect("slice length checked by caller")
}

/// The base offset and batch length at the front of `buf`, which must hold
/// at least [`LOG_OVERHEAD`] bytes: enough to know how long the batch is
/// before the rest of it has arrived.
pub fn peek_offset_and_length(buf: &[u8]) -> (i64, i32) {
    (i64::from_be_bytes(be(buf, BASE_OFFSET_AT)), i32::from_be_bytes(be(buf, BATCH_LENGTH_AT)))
}

impl BatchHeader {
    /// Parse the header at the start of `buf` and check what the header alone
    /// can tell: magic, length bounds, record count. `buf` needs only the
    /// header; the batch body is checked by [`validate_crc`].
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, CorruptBatch> {
        Self::parse_or_explain(buf).map_err(CorruptBatch)
    }

    fn parse_or_explain(buf: &[u8]) -> Result<BatchHeader, String> {
        if buf.len() < HEADER_SIZE {
            return Err(format!("{} bytes is too short for a batch header ({HEADER_SIZE})", buf.len()));
        }
        let (base_offset, batch_length) = peek_offset_and_length(buf);
        let h = BatchHeader {
            base_offset,
            batch_length,
            partition_leader_epoch: i32::from_be_bytes(be(buf, LEADER_EPOCH_AT)),
            magic: buf[MAGIC_AT] as i8,
            crc: u32::from_be_bytes(be(buf, CRC_AT)),
            attributes: i16::from_be_bytes(be(buf, ATTRIBUTES_AT)),
            last_offset_delta: i32::from_be_bytes(be(buf, LAST_OFFSET_DELTA_AT)),
            base_timestamp: i64::from_be_bytes(be(buf, BASE_TIMESTAMP_AT)),
            max_timestamp: i64::from_be_bytes(be(buf, MAX_TIMESTAMP_AT)),
            producer_id: i64::from_be_bytes(be(buf, PRODUCER_ID_AT)),
            producer_epoch: i16::from_be_bytes(be(buf, PRODUCER_EPOCH_AT)),
            base_sequence: i32::from_be_bytes(be(buf, BASE_SEQUENCE_AT)),
            record_count: i32::from_be_bytes(be(buf, RECORD_COUNT_AT)),
        };
        if h.magic != MAGIC {
            return Err(format!("unsupported magic {} (only v2 batches are accepted)", h.magic));
        }
        if (h.batch_length as i64) < (HEADER_SIZE - LOG_OVERHEAD) as i64 {
            return Err(format!("batch length {} is below the header size", h.batch_length));
        }
        if h.record_count < 0 || h.last_offset_delta < 0 {
            return Err(format!(
                "negative record count {} or last offset delta {}",
                h.record_count, h.last_offset_delta
            ));
        }
        Ok(h)
    }

    /// Whole batch size on disk, header included.
    pub fn size(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// The offset right after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// True if a producer id is set (idempotent or transactional producer).
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Checks a producer's batch must pass on top of [`BatchHeader::parse`]:
    /// Kafka producers number records consecutively from zero.
    pub fn validate_for_append(&self) -> Result<(), CorruptBatch> {
        if self.record_count == 0 {
            return Err(CorruptBatch("batch holds no records".into()));
        }
        if self.last_offset_delta != self.record_count - 1 {
            return Err(CorruptBatch(format!(
                "last offset delta {} does not match record count {}",
                self.last_offset_delta, self.record_count
            )));
        }
        if self.compression() > 4 {
            return Err(CorruptBatch(format!("unknown compression codec {}", self.compression())));
        }
        Ok(())
    }
}

/// CRC-32C of a whole batch's covered region (attributes to the end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

/// Check the stored CRC of a whole batch (`batch` is exactly one batch).
pub fn validate_crc(header: &BatchHeader, batch: &[u8]) -> Result<(), CorruptBatch> {
    invariant!(batch.len() == header.size(), "a CRC check is given exactly one batch");
    let actual = compute_crc(batch);
    if actual != header.crc {
        return Err(CorruptBatch(format!(
            "CRC mismatch in batch at offset {}: stored {:#010x}, computed {actual:#010x}",
            header.base_offset, header.crc
        )));
    }
    Ok(())
}

/// Give a batch its offsets: overwrite the base offset (not covered by the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Stamp the leader epoch that appended the batch (not covered by the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Switch a batch to LogAppendTime at `now_ms`, as Kafka does: set the
/// timestamp-type attribute and the max timestamp, then recompute the CRC.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = i16::from_be_bytes(be(batch, ATTRIBUTES_AT)) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Iterate over concatenated batches, yielding each header and its position.
/// Checks headers and that each batch fits; CRCs are checked only if asked.
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
    check_crc: bool,
    failed: bool,
}

impl<'a> Batches<'a> {
    pub fn new(buf: &'a [u8], check_crc: bool) -> Self {
        Batches { buf, pos: 0, check_crc, failed: false }
    }
}

impl<'a> Iterator for Batches<'a> {
    /// (position in the buffer, header, the batch's bytes)
    type Item = Result<(usize, BatchHeader, &'a [u8]), CorruptBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos == self.buf.len() {
            return None;
        }
        let pos = self.pos;
        let step = || -> Result<(usize, BatchHeader, &'a [u8]), CorruptBatch> {
            let rest = &self.buf[pos..];
            let h = BatchHeader::parse_or_explain(rest).map_err(|e| CorruptBatch(format!("at byte {pos}: {e}")))?;
            if h.size() > rest.len() {
                return Err(CorruptBatch(format!(
                    "at byte {pos}: batch of {} bytes but only {} remain",
                    h.size(),
                    rest.len()
                )));
            }
            let bytes = &rest[..h.size()];
            if self.check_crc {
                validate_crc(&h, bytes)?;
            }
            Ok((pos, h, bytes))
        };
        match step() {
            Ok(item) => {
                self.pos += item.1.size();
                Some(Ok(item))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// A record set whose every batch has a well-formed header, fits the buffer
/// and passed its CRC: the proof that the one CRC check of a produce (or a
/// replica fetch) was made. Storage appends these without checking again.
#[derive(Debug, Clone)]
pub struct ValidatedBatches {
    bytes: Bytes,
    /// (position in `bytes`, header), in order.
    batches: Vec<(usize, BatchHeader)>,
}

impl ValidatedBatches {
    /// Parse and CRC-check every batch in `bytes`.
    pub fn new(bytes: Bytes) -> Result<ValidatedBatches, CorruptBatch> {
        if bytes.is_empty() {
            return Err(CorruptBatch("no record batches".into()));
        }
        let batches = Batches::new(&bytes, true).map(|r| r.map(|(pos, h, _)| (pos, h))).collect::<Result<_, _>>()?;
        Ok(ValidatedBatches { bytes, batches })
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Each batch's position in [`Self::bytes`] and its header.
    pub fn batches(&self) -> &[(usize, BatchHeader)] {
        &self.batches
    }

    /// Each batch's bytes and header.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &BatchHeader)> {
        self.batches.iter().map(|(pos, h)| (&self.bytes[*pos..*pos + h.size()], h))
    }

    /// Records across all batches, as the headers count them.
    pub fn record_count(&self) -> u64 {
        self.batches.iter().map(|(_, h)| h.record_count as u64).sum()
    }
}

/// What a walk over a batch's records reports of each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
}

/// Walk the records of one whole batch whose header is `h`, decompressing
/// its body (bounded by `limit` decompressed bytes) and checking that every
/// record parses, that offset deltas run 0, 1, 2, ... and that there are
/// exactly as many records as the header says. `visit` sees each record in
/// order and returns false to stop the walk early (nothing after is checked).
///
/// Records are walked in place rather than decoded with `RecordBatchDecoder`:
/// that decoder reserves memory for the record and header counts a batch
/// claims before reading them. Here every count is bounded by the bytes
/// actually present, and a compressed body is streamed, so the memory a walk
/// takes is one record, not the whole decompressed batch.
pub fn walk_records(
    batch: &[u8],
    h: &BatchHeader,
    limit: usize,
    visit: &mut dyn FnMut(RecordMeta) -> bool,
) -> Result<(), DecompressError> {
    use std::io::Read;
    let codec = h.compression();
    let body = batch.get(HEADER_SIZE..).unwrap_or_default();
    let mut r = std::io::BufReader::with_capacity(64 << 10, compression::reader(codec, body, limit)?);
    let io_err = |e| compression::classify(codec, e);
    let corrupt = |m: String| DecompressError::Corrupt(m);
    let count = h.record_count.max(0) as usize;
    let mut rec = Vec::new();
    for i in 0..count {
        let len = stream_varint(&mut r).map_err(io_err)?.ok_or_else(|| corrupt(format!("record {i}: bad length")))?;
        let Ok(len) = usize::try_from(len) else {
            return Err(corrupt(format!("record {i}: negative length {len}")));
        };
        rec.clear();
        // Grows with the bytes that arrive, never to the length claimed.
        (&mut r).take(len as u64).read_to_end(&mut rec).map_err(io_err)?;
        if rec.len() < len {
            return Err(corrupt(format!("record {i}: length {len} overruns the batch")));
        }
        let mut slice = &rec[..];
        let meta = walk_record(&mut slice, i).ok_or_else(|| corrupt(format!("record {i} is malformed")))?;
        if !slice.is_empty() {
            return Err(corrupt(format!("record {i} has {} unparsed bytes", slice.len())));
        }
        if !visit(meta) {
            return Ok(());
        }
    }
    if compression::read_byte(&mut r).map_err(io_err)?.is_some() {
        return Err(corrupt(format!("bytes after the last of {count} records")));
    }
    Ok(())
}

/// attributes, timestamp delta, offset delta, key, value, headers.
fn walk_record(rec: &mut &[u8], index: usize) -> Option<RecordMeta> {
    take(rec, 1)?;
    let timestamp_delta = varlong(rec)?;
    let offset_delta = varint(rec)?;
    // Kafka requires offset deltas 0, 1, 2, ... within a batch.
    if offset_delta as i64 != index as i64 {
        return None;
    }
    skip_field(rec, true)?;
    skip_field(rec, true)?;
    let headers = varint(rec)?;
    if headers < 0 {
        return None;
    }
    for _ in 0..headers {
        skip_field(rec, false)?;
        skip_field(rec, true)?;
    }
    Some(RecordMeta { offset_delta, timestamp_delta })
}

fn skip_field(buf: &mut &[u8], nullable: bool) -> Option<()> {
    match varint(buf)? {
        -1 if nullable => Some(()),
        n if n >= 0 => take(buf, n as usize).map(|_| ()),
        _ => None,
    }
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Some(head)
}

fn zigzag32(v: u64) -> Option<i32> {
    let v = u32::try_from(v).ok()?;
    Some(((v >> 1) as i32) ^ -((v & 1) as i32))
}

/// Zigzag varint (i32), as record fields are encoded.
fn varint(buf: &mut &[u8]) -> Option<i32> {
    zigzag32(unsigned_varint(&mut || take(buf, 1).map(|b| b[0]), 5)?)
}

/// Zigzag varlong (i64).
fn varlong(buf: &mut &[u8]) -> Option<i64> {
    let v = unsigned_varint(&mut || take(buf, 1).map(|b| b[0]), 10)?;
    Some(((v >> 1) as i64) ^ -((v & 1) as i64))
}

/// A zigzag varint read from a stream: `Ok(None)` if it is malformed or the
/// stream ends inside it.
fn stream_varint(r: &mut dyn std::io::BufRead) -> std::io::Result<Option<i32>> {
    let mut failed = None;
    let v = unsigned_varint(
        &mut || match compression::read_byte(r) {
            Ok(b) => b,
            Err(e) => {
                failed = Some(e);
                None
            }
        },
        5,
    );
    match failed {
        Some(e) => Err(e),
        None => Ok(v.and_then(zigzag32)),
    }
}

fn unsigned_varint(next: &mut dyn FnMut() -> Option<u8>, max_bytes: usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let b = next()?;
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::client::batch::{encode_v2, OutRecord, ProducerFields};
    use kafka_protocol::records::{Compression, RecordBatchDecoder, TimestampType};

    /// No producer id, sequence numbers from 0: the batches these tests
    /// have always stored.
    const FIRST_SEQUENCE_ZERO: ProducerFields = ProducerFields { id: -1, epoch: -1, base_sequence: 0 };

    /// One encoded batch of `n` records.
    fn encode(n: i64, compression: Compression) -> Vec<u8> {
        encode_at(n, 1_000, compression)
    }

    /// One encoded batch of `n` records timestamped from `first_ts` on, one
    /// millisecond apart.
    pub(crate) fn encode_at(n: i64, first_ts: i64, compression: Compression) -> Vec<u8> {
        let records: Vec<OutRecord> = (0..n)
            .map(|i| OutRecord {
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("value-{i}"))),
                headers: vec![],
                timestamp: first_ts + i,
            })
            .collect();
        encode_v2(&records, FIRST_SEQUENCE_ZERO, compression).unwrap().to_vec()
    }

    #[test]
    fn parses_and_validates_encoded_batches() {
        for compression in
            [Compression::None, Compression::Gzip, Compression::Lz4, Compression::Snappy, Compression::Zstd]
        {
            let b = encode(5, compression);
            let h = BatchHeader::parse(&b).unwrap();
            assert_eq!(h.size(), b.len());
            assert_eq!(h.record_count, 5);
            assert_eq!(h.last_offset_delta, 4);
            assert_eq!(h.compression(), compression as u8);
            assert_eq!(h.max_timestamp, 1_004);
            assert!(!h.is_transactional() && !h.is_control() && !h.has_producer_id());
            h.validate_for_append().unwrap();
            validate_crc(&h, &b).unwrap();
        }
    }

    #[test]
    fn iterates_concatenated_batches() {
        let mut buf = encode(3, Compression::None);
        let first = buf.len();
        buf.extend(encode(2, Compression::Gzip));
        let items: Vec<_> = Batches::new(&buf, true).map(|r| r.unwrap()).collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].0, first);
        assert_eq!(items[1].1.record_count, 2);
    }

    #[test]
    fn rejects_malformed_batches() {
        let b = encode(3, Compression::None);
        // Truncated.
        let mut it = Batches::new(&b[..b.len() - 1], true);
        assert!(matches!(it.next(), Some(Err(CorruptBatch(_)))));
        assert!(it.next().is_none());
        // Too short for a header.
        assert!(BatchHeader::parse(&b[..20]).is_err());
        // Flipped byte in the records: CRC mismatch.
        let mut bad = b.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        assert!(Batches::new(&bad, true).next().unwrap().is_err());
        assert!(Batches::new(&bad, false).next().unwrap().is_ok());
        // Wrong magic.
        let mut bad = b.clone();
        bad[MAGIC_AT] = 1;
        assert!(BatchHeader::parse(&bad).is_err());
        // Length below the header.
        let mut bad = b.clone();
        bad[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert!(BatchHeader::parse(&bad).is_err());
        // Record count disagreeing with the last offset delta.
        let mut bad = b;
        bad[57..61].copy_from_slice(&7i32.to_be_bytes());
        assert!(BatchHeader::parse(&bad).unwrap().validate_for_append().is_err());
    }

    #[test]
    fn offset_and_epoch_rewrites_keep_the_crc_valid() {
        let mut b = encode(4, Compression::None);
        set_base_offset(&mut b, 1234);
        set_partition_leader_epoch(&mut b, 7);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!((h.base_offset, h.last_offset(), h.partition_leader_epoch), (1234, 1237, 7));
        validate_crc(&h, &b).unwrap();
    }

    #[test]
    fn log_append_time_sets_the_attribute_and_recomputes_the_crc() {
        let mut b = encode(2, Compression::Lz4);
        set_log_append_time(&mut b, 99_999);
        let h = BatchHeader::parse(&b).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99_999);
        validate_crc(&h, &b).unwrap();
        let set = RecordBatchDecoder::decode(&mut Bytes::from(b)).unwrap();
        // Readers take every record's timestamp from the batch's max timestamp.
        assert!(set.records.iter().all(|r| r.timestamp_type == TimestampType::LogAppend));
    }
}
