//! Record batches as the clients see them: encoding a producer's records into
//! one v2 batch, and decoding fetched bytes into consumer records.
//!
//! Fetch responses carry whole batches, so the first batch may start before
//! the fetch offset, and the last one may be cut short by the size limit;
//! decoding skips the former's early records and ignores the latter.

use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType, NO_PARTITION_LEADER_EPOCH,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};

use super::consumer::ConsumerRecord;
use super::{ClientError, Header};
use crate::compression::{self, DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES};
use crate::record_batch::{peek_offset_and_length, BatchHeader, LOG_OVERHEAD};

/// Size of a v2 batch header (`RECORD_BATCH_OVERHEAD`), what every batch
/// costs before its records.
pub use crate::record_batch::HEADER_SIZE as BATCH_HEADER_BYTES;

/// `compression.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub(crate) fn codec(self) -> kafka_protocol::records::Compression {
        use kafka_protocol::records::Compression as C;
        match self {
            Compression::None => C::None,
            Compression::Gzip => C::Gzip,
            Compression::Snappy => C::Snappy,
            Compression::Lz4 => C::Lz4,
            Compression::Zstd => C::Zstd,
        }
    }

    pub const ALL: [Compression; 5] =
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];
}

impl FromStr for Compression {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self, ClientError> {
        Ok(match s {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            other => {
                return Err(ClientError::InvalidArgument(format!(
                    "compression.type {other:?} is not one of none, gzip, snappy, lz4, zstd"
                )))
            }
        })
    }
}

/// A record on its way into a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// CreateTime in ms since the epoch.
    pub timestamp: i64,
}

impl OutRecord {
    /// An upper bound on the record's encoded size (Kafka's
    /// `estimateSizeInBytesUpperBound`): lengths as 5-byte varints.
    pub fn size_estimate(&self) -> usize {
        let opt = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len());
        let headers: usize = self.headers.iter().map(|(k, v)| 10 + k.len() + opt(v)).sum();
        // length, attributes, timestamp delta, offset delta, key and value lengths, header count
        5 + 1 + 10 + 5 + 5 + opt(&self.key) + 5 + opt(&self.value) + 5 + headers
    }
}

/// Encode `records` as one v2 batch with offsets 0..n (the broker assigns
/// real ones) and no producer id.
pub fn encode(records: &[OutRecord], compression: Compression) -> Result<Bytes, ClientError> {
    encode_v2(records, ProducerFields::NONE, compression.codec())
}

/// The producer id, epoch and first sequence number a v2 batch header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
}

impl ProducerFields {
    /// A batch from a producer that is not idempotent.
    pub const NONE: ProducerFields =
        ProducerFields { id: NO_PRODUCER_ID, epoch: NO_PRODUCER_EPOCH, base_sequence: NO_SEQUENCE };
}

/// Encode `records` as one v2 batch with offsets 0..n and the given producer
/// fields, with any codec. Tests use it to build batches the client would not
/// send, such as idempotent ones or ones with a chosen base sequence.
#[doc(hidden)]
pub fn encode_v2(
    records: &[OutRecord],
    producer: ProducerFields,
    compression: kafka_protocol::records::Compression,
) -> Result<Bytes, ClientError> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: producer.id,
            producer_epoch: producer.epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch whenever `offset - sequence`
            // changes, and derives the header's base sequence from the first
            // record; this keeps one batch with the requested base sequence.
            sequence: producer.base_sequence + i as i32,
            timestamp: r.timestamp,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r.headers.iter().map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone())).collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression };
    RecordBatchEncoder::encode(&mut buf, &recs, &options)
        .map_err(|e| ClientError::InvalidArgument(format!("cannot encode record batch: {e}")))?;
    Ok(buf.freeze())
}

/// What decoding a fetched partition's bytes produced.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Records at or after the fetch offset, in offset order.
    pub records: Vec<ConsumerRecord>,
    /// The offset after the last complete batch, if there was one: the next
    /// fetch position even when the batch's records were all skipped.
    pub next_offset: Option<i64>,
}

/// Decode the complete batches in `data` for `topic`-`partition`, keeping
/// records at offsets `>= fetch_offset`. Control records are skipped.
///
/// A batch that fails its checks ends the decoding. If good batches came
/// before it they are returned, and the next fetch starts at the bad one
/// (as Kafka's consumer hands out the records before a corrupt batch);
/// otherwise it is a [`ClientError::CorruptRecord`] at `fetch_offset`, the
/// offset the consumer stays at. A corrupt batch's own base offset is not
/// covered by its CRC, so it only goes into the message.
pub fn decode(data: Bytes, topic: &str, partition: i32, fetch_offset: i64) -> Result<Decoded, ClientError> {
    let mut out = Decoded::default();
    match decode_into(data, topic, partition, fetch_offset, &mut out) {
        Err(reason) if out.next_offset.is_none() => Err(ClientError::CorruptRecord {
            partition: super::TopicPartition::new(topic, partition),
            offset: fetch_offset,
            reason,
        }),
        _ => Ok(out),
    }
}

