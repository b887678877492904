//! Broker and topic configuration with Kafka's names and documented defaults,
//! plus the planted-bug switches the simulator uses to prove its checkers bite.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Per-partition log settings (Kafka topic-level configs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `segment.bytes`: roll a new segment when the active one would exceed
    /// this. At least [`MIN_SEGMENT_BYTES`] (1 MiB, as Kafka 4 enforces) in a
    /// topic config or a `faultline serve` config.
    pub segment_bytes: u64,
    /// `internal.segment.bytes` (Kafka 4's internal override): when set, the
    /// segment size in effect, with no minimum beyond one batch header. For
    /// tests and the simulator, which want many small segments; a broker-side
    /// setting only, never accepted from a client's topic config.
    pub internal_segment_bytes: Option<u64>,
    /// `segment.ms`: roll when the active segment's first batch is older than this.
    pub segment_ms: i64,
    /// `index.interval.bytes`: bytes of log between sparse index entries.
    pub index_interval_bytes: u64,
    /// `flush.messages`: fsync after this many records are appended.
    pub flush_messages: u64,
    /// `flush.ms`: fsync when unflushed data is older than this.
    pub flush_ms: i64,
    /// `max.message.bytes`: largest record batch accepted.
    pub max_message_bytes: usize,
    /// `message.timestamp.type`: "CreateTime" or "LogAppendTime".
    pub message_timestamp_type: String,
    /// `producer.id.expiration.ms` (a broker setting in Kafka): forget an
    /// idempotent producer whose last batch is this much older than now.
    pub producer_id_expiration_ms: i64,
    /// The most bytes one compressed batch may decompress to, whatever its
    /// codec; at least `max.message.bytes` (what the batch could hold
    /// uncompressed). Checked while decompressing — on produce (beyond it:
    /// MESSAGE_TOO_LARGE, so Kafka producers split the batch) and on every
    /// read of stored batches — so a small compression bomb costs at most
    /// this much memory. Broker-wide; Kafka has no such setting.
    pub max_decompressed_batch_bytes: usize,
    /// `min.insync.replicas`: an acks=all produce needs an ISR at least this
    /// large (else NOT_ENOUGH_REPLICAS, or NOT_ENOUGH_REPLICAS_AFTER_APPEND
    /// if the ISR shrank while it waited).
    pub min_insync_replicas: i32,
    /// `durability.policy` (Faultline's): what an ISR member's
    /// acknowledgement means, fsynced (`strict`, the default) or in memory
    /// (`kafka`, Kafka's behaviour).
    pub durability_policy: crate::replication::DurabilityPolicy,
    /// `unclean.leader.election.enable`: when no ISR member of a partition
    /// can lead, the controller may elect a replica outside the ISR, which
    /// loses whatever only the ISR had. Read by the controller only.
    pub unclean_leader_election_enable: bool,
}

/// Smallest `segment.bytes` a topic config or `faultline serve` accepts
/// (Kafka 4: 1 MiB). Tiny segments cost descriptors and metadata per byte.
pub const MIN_SEGMENT_BYTES: u64 = 1 << 20;

impl LogConfig {
    /// The segment size in effect: `internal.segment.bytes` if set, else `segment.bytes`.
    pub fn effective_segment_bytes(&self) -> u64 {
        self.internal_segment_bytes.unwrap_or(self.segment_bytes)
    }

    /// The decompressed size a stored or produced batch may reach.
    pub fn decompressed_batch_limit(&self) -> usize {
        self.max_decompressed_batch_bytes.max(self.max_message_bytes)
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            internal_segment_bytes: None,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            flush_messages: 1,
            flush_ms: 1000,
            max_message_bytes: 1_048_588,
            message_timestamp_type: "CreateTime".into(),
            producer_id_expiration_ms: 86_400_000,
            max_decompressed_batch_bytes: crate::compression::DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES,
            min_insync_replicas: 1,
            durability_policy: crate::replication::DurabilityPolicy::Strict,
            unclean_leader_election_enable: false,
        }
    }
}

