//! Consumer groups of KIP-848 (`group.protocol=consumer`): membership,
//! server-side assignment and reconciliation as a pure state machine, kept
//! in the group of a [`GroupCoordinator`] whose type is "consumer".
//!
//! A group has an epoch, bumped whenever its members or what they subscribe
//! to change; a target assignment computed by a server-side assignor
//! ([`assign`]) at that epoch; and, per member, a member epoch and the
//! partitions the member owns now. A member moves towards its target only
//! through its own heartbeats: partitions leaving it are first revoked (it
//! keeps owning them until a heartbeat's owned partitions no longer list
//! them), and partitions coming to it are handed over only once no other
//! member owns them — so no partition is ever owned by two members. Only
//! then does the member reach the target's epoch.
//!
//! The group's durable state is the record types 3, 4, 6, 7 and 8 of
//! `__consumer_offsets` ([`super::records`]); [`ConsumerGroup::apply`]
//! rebuilds it from them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment as WireAssignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::coordinator::{Client, Effects, GroupCoordinator};
use super::records::{Assignment, ConsumerMemberValue, CurrentAssignmentValue, Record};
use crate::config::GroupConfig;
use crate::server::node::Clock;

/// The member epoch of a member leaving the group.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch of a static member leaving for a while (it keeps its
/// partitions until it rejoins with the same instance id or its session ends).
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// A topic a consumer group can be assigned, as the broker knows it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicMeta {
    pub id: Uuid,
    pub partitions: i32,
}

/// Every topic a member may subscribe to, by name.
pub type TopicsView = BTreeMap<String, TopicMeta>;

/// Where a member is in reaching its target assignment (Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// It owns exactly its target at the target's epoch.
    Stable,
    /// It must give up `pending_revocation` before it can go further.
    UnrevokedPartitions,
    /// It waits for partitions of its target still owned by other members.
    UnreleasedPartitions,
}

impl MemberState {
    fn code(self) -> i8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
        }
    }

    fn from_code(c: i8) -> MemberState {
        match c {
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => MemberState::Stable,
        }
    }
}

/// One member of a consumer group.
#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub id: String,
    pub meta: ConsumerMemberValue,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    /// What it owns and may use.
    pub assigned: Assignment,
    /// What it still owns but must give up.
    pub pending_revocation: Assignment,
    /// Removed unless it heartbeats by then.
    session_deadline: Duration,
    /// Removed unless it has revoked `pending_revocation` by then (its
    /// rebalance timeout after the revocation was asked).
    revocation_deadline: Option<Duration>,
}

impl ConsumerMember {
    fn new(id: String, now: Duration, session: Duration) -> ConsumerMember {
        ConsumerMember {
            id,
            meta: ConsumerMemberValue { rebalance_timeout_ms: -1, ..ConsumerMemberValue::default() },
            member_epoch: 0,
            previous_member_epoch: -1,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            session_deadline: now + session,
            revocation_deadline: None,
        }
    }

    fn current(&self) -> CurrentAssignmentValue {
        CurrentAssignmentValue {
            member_epoch: self.member_epoch,
            previous_member_epoch: self.previous_member_epoch,
            state: self.state.code(),
            assigned: self.assigned.clone(),
            pending_revocation: self.pending_revocation.clone(),
        }
    }

    /// Partitions it owns, assigned or pending revocation.
    fn owned(&self) -> impl Iterator<Item = (Uuid, i32)> + '_ {
        flatten(&self.assigned).chain(flatten(&self.pending_revocation))
    }

    /// The topics it subscribes to that exist, by names and by regex.
    fn subscribed<'a>(&self, topics: &'a TopicsView) -> BTreeSet<&'a str> {
        let mut out: BTreeSet<&str> = self
            .meta
            .subscribed_topic_names
            .iter()
            .filter_map(|n| topics.get_key_value(n.as_str()).map(|(k, _)| k.as_str()))
            .collect();
        if let Some(re) = self.meta.subscribed_topic_regex.as_deref().and_then(|r| compile(r).ok()) {
            out.extend(topics.keys().filter(|t| !t.starts_with("__") && re.is_match(t.as_str())).map(String::as_str));
        }
        out
    }
}

fn flatten(a: &Assignment) -> impl Iterator<Item = (Uuid, i32)> + '_ {
    a.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
}

