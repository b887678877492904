//! Acknowledged values that readers did not see: `lost-write` when some read
//! proves they should have, `unseen` otherwise.
//!
//! A value is lost by Jepsen's rule when a poll of its partition returned a
//! value whose earliest offset lies at or past the lost value's latest one,
//! and no poll of that partition ever returned it. The final read phase adds
//! a second rule: like Jepsen's final polls it seeks to the beginning of
//! every partition, so each acknowledged value at or below the highest
//! offset it returned of a partition (its reach) must be among what it
//! returned, even if an earlier consumer saw the value before it vanished.
//! And when the final read of a partition completed — its `Assign` op is
//! marked `final_read` and ended `ok`, which the simulator records only once
//! the reader reached the log end offset the healed broker reported — every
//! acknowledged value of that partition must be among what it returned: one
//! missing past the reach was cut from the tail of the log.

use std::collections::BTreeMap;

use super::index::{Index, Read};
use super::kind::AnomalyKind;
use super::report::{partition_name, Anomaly};
use super::values::op_indexes;
use crate::history::{Op, OpKind, Outcome, TopicPartition};

/// The read that shows how far a partition was read: the value with the
/// highest earliest offset any poll returned.
struct Bound<'h> {
    offset: i64,
    value: &'h str,
    op: &'h Op,
}

/// What the final read phase returned of one partition.
#[derive(Default)]
struct FinalRead<'h> {
    /// Offset to the first final-read op that returned it.
    offsets: BTreeMap<i64, &'h Op>,
    /// The final read's `Assign`, if it read this partition to its end.
    completed: Option<&'h Op>,
}

/// An acknowledged value nobody read: where it landed, if known, and its send.
type Unread<'h> = (Option<i64>, &'h str, &'h Op);

/// Adds `lost-write` and `unseen` anomalies; returns how many distinct
/// acknowledged values no poll returned.
pub(super) fn lost_and_unseen(ix: &Index, out: &mut Vec<Anomaly>) -> usize {
    let mut bounds: BTreeMap<&TopicPartition, Bound> = BTreeMap::new();
    let mut finals: BTreeMap<&TopicPartition, FinalRead> = BTreeMap::new();
    for (value, reads) in &ix.reads {
        for r in reads {
            let first = ix.offsets_in(value, r.partition).next().unwrap_or(r.offset);
            if bounds.get(r.partition).is_none_or(|b| first > b.offset) {
                let bound = Bound { offset: first, value, op: r.op };
                bounds.insert(r.partition, bound);
            }
            if r.op.final_read {
                let fin = finals.entry(r.partition).or_default();
                fin.offsets.entry(r.offset).or_insert(r.op);
            }
        }
    }

    for op in ix.ops.iter().filter(|op| op.final_read && op.outcome == Outcome::Ok) {
        if let OpKind::Assign { partitions } = &op.kind {
            for p in partitions {
                finals.entry(p).or_default().completed = Some(op);
            }
        }
    }

    let mut unseen: BTreeMap<Option<&TopicPartition>, Vec<Unread>> = BTreeMap::new();
    let mut unseen_values = 0;
    for (value, sends) in &ix.sends {
        let reads = ix.reads.get(value).map(Vec::as_slice).unwrap_or_default();
        let mut counted = false;
        for s in sends.iter().filter(|s| s.op.outcome == Outcome::Ok) {
            let Some((p, offset)) = &s.at else {
                if reads.is_empty() {
                    unseen.entry(None).or_default().push((None, value, s.op));
                }
                continue;
            };
            let lost = by_bound(ix, value, p, reads, bounds.get(p))
                .or_else(|| by_final_read(p, *offset, reads, finals.get(p)));
            if let Some((witness, witness_offset, explanation)) = lost {
                out.push(Anomaly {
                    kind: AnomalyKind::LostWrite,
                    partition: Some(p.clone()),
                    // The lost offset, then the read one that proves it.
                    offsets: vec![*offset, witness_offset],
                    values: vec![value.to_string()],
                    ops: op_indexes([s.op, witness]),
                    explanation: format!("{value:?} acknowledged at {}@{offset} {explanation}", partition_name(p)),
                });
            } else if reads.is_empty() {
                unseen.entry(Some(p)).or_default().push((Some(*offset), value, s.op));
            }
            if reads.is_empty() && !counted {
                counted = true;
                unseen_values += 1;
            }
        }
    }

    for (p, mut vals) in unseen {
        vals.sort_by_key(|(o, v, _)| (*o, *v));
        let reach = match p.and_then(|p| finals.get(p)).and_then(|f| f.offsets.keys().last()) {
            Some(hi) => format!("the final read stopped at offset {hi}"),
            None => "no final read returned this partition".to_string(),
        };
        out.push(Anomaly {
            kind: AnomalyKind::Unseen,
            partition: p.cloned(),
            offsets: vals.iter().filter_map(|(o, _, _)| *o).collect(),
            values: vals.iter().map(|(_, v, _)| v.to_string()).collect(),
            ops: op_indexes(vals.iter().map(|(_, _, op)| *op)),
            explanation: format!("{} acknowledged value(s) never read; {reach}", vals.len()),
        });
    }
    unseen_values
}

/// Jepsen's rule: never read in its partition, though a read reached past it.
fn by_bound<'h>(
    ix: &Index<'h>,
    value: &str,
    p: &TopicPartition,
    reads: &[Read<'h>],
    bound: Option<&Bound<'h>>,
) -> Option<(&'h Op, i64, String)> {
    let bound = bound?;
    if reads.iter().any(|r| r.partition == p) {
        return None;
    }
    let last = ix.offsets_in(value, p).last()?;
    (last <= bound.offset).then(|| {
        (
            bound.op,
            bound.offset,
            format!("was never read, yet #{} read {:?} at offset {}", bound.op.index, bound.value, bound.offset),
        )
    })
}

/// The final read's rule: within its reach (or anywhere, once it read the
/// partition to its end), but not returned.
fn by_final_read<'h>(
    p: &TopicPartition,
    offset: i64,
    reads: &[Read<'h>],
    fin: Option<&FinalRead<'h>>,
) -> Option<(&'h Op, i64, String)> {
    let fin = fin?;
    if reads.iter().any(|r| r.op.final_read && r.partition == p) {
        return None;
    }
    let reach = fin.offsets.keys().last().copied();
    if let (Some(assign), true) = (fin.completed, reach.is_none_or(|r| offset > r)) {
        let reach = reach.map_or("nothing".to_string(), |r| format!("up to offset {r}"));
        return Some((
            assign,
            offset,
            format!("is missing from the completed final read, which returned {reach} and reached the log end"),
        ));
    }
    let reach = reach?;
    if offset > reach {
        return None;
    }
    let (at, witness) = fin.offsets.range(offset..).next()?;
    Some((*witness, *at, format!("is missing from the final read, which reached offset {reach}")))
}
