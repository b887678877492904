//! A consumer's membership in a group (Kafka's classic protocol): finding
//! the coordinator, the two-step JoinGroup, the leader's assignment and
//! SyncGroup, heartbeats, offset commits and fetches, and LeaveGroup.
//!
//! [`Membership`] knows nothing of positions or fetching: the consumer asks
//! it for an assignment when a rebalance is needed and tells it what to
//! commit. Every request goes to the coordinator; a coordinator error or a
//! lost connection sends the next request through FindCoordinator again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::assignor::{self, Assignor, MemberSubscription};
use super::cluster::Cluster;
use super::connection::Connection;
use super::{ClientError, TopicPartition};
use crate::io::Env;

/// Group settings, with the Java consumer's names and defaults.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id` (KIP-345 static membership).
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `max.poll.interval.ms`, sent as the rebalance timeout.
    pub max_poll_interval_ms: i32,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// `partition.assignment.strategy`, most preferred first.
    pub assignors: Vec<Assignor>,
}

impl GroupSettings {
    pub fn new(group_id: impl Into<String>) -> GroupSettings {
        GroupSettings {
            group_id: group_id.into(),
            group_instance_id: None,
            session_timeout_ms: 45_000,
            max_poll_interval_ms: 300_000,
            heartbeat_interval_ms: 3_000,
            assignors: vec![Assignor::Range, Assignor::CooperativeSticky],
        }
    }

    /// KIP-429: rebalances are cooperative only if every assignor offered is.
    pub fn cooperative(&self) -> bool {
        self.assignors.iter().all(|a| a.is_cooperative())
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn is_coordinator_error(e: ResponseError) -> bool {
    matches!(
        e,
        ResponseError::NotCoordinator
            | ResponseError::CoordinatorNotAvailable
            | ResponseError::CoordinatorLoadInProgress
    )
}

fn code_error(context: &str, code: i16) -> Option<ResponseError> {
    (code != 0)
        .then(|| ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code)))
        .inspect(|e| tracing::debug!(context, error = ?e, "group request refused"))
}

/// The connection to `group`'s coordinator (FindCoordinator, key type
/// group), retrying retriable errors for `request.timeout.ms`.
pub async fn find_coordinator(
    env: &Env,
    cluster: &Cluster,
    group: &str,
    backoff: Duration,
) -> Result<Arc<Connection>, ClientError> {
    let deadline = env.elapsed() + cluster.config().request_timeout;
    loop {
        let result = cluster.send_any(|_| FindCoordinatorRequest::default().with_key(s(group)).with_key_type(0)).await;
        let err = match result {
            Ok(r) if r.error_code == 0 => match cluster.connection(&format!("{}:{}", r.host.as_str(), r.port)).await {
                Ok(c) => return Ok(c),
                Err(e) => e,
            },
            Ok(r) => {
                ClientError::broker(format!("find coordinator of {group}"), r.error_code, r.error_message.as_deref())
            }
            Err(e) => e,
        };
        if !err.is_retriable() || env.elapsed() >= deadline {
            return Err(err);
        }
        env.sleep(backoff).await;
    }
}

/// One consumer's place in its group.
pub struct Membership {
    env: Env,
    cluster: Arc<Cluster>,
    settings: GroupSettings,
    retry_backoff: Duration,
    coordinator: Option<Arc<Connection>>,
    member_id: String,
    generation: i32,
    protocol: Option<Assignor>,
    last_heartbeat: Duration,
    rejoin_needed: bool,
}

impl Membership {
    pub fn new(env: Env, cluster: Arc<Cluster>, settings: GroupSettings, retry_backoff: Duration) -> Membership {
        Membership {
            env,
            cluster,
            settings,
            retry_backoff,
            coordinator: None,
            member_id: String::new(),
            generation: -1,
            protocol: None,
            last_heartbeat: Duration::ZERO,
            rejoin_needed: true,
        }
    }

