//! The node core: Kafka's request logic as a plain state machine, with no
//! sockets, no runtime and no clock of its own (in the style of
//! quinn-proto).
//!
//! Inputs are a decoded request frame, a parked request to re-examine, or a
//! timer tick, each with the current [`Clock`] and a [`DiskScope`] proving the
//! caller pays for the disk work. Outputs are an [`Output`]: what to do with
//! the request (reply, stay silent, close, or park until a condition holds or
//! a deadline passes) and which partitions' high watermarks moved, so the
//! shell can wake requests parked on them. The async shell in
//! [`super::shell`] owns connections, waiting and timers; it never decides
//! anything Kafka-specific.
//!
//! A parked request is data, not a suspended future: [`Parked`] carries what
//! it watches — partitions' high watermarks, or a consumer group's signal for
//! a member waiting in a rebalance — with the version it saw, its deadline on
//! the monotonic clock, and what to re-check.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::group::{GroupSignal, Groups, OFFSETS_TOPIC};
use super::handlers::{self, fetch, group, produce};
use super::partition::Partition;
use super::producer_ids::ProducerIds;
use super::topics::Topics;
use crate::config::BrokerConfig;
use crate::io::{DiskScope, Fs};

/// The two clocks a node reads, sampled by the shell for each input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Wall-clock milliseconds since the Unix epoch (record timestamps,
    /// `segment.ms`, `flush.ms`); may jump.
    pub now_ms: i64,
    /// Monotonic time since the node started (deadlines).
    pub elapsed: Duration,
}

/// What the node asks of the shell about one request.
pub enum Step {
    /// Send this response frame (length prefix included).
    Reply(Bytes),
    /// Send nothing (acks=0 produce) and read the next request.
    Silent,
    /// Close the connection, logging why.
    Close(String),
    /// Wait, then hand the request back with [`Node::resume`].
    Park(Parked),
    /// Wait for another task (the cluster driver) to answer, then take the
    /// step it resolves to. The future does no I/O of its own.
    Await(futures::future::BoxFuture<'static, Step>),
}

/// The result of one input.
pub struct Output {
    pub step: Step,
    /// What moved: requests parked on it may now complete.
    pub wake: Vec<Wake>,
}

/// Something a parked request can wait on.
#[derive(Clone)]
pub enum Wake {
    /// A partition's high watermark (acks, long polls, offset commits).
    HighWatermark(Arc<Partition>),
    /// Answers ready for a consumer group's members parked in a rebalance.
    Group(Arc<GroupSignal>),
}

/// The shell's name for a [`Wake`], to key its waiters by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum WakeKey {
    Partition(String, i32),
    Group(String),
}

impl Wake {
    pub fn key(&self) -> WakeKey {
        match self {
            Wake::HighWatermark(p) => WakeKey::Partition(p.topic.clone(), p.index),
            Wake::Group(s) => WakeKey::Group(s.group.clone()),
        }
    }

    fn version(&self) -> u64 {
        match self {
            Wake::HighWatermark(p) => p.hw_version(),
            Wake::Group(s) => s.version(),
        }
    }

