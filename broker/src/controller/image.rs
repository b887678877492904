//! The metadata image: the cluster's state as of one offset of the metadata
//! log — registered brokers (advertised listeners, fenced or not), topics,
//! and each partition's replicas, ISR, leader and epochs — built by applying
//! committed records in order (KIP-631), saved to and loaded from a snapshot
//! (KIP-630), and compared with an earlier image to tell a broker which of
//! its partitions it now leads, follows or must drop.
//!
//! `apply` checks each record against the image and changes nothing when it
//! refuses one, so a corrupt or out-of-order record is an error the caller
//! sees, never a half-applied image.
//!
//! # Snapshot format (version 0)
//!
//! `"FLMS"`, `version: u8` (0), `last_offset: i64`, `count: u32`, then
//! `count` times (`length: u32`, a record as in [`super::records`]), then a
//! CRC-32C (Castagnoli, big-endian `u32`) of every byte before it. The
//! records rebuild the image from empty: the cluster id, feature levels,
//! the producer id counter (a `ProducerIds` record of broker -1), each broker's registration (followed by `ControlledShutdown` if it is
//! shutting down), then each topic followed by its partitions in order.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use super::records::{
    BrokerRef, DecodeError, Endpoint, MetadataRecord, PartitionChange, PartitionRecord, ProducerIdsRecord, Reader,
    RegisterBroker, TopicRecord,
};
use crate::server::topics::{validate_topic_name, MAX_PARTITIONS};

/// No leader: the partition is offline.
pub const NO_LEADER: i32 = -1;
const SNAPSHOT_MAGIC: &[u8; 4] = b"FLMS";
const SNAPSHOT_VERSION: u8 = 0;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub node_id: i32,
    /// The offset of the registration record: a new one for every
    /// registration, so it tells one run of a broker from the next.
    pub epoch: i64,
    pub incarnation_id: Uuid,
    pub listeners: Vec<Endpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
}

impl BrokerRegistration {
    /// May lead partitions and receive new replicas.
    pub fn is_usable(&self) -> bool {
        !self.fenced && !self.in_controlled_shutdown
    }

    /// The advertised address on listener `name`.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.listeners.iter().find(|l| l.name == name)
    }

    fn broker_ref(&self) -> BrokerRef {
        BrokerRef { node_id: self.node_id, broker_epoch: self.epoch }
    }
}

/// A partition's replica placement and leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRegistration {
    /// Preference order: the first is the preferred leader.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// [`NO_LEADER`] when offline.
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// A topic and its partitions, indexed by partition number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionRegistration>,
}

/// A record `apply` refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata record refused at offset {offset}: {reason}")]
pub struct ImageError {
    pub offset: i64,
    pub reason: String,
}

/// The cluster metadata as of [`MetadataImage::last_offset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataImage {
    last_offset: i64,
    cluster_id: Option<String>,
    features: BTreeMap<String, i16>,
    brokers: BTreeMap<i32, BrokerRegistration>,
    topics: BTreeMap<Uuid, TopicImage>,
    names: BTreeMap<String, Uuid>,
    /// Derived from `topics`, kept as records apply so placement costs no scan.
    partition_count: usize,
    replica_load: BTreeMap<i32, usize>,
    /// The first producer id no broker has been given (KIP-730).
    next_producer_id: i64,
}

impl Default for MetadataImage {
    fn default() -> Self {
        MetadataImage::empty()
    }
}

impl MetadataImage {
    /// The image before the first record.
    pub fn empty() -> MetadataImage {
        MetadataImage {
            last_offset: -1,
            cluster_id: None,
            features: BTreeMap::new(),
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            names: BTreeMap::new(),
            partition_count: 0,
            replica_load: BTreeMap::new(),
            next_producer_id: 0,
        }
    }

    /// The offset of the last record applied; -1 for the empty image.
    pub fn last_offset(&self) -> i64 {
        self.last_offset
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    pub fn feature_level(&self, name: &str) -> Option<i16> {
        self.features.get(name).copied()
    }

    pub fn broker(&self, node_id: i32) -> Option<&BrokerRegistration> {
        self.brokers.get(&node_id)
    }

    /// Every registered broker, fenced or not, by id.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values()
    }

