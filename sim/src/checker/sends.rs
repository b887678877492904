//! Order within producer sessions (`nonmonotonic-send`): a send that began
//! after another send of the same session to the same partition completed
//! must land at a higher offset.
//!
//! Jepsen compares each send with the session's previous one because its
//! clients do one thing at a time; a producer may keep several sends in
//! flight, and those promise no order among themselves, so a send is
//! compared with the highest offset among the session's sends that had
//! completed before it was invoked.
//!
//! Sends in flight at once owe the order of their `send()` calls
//! (`reordered-send`): Kafka's producer appends a partition's records to its
//! batches in call order and writes a connection's requests in order, so
//! only a retry can overtake (and with idempotence, not even that). A send
//! is compared with the highest offset among the session's sends to the
//! partition invoked strictly before it and still in flight when it began.
//!
//! Jepsen's `int-nonmonotonic-send` and `int-send-skip` compare the sends of
//! one op; a send op here carries exactly one record, so they cannot occur.

use std::collections::BTreeMap;

use super::index::tp;
use super::kind::AnomalyKind;
use super::report::{partition_name, Anomaly};
use super::values::op_indexes;
use crate::history::{History, Op, OpKind, Outcome, TopicPartition};

/// A send that landed, as the session's running maximum saw it.
struct Sent<'h> {
    complete_ns: u64,
    /// The highest-offset send of the session to the partition up to and
    /// including this one: (offset, value, op).
    highest: (i64, &'h str, &'h Op),
}

pub(super) fn send_order(history: &History, out: &mut Vec<Anomaly>) {
    let mut sessions: BTreeMap<(u64, TopicPartition), Vec<Sent>> = BTreeMap::new();
    for op in &history.ops {
        let (Some((p, offset)), OpKind::Send { value, .. }) = (landed(op), &op.kind) else {
            continue;
        };
        let offset = &offset;
        let name = partition_name(&p);
        let sent = sessions.entry((op.process, p.clone())).or_default();
        // History order is completion order, so the sends that completed
        // before this one began form a prefix.
        let before = sent.partition_point(|s| s.complete_ns <= op.invoke_ns);
        if let Some((prev_offset, prev_value, prev_op)) = before.checked_sub(1).map(|i| sent[i].highest) {
            if *offset <= prev_offset {
                out.push(Anomaly {
                    kind: AnomalyKind::NonmonotonicSend,
                    partition: Some(p),
                    offsets: vec![prev_offset, *offset],
                    values: vec![prev_value.to_string(), value.clone()],
                    ops: op_indexes([prev_op, op]),
                    explanation: format!(
                        "process {} sent {value:?} to {name}@{offset} in #{} after {prev_value:?} landed at {name}@{prev_offset} in #{}",
                        op.process, op.index, prev_op.index
                    ),
                });
            }
        }
        let mine = (*offset, value.as_str(), op);
        let highest = match sent.last() {
            Some(s) if s.highest.0 >= *offset => s.highest,
            _ => mine,
        };
        sent.push(Sent { complete_ns: op.complete_ns, highest });
    }
}

/// The offset an acknowledged send landed at, with its partition.
fn landed(op: &Op) -> Option<(TopicPartition, i64)> {
    match (&op.kind, &op.outcome) {
        (OpKind::Send { topic, partition: Some(p), offset: Some(o), .. }, Outcome::Ok | Outcome::Info { .. }) => {
            Some((tp(topic, *p), *o))
        }
        _ => None,
    }
}

pub(super) fn call_order(history: &History, out: &mut Vec<Anomaly>) {
    let mut sessions: BTreeMap<(u64, TopicPartition), Vec<(&Op, i64)>> = BTreeMap::new();
    for op in &history.ops {
        if let Some((p, offset)) = landed(op) {
            sessions.entry((op.process, p)).or_default().push((op, offset));
        }
    }
    for ((process, p), mut sends) in sessions {
        let name = partition_name(&p);
        sends.sort_by_key(|(op, _)| (op.invoke_ns, op.index));
        // The highest-offset send invoked strictly before the current
        // instant: sends invoked at the same instant have no known order.
        let mut highest: Option<(i64, &Op)> = None;
        let mut i = 0;
        while i < sends.len() {
            let at = sends[i].0.invoke_ns;
            let j = i + sends[i..].partition_point(|(op, _)| op.invoke_ns == at);
            for &(op, offset) in &sends[i..j] {
                let Some((prev_offset, prev)) = highest else { break };
                // One that completed first is nonmonotonic-send's to judge.
                if offset < prev_offset && prev.complete_ns > op.invoke_ns {
                    let (OpKind::Send { value: prev_value, .. }, OpKind::Send { value, .. }) = (&prev.kind, &op.kind)
                    else {
                        unreachable!("only sends are collected")
                    };
                    out.push(Anomaly {
                        kind: AnomalyKind::ReorderedSend,
                        partition: Some(p.clone()),
                        offsets: vec![prev_offset, offset],
                        values: vec![prev_value.clone(), value.clone()],
                        ops: op_indexes([prev, op]),
                        explanation: format!(
                            "process {process} called send({value:?}) in #{} after send({prev_value:?}) in #{}, but it landed first: {name}@{offset} before {name}@{prev_offset}",
                            op.index, prev.index
                        ),
                    });
                }
            }
            for &(op, offset) in &sends[i..j] {
                if highest.is_none_or(|(h, _)| offset > h) {
                    highest = Some((offset, op));
                }
            }
            i = j;
        }
    }
}
