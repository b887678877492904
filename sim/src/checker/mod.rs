//! The Kafka checkers: judge a recorded history for the anomalies of
//! Jepsen's Kafka workload (`jepsen.tests.kafka`), named as Jepsen names
//! them so results compare.
//!
//! Faultline's model is Jepsen's without transactions: a send carries one
//! unique value and, when acknowledged, the (partition, offset) it landed
//! at; a poll returns (partition, offset, value) records; a session is a
//! `process`. Every check is a pure, deterministic function of the history,
//! near-linear in its size, except the linearizability check
//! ([`crate::linearizability`]), a search bounded by a step budget.
//!
//! Consumer groups add their own checks (`groups`): exclusive ownership
//! within a generation, committed offsets that never go backwards, and every
//! record below the committed offsets consumed by the group.
//!
//! A cluster with a metadata quorum adds the quorum checks (`quorum`): one
//! leader per epoch, committed metadata that never changes and applied in
//! order, and acknowledged topics that every broker lists after the heal.
//!
//! A cluster run also hands the checkers every broker's copy of every data
//! partition's log (`replicas`): in-sync copies must be identical below what
//! the final read saw committed. Brokers report each partition leadership they take
//! (`leader_epochs`): one leader epoch, one broker in one run.

mod groups;
mod index;
mod kind;
mod leader_epochs;
mod lost;
mod placement;
mod polls;
mod promise;
mod quorum;
mod replicas;
mod report;
mod sends;
mod values;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

pub use kind::{AnomalyKind, CheckOptions, UnknownAnomalyKind};
pub use promise::promised;
pub use quorum::leader_elected_after;
pub use report::{Anomaly, Report, Stats};

use crate::history::{History, OpKind, Outcome};
use index::Index;

/// Judge a history. Anomalies come grouped by kind, in [`AnomalyKind::ALL`]
/// order, and within a kind in partition, offset or history order.
pub fn check(history: &History, opts: &CheckOptions) -> Report {
    let ix = Index::build(history);
    let mut found = Vec::new();
    let unseen = lost::lost_and_unseen(&ix, &mut found);
    values::duplicates(&ix, &mut found);
    values::inconsistent_offsets(&ix, &mut found);
    values::provenance(&ix, &mut found);
    sends::send_order(history, &mut found);
    sends::call_order(history, &mut found);
    polls::poll_order(history, &ix, &mut found);
    placement::key_placement(history, &mut found);
    let lin = crate::linearizability::kafka::check_history(history, opts.lin_budget);
    found.extend(lin.failures().map(|p| Anomaly {
        kind: AnomalyKind::NonLinearizable,
        partition: Some(p.partition.clone()),
        offsets: Vec::new(),
        values: Vec::new(),
        ops: {
            let mut ops: Vec<u64> = p.prefix_tail.iter().copied().chain(p.unplaceable).collect();
            ops.sort_unstable();
            ops.dedup();
            ops
        },
        explanation: p.explanation(),
    }));
    groups::group_checks(history, &mut found);
    quorum::quorum_checks(history, &mut found);
    replicas::replica_checks(history, &mut found);
    leader_epochs::leader_epoch_checks(history, &mut found);
    // Stable, so each kind keeps the order its check produced.
    found.sort_by_key(|a| a.kind);

    let stats = stats(history, &ix, unseen);
    let mut report = Report::new(found, stats, &opts.invalid_on, &history.ops);
    report.linearizability = lin;
    report.lin_caveat = opts.lin_caveat.clone();
    report.loss_caveat = opts.loss_caveat.clone();
    report
}

fn stats(history: &History, ix: &Index, unseen: usize) -> Stats {
    let mut s = Stats { ops: history.ops.len(), values_read: ix.reads.len(), unseen, ..Stats::default() };
    for op in &history.ops {
        s.final_read_ops += usize::from(op.final_read);
        match (&op.kind, &op.outcome) {
            (OpKind::Send { .. }, Outcome::Ok) => s.sends_ok += 1,
            (OpKind::Send { .. }, Outcome::Fail { .. }) => s.sends_fail += 1,
            (OpKind::Send { .. }, Outcome::Info { .. }) => s.sends_info += 1,
            (OpKind::Poll { records }, _) => {
                s.polls += 1;
                s.records_read += records.len();
            }
            _ => {}
        }
    }
    s
}
