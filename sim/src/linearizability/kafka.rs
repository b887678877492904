//! Faultline's history as linearizability problems: one partition log per
//! topic-partition, checked with [`LogModel`], and what a run's
//! configuration promises of it.
//!
//! ## Which Kafka guarantees are linearizable
//!
//! The object is a partition's log of *committed* records: those below the
//! high watermark. Against it:
//!
//! - **An acknowledged acks=all append** is linearizable: its record joins
//!   the committed log when the high watermark passes it, which happens
//!   between the produce request's arrival and its acknowledgement, at the
//!   offset the acknowledgement returns.
//! - **A fetch of committed data from the current leader** is linearizable:
//!   the leader serves only records below its high watermark, and those
//!   never change. A fetch returns a prefix of what is there (fetch sizes cut
//!   it short), so a read claims exactly the (offset, value) pairs it
//!   returned. A consumer that prefetched returns records fetched before
//!   the poll began; committed records stay put, so the claim still holds at
//!   any point of the poll.
//! - **ListOffsets for the latest offset from the current leader** returns
//!   the high watermark: the committed log's length, at one instant.
//!
//! And not:
//!
//! - **acks=1 appends** once there are replicas: the leader answers at its
//!   own append, and a leader change may truncate the record away. With one
//!   broker the high watermark is the fsynced offset and acks=1 waits for it,
//!   so both acks settings are linearizable there.
//! - **Reads served by a deposed leader** before it learns of the new
//!   epoch: its high watermark and log stop moving while the new leader
//!   acknowledges appends, so an end offset (or an empty fetch) it serves
//!   misses records a completed append put below the new high watermark.
//!   Kafka fences these only when the client sends its current leader epoch.
//!   Faultline has one broker per partition today, so it cannot happen yet;
//!   a multi-broker configuration is not promised linearizable.
//! - **Anything after the medium corrupts fsynced data** (bit rot, lost or
//!   misdirected writes): one replica cannot repair it, so a correct broker
//!   truncates and hands offsets out again.
//! - **Retries without idempotence** store a value twice: two appends for
//!   one operation, which no single linearization point explains.
//!
//! Where the configuration does not promise it, the check still runs and
//! its result is reported as an informational finding, with the reason.
//!
//! ## From history to operations
//!
//! - an acknowledged send: `append(value) -> offset`, from invoke to
//!   completion;
//! - a send that timed out (`info`): if some poll returned its value, it
//!   certainly happened, at the offset the poll saw; it may be placed
//!   anywhere after its invoke. If no poll ever returned it, it is dropped:
//!   the final read pages every partition to its end, so (when it
//!   completes, which a promised verdict requires) such a send never
//!   reached the committed log;
//! - a failed send: dropped (it did not happen);
//! - a poll: one `read` per partition it returned records of, claiming
//!   those (offset, value) pairs; a multi-partition poll is split into its
//!   per-partition parts, which is what P-compositionality checks;
//! - an `end_offsets` query: one `end -> offset` per partition;
//! - values longer than [`MAX_VALUE_CHARS`] bytes are held as a prefix and
//!   a 128-bit digest ([`canonical`]).

use std::collections::BTreeMap;

use serde::Serialize;

use super::models::{short, LogInput, LogModel, LogOutput};
use super::{check_objects, overall, Operation, Verdict};
use crate::history::{History, OpKind, Outcome, TopicPartition};
use crate::scenario::Scenario;

/// One operation on a partition log.
pub type LogOp = Operation<LogInput, LogOutput>;

/// How many operations of the longest linearizable prefix a report keeps
/// (the last ones, nearest the failure).
pub const PREFIX_TAIL: usize = 8;

/// Values longer than this are replaced by [`canonical`]'s digest form.
pub const MAX_VALUE_CHARS: usize = 64;

/// A value as the log model holds it: itself if short, else its first 32
/// bytes' worth of characters and a 128-bit digest of the whole. Values
/// are unique per run and the model only compares them, so this changes no
/// verdict short of a digest collision, and it keeps the model's log (and
/// every exported operation) small when the workload pads values to
/// kilobytes.
pub fn canonical(value: &str) -> String {
    if value.len() <= MAX_VALUE_CHARS {
        return value.to_string();
    }
    let head: String = value.chars().take(32).collect();
    format!("{head}…#{:032x}", super::hash_bytes(value.as_bytes()))
}

