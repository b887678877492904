//! The consumer: a position per partition, Fetch long-polls against
//! partition leaders, and ListOffsets for seeking to the beginning or end and
//! for `auto.offset.reset`.
//!
//! Partitions are either assigned by hand (`assign`) or, with a `group.id`,
//! by the group (`subscribe` to topics or a pattern): `poll` then also keeps
//! the membership alive — heartbeats, rebalances with the
//! [`RebalanceListener`] callbacks, resuming each newly assigned partition at
//! its committed offset (else `auto.offset.reset`), and auto-commit. Heartbeats
//! are sent from `poll`, so a consumer that stops polling for
//! `session.timeout.ms` leaves the group, as with Kafka's consumers before
//! KIP-62.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::batch;
use super::cluster::{Cluster, ClusterConfig};
use super::group::{GroupSettings, Membership, PendingCommit};
use super::{ClientError, Header, TopicPartition};
use crate::io::Env;

/// ListOffsets timestamp asking for the log start offset.
const EARLIEST_TIMESTAMP: i64 = -2;
/// ListOffsets timestamp asking for the log end offset.
const LATEST_TIMESTAMP: i64 = -1;

/// A record a poll returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// `auto.offset.reset`: where to start when the position is unknown or out
/// of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoOffsetReset {
    Earliest,
    #[default]
    Latest,
    /// Fail instead of guessing.
    None,
}

impl FromStr for AutoOffsetReset {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self, ClientError> {
        match s {
            "earliest" => Ok(AutoOffsetReset::Earliest),
            "latest" => Ok(AutoOffsetReset::Latest),
            "none" => Ok(AutoOffsetReset::None),
            other => Err(ClientError::InvalidArgument(format!(
                "auto.offset.reset {other:?} is not earliest, latest or none"
            ))),
        }
    }
}

/// Consumer settings, with Kafka's names and defaults.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub bootstrap_servers: Vec<String>,
    pub client_id: String,
    pub fetch_min_bytes: i32,
    pub fetch_max_wait_ms: u64,
    pub fetch_max_bytes: i32,
    pub max_partition_fetch_bytes: i32,
    pub auto_offset_reset: AutoOffsetReset,
    pub request_timeout_ms: u64,
    pub retry_backoff_ms: u64,
    /// `check.crcs`. The batch decoder verifies CRC-32C on every batch it
    /// decodes, so corrupt data is always reported; `false` cannot skip it.
    pub check_crcs: bool,
    /// `group.id` and the group settings; `None`: no group (assign only, no commits).
    pub group: Option<GroupSettings>,
    /// `enable.auto.commit`: commit the positions every
    /// `auto.commit.interval.ms` during `poll`, before a rebalance revokes
    /// partitions, and on `unsubscribe`.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            bootstrap_servers: vec!["127.0.0.1:9092".into()],
            client_id: "faultline-consumer".into(),
            fetch_min_bytes: 1,
            fetch_max_wait_ms: 500,
            fetch_max_bytes: 52_428_800,
            max_partition_fetch_bytes: 1_048_576,
            auto_offset_reset: AutoOffsetReset::Latest,
            request_timeout_ms: 30_000,
            retry_backoff_ms: 100,
            check_crcs: true,
            group: None,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
        }
    }
}

impl ConsumerConfig {
    /// Defaults with the given bootstrap servers.
    pub fn new(bootstrap_servers: Vec<String>) -> Self {
        ConsumerConfig { bootstrap_servers, ..ConsumerConfig::default() }
    }
}

/// Told of the partitions a rebalance takes away and gives (Kafka's
/// `ConsumerRebalanceListener`). Revocation comes first, after the
/// auto-commit of the revoked partitions' positions.
pub trait RebalanceListener: Send + Sync {
    fn on_partitions_revoked(&mut self, _partitions: &[TopicPartition]) {}
    fn on_partitions_assigned(&mut self, _partitions: &[TopicPartition]) {}
    /// After every completed rebalance: this member's id, the generation it
    /// joined and everything it owns in it (whether or not anything changed).
    fn on_generation(&mut self, _member_id: &str, _generation: i32, _owned: &[TopicPartition]) {}
}

/// What a group consumer subscribed to.
enum Subscription {
    Topics(Vec<String>),
    /// Matched against every topic's whole name, as Java's `Pattern.matches`.
    Pattern(regex_automata::meta::Regex),
}