    /// Ids of brokers that may lead partitions and take new replicas, ascending.
    pub fn usable_brokers(&self) -> Vec<i32> {
        self.brokers.values().filter(|b| b.is_usable()).map(|b| b.node_id).collect()
    }

    pub fn is_usable(&self, node_id: i32) -> bool {
        self.brokers.get(&node_id).is_some_and(BrokerRegistration::is_usable)
    }

    pub fn topic(&self, id: Uuid) -> Option<&TopicImage> {
        self.topics.get(&id)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.names.get(name).and_then(|id| self.topics.get(id))
    }

    /// Every topic, by name.
    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.names.values().filter_map(|id| self.topics.get(id))
    }

    pub fn topic_names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    pub fn partition(&self, topic_id: Uuid, partition: i32) -> Option<&PartitionRegistration> {
        let i = usize::try_from(partition).ok()?;
        self.topics.get(&topic_id)?.partitions.get(i)
    }

    /// Partitions in the cluster, all topics together.
    pub fn partition_count(&self) -> usize {
        self.partition_count
    }

    /// The first producer id not yet given to any broker.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    /// Replicas each broker holds, for every broker that holds one.
    pub fn replicas_per_broker(&self) -> &BTreeMap<i32, usize> {
        &self.replica_load
    }

    /// Apply the committed record at `offset`. Offsets must increase; a
    /// record that does not fit the image is refused and changes nothing.
    pub fn apply(&mut self, offset: i64, record: &MetadataRecord) -> Result<(), ImageError> {
        if offset <= self.last_offset {
            return Err(ImageError {
                offset,
                reason: format!("offsets must increase; the image is at {}", self.last_offset),
            });
        }
        self.apply_record(record).map_err(|reason| ImageError { offset, reason })?;
        self.last_offset = offset;
        Ok(())
    }

    fn apply_record(&mut self, record: &MetadataRecord) -> Result<(), String> {
        match record {
            MetadataRecord::RegisterBroker(r) => {
                if r.node_id < 0 {
                    return Err(format!("broker id {} is negative", r.node_id));
                }
                if let Some(old) = self.brokers.get(&r.node_id) {
                    if r.broker_epoch <= old.epoch {
                        return Err(format!(
                            "broker {} registration epoch {} is not above the current {}",
                            r.node_id, r.broker_epoch, old.epoch
                        ));
                    }
                }
                self.brokers.insert(
                    r.node_id,
                    BrokerRegistration {
                        node_id: r.node_id,
                        epoch: r.broker_epoch,
                        incarnation_id: r.incarnation_id,
                        listeners: r.listeners.clone(),
                        rack: r.rack.clone(),
                        fenced: r.fenced,
                        in_controlled_shutdown: false,
                    },
                );
            }
            MetadataRecord::UnregisterBroker(b) => {
                self.registered(b)?;
                self.brokers.remove(&b.node_id);
            }
            MetadataRecord::FenceBroker(b) => self.registered(b)?.fenced = true,
            MetadataRecord::UnfenceBroker(b) => self.registered(b)?.fenced = false,
            MetadataRecord::ControlledShutdown(b) => self.registered(b)?.in_controlled_shutdown = true,
            MetadataRecord::Topic(t) => {
                validate_topic_name(&t.name)?;
                if t.topic_id.is_nil() {
                    return Err("the topic id is nil".into());
                }
                if self.names.contains_key(&t.name) || self.topics.contains_key(&t.topic_id) {
                    return Err(format!("topic {:?} or id {} already exists", t.name, t.topic_id));
                }
                self.names.insert(t.name.clone(), t.topic_id);
                self.topics.insert(
                    t.topic_id,
                    TopicImage { name: t.name.clone(), id: t.topic_id, configs: t.configs.clone(), partitions: vec![] },
                );
            }
            MetadataRecord::Partition(p) => {
                let topic =
                    self.topics.get_mut(&p.topic_id).ok_or_else(|| format!("no topic has id {}", p.topic_id))?;
                if p.partition as i64 != topic.partitions.len() as i64 {
                    return Err(format!(
                        "partition {} of {:?} is out of order; the next is {}",
                        p.partition,
                        topic.name,
                        topic.partitions.len()
                    ));
                }
                if topic.partitions.len() >= MAX_PARTITIONS as usize {
                    return Err(format!("topic {:?} would have more than {MAX_PARTITIONS} partitions", topic.name));
                }
                if p.leader_epoch < 0 || p.partition_epoch < 0 {
                    return Err("negative epoch".into());
                }
                check_placement(&p.replicas, &p.isr, p.leader)?;
                self.partition_count += 1;
                for r in &p.replicas {
                    *self.replica_load.entry(*r).or_insert(0) += 1;
                }
                topic.partitions.push(PartitionRegistration {
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                });
            }
            MetadataRecord::PartitionChange(c) => {
                let part = usize::try_from(c.partition)
                    .ok()
                    .and_then(|i| self.topics.get_mut(&c.topic_id)?.partitions.get_mut(i))
                    .ok_or_else(|| format!("no partition {} of topic id {}", c.partition, c.topic_id))?;
                check_placement(&part.replicas, &c.isr, c.leader)?;
                if Some(c.partition_epoch) != part.partition_epoch.checked_add(1) {
                    return Err(format!(
                        "partition epoch {} does not follow {}",
                        c.partition_epoch, part.partition_epoch
                    ));
                }
                let leader_moved = c.leader != part.leader;
                if c.leader_epoch < part.leader_epoch || (leader_moved && c.leader_epoch == part.leader_epoch) {
                    return Err(format!(
                        "leader epoch {} after {} (leader {} -> {})",
                        c.leader_epoch, part.leader_epoch, part.leader, c.leader
                    ));
                }
                part.isr = c.isr.clone();
                part.leader = c.leader;
                part.leader_epoch = c.leader_epoch;
                part.partition_epoch = c.partition_epoch;
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                let topic = self.topics.remove(topic_id).ok_or_else(|| format!("no topic has id {topic_id}"))?;
                self.names.remove(&topic.name);
                self.partition_count -= topic.partitions.len();
                for r in topic.partitions.iter().flat_map(|p| &p.replicas) {
                    let load = self.replica_load.get_mut(r).expect("counted when the partition was added");
                    *load -= 1;
                    if *load == 0 {
                        self.replica_load.remove(r);
                    }
                }
            }
            MetadataRecord::FeatureLevel { name, level } => {
                self.features.insert(name.clone(), *level);
            }
            // Blocks only move forward, so no id is given twice; the broker
            // is not checked, since a snapshot writes the counter alone.
            MetadataRecord::ProducerIds(p) => {
                if p.next_producer_id <= self.next_producer_id {
                    return Err(format!(
                        "next producer id {} does not pass the current {}",
                        p.next_producer_id, self.next_producer_id
                    ));
                }
                self.next_producer_id = p.next_producer_id;
            }
            MetadataRecord::ClusterId { cluster_id } => match &self.cluster_id {
                Some(old) if old != cluster_id => {
                    return Err(format!("cluster id {cluster_id:?} replaces {old:?}"));
                }
                _ => self.cluster_id = Some(cluster_id.clone()),
            },
        }
        Ok(())
    }

    fn registered(&mut self, b: &BrokerRef) -> Result<&mut BrokerRegistration, String> {
        match self.brokers.get_mut(&b.node_id) {
            Some(r) if r.epoch == b.broker_epoch => Ok(r),
            Some(r) => Err(format!("broker {} is at epoch {}, not {}", b.node_id, r.epoch, b.broker_epoch)),
            None => Err(format!("broker {} is not registered", b.node_id)),
        }
    }

    /// The records that rebuild this image from empty.
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        if let Some(id) = &self.cluster_id {
            out.push(MetadataRecord::ClusterId { cluster_id: id.clone() });
        }
        for (name, level) in &self.features {
            out.push(MetadataRecord::FeatureLevel { name: name.clone(), level: *level });
        }
        if self.next_producer_id > 0 {
            out.push(MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id: -1,
                broker_epoch: -1,
                next_producer_id: self.next_producer_id,
            }));
        }
        for b in self.brokers.values() {
            out.push(MetadataRecord::RegisterBroker(RegisterBroker {
                node_id: b.node_id,
                broker_epoch: b.epoch,
                incarnation_id: b.incarnation_id,
                listeners: b.listeners.clone(),
                rack: b.rack.clone(),
                fenced: b.fenced,
            }));
            if b.in_controlled_shutdown {
                out.push(MetadataRecord::ControlledShutdown(b.broker_ref()));
            }
        }
        for t in self.topics() {
            out.push(MetadataRecord::Topic(TopicRecord {
                name: t.name.clone(),
                topic_id: t.id,
                configs: t.configs.clone(),
            }));
            for (i, p) in t.partitions.iter().enumerate() {
                out.push(MetadataRecord::Partition(PartitionRecord {
                    topic_id: t.id,
                    partition: i as i32,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                }));
            }
        }
        out
    }

    /// The image as a snapshot (format in the module doc).
    pub fn to_snapshot(&self) -> Bytes {
        let records = self.to_records();
        let mut w = BytesMut::new();
        w.put_slice(SNAPSHOT_MAGIC);
        w.put_u8(SNAPSHOT_VERSION);
        w.put_i64(self.last_offset);
        w.put_u32(records.len() as u32);
        let mut scratch = BytesMut::new();
        for r in &records {
            scratch.clear();
            r.encode_into(&mut scratch);
            w.put_u32(scratch.len() as u32);
            w.put_slice(&scratch);
        }
        let crc = crc32c::crc32c(&w);
        w.put_u32(crc);
        w.freeze()
    }

    /// Load a snapshot written by [`Self::to_snapshot`]. Any damage — a bad
    /// checksum, an undecodable record, a record that does not fit — is an
    /// error.
    pub fn from_snapshot(bytes: &[u8]) -> Result<MetadataImage, DecodeError> {
        if bytes.len() < SNAPSHOT_MAGIC.len() + 1 + 8 + 4 + 4 {
            return Err(DecodeError(format!("snapshot of {} bytes is too short", bytes.len())));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let want = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32c::crc32c(body) != want {
            return Err(DecodeError("snapshot checksum mismatch".into()));
        }
        let mut r = Reader { buf: body };
        if r.take(4)? != SNAPSHOT_MAGIC {
            return Err(DecodeError("not a metadata snapshot (bad magic)".into()));
        }
        let version = r.u8()?;
        if version != SNAPSHOT_VERSION {
            return Err(DecodeError(format!("snapshot version {version}; this broker reads {SNAPSHOT_VERSION}")));
        }
        let last_offset = r.i64()?;
        if last_offset < -1 {
            return Err(DecodeError(format!("snapshot offset {last_offset}")));
        }
        let count = r.u32()? as usize;
        let mut image = MetadataImage::empty();
        for i in 0..count {
            let len = r.u32()? as usize;
            let record = MetadataRecord::decode(r.take(len)?)?;
            image.apply_record(&record).map_err(|why| DecodeError(format!("snapshot record {i}: {why}")))?;
        }
        if !r.buf.is_empty() {
            return Err(DecodeError(format!("{} bytes after the snapshot's records", r.buf.len())));
        }
        image.last_offset = last_offset;
        Ok(image)
    }

    /// What broker `node_id` must do to its local partitions to go from
    /// `prev` to this image: partitions it now leads or follows whose
    /// registration changed (or that are new to it), and partitions it must
    /// drop because their topic was removed or it is no longer a replica.
    /// Comparing whole images, rather than replaying records, gives the
    /// same answer after a snapshot load as after the records it replaced.
    pub fn local_changes(&self, prev: &MetadataImage, node_id: i32) -> LocalChanges {
        let mut out = LocalChanges::default();
        for t in self.topics.values() {
            let old_topic = prev.topics.get(&t.id);
            for (i, p) in t.partitions.iter().enumerate() {
                if !p.replicas.contains(&node_id) {
                    continue;
                }
                let old = old_topic.and_then(|o| o.partitions.get(i)).filter(|o| o.replicas.contains(&node_id));
                if old == Some(p) {
                    continue;
                }
                let local = LocalPartition {
                    topic_id: t.id,
                    topic_name: t.name.clone(),
                    partition: i as i32,
                    registration: p.clone(),
                    is_new: old.is_none(),
                };
                if p.leader == node_id {
                    out.leaders.push(local);
                } else {
                    out.followers.push(local);
                }
            }
        }
        for t in prev.topics.values() {
            let new_topic = self.topics.get(&t.id);
            for (i, p) in t.partitions.iter().enumerate() {
                let still = new_topic.and_then(|n| n.partitions.get(i)).is_some_and(|n| n.replicas.contains(&node_id));
                if p.replicas.contains(&node_id) && !still {
                    out.deletes.push(RemovedPartition {
                        topic_id: t.id,
                        topic_name: t.name.clone(),
                        partition: i as i32,
                        topic_removed: new_topic.is_none(),
                    });
                }
            }
        }
        out
    }
}