/// Decode into `out` until the data ends or a batch fails its checks (then
/// the reason).
fn decode_into(
    mut data: Bytes,
    topic: &str,
    partition: i32,
    fetch_offset: i64,
    out: &mut Decoded,
) -> Result<(), String> {
    while data.len() >= LOG_OVERHEAD {
        let (base_offset, batch_len) = peek_offset_and_length(&data);
        if batch_len < 0 {
            return Err(format!("negative batch length at offset {base_offset}"));
        }
        let total = LOG_OVERHEAD + batch_len as usize;
        if data.len() < total {
            break; // cut short by fetch size limits; the next fetch starts there
        }
        let mut batch = data.split_to(total);
        let header = BatchHeader::parse(&batch).map_err(|e| format!("batch at offset {base_offset}: {e}"))?;
        // The base offset is outside the CRC, so a bit flipped there passes
        // every other check: a batch must reach past the fetch position and
        // start at or after where the one before it ended, as every batch a
        // broker serves does. Otherwise its records would be skipped (or
        // placed) silently.
        let position = out.next_offset.unwrap_or(fetch_offset);
        let behind = header.next_offset() <= fetch_offset || out.next_offset.is_some_and(|prev| base_offset < prev);
        if behind {
            return Err(format!(
                "batch at offset {base_offset} ending at {} does not follow position {position}",
                header.next_offset()
            ));
        }
        let set = decode_bounded(&mut batch).map_err(|e| format!("batch at offset {base_offset}: {e}"))?;
        for r in set.records {
            if r.control || r.offset < fetch_offset {
                continue;
            }
            // Offsets that fail to increase are the broker's fault, not ours:
            // pass them on as served so a history checker can see them.
            out.records.push(ConsumerRecord {
                topic: topic.to_string(),
                partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            });
        }
        out.next_offset = Some(header.next_offset());
    }
    Ok(())
}

