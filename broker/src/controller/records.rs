//! The metadata records the controller writes to the metadata log, and their
//! encoding. Kafka has no wire message for these (its `*Record` schemas are
//! internal), so they have our own documented format; the quorum replicates
//! each as an opaque byte string.
//!
//! # Format (version 0)
//!
//! Every record is `version: u8` (0), `type: u8`, then the type's fields in
//! order, with no padding and nothing after the last field:
//!
//! | field kind | encoding |
//! |---|---|
//! | `i16`, `i32`, `i64`, `u16` | big-endian, fixed width |
//! | `bool` | one byte, 0 or 1 (anything else is an error) |
//! | UUID | 16 bytes |
//! | string | `u32` byte length, then UTF-8 (at most [`MAX_STRING_BYTES`]) |
//! | optional string | one byte 0 (absent) or 1, then the string |
//! | list | `u32` count, then the elements (at most [`MAX_LIST_LEN`]) |
//!
//! | type | record | fields |
//! |---|---|---|
//! | 1 | `RegisterBroker` | node id i32, broker epoch i64, incarnation id UUID, listeners list of (name string, host string, port u16, security protocol i16), rack optional string, fenced bool |
//! | 2 | `UnregisterBroker` | node id i32, broker epoch i64 |
//! | 3 | `FenceBroker` | node id i32, broker epoch i64 |
//! | 4 | `UnfenceBroker` | node id i32, broker epoch i64 |
//! | 5 | `ControlledShutdown` | node id i32, broker epoch i64 |
//! | 6 | `Topic` | name string, topic id UUID, configs list of (name string, value string) |
//! | 7 | `Partition` | topic id UUID, partition i32, replicas list of i32, ISR list of i32, leader i32, leader epoch i32, partition epoch i32 |
//! | 8 | `PartitionChange` | topic id UUID, partition i32, leader i32, ISR list of i32, leader epoch i32, partition epoch i32 |
//! | 9 | `RemoveTopic` | topic id UUID |
//! | 10 | `FeatureLevel` | name string, level i16 |
//! | 11 | `ClusterId` | cluster id string |
//! | 12 | `ProducerIds` | broker id i32, broker epoch i64, next producer id i64 |
//!
//! A change to a record's fields takes a new version byte; a decoder refuses
//! versions and types it does not know rather than guess. Decoding never
//! trusts a length or count before checking it against the bytes that remain,
//! so hostile input costs at most its own size in memory and returns an
//! error, never a panic. Decoding checks the encoding only; whether a record
//! makes sense against the current metadata is
//! [`super::image::MetadataImage::apply`]'s to judge.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

/// The record format version this code writes and reads.
pub const RECORD_VERSION: u8 = 0;
/// Longest string field, in bytes: far above any topic name (249), host name
/// (253) or config value the controller accepts.
pub const MAX_STRING_BYTES: usize = 32 * 1024;
/// Longest list field: replicas, ISR, listeners, configs.
pub const MAX_LIST_LEN: usize = 4096;

/// One advertised listener of a broker (Kafka's `BrokerEndpoint`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Kafka's `SecurityProtocol` id (0 = PLAINTEXT).
    pub security_protocol: i16,
}

/// A broker's registration (Kafka's `RegisterBrokerRecord`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterBroker {
    pub node_id: i32,
    /// The offset of this record in the metadata log when first written; a
    /// snapshot carries it unchanged.
    pub broker_epoch: i64,
    /// Drawn anew by every start of the broker process: a registration with
    /// another incarnation is another process.
    pub incarnation_id: Uuid,
    pub listeners: Vec<Endpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
}

/// A broker named by id and the epoch of the registration it applies to, so
/// a record about an older registration cannot touch a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerRef {
    pub node_id: i32,
    pub broker_epoch: i64,
}

/// A topic (Kafka's `TopicRecord` plus its `ConfigRecord`s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRecord {
    pub name: String,
    pub topic_id: Uuid,
    /// Configs set on the topic, by Kafka name.
    pub configs: BTreeMap<String, String>,
}

