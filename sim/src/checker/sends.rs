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
        let OpKind::Send { topic, value, partition: Some(partition), offset: Some(offset), .. } = &op.kind else {
            continue;
        };
        if matches!(op.outcome, Outcome::Fail { .. }) {
            continue;
        }
        let p = tp(topic, *partition);
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
