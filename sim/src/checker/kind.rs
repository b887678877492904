//! The anomaly kinds, named as Jepsen's Kafka workload names them so results
//! compare, and the options saying which of them make a run invalid.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A kind of anomaly a history can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    /// An acknowledged value that readers should have seen but never did.
    LostWrite,
    /// Acknowledged values nobody read, and nothing proves they should have
    /// been: informational unless a scenario says otherwise.
    Unseen,
    /// One value at two or more positions.
    Duplicate,
    /// One (partition, offset) holding two or more values.
    InconsistentOffsets,
    /// A read of a value whose send definitely failed (aborted read).
    G1a,
    /// A read of a value no send ever attempted.
    Unexpected,
    /// A producer session's sends to a partition going backwards.
    NonmonotonicSend,
    /// Two of a producer session's sends to a partition, both in flight at
    /// once, landing in the opposite order to the `send()` calls.
    ReorderedSend,
    /// A consumer session's polls of a partition going backwards.
    NonmonotonicPoll,
    /// One poll's records of a partition going backwards.
    IntNonmonotonicPoll,
    /// A consumer session's consecutive polls jumping over known records.
    PollSkip,
    /// One poll's consecutive records jumping over known records.
    IntPollSkip,
    /// A keyed send on a partition other than Kafka's partitioner gives it.
    MisplacedKey,
    /// A partition's log operations (acknowledged appends, reads, end
    /// offsets) that no single order within their real-time bounds
    /// explains: see [`crate::linearizability`].
    NonLinearizable,
    /// Two members of a consumer group owning one partition in one generation.
    GroupDoubleOwner,
    /// A group's committed offset going backwards: an acknowledged commit
    /// below one acknowledged before it was made, or offsets read back at
    /// the end below the last acknowledged commit.
    CommitRegression,
    /// An acknowledged record below the group's final committed offset that
    /// no member of the group ever consumed.
    GroupUnconsumed,
    /// Two nodes naming different metadata quorum leaders for one epoch.
    QuorumTwoLeaders,
    /// Two different records applied at one metadata log offset.
    MetadataDivergence,
    /// A node's applied metadata going backwards or skipping a record.
    MetadataOrder,
    /// An acknowledged CreateTopics missing from a broker's Metadata after the heal.
    TopicLost,
    /// Two in-sync copies of a partition holding different batches below
    /// what the final read saw committed, or an in-sync copy missing some.
    ReplicaDivergence,
    /// One leader epoch of a partition taken by two brokers, or by two runs
    /// of one broker's process.
    LeaderEpochReused,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 23] = [
        AnomalyKind::LostWrite,
        AnomalyKind::Unseen,
        AnomalyKind::Duplicate,
        AnomalyKind::InconsistentOffsets,
        AnomalyKind::G1a,
        AnomalyKind::Unexpected,
        AnomalyKind::NonmonotonicSend,
        AnomalyKind::ReorderedSend,
        AnomalyKind::NonmonotonicPoll,
        AnomalyKind::IntNonmonotonicPoll,
        AnomalyKind::PollSkip,
        AnomalyKind::IntPollSkip,
        AnomalyKind::MisplacedKey,
        AnomalyKind::NonLinearizable,
        AnomalyKind::GroupDoubleOwner,
        AnomalyKind::CommitRegression,
        AnomalyKind::GroupUnconsumed,
        AnomalyKind::QuorumTwoLeaders,
        AnomalyKind::MetadataDivergence,
        AnomalyKind::MetadataOrder,
        AnomalyKind::TopicLost,
        AnomalyKind::ReplicaDivergence,
        AnomalyKind::LeaderEpochReused,
    ];

    /// The name Jepsen gives this kind (the keyword without its colon).
    /// `unexpected` comes from Jepsen's queue checkers: its Kafka workload
    /// has no name for reading what was never sent.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::LostWrite => "lost-write",
            AnomalyKind::Unseen => "unseen",
            AnomalyKind::Duplicate => "duplicate",
            AnomalyKind::InconsistentOffsets => "inconsistent-offsets",
            AnomalyKind::G1a => "G1a",
            AnomalyKind::Unexpected => "unexpected",
            AnomalyKind::NonmonotonicSend => "nonmonotonic-send",
            AnomalyKind::ReorderedSend => "reordered-send",
            AnomalyKind::NonmonotonicPoll => "nonmonotonic-poll",
            AnomalyKind::IntNonmonotonicPoll => "int-nonmonotonic-poll",
            AnomalyKind::PollSkip => "poll-skip",
            AnomalyKind::IntPollSkip => "int-poll-skip",
            AnomalyKind::MisplacedKey => "misplaced-key",
            AnomalyKind::NonLinearizable => "nonlinearizable",
            AnomalyKind::GroupDoubleOwner => "group-double-owner",
            AnomalyKind::CommitRegression => "commit-regression",
            AnomalyKind::GroupUnconsumed => "group-unconsumed",
            AnomalyKind::QuorumTwoLeaders => "quorum-two-leaders",
            AnomalyKind::MetadataDivergence => "metadata-divergence",
            AnomalyKind::MetadataOrder => "metadata-order",
            AnomalyKind::TopicLost => "topic-lost",
            AnomalyKind::ReplicaDivergence => "replica-divergence",
            AnomalyKind::LeaderEpochReused => "leader-epoch-reused",
        }
    }

    /// One line saying what the kind means.
    pub fn description(self) -> &'static str {
        match self {
            AnomalyKind::LostWrite => {
                "an acknowledged value was never read although later offsets of its partition were"
            }
            AnomalyKind::Unseen => "acknowledged values that no poll ever returned",
            AnomalyKind::Duplicate => "one value appears at more than one offset",
            AnomalyKind::InconsistentOffsets => "one offset holds more than one value",
            AnomalyKind::G1a => "a poll returned a value whose send definitely failed (aborted read)",
            AnomalyKind::Unexpected => "a poll returned a value that no send ever attempted",
            AnomalyKind::NonmonotonicSend => "a producer's later send landed at or before its earlier send",
            AnomalyKind::ReorderedSend => {
                "two sends of one producer in flight at once landed in the opposite order to the send() calls"
            }
            AnomalyKind::NonmonotonicPoll => "a consumer's poll started at or before where its previous poll ended",
            AnomalyKind::IntNonmonotonicPoll => "records within one poll went backwards",
            AnomalyKind::PollSkip => "a consumer's consecutive polls jumped over records known to exist",
            AnomalyKind::IntPollSkip => "consecutive records within one poll jumped over records known to exist",
            AnomalyKind::MisplacedKey => {
                "a keyed record landed on a partition other than Kafka's default partitioner picks"
            }
            AnomalyKind::NonLinearizable => {
                "a partition's appends, reads and end offsets fit no sequential log within their real-time bounds"
            }
            AnomalyKind::GroupDoubleOwner => "two members of a group owned one partition in the same generation",
            AnomalyKind::CommitRegression => "a group's committed offset went backwards",
            AnomalyKind::GroupUnconsumed => {
                "an acknowledged record below the group's committed offset was never consumed by the group"
            }
            AnomalyKind::QuorumTwoLeaders => "two nodes named different metadata quorum leaders for the same epoch",
            AnomalyKind::MetadataDivergence => {
                "two different metadata records were applied at the same offset: committed metadata changed"
            }
            AnomalyKind::MetadataOrder => {
                "a node applied metadata offsets out of order or skipped a committed record within one incarnation"
            }
            AnomalyKind::TopicLost => {
                "a topic whose CreateTopics was acknowledged is missing from a broker's Metadata after the heal"
            }
            AnomalyKind::ReplicaDivergence => {
                "in-sync replicas of a partition hold different batches below the committed offsets, or one lacks some"
            }
            AnomalyKind::LeaderEpochReused => {
                "one leader epoch of a partition was taken by two brokers, or by two runs of one broker"
            }
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AnomalyKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why a Jepsen anomaly name that cannot occur in Faultline's model does
/// not apply, if `name` is one.
fn inapplicable(name: &str) -> Option<&'static str> {
    const TXN: [&str; 5] = ["precommitted-read", "G0", "G1c", "PL-1-cycle-exists", "PL-2-cycle-exists"];
    if name == "int-nonmonotonic-send" || name == "int-send-skip" {
        Some("a send op carries exactly one record, so no op holds two sends to compare")
    } else if TXN.iter().any(|t| name.starts_with(t) || name.strip_prefix("strong-") == Some(t)) {
        Some("it judges transactions, which Faultline does not have")
    } else {
        None
    }
}

