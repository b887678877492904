//! Checks on a produced record set before it reaches storage: every batch must
//! be a well-formed v2 record batch with a good CRC-32C whose records parse
//! (after decompression, for gzip, snappy, lz4 and zstd batches). Storage keeps
//! the bytes as received; this only decides whether to accept them, and hands
//! storage the [`ValidatedBatches`] so that no CRC is computed twice.
//!
//! Records are walked in place rather than decoded with `RecordBatchDecoder`:
//! that decoder reserves memory for the record and header counts a batch
//! claims before reading them, so a few hostile bytes with a valid CRC could
//! make the broker attempt an allocation of many gigabytes and abort.

use bytes::{Buf, Bytes};
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::record_batch::{BatchHeader, ValidatedBatches, HEADER_SIZE};

/// Validate every batch in `records`. The error says what is wrong, for the
/// CORRUPT_MESSAGE response and the log.
pub fn validate_record_set(records: Bytes) -> Result<ValidatedBatches, String> {
    let batches = ValidatedBatches::new(records).map_err(|e| e.to_string())?;
    for &(pos, ref h) in batches.batches() {
        let batch = batches.bytes().slice(pos..pos + h.size());
        validate_records(&batch, h).map_err(|e| format!("batch at byte {pos}: {e}"))?;
    }
    Ok(batches)
}

/// Check that the records of a batch whose header and CRC are known good
/// parse, and number as many as the header says.
fn validate_records(batch: &Bytes, h: &BatchHeader) -> Result<(), String> {
    let count = h.record_count as usize;
    let mut body = batch.slice(HEADER_SIZE..);
    let walk = |buf: &mut dyn Buf| -> anyhow::Result<()> {
        let data = buf.copy_to_bytes(buf.remaining());
        walk_records(&data, count).map_err(anyhow::Error::msg)
    };
    let result = match h.compression() {
        0 => walk(&mut body),
        1 => Gzip::decompress(&mut body, |b| walk(b)),
        2 => Snappy::decompress(&mut body, |b| walk(b)),
        3 => Lz4::decompress(&mut body, |b| walk(b)),
        4 => Zstd::decompress(&mut body, |b| walk(b)),
        other => return Err(format!("unknown compression codec {other}")),
    };
    result.map_err(|e| format!("{e:#}"))
}

/// Walk `count` v2 records filling `data` exactly, without allocating.
fn walk_records(mut data: &[u8], count: usize) -> Result<(), String> {
    for i in 0..count {
        let len = varint(&mut data).ok_or_else(|| format!("record {i}: bad length"))?;
        if len < 0 || len as usize > data.len() {
            return Err(format!("record {i}: length {len} overruns the batch"));
        }
        let (mut rec, rest) = data.split_at(len as usize);
        data = rest;
        walk_record(&mut rec, i).ok_or_else(|| format!("record {i} is malformed"))?;
        if !rec.is_empty() {
            return Err(format!("record {i} has {} unparsed bytes", rec.len()));
        }
    }
    if !data.is_empty() {
        return Err(format!("{} bytes after the last of {count} records", data.len()));
    }
    Ok(())
}

/// attributes, timestamp delta, offset delta, key, value, headers.
fn walk_record(rec: &mut &[u8], index: usize) -> Option<()> {
    take(rec, 1)?;
    varlong(rec)?;
    // Kafka requires offset deltas 0, 1, 2, ... within a batch.
    if varint(rec)? as i64 != index as i64 {
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
    Some(())
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

/// Zigzag varint (i32), as record fields are encoded.
fn varint(buf: &mut &[u8]) -> Option<i32> {
    let v = unsigned_varint(buf, 5)?;
    let v = u32::try_from(v).ok()?;
    Some(((v >> 1) as i32) ^ -((v & 1) as i32))
}

/// Zigzag varlong (i64).
fn varlong(buf: &mut &[u8]) -> Option<i64> {
    let v = unsigned_varint(buf, 10)?;
    Some(((v >> 1) as i64) ^ -((v & 1) as i64))
}

fn unsigned_varint(buf: &mut &[u8], max_bytes: usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let b = *take(buf, 1)?.first()?;
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_batch::compute_crc;
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
            let v = validate_record_set(batch(c, 5)).unwrap();
            assert_eq!((v.batches().len(), v.record_count()), (1, 5), "{c:?}");
        }
        let two = Bytes::from([batch(Compression::None, 2), batch(Compression::Gzip, 3)].concat());
        let v = validate_record_set(two).unwrap();
        assert_eq!((v.batches().len(), v.record_count()), (2, 5));
    }

    #[test]
    fn rejects_damage() {
        let good = batch(Compression::None, 3);
        assert!(validate_record_set(Bytes::new()).is_err());
        assert!(validate_record_set(good.slice(..40)).is_err());
        assert!(validate_record_set(good.slice(..good.len() - 1)).is_err());
        let mut flipped = good.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(validate_record_set(Bytes::from(flipped)).unwrap_err().contains("CRC"));
        let mut magic1 = good.to_vec();
        magic1[16] = 1;
        assert!(validate_record_set(Bytes::from(magic1)).unwrap_err().contains("magic"));
        // Counts that disagree with the data fail without allocating for them,
        // even with a valid CRC.
        for count in [i32::MAX, 4, 2] {
            let mut wrong = good.to_vec();
            wrong[57..61].copy_from_slice(&count.to_be_bytes());
            let crc = compute_crc(&wrong);
            wrong[17..21].copy_from_slice(&crc.to_be_bytes());
            assert!(validate_record_set(Bytes::from(wrong)).is_err(), "{count}");
        }
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
        assert_eq!(walk_records(&record(&[0]), 1), Ok(()));
        assert!(walk_records(&record(&[0xfe, 0xff, 0xff, 0xff, 0x0f]), 1).is_err(), "i32::MAX headers");
        assert!(walk_records(&record(&[0x01]), 1).is_err(), "negative header count");
        assert!(walk_records(&record(&[0]), 2).is_err(), "fewer records than claimed");
        assert!(walk_records(&[record(&[0]), record(&[0])].concat(), 1).is_err(), "more records than claimed");
    }
}