fn unflatten(items: impl IntoIterator<Item = (Uuid, i32)>) -> Assignment {
    let mut a = Assignment::new();
    for (t, p) in items {
        a.entry(t).or_default().insert(p);
    }
    a
}

fn size(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

/// A member's whole-name regex (`^(?:re)$`), bounded in automaton size.
fn compile(re: &str) -> Result<regex_automata::meta::Regex, String> {
    regex_automata::meta::Builder::new()
        .configure(regex_automata::meta::Config::new().nfa_size_limit(Some(1 << 20)))
        .build(&format!("^(?:{re})$"))
        .map_err(|e| e.to_string())
}

/// A consumer group's state (Kafka's names, as ListGroups reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

/// A consumer group: members, the group epoch and the target assignment.
#[derive(Debug, Clone, Default)]
pub struct ConsumerGroup {
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    /// Each member's target at `assignment_epoch`.
    pub target: BTreeMap<String, Assignment>,
    /// instance id → member id.
    pub static_members: BTreeMap<String, String>,
    /// The subscribed topics when the target was last computed; None after
    /// a load, so the first heartbeat recomputes it.
    subscribed: Option<BTreeMap<String, TopicMeta>>,
    /// The assignor of the last target assignment.
    pub assignor: String,
}

impl ConsumerGroup {
    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.epoch > self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self.members.values().any(|m| {
            m.member_epoch != STATIC_LEAVE_EPOCH
                && (m.member_epoch != self.assignment_epoch || m.state != MemberState::Stable)
        }) {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// Whether a member subscribes to `topic`, by name or regex
    /// (OffsetDelete refuses its offsets then).
    pub fn subscribes_to(&self, topic: &str) -> bool {
        self.members.values().any(|m| {
            m.meta.subscribed_topic_names.iter().any(|t| t == topic)
                || m.meta
                    .subscribed_topic_regex
                    .as_deref()
                    .and_then(|r| compile(r).ok())
                    .is_some_and(|re| re.is_match(topic))
        })
    }

    /// Replay one consumer group record (types 3, 4, 6, 7, 8).
    pub fn apply(&mut self, record: Record, clock: Clock, config: &GroupConfig) {
        let session = Duration::from_millis(config.consumer_session_timeout_ms.max(0) as u64);
        match record {
            Record::ConsumerEpoch { epoch, .. } => self.epoch = epoch.unwrap_or(0),
            Record::ConsumerTargetEpoch { epoch, .. } => self.assignment_epoch = epoch.unwrap_or(0),
            Record::ConsumerMember { member, value: None, .. } => {
                if let Some(m) = self.members.remove(&member) {
                    if let Some(i) = &m.meta.instance_id {
                        if self.static_members.get(i) == Some(&member) {
                            self.static_members.remove(i);
                        }
                    }
                }
            }
            Record::ConsumerMember { member, value: Some(v), .. } => {
                if let Some(i) = &v.instance_id {
                    self.static_members.insert(i.clone(), member.clone());
                }
                let m = self
                    .members
                    .entry(member.clone())
                    .or_insert_with(|| ConsumerMember::new(member, clock.elapsed, session));
                m.meta = v;
            }
            Record::ConsumerTarget { member, value, .. } => match value {
                Some(a) => {
                    self.target.insert(member, a);
                }
                None => {
                    self.target.remove(&member);
                }
            },
            Record::ConsumerCurrent { member, value, .. } => {
                if let (Some(v), Some(m)) = (value, self.members.get_mut(&member)) {
                    m.member_epoch = v.member_epoch;
                    m.previous_member_epoch = v.previous_member_epoch;
                    m.state = MemberState::from_code(v.state);
                    m.assigned = v.assigned;
                    m.pending_revocation = v.pending_revocation;
                    // A revocation under way gets a whole rebalance timeout again.
                    m.revocation_deadline = (m.state == MemberState::UnrevokedPartitions)
                        .then(|| clock.elapsed + Duration::from_millis(m.meta.rebalance_timeout_ms.max(0) as u64));
                }
            }
            Record::Offset { .. } | Record::Group { .. } => {}
        }
    }

    /// The records that remove a member.
    fn member_tombstones(group: &str, member: &str) -> [Record; 3] {
        [
            Record::ConsumerCurrent { group: group.to_string(), member: member.to_string(), value: None },
            Record::ConsumerTarget { group: group.to_string(), member: member.to_string(), value: None },
            Record::ConsumerMember { group: group.to_string(), member: member.to_string(), value: None },
        ]
    }

    /// The records that remove the whole (empty) group's consumer metadata.
    pub fn tombstones(&self, group: &str) -> Vec<Record> {
        let mut out = Vec::new();
        for id in self.members.keys().chain(self.target.keys()).collect::<BTreeSet<_>>() {
            out.extend(Self::member_tombstones(group, id));
        }
        out.push(Record::ConsumerTargetEpoch { group: group.to_string(), epoch: None });
        out.push(Record::ConsumerEpoch { group: group.to_string(), epoch: None });
        out
    }

    fn remove_member(&mut self, group: &str, id: &str, fx: &mut Effects) {
        let Some(m) = self.members.remove(id) else { return };
        if let Some(i) = &m.meta.instance_id {
            if self.static_members.get(i).is_some_and(|o| o == id) {
                self.static_members.remove(i);
            }
        }
        self.target.remove(id);
        fx.records.extend(Self::member_tombstones(group, id));
        self.bump(group, fx);
    }

    fn bump(&mut self, group: &str, fx: &mut Effects) {
        self.epoch += 1;
        fx.records.push(Record::ConsumerEpoch { group: group.to_string(), epoch: Some(self.epoch) });
    }

    /// The group's assignor: the one most members ask for (ties and
    /// members asking for none go to the configured order), else the default.
    fn choose_assignor(&self, config: &GroupConfig) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.meta.server_assignor.as_deref() {
                *votes.entry(a).or_default() += 1;
            }
        }
        let best = votes.values().copied().max().unwrap_or(0);
        config
            .consumer_assignors
            .iter()
            .find(|a| best == 0 || votes.get(a.as_str()) == Some(&best))
            .cloned()
            .unwrap_or_else(|| "uniform".to_string())
    }

    /// Bring the subscribed topics (when `topics` is given; else the last
    /// known ones stand) and the target assignment up to date.
    fn refresh(&mut self, group: &str, topics: Option<&TopicsView>, config: &GroupConfig, fx: &mut Effects) {
        if let Some(topics) = topics {
            let mut subscribed: BTreeMap<String, TopicMeta> = BTreeMap::new();
            for m in self.members.values() {
                for t in m.subscribed(topics) {
                    subscribed.insert(t.to_string(), topics[t]);
                }
            }
            if self.subscribed.as_ref() != Some(&subscribed) {
                if self.subscribed.is_some() {
                    // Partitions added or a topic recreated: assign again.
                    self.bump(group, fx);
                }
                self.subscribed = Some(subscribed);
            }
        }
        let Some(view) = self.subscribed.as_ref() else { return };
        if self.epoch <= self.assignment_epoch {
            return;
        }
        let subs: BTreeMap<&str, BTreeSet<&str>> =
            self.members.values().map(|m| (m.id.as_str(), m.subscribed(view))).collect();
        let assignor = self.choose_assignor(config);
        let target = assign(&assignor, &subs, view, &self.target);
        for (member, a) in &target {
            if self.target.get(member) != Some(a) {
                fx.records.push(Record::ConsumerTarget {
                    group: group.to_string(),
                    member: member.clone(),
                    value: Some(a.clone()),
                });
            }
        }
        self.target = target;
        self.assignment_epoch = self.epoch;
        self.assignor = assignor;
        fx.records.push(Record::ConsumerTargetEpoch { group: group.to_string(), epoch: Some(self.assignment_epoch) });
        tracing::info!(
            group,
            epoch = self.epoch,
            members = self.members.len(),
            assignor = %self.assignor,
            "consumer group target assignment computed"
        );
    }

    /// Move `id` towards its target as far as the others allow; `owned` is
    /// what its heartbeat says it owns (None: unchanged since the last).
    fn reconcile(&mut self, id: &str, owned: Option<&Assignment>, now: Duration) {
        let others: BTreeSet<(Uuid, i32)> =
            self.members.values().filter(|m| m.id != id).flat_map(|m| m.owned().collect::<Vec<_>>()).collect();
        let target = self.target.get(id).cloned().unwrap_or_default();
        let target_epoch = self.assignment_epoch;
        let m = self.members.get_mut(id).expect("member exists");
        if m.state == MemberState::UnrevokedPartitions {
            let revoked = owned.is_some_and(|o| {
                flatten(&m.pending_revocation).all(|(t, p)| !o.get(&t).is_some_and(|ps| ps.contains(&p)))
            });
            if !revoked {
                return;
            }
            m.pending_revocation.clear();
            m.revocation_deadline = None;
            m.state = MemberState::Stable;
        }
        if m.member_epoch == target_epoch && m.state == MemberState::Stable {
            return;
        }
        let assigned: BTreeSet<(Uuid, i32)> = flatten(&m.assigned).collect();
        let want: BTreeSet<(Uuid, i32)> = flatten(&target).collect();
        let revoke: Vec<(Uuid, i32)> = assigned.difference(&want).copied().collect();
        if !revoke.is_empty() {
            m.assigned = unflatten(assigned.intersection(&want).copied());
            m.pending_revocation = unflatten(revoke);
            m.state = MemberState::UnrevokedPartitions;
            let timeout = Duration::from_millis(m.meta.rebalance_timeout_ms.max(0) as u64);
            m.revocation_deadline = Some(now + timeout);
            return;
        }
        let free = want.iter().filter(|tp| assigned.contains(tp) || !others.contains(tp)).copied();
        m.assigned = unflatten(free);
        if m.member_epoch != target_epoch {
            m.previous_member_epoch = m.member_epoch;
            m.member_epoch = target_epoch;
        }
        m.state = if size(&m.assigned) == want.len() { MemberState::Stable } else { MemberState::UnreleasedPartitions };
    }

    /// Remove members whose session or revocation time ran out.
    pub fn tick(&mut self, group: &str, config: &GroupConfig, now: Duration, fx: &mut Effects) {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_deadline <= now || m.revocation_deadline.is_some_and(|t| t <= now))
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group, member = %id, "consumer group member removed: session or revocation timed out");
            self.remove_member(group, id, fx);
        }
        if !expired.is_empty() {
            self.refresh(group, None, config, fx);
        }
    }

    pub fn next_deadline(&self) -> Option<Duration> {
        self.members.values().flat_map(|m| [Some(m.session_deadline), m.revocation_deadline]).flatten().min()
    }
}