/// Deliberate bugs, each a real class of broker bug. Off by default; refused
/// by `faultline serve`; the simulator turns them on to show the checkers
/// catch what they cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlantedBugs {
    /// Acknowledge a produce before its batch is fsynced.
    pub ack_before_durable: bool,
    /// Trust every batch on recovery instead of checking its CRC.
    pub skip_crc_on_recovery: bool,
    /// After a crash, restart offset assignment from the last index entry
    /// instead of the recovered log end, reusing offsets.
    pub duplicate_offset_after_crash: bool,
    /// Panic in the broker's background policy task on its first tick: a
    /// crash in a spawned task, which must fail a simulated run, not vanish.
    pub panic_in_background_task: bool,
    /// Client side: an idempotent producer gives a retried batch fresh
    /// sequence numbers, so the broker cannot know it for a retry and may
    /// store it twice.
    pub renumber_retries: bool,
    /// ListOffsets for the latest offset answers from a snapshot of the
    /// high watermark taken at most [`STALE_END_OFFSETS_MS`] ago instead of
    /// the high watermark itself: a stale read. Every record it hides is
    /// committed and every fetch still sees it, so only a linearizability
    /// check of end offsets against acknowledged appends can tell.
    pub stale_end_offsets: bool,
    /// The group coordinator completes a rebalance without bumping the
    /// generation, so members of two rebalances share one generation.
    pub group_generation_not_bumped: bool,
    /// The group coordinator accepts an OffsetCommit from a member of an
    /// earlier generation (or one already removed from the group) instead of
    /// answering ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID.
    pub group_stale_commit_accepted: bool,
    /// A new leader of a `__consumer_offsets` partition loads its group
    /// coordinator at once from the records below its high watermark,
    /// which right after the election may trail what the last coordinator
    /// acknowledged, instead of answering COORDINATOR_LOAD_IN_PROGRESS
    /// until the high watermark reaches the start of its epoch.
    pub group_load_before_caught_up: bool,
    /// Cluster: a restarted broker publishes the metadata image as soon as
    /// it has replayed the log, before the controller has registered its
    /// new run, so it leads again, at the same leader epoch, partitions its
    /// previous run led (a group coordinator loaded twice in one epoch).
    pub publish_before_registered: bool,
    /// Metadata quorum: a voter answers "vote granted" before its vote is
    /// durable, so a crash in between lets it vote twice in one epoch.
    pub quorum_vote_before_persist: bool,
    /// Metadata quorum: a leader commits entries of earlier epochs by
    /// counting replicas (Raft's figure 8).
    pub quorum_commit_previous_epoch: bool,
    /// Metadata quorum: a follower keeps a divergent log suffix instead of
    /// truncating it.
    pub quorum_keep_divergent_suffix: bool,
    /// Replication (KAFKA-1211, before KIP-101): a follower truncates its
    /// log to its own high watermark when it starts following, instead of
    /// asking the leader where their logs diverge by leader epoch.
    pub replica_truncate_to_high_watermark: bool,
    /// Replication: an acks=all produce is answered once the leader has the
    /// batch, before the ISR does.
    pub replica_ack_before_isr: bool,
    /// Replication: the high watermark moves when the leader and its
    /// furthest follower, in the ISR or not, have a batch.
    pub replica_high_watermark_outside_isr: bool,
    /// Controller: every partition whose ISR has no usable member gets a
    /// leader from outside the ISR, as if `unclean.leader.election.enable`
    /// were set on every topic, so acknowledged records only the ISR held
    /// can be lost.
    pub unclean_election_always: bool,
}

impl PlantedBugs {
    /// The metadata quorum's share of the switches.
    pub fn quorum(&self) -> crate::quorum::QuorumBugs {
        crate::quorum::QuorumBugs {
            vote_before_persist: self.quorum_vote_before_persist,
            commit_previous_epoch: self.quorum_commit_previous_epoch,
            keep_divergent_suffix: self.quorum_keep_divergent_suffix,
        }
    }
}

/// How old the planted stale end-offset snapshot may grow before the next
/// ListOffsets refreshes it.
pub const STALE_END_OFFSETS_MS: u64 = 300;

impl PlantedBugs {
    pub fn any(&self) -> bool {
        self.ack_before_durable
            || self.skip_crc_on_recovery
            || self.duplicate_offset_after_crash
            || self.panic_in_background_task
            || self.renumber_retries
            || self.stale_end_offsets
            || self.group_generation_not_bumped
            || self.quorum().any()
            || self.group_stale_commit_accepted
            || self.group_load_before_caught_up
            || self.publish_before_registered
            || self.replica_truncate_to_high_watermark
            || self.replica_ack_before_isr
            || self.replica_high_watermark_outside_isr
            || self.unclean_election_always
    }
}