    pub fn settings(&self) -> &GroupSettings {
        &self.settings
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// The assignor the group chose in the last rebalance.
    pub fn protocol(&self) -> Option<Assignor> {
        self.protocol
    }

    /// Whether the next poll must rebalance before fetching.
    pub fn rejoin_needed(&self) -> bool {
        self.rejoin_needed
    }

    pub fn request_rejoin(&mut self) {
        self.rejoin_needed = true;
    }

    fn request_timeout(&self) -> Duration {
        self.cluster.config().request_timeout
    }

    /// Forget the member id and generation: the next join starts afresh.
    fn reset(&mut self) {
        self.member_id.clear();
        self.generation = -1;
        self.rejoin_needed = true;
    }

    /// The coordinator's connection, found with FindCoordinator.
    async fn coordinator(&mut self) -> Result<Arc<Connection>, ClientError> {
        if let Some(c) = self.coordinator.as_ref().filter(|c| c.is_usable()) {
            return Ok(c.clone());
        }
        let c = find_coordinator(&self.env, &self.cluster, &self.settings.group_id, self.retry_backoff).await?;
        self.coordinator = Some(c.clone());
        Ok(c)
    }

    /// Send to the coordinator; a lost connection forgets it.
    async fn send<R: kafka_protocol::protocol::Request>(
        &mut self,
        build: impl FnOnce(i16) -> R,
        timeout: Duration,
    ) -> Result<R::Response, ClientError> {
        let conn = self.coordinator().await?;
        let version = conn.version::<R>()?;
        let r = conn.request(&build(version), version, timeout).await;
        if r.is_err() {
            self.coordinator = None;
        }
        r
    }

    /// Join (and sync): returns this member's new assignment. Retries what
    /// the protocol says to retry — MEMBER_ID_REQUIRED, a rebalance under way,
    /// a lost or moved coordinator, a fenced generation — until
    /// `max.poll.interval.ms` runs out.
    pub async fn join(
        &mut self,
        topics: &[String],
        owned: &[TopicPartition],
    ) -> Result<Vec<TopicPartition>, ClientError> {
        let deadline = self.env.elapsed() + Duration::from_millis(self.settings.max_poll_interval_ms.max(0) as u64);
        loop {
            let err = match self.join_once(topics, owned).await {
                Ok(Some(assignment)) => {
                    self.rejoin_needed = false;
                    self.last_heartbeat = self.env.elapsed();
                    return Ok(assignment);
                }
                Ok(None) => continue,
                Err(e) => e,
            };
            match err.broker_error() {
                Some(ResponseError::UnknownMemberId | ResponseError::IllegalGeneration) => self.reset(),
                Some(e) if is_coordinator_error(e) => self.coordinator = None,
                Some(ResponseError::RebalanceInProgress) => {}
                _ if err.is_retriable() => {}
                _ => return Err(err),
            }
            if self.env.elapsed() >= deadline {
                return Err(err);
            }
            self.env.sleep(self.retry_backoff).await;
        }
    }

    /// One JoinGroup and SyncGroup. `Ok(None)`: join again at once (the
    /// broker handed out a member id).
    async fn join_once(
        &mut self,
        topics: &[String],
        owned: &[TopicPartition],
    ) -> Result<Option<Vec<TopicPartition>>, ClientError> {
        let metadata = assignor::encode_subscription(topics, owned);
        let settings = self.settings.clone();
        let member_id = self.member_id.clone();
        let timeout = self.request_timeout() + Duration::from_millis(settings.max_poll_interval_ms.max(0) as u64);
        let resp = self
            .send(
                |_| {
                    JoinGroupRequest::default()
                        .with_group_id(GroupId(s(&settings.group_id)))
                        .with_session_timeout_ms(settings.session_timeout_ms)
                        .with_rebalance_timeout_ms(settings.max_poll_interval_ms)
                        .with_member_id(s(&member_id))
                        .with_group_instance_id(settings.group_instance_id.as_deref().map(s))
                        .with_protocol_type(s("consumer"))
                        .with_protocols(
                            settings
                                .assignors
                                .iter()
                                .map(|a| {
                                    JoinGroupRequestProtocol::default()
                                        .with_name(s(a.name()))
                                        .with_metadata(metadata.clone())
                                })
                                .collect(),
                        )
                },
                timeout,
            )
            .await?;
        if resp.error_code == ResponseError::MemberIdRequired.code() {
            self.member_id = resp.member_id.to_string();
            return Ok(None);
        }
        if let Some(e) = code_error("join", resp.error_code) {
            return Err(ClientError::Broker {
                context: format!("join group {}", settings.group_id),
                error: e,
                message: None,
            });
        }
        self.member_id = resp.member_id.to_string();
        self.generation = resp.generation_id;
        let protocol = Assignor::from_name(resp.protocol_name.as_deref().unwrap_or(""))?;
        self.protocol = Some(protocol);
        let assignments = if resp.leader == resp.member_id && !resp.skip_assignment {
            let members = resp
                .members
                .iter()
                .map(|m| assignor::decode_subscription(&m.member_id, m.metadata.clone()))
                .collect::<Result<Vec<MemberSubscription>, _>>()?;
            self.leader_assignment(protocol, &members).await?
        } else {
            Vec::new()
        };
        tracing::debug!(group = %settings.group_id, member = %self.member_id, generation = self.generation, protocol = protocol.name(), leader = %resp.leader, "joined");
        let (generation, member_id) = (self.generation, self.member_id.clone());
        let sync = self
            .send(
                |_| {
                    SyncGroupRequest::default()
                        .with_group_id(GroupId(s(&settings.group_id)))
                        .with_generation_id(generation)
                        .with_member_id(s(&member_id))
                        .with_group_instance_id(settings.group_instance_id.as_deref().map(s))
                        .with_protocol_type(Some(s("consumer")))
                        .with_protocol_name(Some(s(protocol.name())))
                        .with_assignments(assignments)
                },
                timeout,
            )
            .await?;
        if let Some(e) = code_error("sync", sync.error_code) {
            return Err(ClientError::Broker {
                context: format!("sync group {}", settings.group_id),
                error: e,
                message: None,
            });
        }
        Ok(Some(assignor::decode_assignment(sync.assignment)?))
    }

    /// The leader's job: every member's partitions of the topics any of them subscribes to.
    async fn leader_assignment(
        &mut self,
        protocol: Assignor,
        members: &[MemberSubscription],
    ) -> Result<Vec<SyncGroupRequestAssignment>, ClientError> {
        let mut topics: Vec<String> = members.iter().flat_map(|m| m.topics.iter().cloned()).collect();
        topics.sort();
        topics.dedup();
        let meta = self.cluster.refresh(Some(&topics), false).await?;
        let counts: BTreeMap<String, i32> = meta
            .into_iter()
            .filter(|(_, t)| t.error_code == 0 && !t.partitions.is_empty())
            .map(|(name, t)| (name, t.num_partitions()))
            .collect();
        let plan = assignor::assign(protocol, members, &counts);
        Ok(plan
            .into_iter()
            .map(|(member, parts)| {
                SyncGroupRequestAssignment::default()
                    .with_member_id(s(&member))
                    .with_assignment(assignor::encode_assignment(&parts))
            })
            .collect())
    }

    /// Heartbeat if `heartbeat.interval.ms` has passed. A rebalance or a
    /// fenced membership marks the member to rejoin; nothing else is fatal
    /// here (the next heartbeat tries again).
    pub async fn heartbeat_if_due(&mut self) -> Result<(), ClientError> {
        let now = self.env.elapsed();
        if self.rejoin_needed || now < self.last_heartbeat + Duration::from_millis(self.settings.heartbeat_interval_ms)
        {
            return Ok(());
        }
        self.last_heartbeat = now;
        let (group, member, generation) = (self.settings.group_id.clone(), self.member_id.clone(), self.generation);
        let instance = self.settings.group_instance_id.clone();
        let timeout = self.request_timeout();
        let resp = match self
            .send(
                |_| {
                    HeartbeatRequest::default()
                        .with_group_id(GroupId(s(&group)))
                        .with_generation_id(generation)
                        .with_member_id(s(&member))
                        .with_group_instance_id(instance.as_deref().map(s))
                },
                timeout,
            )
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_retriable() => return Ok(()),
            Err(e) => return Err(e),
        };
        match code_error("heartbeat", resp.error_code) {
            None => Ok(()),
            Some(ResponseError::RebalanceInProgress) => {
                self.rejoin_needed = true;
                Ok(())
            }
            Some(ResponseError::UnknownMemberId | ResponseError::IllegalGeneration) => {
                self.reset();
                Ok(())
            }
            Some(e) if is_coordinator_error(e) => {
                self.coordinator = None;
                Ok(())
            }
            Some(ResponseError::FencedInstanceId) => Err(ClientError::Broker {
                context: format!("heartbeat to group {group}"),
                error: ResponseError::FencedInstanceId,
                message: None,
            }),
            Some(_) => Ok(()),
        }
    }