/// The target assignment of `assignor` ("uniform" or "range") for members'
/// subscriptions (member → topic names) over `topics`, sticky to `previous`
/// where the assignor allows.
pub fn assign(
    assignor: &str,
    subs: &BTreeMap<&str, BTreeSet<&str>>,
    topics: &BTreeMap<String, TopicMeta>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Vec<(Uuid, i32)>> = subs.keys().map(|m| (m.to_string(), Vec::new())).collect();
    let eligible =
        |topic: &str| -> Vec<&str> { subs.iter().filter(|(_, ts)| ts.contains(topic)).map(|(m, _)| *m).collect() };
    if assignor == "range" {
        // Kafka's range: per topic, contiguous ranges in member id order,
        // the first `partitions % members` members one partition more.
        for (name, meta) in topics {
            let members = eligible(name);
            if members.is_empty() {
                continue;
            }
            let (n, k) = (meta.partitions.max(0) as usize, members.len());
            let mut next = 0;
            for (i, m) in members.iter().enumerate() {
                let count = n / k + usize::from(i < n % k);
                let list = out.get_mut(*m).expect("member");
                list.extend((next..next + count).map(|p| (meta.id, p as i32)));
                next += count;
            }
        }
    } else {
        // Uniform: every partition to an eligible member, keeping previous
        // owners, then moved one at a time from the fullest to the emptiest
        // eligible member until no move narrows the spread.
        let previous_owner: BTreeMap<(Uuid, i32), &str> =
            previous.iter().flat_map(|(m, a)| flatten(a).map(move |tp| (tp, m.as_str()))).collect();
        let mut owner: BTreeMap<(Uuid, i32), &str> = BTreeMap::new();
        let mut count: BTreeMap<&str, usize> = subs.keys().map(|m| (*m, 0)).collect();
        let mut all: Vec<((Uuid, i32), Vec<&str>)> = Vec::new();
        for (name, meta) in topics {
            let members = eligible(name);
            if members.is_empty() {
                continue;
            }
            for p in 0..meta.partitions.max(0) {
                all.push(((meta.id, p), members.clone()));
            }
        }
        let total = all.len();
        let quota = total.div_ceil(subs.len().max(1));
        for (tp, members) in &all {
            if let Some(m) = previous_owner.get(tp).filter(|m| members.contains(m)) {
                if count[m] < quota {
                    owner.insert(*tp, m);
                    *count.get_mut(m).expect("member") += 1;
                }
            }
        }
        for (tp, members) in &all {
            if owner.contains_key(tp) {
                continue;
            }
            let m = members.iter().min_by_key(|m| (count[*m], **m)).expect("eligible");
            owner.insert(*tp, m);
            *count.get_mut(m).expect("member") += 1;
        }
        // Bounded: each move lowers the sum of squared counts.
        for _ in 0..total.min(10_000) {
            let mut moved = false;
            for (tp, members) in &all {
                let from = owner[tp];
                let to = members.iter().min_by_key(|m| (count[*m], **m)).expect("eligible");
                if count[from] > count[to] + 1 {
                    owner.insert(*tp, to);
                    *count.get_mut(from).expect("member") -= 1;
                    *count.get_mut(to).expect("member") += 1;
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        for (tp, m) in owner {
            out.get_mut(m).expect("member").push(tp);
        }
    }
    out.into_iter().map(|(m, tps)| (m, unflatten(tps))).collect()
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn to_assignment(
    parts: &Option<Vec<kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions>>,
) -> Option<Assignment> {
    parts.as_ref().map(|ts| {
        let mut a = Assignment::new();
        for t in ts {
            a.entry(t.topic_id).or_default().extend(t.partitions.iter().copied());
        }
        a
    })
}

fn wire(a: &Assignment) -> WireAssignment {
    let mut w = WireAssignment::default();
    w.topic_partitions = a
        .iter()
        .map(|(t, ps)| {
            let mut tp = TopicPartitions::default();
            tp.topic_id = *t;
            tp.partitions = ps.iter().copied().collect();
            tp
        })
        .collect();
    w
}

/// Why a heartbeat is refused, with Kafka's error and a message.
type Refusal = (ResponseError, String);

impl GroupCoordinator {
    /// ConsumerGroupHeartbeat: join (member epoch 0), heartbeat and
    /// reconcile (the member's epoch), leave (-1) or leave for a while as a
    /// static member (-2). `topics` are the topics the broker has now.
    pub fn consumer_heartbeat(
        &mut self,
        req: &ConsumerGroupHeartbeatRequest,
        client: Client,
        topics: &TopicsView,
        clock: Clock,
        fx: &mut Effects,
    ) -> ConsumerGroupHeartbeatResponse {
        let mut resp = ConsumerGroupHeartbeatResponse::default();
        match self.heartbeat_inner(req, client, topics, clock, fx, &mut resp) {
            Ok(()) => resp,
            Err((e, message)) => {
                tracing::debug!(group = %req.group_id.0, member = %req.member_id, epoch = req.member_epoch, error = ?e, %message, "consumer group heartbeat refused");
                let mut r = ConsumerGroupHeartbeatResponse::default();
                r.error_code = e.code();
                r.error_message = Some(s(&message));
                r.member_epoch = -1;
                r
            }
        }
    }

    fn heartbeat_inner(
        &mut self,
        req: &ConsumerGroupHeartbeatRequest,
        client: Client,
        topics: &TopicsView,
        clock: Clock,
        fx: &mut Effects,
        resp: &mut ConsumerGroupHeartbeatResponse,
    ) -> Result<(), Refusal> {
        let config = self.config.clone();
        let group_id = req.group_id.0.as_str();
        let epoch = req.member_epoch;
        let invalid = |m: &str| Err((ResponseError::InvalidRequest, m.to_string()));
        if group_id.is_empty() || group_id.len() > i16::MAX as usize {
            return invalid("the group id must be 1 to 32767 bytes");
        }
        let instance = req.instance_id.as_deref();
        let strings = [req.member_id.as_str(), instance.unwrap_or(""), req.rack_id.as_deref().unwrap_or("")];
        if strings.iter().any(|v| v.len() > 1024) || instance == Some("") {
            return invalid("member id, instance id and rack id must be at most 1024 bytes, an instance id not empty");
        }
        if epoch < STATIC_LEAVE_EPOCH || (epoch == STATIC_LEAVE_EPOCH && instance.is_none()) {
            return invalid("member epoch -2 is for static members leaving; below -2 is not a member epoch");
        }
        if epoch != 0 && req.member_id.is_empty() {
            return invalid("the member id is required unless the member epoch is 0");
        }
        if epoch == 0 {
            if req.rebalance_timeout_ms < 0 {
                return invalid("the rebalance timeout is required when joining");
            }
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return invalid("a subscription (topic names or a regex) is required when joining");
            }
            if req.topic_partitions.as_ref().is_none_or(|t| !t.is_empty()) {
                return invalid("owned partitions must be given, and empty, when joining");
            }
        }
        if let Some(names) = &req.subscribed_topic_names {
            if names.len() > config.consumer_max_subscribed_topics {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("{} subscribed topics; at most {}", names.len(), config.consumer_max_subscribed_topics),
                ));
            }
            if names.iter().any(|n| n.len() > 249) {
                return invalid("a subscribed topic name is longer than 249 bytes");
            }
        }
        if let Some(re) = req.subscribed_topic_regex.as_deref().filter(|r| !r.is_empty()) {
            if re.len() > config.consumer_max_regex_bytes {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("a {}-byte regex; at most {}", re.len(), config.consumer_max_regex_bytes),
                ));
            }
            if let Err(e) = compile(re) {
                return Err((ResponseError::InvalidRegularExpression, format!("regex {re:?}: {e}")));
            }
        }
        if let Some(a) = req.server_assignor.as_deref() {
            if !config.consumer_assignors.iter().any(|c| c == a) {
                return Err((
                    ResponseError::UnsupportedAssignor,
                    format!("assignor {a:?} is not one of {:?}", config.consumer_assignors),
                ));
            }
        }

        // The group: a consumer group, or created (an empty classic group is converted).
        if !self.groups.contains_key(group_id) {
            if epoch != 0 {
                return Err((ResponseError::UnknownMemberId, format!("group {group_id} has no members")));
            }
            if self.groups.len() >= config.max_groups {
                return Err((ResponseError::CoordinatorNotAvailable, "the coordinator holds max_groups groups".into()));
            }
        }
        let new_member_id = (epoch == 0 && req.member_id.is_empty()).then(|| {
            let n = self.next();
            let client_id = client.client_id.get(..client.client_id.len().min(64)).unwrap_or("consumer");
            format!("{client_id}-{:x}-{}-{n}", clock.now_ms, self.partition)
        });
        let g = self.group_mut_or_new(group_id, clock);
        if !g.is_consumer_or_empty() {
            return Err((ResponseError::GroupIdNotFound, format!("group {group_id} is a classic group with members")));
        }
        let cg = g.make_consumer();
        let session = Duration::from_millis(config.consumer_session_timeout_ms.max(0) as u64);
        let now = clock.elapsed;

        // Leaving.
        if epoch == LEAVE_EPOCH || epoch == STATIC_LEAVE_EPOCH {
            let id = match instance.and_then(|i| cg.static_members.get(i)) {
                Some(owner) if owner != req.member_id.as_str() => {
                    return Err((ResponseError::FencedInstanceId, "the instance id belongs to another member".into()))
                }
                Some(owner) => owner.clone(),
                None => req.member_id.to_string(),
            };
            if !cg.members.contains_key(&id) {
                return Err((ResponseError::UnknownMemberId, format!("member {id} is not in group {group_id}")));
            }
            if epoch == LEAVE_EPOCH {
                tracing::info!(group = group_id, member = %id, "consumer group member left");
                cg.remove_member(group_id, &id, fx);
                cg.refresh(group_id, Some(topics), &config, fx);
            } else {
                let m = cg.members.get_mut(&id).expect("checked");
                // Kept to restore when it comes back.
                m.previous_member_epoch = m.member_epoch;
                m.member_epoch = STATIC_LEAVE_EPOCH;
                fx.records.push(Record::ConsumerCurrent {
                    group: group_id.to_string(),
                    member: id.clone(),
                    value: Some(m.current()),
                });
            }
            resp.member_id = Some(s(&id));
            resp.member_epoch = epoch;
            resp.heartbeat_interval_ms = config.consumer_heartbeat_interval_ms;
            return Ok(());
        }

        // Joining, or the member's next heartbeat.
        let owned = to_assignment(&req.topic_partitions);
        let id = match &new_member_id {
            Some(id) => id.clone(),
            None => req.member_id.to_string(),
        };
        // A static member's new member id has no metadata record yet.
        let mut replaced = false;
        if epoch == 0 {
            let old = instance.and_then(|i| cg.static_members.get(i)).cloned();
            if let Some(old) = old.filter(|o| !cg.members.contains_key(o)) {
                cg.static_members.retain(|_, m| *m != old);
            }
            if let Some(old) = instance.and_then(|i| cg.static_members.get(i)).cloned() {
                if old != id {
                    let m = &cg.members[&old];
                    if m.member_epoch != STATIC_LEAVE_EPOCH {
                        return Err((
                            ResponseError::UnreleasedInstanceId,
                            format!("instance {} is still used by member {old}", instance.unwrap_or("")),
                        ));
                    }
                    // The static member is back under a new member id: it
                    // takes over the old one's partitions and target.
                    let mut m = cg.members.remove(&old).expect("exists");
                    let target = cg.target.remove(&old);
                    fx.records.extend(ConsumerGroup::member_tombstones(group_id, &old));
                    m.id = id.clone();
                    m.member_epoch = m.previous_member_epoch.max(0);
                    if let Some(t) = target {
                        fx.records.push(Record::ConsumerTarget {
                            group: group_id.to_string(),
                            member: id.clone(),
                            value: Some(t.clone()),
                        });
                        cg.target.insert(id.clone(), t);
                    }
                    cg.members.insert(id.clone(), m);
                    cg.static_members.insert(instance.unwrap_or("").to_string(), id.clone());
                    replaced = true;
                    tracing::info!(group = group_id, old = %old, new = %id, "static consumer group member replaced");
                }
            }
            if !cg.members.contains_key(&id) {
                let active = cg.members.len();
                if active >= config.group_max_size {
                    return Err((
                        ResponseError::GroupMaxSizeReached,
                        format!("group {group_id} has {active} members, group_max_size"),
                    ));
                }
                cg.members.insert(id.clone(), ConsumerMember::new(id.clone(), now, session));
                tracing::info!(group = group_id, member = %id, "consumer group member joined");
            } else if cg.members[&id].member_epoch == STATIC_LEAVE_EPOCH && instance.is_some() {
                let m = cg.members.get_mut(&id).expect("exists");
                m.member_epoch = m.previous_member_epoch.max(0);
            } else {
                // A known member rejoining from scratch owns nothing now.
                let m = cg.members.get_mut(&id).expect("exists");
                m.assigned.clear();
                m.pending_revocation.clear();
                m.state = MemberState::Stable;
                m.revocation_deadline = None;
                m.previous_member_epoch = m.member_epoch;
                m.member_epoch = 0;
            }
        } else {
            let Some(m) = cg.members.get(&id) else {
                return Err((ResponseError::UnknownMemberId, format!("member {id} is not in group {group_id}")));
            };
            if m.meta.instance_id.as_deref() != instance && instance.is_some() {
                return Err((ResponseError::FencedInstanceId, "the instance id belongs to another member".into()));
            }
            // A heartbeat whose answer was lost may come with the previous
            // epoch, owning only what the member still has.
            let lost_answer = epoch == m.previous_member_epoch
                && owned
                    .as_ref()
                    .is_some_and(|o| flatten(o).all(|(t, p)| m.assigned.get(&t).is_some_and(|ps| ps.contains(&p))));
            if epoch != m.member_epoch && !lost_answer {
                return Err((
                    ResponseError::FencedMemberEpoch,
                    format!("member epoch {epoch}, the member is at {}", m.member_epoch),
                ));
            }
        }

        // The member's subscription and identity.
        let m = cg.members.get_mut(&id).expect("member exists");
        let before_meta = m.meta.clone();
        let before_current = m.current();
        m.session_deadline = now + session;
        if let Some(names) = &req.subscribed_topic_names {
            let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            names.sort();
            names.dedup();
            m.meta.subscribed_topic_names = names;
        }
        if let Some(re) = &req.subscribed_topic_regex {
            m.meta.subscribed_topic_regex = Some(re.to_string()).filter(|r| !r.is_empty());
        }
        if req.rebalance_timeout_ms >= 0 {
            m.meta.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if let Some(a) = &req.server_assignor {
            m.meta.server_assignor = Some(a.to_string());
        }
        if req.rack_id.is_some() || epoch == 0 {
            m.meta.rack_id = req.rack_id.as_ref().map(|r| r.to_string());
        }
        m.meta.instance_id = instance.map(str::to_string);
        m.meta.client_id = client.client_id.get(..client.client_id.len().min(1024)).unwrap_or("").to_string();
        m.meta.client_host = client.client_host.to_string();
        let meta_changed = replaced || m.meta != before_meta;
        let subscription_changed = m.meta.subscribed_topic_names != before_meta.subscribed_topic_names
            || m.meta.subscribed_topic_regex != before_meta.subscribed_topic_regex
            || m.meta.server_assignor != before_meta.server_assignor;
        if let Some(i) = instance {
            cg.static_members.insert(i.to_string(), id.clone());
        }
        if meta_changed {
            let value = Some(cg.members[&id].meta.clone());
            fx.records.push(Record::ConsumerMember { group: group_id.to_string(), member: id.clone(), value });
        }
        if subscription_changed || !cg.target.contains_key(&id) {
            cg.bump(group_id, fx);
        }
        cg.refresh(group_id, Some(topics), &config, fx);
        cg.reconcile(&id, owned.as_ref(), now);
        let m = &cg.members[&id];
        let current = m.current();
        if replaced || current != before_current {
            fx.records.push(Record::ConsumerCurrent {
                group: group_id.to_string(),
                member: id.clone(),
                value: Some(current.clone()),
            });
        }
        resp.member_id = Some(s(&id));
        resp.member_epoch = m.member_epoch;
        resp.heartbeat_interval_ms = config.consumer_heartbeat_interval_ms;
        // Kafka sends the assignment to a full request (a join, or one with
        // every field set, sent after an error) or when it changed.
        let full = epoch == 0
            || (req.rebalance_timeout_ms >= 0
                && req.subscribed_topic_names.is_some()
                && req.topic_partitions.is_some());
        if full || current.assigned != before_current.assigned {
            resp.assignment = Some(wire(&m.assigned));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(list: &[(&str, u128, i32)]) -> BTreeMap<String, TopicMeta> {
        list.iter().map(|(n, id, p)| (n.to_string(), TopicMeta { id: Uuid::from_u128(*id), partitions: *p })).collect()
    }

    #[test]
    fn uniform_balances_and_sticks() {
        let t = topics(&[("a", 1, 6)]);
        let subs: BTreeMap<&str, BTreeSet<&str>> = [("m1", BTreeSet::from(["a"]))].into();
        let one = assign("uniform", &subs, &t, &BTreeMap::new());
        assert_eq!(size(&one["m1"]), 6);
        let subs: BTreeMap<&str, BTreeSet<&str>> =
            [("m1", BTreeSet::from(["a"])), ("m2", BTreeSet::from(["a"])), ("m3", BTreeSet::from(["a"]))].into();
        let three = assign("uniform", &subs, &t, &one);
        assert!(three.values().all(|a| size(a) == 2), "{three:?}");
        // m1 keeps two of what it had.
        assert!(flatten(&three["m1"]).all(|tp| flatten(&one["m1"]).any(|x| x == tp)));
    }

    #[test]
    fn range_gives_contiguous_ranges() {
        let t = topics(&[("a", 1, 5)]);
        let subs: BTreeMap<&str, BTreeSet<&str>> =
            [("m1", BTreeSet::from(["a"])), ("m2", BTreeSet::from(["a"]))].into();
        let r = assign("range", &subs, &t, &BTreeMap::new());
        assert_eq!(r["m1"][&Uuid::from_u128(1)], BTreeSet::from([0, 1, 2]));
        assert_eq!(r["m2"][&Uuid::from_u128(1)], BTreeSet::from([3, 4]));
    }

    #[test]
    fn heterogeneous_subscriptions_only_get_their_topics() {
        let t = topics(&[("a", 1, 4), ("b", 2, 2)]);
        let subs: BTreeMap<&str, BTreeSet<&str>> =
            [("m1", BTreeSet::from(["a", "b"])), ("m2", BTreeSet::from(["b"]))].into();
        let r = assign("uniform", &subs, &t, &BTreeMap::new());
        assert!(!r["m2"].contains_key(&Uuid::from_u128(1)));
        assert_eq!(size(&r["m1"]) + size(&r["m2"]), 6);
        assert_eq!(size(&r["m2"]), 2);
    }
}