struct GroupCtx {
    membership: Membership,
    subscription: Option<Subscription>,
    listener: Option<Box<dyn RebalanceListener>>,
    last_auto_commit: Duration,
    /// Commits sent by `commit_async`, oldest first, with their callbacks.
    async_commits: std::collections::VecDeque<(PendingCommit, Option<CommitCallback>)>,
}

/// Told how an asynchronous commit ended (Kafka's `OffsetCommitCallback`).
pub type CommitCallback = Box<dyn FnOnce(Result<(), ClientError>) + Send + Sync>;

/// Most asynchronous commits awaiting their answer; one more is refused
/// until the oldest is answered.
pub const MAX_ASYNC_COMMITS: usize = 64;

/// A Kafka consumer: partitions assigned by hand or by its group.
pub struct Consumer {
    env: Env,
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    /// Assigned partitions and their positions (`None`: not yet known).
    positions: BTreeMap<TopicPartition, Option<i64>>,
    group: Option<GroupCtx>,
}

impl Consumer {
    pub fn new(env: Env, config: ConsumerConfig) -> Result<Consumer, ClientError> {
        if config.fetch_max_bytes <= 0 || config.max_partition_fetch_bytes <= 0 || config.fetch_min_bytes < 0 {
            return Err(ClientError::InvalidArgument("fetch sizes must be positive".into()));
        }
        let cluster = Cluster::new(
            env.clone(),
            ClusterConfig {
                bootstrap_servers: config.bootstrap_servers.clone(),
                client_id: config.client_id.clone(),
                request_timeout: Duration::from_millis(config.request_timeout_ms),
            },
        )?;
        let group = match &config.group {
            Some(settings) => {
                if settings.group_id.is_empty() {
                    return Err(ClientError::InvalidArgument("group.id is empty".into()));
                }
                if settings.assignors.is_empty() {
                    return Err(ClientError::InvalidArgument("partition.assignment.strategy is empty".into()));
                }
                let backoff = Duration::from_millis(config.retry_backoff_ms);
                let membership = Membership::new(env.clone(), cluster.clone(), settings.clone(), backoff);
                Some(GroupCtx {
                    membership,
                    subscription: None,
                    listener: None,
                    last_auto_commit: env.elapsed(),
                    async_commits: Default::default(),
                })
            }
            None => None,
        };
        Ok(Consumer { env, cluster, config, positions: BTreeMap::new(), group })
    }

    fn group_mut(&mut self) -> Result<&mut GroupCtx, ClientError> {
        self.group.as_mut().ok_or_else(|| ClientError::InvalidArgument("no group.id configured".into()))
    }

    /// Join the group and consume `topics`, as it assigns them.
    pub fn subscribe(&mut self, topics: Vec<String>) -> Result<(), ClientError> {
        if topics.is_empty() {
            return Err(ClientError::InvalidArgument("subscribe to no topics".into()));
        }
        let g = self.group_mut()?;
        g.subscription = Some(Subscription::Topics(topics));
        g.membership.request_rejoin();
        Ok(())
    }

