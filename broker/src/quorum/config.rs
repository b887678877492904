//! The quorum core's settings, with Kafka's `controller.quorum.*` names and
//! defaults, and the planted-bug switches the quorum harness must catch.

use std::collections::BTreeSet;

/// Settings of one node's quorum core. Every bound the core keeps is here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumConfig {
    /// `node.id`. A node not in [`Self::voters`] is an observer: it fetches
    /// the log but never votes, never stands for election and is never
    /// counted towards the high watermark.
    pub node_id: i32,
    /// `controller.quorum.voters` (the ids only; addresses are the shell's).
    pub voters: BTreeSet<i32>,
    /// `cluster.id`; requests naming another cluster are refused with
    /// INCONSISTENT_CLUSTER_ID. `None` accepts any.
    pub cluster_id: Option<String>,
    /// `controller.quorum.election.timeout.ms` (1000): how long a voter that
    /// knows no leader waits before standing; each wait is drawn from
    /// `[timeout, 2 * timeout)`.
    pub election_timeout_ms: i64,
    /// `controller.quorum.election.backoff.max.ms` (1000): the longest
    /// (randomised, exponential) pause after a lost election.
    pub election_backoff_max_ms: i64,
    /// `controller.quorum.fetch.timeout.ms` (2000): a follower that has had
    /// no answer from its leader for this long stands for election (after a
    /// pre-vote); a leader that no majority has fetched from for this long
    /// resigns (check-quorum).
    pub fetch_timeout_ms: i64,
    /// `controller.quorum.request.timeout.ms` (2000): an unanswered request
    /// is given up (and retried) after this long.
    pub request_timeout_ms: i64,
    /// `controller.quorum.retry.backoff.ms` (20): pause before resending a
    /// request that failed or timed out.
    pub retry_backoff_ms: i64,
    /// `controller.quorum.fetch.max.wait.ms`-like bound (500): how long the
    /// leader holds a Fetch that has nothing new (long poll); also what
    /// followers ask for.
    pub fetch_max_wait_ms: i64,
    /// Bytes of log returned per Fetch (at least one batch is always
    /// returned) and per FetchSnapshot chunk; Kafka's KRaft uses 8 MiB.
    pub fetch_max_bytes: usize,
    /// Largest batch a Propose may append (Kafka's `MAX_BATCH_SIZE_BYTES`,
    /// 8 MiB); larger proposals are refused with RECORD_LIST_TOO_LARGE.
    pub max_batch_bytes: usize,
    /// Largest snapshot a follower will download (1 GiB); a larger claimed
    /// size is refused rather than buffered.
    pub max_snapshot_bytes: i64,
    /// Observers the leader tracks for DescribeQuorum (1000); fetches from
    /// more are served but not tracked.
    pub max_observers: usize,
    /// An observer not heard from for this long is forgotten (Kafka: 5 min).
    pub observer_session_timeout_ms: i64,
    /// KIP-996: ask for a pre-vote before standing (true). Without it a
    /// Prospective round is won as soon as it starts (Kafka 3.x).
    pub pre_vote: bool,
    /// Planted bugs; all off in real use.
    pub bugs: QuorumBugs,
}

impl QuorumConfig {
    /// Kafka's defaults for a node in the given voter set.
    pub fn new(node_id: i32, voters: impl IntoIterator<Item = i32>) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters: voters.into_iter().collect(),
            cluster_id: None,
            election_timeout_ms: 1000,
            election_backoff_max_ms: 1000,
            fetch_timeout_ms: 2000,
            request_timeout_ms: 2000,
            retry_backoff_ms: 20,
            fetch_max_wait_ms: 500,
            fetch_max_bytes: 8 << 20,
            max_batch_bytes: 8 << 20,
            max_snapshot_bytes: 1 << 30,
            max_observers: 1000,
            observer_session_timeout_ms: 300_000,
            pre_vote: true,
            bugs: QuorumBugs::default(),
        }
    }

    pub fn is_voter(&self) -> bool {
        self.voters.contains(&self.node_id)
    }

    /// Votes (or fetched offsets) that make a majority of the voters.
    pub fn majority(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// Deliberate bugs the deterministic quorum harness must catch (see
/// `quorum::harness`). Each breaks one rule Raft's safety rests on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuorumBugs {
    /// A voter answers "vote granted" before the vote is persisted: a crash
    /// in between lets it vote again, for another candidate, in the same
    /// epoch.
    pub vote_before_persist: bool,
    /// A leader advances the high watermark by counting replicas even over
    /// entries of earlier epochs only, before any entry of its own epoch is
    /// on a majority (Raft's figure 8).
    pub commit_previous_epoch: bool,
    /// A follower ignores the leader's `diverging_epoch`: it keeps its
    /// divergent suffix and takes the leader's high watermark over it.
    pub keep_divergent_suffix: bool,
}

impl QuorumBugs {
    pub fn any(&self) -> bool {
        self.vote_before_persist || self.commit_previous_epoch || self.keep_divergent_suffix
    }
}
