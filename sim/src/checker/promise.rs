//! Which anomalies a configuration promises never to show, and so makes
//! fatal. A check a correct broker can never trip is worth nothing as
//! information: under the configuration that promises it, it fails the run.
//!
//! | anomaly | fatal when (and in every case only while the medium cannot corrupt fsynced data, see below) |
//! |---|---|
//! | `lost-write` | always for acknowledged sends (acks 1 or -1; acks 0 sends are recorded `info` and never count as acknowledged) |
//! | `unseen` | always: the final read pages every partition to the log end the healed broker reports, so an acknowledged value it never returned was dropped |
//! | `duplicate` | with idempotence on, or with no retries (one attempt per send cannot store a value twice); informational when a non-idempotent producer retries |
//! | `inconsistent-offsets` | always |
//! | `nonmonotonic-send` | always: a send invoked after another completed lands after it, retries or not |
//! | `reordered-send` | with idempotence on, or with no retries: only a retry may overtake a batch sent before it |
//! | `nonmonotonic-poll`, `poll-skip` | always, within one consumer session: a seek is recorded as an `assign`, which starts the comparison afresh |
//! | `G1a`, `unexpected`, `int-nonmonotonic-poll`, `int-poll-skip`, `group-double-owner` | always, even when the medium corrupts |
//! | `commit-regression`, `group-unconsumed` | always (offsets are reset only by hand, which no scenario does) |
//! | `misplaced-key` | always, even when the medium corrupts: the producer picks the partition before any byte is stored |
//! | `quorum-two-leaders`, `metadata-divergence`, `metadata-order` | always, even when the medium corrupts: the metadata log is checksummed and replicated on every voter, and these judge only what nodes report they applied |
//! | `leader-epoch-reused` | always, even when the medium corrupts: leader epochs come from the replicated metadata log, and the check judges only what brokers report they took |
//! | `topic-lost` | always (the quorum keeps acknowledged metadata on a majority) |
//! | `nonlinearizable` | one broker, no retries without idempotence, and the medium cannot corrupt (see [`crate::linearizability::kafka`]) |
//! | `replica-divergence` | always, unless the medium corrupts or in-memory acknowledgements (`durability.policy = kafka`) meet power losses of as many replicas as they need: in-sync copies of a partition are identical below what the final read saw committed |
//!
//! Replication adds a second way for a correct broker to lose acknowledged
//! writes ([`Scenario::acked_writes_may_be_lost`]): acks=1 with more than
//! one replica (the leader answers on its own append, and a failover before
//! the followers fetched truncates the batch), and `durability.policy =
//! kafka` when as many replicas as an acknowledgement needs
//! (`min.insync.replicas`) may lose power at once (`power-loss-all`, or
//! that many power-loss nemeses, whose strikes may overlap). Then the
//! offset-reuse anomalies (next paragraph) are informational just as under
//! a corrupting medium, and a lost write is reported as
//! `lost-write` for what it is — the cost of that policy — without failing
//! the run. Under `strict` (every in-sync replica fsynced before the
//! acknowledgement) an acks=all write survives any failure of at most
//! RF − 1 replicas, and every power loss of them all.
//!
//! "The medium may corrupt fsynced data" means bit rot, crash-corrupt, lost
//! or misdirected writes, or fsync failures that drop pages: one replica
//! cannot repair any of them, so a correct broker truncates at the damage,
//! what was acknowledged after it is gone, and its offsets are handed out
//! again. Then every anomaly that offset reuse produces is informational —
//! `lost-write`, `unseen`, `duplicate`, `inconsistent-offsets`,
//! `nonmonotonic-send`, `reordered-send`, `nonmonotonic-poll`, `poll-skip` — and what stays
//! fatal is reading what nobody wrote or what definitely failed (`G1a`,
//! `unexpected`), disorder inside one fetch (`int-*`), and, outside the
//! checkers, a client accepting data that fails its CRC check. The runner's
//! `corrupt-read` finding follows the same rule, and so does its
//! `sequence-refused` finding (an idempotent producer's oldest unfinished
//! batch refused as out of sequence), fatal only with idempotence on.

use super::{AnomalyKind, CheckOptions};
use crate::scenario::Scenario;

/// The anomaly kinds `scenario` (resolved: no swarm ranges left) promises.
pub fn promised(scenario: &Scenario) -> CheckOptions {
    let w = &scenario.workload;
    // Offsets handed out again after acknowledged data vanished: by the
    // medium, or by replication's own acknowledgement rules.
    let rot = scenario.medium_may_corrupt() || scenario.acked_writes_may_be_lost().is_some();
    let lin = crate::linearizability::kafka::promised(scenario);
    let invalid_on = AnomalyKind::ALL
        .into_iter()
        .filter(|k| match k {
            AnomalyKind::G1a
            | AnomalyKind::Unexpected
            | AnomalyKind::IntNonmonotonicPoll
            | AnomalyKind::IntPollSkip
            | AnomalyKind::MisplacedKey
            | AnomalyKind::GroupDoubleOwner
            | AnomalyKind::QuorumTwoLeaders
            | AnomalyKind::MetadataDivergence
            | AnomalyKind::MetadataOrder
            | AnomalyKind::LeaderEpochReused => true,
            AnomalyKind::ReplicaDivergence => !scenario.medium_may_corrupt() && !scenario.in_memory_acks_exposed(),
            _ if rot => false,
            AnomalyKind::Duplicate | AnomalyKind::ReorderedSend => w.idempotence || w.retries == 0,
            AnomalyKind::NonLinearizable => lin.is_ok(),
            _ => true,
        })
        .collect();
    let loss_caveat = if scenario.medium_may_corrupt() { None } else { scenario.acked_writes_may_be_lost() };
    CheckOptions { lin_caveat: lin.err(), loss_caveat, ..CheckOptions::with(invalid_on) }
}