    fn same(&self, other: &Wake) -> bool {
        match (self, other) {
            (Wake::HighWatermark(a), Wake::HighWatermark(b)) => Arc::ptr_eq(a, b),
            (Wake::Group(a), Wake::Group(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Watch this, having seen its current version. Read the version before
    /// looking at the state it guards, so a change after the look is never missed.
    pub(crate) fn seen(self) -> (Wake, u64) {
        let v = self.version();
        (self, v)
    }
}

/// A request waiting for a condition the node cannot meet yet.
pub struct Parked {
    pub(crate) request: Waiting,
    pub(crate) deadline: Duration,
    pub(crate) watch: Vec<(Wake, u64)>,
}

impl Parked {
    /// When to hand the request back even if nothing changed.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// What the request waits on.
    pub fn watched(&self) -> impl Iterator<Item = &Wake> {
        self.watch.iter().map(|(w, _)| w)
    }

    /// Whether something watched moved since the request looked at it: if
    /// so, resume at once instead of waiting for a wake-up already missed.
    pub fn stale(&self) -> bool {
        self.watch.iter().any(|(w, seen)| w.version() != *seen)
    }
}

/// What a parked request re-checks when resumed.
pub(crate) enum Waiting {
    Produce(produce::Waiting),
    Fetch(fetch::Waiting),
    Group(group::Waiting),
}

/// Everything a handler may touch while it runs: the node, proof that disk
/// latency is paid, the time, and the partitions whose high watermark it moved.
pub(crate) struct Cx<'a> {
    pub node: &'a Node,
    pub disk: &'a DiskScope,
    pub clock: Clock,
    pub wake: Vec<Wake>,
}

impl Cx<'_> {
    /// The error for a partition this broker does not host: in a cluster
    /// whose image has the topic, another broker leads it
    /// (NOT_LEADER_OR_FOLLOWER, so the client refreshes its metadata).
    pub fn not_hosted(&self, topic: &str) -> kafka_protocol::error::ResponseError {
        use kafka_protocol::error::ResponseError;
        match self.node.cluster() {
            Some(link) if link.image().topic_by_name(topic).is_some() => ResponseError::NotLeaderOrFollower,
            _ => ResponseError::UnknownTopicOrPartition,
        }
    }

    /// Record that `p`'s high watermark moved if `advanced`.
    pub fn advanced(&mut self, p: &Arc<Partition>, advanced: bool) {
        if advanced {
            self.woke(Wake::HighWatermark(p.clone()));
        }
    }

    /// Record that `w` moved.
    pub fn woke(&mut self, w: Wake) {
        if !self.wake.iter().any(|x| x.same(&w)) {
            self.wake.push(w);
        }
    }
}

/// One broker's state: its configuration, topics and partitions, producer
/// ids and consumer groups.
pub struct Node {
    pub config: BrokerConfig,
    pub topics: Topics,
    pub producer_ids: ProducerIds,
    pub groups: Groups,
    /// Host and port clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Set once in cluster mode (`process_roles`): the metadata image and
    /// the way to the quorum and the controller.
    cluster: std::sync::OnceLock<Arc<crate::cluster::ClusterLink>>,
}

impl Node {
    /// Open the data directory, recovering every partition. `seed` feeds the
    /// node's own random choices (topic ids), so a simulated run replays.
    pub fn open(
        disk: &DiskScope,
        fs: Arc<dyn Fs>,
        config: BrokerConfig,
        advertised: (String, i32),
        now_ms: i64,
        seed: u64,
    ) -> anyhow::Result<Node> {
        use anyhow::Context;
        anyhow::ensure!(config.num_partitions >= 1, "num_partitions must be at least 1, not {}", config.num_partitions);
        anyhow::ensure!(config.socket_request_max_bytes >= 64, "socket_request_max_bytes is too small");
        anyhow::ensure!(
            config.queued_max_request_bytes >= config.socket_request_max_bytes + crate::wire::READ_CHUNK,
            "queued_max_request_bytes ({}) must hold at least one largest request (socket_request_max_bytes {} + {})",
            config.queued_max_request_bytes,
            config.socket_request_max_bytes,
            crate::wire::READ_CHUNK
        );
        anyhow::ensure!(
            config.max_connections >= 1 && config.max_connections_per_ip >= 1,
            "connection limits must be at least 1"
        );
        anyhow::ensure!(config.fetch_max_bytes >= 1, "fetch_max_bytes must be at least 1");
        anyhow::ensure!(config.max_open_files >= 1, "max_open_files must be at least 1");
        let fs: Arc<dyn Fs> = Arc::new(crate::storage::OpenFiles::new(fs, config.max_open_files));
        let topics = Topics::open(fs.clone(), config.clone(), now_ms, seed)
            .with_context(|| format!("cannot open data directory {}", config.data_dir.display()))?;
        let producer_ids = ProducerIds::open(fs, &config.data_dir)
            .with_context(|| format!("cannot load producer ids from {}", config.data_dir.display()))?;
        anyhow::ensure!(
            config.groups.offsets_topic_num_partitions >= 1,
            "offsets_topic_num_partitions must be at least 1"
        );
        anyhow::ensure!(
            config.groups.offset_metadata_max_bytes <= i16::MAX as usize,
            "offset_metadata_max_bytes must be at most {} (a string of the __consumer_offsets records)",
            i16::MAX
        );
        let groups = Groups::new(config.groups.clone(), config.bugs);
        if let Some(offsets) = topics.get(OFFSETS_TOPIC) {
            let clock = Clock { now_ms, elapsed: Duration::ZERO };
            for p in &offsets.partitions {
                groups.load(disk, p, clock).with_context(|| format!("cannot load {OFFSETS_TOPIC}-{}", p.index))?;
            }
        }
        let (advertised_host, advertised_port) = advertised;
        Ok(Node {
            config,
            topics,
            producer_ids,
            groups,
            advertised_host,
            advertised_port,
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// Join a cluster: from now on metadata, topic administration and
    /// coordinator lookups go through `link`. Called once, before serving.
    pub fn join_cluster(&self, link: Arc<crate::cluster::ClusterLink>) {
        let set = self.cluster.set(link).is_ok();
        assert!(set, "a node joins one cluster once");
    }

    /// The cluster this node is part of; `None` for a single broker.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::ClusterLink>> {
        self.cluster.get()
    }

    /// Handle one request frame (length prefix removed).
    pub fn handle(&self, disk: &DiskScope, clock: Clock, frame: Bytes) -> Output {
        let mut cx = Cx { node: self, disk, clock, wake: Vec::new() };
        let step = handlers::dispatch(&mut cx, frame);
        Output { step, wake: cx.wake }
    }

    /// Re-examine a parked request: it completes if its condition now holds
    /// or its deadline has passed, and parks again otherwise.
    pub fn resume(&self, disk: &DiskScope, clock: Clock, parked: Parked) -> Output {
        let mut cx = Cx { node: self, disk, clock, wake: Vec::new() };
        let step = match parked.request {
            Waiting::Produce(w) => produce::resume(&mut cx, w, parked.deadline),
            Waiting::Fetch(w) => fetch::resume(&mut cx, w, parked.deadline),
            Waiting::Group(w) => group::resume(&mut cx, w, parked.deadline),
        };
        Output { step, wake: cx.wake }
    }

    /// Apply time-based log policies (`flush.ms`, `segment.ms`) to every
    /// partition and the group coordinators' timeouts. Returns what moved
    /// and when to tick again.
    pub fn tick(&self, disk: &DiskScope, clock: Clock) -> (Vec<Wake>, Duration) {
        let mut cx = Cx { node: self, disk, clock, wake: Vec::new() };
        let mono_ms = clock.elapsed.as_millis() as i64;
        let lag_max_ms = self.config.replica_lag_time_max_ms as i64;
        for topic in self.topics.all() {
            for p in &topic.partitions {
                match p.tick(disk, clock.now_ms, mono_ms, lag_max_ms) {
                    Ok((moved, isr_change)) => {
                        cx.advanced(p, moved);
                        if let (Some(change), Some(link)) = (isr_change, self.cluster()) {
                            crate::replication::fetcher::ask_isr_change(link, topic.id, p, change);
                        }
                    }
                    Err(e) => {
                        tracing::error!(topic = %topic.name, partition = p.index, error = %e, "flush/roll failed")
                    }
                }
            }
        }
        let next_group = group::tick(&mut cx);
        let mut next = self.tick_interval();
        if let Some(due) = next_group {
            // Group timeouts are due at exact times; a few ms late is fine.
            next = next.min(due.saturating_sub(clock.elapsed).max(Duration::from_millis(5)));
        }
        (cx.wake, next)
    }

    /// How often policies are checked, like Kafka's
    /// `log.flush.scheduler.interval.ms`, bounded by the smallest `flush.ms`
    /// so short flush intervals are honoured.
    pub fn tick_interval(&self) -> Duration {
        let smallest = self.topics.all().iter().map(|t| t.config.flush_ms).chain([self.config.log.flush_ms]).min();
        let ms = smallest.unwrap_or(1000).clamp(10, 1000) as u64;
        Duration::from_millis(ms / 2).max(Duration::from_millis(10))
    }

    /// fsync every partition (clean shutdown).
    pub fn flush_all(&self, disk: &DiskScope) {
        for topic in self.topics.all() {
            for p in &topic.partitions {
                if let Err(e) = p.flush(disk) {
                    tracing::warn!(topic = %topic.name, partition = p.index, error = %e, "flush at shutdown failed");
                }
            }
        }
    }
}
