//! The records the coordinator keeps in `__consumer_offsets`, in Kafka's own
//! key and value layouts (`OffsetCommitKey` v1, `OffsetCommitValue` v3,
//! `GroupMetadataKey` v2, `GroupMetadataValue` v3), hand-encoded because
//! kafka-protocol generates only the wire messages. A key's leading version
//! says which kind it is; a record with no value is a tombstone.
//!
//! Consumer groups (KIP-848) use Kafka's record types and key layouts — 3
//! member metadata, 4 group metadata, 6 target assignment of a member, 7
//! target assignment metadata, 8 current member assignment; type 5, the
//! subscribed topics' metadata, is not written: it is recomputed from the
//! topics after a load — but values of our own, not Kafka's flexible ones:
//! an i16 value version (0), then the fields in the order of the value
//! structs below, strings as i16 length + UTF-8 (-1 for null), arrays as an
//! i32 count, an assignment as a count of (16-byte topic id, count of i32
//! partitions).
//!
//! Decoding never trusts a length: every read is checked against what is
//! left, so a damaged record is refused with an error, not a panic.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

/// Partitions by topic id, as consumer groups hand them out.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// A consumer group member's subscription and identity (record type 3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerMemberValue {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
}

/// What a consumer group member owns now (record type 8).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CurrentAssignmentValue {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    /// 0 stable, 1 unrevoked partitions, 2 unreleased partitions.
    pub state: i8,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
}

/// One committed offset of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// A member as the group's metadata record keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The metadata of the protocol the group chose.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's state after a rebalance completes or it empties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

/// One record of `__consumer_offsets`, key and (absent for a tombstone) value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<OffsetValue>,
    },
    Group {
        group: String,
        value: Option<GroupValue>,
    },
    /// Type 3: a consumer group member's subscription.
    ConsumerMember {
        group: String,
        member: String,
        value: Option<ConsumerMemberValue>,
    },
    /// Type 4: a consumer group's epoch.
    ConsumerEpoch {
        group: String,
        epoch: Option<i32>,
    },
    /// Type 6: a member's target assignment.
    ConsumerTarget {
        group: String,
        member: String,
        value: Option<Assignment>,
    },
    /// Type 7: the epoch of a consumer group's target assignment.
    ConsumerTargetEpoch {
        group: String,
        epoch: Option<i32>,
    },
    /// Type 8: a member's current assignment.
    ConsumerCurrent {
        group: String,
        member: String,
        value: Option<CurrentAssignmentValue>,
    },
}

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;
const CONSUMER_MEMBER_KEY: i16 = 3;
const CONSUMER_EPOCH_KEY: i16 = 4;
const CONSUMER_TARGET_KEY: i16 = 6;
const CONSUMER_TARGET_EPOCH_KEY: i16 = 7;
const CONSUMER_CURRENT_KEY: i16 = 8;
const CONSUMER_VALUE_VERSION: i16 = 0;

impl Record {
    /// The group the record belongs to.
    pub fn group(&self) -> &str {
        match self {
            Record::Offset { group, .. }
            | Record::Group { group, .. }
            | Record::ConsumerMember { group, .. }
            | Record::ConsumerEpoch { group, .. }
            | Record::ConsumerTarget { group, .. }
            | Record::ConsumerTargetEpoch { group, .. }
            | Record::ConsumerCurrent { group, .. } => group,
        }
    }

