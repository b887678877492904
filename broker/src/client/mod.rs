//! Kafka clients over the I/O seam: producer, consumer and admin.
//!
//! They speak the Kafka protocol (encoded with `kafka-protocol`) over
//! [`crate::io::Env`] connections, so the same clients run against
//! `faultline serve` on real sockets and inside the simulator.
//!
//! - [`connection`]: one broker connection, version negotiation, correlation.
//! - [`cluster`]: bootstrap, connection pool and the metadata cache.
//! - [`partitioner`]: Kafka's murmur2 and sticky partitioning.
//! - [`batch`]: record batch encoding and decoding.
//! - [`accumulator`]: the producer's per-partition batching queues.
//! - [`producer`], [`consumer`], [`admin`]: the clients.
//! - [`group`], [`assignor`]: a consumer's group membership and the
//!   partition assignors its group's leader runs.

pub mod accumulator;
pub mod admin;
pub mod assignor;
pub mod batch;
pub mod cluster;
pub mod connection;
pub mod consumer;
pub mod group;
pub mod partitioner;
pub mod producer;

use std::fmt;

pub use kafka_protocol::error::ResponseError;

pub use admin::{
    Admin, AdminConfig, GroupDescription, GroupListing, GroupMember, NewTopic, PartitionDescription, QuorumDescription,
    TopicDescription,
};
pub use assignor::Assignor;
pub use consumer::{AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, RebalanceListener};
pub use group::GroupSettings;
pub use producer::{
    Compression, DeliveryFuture, ProduceError, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};

/// A topic-partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition { topic: topic.into(), partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// A record header (Kafka allows a null value).
pub type Header = (String, Option<bytes::Bytes>);

/// Everything that can go wrong talking to brokers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// Could not open a connection; nothing was sent.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The connection broke after the request was (perhaps partly) sent.
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost { addr: String, reason: String },
    /// No response within `request.timeout.ms`; the request may have been applied.
    #[error("request to {addr} timed out after {ms} ms")]
    Timeout { addr: String, ms: u64 },
    /// The broker answered with an error code.
    #[error("{context}: {error}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Broker { context: String, error: ResponseError, message: Option<String> },
    /// The broker sent something we cannot decode or did not ask for.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Fetched record data failed its CRC-32C or framing check
    /// (`check.crcs`). Nothing of that partition was consumed and its
    /// position stays at `offset`, so the next poll fetches the same data
    /// again: a fault that flipped bits in transit or on a read goes away,
    /// corruption stored in the log does not.
    #[error("corrupt record data fetched from {partition} at offset {offset}: {reason}")]
    CorruptRecord { partition: TopicPartition, offset: i64, reason: String },
    /// The broker supports no version of an API we speak.
    #[error("broker {addr} does not support {api} versions {min}..={max}")]
    UnsupportedVersion { addr: String, api: String, min: i16, max: i16 },
    /// Bad configuration or argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No broker reachable, or no leader known for a partition.
    #[error("no broker available: {0}")]
    NoBroker(String),
    /// A consumer position is unknown and `auto.offset.reset` is `none`.
    #[error("no offset for partition {0} and auto.offset.reset is none")]
    NoOffsetForPartition(TopicPartition),
    /// `delivery.timeout.ms` passed before the record could be delivered.
    #[error("delivery.timeout.ms ({0} ms) expired")]
    DeliveryTimeout(u64),
    /// The client was closed.
    #[error("client closed")]
    Closed,
}

impl ClientError {
    /// The broker error code, if the broker returned one.
    pub fn broker_error(&self) -> Option<ResponseError> {
        match self {
            ClientError::Broker { error, .. } => Some(*error),
            _ => None,
        }
    }

    /// True if the request may have reached the broker and been applied.
    pub fn maybe_applied(&self) -> bool {
        matches!(self, ClientError::ConnectionLost { .. } | ClientError::Timeout { .. })
    }

    /// True if trying again (after refreshing metadata) can help.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::ConnectionLost { .. }
            | ClientError::Timeout { .. }
            | ClientError::NoBroker(_) => true,
            ClientError::Broker { error, .. } => error.is_retriable(),
            _ => false,
        }
    }

    /// True if the error means our idea of who leads what is stale.
    pub fn invalidates_metadata(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::ConnectionLost { .. } | ClientError::Timeout { .. } => true,
            ClientError::NoBroker(_) => true,
            ClientError::Broker { error, .. } => is_metadata_error(*error),
            _ => false,
        }
    }

    pub(crate) fn broker(context: impl Into<String>, code: i16, message: Option<&str>) -> ClientError {
        ClientError::Broker {
            context: context.into(),
            error: ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code)),
            message: message.map(str::to_string),
        }
    }
}

/// Broker error codes that mean the client's metadata is out of date.
pub fn is_metadata_error(e: ResponseError) -> bool {
    matches!(
        e,
        ResponseError::NotLeaderOrFollower
            | ResponseError::UnknownTopicOrPartition
            | ResponseError::LeaderNotAvailable
            | ResponseError::FencedLeaderEpoch
            | ResponseError::UnknownLeaderEpoch
            | ResponseError::BrokerNotAvailable
            | ResponseError::ReplicaNotAvailable
    )
}

/// Parse a comma-separated bootstrap list ("h1:9092,h2:9092").
pub fn parse_bootstrap(s: &str) -> Result<Vec<String>, ClientError> {
    let servers: Vec<String> = s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    if servers.is_empty() {
        return Err(ClientError::InvalidArgument("bootstrap servers are empty".into()));
    }
    for s in &servers {
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(ClientError::InvalidArgument(format!("bootstrap server {s:?} is not host:port"))),
        }
    }
    Ok(servers)
}