/// Broker settings (Kafka `server.properties` names, snake_cased).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// `node.id`.
    pub node_id: i32,
    /// Address to bind, "host:port".
    pub listen: String,
    /// Address clients are told to connect to; defaults to `listen`.
    pub advertised_listener: Option<String>,
    /// `log.dirs` (one directory).
    pub data_dir: PathBuf,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `num.partitions`: partitions of an auto-created topic.
    pub num_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// `socket.request.max.bytes`: largest request frame accepted.
    pub socket_request_max_bytes: usize,
    /// `queued.max.request.bytes`: request bytes all connections together may
    /// hold in memory (read but not yet answered). A connection that would
    /// exceed it waits to read more until others' requests finish. Kafka's
    /// default is unbounded; ours is 512 MiB, and at least one largest frame.
    pub queued_max_request_bytes: usize,
    /// `max.connections`: open client connections; a connection beyond it is
    /// closed as soon as it is accepted.
    pub max_connections: usize,
    /// `max.connections.per.ip`: open connections from one address.
    pub max_connections_per_ip: usize,
    /// `connections.max.idle.ms`: a connection that completes no request for
    /// this long is closed (also one that trickles a frame in byte by byte).
    pub connections_max_idle_ms: u64,
    /// `fetch.max.bytes`: the most record bytes one Fetch response carries,
    /// whatever the request asks (Kafka: 55 MiB).
    pub fetch_max_bytes: usize,
    /// Partitions this broker hosts in all; CreateTopics and auto-creation
    /// beyond it are refused with a policy error. Every partition holds open
    /// files, so this bounds descriptors too.
    pub max_partitions: usize,
    /// Topics one Metadata request may auto-create; the rest of the request's
    /// unknown topics get UNKNOWN_TOPIC_OR_PARTITION (clients retry).
    pub max_auto_created_topics_per_request: usize,
    /// Files (segments, indexes, metadata) the logs hold open at once; the
    /// least recently used are closed and reopened on demand, so many
    /// partitions or tiny segments cost disk, not descriptors. Files with
    /// unsynced writes stay open, so this may be passed briefly. Keep it plus
    /// `max_connections` under the process's descriptor limit. Kafka has no
    /// such setting (it keeps every segment open).
    pub max_open_files: usize,
    /// Defaults for every topic's log.
    pub log: LogConfig,
    /// The group coordinator's settings and limits.
    pub groups: GroupConfig,
    /// Planted bugs (simulation only).
    pub bugs: PlantedBugs,
    /// `process.roles`: "broker", "controller" or "broker,controller". Unset
    /// (the default) is single-node mode: one broker that is its own
    /// controller, with no metadata quorum. See [`BrokerConfig::cluster_mode`].
    pub process_roles: Option<String>,
    /// `controller.quorum.voters`: the controllers of the metadata quorum,
    /// "id@host:port,id@host:port,...". Required with `process_roles`.
    pub controller_quorum_voters: Option<String>,
    /// `broker.session.timeout.ms`: the active controller fences a broker
    /// that has sent no heartbeat for this long (Kafka: 9000).
    pub broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`: how often a broker heartbeats to the
    /// active controller (Kafka: 2000). Must be below the session timeout.
    pub broker_heartbeat_interval_ms: u64,
    /// Whether a voter first asks for a pre-vote (KIP-996, Kafka 4) before it
    /// stands for election. Off behaves as Kafka 3.x: a voter whose election
    /// timer runs out stands at once, so elections split more often. On by
    /// default; the simulator also draws it off.
    pub controller_quorum_pre_vote: bool,
    /// `replica.lag.time.max.ms`: a follower that has not caught up with the
    /// leader for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.wait.max.ms`: how long a leader holds a follower's
    /// fetch when it has nothing new.
    pub replica_fetch_wait_max_ms: u64,
    /// `replica.fetch.max.bytes`: bytes a follower asks for per partition.
    pub replica_fetch_max_bytes: usize,
    /// `replica.fetch.backoff.ms`: pause after a failed replica fetch.
    pub replica_fetch_backoff_ms: u64,
    /// `replica.socket.timeout.ms`: how long a replica fetch may go
    /// unanswered beyond the leader's `replica.fetch.wait.max.ms` before the
    /// follower gives up on it and fetches again (Kafka's default, 30 s).
    /// The simulator, whose network can lose a message on a live
    /// connection, keeps it below `replica.lag.time.max.ms` so that one lost
    /// fetch does not cost a follower its place in the ISR.
    pub replica_socket_timeout_ms: u64,
    /// `auto.leader.rebalance.enable`: the active controller moves
    /// leadership back to each partition's preferred replica (the first)
    /// when it is in the ISR and usable, every
    /// `leader_imbalance_check_interval_seconds`.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds` (Kafka: 300).
    pub leader_imbalance_check_interval_seconds: u64,
}