    /// OffsetCommit of `offsets` (the next offset to read, per partition)
    /// with this member's generation. A rebalance or fencing fails the commit
    /// and marks the member to rejoin, as Kafka's CommitFailedException does.
    pub async fn commit(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<(), ClientError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let request = self.commit_request(offsets);
        let deadline = self.env.elapsed() + self.request_timeout();
        loop {
            let timeout = self.request_timeout();
            let req = request.clone();
            let result = self.send(|_| req, timeout).await;
            let Err(err) = self.commit_outcome(result) else { return Ok(()) };
            match err.broker_error() {
                Some(
                    ResponseError::RebalanceInProgress
                    | ResponseError::UnknownMemberId
                    | ResponseError::IllegalGeneration,
                ) => return Err(err),
                Some(e) if is_coordinator_error(e) => {}
                _ if err.is_retriable() && !err.maybe_applied() => {}
                _ => return Err(err),
            }
            if self.env.elapsed() >= deadline {
                return Err(err);
            }
            self.env.sleep(self.retry_backoff).await;
        }
    }

    /// Send an OffsetCommit of `offsets` once, without waiting for it (Kafka's
    /// `commitAsync`: no retry, since a later commit supersedes it). Hand
    /// the answer to [`Self::commit_outcome`] when it arrives.
    pub async fn commit_async(
        &mut self,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<PendingCommit, ClientError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if offsets.is_empty() {
            let _ = tx.send(Ok(OffsetCommitResponse::default()));
            return Ok(PendingCommit { rx });
        }
        let request = self.commit_request(offsets);
        let conn = self.coordinator().await?;
        let version = conn.version::<OffsetCommitRequest>()?;
        let timeout = self.request_timeout();
        crate::io::spawn(&self.env, "consumer-async-commit", async move {
            let _ = tx.send(conn.request(&request, version, timeout).await);
        });
        Ok(PendingCommit { rx })
    }

