//! The quorum controller: the logic the active controller runs over the
//! metadata image (Kafka's `QuorumController`, `ClusterControlManager`,
//! `ReplicationControlManager` and `BrokerHeartbeatManager` in one pure
//! state machine).
//!
//! Every node with the controller role keeps one. All of them replay the
//! committed metadata log ([`QuorumController::replay`]); the one whose
//! quorum is leader is made active ([`QuorumController::activate`]) and
//! answers BrokerRegistration, BrokerHeartbeat, UnregisterBroker,
//! CreateTopics, DeleteTopics, AlterPartition (a leader's ISR changes,
//! KIP-497), ElectLeaders (preferred and unclean elections) and
//! AllocateProducerIds (blocks of producer ids, KIP-730), fences
//! brokers whose session lapsed and moves leadership back to preferred
//! replicas (`auto.leader.rebalance.enable`) in [`QuorumController::tick`].
//!
//! Leader elections (Kafka's `PartitionChangeBuilder`): a partition whose
//! leader can no longer lead gets the first usable ISR member in replica
//! order; if there is none it stays offline, its last ISR member kept in the
//! ISR, unless `unclean.leader.election.enable` holds for its topic, in which
//! case the first usable replica leads with an ISR of itself alone.
//!
//! Each operation returns a [`ControllerResult`]: the records to propose and
//! the response to send once the log has committed through
//! `commit_offset`. The driver must propose each result's records as one
//! atomic batch, in the order results were returned, and nothing else but
//! the quorum's own control records; the controller numbers records itself
//! from the `next_offset` it was activated with, as Kafka's does, because a
//! broker's epoch is the offset of its registration record. The active
//! controller applies its records to a working image at once, so the next
//! request sees them; if the quorum loses leadership the driver calls
//! [`QuorumController::resign`], which drops the working image, and answers
//! what is pending with NOT_CONTROLLER.
//!
//! Broker sessions (last heartbeat, controlled-shutdown progress) are soft
//! state of the active controller, as in Kafka: a newly active controller
//! gives every registered broker a fresh session.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    alter_partition_response, AllocateProducerIdsRequest, AllocateProducerIdsResponse, AlterPartitionRequest,
    AlterPartitionResponse, BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerId, BrokerRegistrationRequest,
    BrokerRegistrationResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    ElectLeadersRequest, ElectLeadersResponse, TopicName, UnregisterBrokerRequest, UnregisterBrokerResponse,
};
use kafka_protocol::protocol::StrBytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use super::image::{partition_change, MetadataImage, PartitionRegistration, TopicImage, NO_LEADER};
use super::records::{
    BrokerRef, Endpoint, MetadataRecord, PartitionChange, PartitionRecord, ProducerIdsRecord, RegisterBroker,
    TopicRecord,
};
use crate::config::{BrokerConfig, LogConfig};
use crate::server::group::OFFSETS_TOPIC;
use crate::server::topic_config::{apply_overrides, creatable_configs};
use crate::server::topics::{check_new_topic, TopicError, TopicSpec};

/// The cluster id a new cluster's first active controller writes.
pub const DEFAULT_CLUSTER_ID: &str = "faultline";
/// The `metadata.version` feature level this code writes.
pub const METADATA_VERSION: i16 = 1;
/// Most brokers that may be registered at once: each has a session the
/// active controller checks on every tick.
pub const MAX_BROKERS: usize = 1024;
/// Producer ids per AllocateProducerIds block, as Kafka's controller hands out.
pub const PRODUCER_ID_BLOCK_SIZE: i32 = 1000;
/// Most listeners one broker may register.
pub const MAX_LISTENERS: usize = 16;
/// Longest host name, rack or listener name a registration may carry (DNS: 253).
pub const MAX_NAME_BYTES: usize = 255;

/// What the controller needs from the node's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    pub node_id: i32,
    pub cluster_id: String,
    /// `broker.session.timeout.ms`.
    pub session_timeout_ms: i64,
    /// Used for `-1` and for topic-level defaults: `num.partitions`,
    /// `default.replication.factor`, `offsets.topic.replication.factor`, the
    /// log settings (`unclean.leader.election.enable` among them), and the
    /// planted `unclean_election_always`.
    pub defaults: BrokerConfig,
    /// `leader.imbalance.check.interval.seconds` in ms when
    /// `auto.leader.rebalance.enable`; `None`: no periodic rebalance.
    pub leader_rebalance_interval_ms: Option<i64>,
    /// Most partition replicas one broker may be assigned (the brokers'
    /// `max_partitions`); CreateTopics beyond it is a POLICY_VIOLATION.
    pub max_replicas_per_broker: usize,
}

impl ControllerConfig {
    pub fn from_broker_config(c: &BrokerConfig) -> ControllerConfig {
        ControllerConfig {
            node_id: c.node_id,
            cluster_id: DEFAULT_CLUSTER_ID.into(),
            session_timeout_ms: c.broker_session_timeout_ms as i64,
            defaults: c.clone(),
            leader_rebalance_interval_ms: c
                .auto_leader_rebalance_enable
                .then(|| (c.leader_imbalance_check_interval_seconds.max(1) as i64).saturating_mul(1000)),
            max_replicas_per_broker: c.max_partitions,
        }
    }
}

/// Records to propose, and the response to send once they commit.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerResult<R> {
    /// One atomic batch for the metadata log, in order.
    pub records: Vec<MetadataRecord>,
    /// Send `response` once the log has committed through this offset; `None`:
    /// send it now. Set even without records when the answer was read from
    /// records not yet committed, so no client learns of uncommitted state.
    pub commit_offset: Option<i64>,
    pub response: R,
}

/// A broker's soft state at the active controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Session {
    last_contact_ms: i64,
    /// Offset whose commit completes the broker's controlled shutdown.
    shutdown_offset: Option<i64>,
}

/// State that exists only while this node is the active controller.
struct Active {
    /// The committed image plus every record proposed since.
    image: MetadataImage,
    /// The offset the next proposed record will get.
    next_offset: i64,
    sessions: BTreeMap<i32, Session>,
    /// Whether a topic may elect a leader from outside its ISR.
    unclean: UncleanPolicy,
    /// When `tick` next moves leadership back to preferred replicas.
    next_rebalance_ms: Option<i64>,
}