    /// (key, value) bytes as Kafka lays them out.
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::new();
        match self {
            Record::Offset { group, topic, partition, value } => {
                key.put_i16(OFFSET_KEY_VERSION);
                put_str(&mut key, group);
                put_str(&mut key, topic);
                key.put_i32(*partition);
                let value = value.as_ref().map(|v| {
                    let mut b = BytesMut::new();
                    b.put_i16(OFFSET_VALUE_VERSION);
                    b.put_i64(v.offset);
                    b.put_i32(v.leader_epoch);
                    put_str(&mut b, &v.metadata);
                    b.put_i64(v.commit_timestamp);
                    b.freeze()
                });
                (key.freeze(), value)
            }
            Record::Group { group, value } => {
                key.put_i16(GROUP_KEY_VERSION);
                put_str(&mut key, group);
                let value = value.as_ref().map(|v| {
                    let mut b = BytesMut::new();
                    b.put_i16(GROUP_VALUE_VERSION);
                    put_str(&mut b, &v.protocol_type);
                    b.put_i32(v.generation);
                    put_nullable_str(&mut b, v.protocol.as_deref());
                    put_nullable_str(&mut b, v.leader.as_deref());
                    b.put_i64(v.current_state_timestamp);
                    b.put_i32(v.members.len() as i32);
                    for m in &v.members {
                        put_str(&mut b, &m.member_id);
                        put_nullable_str(&mut b, m.group_instance_id.as_deref());
                        put_str(&mut b, &m.client_id);
                        put_str(&mut b, &m.client_host);
                        b.put_i32(m.rebalance_timeout_ms);
                        b.put_i32(m.session_timeout_ms);
                        put_bytes(&mut b, &m.subscription);
                        put_bytes(&mut b, &m.assignment);
                    }
                    b.freeze()
                });
                (key.freeze(), value)
            }
            Record::ConsumerMember { group, member, value } => {
                consumer_key(&mut key, CONSUMER_MEMBER_KEY, group, Some(member));
                let value = value.as_ref().map(|v| {
                    consumer_value(|b| {
                        put_nullable_str(b, v.instance_id.as_deref());
                        put_nullable_str(b, v.rack_id.as_deref());
                        put_str(b, &v.client_id);
                        put_str(b, &v.client_host);
                        b.put_i32(v.subscribed_topic_names.len() as i32);
                        v.subscribed_topic_names.iter().for_each(|t| put_str(b, t));
                        put_nullable_str(b, v.subscribed_topic_regex.as_deref());
                        put_nullable_str(b, v.server_assignor.as_deref());
                        b.put_i32(v.rebalance_timeout_ms);
                    })
                });
                (key.freeze(), value)
            }
            Record::ConsumerEpoch { group, epoch } | Record::ConsumerTargetEpoch { group, epoch } => {
                let kind = if matches!(self, Record::ConsumerEpoch { .. }) {
                    CONSUMER_EPOCH_KEY
                } else {
                    CONSUMER_TARGET_EPOCH_KEY
                };
                consumer_key(&mut key, kind, group, None);
                (key.freeze(), epoch.map(|e| consumer_value(|b| b.put_i32(e))))
            }
            Record::ConsumerTarget { group, member, value } => {
                consumer_key(&mut key, CONSUMER_TARGET_KEY, group, Some(member));
                (key.freeze(), value.as_ref().map(|a| consumer_value(|b| put_assignment(b, a))))
            }
            Record::ConsumerCurrent { group, member, value } => {
                consumer_key(&mut key, CONSUMER_CURRENT_KEY, group, Some(member));
                let value = value.as_ref().map(|v| {
                    consumer_value(|b| {
                        b.put_i32(v.member_epoch);
                        b.put_i32(v.previous_member_epoch);
                        b.put_i8(v.state);
                        put_assignment(b, &v.assigned);
                        put_assignment(b, &v.pending_revocation);
                    })
                });
                (key.freeze(), value)
            }
        }
    }

    /// Read a record back from its key and value.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Record, String> {
        let mut k = Reader(key);
        let version = k.i16()?;
        match version {
            0 | OFFSET_KEY_VERSION => {
                let group = k.str()?;
                let topic = k.str()?;
                let partition = k.i32()?;
                let value = value.map(|v| decode_offset_value(v)).transpose()?;
                Ok(Record::Offset { group, topic, partition, value })
            }
            GROUP_KEY_VERSION => {
                let group = k.str()?;
                let value = value.map(|v| decode_group_value(v)).transpose()?;
                Ok(Record::Group { group, value })
            }
            CONSUMER_MEMBER_KEY => {
                let (group, member) = (k.str()?, k.str()?);
                let value = value
                    .map(|v| {
                        let mut r = consumer_reader(v)?;
                        let instance_id = r.nullable_str()?;
                        let rack_id = r.nullable_str()?;
                        let client_id = r.str()?;
                        let client_host = r.str()?;
                        let count = r.count()?;
                        let mut subscribed_topic_names = Vec::new();
                        for _ in 0..count {
                            subscribed_topic_names.push(r.str()?);
                        }
                        Ok::<_, String>(ConsumerMemberValue {
                            instance_id,
                            rack_id,
                            client_id,
                            client_host,
                            subscribed_topic_names,
                            subscribed_topic_regex: r.nullable_str()?,
                            server_assignor: r.nullable_str()?,
                            rebalance_timeout_ms: r.i32()?,
                        })
                    })
                    .transpose()?;
                Ok(Record::ConsumerMember { group, member, value })
            }
            CONSUMER_EPOCH_KEY | CONSUMER_TARGET_EPOCH_KEY => {
                let group = k.str()?;
                let epoch = value.map(|v| consumer_reader(v)?.i32()).transpose()?;
                Ok(if version == CONSUMER_EPOCH_KEY {
                    Record::ConsumerEpoch { group, epoch }
                } else {
                    Record::ConsumerTargetEpoch { group, epoch }
                })
            }
            CONSUMER_TARGET_KEY => {
                let (group, member) = (k.str()?, k.str()?);
                let value = value.map(|v| consumer_reader(v)?.assignment()).transpose()?;
                Ok(Record::ConsumerTarget { group, member, value })
            }
            CONSUMER_CURRENT_KEY => {
                let (group, member) = (k.str()?, k.str()?);
                let value = value
                    .map(|v| {
                        let mut r = consumer_reader(v)?;
                        Ok::<_, String>(CurrentAssignmentValue {
                            member_epoch: r.i32()?,
                            previous_member_epoch: r.i32()?,
                            state: r.i8()?,
                            assigned: r.assignment()?,
                            pending_revocation: r.assignment()?,
                        })
                    })
                    .transpose()?;
                Ok(Record::ConsumerCurrent { group, member, value })
            }
            other => Err(format!("unknown __consumer_offsets key version {other}")),
        }
    }
}

