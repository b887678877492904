//! Checks on a produced record set before it reaches storage: every batch must
//! be a well-formed v2 record batch whose records decode (after decompression,
//! for gzip, snappy, lz4 and zstd batches). Storage keeps the bytes as
//! received; this only decides whether to accept them.

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

/// Bytes of a v2 batch header, from base offset through record count.
const BATCH_HEADER_BYTES: usize = 61;
/// Bytes of the header counted by the batch length field (all but base
/// offset and the length itself).
const BATCH_LENGTH_OVERHEAD: usize = 49;
/// Smallest encoding of one v2 record: length, attributes, timestamp delta,
/// offset delta, key length, value length and header count, one byte each.
const MIN_RECORD_BYTES: usize = 7;
/// Cap on the records a compressed batch may claim, since its size on the
/// wire says nothing about how many it holds; the decoder reserves memory
/// for the claimed count before decoding.
const MAX_COMPRESSED_RECORDS: usize = 1 << 20;

/// What a valid record set contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordSetSummary {
    pub batches: usize,
    pub records: u64,
}

/// Validate every batch in `records`. The error says what is wrong, for the
/// CORRUPT_MESSAGE response and the log.
pub fn validate_record_set(records: &Bytes) -> Result<RecordSetSummary, String> {
    if records.is_empty() {
        return Err("no record batches".into());
    }
    let mut summary = RecordSetSummary::default();
    let mut pos = 0;
    while pos < records.len() {
        let rest = &records[pos..];
        if rest.len() < BATCH_HEADER_BYTES {
            return Err(format!("truncated batch header at byte {pos}"));
        }
        let batch_length = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let magic = rest[16] as i8;
        if magic != 2 {
            return Err(format!("batch at byte {pos} has magic {magic}; only v2 record batches are accepted"));
        }
        if batch_length < BATCH_LENGTH_OVERHEAD as i32 || batch_length as usize > rest.len() - 12 {
            return Err(format!("batch at byte {pos} has bad length {batch_length}"));
        }
        let size = 12 + batch_length as usize;
        let count = i32::from_be_bytes([rest[57], rest[58], rest[59], rest[60]]);
        let compressed = i16::from_be_bytes([rest[21], rest[22]]) & 0x7 != Compression::None as i16;
        let limit = if compressed { MAX_COMPRESSED_RECORDS } else { (size - BATCH_HEADER_BYTES) / MIN_RECORD_BYTES };
        if count < 0 || count as usize > limit {
            return Err(format!("batch at byte {pos} claims {count} records, more than it can hold"));
        }
        let mut batch = records.slice(pos..pos + size);
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| format!("batch at byte {pos}: {e}"))?;
        if set.records.len() != count as usize {
            return Err(format!("batch at byte {pos} claims {count} records but holds {}", set.records.len()));
        }
        summary.batches += 1;
        summary.records += count as u64;
        pos += size;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    pub(crate) fn batch(compression: Compression, n: usize) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder starts a new batch wherever offset - sequence changes.
                sequence: i as i32,
                timestamp: 1000 + i as i64,
                key: None,
                value: Some(Bytes::from(format!("value-{i}"))),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).unwrap();
        buf.freeze()
    }

    #[test]
    fn accepts_every_compression() {
        for c in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let b = batch(c, 5);
            assert_eq!(validate_record_set(&b), Ok(RecordSetSummary { batches: 1, records: 5 }), "{c:?}");
        }
        let two = Bytes::from([batch(Compression::None, 2), batch(Compression::Gzip, 3)].concat());
        assert_eq!(validate_record_set(&two).unwrap(), RecordSetSummary { batches: 2, records: 5 });
    }

    #[test]
    fn rejects_damage() {
        let good = batch(Compression::None, 3);
        assert!(validate_record_set(&Bytes::new()).is_err());
        assert!(validate_record_set(&good.slice(..40)).is_err());
        assert!(validate_record_set(&good.slice(..good.len() - 1)).is_err());
        let mut flipped = good.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(validate_record_set(&Bytes::from(flipped)).unwrap_err().contains("Cyclic"));
        let mut magic1 = good.to_vec();
        magic1[16] = 1;
        assert!(validate_record_set(&Bytes::from(magic1)).unwrap_err().contains("magic"));
        let mut huge_count = good.to_vec();
        huge_count[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(validate_record_set(&Bytes::from(huge_count)).unwrap_err().contains("claims"));
    }
}
