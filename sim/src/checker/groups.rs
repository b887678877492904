//! Consumer-group checks, from the members' `generation` and `commit`
//! operations and the group's `committed` offsets read back at the end:
//!
//! - `group-double-owner`: two members owning one partition in one
//!   generation (the coordinator must bump the generation at every
//!   rebalance, and the leader's assignment is a partition of the topics);
//! - `commit-regression`: an acknowledged commit of a partition below one
//!   acknowledged before it was invoked (real-time order, so concurrent
//!   commits are not compared), or the offsets read back at the end (after
//!   any coordinator restart) below the last commit acknowledged before the
//!   read. Offsets go back only by an explicit reset, which no scenario does;
//! - `group-unconsumed`: an acknowledged record below the committed offset
//!   read back at the end that no consumer ever polled — the group claims to
//!   have processed what nobody read.

use std::collections::{BTreeMap, BTreeSet};

use super::kind::AnomalyKind;
use super::report::Anomaly;
use crate::history::{History, Op, OpKind, Outcome, TopicPartition};

/// Most offsets one `group-unconsumed` anomaly lists.
const LISTED: usize = 20;

pub(super) fn group_checks(history: &History, out: &mut Vec<Anomaly>) {
    ownership(history, out);
    let commits = acknowledged_commits(history);
    regressions(history, &commits, out);
    unconsumed(history, out);
}

fn partition_of(key: &str) -> Option<TopicPartition> {
    let (topic, p) = key.rsplit_once('-')?;
    Some(TopicPartition { topic: topic.to_string(), partition: p.parse().ok()? })
}

fn ownership(history: &History, out: &mut Vec<Anomaly>) {
    let mut owners: BTreeMap<(i32, &TopicPartition), (&str, &Op)> = BTreeMap::new();
    let mut reported: BTreeSet<(i32, &TopicPartition)> = BTreeSet::new();
    for op in &history.ops {
        let OpKind::Generation { member, generation, partitions } = &op.kind else { continue };
        for p in partitions {
            match owners.get(&(*generation, p)) {
                Some((other, first)) if *other != member.as_str() => {
                    if reported.insert((*generation, p)) {
                        out.push(Anomaly {
                            kind: AnomalyKind::GroupDoubleOwner,
                            partition: Some(p.clone()),
                            offsets: Vec::new(),
                            values: vec![other.to_string(), member.clone()],
                            ops: vec![first.index, op.index],
                            explanation: format!(
                                "generation {generation}: {} is owned by both {other} (op {}) and {member} (op {})",
                                p.key(),
                                first.index,
                                op.index
                            ),
                        });
                    }
                }
                Some(_) => {}
                None => {
                    owners.insert((*generation, p), (member.as_str(), op));
                }
            }
        }
    }
}

/// One acknowledged commit of one partition.
struct Commit<'h> {
    offset: i64,
    op: &'h Op,
}

fn acknowledged_commits(history: &History) -> BTreeMap<String, Vec<Commit<'_>>> {
    let mut by_partition: BTreeMap<String, Vec<Commit>> = BTreeMap::new();
    for op in history.ops.iter().filter(|op| op.outcome == Outcome::Ok) {
        if let OpKind::Commit { offsets, .. } = &op.kind {
            for (key, offset) in offsets {
                by_partition.entry(key.clone()).or_default().push(Commit { offset: *offset, op });
            }
        }
    }
    for commits in by_partition.values_mut() {
        commits.sort_by_key(|c| (c.op.complete_ns, c.op.index));
    }
    by_partition
}

/// The acknowledged commit with the highest offset among those completed
/// before `invoke_ns` (commits sorted by completion).
fn highest_before<'a, 'h>(commits: &'a [Commit<'h>], invoke_ns: u64) -> Option<&'a Commit<'h>> {
    let n = commits.partition_point(|c| c.op.complete_ns < invoke_ns);
    commits[..n].iter().max_by_key(|c| (c.offset, c.op.index))
}

fn regressions(history: &History, commits: &BTreeMap<String, Vec<Commit>>, out: &mut Vec<Anomaly>) {
    for (key, list) in commits {
        for later in list {
            let Some(earlier) = highest_before(list, later.op.invoke_ns) else { continue };
            if later.offset < earlier.offset {
                out.push(Anomaly {
                    kind: AnomalyKind::CommitRegression,
                    partition: partition_of(key),
                    offsets: vec![earlier.offset, later.offset],
                    values: Vec::new(),
                    ops: vec![earlier.op.index, later.op.index],
                    explanation: format!(
                        "{key}: commit of {} (op {}) acknowledged after a commit of {} (op {}) had been",
                        later.offset, later.op.index, earlier.offset, earlier.op.index
                    ),
                });
            }
        }
    }
    for op in history.ops.iter().filter(|op| op.outcome == Outcome::Ok) {
        let OpKind::Committed { offsets } = &op.kind else { continue };
        for (key, list) in commits {
            let Some(earlier) = highest_before(list, op.invoke_ns) else { continue };
            let read = offsets.get(key).copied().unwrap_or(-1);
            if read < earlier.offset {
                out.push(Anomaly {
                    kind: AnomalyKind::CommitRegression,
                    partition: partition_of(key),
                    offsets: vec![earlier.offset, read],
                    values: Vec::new(),
                    ops: vec![earlier.op.index, op.index],
                    explanation: format!(
                        "{key}: the committed offset read back at the end is {read}, below the acknowledged commit of {} (op {})",
                        earlier.offset, earlier.op.index
                    ),
                });
            }
        }
    }
}

