//! The indexes every check shares, built from a history in two passes: who
//! sent each value, who read it and where, and what each partition's log is
//! known to hold at each offset.

use std::collections::BTreeMap;

use crate::history::{History, Op, OpKind, Outcome, TopicPartition};

/// One send of a value.
pub(super) struct Send<'h> {
    pub op: &'h Op,
    /// Set when the send reported where it landed.
    pub at: Option<(TopicPartition, i64)>,
}

/// One record of one poll.
pub(super) struct Read<'h> {
    pub op: &'h Op,
    pub partition: &'h TopicPartition,
    pub offset: i64,
}

/// What a partition is known to hold at one offset: each value seen there
/// and the operations that show it.
pub(super) type Slot<'h> = BTreeMap<&'h str, Vec<&'h Op>>;

pub(super) struct Index<'h> {
    /// The whole history, in order.
    pub ops: &'h [Op],
    /// Every send of each value. Values are unique per run, so this is
    /// normally one send; a history that repeats a value keeps them all.
    pub sends: BTreeMap<&'h str, Vec<Send<'h>>>,
    /// Every poll record of each value, in history order.
    pub reads: BTreeMap<&'h str, Vec<Read<'h>>>,
    /// The version order of each partition: offset to the values observed
    /// there. Built like Jepsen's: from every poll, whatever its outcome (a
    /// poll has no transaction to abort, so what it returned was in the log),
    /// and from sends whose effect is certain.
    pub logs: BTreeMap<TopicPartition, BTreeMap<i64, Slot<'h>>>,
    /// Every (partition, offset) at which each value was observed, sorted.
    pub positions: BTreeMap<&'h str, Vec<(TopicPartition, i64)>>,
}

impl<'h> Index<'h> {
    pub fn build(history: &'h History) -> Index<'h> {
        let mut sends: BTreeMap<&str, Vec<Send>> = BTreeMap::new();
        let mut reads: BTreeMap<&str, Vec<Read>> = BTreeMap::new();
        for op in &history.ops {
            match &op.kind {
                OpKind::Send { topic, value, partition, offset, .. } => {
                    let at = match (partition, offset) {
                        (Some(p), Some(o)) => Some((tp(topic, *p), *o)),
                        _ => None,
                    };
                    sends.entry(value).or_default().push(Send { op, at });
                }
                OpKind::Poll { records } => {
                    for r in records {
                        reads.entry(&r.value).or_default().push(Read { op, partition: &r.partition, offset: r.offset });
                    }
                }
                _ => {}
            }
        }

        let mut logs: BTreeMap<TopicPartition, BTreeMap<i64, Slot>> = BTreeMap::new();
        for (value, ss) in &sends {
            for s in ss {
                // An indefinite send only joins the version order once a read
                // proves it took effect, as in Jepsen's must-have-committed?.
                let certain = match s.op.outcome {
                    Outcome::Ok => true,
                    Outcome::Info { .. } => reads.contains_key(value),
                    Outcome::Fail { .. } => false,
                };
                if let (true, Some((p, o))) = (certain, &s.at) {
                    observe(&mut logs, p, *o, value, s.op);
                }
            }
        }
        for (value, rs) in &reads {
            for r in rs {
                observe(&mut logs, r.partition, r.offset, value, r.op);
            }
        }

        let mut positions: BTreeMap<&str, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        for (p, log) in &logs {
            for (offset, slot) in log {
                for value in slot.keys() {
                    positions.entry(value).or_default().push((p.clone(), *offset));
                }
            }
        }

        Index { ops: &history.ops, sends, reads, logs, positions }
    }

    /// Offsets strictly between `lo` and `hi` at which `partition` is known
    /// to hold a record.
    pub fn known_between(&self, partition: &TopicPartition, lo: i64, hi: i64) -> Vec<i64> {
        if hi <= lo.saturating_add(1) {
            return Vec::new();
        }
        self.logs.get(partition).map(|log| log.range(lo + 1..hi).map(|(o, _)| *o).collect()).unwrap_or_default()
    }

    /// The operations that show `value` at `offset` of `partition`.
    pub fn ops_at(&self, partition: &TopicPartition, offset: i64, value: &str) -> &[&'h Op] {
        self.logs
            .get(partition)
            .and_then(|log| log.get(&offset))
            .and_then(|slot| slot.get(value))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The offsets at which `value` was observed in `partition`, ascending.
    pub fn offsets_in<'a>(&'a self, value: &str, partition: &'a TopicPartition) -> impl Iterator<Item = i64> + 'a {
        self.positions.get(value).into_iter().flatten().filter(move |(p, _)| p == partition).map(|(_, o)| *o)
    }
}

/// A send names its topic and partition apart.
pub(super) fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition { topic: topic.to_string(), partition }
}

fn observe<'h>(
    logs: &mut BTreeMap<TopicPartition, BTreeMap<i64, Slot<'h>>>,
    partition: &TopicPartition,
    offset: i64,
    value: &'h str,
    op: &'h Op,
) {
    if !logs.contains_key(partition) {
        logs.insert(partition.clone(), BTreeMap::new());
    }
    if let Some(log) = logs.get_mut(partition) {
        let ops = log.entry(offset).or_default().entry(value).or_default();
        // One poll may return a record twice; the op shows it once.
        if ops.last().map(|o| o.index) != Some(op.index) {
            ops.push(op);
        }
    }
}