/// What a node does in cluster mode (`process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRoles {
    pub broker: bool,
    pub controller: bool,
}

/// One member of the metadata quorum, from `controller.quorum.voters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumVoter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

/// A node's place in a cluster: its roles and the quorum's voters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMode {
    pub roles: ProcessRoles,
    /// Ordered by id; ids are distinct.
    pub voters: Vec<QuorumVoter>,
}

/// Most voters `controller.quorum.voters` may name: each is a Raft peer the
/// leader replicates to and counts for every commit.
pub const MAX_QUORUM_VOTERS: usize = 9;

/// Parse `process.roles` ("broker", "controller", or both, comma-separated).
pub fn parse_process_roles(text: &str) -> Result<ProcessRoles, String> {
    let mut roles = ProcessRoles { broker: false, controller: false };
    for role in text.split(',').map(str::trim) {
        let seen = match role {
            "broker" => std::mem::replace(&mut roles.broker, true),
            "controller" => std::mem::replace(&mut roles.controller, true),
            other => {
                return Err(format!(
                "process_roles: unknown role {other:?}; expected \"broker\", \"controller\" or \"broker,controller\""
            ))
            }
        };
        if seen {
            return Err(format!("process_roles: role {role:?} is listed twice"));
        }
    }
    Ok(roles)
}

/// Parse `controller.quorum.voters`: "1@host:port,2@host:port,...".
pub fn parse_quorum_voters(text: &str) -> Result<Vec<QuorumVoter>, String> {
    let mut voters: Vec<QuorumVoter> = Vec::new();
    for entry in text.split(',').map(str::trim) {
        let bad = |why: &str| {
            format!(
                "controller_quorum_voters: bad entry {entry:?}: {why}; expected id@host:port, e.g. 1@127.0.0.1:9093"
            )
        };
        let (id, addr) = entry.split_once('@').ok_or_else(|| bad("no '@'"))?;
        let id: i32 = id.trim().parse().map_err(|_| bad("the id is not a number"))?;
        if id < 0 {
            return Err(bad("the id is negative"));
        }
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no ':port'"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad("port 0 cannot be dialled"));
        }
        if voters.iter().any(|v| v.id == id) {
            return Err(format!("controller_quorum_voters: voter id {id} is listed twice"));
        }
        voters.push(QuorumVoter { id, host: host.to_string(), port });
    }
    if voters.len() > MAX_QUORUM_VOTERS {
        return Err(format!("controller_quorum_voters: {} voters; at most {MAX_QUORUM_VOTERS}", voters.len()));
    }
    voters.sort_by_key(|v| v.id);
    Ok(voters)
}