/// Replicas distinct and non-negative, the ISR a non-empty subset of them
/// with no repeats, and the leader in the ISR or [`NO_LEADER`].
fn check_placement(replicas: &[i32], isr: &[i32], leader: i32) -> Result<(), String> {
    if replicas.is_empty() || replicas.iter().any(|r| *r < 0) {
        return Err(format!("replicas {replicas:?} must be non-empty broker ids"));
    }
    if replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
        return Err(format!("replicas {replicas:?} repeat a broker"));
    }
    if isr.is_empty()
        || isr.iter().any(|r| !replicas.contains(r))
        || isr.iter().collect::<BTreeSet<_>>().len() != isr.len()
    {
        return Err(format!("ISR {isr:?} must be a non-empty subset of replicas {replicas:?}"));
    }
    if leader != NO_LEADER && !isr.contains(&leader) {
        return Err(format!("leader {leader} is not in the ISR {isr:?}"));
    }
    Ok(())
}

/// A partition this broker hosts whose registration changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPartition {
    pub topic_id: Uuid,
    pub topic_name: String,
    pub partition: i32,
    pub registration: PartitionRegistration,
    /// Not hosted here in the previous image: the log must be created or opened.
    pub is_new: bool,
}

/// A partition this broker must stop hosting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedPartition {
    pub topic_id: Uuid,
    pub topic_name: String,
    pub partition: i32,
    /// The whole topic was deleted (rather than the replica moved away).
    pub topic_removed: bool,
}