/// One partition of a topic (Kafka's `PartitionRecord`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecord {
    pub topic_id: Uuid,
    pub partition: i32,
    /// In preference order: the first is the preferred leader.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// -1: no leader (offline).
    pub leader: i32,
    pub leader_epoch: i32,
    /// Bumped on every change of the partition's registration.
    pub partition_epoch: i32,
}

/// A partition's new leader, ISR and epochs (Kafka's `PartitionChangeRecord`,
/// with the epochs written out rather than implied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionChange {
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader: i32,
    pub isr: Vec<i32>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// A record of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    RegisterBroker(RegisterBroker),
    UnregisterBroker(BrokerRef),
    FenceBroker(BrokerRef),
    UnfenceBroker(BrokerRef),
    /// The broker asked to shut down: it leads nothing and is left out of
    /// new assignments until it registers again.
    ControlledShutdown(BrokerRef),
    Topic(TopicRecord),
    Partition(PartitionRecord),
    PartitionChange(PartitionChange),
    RemoveTopic {
        topic_id: Uuid,
    },
    /// A finalized feature level (e.g. `metadata.version`).
    FeatureLevel {
        name: String,
        level: i16,
    },
    /// The cluster's id, written once by the first active controller.
    ClusterId {
        cluster_id: String,
    },
    /// A block of producer ids given to a broker (KIP-730): every id below
    /// `next_producer_id` has been handed out. A snapshot writes it with
    /// broker id and epoch -1.
    ProducerIds(ProducerIdsRecord),
}

/// Kafka's `ProducerIdsRecord`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdsRecord {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub next_producer_id: i64,
}

/// Bytes that are not a record this code can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable metadata record: {0}")]
pub struct DecodeError(pub String);

fn err<T>(why: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(why.into()))
}

impl MetadataRecord {
    fn type_id(&self) -> u8 {
        match self {
            MetadataRecord::RegisterBroker(_) => 1,
            MetadataRecord::UnregisterBroker(_) => 2,
            MetadataRecord::FenceBroker(_) => 3,
            MetadataRecord::UnfenceBroker(_) => 4,
            MetadataRecord::ControlledShutdown(_) => 5,
            MetadataRecord::Topic(_) => 6,
            MetadataRecord::Partition(_) => 7,
            MetadataRecord::PartitionChange(_) => 8,
            MetadataRecord::RemoveTopic { .. } => 9,
            MetadataRecord::FeatureLevel { .. } => 10,
            MetadataRecord::ClusterId { .. } => 11,
            MetadataRecord::ProducerIds(_) => 12,
        }
    }

    /// The record in the format above.
    pub fn encode(&self) -> Bytes {
        let mut w = BytesMut::with_capacity(64);
        self.encode_into(&mut w);
        w.freeze()
    }

    /// Append the encoding to `w`.
    pub fn encode_into(&self, w: &mut BytesMut) {
        w.put_u8(RECORD_VERSION);
        w.put_u8(self.type_id());
        match self {
            MetadataRecord::RegisterBroker(r) => {
                w.put_i32(r.node_id);
                w.put_i64(r.broker_epoch);
                put_uuid(w, r.incarnation_id);
                put_len(w, r.listeners.len());
                for l in &r.listeners {
                    put_str(w, &l.name);
                    put_str(w, &l.host);
                    w.put_u16(l.port);
                    w.put_i16(l.security_protocol);
                }
                put_opt_str(w, r.rack.as_deref());
                w.put_u8(r.fenced as u8);
            }
            MetadataRecord::UnregisterBroker(b)
            | MetadataRecord::FenceBroker(b)
            | MetadataRecord::UnfenceBroker(b)
            | MetadataRecord::ControlledShutdown(b) => {
                w.put_i32(b.node_id);
                w.put_i64(b.broker_epoch);
            }
            MetadataRecord::Topic(t) => {
                put_str(w, &t.name);
                put_uuid(w, t.topic_id);
                put_len(w, t.configs.len());
                for (k, v) in &t.configs {
                    put_str(w, k);
                    put_str(w, v);
                }
            }
            MetadataRecord::Partition(p) => {
                put_uuid(w, p.topic_id);
                w.put_i32(p.partition);
                put_ids(w, &p.replicas);
                put_ids(w, &p.isr);
                w.put_i32(p.leader);
                w.put_i32(p.leader_epoch);
                w.put_i32(p.partition_epoch);
            }
            MetadataRecord::PartitionChange(c) => {
                put_uuid(w, c.topic_id);
                w.put_i32(c.partition);
                w.put_i32(c.leader);
                put_ids(w, &c.isr);
                w.put_i32(c.leader_epoch);
                w.put_i32(c.partition_epoch);
            }
            MetadataRecord::RemoveTopic { topic_id } => put_uuid(w, *topic_id),
            MetadataRecord::FeatureLevel { name, level } => {
                put_str(w, name);
                w.put_i16(*level);
            }
            MetadataRecord::ClusterId { cluster_id } => put_str(w, cluster_id),
            MetadataRecord::ProducerIds(p) => {
                w.put_i32(p.broker_id);
                w.put_i64(p.broker_epoch);
                w.put_i64(p.next_producer_id);
            }
        }
    }