    fn commit_request(&self, offsets: &BTreeMap<TopicPartition, i64>) -> OffsetCommitRequest {
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, off) in offsets {
            by_topic.entry(&tp.topic).or_default().push(
                OffsetCommitRequestPartition::default().with_partition_index(tp.partition).with_committed_offset(*off),
            );
        }
        let topics: Vec<OffsetCommitRequestTopic> = by_topic
            .into_iter()
            .map(|(t, ps)| OffsetCommitRequestTopic::default().with_name(TopicName(s(t))).with_partitions(ps))
            .collect();
        OffsetCommitRequest::default()
            .with_group_id(GroupId(s(&self.settings.group_id)))
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(s(&self.member_id))
            .with_group_instance_id(self.settings.group_instance_id.as_deref().map(s))
            .with_topics(topics)
    }

    /// What an OffsetCommit's answer means for this member: a rebalance under
    /// way marks it to rejoin, a stale generation or member id resets it
    /// (Kafka's CommitFailedException), a moved coordinator is forgotten.
    pub fn commit_outcome(&mut self, result: Result<OffsetCommitResponse, ClientError>) -> Result<(), ClientError> {
        let err = match result {
            Ok(r) => match r.topics.iter().flat_map(|t| &t.partitions).find(|p| p.error_code != 0) {
                None => return Ok(()),
                Some(p) => ClientError::broker(
                    format!("commit offsets of group {}", self.settings.group_id),
                    p.error_code,
                    None,
                ),
            },
            Err(e) => {
                self.coordinator = None;
                e
            }
        };
        match err.broker_error() {
            Some(ResponseError::RebalanceInProgress) => self.rejoin_needed = true,
            Some(ResponseError::UnknownMemberId | ResponseError::IllegalGeneration) => self.reset(),
            Some(e) if is_coordinator_error(e) => self.coordinator = None,
            _ => {}
        }
        Err(err)
    }

    /// The group's committed offsets of `tps` (absent: none committed).
    pub async fn committed(&mut self, tps: &[TopicPartition]) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in tps {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let topics: Vec<OffsetFetchRequestTopic> = by_topic
            .into_iter()
            .map(|(t, ps)| OffsetFetchRequestTopic::default().with_name(TopicName(s(t))).with_partition_indexes(ps))
            .collect();
        let group = self.settings.group_id.clone();
        let deadline = self.env.elapsed() + self.request_timeout();
        loop {
            let timeout = self.request_timeout();
            let topics = topics.clone();
            let result = self
                .send(
                    |_| OffsetFetchRequest::default().with_group_id(GroupId(s(&group))).with_topics(Some(topics)),
                    timeout,
                )
                .await;
            let err = match result {
                Ok(r) if r.error_code == 0 => {
                    let mut out = BTreeMap::new();
                    let mut failed = None;
                    for t in r.topics {
                        for p in t.partitions {
                            if p.error_code != 0 {
                                failed.get_or_insert(p.error_code);
                            } else if p.committed_offset >= 0 {
                                out.insert(
                                    TopicPartition::new(t.name.0.to_string(), p.partition_index),
                                    p.committed_offset,
                                );
                            }
                        }
                    }
                    match failed {
                        None => return Ok(out),
                        Some(code) => ClientError::broker(format!("fetch offsets of group {group}"), code, None),
                    }
                }
                Ok(r) => ClientError::broker(format!("fetch offsets of group {group}"), r.error_code, None),
                Err(e) => e,
            };
            if let Some(e) = err.broker_error().filter(|e| is_coordinator_error(*e)) {
                tracing::debug!(error = ?e, "coordinator moved");
                self.coordinator = None;
            } else if !err.is_retriable() {
                return Err(err);
            }
            if self.env.elapsed() >= deadline {
                return Err(err);
            }
            self.env.sleep(self.retry_backoff).await;
        }
    }

    /// LeaveGroup, best effort: a member that cannot say goodbye times out
    /// of the group anyway. A static member does not leave (KIP-345): its
    /// return must not cause a rebalance.
    pub async fn leave(&mut self) {
        if self.member_id.is_empty() || self.settings.group_instance_id.is_some() {
            return;
        }
        let (group, member) = (self.settings.group_id.clone(), self.member_id.clone());
        let timeout = self.request_timeout();
        let result = self
            .send(
                |v| {
                    let r = LeaveGroupRequest::default().with_group_id(GroupId(s(&group)));
                    if v >= 3 {
                        r.with_members(vec![MemberIdentity::default().with_member_id(s(&member))])
                    } else {
                        r.with_member_id(s(&member))
                    }
                },
                timeout,
            )
            .await;
        if let Err(e) = result {
            tracing::debug!(group = %group, error = %e, "LeaveGroup failed; the session will time out");
        }
        self.reset();
    }
}

/// An OffsetCommit sent by [`Membership::commit_async`], not yet answered.
pub struct PendingCommit {
    rx: tokio::sync::oneshot::Receiver<Result<OffsetCommitResponse, ClientError>>,
}

impl PendingCommit {
    /// The answer if it has arrived; a task that died without one (the
    /// client shutting down) counts as a lost connection.
    pub fn try_take(&mut self) -> Option<Result<OffsetCommitResponse, ClientError>> {
        use tokio::sync::oneshot::error::TryRecvError;
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Closed) => Some(Err(ClientError::Protocol("the asynchronous commit was dropped".into()))),
        }
    }
}