fn decode_offset_value(v: &[u8]) -> Result<OffsetValue, String> {
    let mut r = Reader(v);
    let version = r.i16()?;
    if !(0..=OFFSET_VALUE_VERSION).contains(&version) {
        return Err(format!("unknown offset value version {version}"));
    }
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.str()?;
    let commit_timestamp = r.i64()?;
    if version == 1 {
        r.i64()?; // expire timestamp, unused since Kafka 2.1
    }
    Ok(OffsetValue { offset, leader_epoch, metadata, commit_timestamp })
}

fn decode_group_value(v: &[u8]) -> Result<GroupValue, String> {
    let mut r = Reader(v);
    let version = r.i16()?;
    if version != GROUP_VALUE_VERSION {
        return Err(format!("unsupported group metadata value version {version}"));
    }
    let protocol_type = r.str()?;
    let generation = r.i32()?;
    let protocol = r.nullable_str()?;
    let leader = r.nullable_str()?;
    let current_state_timestamp = r.i64()?;
    let count = r.i32()?;
    if count < 0 {
        return Err(format!("negative member count {count}"));
    }
    let mut members = Vec::new();
    for _ in 0..count {
        members.push(MemberValue {
            member_id: r.str()?,
            group_instance_id: r.nullable_str()?,
            client_id: r.str()?,
            client_host: r.str()?,
            rebalance_timeout_ms: r.i32()?,
            session_timeout_ms: r.i32()?,
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    Ok(GroupValue { protocol_type, generation, protocol, leader, current_state_timestamp, members })
}

/// Kafka's key layout of the consumer group record types: the type, the
/// group id, and the member id for per-member records.
fn consumer_key(key: &mut BytesMut, kind: i16, group: &str, member: Option<&str>) {
    key.put_i16(kind);
    put_str(key, group);
    if let Some(m) = member {
        put_str(key, m);
    }
}

fn consumer_value(fill: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(CONSUMER_VALUE_VERSION);
    fill(&mut b);
    b.freeze()
}

fn consumer_reader(v: &[u8]) -> Result<Reader<'_>, String> {
    let mut r = Reader(v);
    let version = r.i16()?;
    if version != CONSUMER_VALUE_VERSION {
        return Err(format!("unsupported consumer group value version {version}"));
    }
    Ok(r)
}

fn put_assignment(b: &mut BytesMut, a: &Assignment) {
    b.put_i32(a.len() as i32);
    for (topic, partitions) in a {
        b.put_slice(topic.as_bytes());
        b.put_i32(partitions.len() as i32);
        partitions.iter().for_each(|p| b.put_i32(*p));
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    // The coordinator refuses longer group ids, instance ids and protocol
    // names; topic names are at most 249 bytes, metadata strings are bounded
    // by `offset.metadata.max.bytes` and client ids by their i16 header field.
    assert!(s.len() <= i16::MAX as usize, "a {}-byte string in a __consumer_offsets record", s.len());
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_nullable_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

/// Checked reads over a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn need(&self, n: usize) -> Result<(), String> {
        if self.0.remaining() < n {
            return Err(format!("record cut short: {n} bytes needed, {} left", self.0.remaining()));
        }
        Ok(())
    }

    fn i16(&mut self) -> Result<i16, String> {
        self.need(2)?;
        Ok(self.0.get_i16())
    }

    fn i8(&mut self) -> Result<i8, String> {
        self.need(1)?;
        Ok(self.0.get_i8())
    }

    /// An array count: never negative.
    fn count(&mut self) -> Result<usize, String> {
        let n = self.i32()?;
        usize::try_from(n).map_err(|_| format!("negative count {n}"))
    }

    fn assignment(&mut self) -> Result<Assignment, String> {
        let mut a = Assignment::new();
        for _ in 0..self.count()? {
            self.need(16)?;
            let topic = Uuid::from_slice(&self.0[..16]).map_err(|e| format!("bad topic id: {e}"))?;
            self.0.advance(16);
            let mut partitions = BTreeSet::new();
            for _ in 0..self.count()? {
                partitions.insert(self.i32()?);
            }
            a.insert(topic, partitions);
        }
        Ok(a)
    }

    fn i32(&mut self) -> Result<i32, String> {
        self.need(4)?;
        Ok(self.0.get_i32())
    }

    fn i64(&mut self) -> Result<i64, String> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }

    fn nullable_str(&mut self) -> Result<Option<String>, String> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        self.need(len as usize)?;
        let s = String::from_utf8(self.0[..len as usize].to_vec()).map_err(|e| format!("bad string: {e}"))?;
        self.0.advance(len as usize);
        Ok(Some(s))
    }

    fn str(&mut self) -> Result<String, String> {
        self.nullable_str()?.ok_or_else(|| "null where a string is required".to_string())
    }

    fn bytes(&mut self) -> Result<Bytes, String> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        self.need(len as usize)?;
        let b = Bytes::copy_from_slice(&self.0[..len as usize]);
        self.0.advance(len as usize);
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(r: Record) {
        let (k, v) = r.encode();
        assert_eq!(Record::decode(&k, v.as_deref()).unwrap(), r);
        // Every truncation is an error, never a panic.
        for cut in 0..k.len() {
            assert!(Record::decode(&k[..cut], v.as_deref()).is_err());
        }
        if let Some(v) = v {
            for cut in 0..v.len() {
                assert!(Record::decode(&k, Some(&v[..cut])).is_err());
            }
        }
    }

    #[test]
    fn records_round_trip() {
        let value = OffsetValue { offset: 42, leader_epoch: 3, metadata: "m".into(), commit_timestamp: 1_700 };
        roundtrip(Record::Offset { group: "g".into(), topic: "t".into(), partition: 5, value: Some(value) });
        roundtrip(Record::Offset { group: "g".into(), topic: "t".into(), partition: 5, value: None });
        let member = MemberValue {
            member_id: "c-1".into(),
            group_instance_id: Some("i".into()),
            client_id: "c".into(),
            client_host: "/h".into(),
            rebalance_timeout_ms: 300_000,
            session_timeout_ms: 45_000,
            subscription: Bytes::from_static(b"sub"),
            assignment: Bytes::from_static(b"asg"),
        };
        let group = GroupValue {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("c-1".into()),
            current_state_timestamp: 9,
            members: vec![member],
        };
        roundtrip(Record::Group { group: "g".into(), value: Some(group) });
        roundtrip(Record::Group { group: "g".into(), value: None });
    }

    #[test]
    fn consumer_group_records_round_trip() {
        let member = ConsumerMemberValue {
            instance_id: Some("i".into()),
            rack_id: None,
            client_id: "c".into(),
            client_host: "/h".into(),
            subscribed_topic_names: vec!["a".into(), "b".into()],
            subscribed_topic_regex: Some("t.*".into()),
            server_assignor: Some("uniform".into()),
            rebalance_timeout_ms: 300_000,
        };
        let (g, m) = (String::from("g"), String::from("m-1"));
        roundtrip(Record::ConsumerMember { group: g.clone(), member: m.clone(), value: Some(member) });
        roundtrip(Record::ConsumerMember { group: g.clone(), member: m.clone(), value: None });
        roundtrip(Record::ConsumerEpoch { group: g.clone(), epoch: Some(4) });
        roundtrip(Record::ConsumerEpoch { group: g.clone(), epoch: None });
        roundtrip(Record::ConsumerTargetEpoch { group: g.clone(), epoch: Some(4) });
        let a: Assignment =
            [(Uuid::from_u128(7), BTreeSet::from([0, 2])), (Uuid::from_u128(9), BTreeSet::new())].into();
        roundtrip(Record::ConsumerTarget { group: g.clone(), member: m.clone(), value: Some(a.clone()) });
        let current = CurrentAssignmentValue {
            member_epoch: 4,
            previous_member_epoch: 3,
            state: 1,
            assigned: a.clone(),
            pending_revocation: [(Uuid::from_u128(7), BTreeSet::from([1]))].into(),
        };
        roundtrip(Record::ConsumerCurrent { group: g.clone(), member: m.clone(), value: Some(current) });
        roundtrip(Record::ConsumerCurrent { group: g, member: m, value: None });
    }

    #[test]
    fn kafka_layout_of_an_offset_key() {
        let r = Record::Offset { group: "g".into(), topic: "t".into(), partition: 1, value: None };
        let (k, _) = r.encode();
        assert_eq!(&k[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 1]);
    }
}