impl BrokerConfig {
    /// The node's cluster role, checked as Kafka checks it: `None` in
    /// single-node mode (no `process_roles`), else the roles and voters, or
    /// a message naming the setting that is wrong.
    pub fn cluster_mode(&self) -> Result<Option<ClusterMode>, String> {
        let Some(roles_text) = &self.process_roles else {
            if self.controller_quorum_voters.is_some() {
                return Err("controller_quorum_voters is set but process_roles is not; set process_roles to \
                            \"broker\", \"controller\" or \"broker,controller\" for cluster mode"
                    .into());
            }
            return Ok(None);
        };
        let roles = parse_process_roles(roles_text)?;
        let voters_text = self
            .controller_quorum_voters
            .as_deref()
            .ok_or("process_roles is set, so controller_quorum_voters is required (\"1@host:port,...\")")?;
        let voters = parse_quorum_voters(voters_text)?;
        if self.node_id < 0 {
            return Err(format!("node_id must be 0 or more in cluster mode, not {}", self.node_id));
        }
        let is_voter = voters.iter().any(|v| v.id == self.node_id);
        if roles.controller && !is_voter {
            return Err(format!(
                "process_roles includes controller, so node_id {} must be one of controller_quorum_voters",
                self.node_id
            ));
        }
        if !roles.controller && is_voter {
            return Err(format!(
                "process_roles is broker only, so node_id {} must not be one of controller_quorum_voters",
                self.node_id
            ));
        }
        if self.broker_heartbeat_interval_ms == 0 || self.broker_heartbeat_interval_ms >= self.broker_session_timeout_ms
        {
            return Err(format!(
                "broker_heartbeat_interval_ms ({}) must be above 0 and below broker_session_timeout_ms ({})",
                self.broker_heartbeat_interval_ms, self.broker_session_timeout_ms
            ));
        }
        Ok(Some(ClusterMode { roles, voters }))
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 0,
            listen: "127.0.0.1:9092".into(),
            advertised_listener: None,
            data_dir: PathBuf::from("faultline-data"),
            auto_create_topics_enable: true,
            num_partitions: 1,
            default_replication_factor: 1,
            socket_request_max_bytes: 100 * 1024 * 1024,
            queued_max_request_bytes: 512 * 1024 * 1024,
            max_connections: 4096,
            max_connections_per_ip: 1024,
            connections_max_idle_ms: 600_000,
            fetch_max_bytes: 55 * 1024 * 1024,
            max_partitions: 10_000,
            max_auto_created_topics_per_request: 10,
            max_open_files: crate::storage::open_files::DEFAULT_MAX_OPEN_FILES,
            log: LogConfig::default(),
            groups: GroupConfig::default(),
            bugs: PlantedBugs::default(),
            process_roles: None,
            controller_quorum_voters: None,
            broker_session_timeout_ms: 9000,
            broker_heartbeat_interval_ms: 2000,
            controller_quorum_pre_vote: true,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1 << 20,
            replica_fetch_backoff_ms: 1_000,
            replica_socket_timeout_ms: 30_000,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,
        }
    }
}

