//! Checks on each value and each offset on their own: one value per offset
//! (`inconsistent-offsets`), one offset per value (`duplicate`), and every
//! value read having a send that could have written it (`G1a`,
//! `unexpected`).

use std::collections::BTreeSet;

use super::index::Index;
use super::kind::AnomalyKind;
use super::report::{partition_name, Anomaly};
use crate::history::{Op, Outcome, TopicPartition};

pub(super) fn inconsistent_offsets(ix: &Index, out: &mut Vec<Anomaly>) {
    for (p, log) in &ix.logs {
        for (offset, slot) in log.iter().filter(|(_, slot)| slot.len() > 1) {
            out.push(Anomaly {
                kind: AnomalyKind::InconsistentOffsets,
                partition: Some(p.clone()),
                offsets: vec![*offset],
                values: slot.keys().map(|v| v.to_string()).collect(),
                ops: op_indexes(slot.values().flatten().copied()),
                explanation: format!("{} values observed at {}@{offset}", slot.len(), partition_name(p)),
            });
        }
    }
}

pub(super) fn duplicates(ix: &Index, out: &mut Vec<Anomaly>) {
    for (value, at) in ix.positions.iter().filter(|(_, at)| at.len() > 1) {
        let places: BTreeSet<&TopicPartition> = at.iter().map(|(p, _)| p).collect();
        let ops = at.iter().flat_map(|(p, o)| ix.ops_at(p, *o, value).iter().copied());
        let where_: Vec<String> = at.iter().map(|(p, o)| format!("{}@{o}", partition_name(p))).collect();
        out.push(Anomaly {
            kind: AnomalyKind::Duplicate,
            partition: (places.len() == 1).then(|| at[0].0.clone()),
            offsets: at.iter().map(|(_, o)| *o).collect(),
            values: vec![value.to_string()],
            ops: op_indexes(ops),
            explanation: format!("{value:?} observed at {} positions: {}", at.len(), where_.join(", ")),
        });
    }
}

/// `G1a` for values whose every send failed, `unexpected` for values never
/// sent. Jepsen calls a read of a failed write an aborted read (G1a) even
/// without transactions: a definite failure promised the value would never
/// exist. Its Kafka workload has no name for a value nobody sent (it treats
/// one as a broken history); its queue checkers call those `unexpected`.
pub(super) fn provenance(ix: &Index, out: &mut Vec<Anomaly>) {
    for (value, reads) in &ix.reads {
        let sends = ix.sends.get(value).map(Vec::as_slice).unwrap_or_default();
        let kind = if sends.is_empty() {
            AnomalyKind::Unexpected
        } else if sends.iter().all(|s| matches!(s.op.outcome, Outcome::Fail { .. })) {
            AnomalyKind::G1a
        } else {
            continue;
        };
        let places: BTreeSet<&TopicPartition> = reads.iter().map(|r| r.partition).collect();
        let offsets: BTreeSet<i64> = reads.iter().map(|r| r.offset).collect();
        let readers = op_indexes(reads.iter().map(|r| r.op));
        let explanation = match kind {
            AnomalyKind::G1a => format!(
                "{value:?} was read by {} poll(s) although its send failed: {}",
                readers.len(),
                sends
                    .iter()
                    .map(|s| match &s.op.outcome {
                        Outcome::Fail { error } => format!("#{} {error}", s.op.index),
                        _ => format!("#{}", s.op.index),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            _ => format!("{value:?} was read by {} poll(s) but no send ever attempted it", readers.len()),
        };
        out.push(Anomaly {
            kind,
            partition: (places.len() == 1).then(|| reads[0].partition.clone()),
            offsets: offsets.into_iter().collect(),
            values: vec![value.to_string()],
            ops: op_indexes(sends.iter().map(|s| s.op).chain(reads.iter().map(|r| r.op))),
            explanation,
        });
    }
}

/// History indexes of some ops, ascending and without repeats.
pub(super) fn op_indexes<'h>(ops: impl IntoIterator<Item = &'h Op>) -> Vec<u64> {
    let set: BTreeSet<u64> = ops.into_iter().map(|op| op.index).collect();
    set.into_iter().collect()
}
