//! `GroupCoordinator`: Kafka's classic group protocol for the groups of one
//! `__consumer_offsets` partition, as a pure state machine. Every input is a
//! call with the current [`Clock`]; it returns its answer, or a [`Ticket`]
//! when the answer must wait for the rebalance, and adds to [`Effects`] the
//! records to write and the groups whose waiting members may now collect an
//! answer. [`GroupCoordinator::tick`] applies the timeouts (session,
//! rebalance, pending sync, `group.initial.rebalance.delay.ms`).
//!
//! Membership lives only here (as in Kafka, it is rebuilt from the last
//! metadata record and then kept alive by heartbeats); committed offsets are
//! applied only from records, through [`GroupCoordinator::apply`], the same
//! path loading takes, so what is served is exactly what the log says.
//!
//! Group states follow Kafka's: Empty → PreparingRebalance (members join) →
//! CompletingRebalance (the leader computes the assignment) → Stable.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::consumer::ConsumerGroup;
use super::records::{GroupValue, MemberValue, OffsetValue, Record};
use crate::config::{GroupConfig, PlantedBugs};
use crate::server::node::Clock;

/// A group's place in the rebalance protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name DescribeGroups and ListGroups report.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A parked JoinGroup or SyncGroup: the answer is collected with it once the
/// group's signal moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub group: String,
    pub id: u64,
}

/// An answer now, or a ticket to collect it later.
pub enum Answer<T> {
    Now(T),
    Wait(Ticket),
}

/// What an input caused besides its answer.
#[derive(Debug, Default)]
pub struct Effects {
    /// Records to append to the coordinator's partition, in order.
    pub records: Vec<Record>,
    /// Groups with answers ready for parked members.
    pub woken: BTreeSet<String>,
    /// Groups whose SyncGroup answers wait until this input's records are
    /// durable: give the last record's offset to
    /// [`GroupCoordinator::hold_until`] (or [`GroupCoordinator::fail_held`]
    /// if they could not be written).
    pub hold: Vec<String>,
}

/// Who sent a JoinGroup, for DescribeGroups.
pub struct Client<'a> {
    pub client_id: &'a str,
    pub client_host: &'a str,
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    /// (assignor name, metadata), in the member's order of preference.
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// When the member is removed unless it heartbeats (not while it waits
    /// in a JoinGroup or SyncGroup: the parked request is its liveness).
    session_deadline: Duration,
    awaiting_join: Option<u64>,
    awaiting_sync: Option<u64>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }
}

enum Ready {
    Join(JoinGroupResponse),
    Sync(SyncGroupResponse),
}

pub(super) struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    state_since_ms: i64,
    /// In join order: the first is the leader when none is left.
    members: IndexMap<String, Member>,
    /// Members told MEMBER_ID_REQUIRED (KIP-394), until their second join
    /// or their session timeout.
    pending: BTreeMap<String, Duration>,
    /// group.instance.id → member id (KIP-345).
    static_members: BTreeMap<String, String>,
    /// PreparingRebalance: complete the join by then whoever is missing.
    rebalance_deadline: Option<Duration>,
    /// PreparingRebalance of an empty group: not before then.
    initial_delay_until: Option<Duration>,
    rebalance_started: Duration,
    /// CompletingRebalance: members that have not sent SyncGroup by then are removed.
    sync_deadline: Option<Duration>,
    /// Answers for parked members, with the generation they were made in.
    ready: BTreeMap<u64, (i32, Ready)>,
    /// SyncGroup answers waiting for the generation's record to be durable,
    /// and the offset it must be below the high watermark past (unknown
    /// until the record is appended).
    /// Each is (ticket, member, answer); a member with a held answer waits
    /// on the coordinator, so its session does not expire meanwhile.
    held: Vec<(u64, String, SyncGroupResponse)>,
    release_after: Option<i64>,
    /// The current generation's record is not known durable yet: every
    /// SyncGroup answer of this generation is held.
    unreleased: bool,
    offsets: BTreeMap<(String, i32), OffsetValue>,
    /// A metadata record of this group is in the log (a tombstone is owed on removal).
    persisted: bool,
    /// Set for a consumer group (KIP-848): then the classic fields above,
    /// but for the offsets, are unused.
    pub(super) consumer: Option<ConsumerGroup>,
}