/// Where unclean leader election is allowed: topics whose effective
/// `unclean.leader.election.enable` is true, or every topic under the
/// planted `unclean_election_always`.
#[derive(Debug, Clone)]
struct UncleanPolicy {
    defaults: LogConfig,
    always: bool,
}

impl UncleanPolicy {
    fn allows(&self, t: &TopicImage) -> bool {
        // A topic's configs were checked when it was created; one that no
        // longer parses falls back to the clean default.
        self.always || apply_overrides(&self.defaults, &t.configs).is_ok_and(|c| c.unclean_leader_election_enable)
    }
}

impl Active {
    fn append(&mut self, out: &mut Vec<MetadataRecord>, record: MetadataRecord) -> i64 {
        let offset = self.next_offset;
        let applied = self.image.apply(offset, &record);
        invariant!(applied.is_ok(), "the controller built a record its own image refuses: {applied:?}: {record:?}");
        self.next_offset += 1;
        out.push(record);
        offset
    }

    /// Records taking `node_id` out of ISRs and leadership after it became
    /// unusable in the working image (fenced, shutting down, unregistered):
    /// each partition it leads moves to the first usable ISR member in
    /// replica order, or (unclean election allowed) the first usable
    /// replica, or goes offline. The last ISR member stays in the ISR, as in
    /// Kafka, so the partition knows whom to wait for.
    fn move_away(&mut self, out: &mut Vec<MetadataRecord>, node_id: i32) {
        let mut changes = Vec::new();
        for t in self.image.topics() {
            let unclean = self.unclean.allows(t);
            for (i, p) in t.partitions.iter().enumerate() {
                if !p.replicas.contains(&node_id) {
                    continue;
                }
                let isr: Vec<i32> = if p.isr == [node_id] {
                    p.isr.clone()
                } else {
                    p.isr.iter().copied().filter(|r| *r != node_id).collect()
                };
                let (leader, isr) = if p.leader == node_id || p.leader == NO_LEADER {
                    elect(&p.replicas, isr, &self.image, unclean)
                } else {
                    (p.leader, isr)
                };
                changes.extend(partition_change(t.id, i as i32, p, leader, isr));
            }
        }
        for c in changes {
            self.append(out, MetadataRecord::PartitionChange(c));
        }
    }

    /// Records giving every offline partition a leader again where a usable
    /// ISR member exists, or (unclean election allowed) a usable replica
    /// (after a broker is unfenced).
    fn elect_offline_leaders(&mut self, out: &mut Vec<MetadataRecord>) {
        let mut changes = Vec::new();
        for t in self.image.topics() {
            let unclean = self.unclean.allows(t);
            for (i, p) in t.partitions.iter().enumerate() {
                if p.leader != NO_LEADER {
                    continue;
                }
                let (leader, isr) = elect(&p.replicas, p.isr.clone(), &self.image, unclean);
                changes.extend(partition_change(t.id, i as i32, p, leader, isr));
            }
        }
        for c in changes {
            self.append(out, MetadataRecord::PartitionChange(c));
        }
    }

    /// Records moving leadership back to the preferred replica of every
    /// partition whose preferred replica is in the ISR, usable, and not
    /// leading (Kafka's auto leader rebalance, without its per-broker
    /// imbalance threshold: every such partition moves).
    fn rebalance_leaders(&mut self, out: &mut Vec<MetadataRecord>) {
        let mut changes = Vec::new();
        for t in self.image.topics() {
            for (i, p) in t.partitions.iter().enumerate() {
                if let Ok(c) = preferred_change(t.id, i as i32, p, &self.image) {
                    changes.push(c);
                }
            }
        }
        if !changes.is_empty() {
            tracing::info!(partitions = changes.len(), "leadership moved back to preferred replicas");
        }
        for c in changes {
            self.append(out, MetadataRecord::PartitionChange(c));
        }
    }

    fn fence(&mut self, out: &mut Vec<MetadataRecord>, b: BrokerRef) {
        self.append(out, MetadataRecord::FenceBroker(b));
        self.move_away(out, b.node_id);
    }