/// A name that is not an anomaly kind this checker knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UnknownAnomalyKind {
    pub name: String,
    message: String,
}

impl FromStr for AnomalyKind {
    type Err = UnknownAnomalyKind;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        if let Some(kind) = AnomalyKind::ALL.into_iter().find(|k| k.as_str() == name) {
            return Ok(kind);
        }
        let known: Vec<&str> = AnomalyKind::ALL.iter().map(|k| k.as_str()).collect();
        let message = match inapplicable(name) {
            Some(why) => format!("checker {name:?} does not apply here: {why}"),
            None => format!("unknown checker {name:?}; known: {}", known.join(", ")),
        };
        Err(UnknownAnomalyKind { name: name.to_string(), message })
    }
}

/// Which anomaly kinds make a run invalid. Every check always runs (they
/// share one index and cost little) and every anomaly found is reported;
/// kinds outside this set are reported as informational.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckOptions {
    pub invalid_on: BTreeSet<AnomalyKind>,
    /// Search steps the linearizability checker may spend on one history
    /// before answering `unknown`.
    pub lin_budget: u64,
    /// Why the configuration does not promise linearizability, when it
    /// does not (then `nonlinearizable` is informational).
    pub lin_caveat: Option<String>,
    /// Why a correct broker may lose acknowledged writes under this
    /// configuration, when it may (then `lost-write` is informational and
    /// says why).
    pub loss_caveat: Option<String>,
}

impl Default for CheckOptions {
    /// Every kind except `unseen`: values still unread at the end are not
    /// proof of loss unless a read reached past them, and then they are
    /// `lost-write` already.
    fn default() -> Self {
        CheckOptions::with(AnomalyKind::ALL.into_iter().filter(|k| *k != AnomalyKind::Unseen).collect())
    }
}

impl CheckOptions {
    /// Every kind, `unseen` included: Jepsen's own verdict.
    pub fn all() -> Self {
        CheckOptions::with(AnomalyKind::ALL.into_iter().collect())
    }

    /// These kinds fatal, the default linearizability budget.
    pub fn with(invalid_on: BTreeSet<AnomalyKind>) -> Self {
        CheckOptions {
            invalid_on,
            lin_budget: crate::linearizability::DEFAULT_BUDGET,
            lin_caveat: None,
            loss_caveat: None,
        }
    }

    /// The kinds a scenario names, e.g. `["lost-write", "duplicate"]`.
    pub fn from_names(names: &[String]) -> anyhow::Result<CheckOptions> {
        if names.is_empty() {
            anyhow::bail!(
                "no checkers named; name at least one of: {}",
                AnomalyKind::ALL.map(|k| k.as_str()).join(", ")
            );
        }
        let invalid_on = names.iter().map(|n| n.parse::<AnomalyKind>()).collect::<Result<_, _>>()?;
        Ok(CheckOptions::with(invalid_on))
    }
}