impl Group {
    fn new(id: &str, now_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            state_since_ms: now_ms,
            members: IndexMap::new(),
            pending: BTreeMap::new(),
            static_members: BTreeMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            rebalance_started: Duration::ZERO,
            sync_deadline: None,
            ready: BTreeMap::new(),
            held: Vec::new(),
            release_after: None,
            unreleased: false,
            offsets: BTreeMap::new(),
            persisted: false,
            consumer: None,
        }
    }

    /// Whether a consumer group member may use this group: it is one, or a
    /// classic group with nobody in it (which then becomes one, as Kafka
    /// converts an empty classic group).
    pub(super) fn is_consumer_or_empty(&self) -> bool {
        self.consumer.is_some()
            || (self.state == GroupState::Empty && self.members.is_empty() && self.pending.is_empty())
    }

    /// The group's consumer group state, made one if it is not yet.
    pub(super) fn make_consumer(&mut self) -> &mut ConsumerGroup {
        if self.consumer.is_none() {
            self.protocol_type = None;
            self.protocol = None;
            self.leader = None;
            self.members.clear();
            self.static_members.clear();
            self.state = GroupState::Empty;
        }
        self.consumer.get_or_insert_with(ConsumerGroup::default)
    }

    /// A consumer group with members: the classic APIs cannot use it.
    fn active_consumer(&self) -> bool {
        self.consumer.as_ref().is_some_and(|c| !c.members.is_empty())
    }

    /// Nobody is in the group, of either protocol.
    fn is_empty(&self) -> bool {
        self.state == GroupState::Empty && self.pending.is_empty() && !self.active_consumer()
    }

    /// The name ListGroups and DescribeGroups report.
    fn state_name(&self) -> &'static str {
        match &self.consumer {
            Some(c) => c.state().name(),
            None => self.state.name(),
        }
    }

    fn size(&self) -> usize {
        self.members.len() + self.pending.len()
    }

    /// Assignors every member supports.
    fn candidates(&self) -> Vec<String> {
        let mut it = self.members.values();
        let Some(first) = it.next() else { return Vec::new() };
        let mut c: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in it {
            c.retain(|n| m.protocols.iter().any(|(p, _)| p == n));
        }
        c
    }

    /// Whether a member offering `protocols` of `protocol_type` may join.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && self.candidates().iter().any(|c| protocols.iter().any(|(p, _)| p == c))
    }

    /// Kafka's vote: each member names its most preferred assignor among
    /// those all support; the most named wins (ties by name, so it replays).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(p)) {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        votes.into_iter().find(|(_, n)| *n == best).map(|(name, _)| name.to_string())
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default()
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn is_leader(&self, member: &str) -> bool {
        self.leader.as_deref() == Some(member)
    }

    /// FENCED_INSTANCE_ID when `instance` is registered to another member id.
    fn fenced(&self, member_id: &str, instance: Option<&str>) -> bool {
        instance.and_then(|i| self.static_members.get(i)).is_some_and(|owner| owner != member_id)
    }

    /// The member check Heartbeat, SyncGroup and OffsetCommit share.
    fn check_member(&self, member_id: &str, instance: Option<&str>) -> Result<(), ResponseError> {
        if self.fenced(member_id, instance) {
            return Err(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        Ok(())
    }

    fn snapshot(&self, now_ms: i64) -> Record {
        let protocol = self.protocol.clone();
        let members = self
            .members
            .values()
            .map(|m| MemberValue {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32,
                session_timeout_ms: m.session_timeout.as_millis().min(i32::MAX as u128) as i32,
                subscription: protocol.as_deref().map(|p| m.metadata_for(p)).unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect();
        let value = GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol,
            leader: self.leader.clone(),
            current_state_timestamp: now_ms,
            members,
        };
        Record::Group { group: self.id.clone(), value: Some(value) }
    }

    fn join_response(&self, member_id: &str, error: ResponseError) -> JoinGroupResponse {
        let mut r = JoinGroupResponse::default();
        r.error_code = error.code();
        r.generation_id = -1;
        r.member_id = s(member_id);
        r
    }

    /// The answer to a member that completed a join in this generation.
    fn joined(&self, member_id: &str) -> JoinGroupResponse {
        let mut r = JoinGroupResponse::default();
        r.generation_id = self.generation;
        r.protocol_type = self.protocol_type.as_deref().map(s);
        r.protocol_name = self.protocol.as_deref().map(s);
        r.leader = s(self.leader.as_deref().unwrap_or(""));
        r.member_id = s(member_id);
        if self.is_leader(member_id) {
            let protocol = self.protocol.as_deref().unwrap_or("");
            r.members = self
                .members
                .values()
                .map(|m| {
                    let mut jm = JoinGroupResponseMember::default();
                    jm.member_id = s(&m.id);
                    jm.group_instance_id = m.instance_id.as_deref().map(s);
                    jm.metadata = m.metadata_for(protocol);
                    jm
                })
                .collect();
        }
        r
    }

    /// A SyncGroup answer: the assignment, or (with `error`) none.
    fn sync_response(&self, error: Option<ResponseError>, assignment: Bytes) -> SyncGroupResponse {
        let mut r = SyncGroupResponse::default();
        r.error_code = error.map_or(0, |e| e.code());
        r.assignment = assignment;
        if error.is_none() {
            r.protocol_type = self.protocol_type.as_deref().map(s);
            r.protocol_name = self.protocol.as_deref().map(s);
        }
        r
    }
}

/// Bytes of a client id a member keeps (its member id starts with it).
const MAX_CLIENT_ID_BYTES: usize = 1024;

/// `v` cut to at most `max` bytes, at a character boundary.
fn clip(v: &str, max: usize) -> &str {
    let mut end = v.len().min(max);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

/// Longer than a string of the `__consumer_offsets` records can hold (an
/// i16 length, as in Kafka's own record schemas): refused at the door.
fn too_long(v: &str) -> bool {
    v.len() > i16::MAX as usize
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The groups of one `__consumer_offsets` partition.
pub struct GroupCoordinator {
    pub(super) partition: i32,
    pub(super) config: GroupConfig,
    bugs: PlantedBugs,
    pub(super) groups: BTreeMap<String, Group>,
    /// Feeds member ids and tickets.
    next_id: u64,
}

impl GroupCoordinator {
    /// An empty coordinator; [`Self::apply`] each record of the partition to load it.
    pub fn new(partition: i32, config: GroupConfig, bugs: PlantedBugs) -> GroupCoordinator {
        GroupCoordinator { partition, config, bugs, groups: BTreeMap::new(), next_id: 0 }
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub(super) fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The group, created empty if it does not exist.
    pub(super) fn group_mut_or_new(&mut self, group_id: &str, clock: Clock) -> &mut Group {
        self.groups.entry(group_id.to_string()).or_insert_with(|| Group::new(group_id, clock.now_ms))
    }

    /// Apply one record of the partition: a committed offset (or its
    /// tombstone), or a group's metadata (or its tombstone). Loading replays
    /// every record in log order; at run time only offsets come this way,
    /// after they are appended. A group loaded with members is Stable and
    /// keeps them while they heartbeat.
    pub fn apply(&mut self, record: Record, clock: Clock) {
        match record {
            Record::Offset { group, topic, partition, value } => match value {
                Some(v) => {
                    let g = self.groups.entry(group.clone()).or_insert_with(|| Group::new(&group, clock.now_ms));
                    g.offsets.insert((topic, partition), v);
                }
                None => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            },
            Record::Group { group, value: None } => {
                self.groups.remove(&group);
            }
            Record::Group { group, value: Some(v) } => {
                let g = self.groups.entry(group.clone()).or_insert_with(|| Group::new(&group, clock.now_ms));
                g.persisted = true;
                // A classic group again (it was an empty consumer group).
                g.consumer = None;
                g.generation = v.generation;
                g.protocol_type = Some(v.protocol_type).filter(|t| !t.is_empty());
                g.protocol = v.protocol;
                g.leader = v.leader;
                g.members.clear();
                g.static_members.clear();
                for m in v.members {
                    let session_timeout = Duration::from_millis(m.session_timeout_ms.max(0) as u64);
                    if let Some(i) = &m.group_instance_id {
                        g.static_members.insert(i.clone(), m.member_id.clone());
                    }
                    let protocols = g.protocol.iter().map(|p| (p.clone(), m.subscription.clone())).collect();
                    g.members.insert(
                        m.member_id.clone(),
                        Member {
                            id: m.member_id,
                            instance_id: m.group_instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            session_timeout,
                            rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                            protocol_type: g.protocol_type.clone().unwrap_or_default(),
                            protocols,
                            assignment: m.assignment,
                            session_deadline: clock.elapsed + session_timeout,
                            awaiting_join: None,
                            awaiting_sync: None,
                        },
                    );
                }
                g.state = if g.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
                g.state_since_ms = v.current_state_timestamp;
            }
            Record::ConsumerEpoch { ref group, epoch: None } => {
                // The consumer group ended (deleted, or a classic group now).
                if let Some(g) = self.groups.get_mut(group) {
                    g.consumer = None;
                }
            }
            Record::ConsumerMember { ref group, .. }
            | Record::ConsumerEpoch { ref group, .. }
            | Record::ConsumerTarget { ref group, .. }
            | Record::ConsumerTargetEpoch { ref group, .. }
            | Record::ConsumerCurrent { ref group, .. } => {
                let tombstone = matches!(
                    record,
                    Record::ConsumerMember { value: None, .. }
                        | Record::ConsumerTarget { value: None, .. }
                        | Record::ConsumerTargetEpoch { epoch: None, .. }
                        | Record::ConsumerCurrent { value: None, .. }
                );
                let group = group.clone();
                let config = self.config.clone();
                let g = self.group_mut_or_new(&group, clock);
                if tombstone && g.consumer.is_none() {
                    return;
                }
                g.make_consumer().apply(record, clock, &config);
            }
        }
    }

    // ---------------------------------------------------------------- join

    /// JoinGroup (KIP-394 two-step join for v4+, KIP-345 static members).
    pub fn join(
        &mut self,
        req: &JoinGroupRequest,
        version: i16,
        client: Client,
        clock: Clock,
        fx: &mut Effects,
    ) -> Answer<JoinGroupResponse> {
        let group_id = req.group_id.0.as_str();
        let member_id = req.member_id.as_str();
        let instance = req.group_instance_id.as_deref().filter(|i| !i.is_empty());
        let err = |e: ResponseError| {
            let mut r = JoinGroupResponse::default();
            r.error_code = e.code();
            r.generation_id = -1;
            r.member_id = s(member_id);
            Answer::Now(r)
        };
        if group_id.is_empty() || too_long(group_id) {
            return err(ResponseError::InvalidGroupId);
        }
        let names = [req.protocol_type.as_str(), instance.unwrap_or("")];
        if names.into_iter().chain(req.protocols.iter().map(|p| p.name.as_str())).any(too_long) {
            return err(ResponseError::InvalidRequest);
        }
        let session = req.session_timeout_ms;
        if session < self.config.group_min_session_timeout_ms || session > self.config.group_max_session_timeout_ms {
            return err(ResponseError::InvalidSessionTimeout);
        }
        let protocols: Vec<(String, Bytes)> =
            req.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect();
        let metadata_bytes: usize = protocols.iter().map(|(n, m)| n.len() + m.len()).sum();
        if protocols.len() > self.config.max_protocols_per_member
            || metadata_bytes > self.config.member_metadata_max_bytes
        {
            tracing::info!(
                group = group_id,
                protocols = protocols.len(),
                metadata_bytes,
                "JoinGroup over the member metadata limits"
            );
            return err(ResponseError::PolicyViolation);
        }
        if !self.groups.contains_key(group_id) {
            if !member_id.is_empty() {
                return err(ResponseError::UnknownMemberId);
            }
            if self.groups.len() >= self.config.max_groups {
                tracing::warn!(
                    group = group_id,
                    max_groups = self.config.max_groups,
                    "group refused: max_groups reached"
                );
                return err(ResponseError::CoordinatorNotAvailable);
            }
            self.groups.insert(group_id.to_string(), Group::new(group_id, clock.now_ms));
        }
        let protocol_type = req.protocol_type.to_string();
        let g = self.groups.get_mut(group_id).expect("group exists");
        if g.active_consumer() {
            return err(ResponseError::InconsistentGroupProtocol);
        }
        if let Some(c) = g.consumer.take() {
            // An empty consumer group becomes a classic one, as in Kafka.
            fx.records.extend(c.tombstones(group_id));
        }
        if !g.supports(&protocol_type, &protocols) {
            return err(ResponseError::InconsistentGroupProtocol);
        }
        // The rebalance timeout was added in v1; v0 members use their session timeout.
        let rebalance_ms = if version >= 1 { req.rebalance_timeout_ms } else { session };
        let new = NewMember {
            instance: instance.map(str::to_string),
            // The member id is built from it: kept short enough for the records.
            client_id: clip(client.client_id, MAX_CLIENT_ID_BYTES).to_string(),
            client_host: clip(client.client_host, MAX_CLIENT_ID_BYTES).to_string(),
            session_timeout: Duration::from_millis(session.max(0) as u64),
            rebalance_timeout: Duration::from_millis(rebalance_ms.max(0) as u64),
            protocol_type,
            protocols,
        };
        let answer = if member_id.is_empty() {
            self.join_new(group_id, new, version, clock, fx)
        } else {
            self.join_known(group_id, member_id, new, clock, fx)
        };
        answer_or_ready(self, answer)
    }

    fn join_new(
        &mut self,
        group_id: &str,
        new: NewMember,
        version: i16,
        clock: Clock,
        fx: &mut Effects,
    ) -> Answer<JoinGroupResponse> {
        let n = self.next();
        let member_id = format!("{}-{:x}-{}-{n}", new.client_id, clock.now_ms, self.partition);
        let max_size = self.config.group_max_size;
        let g = self.groups.get_mut(group_id).expect("group exists");
        if let Some(old) = new.instance.as_ref().and_then(|i| g.static_members.get(i)).cloned() {
            return self.replace_static(group_id, &old, member_id, new, clock, fx);
        }
        if g.size() >= max_size {
            tracing::info!(group = group_id, max_size, "JoinGroup refused: group.max.size reached");
            return Answer::Now(g.join_response("", ResponseError::GroupMaxSizeReached));
        }
        if new.instance.is_none() && version >= 4 {
            // KIP-394: hand out the id first, so a retried first join does
            // not leave a ghost member for the whole session timeout.
            g.pending.insert(member_id.clone(), clock.elapsed + new.session_timeout);
            return Answer::Now(g.join_response(&member_id, ResponseError::MemberIdRequired));
        }
        self.add_member_and_wait(group_id, member_id, new, clock, fx)
    }

    fn join_known(
        &mut self,
        group_id: &str,
        member_id: &str,
        new: NewMember,
        clock: Clock,
        fx: &mut Effects,
    ) -> Answer<JoinGroupResponse> {
        let g = self.groups.get_mut(group_id).expect("group exists");
        if g.pending.remove(member_id).is_some() {
            return self.add_member_and_wait(group_id, member_id.to_string(), new, clock, fx);
        }
        if let Err(e) = g.check_member(member_id, new.instance.as_deref()) {
            return Answer::Now(g.join_response(member_id, e));
        }
        let unchanged = g.members[member_id].same_protocols(&new.protocols);
        match g.state {
            GroupState::PreparingRebalance => self.wait_for_join(group_id, member_id, new, clock, fx),
            GroupState::CompletingRebalance if unchanged => Answer::Now(g.joined(member_id)),
            GroupState::Stable if unchanged && !g.is_leader(member_id) => Answer::Now(g.joined(member_id)),
            GroupState::CompletingRebalance | GroupState::Stable => {
                let answer = self.wait_for_join(group_id, member_id, new, clock, fx);
                self.prepare_rebalance(group_id, clock, fx, "member rejoined");
                answer_or_ready(self, answer)
            }
            GroupState::Empty => Answer::Now(g.join_response(member_id, ResponseError::UnknownMemberId)),
        }
    }

    /// KIP-345: a static member rejoining with a new member id takes over
    /// the old one's place; the old id is fenced.
    fn replace_static(
        &mut self,
        group_id: &str,
        old_id: &str,
        member_id: String,
        new: NewMember,
        clock: Clock,
        fx: &mut Effects,
    ) -> Answer<JoinGroupResponse> {
        let g = self.groups.get_mut(group_id).expect("group exists");
        let Some(mut m) = g.members.shift_remove(old_id) else {
            g.static_members.remove(new.instance.as_deref().unwrap_or(""));
            return self.add_member_and_wait(group_id, member_id, new, clock, fx);
        };
        let generation = g.generation;
        if let Some(t) = m.awaiting_join.take() {
            g.ready.insert(t, (generation, Ready::Join(g.join_response(old_id, ResponseError::FencedInstanceId))));
            fx.woken.insert(group_id.to_string());
        }
        if let Some(t) = m.awaiting_sync.take() {
            g.ready.insert(
                t,
                (generation, Ready::Sync(g.sync_response(Some(ResponseError::FencedInstanceId), Bytes::new()))),
            );
            fx.woken.insert(group_id.to_string());
        }
        let unchanged = m.same_protocols(&new.protocols);
        m.id = member_id.clone();
        m.client_id = new.client_id.clone();
        m.client_host = new.client_host.clone();
        m.session_timeout = new.session_timeout;
        m.rebalance_timeout = new.rebalance_timeout;
        m.session_deadline = clock.elapsed + new.session_timeout;
        g.members.insert(member_id.clone(), m);
        if let Some(i) = &new.instance {
            g.static_members.insert(i.clone(), member_id.clone());
        }
        if g.is_leader(old_id) {
            g.leader = Some(member_id.clone());
        }
        tracing::info!(group = group_id, old = old_id, new = %member_id, "static member replaced");
        match g.state {
            GroupState::Stable if unchanged => {
                fx.records.push(g.snapshot(clock.now_ms));
                let mut r = g.joined(&member_id);
                // The assignment stands: the leader need not compute it again.
                r.skip_assignment = g.is_leader(&member_id);
                Answer::Now(r)
            }
            GroupState::PreparingRebalance => self.wait_for_join(group_id, &member_id, new, clock, fx),
            _ => {
                let answer = self.wait_for_join(group_id, &member_id, new, clock, fx);
                self.prepare_rebalance(group_id, clock, fx, "static member rejoined");
                answer_or_ready(self, answer)
            }
        }
    }

    fn add_member_and_wait(
        &mut self,
        group_id: &str,
        member_id: String,
        new: NewMember,
        clock: Clock,
        fx: &mut Effects,
    ) -> Answer<JoinGroupResponse> {
        let g = self.groups.get_mut(group_id).expect("group exists");
        if g.members.is_empty() {
            g.protocol_type = Some(new.protocol_type.clone());
        }
        if let Some(i) = &new.instance {
            g.static_members.insert(i.clone(), member_id.clone());
        }
        g.members.insert(
            member_id.clone(),
            Member {
                id: member_id.clone(),
                instance_id: new.instance.clone(),
                client_id: new.client_id.clone(),
                client_host: new.client_host.clone(),
                session_timeout: new.session_timeout,
                rebalance_timeout: new.rebalance_timeout,
                protocol_type: new.protocol_type.clone(),
                protocols: Vec::new(),
                assignment: Bytes::new(),
                session_deadline: clock.elapsed + new.session_timeout,
                awaiting_join: None,
                awaiting_sync: None,
            },
        );
        // A newcomer during the initial delay holds the first rebalance a
        // little longer for the members that follow it.
        if g.state == GroupState::PreparingRebalance {
            if let Some(until) = g.initial_delay_until {
                let delay = Duration::from_millis(self.config.group_initial_rebalance_delay_ms.max(0) as u64);
                let cap = g.rebalance_started + g.max_rebalance_timeout().max(new.rebalance_timeout);
                g.initial_delay_until = Some(until.max((clock.elapsed + delay).min(cap)));
            }
        }
        let answer = self.wait_for_join(group_id, &member_id, new, clock, fx);
        let g = &self.groups[group_id];
        if g.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(group_id, clock, fx, "member joined");
        } else {
            self.maybe_complete_join(group_id, clock, fx);
        }
        answer_or_ready(self, answer)
    }

    /// Park the member's JoinGroup until the join completes.
    fn wait_for_join(
        &mut self,
        group_id: &str,
        member_id: &str,
        new: NewMember,
        clock: Clock,
        fx: &mut Effects,
    ) -> Answer<JoinGroupResponse> {
        let ticket = self.next();
        let g = self.groups.get_mut(group_id).expect("group exists");
        let m = g.members.get_mut(member_id).expect("member exists");
        m.protocols = new.protocols;
        m.protocol_type = new.protocol_type;
        m.session_timeout = new.session_timeout;
        m.rebalance_timeout = new.rebalance_timeout;
        m.session_deadline = clock.elapsed + m.session_timeout;
        if let Some(old) = m.awaiting_join.replace(ticket) {
            // A join sent again on another connection: the first gets an error.
            let generation = g.generation;
            let resp = g.join_response(member_id, ResponseError::RebalanceInProgress);
            g.ready.insert(old, (generation, Ready::Join(resp)));
            fx.woken.insert(group_id.to_string());
        }
        if g.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(group_id, clock, fx);
        }
        Answer::Wait(Ticket { group: group_id.to_string(), id: ticket })
    }

    fn prepare_rebalance(&mut self, group_id: &str, clock: Clock, fx: &mut Effects, why: &str) {
        let delay = Duration::from_millis(self.config.group_initial_rebalance_delay_ms.max(0) as u64);
        let Some(g) = self.groups.get_mut(group_id) else { return };
        if g.state == GroupState::CompletingRebalance {
            // Members waiting for this generation's assignment must rejoin.
            let generation = g.generation;
            let waiting: Vec<u64> = g.members.values_mut().filter_map(|m| m.awaiting_sync.take()).collect();
            for t in waiting {
                let resp = g.sync_response(Some(ResponseError::RebalanceInProgress), Bytes::new());
                g.ready.insert(t, (generation, Ready::Sync(resp)));
                fx.woken.insert(group_id.to_string());
            }
        }
        let was_empty = g.state == GroupState::Empty;
        tracing::info!(
            group = group_id,
            generation = g.generation,
            members = g.members.len(),
            why,
            "preparing rebalance"
        );
        g.state = GroupState::PreparingRebalance;
        g.state_since_ms = clock.now_ms;
        g.sync_deadline = None;
        g.rebalance_started = clock.elapsed;
        let timeout = g.max_rebalance_timeout();
        g.rebalance_deadline = Some(clock.elapsed + timeout);
        g.initial_delay_until = (was_empty && !delay.is_zero()).then(|| clock.elapsed + delay.min(timeout));
        self.maybe_complete_join(group_id, clock, fx);
    }

    fn maybe_complete_join(&mut self, group_id: &str, clock: Clock, fx: &mut Effects) {
        let Some(g) = self.groups.get(group_id) else { return };
        if g.state != GroupState::PreparingRebalance {
            return;
        }
        let delayed = g.initial_delay_until.is_some_and(|t| clock.elapsed < t);
        let timed_out = g.rebalance_deadline.is_some_and(|t| clock.elapsed >= t);
        if (g.all_joined() && !delayed) || timed_out {
            self.complete_join(group_id, clock, fx);
        }
    }

    fn complete_join(&mut self, group_id: &str, clock: Clock, fx: &mut Effects) {
        let bump = !self.bugs.group_generation_not_bumped;
        let g = self.groups.get_mut(group_id).expect("group exists");
        let missing: Vec<String> =
            g.members.values().filter(|m| m.awaiting_join.is_none()).map(|m| m.id.clone()).collect();
        for id in missing {
            tracing::info!(group = group_id, member = %id, "member removed: it did not rejoin within the rebalance timeout");
            remove_member(g, &id, ResponseError::UnknownMemberId, fx);
        }
        if bump {
            g.generation += 1;
        }
        g.rebalance_deadline = None;
        g.initial_delay_until = None;
        g.state_since_ms = clock.now_ms;
        // Answers two generations old were never collected: their clients left.
        let keep_from = g.generation - 1;
        g.ready.retain(|_, (generation, _)| *generation >= keep_from);
        if g.members.is_empty() {
            g.state = GroupState::Empty;
            g.protocol = None;
            g.leader = None;
            tracing::info!(group = group_id, generation = g.generation, "group is empty");
            fx.records.push(g.snapshot(clock.now_ms));
            g.persisted = true;
            return;
        }
        g.protocol = g.select_protocol();
        if !g.leader.as_ref().is_some_and(|l| g.members.contains_key(l)) {
            g.leader = g.members.keys().next().cloned();
        }
        g.state = GroupState::CompletingRebalance;
        g.sync_deadline = Some(clock.elapsed + g.max_rebalance_timeout());
        let generation = g.generation;
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in ids {
            let resp = g.joined(&id);
            let m = g.members.get_mut(&id).expect("member exists");
            m.session_deadline = clock.elapsed + m.session_timeout;
            if let Some(t) = m.awaiting_join.take() {
                g.ready.insert(t, (generation, Ready::Join(resp)));
            }
        }
        tracing::info!(
            group = group_id,
            generation,
            members = g.members.len(),
            protocol = g.protocol.as_deref().unwrap_or(""),
            leader = g.leader.as_deref().unwrap_or(""),
            "join completed"
        );
        fx.woken.insert(group_id.to_string());
    }

    /// Collect a parked JoinGroup's answer if it is ready.
    pub fn take_join(&mut self, ticket: &Ticket) -> Option<JoinGroupResponse> {
        let g = self.groups.get_mut(&ticket.group)?;
        match g.ready.remove(&ticket.id) {
            Some((_, Ready::Join(r))) => Some(r),
            Some((generation, other)) => {
                g.ready.insert(ticket.id, (generation, other));
                None
            }
            None => None,
        }
    }

    /// Collect a parked SyncGroup's answer if it is ready.
    pub fn take_sync(&mut self, ticket: &Ticket) -> Option<SyncGroupResponse> {
        let g = self.groups.get_mut(&ticket.group)?;
        match g.ready.remove(&ticket.id) {
            Some((_, Ready::Sync(r))) => Some(r),
            Some((generation, other)) => {
                g.ready.insert(ticket.id, (generation, other));
                None
            }
            None => None,
        }
    }

    /// The held SyncGroup answers of `group` wait for `offset` to be durable.
    pub fn hold_until(&mut self, group: &str, offset: i64) {
        if let Some(g) = self.groups.get_mut(group) {
            g.release_after = Some(offset);
        }
    }

    /// The record the held answers of `group` waited on could not be
    /// written: they fail with REBALANCE_IN_PROGRESS, and the group
    /// rebalances, which writes a new one.
    pub fn fail_held(&mut self, group: &str, clock: Clock, fx: &mut Effects) {
        let Some(g) = self.groups.get_mut(group) else { return };
        let generation = g.generation;
        for (t, _, _) in std::mem::take(&mut g.held) {
            let resp = g.sync_response(Some(ResponseError::RebalanceInProgress), Bytes::new());
            g.ready.insert(t, (generation, Ready::Sync(resp)));
            fx.woken.insert(group.to_string());
        }
        g.release_after = None;
        g.unreleased = false;
        self.prepare_rebalance(group, clock, fx, "group metadata could not be written");
    }

    /// The partition is durable below `high_watermark`: release the answers
    /// that waited for it. Their members' sessions start again now.
    pub fn release_durable(&mut self, high_watermark: i64, clock: Clock, fx: &mut Effects) {
        for g in self.groups.values_mut() {
            if g.release_after.is_some_and(|o| o < high_watermark) {
                let generation = g.generation;
                for (t, member, resp) in std::mem::take(&mut g.held) {
                    if let Some(m) = g.members.get_mut(&member) {
                        m.session_deadline = clock.elapsed + m.session_timeout;
                    }
                    g.ready.insert(t, (generation, Ready::Sync(resp)));
                    fx.woken.insert(g.id.clone());
                }
                g.release_after = None;
                g.unreleased = false;
            }
        }
    }

    /// Whether a ticket can still be answered: its group exists and a member
    /// waits on it or its answer is ready. A ticket that cannot is answered
    /// with an error by its caller.
    pub fn ticket_alive(&self, ticket: &Ticket) -> bool {
        self.groups.get(&ticket.group).is_some_and(|g| {
            g.ready.contains_key(&ticket.id)
                || g.held.iter().any(|(t, _, _)| *t == ticket.id)
                || g.members.values().any(|m| m.awaiting_join == Some(ticket.id) || m.awaiting_sync == Some(ticket.id))
        })
    }

    /// A parked request gave up (its deadline passed): forget its ticket.
    pub fn abandon(&mut self, ticket: &Ticket) {
        if let Some(g) = self.groups.get_mut(&ticket.group) {
            g.ready.remove(&ticket.id);
            g.held.retain(|(t, _, _)| *t != ticket.id);
            for m in g.members.values_mut() {
                if m.awaiting_join == Some(ticket.id) {
                    m.awaiting_join = None;
                }
                if m.awaiting_sync == Some(ticket.id) {
                    m.awaiting_sync = None;
                }
            }
        }
    }

    // ---------------------------------------------------------------- sync

    /// SyncGroup: the leader hands out the assignment; everyone collects theirs.
    pub fn sync(&mut self, req: &SyncGroupRequest, clock: Clock, fx: &mut Effects) -> Answer<SyncGroupResponse> {
        let group_id = req.group_id.0.as_str();
        let member_id = req.member_id.as_str();
        let err = |e: ResponseError| {
            let mut r = SyncGroupResponse::default();
            r.error_code = e.code();
            Answer::Now(r)
        };
        let max_assignment = self.config.member_metadata_max_bytes;
        let ticket = self.next();
        let Some(g) = self.groups.get_mut(group_id) else { return err(ResponseError::UnknownMemberId) };
        if let Err(e) = g.check_member(member_id, req.group_instance_id.as_deref()) {
            return err(e);
        }
        if req.generation_id != g.generation {
            return err(ResponseError::IllegalGeneration);
        }
        let type_mismatch = req.protocol_type.as_ref().is_some_and(|t| Some(t.as_str()) != g.protocol_type.as_deref());
        let name_mismatch = req.protocol_name.as_ref().is_some_and(|n| Some(n.as_str()) != g.protocol.as_deref());
        if type_mismatch || name_mismatch {
            return err(ResponseError::InconsistentGroupProtocol);
        }
        let m = g.members.get_mut(member_id).expect("checked");
        m.session_deadline = clock.elapsed + m.session_timeout;
        match g.state {
            GroupState::Empty => err(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => err(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                let assignment = g.members[member_id].assignment.clone();
                let resp = g.sync_response(None, assignment);
                if g.unreleased {
                    // Its generation's record is not durable yet: wait with the others.
                    g.held.push((ticket, member_id.to_string(), resp));
                    return Answer::Wait(Ticket { group: group_id.to_string(), id: ticket });
                }
                Answer::Now(resp)
            }
            GroupState::CompletingRebalance => {
                if req.assignments.iter().any(|a| a.assignment.len() > max_assignment) {
                    return err(ResponseError::PolicyViolation);
                }
                g.members.get_mut(member_id).expect("checked").awaiting_sync = Some(ticket);
                if g.is_leader(member_id) {
                    let mut given: BTreeMap<&str, &Bytes> = BTreeMap::new();
                    for a in &req.assignments {
                        given.insert(a.member_id.as_str(), &a.assignment);
                    }
                    for m in g.members.values_mut() {
                        m.assignment = given.get(m.id.as_str()).map(|b| (*b).clone()).unwrap_or_default();
                    }
                    g.state = GroupState::Stable;
                    g.state_since_ms = clock.now_ms;
                    g.sync_deadline = None;
                    fx.records.push(g.snapshot(clock.now_ms));
                    g.persisted = true;
                    // Nobody learns the assignment before the generation's
                    // record is durable: a coordinator restarted from an
                    // older record would hand the same generation out again.
                    let ids: Vec<String> = g.members.keys().cloned().collect();
                    for id in ids {
                        let assignment = g.members[&id].assignment.clone();
                        let resp = g.sync_response(None, assignment);
                        if let Some(t) = g.members.get_mut(&id).expect("member").awaiting_sync.take() {
                            g.held.push((t, id, resp));
                        }
                    }
                    g.release_after = None;
                    g.unreleased = true;
                    fx.hold.push(group_id.to_string());
                    tracing::info!(
                        group = group_id,
                        generation = g.generation,
                        members = g.members.len(),
                        "group stable"
                    );
                }
                let t = Ticket { group: group_id.to_string(), id: ticket };
                match self.take_sync(&t) {
                    Some(r) => Answer::Now(r),
                    None => Answer::Wait(t),
                }
            }
        }
    }

    // ------------------------------------------------------------ heartbeat

    /// Heartbeat: keeps the member's session alive and tells it of a rebalance.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        clock: Clock,
    ) -> Result<(), ResponseError> {
        let Some(g) = self.groups.get_mut(group_id) else { return Err(ResponseError::UnknownMemberId) };
        g.check_member(member_id, instance)?;
        let m = g.members.get_mut(member_id).expect("checked");
        if generation != g.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        m.session_deadline = clock.elapsed + m.session_timeout;
        match g.state {
            GroupState::Empty => Err(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    // ---------------------------------------------------------------- leave

    /// LeaveGroup for each (member id, group.instance.id); a member named
    /// only by its instance id (v3+) is found through it.
    pub fn leave(
        &mut self,
        group_id: &str,
        members: &[(String, Option<String>)],
        clock: Clock,
        fx: &mut Effects,
    ) -> Vec<Result<(), ResponseError>> {
        let Some(g) = self.groups.get_mut(group_id) else {
            return members.iter().map(|_| Err(ResponseError::UnknownMemberId)).collect();
        };
        let mut out = Vec::new();
        let mut removed = false;
        for (member_id, instance) in members {
            let instance = instance.as_deref().filter(|i| !i.is_empty());
            let id = match instance {
                Some(i) => match g.static_members.get(i) {
                    None => {
                        out.push(Err(ResponseError::UnknownMemberId));
                        continue;
                    }
                    Some(owner) if !member_id.is_empty() && owner != member_id => {
                        out.push(Err(ResponseError::FencedInstanceId));
                        continue;
                    }
                    Some(owner) => owner.clone(),
                },
                None => member_id.clone(),
            };
            if g.pending.remove(&id).is_some() {
                out.push(Ok(()));
                continue;
            }
            if !g.members.contains_key(&id) {
                out.push(Err(ResponseError::UnknownMemberId));
                continue;
            }
            tracing::info!(group = group_id, member = %id, "member left");
            remove_member(g, &id, ResponseError::UnknownMemberId, fx);
            removed = true;
            out.push(Ok(()));
        }
        if removed {
            self.after_removal(group_id, clock, fx, "member left");
        }
        out
    }

    /// Membership shrank: rebalance (or finish the one under way).
    fn after_removal(&mut self, group_id: &str, clock: Clock, fx: &mut Effects, why: &str) {
        match self.groups.get(group_id).map(|g| g.state) {
            Some(GroupState::Stable | GroupState::CompletingRebalance) => {
                self.prepare_rebalance(group_id, clock, fx, why)
            }
            Some(GroupState::PreparingRebalance) => self.maybe_complete_join(group_id, clock, fx),
            _ => {}
        }
    }

    // -------------------------------------------------------------- offsets

    /// Whether an OffsetCommit from (generation, member) may be written, as
    /// Kafka's classic coordinator decides. A commit with generation -1 and
    /// no member is a "simple" commit of a consumer that assigns partitions
    /// itself: allowed while the group has no members (it is created if
    /// need be). A member's commit refreshes its session.
    ///
    /// In a consumer group the generation is the member epoch (KIP-848):
    /// a commit of another epoch gets STALE_MEMBER_EPOCH (OffsetCommit v9+;
    /// ILLEGAL_GENERATION before).
    pub fn admit_commit(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance: Option<&str>,
        version: i16,
        clock: Clock,
    ) -> Result<(), ResponseError> {
        if group_id.is_empty() || too_long(group_id) {
            return Err(ResponseError::InvalidGroupId);
        }
        if !self.groups.contains_key(group_id) {
            if generation >= 0 || !member_id.is_empty() {
                // Kafka: a member's commit to a group it never joined.
                return Err(if member_id.is_empty() {
                    ResponseError::IllegalGeneration
                } else {
                    ResponseError::UnknownMemberId
                });
            }
            if self.groups.len() >= self.config.max_groups {
                return Err(ResponseError::CoordinatorNotAvailable);
            }
            self.groups.insert(group_id.to_string(), Group::new(group_id, clock.now_ms));
        }
        let g = self.groups.get_mut(group_id).expect("group exists");
        if self.bugs.group_stale_commit_accepted {
            // Planted: no membership or generation check at all.
            return Ok(());
        }
        if let Some(c) = &g.consumer {
            if generation < 0 && member_id.is_empty() && c.members.is_empty() {
                return Ok(());
            }
            let m = c.members.get(member_id).ok_or(ResponseError::UnknownMemberId)?;
            if instance.is_some() && m.meta.instance_id.as_deref() != instance {
                return Err(ResponseError::FencedInstanceId);
            }
            if generation != m.member_epoch {
                return Err(if version >= 9 {
                    ResponseError::StaleMemberEpoch
                } else {
                    ResponseError::IllegalGeneration
                });
            }
            return Ok(());
        }
        if generation < 0 && g.state == GroupState::Empty {
            return Ok(());
        }
        if g.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        g.check_member(member_id, instance)?;
        if generation != g.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        let m = g.members.get_mut(member_id).expect("checked");
        m.session_deadline = clock.elapsed + m.session_timeout;
        Ok(())
    }

    /// OffsetFetch v9 from a consumer group member: it must be a member at
    /// that epoch. Anyone else (no member id) may read.
    pub fn admit_fetch(&self, group_id: &str, member_id: Option<&str>, epoch: i32) -> Result<(), ResponseError> {
        let Some(member_id) = member_id.filter(|m| !m.is_empty()) else { return Ok(()) };
        let Some(c) = self.groups.get(group_id).and_then(|g| g.consumer.as_ref()) else { return Ok(()) };
        let m = c.members.get(member_id).ok_or(ResponseError::UnknownMemberId)?;
        if epoch != m.member_epoch {
            return Err(ResponseError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// Whether the group may hold one more committed partition `(topic, partition)`.
    pub fn has_room_for(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.groups.get(group_id).is_none_or(|g| {
            g.offsets.len() < self.config.max_offsets_per_group
                || g.offsets.contains_key(&(topic.to_string(), partition))
        })
    }

    /// The committed offset of one partition.
    pub fn committed(&self, group_id: &str, topic: &str, partition: i32) -> Option<&OffsetValue> {
        self.groups.get(group_id)?.offsets.get(&(topic.to_string(), partition))
    }

    /// Every committed offset of a group, by topic and partition.
    pub fn all_committed(&self, group_id: &str) -> Vec<(&str, i32, &OffsetValue)> {
        self.groups
            .get(group_id)
            .map(|g| g.offsets.iter().map(|((t, p), v)| (t.as_str(), *p, v)).collect())
            .unwrap_or_default()
    }

    /// Topics the group's members subscribe to (consumer protocol only).
    fn subscribed_topics(g: &Group) -> BTreeSet<String> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        let mut topics = BTreeSet::new();
        if g.protocol_type.as_deref() != Some("consumer") {
            return topics;
        }
        let Some(protocol) = g.protocol.as_deref() else { return topics };
        for m in g.members.values() {
            let mut buf = m.metadata_for(protocol);
            if buf.len() < 2 {
                continue;
            }
            let version = i16::from_be_bytes([buf[0], buf[1]]);
            bytes::Buf::advance(&mut buf, 2);
            if let Ok(sub) = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)) {
                topics.extend(sub.topics.iter().map(|t| t.to_string()));
            }
        }
        topics
    }

    /// OffsetDelete: tombstones for the named partitions, refused per
    /// partition while the group is subscribed to its topic.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<(Result<(), ResponseError>, Option<Record>)>, ResponseError> {
        let g = self.groups.get(group_id).ok_or(ResponseError::GroupIdNotFound)?;
        let subscribed = if g.state == GroupState::Empty { BTreeSet::new() } else { Self::subscribed_topics(g) };
        let consumer_subscribed = |t: &str| g.consumer.as_ref().is_some_and(|c| c.subscribes_to(t));
        Ok(partitions
            .iter()
            .map(|(t, p)| {
                if subscribed.contains(t) || consumer_subscribed(t) {
                    (Err(ResponseError::GroupSubscribedToTopic), None)
                } else if g.offsets.contains_key(&(t.clone(), *p)) {
                    let r =
                        Record::Offset { group: group_id.to_string(), topic: t.clone(), partition: *p, value: None };
                    (Ok(()), Some(r))
                } else {
                    (Ok(()), None)
                }
            })
            .collect())
    }

    // ---------------------------------------------------------------- admin

    /// (group id, protocol type, state, group type) of every group; the
    /// type is "classic" or "consumer" (KIP-848), as ListGroups v5 reports it.
    pub fn list(&self) -> Vec<(&str, &str, &'static str, &'static str)> {
        self.groups
            .values()
            .map(|g| match &g.consumer {
                Some(_) => (g.id.as_str(), "consumer", g.state_name(), "consumer"),
                None => (g.id.as_str(), g.protocol_type.as_deref().unwrap_or(""), g.state_name(), "classic"),
            })
            .collect()
    }

    /// A consumer group (KIP-848), for ConsumerGroupDescribe: Err if the
    /// group does not exist or is a classic one.
    pub fn consumer_group(&self, group_id: &str) -> Result<&ConsumerGroup, ResponseError> {
        self.groups.get(group_id).and_then(|g| g.consumer.as_ref()).ok_or(ResponseError::GroupIdNotFound)
    }

    /// DescribeGroups of one group; None if it does not exist.
    /// A consumer group (KIP-848) is described as a group of protocol type
    /// "consumer" whose protocol is its server-side assignor, with its
    /// members' ids and clients and no metadata or assignment bytes (its
    /// members never sent any): ConsumerGroupDescribe tells the rest.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let g = self.groups.get(group_id)?;
        if let Some(c) = &g.consumer {
            let members = c
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.meta.instance_id.clone(),
                    client_id: m.meta.client_id.clone(),
                    client_host: m.meta.client_host.clone(),
                    metadata: Bytes::new(),
                    assignment: Bytes::new(),
                })
                .collect();
            return Some(GroupDescription {
                state: GroupState::Empty,
                state_name: g.state_name(),
                generation: c.epoch,
                protocol_type: "consumer".to_string(),
                protocol: c.assignor.clone(),
                members,
            });
        }
        let members = g
            .members
            .values()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: match (g.state, &g.protocol) {
                    (GroupState::Stable | GroupState::CompletingRebalance, Some(p)) => m.metadata_for(p),
                    _ => Bytes::new(),
                },
                assignment: if g.state == GroupState::Stable { m.assignment.clone() } else { Bytes::new() },
            })
            .collect();
        Some(GroupDescription {
            state: g.state,
            state_name: g.state_name(),
            generation: g.generation,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if g.state == GroupState::Stable || g.state == GroupState::CompletingRebalance {
                g.protocol.clone().unwrap_or_default()
            } else {
                String::new()
            },
            members,
        })
    }

    /// DeleteGroups of one group: only an empty one. Returns the tombstones
    /// to write (its offsets, then its metadata); the group is gone at once.
    pub fn delete_group(&mut self, group_id: &str) -> Result<Vec<Record>, ResponseError> {
        let g = self.groups.get(group_id).ok_or(ResponseError::GroupIdNotFound)?;
        if !g.is_empty() {
            return Err(ResponseError::NonEmptyGroup);
        }
        let mut records: Vec<Record> = g
            .offsets
            .keys()
            .map(|(t, p)| Record::Offset { group: group_id.to_string(), topic: t.clone(), partition: *p, value: None })
            .collect();
        if let Some(c) = &g.consumer {
            records.extend(c.tombstones(group_id));
        }
        records.push(Record::Group { group: group_id.to_string(), value: None });
        self.groups.remove(group_id);
        Ok(records)
    }

    // ----------------------------------------------------------------- time

    /// Apply every timeout due at `clock`: pending members and sessions
    /// expire, joins complete at their deadline or after the initial delay,
    /// members that never sent SyncGroup are removed, and empty groups with
    /// nothing committed are forgotten.
    pub fn tick(&mut self, clock: Clock, fx: &mut Effects) {
        let now = clock.elapsed;
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let g = self.groups.get_mut(&id).expect("listed");
            if let Some(c) = &mut g.consumer {
                c.tick(&id, &self.config, now, fx);
                if c.members.is_empty() && g.offsets.is_empty() {
                    fx.records.extend(c.tombstones(&id));
                    if g.persisted {
                        fx.records.push(Record::Group { group: id.clone(), value: None });
                    }
                    self.groups.remove(&id);
                }
                continue;
            }
            g.pending.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| {
                    m.awaiting_join.is_none()
                        && m.awaiting_sync.is_none()
                        && !g.held.iter().any(|(_, id, _)| *id == m.id)
                        && m.session_deadline <= now
                })
                .map(|m| m.id.clone())
                .collect();
            let mut removed = !expired.is_empty();
            for m in &expired {
                tracing::info!(group = %id, member = %m, "member removed: session timed out");
                remove_member(g, m, ResponseError::UnknownMemberId, fx);
            }
            if g.state == GroupState::CompletingRebalance && g.sync_deadline.is_some_and(|t| t <= now) {
                let unsynced: Vec<String> =
                    g.members.values().filter(|m| m.awaiting_sync.is_none()).map(|m| m.id.clone()).collect();
                for m in &unsynced {
                    tracing::info!(group = %id, member = %m, "member removed: no SyncGroup within the rebalance timeout");
                    remove_member(g, m, ResponseError::UnknownMemberId, fx);
                }
                removed |= !unsynced.is_empty();
                g.sync_deadline = None;
            }
            if removed {
                self.after_removal(&id, clock, fx, "members expired");
            } else {
                self.maybe_complete_join(&id, clock, fx);
            }
            let g = &self.groups[&id];
            if g.state == GroupState::Empty && g.members.is_empty() && g.pending.is_empty() && g.offsets.is_empty() {
                if g.persisted {
                    fx.records.push(Record::Group { group: id.clone(), value: None });
                }
                self.groups.remove(&id);
            }
        }
    }

    /// The earliest time [`Self::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        let mut consider = |t: Duration| next = Some(next.map_or(t, |n| n.min(t)));
        for g in self.groups.values() {
            if let Some(t) = g.consumer.as_ref().and_then(ConsumerGroup::next_deadline) {
                consider(t);
            }
            g.pending.values().for_each(|t| consider(*t));
            for m in g.members.values() {
                if m.awaiting_join.is_none() && m.awaiting_sync.is_none() {
                    consider(m.session_deadline);
                }
            }
            for t in [g.rebalance_deadline, g.initial_delay_until, g.sync_deadline].into_iter().flatten() {
                consider(t);
            }
        }
        next
    }
}