    /// One partition of an AlterPartition request: its new registration,
    /// with the record written if the ISR changed.
    fn alter_one(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        node_id: i32,
        topic_id: Uuid,
        pd: &kafka_protocol::messages::alter_partition_request::PartitionData,
    ) -> Result<PartitionRegistration, ResponseError> {
        if self.image.topic(topic_id).is_none() {
            return Err(ResponseError::UnknownTopicId);
        }
        let p = self.image.partition(topic_id, pd.partition_index).ok_or(ResponseError::UnknownTopicOrPartition)?;
        if p.leader != node_id {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        if pd.leader_epoch != p.leader_epoch {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        if pd.partition_epoch != p.partition_epoch {
            return Err(ResponseError::InvalidUpdateVersion);
        }
        // No replica here is ever RECOVERING (that needs an unclean election
        // with KIP-704's recovery, which this controller does not track).
        if pd.leader_recovery_state != 0 {
            return Err(ResponseError::InvalidRequest);
        }
        let new: Vec<(i32, i64)> = if pd.new_isr_with_epochs.is_empty() {
            pd.new_isr.iter().map(|b| (b.0, -1)).collect()
        } else {
            pd.new_isr_with_epochs.iter().map(|b| (b.broker_id.0, b.broker_epoch)).collect()
        };
        let isr: Vec<i32> = new.iter().map(|(b, _)| *b).collect();
        let distinct: BTreeSet<i32> = isr.iter().copied().collect();
        if isr.is_empty()
            || distinct.len() != isr.len()
            || !isr.contains(&p.leader)
            || isr.iter().any(|b| !p.replicas.contains(b))
        {
            tracing::info!(broker = node_id, %topic_id, partition = pd.partition_index, ?isr, replicas = ?p.replicas,
                "AlterPartition refused: the ISR must be distinct replicas including the leader");
            return Err(ResponseError::InvalidRequest);
        }
        for (b, epoch) in &new {
            if p.isr.contains(b) {
                continue;
            }
            let eligible =
                self.image.broker(*b).is_some_and(|reg| reg.is_usable() && (*epoch == -1 || *epoch == reg.epoch));
            if !eligible {
                tracing::info!(broker = node_id, %topic_id, partition = pd.partition_index, added = b,
                    "AlterPartition refused: the added replica is fenced, shutting down or not registered");
                return Err(ResponseError::IneligibleReplica);
            }
        }
        if distinct == p.isr.iter().copied().collect::<BTreeSet<i32>>() {
            return Ok(p.clone());
        }
        let change = partition_change(topic_id, pd.partition_index, p, p.leader, isr)
            .expect("the ISR differs, so the partition changes");
        tracing::info!(%topic_id, partition = pd.partition_index, from = ?p.isr, to = ?change.isr,
            partition_epoch = change.partition_epoch, "ISR changed");
        self.append(out, MetadataRecord::PartitionChange(change));
        Ok(self.image.partition(topic_id, pd.partition_index).expect("just changed").clone())
    }

    /// One partition of an ElectLeaders request: the record electing its
    /// leader, or why none was written.
    fn elect_one(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        name: &str,
        index: i32,
        unclean: bool,
    ) -> Result<(), (ResponseError, String)> {
        let unknown = || (ResponseError::UnknownTopicOrPartition, format!("{name}-{index} does not exist"));
        let t = self.image.topic_by_name(name).ok_or_else(unknown)?;
        let p = usize::try_from(index).ok().and_then(|i| t.partitions.get(i)).ok_or_else(unknown)?;
        let change = if unclean {
            if p.leader != NO_LEADER && self.image.is_usable(p.leader) {
                return Err((ResponseError::ElectionNotNeeded, format!("{name}-{index} has a leader")));
            }
            let (leader, isr) = elect(&p.replicas, p.isr.clone(), &self.image, true);
            if leader == NO_LEADER {
                return Err((
                    ResponseError::EligibleLeadersNotAvailable,
                    format!("no replica of {name}-{index} ({:?}) is usable", p.replicas),
                ));
            }
            partition_change(t.id, index, p, leader, isr)
                .ok_or_else(|| (ResponseError::ElectionNotNeeded, format!("{name}-{index} has a leader")))?
        } else {
            preferred_change(t.id, index, p, &self.image).map_err(|code| {
                let why = if code == ResponseError::ElectionNotNeeded {
                    format!("the preferred replica {} already leads {name}-{index}", p.replicas[0])
                } else {
                    format!("the preferred replica {} of {name}-{index} is not in the ISR or not usable", p.replicas[0])
                };
                (code, why)
            })?
        };
        tracing::info!(topic = name, partition = index, leader = change.leader, unclean, "leader elected on request");
        self.append(out, MetadataRecord::PartitionChange(change));
        Ok(())
    }

    fn has_valid_session(&self, node_id: i32, now_ms: i64, timeout_ms: i64) -> bool {
        let unfenced = self.image.broker(node_id).is_some_and(|b| !b.fenced);
        unfenced && self.sessions.get(&node_id).is_some_and(|s| now_ms <= s.last_contact_ms + timeout_ms)
    }
}

/// The first replica, in preference order, that is in `isr` and usable.
fn elect_leader(replicas: &[i32], isr: &[i32], image: &MetadataImage) -> i32 {
    replicas.iter().copied().find(|r| isr.contains(r) && image.is_usable(*r)).unwrap_or(NO_LEADER)
}

/// The leader and ISR after an election: the first usable ISR member in
/// replica order, the ISR unchanged; failing that, with `unclean` election
/// allowed, the first usable replica with an ISR of itself alone (what only
/// the old ISR held is lost, which is why it is off by default); failing
/// that, no leader and the ISR unchanged.
fn elect(replicas: &[i32], isr: Vec<i32>, image: &MetadataImage, unclean: bool) -> (i32, Vec<i32>) {
    let leader = elect_leader(replicas, &isr, image);
    if leader != NO_LEADER || !unclean {
        return (leader, isr);
    }
    match replicas.iter().copied().find(|r| image.is_usable(*r)) {
        Some(r) => {
            tracing::warn!(leader = r, ?isr, "unclean leader election: a replica outside the ISR leads");
            (r, vec![r])
        }
        None => (NO_LEADER, isr),
    }
}

/// The change making `p`'s preferred replica (its first) the leader, or why
/// not: ELECTION_NOT_NEEDED if it leads already, PREFERRED_LEADER_NOT_AVAILABLE
/// if it is outside the ISR or not usable.
fn preferred_change(
    topic_id: Uuid,
    partition: i32,
    p: &PartitionRegistration,
    image: &MetadataImage,
) -> Result<PartitionChange, ResponseError> {
    let preferred = p.replicas[0];
    if p.leader == preferred {
        return Err(ResponseError::ElectionNotNeeded);
    }
    if !p.isr.contains(&preferred) || !image.is_usable(preferred) {
        return Err(ResponseError::PreferredLeaderNotAvailable);
    }
    partition_change(topic_id, partition, p, preferred, p.isr.clone()).ok_or(ResponseError::ElectionNotNeeded)
}

/// Kafka's rack-unaware replica placement: partition `p`'s first replica is
/// broker `(start + p) mod n`, so leaders go round the brokers; the others
/// follow at a shift that grows every `n` partitions, so followers spread
/// too. `start` rotates between topics (the controller passes the number of
/// partitions in the cluster). Needs `1 <= rf <= brokers.len()`.
pub fn place_replicas(brokers: &[i32], partitions: i32, rf: usize, start: usize) -> Vec<Vec<i32>> {
    let n = brokers.len();
    invariant!(rf >= 1 && rf <= n, "replication factor {rf} over {n} brokers");
    let first_index = start % n;
    let mut shift = start / n;
    (0..partitions.max(0) as usize)
        .map(|p| {
            if p > 0 && p % n == 0 {
                shift += 1;
            }
            let first = (first_index + p) % n;
            let mut replicas = vec![brokers[first]];
            replicas.extend((0..rf - 1).map(|j| brokers[(first + 1 + (shift + j) % (n - 1)) % n]));
            replicas
        })
        .collect()
}

/// The metadata logic of a controller node. See the module doc.
pub struct QuorumController {
    config: ControllerConfig,
    committed: MetadataImage,
    active: Option<Active>,
    /// Draws topic ids; seeded by the node so a simulated run replays.
    rng: ChaCha8Rng,
}

fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

impl QuorumController {
    pub fn new(config: ControllerConfig, seed: u64) -> QuorumController {
        QuorumController {
            config,
            committed: MetadataImage::empty(),
            active: None,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The image of every committed record replayed so far.
    pub fn image(&self) -> &MetadataImage {
        &self.committed
    }

    /// The image including records proposed but not yet committed, while active.
    pub fn working_image(&self) -> Option<&MetadataImage> {
        self.active.as_ref().map(|a| &a.image)
    }

    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// While active, the offset the next proposed record will get. The
    /// driver can check it against the quorum's log end before appending a
    /// result's records: a mismatch means the numbering has drifted (the
    /// quorum wrote something the controller did not expect), and the safe
    /// answer is to resign.
    pub fn next_offset(&self) -> Option<i64> {
        self.active.as_ref().map(|a| a.next_offset)
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// Apply a committed record. On the active controller it is one it
    /// proposed (already in its working image); a committed record at or past
    /// the next offset it would write means another leader wrote, so it
    /// resigns.
    pub fn replay(&mut self, offset: i64, record: &MetadataRecord) -> Result<(), super::image::ImageError> {
        self.committed.apply(offset, record)?;
        if self.active.as_ref().is_some_and(|a| offset >= a.next_offset) {
            tracing::warn!(offset, "a committed record this controller did not write; resigning");
            self.resign();
        }
        Ok(())
    }

    /// Replace the committed image with one loaded from a snapshot.
    pub fn load_snapshot(&mut self, image: MetadataImage) {
        self.committed = image;
        self.resign();
    }

    /// Become the active controller. Call once this node's quorum is leader
    /// and every record below the leader epoch's start has been replayed;
    /// `next_offset` is the offset the next appended record will get. The
    /// result carries the bootstrap records of a new cluster (its id and
    /// `metadata.version`), if the log has none yet.
    pub fn activate(&mut self, next_offset: i64, now_ms: i64) -> ControllerResult<()> {
        invariant!(
            next_offset > self.committed.last_offset(),
            "activated at offset {next_offset} with records replayed through {}",
            self.committed.last_offset()
        );
        let sessions = self
            .committed
            .brokers()
            .map(|b| (b.node_id, Session { last_contact_ms: now_ms, shutdown_offset: None }))
            .collect();
        let unclean = UncleanPolicy {
            defaults: self.config.defaults.log.clone(),
            always: self.config.defaults.bugs.unclean_election_always,
        };
        let next_rebalance_ms = self.config.leader_rebalance_interval_ms.map(|i| now_ms.saturating_add(i));
        let mut active = Active { image: self.committed.clone(), next_offset, sessions, unclean, next_rebalance_ms };
        let mut records = Vec::new();
        if active.image.cluster_id().is_none() {
            active.append(&mut records, MetadataRecord::ClusterId { cluster_id: self.config.cluster_id.clone() });
        }
        if active.image.feature_level("metadata.version").is_none() {
            active.append(
                &mut records,
                MetadataRecord::FeatureLevel { name: "metadata.version".into(), level: METADATA_VERSION },
            );
        }
        self.active = Some(active);
        self.result(records, ())
    }

    /// Stop being the active controller (leadership lost): drop everything
    /// not committed.
    pub fn resign(&mut self) {
        self.active = None;
    }

    fn result<R>(&self, records: Vec<MetadataRecord>, response: R) -> ControllerResult<R> {
        let proposed = self.active.as_ref().map_or(-1, |a| a.image.last_offset());
        let commit_offset = (proposed > self.committed.last_offset()).then_some(proposed);
        ControllerResult { records, commit_offset, response }
    }

    fn now<R>(response: R) -> ControllerResult<R> {
        ControllerResult { records: vec![], commit_offset: None, response }
    }

    /// When [`Self::tick`] next has work: the earliest moment a broker's
    /// session can lapse, or the next leader rebalance. `None` when not
    /// active, or when no broker is unfenced and no rebalance is due.
    pub fn next_deadline(&self) -> Option<i64> {
        let a = self.active.as_ref()?;
        a.image
            .brokers()
            .filter(|b| !b.fenced)
            .filter_map(|b| a.sessions.get(&b.node_id))
            .map(|s| s.last_contact_ms + self.config.session_timeout_ms + 1)
            .chain(a.next_rebalance_ms)
            .min()
    }

    /// Fence every unfenced broker that has not heartbeated for longer than
    /// `broker.session.timeout.ms`, moving its partition leadership away;
    /// every `leader.imbalance.check.interval.seconds`, move leadership back
    /// to preferred replicas.
    pub fn tick(&mut self, now_ms: i64) -> ControllerResult<()> {
        let timeout = self.config.session_timeout_ms;
        let interval = self.config.leader_rebalance_interval_ms;
        let Some(a) = self.active.as_mut() else { return Self::now(()) };
        let mut records = Vec::new();
        let unfenced: Vec<BrokerRef> = a
            .image
            .brokers()
            .filter(|b| !b.fenced)
            .map(|b| BrokerRef { node_id: b.node_id, broker_epoch: b.epoch })
            .collect();
        for b in unfenced {
            let s = a.sessions.entry(b.node_id).or_insert(Session { last_contact_ms: now_ms, shutdown_offset: None });
            if now_ms > s.last_contact_ms + timeout {
                tracing::info!(broker = b.node_id, epoch = b.broker_epoch, "broker session expired; fencing");
                a.fence(&mut records, b);
            }
        }
        if let (Some(due), Some(interval)) = (a.next_rebalance_ms, interval) {
            if now_ms >= due {
                a.next_rebalance_ms = Some(now_ms.saturating_add(interval));
                a.rebalance_leaders(&mut records);
            }
        }
        self.result(records, ())
    }

    /// BrokerRegistration: a (re)starting broker joins. Its new broker epoch
    /// is the offset of its registration record; it starts fenced, and a
    /// previous registration's leaderships move away.
    pub fn register_broker(
        &mut self,
        req: &BrokerRegistrationRequest,
        now_ms: i64,
    ) -> ControllerResult<BrokerRegistrationResponse> {
        let error = |code: ResponseError| {
            let mut r = BrokerRegistrationResponse::default();
            r.error_code = code.code();
            r.broker_epoch = -1;
            Self::now(r)
        };
        let timeout = self.config.session_timeout_ms;
        let Some(a) = self.active.as_mut() else { return error(ResponseError::NotController) };
        let node_id = req.broker_id.0;
        if a.image.cluster_id().is_some_and(|id| id != req.cluster_id.as_str()) {
            tracing::warn!(broker = node_id, cluster = %req.cluster_id, "registration for another cluster");
            return error(ResponseError::InconsistentClusterId);
        }
        if let Err(why) = check_registration(req) {
            tracing::warn!(broker = node_id, why, "registration refused");
            return error(ResponseError::InvalidRegistration);
        }
        let existing = a.image.broker(node_id).cloned();
        match &existing {
            Some(old) if old.incarnation_id != req.incarnation_id && a.has_valid_session(node_id, now_ms, timeout) => {
                // Another process holds this id and is alive: refuse until its session lapses.
                return error(ResponseError::DuplicateBrokerRegistration);
            }
            None if a.image.brokers().count() >= MAX_BROKERS => {
                tracing::warn!(broker = node_id, "registration refused: {MAX_BROKERS} brokers are registered");
                return error(ResponseError::InvalidRegistration);
            }
            _ => {}
        }
        let mut records = Vec::new();
        let epoch = a.next_offset;
        a.append(
            &mut records,
            MetadataRecord::RegisterBroker(RegisterBroker {
                node_id,
                broker_epoch: epoch,
                incarnation_id: req.incarnation_id,
                listeners: req
                    .listeners
                    .iter()
                    .map(|l| Endpoint {
                        name: l.name.to_string(),
                        host: l.host.to_string(),
                        port: l.port,
                        security_protocol: l.security_protocol,
                    })
                    .collect(),
                rack: req.rack.as_ref().map(|r| r.to_string()),
                fenced: true,
            }),
        );
        if existing.is_some() {
            a.move_away(&mut records, node_id);
        }
        a.sessions.insert(node_id, Session { last_contact_ms: now_ms, shutdown_offset: None });
        tracing::info!(broker = node_id, epoch, "broker registered");
        let mut resp = BrokerRegistrationResponse::default();
        resp.broker_epoch = epoch;
        self.result(records, resp)
    }

    /// BrokerHeartbeat: keeps the broker's session, unfences it once it has
    /// replayed the log through its own registration, fences it on request,
    /// and runs its controlled shutdown.
    pub fn broker_heartbeat(
        &mut self,
        req: &BrokerHeartbeatRequest,
        now_ms: i64,
    ) -> ControllerResult<BrokerHeartbeatResponse> {
        let error = |code: ResponseError| {
            let mut r = BrokerHeartbeatResponse::default();
            r.error_code = code.code();
            r.is_fenced = true;
            Self::now(r)
        };
        let committed = self.committed.last_offset();
        let Some(a) = self.active.as_mut() else { return error(ResponseError::NotController) };
        let node_id = req.broker_id.0;
        let Some(reg) = a.image.broker(node_id).cloned() else { return error(ResponseError::BrokerIdNotRegistered) };
        if reg.epoch != req.broker_epoch {
            return error(ResponseError::StaleBrokerEpoch);
        }
        let me = BrokerRef { node_id, broker_epoch: reg.epoch };
        let session = a.sessions.entry(node_id).or_insert(Session { last_contact_ms: now_ms, shutdown_offset: None });
        session.last_contact_ms = now_ms;
        let caught_up = req.current_metadata_offset >= reg.epoch;
        let mut resp = BrokerHeartbeatResponse::default();
        resp.is_caught_up = caught_up;
        // Kafka's schema defaults is_fenced to true; say what holds.
        resp.is_fenced = reg.fenced;
        let mut records = Vec::new();
        if reg.fenced {
            resp.is_fenced = true;
            resp.should_shut_down = req.want_shut_down;
            // A broker that finished a controlled shutdown stays fenced until it registers again.
            if !req.want_shut_down && !req.want_fence && caught_up && !reg.in_controlled_shutdown {
                a.append(&mut records, MetadataRecord::UnfenceBroker(me));
                a.elect_offline_leaders(&mut records);
                resp.is_fenced = false;
                tracing::info!(broker = node_id, epoch = reg.epoch, "broker caught up; unfenced");
            }
        } else if req.want_fence {
            a.fence(&mut records, me);
            resp.is_fenced = true;
            resp.should_shut_down = req.want_shut_down;
        } else if req.want_shut_down {
            if !reg.in_controlled_shutdown {
                a.append(&mut records, MetadataRecord::ControlledShutdown(me));
                a.move_away(&mut records, node_id);
                tracing::info!(broker = node_id, "controlled shutdown: leadership moved away");
            }
            let last = a.image.last_offset();
            let session = a.sessions.get_mut(&node_id).expect("inserted above");
            let target = *session.shutdown_offset.get_or_insert(last);
            if committed >= target && req.current_metadata_offset >= target {
                a.fence(&mut records, me);
                resp.is_fenced = true;
                resp.should_shut_down = true;
                tracing::info!(broker = node_id, "controlled shutdown complete");
            }
        }
        self.result(records, resp)
    }

    /// UnregisterBroker: forget a broker (decommissioning), moving its
    /// leadership away as fencing does.
    pub fn unregister_broker(&mut self, req: &UnregisterBrokerRequest) -> ControllerResult<UnregisterBrokerResponse> {
        let error = |code: ResponseError, message: Option<String>| {
            let mut r = UnregisterBrokerResponse::default();
            r.error_code = code.code();
            r.error_message = message.map(str_bytes);
            Self::now(r)
        };
        let Some(a) = self.active.as_mut() else { return error(ResponseError::NotController, None) };
        let node_id = req.broker_id.0;
        let Some(reg) = a.image.broker(node_id) else {
            return error(ResponseError::BrokerIdNotRegistered, Some(format!("broker {node_id} is not registered")));
        };
        let me = BrokerRef { node_id, broker_epoch: reg.epoch };
        let mut records = Vec::new();
        a.append(&mut records, MetadataRecord::UnregisterBroker(me));
        a.move_away(&mut records, node_id);
        a.sessions.remove(&node_id);
        self.result(records, UnregisterBrokerResponse::default())
    }

    /// AlterPartition (KIP-497): a partition leader asks to change its ISR.
    /// Validated per partition as Kafka does — the sender must lead at the
    /// leader epoch and partition epoch the controller has, the new ISR must
    /// be a set of replicas holding the leader, and a broker it adds must be
    /// registered (at the epoch given, v3), unfenced and not shutting down
    /// (INELIGIBLE_REPLICA, KIP-841) — then written as one PartitionChange
    /// (partition epoch +1, leader epoch unchanged) and answered with the
    /// partition's new state once it commits. An ISR equal to the current
    /// one is answered with the current state and writes nothing. A v3
    /// request carries the ISR in `new_isr_with_epochs`, v2 in `new_isr`.
    pub fn alter_partition(&mut self, req: &AlterPartitionRequest) -> ControllerResult<AlterPartitionResponse> {
        let top = |code: ResponseError| Self::now(AlterPartitionResponse::default().with_error_code(code.code()));
        let Some(a) = self.active.as_mut() else { return top(ResponseError::NotController) };
        let node_id = req.broker_id.0;
        // -1 skips the epoch check, as Kafka allows.
        if req.broker_epoch != -1 && a.image.broker(node_id).is_none_or(|b| b.epoch != req.broker_epoch) {
            tracing::info!(broker = node_id, epoch = req.broker_epoch, "AlterPartition from a stale broker epoch");
            return top(ResponseError::StaleBrokerEpoch);
        }
        let mut resp = AlterPartitionResponse::default();
        let mut records = Vec::new();
        for t in &req.topics {
            let mut out = alter_partition_response::TopicData::default().with_topic_id(t.topic_id);
            for pd in &t.partitions {
                let mut r = alter_partition_response::PartitionData::default().with_partition_index(pd.partition_index);
                match a.alter_one(&mut records, node_id, t.topic_id, pd) {
                    Ok(p) => {
                        r.leader_id = BrokerId(p.leader);
                        r.leader_epoch = p.leader_epoch;
                        r.isr = p.isr.iter().copied().map(BrokerId).collect();
                        r.partition_epoch = p.partition_epoch;
                    }
                    Err(code) => r.error_code = code.code(),
                }
                out.partitions.push(r);
            }
            resp.topics.push(out);
        }
        self.result(records, resp)
    }

    /// AllocateProducerIds (KIP-730): the next [`PRODUCER_ID_BLOCK_SIZE`]
    /// producer ids for a registered broker at its current epoch
    /// (STALE_BROKER_EPOCH otherwise), written as one `ProducerIds` record
    /// and answered once it commits, so no two brokers — nor one broker
    /// before and after a controller failover — are given the same id.
    pub fn allocate_producer_ids(
        &mut self,
        req: &AllocateProducerIdsRequest,
    ) -> ControllerResult<AllocateProducerIdsResponse> {
        let error = |code: ResponseError| {
            Self::now(
                AllocateProducerIdsResponse::default().with_error_code(code.code()).with_producer_id_start((-1).into()),
            )
        };
        let Some(a) = self.active.as_mut() else { return error(ResponseError::NotController) };
        let node_id = req.broker_id.0;
        if a.image.broker(node_id).is_none_or(|b| b.epoch != req.broker_epoch) {
            tracing::info!(broker = node_id, epoch = req.broker_epoch, "AllocateProducerIds from a stale broker epoch");
            return error(ResponseError::StaleBrokerEpoch);
        }
        let start = a.image.next_producer_id();
        let Some(next) = start.checked_add(PRODUCER_ID_BLOCK_SIZE as i64) else {
            tracing::error!(start, "producer ids are exhausted");
            return error(ResponseError::UnknownServerError);
        };
        let mut records = Vec::new();
        a.append(
            &mut records,
            MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id: node_id,
                broker_epoch: req.broker_epoch,
                next_producer_id: next,
            }),
        );
        tracing::debug!(broker = node_id, start, "producer id block allocated");
        let resp = AllocateProducerIdsResponse::default()
            .with_producer_id_start(start.into())
            .with_producer_id_len(PRODUCER_ID_BLOCK_SIZE);
        self.result(records, resp)
    }

    /// ElectLeaders: PREFERRED (0) makes each partition's first replica its
    /// leader if that replica is in the ISR and usable
    /// (ELECTION_NOT_NEEDED if it leads already, else
    /// PREFERRED_LEADER_NOT_AVAILABLE); UNCLEAN (1) gives a leader to a
    /// partition that has none usable (ELECTION_NOT_NEEDED if its leader is
    /// usable), from the ISR if it can, else the first usable replica with an
    /// ISR of itself alone (ELIGIBLE_LEADERS_NOT_AVAILABLE if no replica is
    /// usable). With no partitions named, every partition is a candidate and,
    /// as in Kafka, only those that elected someone are listed.
    pub fn elect_leaders(&mut self, req: &ElectLeadersRequest) -> ControllerResult<ElectLeadersResponse> {
        let top = |code: ResponseError| Self::now(ElectLeadersResponse::default().with_error_code(code.code()));
        let Some(a) = self.active.as_mut() else { return top(ResponseError::NotController) };
        let unclean = match req.election_type {
            0 => false,
            1 => true,
            _ => return top(ResponseError::InvalidRequest),
        };
        // (name, partitions asked for) — every partition when none is named.
        let wanted: Vec<(String, Vec<i32>, bool)> = match &req.topic_partitions {
            Some(list) => list.iter().map(|t| (t.topic.to_string(), t.partitions.clone(), true)).collect(),
            None => {
                a.image.topics().map(|t| (t.name.clone(), (0..t.partitions.len() as i32).collect(), false)).collect()
            }
        };
        let mut resp = ElectLeadersResponse::default();
        let mut records = Vec::new();
        for (name, partitions, named) in wanted {
            let mut out = ReplicaElectionResult::default().with_topic(TopicName(str_bytes(name.clone())));
            for index in partitions {
                let outcome = a.elect_one(&mut records, &name, index, unclean);
                if !named && outcome.is_err() {
                    continue;
                }
                let mut r = PartitionResult::default().with_partition_id(index);
                if let Err((code, message)) = outcome {
                    r.error_code = code.code();
                    r.error_message = Some(str_bytes(message));
                }
                out.partition_result.push(r);
            }
            if named || !out.partition_result.is_empty() {
                resp.replica_election_results.push(out);
            }
        }
        self.result(records, resp)
    }

    /// CreateTopics: validate each topic as Kafka does, place its
    /// partitions over the usable brokers, and write a topic record and a
    /// partition record per partition.
    pub fn create_topics(&mut self, req: &CreateTopicsRequest) -> ControllerResult<CreateTopicsResponse> {
        let mut resp = CreateTopicsResponse::default();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &req.topics {
            *counts.entry(t.name.as_str()).or_insert(0) += 1;
        }
        let mut records = Vec::new();
        for t in &req.topics {
            let mut r = CreatableTopicResult::default();
            r.name = t.name.clone();
            let outcome = if self.active.is_none() {
                Err(TopicError::new(ResponseError::NotController, "this node is not the active controller"))
            } else if counts[t.name.as_str()] > 1 {
                Err(TopicError::new(ResponseError::InvalidRequest, "topic named more than once in the request"))
            } else {
                self.create_topic(t, req.validate_only, &mut records)
            };
            match outcome {
                Ok(created) => {
                    r.topic_id = created.id;
                    r.num_partitions = created.partitions;
                    r.replication_factor = created.rf;
                    r.configs = Some(creatable_configs(&created.config, &created.overrides));
                }
                Err(e) => {
                    tracing::debug!(topic = %t.name.0, error = %e.message, "topic not created");
                    r.error_code = e.code.code();
                    r.error_message = Some(str_bytes(e.message));
                    r.num_partitions = -1;
                    r.replication_factor = -1;
                    r.configs = None;
                }
            }
            resp.topics.push(r);
        }
        if self.active.is_none() {
            return Self::now(resp);
        }
        self.result(records, resp)
    }

    fn create_topic(
        &mut self,
        t: &CreatableTopic,
        validate_only: bool,
        records: &mut Vec<MetadataRecord>,
    ) -> Result<Created, TopicError> {
        let a = self.active.as_mut().expect("checked by the caller");
        let configs: BTreeMap<String, String> =
            t.configs.iter().filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string()))).collect();
        let manual = !t.assignments.is_empty();
        if manual && (t.num_partitions != -1 || t.replication_factor != -1) {
            return Err(TopicError::new(
                ResponseError::InvalidRequest,
                "with replica assignments, num_partitions and replication_factor must be -1",
            ));
        }
        // Kafka gives its internal offsets topic its own factor.
        let offsets_rf = (t.name.as_str() == OFFSETS_TOPIC && t.replication_factor == -1)
            .then_some(self.config.defaults.groups.offsets_topic_replication_factor);
        let spec = TopicSpec {
            name: t.name.to_string(),
            num_partitions: if manual { t.assignments.len() as i32 } else { t.num_partitions },
            replication_factor: if manual {
                i16::try_from(t.assignments[0].broker_ids.len()).unwrap_or(i16::MAX)
            } else {
                offsets_rf.unwrap_or(t.replication_factor)
            },
            configs,
        };
        let (partitions, rf) = check_new_topic(a.image.topic_names(), &spec, &self.config.defaults)?;
        if rf < 1 {
            return Err(TopicError::new(
                ResponseError::InvalidReplicationFactor,
                format!("replication factor must be at least 1, or -1 for the default; not {rf}"),
            ));
        }
        let placement = if manual {
            manual_placement(t, &a.image)?
        } else {
            let usable = a.image.usable_brokers();
            if usable.is_empty() {
                return Err(TopicError::new(
                    ResponseError::InvalidReplicationFactor,
                    format!("unable to replicate the partition {rf} time(s): no broker is registered and unfenced"),
                ));
            }
            if rf as usize > usable.len() {
                let setting = if offsets_rf.is_some() { " (offsets.topic.replication.factor)" } else { "" };
                return Err(TopicError::new(
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "unable to replicate the partition {rf} time(s): the target replication factor of {rf}\
                         {setting} cannot be reached because only {} broker(s) are registered, unfenced and \
                         not shutting down",
                        usable.len()
                    ),
                ));
            }
            place_replicas(&usable, partitions, rf as usize, a.image.partition_count())
        };
        let mut load = a.image.replicas_per_broker().clone();
        for b in placement.iter().flatten() {
            *load.entry(*b).or_insert(0) += 1;
        }
        if let Some((b, n)) = load.iter().find(|(_, n)| **n > self.config.max_replicas_per_broker) {
            return Err(TopicError::new(
                ResponseError::PolicyViolation,
                format!(
                    "broker {b} would host {n} partition replicas; the limit is {} (max_partitions)",
                    self.config.max_replicas_per_broker
                ),
            ));
        }
        let config: LogConfig = apply_overrides(&self.config.defaults.log, &spec.configs)
            .map_err(|m| TopicError::new(ResponseError::InvalidConfig, m))?;
        let mut created = Created { id: Uuid::nil(), partitions, rf, config, overrides: spec.configs.clone() };
        if validate_only {
            return Ok(created);
        }
        let id = loop {
            let id = Uuid::from_u64_pair(self.rng.random(), self.rng.random());
            // Kafka reserves the nil id and 1 (the metadata topic's).
            if id.as_u128() > 1 && a.image.topic(id).is_none() {
                break id;
            }
        };
        created.id = id;
        a.append(
            records,
            MetadataRecord::Topic(TopicRecord { name: spec.name.clone(), topic_id: id, configs: spec.configs }),
        );
        for (i, replicas) in placement.into_iter().enumerate() {
            let isr: Vec<i32> = replicas.iter().copied().filter(|r| a.image.is_usable(*r)).collect();
            let leader = elect_leader(&replicas, &isr, &a.image);
            a.append(
                records,
                MetadataRecord::Partition(PartitionRecord {
                    topic_id: id,
                    partition: i as i32,
                    replicas,
                    isr,
                    leader,
                    leader_epoch: 0,
                    partition_epoch: 0,
                }),
            );
        }
        tracing::info!(topic = %t.name.0, %id, partitions, rf, "topic created");
        Ok(created)
    }

    /// DeleteTopics (by name, or by id from v6): a RemoveTopic record each.
    pub fn delete_topics(&mut self, req: &DeleteTopicsRequest, version: i16) -> ControllerResult<DeleteTopicsResponse> {
        let wanted: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
            req.topics.iter().map(|t| (t.name.clone(), t.topic_id)).collect()
        } else {
            req.topic_names.iter().map(|n| (Some(n.clone()), Uuid::nil())).collect()
        };
        let resolved: Vec<Result<(String, Uuid), TopicError>> = wanted
            .iter()
            .map(|(name, id)| {
                let Some(a) = self.active.as_ref() else {
                    return Err(TopicError::new(
                        ResponseError::NotController,
                        "this node is not the active controller",
                    ));
                };
                let topic = match name {
                    Some(n) => a.image.topic_by_name(n).ok_or_else(|| {
                        TopicError::new(
                            ResponseError::UnknownTopicOrPartition,
                            format!("topic {:?} does not exist", n.0),
                        )
                    })?,
                    None => a.image.topic(*id).ok_or_else(|| {
                        TopicError::new(ResponseError::UnknownTopicId, format!("no topic has id {id}"))
                    })?,
                };
                Ok((topic.name.clone(), topic.id))
            })
            .collect();
        let mut seen: BTreeMap<Uuid, usize> = BTreeMap::new();
        for (_, id) in resolved.iter().flatten() {
            *seen.entry(*id).or_insert(0) += 1;
        }
        let mut resp = DeleteTopicsResponse::default();
        let mut records = Vec::new();
        for ((name, id), outcome) in wanted.into_iter().zip(resolved) {
            let mut r = DeletableTopicResult::default();
            r.name = name;
            r.topic_id = id;
            let outcome = outcome.and_then(|(n, id)| {
                if seen[&id] > 1 {
                    Err(TopicError::new(ResponseError::InvalidRequest, "topic named more than once in the request"))
                } else {
                    Ok((n, id))
                }
            });
            match outcome {
                Ok((n, id)) => {
                    let a = self.active.as_mut().expect("resolved only while active");
                    a.append(&mut records, MetadataRecord::RemoveTopic { topic_id: id });
                    tracing::info!(topic = %n, %id, "topic deleted");
                    r.name = Some(TopicName(str_bytes(n)));
                    r.topic_id = id;
                }
                Err(e) => {
                    r.error_code = e.code.code();
                    r.error_message = Some(str_bytes(e.message));
                }
            }
            resp.responses.push(r);
        }
        if self.active.is_none() {
            return Self::now(resp);
        }
        self.result(records, resp)
    }
}

