//! Replica log identity (`replica-divergence`): below what the final read
//! saw committed, every in-sync copy of a partition holds the same batches,
//! byte for byte.
//!
//! Replication copies the leader's batches verbatim, base offset and
//! partition leader epoch included, and a follower joins the ISR only once
//! it has truncated whatever it held past its divergence point and fetched
//! up to the high watermark. So at the end of a run, for each data
//! partition:
//!
//! - `H` is one past the highest offset the final read returned: the final
//!   read fetches only below the leader's high watermark, so everything
//!   below `H` was committed;
//! - the ISR is the one every broker's final Metadata answer agrees on (the
//!   intersection, so a broker whose image still lists a replica the
//!   controller has since removed cannot condemn it);
//! - every ISR member must hold every offset below `H` — one that stops
//!   short lost committed data — and all of them must hold identical batches
//!   there (same base offset, last offset, leader epoch, CRC and bytes).
//!
//! Replicas outside the ISR are not judged: a lagging follower may still
//! carry an uncommitted suffix from an old epoch it has not truncated yet.
//! With one replica per partition there is nothing to compare, and the
//! check passes trivially; a history without replica logs (one read back
//! from JSON lines, or a single-broker run) has nothing to judge.

use std::collections::{BTreeMap, BTreeSet};

use super::kind::AnomalyKind;
use super::report::{partition_name, Anomaly};
use crate::history::{History, OpKind, Outcome, ReplicaBatch, ReplicaLog, TopicPartition};

/// Adds a `replica-divergence` anomaly for every ISR member that stops
/// short of the committed offsets or holds a batch below them that differs
/// from the first member's.
pub(super) fn replica_checks(history: &History, out: &mut Vec<Anomaly>) {
    if history.replicas.is_empty() {
        return;
    }
    let committed = committed_ends(history);
    let isr = final_isr(history);
    let mut logs: BTreeMap<&TopicPartition, Vec<&ReplicaLog>> = BTreeMap::new();
    for log in &history.replicas {
        logs.entry(&log.partition).or_default().push(log);
    }
    for (tp, copies) in logs {
        let Some(&h) = committed.get(tp) else { continue };
        let Some(members) = isr.get(&tp.key()) else { continue };
        let in_isr: Vec<&ReplicaLog> = copies.into_iter().filter(|l| members.contains(&l.node)).collect();
        out.extend(compare(tp, h, members, &in_isr));
    }
}

/// Per partition, one past the highest offset the final read returned.
fn committed_ends(history: &History) -> BTreeMap<&TopicPartition, i64> {
    let mut ends: BTreeMap<&TopicPartition, i64> = BTreeMap::new();
    for op in history.ops.iter().filter(|op| op.final_read) {
        if let OpKind::Poll { records } = &op.kind {
            for r in records {
                let e = ends.entry(&r.partition).or_insert(0);
                *e = (*e).max(r.offset + 1);
            }
        }
    }
    ends
}

/// Per `topic-partition`, the replicas every broker's final Metadata answer
/// listed as in sync.
fn final_isr(history: &History) -> BTreeMap<String, BTreeSet<i32>> {
    let mut isr: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for op in history.ops.iter().filter(|op| op.final_read && op.outcome == Outcome::Ok) {
        if let OpKind::Metadata { isr: listed, .. } = &op.kind {
            for (tp, nodes) in listed {
                let nodes: BTreeSet<i32> = nodes.iter().copied().collect();
                match isr.get_mut(tp) {
                    Some(known) => known.retain(|n| nodes.contains(n)),
                    None => {
                        isr.insert(tp.clone(), nodes);
                    }
                }
            }
        }
    }
    isr
}