/// Group coordinator settings (Kafka's broker names, snake_cased, in the
/// `[groups]` table of a config file) and the limits that bound what clients
/// can make it hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets`,
    /// fixed when the broker first creates it (a group's coordinator is the
    /// leader of partition `abs(hashCode(group.id)) % this`).
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.replication.factor` (cluster mode): replicas of each
    /// `__consumer_offsets` partition. As in Kafka, the controller refuses
    /// to create the topic until this many brokers are usable, and
    /// FindCoordinator answers COORDINATOR_NOT_AVAILABLE meanwhile. A single
    /// broker ignores it (one replica).
    pub offsets_topic_replication_factor: i16,
    /// `group.min.session.timeout.ms`: smallest `session.timeout.ms` a member may ask for.
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`: largest `session.timeout.ms` a member may ask for.
    pub group_max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an
    /// empty group waits for more members, extended by this per newcomer up
    /// to the rebalance timeout.
    pub group_initial_rebalance_delay_ms: i32,
    /// `group.max.size`: members per group (Kafka: unbounded; ours 1000).
    /// JoinGroup beyond it gets GROUP_MAX_SIZE_REACHED.
    pub group_max_size: usize,
    /// Groups the coordinator holds in all, across its partitions; a new
    /// group beyond it is refused with COORDINATOR_NOT_AVAILABLE (retriable:
    /// deleting empty groups frees room). Kafka has no such bound.
    pub max_groups: usize,
    /// Committed partitions one group may hold; a commit of a further
    /// partition gets POLICY_VIOLATION for it. Kafka has no such bound.
    pub max_offsets_per_group: usize,
    /// `offset.metadata.max.bytes`: the metadata string of one committed offset.
    pub offset_metadata_max_bytes: usize,
    /// Bytes of protocol metadata one member may send in JoinGroup (all its
    /// protocols together), and of assignment a leader may give one member
    /// in SyncGroup; beyond it the request gets POLICY_VIOLATION. Kafka
    /// bounds these only by `socket.request.max.bytes`.
    pub member_metadata_max_bytes: usize,
    /// Protocols (assignors) one member may offer in JoinGroup.
    pub max_protocols_per_member: usize,
    /// `offsets.commit.timeout.ms`: how long an OffsetCommit waits for its
    /// records to be durable before answering REQUEST_TIMED_OUT.
    pub offsets_commit_timeout_ms: u64,
    /// `group.consumer.session.timeout.ms`: a member of a consumer group
    /// (KIP-848, `group.protocol=consumer`) that sends no
    /// ConsumerGroupHeartbeat for this long is removed.
    pub consumer_session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`: how often consumer group
    /// members are told to heartbeat; below the session timeout.
    pub consumer_heartbeat_interval_ms: i32,
    /// `group.consumer.assignors`: the server-side assignors a consumer group
    /// may use, the first the default; each "uniform" or "range".
    pub consumer_assignors: Vec<String>,
    /// Topic names one consumer group member may subscribe to; beyond it the
    /// heartbeat gets INVALID_REQUEST. Kafka has no such bound. (Members per
    /// group are bounded by `group_max_size`, as for classic groups.)
    pub consumer_max_subscribed_topics: usize,
    /// Bytes of a member's `subscribed_topic_regex`; beyond it the heartbeat
    /// gets INVALID_REQUEST. The regex is compiled with a bounded automaton
    /// size too, so a pathological one gets INVALID_REGULAR_EXPRESSION.
    /// Kafka has no such bound.
    pub consumer_max_regex_bytes: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            offsets_topic_num_partitions: 50,
            offsets_topic_replication_factor: 3,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            group_max_size: 1_000,
            max_groups: 10_000,
            max_offsets_per_group: 100_000,
            offset_metadata_max_bytes: 4_096,
            member_metadata_max_bytes: 1 << 20,
            max_protocols_per_member: 16,
            offsets_commit_timeout_ms: 5_000,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            consumer_assignors: vec!["uniform".into(), "range".into()],
            consumer_max_subscribed_topics: 10_000,
            consumer_max_regex_bytes: 4_096,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(roles: &str, voters: &str, node_id: i32) -> Result<Option<ClusterMode>, String> {
        BrokerConfig {
            node_id,
            process_roles: Some(roles.into()),
            controller_quorum_voters: Some(voters.into()),
            ..BrokerConfig::default()
        }
        .cluster_mode()
    }

    #[test]
    fn single_node_mode_is_the_default() {
        assert_eq!(BrokerConfig::default().cluster_mode(), Ok(None));
        let c = BrokerConfig { controller_quorum_voters: Some("1@h:1".into()), ..BrokerConfig::default() };
        assert!(c.cluster_mode().unwrap_err().contains("process_roles"));
    }

    #[test]
    fn voters_and_roles_parse() {
        let m = cluster("broker,controller", "3@c:9095, 1@a:9093,2@[::1]:9094", 1).unwrap().unwrap();
        assert_eq!(m.roles, ProcessRoles { broker: true, controller: true });
        let ids: Vec<i32> = m.voters.iter().map(|v| v.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!((m.voters[1].host.as_str(), m.voters[1].port), ("::1", 9094));
        let m = cluster("broker", "1@a:9093", 4).unwrap().unwrap();
        assert_eq!(m.roles, ProcessRoles { broker: true, controller: false });
    }

    #[test]
    fn bad_settings_are_named() {
        for (roles, voters, id, needle) in [
            ("broker,leader", "1@a:1", 1, "unknown role"),
            ("broker,broker", "1@a:1", 1, "twice"),
            ("controller", "1@a:1", 2, "must be one of"),
            ("broker", "1@a:1", 1, "must not be one of"),
            ("controller", "1a:1", 1, "no '@'"),
            ("controller", "x@a:1", 1, "not a number"),
            ("controller", "1@a", 1, "no ':port'"),
            ("controller", "1@a:99999", 1, "port"),
            ("controller", "1@a:0", 1, "port 0"),
            ("controller", "1@:5", 1, "host is empty"),
            ("controller", "1@a:1,1@b:2", 1, "listed twice"),
            ("controller", "", 1, "bad entry"),
        ] {
            let err = cluster(roles, voters, id).unwrap_err();
            assert!(err.contains(needle), "{roles} / {voters}: {err}");
        }
        let many: Vec<String> = (0..10).map(|i| format!("{i}@h:{}", 9000 + i)).collect();
        assert!(cluster("controller", &many.join(","), 0).unwrap_err().contains("at most"));
        let c = BrokerConfig {
            process_roles: Some("broker".into()),
            controller_quorum_voters: Some("1@a:1".into()),
            broker_heartbeat_interval_ms: 9000,
            ..BrokerConfig::default()
        };
        assert!(c.cluster_mode().unwrap_err().contains("below broker_session_timeout_ms"));
    }
}