/// A topic CreateTopics accepted.
struct Created {
    id: Uuid,
    partitions: i32,
    rf: i16,
    config: LogConfig,
    overrides: BTreeMap<String, String>,
}

/// A registration's listeners and rack, checked before they go in the log.
fn check_registration(req: &BrokerRegistrationRequest) -> Result<(), String> {
    if req.broker_id.0 < 0 {
        return Err(format!("broker id {} is negative", req.broker_id.0));
    }
    if req.listeners.is_empty() || req.listeners.len() > MAX_LISTENERS {
        return Err(format!("{} listeners; 1 to {MAX_LISTENERS} are allowed", req.listeners.len()));
    }
    let mut names = BTreeSet::new();
    for l in &req.listeners {
        if l.name.is_empty() || l.name.len() > MAX_NAME_BYTES || !names.insert(l.name.as_str()) {
            return Err(format!("listener name {:?} is empty, too long or repeated", l.name.as_str()));
        }
        if l.host.is_empty() || l.host.len() > MAX_NAME_BYTES || l.port == 0 {
            return Err(format!("listener {} has host {:?} port {}", l.name.as_str(), l.host.as_str(), l.port));
        }
    }
    if req.rack.as_ref().is_some_and(|r| r.len() > MAX_NAME_BYTES) {
        return Err("rack name is too long".into());
    }
    Ok(())
}