/// Judge the ISR copies of one partition below the committed end `h`.
/// `members` are the node ids the ISR lists; `copies` the logs read from
/// those of them that have a copy on disk.
pub(super) fn compare(tp: &TopicPartition, h: i64, members: &BTreeSet<i32>, copies: &[&ReplicaLog]) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let name = partition_name(tp);
    let anomaly = |offsets: Vec<i64>, explanation: String| Anomaly {
        kind: AnomalyKind::ReplicaDivergence,
        partition: Some(tp.clone()),
        offsets,
        values: Vec::new(),
        ops: Vec::new(),
        explanation,
    };
    for node in members {
        if h > 0 && !copies.iter().any(|l| l.node == *node) {
            out.push(anomaly(
                vec![h - 1],
                format!("node {node} is in the final ISR of {name} but has no copy of it; the final read saw offsets up to {}", h - 1),
            ));
        }
    }
    let mut whole = Vec::new();
    for log in copies {
        let end = log.end_offset();
        if end < h {
            let why = log.stopped.as_ref().map_or(String::new(), |s| format!(" (reading stopped at {s})"));
            let holds =
                if end == 0 { "holds no offsets".to_string() } else { format!("holds offsets only below {end}") };
            out.push(anomaly(
                vec![end, h - 1],
                format!(
                    "{} (node {}) is in the final ISR of {name} but {holds}{why}; the final read saw committed \
                     offsets up to {}",
                    log.host,
                    log.node,
                    h - 1
                ),
            ));
        } else {
            whole.push(*log);
        }
    }
    // Compare from the latest log start any of them has (none deletes
    // segments in a run today, but a copy rebuilt from a later start is
    // not wrong for lacking what retention removed).
    let start = whole.iter().filter_map(|l| l.batches.first().map(|b| b.base_offset)).max().unwrap_or(0);
    let below = |l: &ReplicaLog| -> Vec<ReplicaBatch> {
        l.batches.iter().filter(|b| b.base_offset >= start && b.base_offset < h).copied().collect()
    };
    let Some((reference, rest)) = whole.split_first() else { return out };
    let want = below(reference);
    for other in rest {
        let got = below(other);
        let Some(i) = (0..want.len().max(got.len())).find(|&i| want.get(i) != got.get(i)) else { continue };
        let (a, b) = (want.get(i), got.get(i));
        let at = a.or(b).map_or(start, |x| x.base_offset);
        out.push(anomaly(
            vec![at],
            format!(
                "{name} below committed offset {h}: {} (node {}) holds {} where {} (node {}) holds {}",
                reference.host,
                reference.node,
                describe(a),
                other.host,
                other.node,
                describe(b)
            ),
        ));
    }
    out
}

