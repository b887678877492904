//! Order within consumer sessions: each poll of a partition should pick up
//! right after the session's previous poll of it (`nonmonotonic-poll`,
//! `poll-skip`), and the records of one poll should follow each other
//! (`int-nonmonotonic-poll`, `int-poll-skip`).
//!
//! A skip needs proof: an offset strictly between two consecutive reads that
//! some acknowledged send or some poll shows to hold a record. Holes nobody
//! saw filled are not skips. A session's positions are forgotten when it
//! assigns partitions (which may seek) or crashes; Jepsen keeps positions
//! of partitions an assign still covers, but our assign may move them.

use std::collections::BTreeMap;

use super::index::Index;
use super::kind::AnomalyKind;
use super::report::{capped, partition_name, Anomaly};
use super::values::op_indexes;
use crate::history::{History, Op, OpKind, Outcome, Polled, TopicPartition};

/// The last record a session read of a partition.
#[derive(Clone, Copy)]
struct Last<'h> {
    offset: i64,
    value: &'h str,
    op: &'h Op,
}

pub(super) fn poll_order(history: &History, ix: &Index, out: &mut Vec<Anomaly>) {
    let mut sessions: BTreeMap<u64, BTreeMap<&TopicPartition, Last>> = BTreeMap::new();
    for op in &history.ops {
        match &op.kind {
            OpKind::Assign { .. } if !matches!(op.outcome, Outcome::Fail { .. }) => {
                sessions.remove(&op.process);
            }
            OpKind::Crash => {
                sessions.remove(&op.process);
            }
            OpKind::Poll { records } => {
                let session = sessions.entry(op.process).or_default();
                for (p, recs) in by_partition(records) {
                    let mut prev = session.get(p).copied();
                    let mut internal = false;
                    for r in recs {
                        let next = Last { offset: r.offset, value: &r.value, op };
                        if let Some(prev) = prev {
                            out.extend(step(ix, p, prev, next, internal));
                        }
                        prev = Some(next);
                        internal = true;
                    }
                    // As in Jepsen, only a poll known to have completed moves
                    // the session on; any poll is still checked.
                    if let (Outcome::Ok, Some(last)) = (&op.outcome, prev) {
                        session.insert(p, last);
                    }
                }
            }
            _ => {}
        }
    }
}

/// A poll's records grouped by partition, each group in the order returned.
fn by_partition(records: &[Polled]) -> BTreeMap<&TopicPartition, Vec<&Polled>> {
    let mut groups: BTreeMap<&TopicPartition, Vec<&Polled>> = BTreeMap::new();
    for r in records {
        groups.entry(&r.partition).or_default().push(r);
    }
    groups
}

/// Judges one read following another in the same session: `internal` when
/// both came from one poll.
fn step(ix: &Index, p: &TopicPartition, prev: Last, next: Last, internal: bool) -> Option<Anomaly> {
    let (backwards, skip) = if internal {
        (AnomalyKind::IntNonmonotonicPoll, AnomalyKind::IntPollSkip)
    } else {
        (AnomalyKind::NonmonotonicPoll, AnomalyKind::PollSkip)
    };
    let context = if internal {
        format!("within poll #{}", next.op.index)
    } else {
        format!("between polls #{} and #{} of process {}", prev.op.index, next.op.index, next.op.process)
    };
    let name = partition_name(p);
    let (kind, explanation) = if next.offset <= prev.offset {
        (
            backwards,
            format!(
                "{context}, {name}@{} ({:?}) came after {name}@{} ({:?})",
                next.offset, next.value, prev.offset, prev.value
            ),
        )
    } else {
        let skipped = ix.known_between(p, prev.offset, next.offset);
        if skipped.is_empty() {
            return None;
        }
        (
            skip,
            format!(
                "{context}, {name} jumped from offset {} to {} over {} known record(s) at {}",
                prev.offset,
                next.offset,
                skipped.len(),
                capped(&skipped)
            ),
        )
    };
    Some(Anomaly {
        kind,
        partition: Some(p.clone()),
        offsets: vec![prev.offset, next.offset],
        values: vec![prev.value.to_string(), next.value.to_string()],
        ops: op_indexes([prev.op, next.op]),
        explanation,
    })
}