/// The replicas a CreateTopics request assigned by hand: partitions
/// numbered 0..n, the same number of distinct registered brokers each, at
/// least one of them usable to lead.
fn manual_placement(t: &CreatableTopic, image: &MetadataImage) -> Result<Vec<Vec<i32>>, TopicError> {
    let invalid = |m: String| TopicError::new(ResponseError::InvalidReplicaAssignment, m);
    let mut by_index: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for a in &t.assignments {
        by_index.insert(a.partition_index, a.broker_ids.iter().map(|b| b.0).collect());
    }
    if by_index.len() != t.assignments.len() || !by_index.keys().copied().eq(0..by_index.len() as i32) {
        return Err(invalid("assigned partitions must be numbered 0..n without gaps or repeats".into()));
    }
    let rf = t.assignments[0].broker_ids.len();
    for (p, replicas) in &by_index {
        if replicas.len() != rf || replicas.is_empty() {
            return Err(invalid(format!(
                "partition {p} has {} replicas; every partition must have {rf}",
                replicas.len()
            )));
        }
        if replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
            return Err(invalid(format!("partition {p} names a broker twice: {replicas:?}")));
        }
        if let Some(b) = replicas.iter().find(|b| image.broker(**b).is_none()) {
            return Err(invalid(format!("partition {p} is assigned to broker {b}, which is not registered")));
        }
        if !replicas.iter().any(|b| image.is_usable(*b)) {
            return Err(invalid(format!(
                "every broker assigned partition {p} ({replicas:?}) is fenced or in controlled shutdown"
            )));
        }
    }
    Ok(by_index.into_values().collect())
}

#[cfg(test)]
#[path = "quorum_controller_tests.rs"]
mod tests;