/// The local consequences of a metadata change for one broker (Kafka's
/// `LocalReplicaChanges`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalChanges {
    /// Partitions it leads: take (or keep) leadership at the registration's leader epoch.
    pub leaders: Vec<LocalPartition>,
    /// Partitions it hosts and does not lead (including offline ones).
    pub followers: Vec<LocalPartition>,
    pub deletes: Vec<RemovedPartition>,
}

impl LocalChanges {
    pub fn is_empty(&self) -> bool {
        self.leaders.is_empty() && self.followers.is_empty() && self.deletes.is_empty()
    }
}

/// A [`PartitionChange`] to `leader` and `isr` from `p`, with the epochs
/// bumped as Kafka bumps them: the partition epoch on every change, the
/// leader epoch when the leader changes. `None` if nothing changes.
pub fn partition_change(
    topic_id: Uuid,
    partition: i32,
    p: &PartitionRegistration,
    leader: i32,
    isr: Vec<i32>,
) -> Option<PartitionChange> {
    if leader == p.leader && isr == p.isr {
        return None;
    }
    let leader_epoch = if leader != p.leader { p.leader_epoch + 1 } else { p.leader_epoch };
    Some(PartitionChange { topic_id, partition, leader, isr, leader_epoch, partition_epoch: p.partition_epoch + 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tid(n: u128) -> Uuid {
        Uuid::from_u128(n + 1)
    }

    fn register(node_id: i32, epoch: i64) -> MetadataRecord {
        MetadataRecord::RegisterBroker(RegisterBroker {
            node_id,
            broker_epoch: epoch,
            incarnation_id: Uuid::from_u128(node_id as u128),
            listeners: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: format!("b{node_id}"),
                port: 9092,
                security_protocol: 0,
            }],
            rack: None,
            fenced: true,
        })
    }

    fn topic(n: u128) -> MetadataRecord {
        MetadataRecord::Topic(TopicRecord { name: format!("t{n}"), topic_id: tid(n), configs: BTreeMap::new() })
    }

    fn partition(n: u128, partition: i32, replicas: Vec<i32>) -> MetadataRecord {
        MetadataRecord::Partition(PartitionRecord {
            topic_id: tid(n),
            partition,
            isr: replicas.clone(),
            leader: replicas[0],
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
        })
    }

    fn build(records: &[MetadataRecord]) -> MetadataImage {
        let mut image = MetadataImage::empty();
        for (i, r) in records.iter().enumerate() {
            image.apply(i as i64, r).unwrap();
        }
        image
    }

    #[test]
    fn records_build_brokers_topics_and_partitions() {
        let image = build(&[
            MetadataRecord::ClusterId { cluster_id: "c".into() },
            register(1, 1),
            register(2, 2),
            MetadataRecord::UnfenceBroker(BrokerRef { node_id: 1, broker_epoch: 1 }),
            topic(0),
            partition(0, 0, vec![1, 2]),
            partition(0, 1, vec![2, 1]),
        ]);
        assert_eq!(image.last_offset(), 6);
        assert_eq!(image.cluster_id(), Some("c"));
        assert_eq!(image.usable_brokers(), [1]);
        assert_eq!(image.broker(2).unwrap().endpoint("PLAINTEXT").unwrap().host, "b2");
        let t = image.topic_by_name("t0").unwrap();
        assert_eq!((t.id, t.partitions.len()), (tid(0), 2));
        assert_eq!(image.partition(tid(0), 1).unwrap().leader, 2);
        assert_eq!(image.replicas_per_broker(), &BTreeMap::from([(1, 2), (2, 2)]));
    }

    #[test]
    fn refused_records_change_nothing() {
        let mut image = build(&[register(1, 0), topic(0), partition(0, 0, vec![1])]);
        let before = image.clone();
        let bad = [
            (3, MetadataRecord::FenceBroker(BrokerRef { node_id: 1, broker_epoch: 9 }), "epoch"),
            (3, MetadataRecord::UnfenceBroker(BrokerRef { node_id: 5, broker_epoch: 0 }), "not registered"),
            (3, register(1, 0), "not above"),
            (3, topic(0), "already exists"),
            (3, partition(0, 2, vec![1]), "out of order"),
            (3, partition(1, 0, vec![1]), "no topic"),
            (3, partition(0, 1, vec![1, 1]), "repeat"),
            (
                3,
                MetadataRecord::Partition(PartitionRecord {
                    topic_id: tid(0),
                    partition: 1,
                    replicas: vec![],
                    isr: vec![],
                    leader: NO_LEADER,
                    leader_epoch: 0,
                    partition_epoch: 0,
                }),
                "non-empty",
            ),
            (2, MetadataRecord::RemoveTopic { topic_id: tid(0) }, "offsets must increase"),
            (3, MetadataRecord::RemoveTopic { topic_id: tid(4) }, "no topic"),
            (
                3,
                MetadataRecord::PartitionChange(PartitionChange {
                    topic_id: tid(0),
                    partition: 0,
                    leader: 1,
                    isr: vec![1],
                    leader_epoch: 0,
                    partition_epoch: 5,
                }),
                "does not follow",
            ),
            (
                3,
                MetadataRecord::PartitionChange(PartitionChange {
                    topic_id: tid(0),
                    partition: 0,
                    leader: NO_LEADER,
                    isr: vec![1],
                    leader_epoch: 0,
                    partition_epoch: 1,
                }),
                "leader epoch",
            ),
            (
                3,
                MetadataRecord::PartitionChange(PartitionChange {
                    topic_id: tid(0),
                    partition: 0,
                    leader: 2,
                    isr: vec![2],
                    leader_epoch: 1,
                    partition_epoch: 1,
                }),
                "subset",
            ),
            (
                3,
                MetadataRecord::Topic(TopicRecord { name: "a/b".into(), topic_id: tid(9), configs: BTreeMap::new() }),
                "legal characters",
            ),
        ];
        for (offset, record, needle) in bad {
            let e = image.apply(offset, &record).unwrap_err();
            assert!(e.reason.contains(needle), "{record:?}: {e}");
            assert_eq!(image, before);
        }
        image.apply(3, &MetadataRecord::ClusterId { cluster_id: "x".into() }).unwrap();
        assert!(image.apply(4, &MetadataRecord::ClusterId { cluster_id: "y".into() }).is_err());
    }

    #[test]
    fn local_changes_follow_leadership_and_deletion() {
        let base = build(&[
            register(1, 0),
            register(2, 1),
            topic(0),
            partition(0, 0, vec![1, 2]),
            partition(0, 1, vec![2, 1]),
            topic(1),
            partition(1, 0, vec![2]),
        ]);
        let from_empty = base.local_changes(&MetadataImage::empty(), 1);
        assert_eq!(from_empty.leaders.iter().map(|p| p.partition).collect::<Vec<_>>(), [0]);
        assert_eq!(from_empty.followers.iter().map(|p| p.partition).collect::<Vec<_>>(), [1]);
        assert!(from_empty.leaders.iter().chain(&from_empty.followers).all(|p| p.is_new));
        assert!(base.local_changes(&base, 1).is_empty());

        // Broker 1 loses leadership of t0-0 to 2; t1 is removed.
        let mut next = base.clone();
        let p = next.partition(tid(0), 0).unwrap().clone();
        let change = partition_change(tid(0), 0, &p, 2, vec![2]).unwrap();
        assert_eq!((change.leader_epoch, change.partition_epoch), (1, 1));
        next.apply(7, &MetadataRecord::PartitionChange(change)).unwrap();
        next.apply(8, &MetadataRecord::RemoveTopic { topic_id: tid(1) }).unwrap();
        let one = next.local_changes(&base, 1);
        assert!(one.leaders.is_empty() && one.deletes.is_empty());
        assert_eq!(one.followers.len(), 1);
        assert!(!one.followers[0].is_new);
        assert_eq!(one.followers[0].registration.leader_epoch, 1);
        let two = next.local_changes(&base, 2);
        assert_eq!(two.leaders.len(), 1);
        assert_eq!(
            two.deletes,
            [RemovedPartition { topic_id: tid(1), topic_name: "t1".into(), partition: 0, topic_removed: true }]
        );
        assert!(partition_change(tid(0), 0, &p, p.leader, p.isr.clone()).is_none());
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        let image = build(&[register(1, 0), topic(0), partition(0, 0, vec![1])]);
        let snap = image.to_snapshot().to_vec();
        assert_eq!(MetadataImage::from_snapshot(&snap).unwrap(), image);
        for i in 0..snap.len() {
            let mut bad = snap.clone();
            bad[i] ^= 0x10;
            assert!(MetadataImage::from_snapshot(&bad).is_err(), "flip at {i}");
        }
        for cut in 0..snap.len() {
            assert!(MetadataImage::from_snapshot(&snap[..cut]).is_err());
        }
        // A valid checksum over records that do not fit together.
        let mut w = BytesMut::new();
        w.put_slice(SNAPSHOT_MAGIC);
        w.put_u8(0);
        w.put_i64(5);
        w.put_u32(1);
        let rec = partition(0, 0, vec![1]).encode();
        w.put_u32(rec.len() as u32);
        w.put_slice(&rec);
        let crc = crc32c::crc32c(&w);
        w.put_u32(crc);
        assert!(MetadataImage::from_snapshot(&w).unwrap_err().0.contains("no topic"));
    }

    /// Records from small id domains, so that many of them fit the image.
    fn plausible_record() -> impl Strategy<Value = MetadataRecord> {
        let node = 0i32..4;
        let broker_ref =
            (node.clone(), 0i64..40).prop_map(|(node_id, broker_epoch)| BrokerRef { node_id, broker_epoch });
        let ids = proptest::collection::vec(0i32..4, 1..4);
        prop_oneof![
            (node.clone(), 0i64..40, any::<bool>()).prop_map(|(n, e, fenced)| {
                let MetadataRecord::RegisterBroker(mut r) = register(n, e) else { unreachable!() };
                r.fenced = fenced;
                MetadataRecord::RegisterBroker(r)
            }),
            broker_ref.clone().prop_map(MetadataRecord::UnregisterBroker),
            broker_ref.clone().prop_map(MetadataRecord::FenceBroker),
            broker_ref.clone().prop_map(MetadataRecord::UnfenceBroker),
            broker_ref.prop_map(MetadataRecord::ControlledShutdown),
            (0u128..3).prop_map(topic),
            (0u128..3, 0i32..3, ids.clone(), 0usize..3).prop_map(|(t, p, replicas, lead)| {
                let MetadataRecord::Partition(mut r) = partition(t, p, replicas) else { unreachable!() };
                r.isr.truncate(lead.max(1));
                r.leader = if lead == 0 { NO_LEADER } else { r.isr[0] };
                MetadataRecord::Partition(r)
            }),
            (0u128..3, 0i32..3, -1i32..4, ids, 0i32..4, 0i32..4).prop_map(|(t, p, leader, isr, le, pe)| {
                MetadataRecord::PartitionChange(PartitionChange {
                    topic_id: tid(t),
                    partition: p,
                    leader,
                    isr,
                    leader_epoch: le,
                    partition_epoch: pe,
                })
            }),
            (0u128..3).prop_map(|t| MetadataRecord::RemoveTopic { topic_id: tid(t) }),
            (0i16..3).prop_map(|level| MetadataRecord::FeatureLevel { name: "metadata.version".into(), level }),
            (0u8..2).prop_map(|c| MetadataRecord::ClusterId { cluster_id: format!("c{c}") }),
            (0i64..5000).prop_map(|next_producer_id| MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id: 1,
                broker_epoch: 0,
                next_producer_id,
            })),
        ]
    }

    proptest! {
        #[test]
        fn apply_then_snapshot_then_load_gives_the_same_image(
            records in proptest::collection::vec(plausible_record(), 0..60)
        ) {
            let mut image = MetadataImage::empty();
            let mut applied = 0;
            for (i, r) in records.iter().enumerate() {
                let before = image.clone();
                match image.apply(i as i64 * 2, r) {
                    Ok(()) => applied += 1,
                    Err(_) => prop_assert_eq!(&image, &before),
                }
            }
            let loaded = MetadataImage::from_snapshot(&image.to_snapshot()).unwrap();
            prop_assert_eq!(&loaded, &image);
            // Replaying the image's own records gives it too.
            let mut replayed = MetadataImage::empty();
            for (i, r) in image.to_records().iter().enumerate() {
                replayed.apply(i as i64, r).unwrap();
            }
            replayed.last_offset = image.last_offset;
            prop_assert_eq!(&replayed, &image);
            // The derived counts match a scan.
            let mut load = BTreeMap::new();
            for p in image.topics().flat_map(|t| &t.partitions) {
                for r in &p.replicas {
                    *load.entry(*r).or_insert(0usize) += 1;
                }
            }
            prop_assert_eq!(image.replicas_per_broker(), &load);
            prop_assert_eq!(image.partition_count(), image.topics().map(|t| t.partitions.len()).sum::<usize>());
            // Every node's local view from empty lists exactly its replicas.
            for node in 0..4 {
                let c = image.local_changes(&MetadataImage::empty(), node);
                let hosted = image.replicas_per_broker().get(&node).copied().unwrap_or(0);
                prop_assert_eq!(c.leaders.len() + c.followers.len(), hosted);
                prop_assert!(image.local_changes(&image, node).is_empty());
            }
            let _ = applied;
        }

        #[test]
        fn hostile_snapshot_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = MetadataImage::from_snapshot(&bytes);
            let mut framed = bytes.clone();
            let crc = crc32c::crc32c(&framed);
            framed.extend_from_slice(&crc.to_be_bytes());
            let _ = MetadataImage::from_snapshot(&framed);
        }
    }
}