/// A member of a DescribeGroups answer.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A DescribeGroups answer.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// The classic state (Empty for a consumer group: see `state_name`).
    pub state: GroupState,
    /// The state's name, of either protocol.
    pub state_name: &'static str,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

struct NewMember {
    instance: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
}

/// Remove a member; its parked requests get `error`.
fn remove_member(g: &mut Group, id: &str, error: ResponseError, fx: &mut Effects) {
    let Some(m) = g.members.shift_remove(id) else { return };
    if let Some(i) = &m.instance_id {
        if g.static_members.get(i).is_some_and(|owner| owner == id) {
            g.static_members.remove(i);
        }
    }
    if g.leader.as_deref() == Some(id) {
        g.leader = None;
    }
    let generation = g.generation;
    if let Some(t) = m.awaiting_join {
        g.ready.insert(t, (generation, Ready::Join(g.join_response(id, error))));
        fx.woken.insert(g.id.clone());
    }
    if let Some(t) = m.awaiting_sync {
        g.ready.insert(t, (generation, Ready::Sync(g.sync_response(Some(error), Bytes::new()))));
        fx.woken.insert(g.id.clone());
    }
    // A held answer of a removed member must never be released as a success.
    let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut g.held).into_iter().partition(|(_, who, _)| who == id);
    g.held = kept;
    for (t, _, _) in gone {
        g.ready.insert(t, (generation, Ready::Sync(g.sync_response(Some(error), Bytes::new()))));
        fx.woken.insert(g.id.clone());
    }
}

/// A join that may have completed while it was being parked is answered at once.
fn answer_or_ready(c: &mut GroupCoordinator, answer: Answer<JoinGroupResponse>) -> Answer<JoinGroupResponse> {
    match answer {
        Answer::Wait(t) => match c.take_join(&t) {
            Some(r) => Answer::Now(r),
            None => Answer::Wait(t),
        },
        now => now,
    }
}