fn describe(b: Option<&ReplicaBatch>) -> String {
    match b {
        None => "no batch".into(),
        Some(b) => format!(
            "batch {}..={} (leader epoch {}, crc {:08x}, {} bytes, digest {:016x})",
            b.base_offset, b.last_offset, b.leader_epoch, b.crc, b.size, b.digest
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> TopicPartition {
        TopicPartition { topic: "events".into(), partition: 0 }
    }

    /// A log of batches of `sizes` records each, from offset 0, leader epoch 1.
    fn log(node: i32, sizes: &[i64]) -> ReplicaLog {
        let mut batches = Vec::new();
        let mut next = 0;
        for (i, n) in sizes.iter().enumerate() {
            batches.push(ReplicaBatch {
                base_offset: next,
                last_offset: next + n - 1,
                leader_epoch: 1,
                crc: 0x1000 + i as u32,
                size: 100,
                digest: 0xabc0 + i as u64,
            });
            next += n;
        }
        ReplicaLog { host: format!("broker-{node}"), node, partition: tp(), batches, stopped: None }
    }

    fn isr(nodes: &[i32]) -> BTreeSet<i32> {
        nodes.iter().copied().collect()
    }

    #[test]
    fn identical_copies_agree() {
        let (a, b, c) = (log(0, &[3, 2, 5]), log(1, &[3, 2, 5]), log(2, &[3, 2, 5]));
        assert!(compare(&tp(), 10, &isr(&[0, 1, 2]), &[&a, &b, &c]).is_empty());
    }

    #[test]
    fn one_replica_is_trivially_identical() {
        assert!(compare(&tp(), 10, &isr(&[0]), &[&log(0, &[3, 2, 5])]).is_empty());
    }

    #[test]
    fn one_diverging_byte_is_found() {
        let a = log(0, &[3, 2, 5]);
        let mut b = log(1, &[3, 2, 5]);
        b.batches[1].digest ^= 1;
        let found = compare(&tp(), 10, &isr(&[0, 1]), &[&a, &b]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, AnomalyKind::ReplicaDivergence);
        assert_eq!(found[0].offsets, vec![3]);
        assert!(found[0].explanation.contains("broker-1"), "{}", found[0].explanation);
    }

    #[test]
    fn a_different_leader_epoch_is_divergence() {
        let a = log(0, &[3, 2]);
        let mut b = log(1, &[3, 2]);
        b.batches[0].leader_epoch = 2;
        assert_eq!(compare(&tp(), 5, &isr(&[0, 1]), &[&a, &b]).len(), 1);
    }

    #[test]
    fn an_isr_member_short_of_the_committed_end_is_found() {
        let (a, b) = (log(0, &[3, 2, 5]), log(1, &[3, 2]));
        let found = compare(&tp(), 10, &isr(&[0, 1]), &[&a, &b]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].explanation.contains("only below 5"), "{}", found[0].explanation);
        // Below what it holds, the shorter copy is judged like any other.
        assert!(compare(&tp(), 5, &isr(&[0, 1]), &[&a, &b]).is_empty());
    }

    #[test]
    fn a_missing_isr_member_is_found() {
        let a = log(0, &[3]);
        let found = compare(&tp(), 3, &isr(&[0, 2]), &[&a]);
        assert_eq!(found.len(), 1);
        assert!(found[0].explanation.contains("node 2"), "{}", found[0].explanation);
    }

    #[test]
    fn differences_past_the_committed_end_are_not_judged() {
        let a = log(0, &[3, 2, 5]);
        let mut b = log(1, &[3, 2, 4]);
        b.batches[2].digest ^= 1;
        assert!(compare(&tp(), 5, &isr(&[0, 1]), &[&a, &b]).is_empty());
        // A batch that straddles the end is compared whole.
        assert_eq!(compare(&tp(), 6, &isr(&[0, 1]), &[&a, &b]).len(), 1);
    }

    /// A history whose final read returned offsets 0..=4 of `t-0` and
    /// whose brokers listed `isr` (one answer per list) after it.
    fn history(isr_lists: &[&[i32]], replicas: Vec<ReplicaLog>) -> History {
        let mut b = super::super::testkit::Builder::default();
        b.final_poll(1, &[(0, 0, "a"), (0, 1, "b"), (0, 2, "c"), (0, 3, "d"), (0, 4, "e")]);
        for (i, nodes) in isr_lists.iter().enumerate() {
            let isr = BTreeMap::from([("t-0".to_string(), nodes.to_vec())]);
            let kind = OpKind::Metadata { broker: format!("broker-{i}"), topics: vec!["t".into()], isr };
            b.op(2, kind, Outcome::Ok, true);
        }
        let mut h = b.history;
        h.replicas = replicas
            .into_iter()
            .map(|mut l| {
                l.partition = super::super::testkit::part(0);
                l
            })
            .collect();
        h
    }

    fn found(h: &History) -> Vec<Anomaly> {
        let mut out = Vec::new();
        replica_checks(h, &mut out);
        out
    }

    #[test]
    fn only_what_every_broker_lists_in_sync_is_judged() {
        let mut stale = log(1, &[3, 2]);
        stale.batches[1].leader_epoch = 0;
        let h = history(&[&[0, 1], &[0, 1]], vec![log(0, &[3, 2]), stale.clone()]);
        assert_eq!(found(&h).len(), 1, "an ISR member holding another epoch's batch below the committed end");
        // One broker already left node 1 out: not judged.
        let h = history(&[&[0, 1], &[0]], vec![log(0, &[3, 2]), stale]);
        assert!(found(&h).is_empty());
    }

    #[test]
    fn the_committed_end_comes_from_the_final_read() {
        // Offsets 0..=4 were read: a copy holding 0..=2 falls short.
        let h = history(&[&[0, 1]], vec![log(0, &[3, 2]), log(1, &[3])]);
        let f = found(&h);
        assert_eq!(f.len(), 1);
        assert!(f[0].explanation.contains("up to 4"), "{}", f[0].explanation);
    }

    #[test]
    fn nothing_to_judge_without_replica_logs() {
        let h = history(&[&[0, 1]], Vec::new());
        assert!(found(&h).is_empty());
    }
}
