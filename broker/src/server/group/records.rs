//! The records the coordinator keeps in `__consumer_offsets`, in Kafka's own
//! key and value layouts (`OffsetCommitKey` v1, `OffsetCommitValue` v3,
//! `GroupMetadataKey` v2, `GroupMetadataValue` v3), hand-encoded because
//! kafka-protocol generates only the wire messages. A key's leading version
//! says which kind it is; a record with no value is a tombstone.
//!
//! Decoding never trusts a length: every read is checked against what is
//! left, so a damaged record is refused with an error, not a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

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
    Offset { group: String, topic: String, partition: i32, value: Option<OffsetValue> },
    Group { group: String, value: Option<GroupValue> },
}

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

impl Record {
    /// The group the record belongs to.
    pub fn group(&self) -> &str {
        match self {
            Record::Offset { group, .. } | Record::Group { group, .. } => group,
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
        }
    }

    /// Read a record back from its key and value.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Record, String> {
        let mut k = Reader(key);
        match k.i16()? {
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
    fn kafka_layout_of_an_offset_key() {
        let r = Record::Offset { group: "g".into(), topic: "t".into(), partition: 1, value: None };
        let (k, _) = r.encode();
        assert_eq!(&k[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 1]);
    }
}