/// The history's operations on each partition's log.
pub fn log_objects(history: &History) -> BTreeMap<TopicPartition, Vec<LogOp>> {
    // Where reads saw each value: proof an indefinite send happened.
    let mut seen: BTreeMap<&str, (TopicPartition, i64)> = BTreeMap::new();
    for op in &history.ops {
        if let OpKind::Poll { records } = &op.kind {
            for r in records {
                seen.entry(r.value.as_str()).or_insert_with(|| (r.partition.clone(), r.offset));
            }
        }
    }
    let mut objects: BTreeMap<TopicPartition, Vec<LogOp>> = BTreeMap::new();
    for op in &history.ops {
        let (id, client, call, ret) = (op.index, op.process, op.invoke_ns, op.complete_ns);
        match (&op.kind, &op.outcome) {
            (OpKind::Send { topic, value, partition: Some(p), offset: Some(o), .. }, Outcome::Ok) => {
                let tp = TopicPartition { topic: topic.clone(), partition: *p };
                let append = LogInput::Append { value: canonical(value) };
                objects.entry(tp).or_default().push(Operation::ok(
                    id,
                    client,
                    append,
                    LogOutput::Offset { offset: *o },
                    call,
                    ret,
                ));
            }
            (OpKind::Send { value, .. }, Outcome::Info { .. }) => {
                if let Some((tp, o)) = seen.get(value.as_str()) {
                    let append = LogInput::Append { value: canonical(value) };
                    objects.entry(tp.clone()).or_default().push(Operation {
                        id,
                        client,
                        input: append,
                        output: Some(LogOutput::Offset { offset: *o }),
                        call,
                        ret: super::NEVER,
                    });
                }
            }
            (OpKind::Poll { records }, Outcome::Ok) => {
                let mut parts: BTreeMap<&TopicPartition, (Vec<i64>, Vec<String>)> = BTreeMap::new();
                for r in records {
                    let e = parts.entry(&r.partition).or_default();
                    e.0.push(r.offset);
                    e.1.push(canonical(&r.value));
                }
                for (tp, (offsets, values)) in parts {
                    objects.entry(tp.clone()).or_default().push(Operation::ok(
                        id,
                        client,
                        LogInput::Read { offsets },
                        LogOutput::Values { values },
                        call,
                        ret,
                    ));
                }
            }
            (OpKind::EndOffsets { ends }, Outcome::Ok) => {
                for e in ends {
                    objects.entry(e.partition.clone()).or_default().push(Operation::ok(
                        id,
                        client,
                        LogInput::End,
                        LogOutput::End { offset: e.offset },
                        call,
                        ret,
                    ));
                }
            }
            _ => {}
        }
    }
    objects
}

/// One operation in words.
pub fn describe(op: &LogOp) -> String {
    let t = |ns: u64| if ns == super::NEVER { "never".to_string() } else { format!("{:.6} s", ns as f64 / 1e9) };
    let what = match (&op.input, &op.output) {
        (LogInput::Append { value }, Some(LogOutput::Offset { offset })) => {
            format!("append {} -> offset {offset}", short(value))
        }
        (LogInput::Append { value }, _) => format!("append {} -> ?", short(value)),
        (LogInput::Read { offsets }, Some(LogOutput::Values { values })) => {
            let pairs: Vec<String> =
                offsets.iter().zip(values).take(4).map(|(o, v)| format!("{o}={}", short(v))).collect();
            let more = if offsets.len() > 4 { format!(" +{}", offsets.len() - 4) } else { String::new() };
            format!("read [{}{more}]", pairs.join(" "))
        }
        (LogInput::Read { offsets }, _) => format!("read {} offsets -> ?", offsets.len()),
        (LogInput::End, Some(LogOutput::End { offset })) => format!("end offset -> {offset}"),
        (LogInput::End, _) => "end offset -> ?".into(),
    };
    format!("#{} process {}: {what}, called {} returned {}", op.id, op.client, t(op.call), t(op.ret))
}