/// Decode one batch, decompressing its records through the bounded
/// decompressor: a broker (or a corrupted read) serving a compression bomb
/// costs the consumer at most [`DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES`].
fn decode_bounded(batch: &mut Bytes) -> anyhow::Result<kafka_protocol::records::RecordSet> {
    let decompress = |body: &mut Bytes, c: kafka_protocol::records::Compression| -> anyhow::Result<Bytes> {
        let out = compression::decompress(c as u8, body, DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES)?;
        Ok(Bytes::from(out))
    };
    RecordBatchDecoder::decode_with_custom_compression(batch, Some(decompress))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize) -> OutRecord {
        OutRecord {
            key: i.is_multiple_of(2).then(|| Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("value-{i}").repeat(3))),
            headers: if i.is_multiple_of(3) {
                vec![("h".into(), Some(Bytes::from_static(b"x"))), ("n".into(), None)]
            } else {
                vec![]
            },
            timestamp: 1_700_000_000_000 + i as i64,
        }
    }

    /// A batch as the broker would store it: base offset rewritten. The CRC
    /// does not cover the base offset, so it stays valid.
    fn at_offset(batch: &Bytes, base: i64) -> Bytes {
        let mut b = BytesMut::from(&batch[..]);
        crate::record_batch::set_base_offset(&mut b, base);
        b.freeze()
    }

    #[test]
    fn a_fetched_bomb_is_a_corrupt_record_not_an_allocation() {
        // One record of 80 MiB of zeros: about 80 KiB gzipped, past the
        // consumer's 64 MiB bound expanded.
        let huge =
            OutRecord { key: None, value: Some(Bytes::from(vec![0u8; 80 << 20])), headers: vec![], timestamp: 1 };
        for c in [Compression::Gzip, Compression::Zstd] {
            let batch = encode(std::slice::from_ref(&huge), c).unwrap();
            assert!(batch.len() < 1 << 20, "{c:?}: {}", batch.len());
            let err = decode(at_offset(&batch, 0), "t", 0, 0).unwrap_err();
            assert!(err.to_string().contains("more than"), "{c:?}: {err}");
        }
    }

    #[test]
    fn round_trip_every_compression() {
        let records: Vec<OutRecord> = (0..20).map(rec).collect();
        for c in Compression::ALL {
            let batch = encode(&records, c).unwrap();
            let d = decode(at_offset(&batch, 100), "t", 3, 0).unwrap();
            assert_eq!(d.records.len(), 20, "{c:?}");
            assert_eq!(d.next_offset, Some(120));
            for (i, r) in d.records.iter().enumerate() {
                assert_eq!(r.offset, 100 + i as i64);
                assert_eq!((r.topic.as_str(), r.partition), ("t", 3));
                assert_eq!(r.key, records[i].key);
                assert_eq!(r.value, records[i].value);
                assert_eq!(r.headers, records[i].headers);
                assert_eq!(r.timestamp, records[i].timestamp);
            }
        }
    }

    #[test]
    fn skips_records_below_fetch_offset_and_partial_tail() {
        let records: Vec<OutRecord> = (0..5).map(rec).collect();
        let batch = encode(&records, Compression::None).unwrap();
        let mut data = BytesMut::new();
        data.extend_from_slice(&at_offset(&batch, 0));
        data.extend_from_slice(&at_offset(&batch, 5));
        let second = at_offset(&batch, 10);
        data.extend_from_slice(&second[..second.len() - 7]);
        let d = decode(data.freeze(), "t", 0, 3).unwrap();
        let offsets: Vec<i64> = d.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(d.next_offset, Some(10));
    }

    #[test]
    fn batch_behind_the_position_is_corrupt() {
        // Wholly below the fetch offset: a base offset flipped downwards.
        let batch = encode(&[rec(1)], Compression::None).unwrap();
        assert!(matches!(decode(at_offset(&batch, 7), "t", 0, 8), Err(ClientError::CorruptRecord { offset: 8, .. })));
        // Starting before the previous batch ended: the good one is kept and
        // the next fetch starts where it ended.
        let mut data = BytesMut::new();
        data.extend_from_slice(&at_offset(&batch, 8));
        data.extend_from_slice(&at_offset(&batch, 3));
        let d = decode(data.freeze(), "t", 0, 8).unwrap();
        assert_eq!(d.records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![8]);
        assert_eq!(d.next_offset, Some(9));
    }

    #[test]
    fn corrupt_batch_is_an_error_not_a_panic() {
        let batch = encode(&[rec(1), rec(2)], Compression::None).unwrap();
        let mut b = BytesMut::from(&batch[..]);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        let err = decode(at_offset(&b.freeze(), 40), "t", 2, 41).unwrap_err();
        assert!(
            matches!(&err, ClientError::CorruptRecord { partition, offset: 41, .. } if partition.partition == 2),
            "{err}"
        );
        let mut short = BytesMut::from(&batch[..LOG_OVERHEAD]);
        short[8..12].copy_from_slice(&4i32.to_be_bytes());
        short.extend_from_slice(&[0, 0, 0, 0]);
        assert!(decode(short.freeze(), "t", 0, 0).is_err());
        assert!(decode(Bytes::new(), "t", 0, 0).unwrap().records.is_empty());
    }

    #[test]
    fn records_before_a_corrupt_batch_are_returned() {
        let good = at_offset(&encode(&[rec(1), rec(2)], Compression::None).unwrap(), 10);
        let mut bad = BytesMut::from(&at_offset(&encode(&[rec(3)], Compression::None).unwrap(), 12)[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        let mut data = BytesMut::from(&good[..]);
        data.extend_from_slice(&bad);
        let d = decode(data.freeze(), "t", 0, 10).unwrap();
        assert_eq!(d.records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![10, 11]);
        assert_eq!(d.next_offset, Some(12), "the next fetch starts at the corrupt batch");
        let err = decode(bad.freeze(), "t", 0, 12).unwrap_err();
        assert!(matches!(err, ClientError::CorruptRecord { offset: 12, .. }), "{err}");
    }

    #[test]
    fn encodes_one_batch_without_producer_state() {
        let records: Vec<OutRecord> = (0..7).map(rec).collect();
        let batch = encode(&records, Compression::None).unwrap();
        let info = RecordBatchDecoder::decode_batch_info(&mut batch.clone()).unwrap();
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].record_count, 7);
        assert_eq!(info[0].base_sequence, NO_SEQUENCE);
        assert_eq!(info[0].producer_id, NO_PRODUCER_ID);
        assert_eq!(BatchHeader::parse(&batch).unwrap().last_offset_delta, 6);
    }

    #[test]
    fn compression_names() {
        assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd);
        assert!("brotli".parse::<Compression>().is_err());
    }
}
