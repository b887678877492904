//! Partition replication (replication factor above 1): the leader's view of
//! its followers ([`leader`]: ISR, high watermark, ISR changes to ask the
//! controller for) and the follower's side ([`fetcher`]: one task per
//! broker fetching every partition it follows from its leaders with
//! Kafka's replica Fetch, truncating by leader epoch when its log diverged).
//!
//! What an acknowledgement promises is the topic's [`DurabilityPolicy`].

pub mod fetcher;
pub mod leader;

use serde::{Deserialize, Serialize};

pub use leader::{Assignment, LeaderView, PendingIsr};

/// When a write counts as acknowledged by a replica: the topic config
/// `durability.policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityPolicy {
    /// Faultline's default: every ISR member (leader included) has fsynced
    /// the batch before it is acknowledged; a follower fsyncs what it
    /// copied before it fetches again, so its fetch offset is durable.
    /// Power loss of every replica at once loses nothing acknowledged.
    #[default]
    Strict,
    /// Kafka's default: acknowledged once in the memory (page cache) of
    /// every ISR member; fsync only by `flush.messages` / `flush.ms`.
    /// Power loss of every replica at once can lose acknowledged writes.
    Kafka,
}

impl DurabilityPolicy {
    pub fn name(self) -> &'static str {
        match self {
            DurabilityPolicy::Strict => "strict",
            DurabilityPolicy::Kafka => "kafka",
        }
    }

    pub fn parse(s: &str) -> Option<DurabilityPolicy> {
        match s {
            "strict" => Some(DurabilityPolicy::Strict),
            "kafka" => Some(DurabilityPolicy::Kafka),
            _ => None,
        }
    }
}