    /// Join the group and consume every topic whose name matches `pattern`
    /// (checked again at each rebalance).
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<(), ClientError> {
        let re = regex_automata::meta::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| ClientError::InvalidArgument(format!("bad topic pattern {pattern:?}: {e}")))?;
        let g = self.group_mut()?;
        g.subscription = Some(Subscription::Pattern(re));
        g.membership.request_rejoin();
        Ok(())
    }

    pub fn set_rebalance_listener(&mut self, listener: Box<dyn RebalanceListener>) -> Result<(), ClientError> {
        self.group_mut()?.listener = Some(listener);
        Ok(())
    }

    /// (member id, generation) in the group, once joined.
    pub fn group_generation(&self) -> Option<(String, i32)> {
        let g = self.group.as_ref()?;
        (g.membership.generation() >= 0).then(|| (g.membership.member_id().to_string(), g.membership.generation()))
    }

    /// Commit the current positions of every assigned partition.
    pub async fn commit_sync(&mut self) -> Result<(), ClientError> {
        self.complete_async_commits();
        let offsets = self.current_offsets(None);
        self.commit_offsets(&offsets).await
    }

    /// Commit the current positions without waiting (Kafka's
    /// `commitAsync`): sent once, never retried, and `callback` is called
    /// from a later `poll` (or commit) with the outcome, in the order the
    /// commits were made. A failure that means a rebalance marks the member
    /// to rejoin, as a synchronous commit's does.
    pub async fn commit_async(&mut self, callback: Option<CommitCallback>) -> Result<(), ClientError> {
        self.complete_async_commits();
        let offsets = self.current_offsets(None);
        let g = self.group_mut()?;
        if g.async_commits.len() >= MAX_ASYNC_COMMITS {
            return Err(ClientError::InvalidArgument(format!(
                "{MAX_ASYNC_COMMITS} asynchronous commits await their answers; poll before committing again"
            )));
        }
        let pending = g.membership.commit_async(&offsets).await?;
        g.async_commits.push_back((pending, callback));
        Ok(())
    }

    /// Deliver the answers of asynchronous commits that have arrived, in
    /// order; stops at the first still in flight.
    fn complete_async_commits(&mut self) {
        let Some(g) = self.group.as_mut() else { return };
        while let Some((pending, _)) = g.async_commits.front_mut() {
            let Some(answer) = pending.try_take() else { break };
            let (_, callback) = g.async_commits.pop_front().expect("front exists");
            let outcome = g.membership.commit_outcome(answer);
            if let Err(e) = &outcome {
                tracing::debug!(error = %e, "asynchronous commit failed");
            }
            if let Some(cb) = callback {
                cb(outcome);
            }
        }
    }

    /// Commit `offsets` (the next offset to consume, per partition). A
    /// group member commits with its generation: after a rebalance it has
    /// not joined yet the commit fails (REBALANCE_IN_PROGRESS,
    /// ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID) and the next poll rejoins.
    pub async fn commit_offsets(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<(), ClientError> {
        let g = self.group_mut()?;
        g.membership.commit(offsets).await
    }

    /// The group's committed offsets of `partitions` (absent: none).
    pub async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        self.group_mut()?.membership.committed(partitions).await
    }

    /// The known positions of the assigned partitions: what `commit_sync` commits.
    pub fn consumed_offsets(&self) -> BTreeMap<TopicPartition, i64> {
        self.current_offsets(None)
    }

    /// Positions of `only` (all assigned if `None`) that are known.
    fn current_offsets(&self, only: Option<&[TopicPartition]>) -> BTreeMap<TopicPartition, i64> {
        self.positions
            .iter()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .filter_map(|(tp, p)| p.map(|p| (tp.clone(), p)))
            .collect()
    }

    fn subscribed(&self) -> bool {
        self.group.as_ref().is_some_and(|g| g.subscription.is_some())
    }

    /// Auto-commit `only` (all if `None`), logging a failure: the next commit
    /// or the committed offsets' reader copes with an older offset.
    async fn auto_commit(&mut self, only: Option<&[TopicPartition]>) {
        if !self.config.enable_auto_commit {
            return;
        }
        let offsets = self.current_offsets(only);
        let now = self.env.elapsed();
        let Some(g) = self.group.as_mut() else { return };
        g.last_auto_commit = now;
        if let Err(e) = g.membership.commit(&offsets).await {
            tracing::info!(error = %e, "auto-commit failed");
        }
    }

    /// Heartbeat, rebalance and auto-commit as due. Called by `poll`.
    async fn maintain_group(&mut self) -> Result<(), ClientError> {
        if !self.subscribed() {
            return Ok(());
        }
        let g = self.group.as_mut().expect("subscribed");
        g.membership.heartbeat_if_due().await?;
        if g.membership.rejoin_needed() {
            self.rebalance().await?;
        }
        let due = self.group.as_ref().is_some_and(|g| {
            self.env.elapsed() >= g.last_auto_commit + Duration::from_millis(self.config.auto_commit_interval_ms)
        });
        if due {
            self.auto_commit(None).await;
        }
        Ok(())
    }

    /// The topics the subscription names now.
    async fn subscribed_topics(&self) -> Result<Vec<String>, ClientError> {
        match self.group.as_ref().and_then(|g| g.subscription.as_ref()) {
            Some(Subscription::Topics(t)) => Ok(t.clone()),
            Some(Subscription::Pattern(re)) => {
                let all = self.cluster.refresh(None, false).await?;
                Ok(all
                    .into_values()
                    .filter(|t| !t.is_internal && t.error_code == 0 && re.is_match(&t.name))
                    .map(|t| t.name)
                    .collect())
            }
            None => Ok(Vec::new()),
        }
    }

    /// Rejoin the group and take up the assignment it gives. Eager
    /// assignors give everything up first; cooperative ones give up only the
    /// partitions that move, and then rejoin once more so the group can hand
    /// those out.
    async fn rebalance(&mut self) -> Result<(), ClientError> {
        let topics = self.subscribed_topics().await?;
        let cooperative = self.group.as_ref().is_some_and(|g| g.membership.settings().cooperative());
        if !cooperative && !self.positions.is_empty() {
            self.revoke(None).await;
        }
        let owned: Vec<TopicPartition> = self.positions.keys().cloned().collect();
        let g = self.group.as_mut().expect("subscribed");
        let assignment = g.membership.join(&topics, &owned).await?;
        let new: std::collections::BTreeSet<TopicPartition> = assignment.into_iter().collect();
        let revoked: Vec<TopicPartition> = owned.iter().filter(|tp| !new.contains(*tp)).cloned().collect();
        let added: Vec<TopicPartition> = new.iter().filter(|tp| !self.positions.contains_key(*tp)).cloned().collect();
        if !revoked.is_empty() {
            self.revoke(Some(&revoked)).await;
            self.group.as_mut().expect("subscribed").membership.request_rejoin();
        }
        if !added.is_empty() {
            let committed = self.group.as_mut().expect("subscribed").membership.committed(&added).await?;
            for tp in &added {
                self.positions.insert(tp.clone(), committed.get(tp).copied());
            }
            if let Some(l) = self.group.as_mut().and_then(|g| g.listener.as_mut()) {
                l.on_partitions_assigned(&added);
            }
        }
        let owned: Vec<TopicPartition> = self.positions.keys().cloned().collect();
        let g = self.group.as_mut().expect("subscribed");
        let (member, generation) = (g.membership.member_id().to_string(), g.membership.generation());
        if let Some(l) = g.listener.as_mut() {
            l.on_generation(&member, generation, &owned);
        }
        tracing::debug!(
            member = g.membership.member_id(),
            generation = g.membership.generation(),
            assigned = self.positions.len(),
            "rebalanced"
        );
        Ok(())
    }

    /// Give up `only` (all if `None`): auto-commit their positions, tell the listener, forget them.
    async fn revoke(&mut self, only: Option<&[TopicPartition]>) {
        let gone: Vec<TopicPartition> = match only {
            Some(o) => o.to_vec(),
            None => self.positions.keys().cloned().collect(),
        };
        self.auto_commit(Some(&gone)).await;
        if let Some(l) = self.group.as_mut().and_then(|g| g.listener.as_mut()) {
            l.on_partitions_revoked(&gone);
        }
        for tp in &gone {
            self.positions.remove(tp);
        }
    }

    /// Leave the group: auto-commit, revoke everything, LeaveGroup.
    pub async fn unsubscribe(&mut self) {
        if !self.subscribed() {
            return;
        }
        if !self.positions.is_empty() {
            self.revoke(None).await;
        }
        if let Some(g) = self.group.as_mut() {
            g.membership.leave().await;
            g.subscription = None;
        }
    }

    /// Replace the assignment. Partitions kept keep their positions.
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) {
        let old = std::mem::take(&mut self.positions);
        self.positions = partitions.into_iter().map(|tp| (tp.clone(), old.get(&tp).copied().flatten())).collect();
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    fn check_assigned(&self, tp: &TopicPartition) -> Result<(), ClientError> {
        if self.positions.contains_key(tp) {
            Ok(())
        } else {
            Err(ClientError::InvalidArgument(format!("partition {tp} is not assigned")))
        }
    }

    /// Fetch from `offset` next.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<(), ClientError> {
        self.check_assigned(tp)?;
        if offset < 0 {
            return Err(ClientError::InvalidArgument(format!("seek offset {offset} is negative")));
        }
        self.positions.insert(tp.clone(), Some(offset));
        Ok(())
    }

    /// Move to the log start of `partitions` (all assigned if empty).
    pub async fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<(), ClientError> {
        self.seek_to(partitions, EARLIEST_TIMESTAMP).await
    }

    /// Move to the log end of `partitions` (all assigned if empty).
    pub async fn seek_to_end(&mut self, partitions: &[TopicPartition]) -> Result<(), ClientError> {
        self.seek_to(partitions, LATEST_TIMESTAMP).await
    }

    async fn seek_to(&mut self, partitions: &[TopicPartition], timestamp: i64) -> Result<(), ClientError> {
        let tps = if partitions.is_empty() { self.assignment() } else { partitions.to_vec() };
        for tp in &tps {
            self.check_assigned(tp)?;
        }
        for (tp, offset) in self.list_offsets(&tps, timestamp).await? {
            self.positions.insert(tp, Some(offset));
        }
        Ok(())
    }

    /// The offset the next record of `tp` will have, resolving an unknown
    /// position with `auto.offset.reset`.
    pub async fn position(&mut self, tp: &TopicPartition) -> Result<i64, ClientError> {
        self.check_assigned(tp)?;
        if let Some(Some(p)) = self.positions.get(tp) {
            return Ok(*p);
        }
        self.reset_positions(std::slice::from_ref(tp)).await?;
        Ok(self.positions[tp].expect("reset sets the position"))
    }

    /// Log start offsets.
    pub async fn beginning_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        self.list_offsets(partitions, EARLIEST_TIMESTAMP).await
    }

    /// Log end offsets (the high watermark: what a consumer can read up to).
    pub async fn end_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        self.list_offsets(partitions, LATEST_TIMESTAMP).await
    }

    async fn reset_positions(&mut self, tps: &[TopicPartition]) -> Result<(), ClientError> {
        let timestamp = match self.config.auto_offset_reset {
            AutoOffsetReset::Earliest => EARLIEST_TIMESTAMP,
            AutoOffsetReset::Latest => LATEST_TIMESTAMP,
            AutoOffsetReset::None => return Err(ClientError::NoOffsetForPartition(tps[0].clone())),
        };
        for (tp, offset) in self.list_offsets(tps, timestamp).await? {
            self.positions.insert(tp, Some(offset));
        }
        Ok(())
    }

    /// ListOffsets for `tps` at `timestamp`, retrying retriable errors until
    /// `request.timeout.ms` runs out.
    async fn list_offsets(
        &self,
        tps: &[TopicPartition],
        timestamp: i64,
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        let deadline = self.env.elapsed() + Duration::from_millis(self.config.request_timeout_ms);
        let mut out = BTreeMap::new();
        let mut todo: Vec<TopicPartition> = tps.to_vec();
        loop {
            let mut last_err = None;
            let mut by_leader: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
            for tp in std::mem::take(&mut todo) {
                match self.cluster.leader(&tp, false).await {
                    Ok(l) => by_leader.entry(l).or_default().push(tp),
                    Err(e) if e.is_retriable() => {
                        last_err = Some(e);
                        todo.push(tp);
                    }
                    Err(e) => return Err(e),
                }
            }
            // `todo` now holds only partitions without a leader.
            let mut retry = std::mem::take(&mut todo);
            for (leader, parts) in by_leader {
                match self.list_offsets_at(leader, &parts, timestamp).await {
                    Ok(results) => {
                        for (tp, r) in results {
                            match r {
                                Ok(offset) => {
                                    out.insert(tp, offset);
                                }
                                Err(e) if e.is_retriable() => {
                                    if e.invalidates_metadata() {
                                        self.cluster.invalidate(&tp.topic);
                                    }
                                    last_err = Some(e);
                                    retry.push(tp);
                                }
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    Err(e) if e.is_retriable() => {
                        for tp in &parts {
                            self.cluster.invalidate(&tp.topic);
                        }
                        last_err = Some(e);
                        retry.extend(parts);
                    }
                    Err(e) => return Err(e),
                }
            }
            if retry.is_empty() {
                return Ok(out);
            }
            if self.env.elapsed() >= deadline {
                return Err(last_err.unwrap_or_else(|| ClientError::NoBroker("ListOffsets found no leader".into())));
            }
            self.env.sleep(Duration::from_millis(self.config.retry_backoff_ms)).await;
            todo = retry;
        }
    }

    async fn list_offsets_at(
        &self,
        leader: i32,
        tps: &[TopicPartition],
        timestamp: i64,
    ) -> Result<Vec<(TopicPartition, Result<i64, ClientError>)>, ClientError> {
        let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
        for tp in tps {
            topics
                .entry(&tp.topic)
                .or_default()
                .push(ListOffsetsPartition::default().with_partition_index(tp.partition).with_timestamp(timestamp));
        }
        let topics: Vec<ListOffsetsTopic> = topics
            .into_iter()
            .map(|(t, ps)| ListOffsetsTopic::default().with_name(topic_name(t)).with_partitions(ps))
            .collect();
        let conn = self.cluster.connection_to_node(leader).await?;
        let resp = self
            .cluster
            .send(&conn, |_| ListOffsetsRequest::default().with_replica_id((-1).into()).with_topics(topics))
            .await?;
        let mut out = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                let r = if p.error_code == 0 {
                    Ok(p.offset)
                } else {
                    Err(ClientError::broker(format!("list offsets of {tp}"), p.error_code, None))
                };
                out.push((tp, r));
            }
        }
        for tp in tps {
            if !out.iter().any(|(t, _)| t == tp) {
                return Err(ClientError::Protocol(format!("ListOffsets response has no answer for {tp}")));
            }
        }
        Ok(out)
    }

    /// Fetch records from the assigned partitions, waiting up to `timeout`
    /// for some to arrive. Returns records in offset order per partition.
    ///
    /// A partition whose fetched data fails its CRC check is not advanced;
    /// if no other partition returned records the poll fails with
    /// [`ClientError::CorruptRecord`], and polling again re-fetches it.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        if self.positions.is_empty() && !self.subscribed() {
            return Err(ClientError::InvalidArgument("poll with no partitions assigned".into()));
        }
        let deadline = self.env.elapsed() + timeout;
        self.complete_async_commits();
        loop {
            self.maintain_group().await?;
            if self.positions.is_empty() {
                // A member the group gave nothing (yet): keep heartbeating.
                let left = deadline.saturating_sub(self.env.elapsed());
                if left.is_zero() {
                    return Ok(Vec::new());
                }
                self.env.sleep(left.min(Duration::from_millis(self.config.retry_backoff_ms))).await;
                continue;
            }
            let unknown: Vec<TopicPartition> =
                self.positions.iter().filter(|(_, p)| p.is_none()).map(|(tp, _)| tp.clone()).collect();
            if !unknown.is_empty() {
                self.reset_positions(&unknown).await?;
            }
            let remaining = deadline.saturating_sub(self.env.elapsed());
            if self.env.buggify("consumer.empty-poll") {
                // A poll that ends with nothing, as one racing its timeout does.
                return Ok(Vec::new());
            }
            let (records, progressed) = self.fetch_once(remaining).await?;
            if !records.is_empty() || self.env.elapsed() >= deadline {
                return Ok(records);
            }
            if !progressed {
                let pause = Duration::from_millis(self.config.retry_backoff_ms)
                    .min(deadline.saturating_sub(self.env.elapsed()));
                self.env.sleep(pause).await;
            }
        }
    }

    /// One round of Fetch requests, one per leader. Returns the records and
    /// whether any fetch was answered (if none was, the caller backs off).
    async fn fetch_once(&mut self, max_wait: Duration) -> Result<(Vec<ConsumerRecord>, bool), ClientError> {
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        let assigned: Vec<(TopicPartition, i64)> =
            self.positions.iter().filter_map(|(tp, p)| p.map(|p| (tp.clone(), p))).collect();
        for (tp, pos) in assigned {
            match self.cluster.leader(&tp, false).await {
                Ok(l) => by_leader.entry(l).or_default().push((tp, pos)),
                Err(e) if e.is_retriable() => {}
                Err(e) => return Err(e),
            }
        }
        let max_wait = max_wait.min(Duration::from_millis(self.config.fetch_max_wait_ms));
        let fetches = by_leader.into_iter().map(|(leader, parts)| self.fetch_from(leader, parts, max_wait));
        let answers = futures::future::join_all(fetches).await;
        let mut records = Vec::new();
        let mut progressed = false;
        // The first error that is not retried here. It is raised only if no
        // records came back: positions of the partitions that did return
        // records have already moved past them, so raising it would throw
        // those records away (Kafka's consumer likewise hands out what it
        // has and raises on the next poll). The failing partition keeps its
        // position, so the next fetch meets the error again.
        let mut failure: Option<ClientError> = None;
        for answer in answers {
            let parts = match answer {
                Ok(parts) => parts,
                Err((e, parts)) if e.is_retriable() => {
                    for (tp, _) in parts {
                        self.cluster.invalidate(&tp.topic);
                    }
                    continue;
                }
                Err((e, _)) => {
                    failure.get_or_insert(e);
                    continue;
                }
            };
            progressed = true;
            for (tp, fetched_at, result) in parts {
                // A seek during the fetch wins over what the fetch returned.
                if self.positions.get(&tp) != Some(&Some(fetched_at)) {
                    continue;
                }
                match result {
                    Ok(decoded) => {
                        let next =
                            decoded.records.last().map(|r| r.offset + 1).into_iter().chain(decoded.next_offset).max();
                        if let Some(next) = next {
                            // A broker's answer is input, not an invariant: a
                            // position that would move back stays put, and the
                            // records go to the checkers, which judge them.
                            if next <= fetched_at {
                                tracing::debug!(%tp, fetched_at, next, "fetch did not advance the position");
                            }
                            self.positions.insert(tp.clone(), Some(next.max(fetched_at)));
                        }
                        records.extend(decoded.records);
                    }
                    Err(e) if e.broker_error() == Some(ResponseError::OffsetOutOfRange) => {
                        tracing::debug!(%tp, fetched_at, "fetch position out of range");
                        if self.config.auto_offset_reset == AutoOffsetReset::None {
                            failure.get_or_insert(e);
                            continue;
                        }
                        self.positions.insert(tp, None);
                    }
                    Err(e) if e.is_retriable() => {
                        if e.invalidates_metadata() {
                            self.cluster.invalidate(&tp.topic);
                        }
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
        }
        match failure {
            Some(e) if records.is_empty() => Err(e),
            _ => Ok((records, progressed)),
        }
    }

    /// Fetch `parts` from `leader`; per partition, the decoded records or
    /// the partition's error. A request-level failure returns the parts.
    #[allow(clippy::type_complexity)]
    async fn fetch_from(
        &self,
        leader: i32,
        parts: Vec<(TopicPartition, i64)>,
        max_wait: Duration,
    ) -> Result<
        Vec<(TopicPartition, i64, Result<batch::Decoded, ClientError>)>,
        (ClientError, Vec<(TopicPartition, i64)>),
    > {
        let conn = match self.cluster.connection_to_node(leader).await {
            Ok(c) => c,
            Err(e) => return Err((e, parts)),
        };
        let version = match conn.version::<FetchRequest>() {
            Ok(v) => v,
            Err(e) => return Err((e, parts)),
        };
        let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
        for (tp, pos) in &parts {
            topics.entry(&tp.topic).or_default().push(
                // The leader epoch as our metadata knows it: a deposed leader
                // (older epoch) refuses with FENCED_LEADER_EPOCH instead of
                // serving a log that may be truncated, and we refresh.
                FetchPartition::default()
                    .with_partition(tp.partition)
                    .with_current_leader_epoch(self.cluster.cached_leader_epoch(tp))
                    .with_fetch_offset(*pos)
                    .with_partition_max_bytes(self.config.max_partition_fetch_bytes),
            );
        }
        let req = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(max_wait.as_millis().min(i32::MAX as u128) as i32)
            .with_min_bytes(self.config.fetch_min_bytes)
            .with_max_bytes(self.config.fetch_max_bytes)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| FetchTopic::default().with_topic(topic_name(t)).with_partitions(ps))
                    .collect(),
            );
        // The broker may hold the request for max_wait before answering.
        let timeout = Duration::from_millis(self.config.request_timeout_ms) + max_wait;
        let resp = match conn.request(&req, version, timeout).await {
            Ok(r) => r,
            Err(e) => return Err((e, parts)),
        };
        if resp.error_code != 0 {
            return Err((ClientError::broker(format!("fetch from broker {leader}"), resp.error_code, None), parts));
        }
        let positions: BTreeMap<TopicPartition, i64> = parts.into_iter().collect();
        let mut out = Vec::new();
        for t in resp.responses {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                let tp = TopicPartition::new(topic.clone(), p.partition_index);
                let Some(&pos) = positions.get(&tp) else { continue };
                let result = if p.error_code != 0 {
                    Err(ClientError::broker(format!("fetch {tp} at offset {pos}"), p.error_code, None))
                } else {
                    batch::decode(p.records.unwrap_or_default(), &tp.topic, tp.partition, pos)
                };
                out.push((tp, pos, result));
            }
        }
        Ok(out)
    }

    /// Drop connections. Positions are not kept anywhere.
    pub fn close(self) {}
}

pub(crate) fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}
