//! Checks on a produced record set before it reaches storage: every batch must
//! be a well-formed v2 record batch with a good CRC-32C whose records parse
//! (after decompression, for gzip, snappy, lz4 and zstd batches). Storage keeps
//! the bytes as received; this only decides whether to accept them, and hands
//! storage the [`ValidatedBatches`] so that no CRC is computed twice.
//!
//! Records are walked in place by [`record_batch::walk_records`], never
//! decoded into memory, and a compressed batch may decompress to at most the
//! topic's decompressed-batch limit: past it the batch is refused while it is
//! being decompressed, as MESSAGE_TOO_LARGE (a Kafka producer splits a batch
//! refused so and sends its halves).

use bytes::Bytes;

use crate::compression::DecompressError;
use crate::record_batch::{self, ValidatedBatches};

/// Why a produced record set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecords {
    /// Malformed: CORRUPT_MESSAGE.
    #[error("{0}")]
    Corrupt(String),
    /// A batch decompresses past the limit: MESSAGE_TOO_LARGE.
    #[error("{0}")]
    TooLarge(String),
}

/// Validate every batch in `records`; a compressed batch may decompress to at
/// most `max_decompressed_bytes`. The error says what is wrong, for the
/// response and the log.
pub fn validate_record_set(records: Bytes, max_decompressed_bytes: usize) -> Result<ValidatedBatches, InvalidRecords> {
    let batches = ValidatedBatches::new(records).map_err(|e| InvalidRecords::Corrupt(e.to_string()))?;
    for &(pos, ref h) in batches.batches() {
        let batch = &batches.bytes()[pos..pos + h.size()];
        record_batch::walk_records(batch, h, max_decompressed_bytes, &mut |_| true).map_err(|e| match e {
            DecompressError::TooLarge { .. } => InvalidRecords::TooLarge(format!("batch at byte {pos}: {e}")),
            DecompressError::Corrupt(_) => InvalidRecords::Corrupt(format!("batch at byte {pos}: {e}")),
        })?;
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_batch::compute_crc;

    const LIMIT: usize = 1 << 20;
    use bytes::BytesMut;
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

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
            let v = validate_record_set(batch(c, 5), LIMIT).unwrap();
            assert_eq!((v.batches().len(), v.record_count()), (1, 5), "{c:?}");
        }
        let two = Bytes::from([batch(Compression::None, 2), batch(Compression::Gzip, 3)].concat());
        let v = validate_record_set(two, LIMIT).unwrap();
        assert_eq!((v.batches().len(), v.record_count()), (2, 5));
    }

    #[test]
    fn rejects_damage() {
        let good = batch(Compression::None, 3);
        assert!(validate_record_set(Bytes::new(), LIMIT).is_err());
        assert!(validate_record_set(good.slice(..40), LIMIT).is_err());
        assert!(validate_record_set(good.slice(..good.len() - 1), LIMIT).is_err());
        let mut flipped = good.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(validate_record_set(Bytes::from(flipped), LIMIT).unwrap_err().to_string().contains("CRC"));
        let mut magic1 = good.to_vec();
        magic1[16] = 1;
        assert!(validate_record_set(Bytes::from(magic1), LIMIT).unwrap_err().to_string().contains("magic"));
        // Counts that disagree with the data fail without allocating for them,
        // even with a valid CRC.
        for count in [i32::MAX, 4, 2] {
            let mut wrong = good.to_vec();
            wrong[57..61].copy_from_slice(&count.to_be_bytes());
            let crc = compute_crc(&wrong);
            wrong[17..21].copy_from_slice(&crc.to_be_bytes());
            assert!(validate_record_set(Bytes::from(wrong), LIMIT).is_err(), "{count}");
        }
    }

    /// Walk `body` as the uncompressed records of a batch claiming `count`.
    fn walk_records(body: &[u8], count: i32) -> Result<(), DecompressError> {
        let mut batch = vec![0u8; crate::record_batch::HEADER_SIZE];
        batch.extend_from_slice(body);
        let h = crate::record_batch::BatchHeader {
            base_offset: 0,
            batch_length: (batch.len() - 12) as i32,
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: (count - 1).max(0),
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count: count,
        };
        record_batch::walk_records(&batch, &h, LIMIT, &mut |_| true)
    }

    /// One batch of one record whose value is `n` zero bytes.
    fn zeros_batch(compression: Compression, n: usize) -> Bytes {
        let record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: 0,
            timestamp: 1000,
            key: None,
            value: Some(Bytes::from(vec![0u8; n])),
            headers: Default::default(),
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, [&record], &RecordEncodeOptions { version: 2, compression }).unwrap();
        buf.freeze()
    }

    #[test]
    fn a_batch_decompressing_past_the_limit_is_too_large_for_every_codec() {
        for c in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            // 4 MiB of zeros: tens of KiB or less compressed, 4x the limit expanded.
            let bomb = zeros_batch(c, 4 << 20);
            assert!(bomb.len() < 256 << 10, "{c:?}: {} bytes", bomb.len());
            let err = validate_record_set(bomb.clone(), LIMIT).unwrap_err();
            assert!(
                matches!(&err, InvalidRecords::TooLarge(m) if m.contains("more than 1048576 bytes")),
                "{c:?}: {err:?}"
            );
            // Within a larger limit the same batch is fine.
            validate_record_set(bomb, 8 << 20).unwrap();
        }
        // An uncompressed batch is bounded by its own size (max.message.bytes).
        validate_record_set(zeros_batch(Compression::None, 2 << 20), LIMIT).unwrap();
    }

    #[test]
    fn record_walk_bounds_every_count_by_the_bytes_present() {
        // attributes 0, timestamp delta 0, offset delta 0, null key, null value, then headers.
        let record = |headers: &[u8]| {
            let mut body = vec![0, 0, 0, 1, 1];
            body.extend_from_slice(headers);
            let mut out = vec![(body.len() as u8) << 1];
            out.extend(body);
            out
        };
        walk_records(&record(&[0]), 1).unwrap();
        assert!(walk_records(&record(&[0xfe, 0xff, 0xff, 0xff, 0x0f]), 1).is_err(), "i32::MAX headers");
        assert!(walk_records(&record(&[0x01]), 1).is_err(), "negative header count");
        assert!(walk_records(&record(&[0]), 2).is_err(), "fewer records than claimed");
        assert!(walk_records(&[record(&[0]), record(&[0])].concat(), 1).is_err(), "more records than claimed");
    }
}