    /// Read one record that fills `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, DecodeError> {
        let mut r = Reader { buf: bytes };
        let version = r.u8()?;
        if version != RECORD_VERSION {
            return err(format!("record version {version}; this broker reads version {RECORD_VERSION}"));
        }
        let type_id = r.u8()?;
        let record = match type_id {
            1 => {
                let node_id = r.i32()?;
                let broker_epoch = r.i64()?;
                let incarnation_id = r.uuid()?;
                // name, host (4-byte lengths each), port, protocol
                let n = r.len(12)?;
                let mut listeners = Vec::with_capacity(n);
                for _ in 0..n {
                    listeners.push(Endpoint {
                        name: r.string()?,
                        host: r.string()?,
                        port: r.u16()?,
                        security_protocol: r.i16()?,
                    });
                }
                let rack = r.opt_string()?;
                let fenced = r.bool()?;
                MetadataRecord::RegisterBroker(RegisterBroker {
                    node_id,
                    broker_epoch,
                    incarnation_id,
                    listeners,
                    rack,
                    fenced,
                })
            }
            2..=5 => {
                let b = BrokerRef { node_id: r.i32()?, broker_epoch: r.i64()? };
                match type_id {
                    2 => MetadataRecord::UnregisterBroker(b),
                    3 => MetadataRecord::FenceBroker(b),
                    4 => MetadataRecord::UnfenceBroker(b),
                    _ => MetadataRecord::ControlledShutdown(b),
                }
            }
            6 => {
                let name = r.string()?;
                let topic_id = r.uuid()?;
                let n = r.len(8)?;
                let mut configs = BTreeMap::new();
                for _ in 0..n {
                    let k = r.string()?;
                    let v = r.string()?;
                    if configs.insert(k, v).is_some() {
                        return err("a topic config is named twice");
                    }
                }
                MetadataRecord::Topic(TopicRecord { name, topic_id, configs })
            }
            7 => MetadataRecord::Partition(PartitionRecord {
                topic_id: r.uuid()?,
                partition: r.i32()?,
                replicas: r.ids()?,
                isr: r.ids()?,
                leader: r.i32()?,
                leader_epoch: r.i32()?,
                partition_epoch: r.i32()?,
            }),
            8 => MetadataRecord::PartitionChange(PartitionChange {
                topic_id: r.uuid()?,
                partition: r.i32()?,
                leader: r.i32()?,
                isr: r.ids()?,
                leader_epoch: r.i32()?,
                partition_epoch: r.i32()?,
            }),
            9 => MetadataRecord::RemoveTopic { topic_id: r.uuid()? },
            10 => MetadataRecord::FeatureLevel { name: r.string()?, level: r.i16()? },
            11 => MetadataRecord::ClusterId { cluster_id: r.string()? },
            12 => MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id: r.i32()?,
                broker_epoch: r.i64()?,
                next_producer_id: r.i64()?,
            }),
            other => return err(format!("unknown record type {other}")),
        };
        if !r.buf.is_empty() {
            return err(format!("{} bytes after the end of a type {type_id} record", r.buf.len()));
        }
        Ok(record)
    }
}