fn unconsumed(history: &History, out: &mut Vec<Anomaly>) {
    let Some((committed, read_op)) = history.ops.iter().rev().find_map(|op| match (&op.kind, &op.outcome) {
        (OpKind::Committed { offsets }, Outcome::Ok) => Some((offsets, op)),
        _ => None,
    }) else {
        return;
    };
    let mut polled: BTreeSet<(&TopicPartition, i64)> = BTreeSet::new();
    for op in history.ops.iter().filter(|op| !op.final_read) {
        if let OpKind::Poll { records } = &op.kind {
            polled.extend(records.iter().map(|r| (&r.partition, r.offset)));
        }
    }
    let mut missing: BTreeMap<TopicPartition, Vec<(i64, &Op)>> = BTreeMap::new();
    for op in history.ops.iter().filter(|op| op.outcome == Outcome::Ok) {
        let OpKind::Send { topic, partition: Some(p), offset: Some(offset), .. } = &op.kind else { continue };
        let tp = TopicPartition { topic: topic.clone(), partition: *p };
        let bound = committed.get(&tp.key()).copied().unwrap_or(-1);
        if *offset < bound && !polled.contains(&(&tp, *offset)) {
            missing.entry(tp).or_default().push((*offset, op));
        }
    }
    for (tp, mut list) in missing {
        list.sort_by_key(|(o, _)| *o);
        let bound = committed.get(&tp.key()).copied().unwrap_or(-1);
        out.push(unconsumed_anomaly(&tp, &list, bound, read_op));
    }
}

fn unconsumed_anomaly(tp: &TopicPartition, list: &[(i64, &Op)], bound: i64, read_op: &Op) -> Anomaly {
    let offsets: Vec<i64> = list.iter().take(LISTED).map(|(o, _)| *o).collect();
    let mut ops: Vec<u64> = list.iter().take(LISTED).map(|(_, op)| op.index).collect();
    ops.push(read_op.index);
    ops.sort_unstable();
    Anomaly {
        kind: AnomalyKind::GroupUnconsumed,
        partition: Some(tp.clone()),
        offsets: offsets.clone(),
        values: Vec::new(),
        ops,
        explanation: format!(
            "{}: {} acknowledged records below the committed offset {bound} were never polled (first: {offsets:?})",
            tp.key(),
            list.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Polled;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition { topic: "t".into(), partition: p }
    }

    fn push(h: &mut History, process: u64, t: (u64, u64), kind: OpKind) {
        h.push(Op {
            index: 0,
            process,
            node: format!("n{process}"),
            invoke_ns: t.0,
            complete_ns: t.1,
            kind,
            outcome: Outcome::Ok,
            final_read: false,
        });
    }

    fn commit(offset: i64) -> OpKind {
        OpKind::Commit { offsets: [("t-0".to_string(), offset)].into(), generation: Some(1) }
    }

    fn kinds(h: &History) -> Vec<AnomalyKind> {
        let mut out = Vec::new();
        group_checks(h, &mut out);
        out.into_iter().map(|a| a.kind).collect()
    }

    #[test]
    fn two_owners_in_one_generation() {
        let mut h = History::default();
        push(
            &mut h,
            1,
            (1, 2),
            OpKind::Generation { member: "a".into(), generation: 1, partitions: vec![tp(0), tp(1)] },
        );
        push(&mut h, 2, (3, 4), OpKind::Generation { member: "b".into(), generation: 2, partitions: vec![tp(1)] });
        assert!(kinds(&h).is_empty(), "a new generation may move partitions");
        push(&mut h, 2, (5, 6), OpKind::Generation { member: "b".into(), generation: 1, partitions: vec![tp(1)] });
        assert_eq!(kinds(&h), [AnomalyKind::GroupDoubleOwner]);
    }

    #[test]
    fn commits_going_back_in_real_time() {
        let mut h = History::default();
        push(&mut h, 1, (1, 10), commit(5));
        push(&mut h, 2, (5, 20), commit(3));
        assert!(kinds(&h).is_empty(), "concurrent commits are not ordered");
        push(&mut h, 2, (30, 40), commit(4));
        assert_eq!(kinds(&h), [AnomalyKind::CommitRegression]);
    }

    #[test]
    fn read_back_below_the_last_acknowledged_commit() {
        let mut h = History::default();
        push(&mut h, 1, (1, 10), commit(5));
        push(&mut h, 9, (20, 30), OpKind::Committed { offsets: [("t-0".to_string(), 5)].into() });
        assert!(kinds(&h).is_empty());
        push(&mut h, 9, (40, 50), OpKind::Committed { offsets: [("t-0".to_string(), 4)].into() });
        assert_eq!(kinds(&h), [AnomalyKind::CommitRegression]);
    }

    #[test]
    fn records_below_the_committed_offset_must_have_been_polled() {
        let mut h = History::default();
        for o in 0..3 {
            let send = OpKind::Send {
                topic: "t".into(),
                key: None,
                value: format!("v{o}"),
                partition: Some(0),
                offset: Some(o),
            };
            push(&mut h, 1, (1, 2), send);
        }
        let polled = |o: i64| Polled { partition: tp(0), offset: o, value: format!("v{o}") };
        push(&mut h, 2, (3, 4), OpKind::Poll { records: vec![polled(0), polled(2)] });
        push(&mut h, 9, (5, 6), OpKind::Committed { offsets: [("t-0".to_string(), 1)].into() });
        assert!(kinds(&h).is_empty());
        push(&mut h, 9, (7, 8), OpKind::Committed { offsets: [("t-0".to_string(), 3)].into() });
        assert_eq!(kinds(&h), [AnomalyKind::GroupUnconsumed]);
    }
}