/// The verdict on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionVerdict {
    pub partition: TopicPartition,
    pub verdict: Verdict,
    pub ops: usize,
    pub steps: u64,
    /// When not linearizable: how many operations the longest linearizable
    /// prefix holds, its last few (history indexes, in linearization order)
    /// and the model state after it.
    pub prefix_len: usize,
    pub prefix_tail: Vec<u64>,
    pub prefix_tail_text: Vec<String>,
    pub state_after_prefix: Option<String>,
    /// The operation that cannot be placed after the prefix.
    pub unplaceable: Option<u64>,
    pub unplaceable_text: Option<String>,
}

/// The linearizability verdict on one history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinReport {
    pub verdict: Verdict,
    pub steps: u64,
    pub budget: u64,
    pub partitions: Vec<PartitionVerdict>,
}

impl LinReport {
    /// The partitions that are not linearizable.
    pub fn failures(&self) -> impl Iterator<Item = &PartitionVerdict> {
        self.partitions.iter().filter(|p| p.verdict == Verdict::NotLinearizable)
    }

    /// One line: the verdict and the work it took.
    pub fn summary(&self) -> String {
        let ops: usize = self.partitions.iter().map(|p| p.ops).sum();
        format!(
            "linearizability: {} ({} partition logs, {} operations, {} search steps of {})",
            self.verdict.as_str(),
            self.partitions.len(),
            ops,
            self.steps,
            self.budget
        )
    }
}

impl PartitionVerdict {
    /// Why the partition is not linearizable, in words.
    pub fn explanation(&self) -> String {
        let p = format!("{}-{}", self.partition.topic, self.partition.partition);
        let state = self.state_after_prefix.as_deref().unwrap_or("?");
        match &self.unplaceable_text {
            Some(op) => format!(
                "{p}: the longest linearizable prefix holds {} of {} operations and leaves {state}; {op} cannot be placed after it",
                self.prefix_len, self.ops
            ),
            None => format!("{p}: no order of its {} operations fits the log model", self.ops),
        }
    }
}

/// Check every partition's log in `history` within `budget` steps.
pub fn check_history(history: &History, budget: u64) -> LinReport {
    let objects = log_objects(history);
    let outcomes = check_objects(&LogModel, &objects, budget);
    let partitions = outcomes
        .iter()
        .map(|(tp, o)| {
            let ops = &objects[tp];
            let tail_from = o.prefix.len().saturating_sub(PREFIX_TAIL);
            let tail = &o.prefix[tail_from..];
            PartitionVerdict {
                partition: tp.clone(),
                verdict: o.verdict,
                ops: o.ops,
                steps: o.steps,
                prefix_len: o.prefix.len(),
                prefix_tail: tail.iter().map(|&i| ops[i].id).collect(),
                prefix_tail_text: tail.iter().map(|&i| describe(&ops[i])).collect(),
                state_after_prefix: o.state_after_prefix.clone(),
                unplaceable: o.unplaceable.map(|i| ops[i].id),
                unplaceable_text: o.unplaceable.map(|i| describe(&ops[i])),
            }
        })
        .collect();
    LinReport {
        verdict: overall(outcomes.values()),
        steps: outcomes.values().map(|o| o.steps).sum(),
        budget,
        partitions,
    }
}

/// Whether `scenario` (resolved) promises that every partition log is
/// linearizable; `Err` says why not.
pub fn promised(scenario: &Scenario) -> Result<(), String> {
    let w = &scenario.workload;
    if scenario.medium_may_corrupt() {
        return Err("the medium may corrupt fsynced data, and one replica cannot repair it".into());
    }
    if !(w.idempotence || w.retries == 0) {
        return Err("a producer retries without idempotence, so one send may be stored twice".into());
    }
    if scenario.cluster.brokers > 1 {
        return Err(
            "more than one broker: acks=1 appends and reads served by a deposed leader are not linearizable".into()
        );
    }
    Ok(())
}