fn put_len(w: &mut BytesMut, n: usize) {
    // Lengths beyond u32 cannot be built from validated requests; saturating
    // keeps the encoding total, and the decoder refuses the result.
    w.put_u32(u32::try_from(n).unwrap_or(u32::MAX));
}

fn put_str(w: &mut BytesMut, s: &str) {
    put_len(w, s.len());
    w.put_slice(s.as_bytes());
}

fn put_opt_str(w: &mut BytesMut, s: Option<&str>) {
    match s {
        None => w.put_u8(0),
        Some(s) => {
            w.put_u8(1);
            put_str(w, s);
        }
    }
}

fn put_uuid(w: &mut BytesMut, id: Uuid) {
    w.put_slice(id.as_bytes());
}

fn put_ids(w: &mut BytesMut, ids: &[i32]) {
    put_len(w, ids.len());
    for id in ids {
        w.put_i32(*id);
    }
}

/// A cursor over untrusted bytes: every read is checked against what remains.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return err(format!("truncated: {n} bytes wanted, {} left", self.buf.len()));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        Ok(Uuid::from_bytes(self.array()?))
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => err(format!("bool byte {b}")),
        }
    }

    /// A list count, checked against the limit and against the bytes left
    /// given each element's smallest encoding.
    fn len(&mut self, min_element_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > MAX_LIST_LEN {
            return err(format!("list of {n} elements; the limit is {MAX_LIST_LEN}"));
        }
        if n.saturating_mul(min_element_bytes) > self.buf.len() {
            return err(format!("list of {n} elements in {} bytes", self.buf.len()));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        if n > MAX_STRING_BYTES {
            return err(format!("string of {n} bytes; the limit is {MAX_STRING_BYTES}"));
        }
        let bytes = self.take(n)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => err(format!("string is not UTF-8: {e}")),
        }
    }

    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            b => err(format!("optional-string flag {b}")),
        }
    }

    fn ids(&mut self) -> Result<Vec<i32>, DecodeError> {
        let n = self.len(4)?;
        (0..n).map(|_| self.i32()).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn uuid() -> impl Strategy<Value = Uuid> {
        any::<u128>().prop_map(Uuid::from_u128)
    }

    fn ids() -> impl Strategy<Value = Vec<i32>> {
        proptest::collection::vec(-1i32..8, 0..5)
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._é-]{0,12}"
    }

    pub(crate) fn record() -> impl Strategy<Value = MetadataRecord> {
        let endpoint = (text(), text(), any::<u16>(), any::<i16>())
            .prop_map(|(name, host, port, security_protocol)| Endpoint { name, host, port, security_protocol });
        let broker_ref =
            (any::<i32>(), any::<i64>()).prop_map(|(node_id, broker_epoch)| BrokerRef { node_id, broker_epoch });
        prop_oneof![
            (
                any::<i32>(),
                any::<i64>(),
                uuid(),
                proptest::collection::vec(endpoint, 0..3),
                proptest::option::of(text()),
                any::<bool>()
            )
                .prop_map(|(node_id, broker_epoch, incarnation_id, listeners, rack, fenced)| {
                    MetadataRecord::RegisterBroker(RegisterBroker {
                        node_id,
                        broker_epoch,
                        incarnation_id,
                        listeners,
                        rack,
                        fenced,
                    })
                }),
            broker_ref.clone().prop_map(MetadataRecord::UnregisterBroker),
            broker_ref.clone().prop_map(MetadataRecord::FenceBroker),
            broker_ref.clone().prop_map(MetadataRecord::UnfenceBroker),
            broker_ref.prop_map(MetadataRecord::ControlledShutdown),
            (any::<i32>(), any::<i64>(), any::<i64>()).prop_map(|(broker_id, broker_epoch, next_producer_id)| {
                MetadataRecord::ProducerIds(ProducerIdsRecord { broker_id, broker_epoch, next_producer_id })
            }),
            (text(), uuid(), proptest::collection::btree_map(text(), text(), 0..3))
                .prop_map(|(name, topic_id, configs)| MetadataRecord::Topic(TopicRecord { name, topic_id, configs })),
            (uuid(), any::<i32>(), ids(), ids(), any::<i32>(), any::<i32>(), any::<i32>()).prop_map(
                |(topic_id, partition, replicas, isr, leader, leader_epoch, partition_epoch)| {
                    MetadataRecord::Partition(PartitionRecord {
                        topic_id,
                        partition,
                        replicas,
                        isr,
                        leader,
                        leader_epoch,
                        partition_epoch,
                    })
                }
            ),
            (uuid(), any::<i32>(), any::<i32>(), ids(), any::<i32>(), any::<i32>()).prop_map(
                |(topic_id, partition, leader, isr, leader_epoch, partition_epoch)| {
                    MetadataRecord::PartitionChange(PartitionChange {
                        topic_id,
                        partition,
                        leader,
                        isr,
                        leader_epoch,
                        partition_epoch,
                    })
                }
            ),
            uuid().prop_map(|topic_id| MetadataRecord::RemoveTopic { topic_id }),
            (text(), any::<i16>()).prop_map(|(name, level)| MetadataRecord::FeatureLevel { name, level }),
            text().prop_map(|cluster_id| MetadataRecord::ClusterId { cluster_id }),
        ]
    }

    proptest! {
        #[test]
        fn every_record_round_trips(r in record()) {
            let bytes = r.encode();
            prop_assert_eq!(MetadataRecord::decode(&bytes), Ok(r));
        }

        #[test]
        fn every_strict_prefix_and_extension_is_refused(r in record(), extra in 1u8..=255) {
            let bytes = r.encode();
            for cut in 0..bytes.len() {
                prop_assert!(MetadataRecord::decode(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.to_vec();
            longer.push(extra);
            prop_assert!(MetadataRecord::decode(&longer).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = MetadataRecord::decode(&bytes);
        }
    }

    #[test]
    fn hostile_bytes_are_errors() {
        let topic = MetadataRecord::Topic(TopicRecord {
            name: "t".into(),
            topic_id: Uuid::from_u128(7),
            configs: BTreeMap::from([("flush.ms".to_string(), "5".to_string())]),
        })
        .encode()
        .to_vec();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "truncated"),
            (vec![1, 6], "record version 1"),
            (vec![0, 99], "unknown record type 99"),
            // a name claiming 4 GiB
            (vec![0, 6, 0xff, 0xff, 0xff, 0xff], "limit"),
            // a replica list claiming 4096 elements in no bytes
            ([&[0u8, 7][..], &[0; 16], &[0, 0, 0, 1], &[0, 0, 0x10, 0]].concat(), "elements in"),
            (
                {
                    let mut t = topic.clone();
                    t[6] = 0xff; // the 't' of the name, after version, type and length
                    t
                },
                "UTF-8",
            ),
            (
                {
                    let mut b = MetadataRecord::RegisterBroker(RegisterBroker {
                        node_id: 1,
                        broker_epoch: 2,
                        incarnation_id: Uuid::nil(),
                        listeners: vec![],
                        rack: None,
                        fenced: true,
                    })
                    .encode()
                    .to_vec();
                    *b.last_mut().unwrap() = 2;
                    b
                },
                "bool byte 2",
            ),
        ];
        for (bytes, needle) in cases {
            let e = MetadataRecord::decode(&bytes).unwrap_err();
            assert!(e.0.contains(needle), "{bytes:?}: {e}");
        }
        // A config named twice.
        let mut twice = vec![0u8, 6, 0, 0, 0, 1, b't'];
        twice.extend_from_slice(&[0; 16]);
        twice.extend_from_slice(&[0, 0, 0, 2]);
        for _ in 0..2 {
            twice.extend_from_slice(&[0, 0, 0, 1, b'k', 0, 0, 0, 1, b'v']);
        }
        assert!(MetadataRecord::decode(&twice).unwrap_err().0.contains("twice"));
        assert!(MetadataRecord::decode(&topic).is_ok());
    }
}
