//! Broker and topic configuration with Kafka's names and documented defaults,
//! plus the planted-bug switches the simulator uses to prove its checkers bite.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Per-partition log settings (Kafka topic-level configs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `segment.bytes`: roll a new segment when the active one would exceed this.
    pub segment_bytes: u64,
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
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            flush_messages: 1,
            flush_ms: 1000,
            max_message_bytes: 1_048_588,
            message_timestamp_type: "CreateTime".into(),
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
    /// Client side: an idempotent producer gives a retried batch fresh
    /// sequence numbers, so the broker cannot know it for a retry and may
    /// store it twice.
    pub renumber_retries: bool,
}

impl PlantedBugs {
    pub fn any(&self) -> bool {
        self.ack_before_durable
            || self.skip_crc_on_recovery
            || self.duplicate_offset_after_crash
            || self.renumber_retries
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
    /// Defaults for every topic's log.
    pub log: LogConfig,
    /// Planted bugs (simulation only).
    pub bugs: PlantedBugs,
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
            log: LogConfig::default(),
            bugs: PlantedBugs::default(),
        }
    }
}
