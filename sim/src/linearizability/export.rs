//! Histories in the formats other checkers read: Porcupine-style JSON of
//! the partition-log operations, and Jepsen EDN (the history of Jepsen's
//! Kafka workload) for Elle and Knossos. Both are described in
//! `reports/README.md`.

use std::fmt::Write as _;

use serde::Serialize;

use super::kafka::log_objects;
use super::models::{LogInput, LogOutput};
use crate::history::{History, OpKind, Outcome};

/// One operation as Porcupine's `Operation` has it (`ClientId`, `Input`,
/// `Call`, `Output`, `Return`), with the partition in the input so a
/// Porcupine model's `Partition` function can split by it.
#[derive(Debug, Serialize)]
struct PorcupineOp<'a> {
    client_id: u64,
    input: PorcupineInput<'a>,
    call: u64,
    /// Null for an `info` operation (its outcome is unknown).
    output: Option<&'a LogOutput>,
    #[serde(rename = "return")]
    ret: u64,
    /// True when the operation never returned: `return` is then one past
    /// the history's last time, as Porcupine expects of a crashed client.
    info: bool,
    /// The operation's index in the Faultline history.
    index: u64,
}

#[derive(Debug, Serialize)]
struct PorcupineInput<'a> {
    partition: String,
    #[serde(flatten)]
    op: &'a LogInput,
}

/// The partition-log operations as a JSON array, in call order.
pub fn porcupine_json(history: &History) -> String {
    let objects = log_objects(history);
    let end = history.ops.iter().map(|o| o.complete_ns.max(o.invoke_ns)).max().unwrap_or(0) + 1;
    let mut ops: Vec<PorcupineOp> = objects
        .iter()
        .flat_map(|(tp, ops)| {
            let partition = format!("{}-{}", tp.topic, tp.partition);
            ops.iter().map(move |o| PorcupineOp {
                client_id: o.client,
                input: PorcupineInput { partition: partition.clone(), op: &o.input },
                call: o.call,
                output: o.output.as_ref(),
                ret: if o.ret == super::NEVER { end } else { o.ret },
                info: o.ret == super::NEVER || o.output.is_none(),
                index: o.id,
            })
        })
        .collect();
    ops.sort_by_key(|o| (o.call, o.index, o.input.partition.clone()));
    let mut out = serde_json::to_string_pretty(&ops).expect("operations serialise");
    out.push('\n');
    out
}

/// Committed offsets (`topic-partition` → offset) as an EDN map.
fn edn_offsets(offsets: &std::collections::BTreeMap<String, i64>) -> String {
    let m: Vec<String> = offsets.iter().map(|(k, o)| format!("{} {o}", edn_str(k))).collect();
    format!("{{{}}}", m.join(", "))
}

/// An EDN string literal.
fn edn_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn key(topic: &str, partition: i32) -> String {
    edn_str(&format!("{topic}-{partition}"))
}

/// The history as Jepsen's Kafka workload records it: one `:invoke` map
/// per operation at its invoke time and one `:ok`, `:fail` or `:info` map at
/// its completion, in time order, one per line. Sends are `[:send k v]`
/// micro-ops, completed as `[:send k [offset v]]`; polls `[:poll {k [[offset
/// v] ...]}]`; `:assign` and `:crash` as Jepsen has them; end-offset queries
/// are `:f :end-offsets` with `{k offset}`, which Jepsen's checkers ignore.
pub fn jepsen_edn(history: &History) -> String {
    // (time, 0 for invoke / 1 for completion, op index, line)
    let mut events: Vec<(u64, u8, u64, String)> = Vec::new();
    for op in &history.ops {
        let ty = match &op.outcome {
            Outcome::Ok => ":ok",
            Outcome::Fail { .. } => ":fail",
            Outcome::Info { .. } => ":info",
        };
        let (f, invoke_value, done_value) = match &op.kind {
            OpKind::Send { topic, value, partition, offset, .. } => {
                let k = key(topic, partition.unwrap_or(-1));
                let v = edn_str(value);
                let done = match offset {
                    Some(o) => format!("[[:send {k} [{o} {v}]]]"),
                    None => format!("[[:send {k} {v}]]"),
                };
                (":send", format!("[[:send {k} {v}]]"), done)
            }
            OpKind::Poll { records } => {
                let mut by: std::collections::BTreeMap<String, Vec<String>> = Default::default();
                for r in records {
                    by.entry(key(&r.partition.topic, r.partition.partition)).or_default().push(format!(
                        "[{} {}]",
                        r.offset,
                        edn_str(&r.value)
                    ));
                }
                let m: Vec<String> = by.iter().map(|(k, v)| format!("{k} [{}]", v.join(" "))).collect();
                (":poll", "[[:poll]]".to_string(), format!("[[:poll {{{}}}]]", m.join(", ")))
            }
            OpKind::Assign { partitions } => {
                let ks: Vec<String> = partitions.iter().map(|p| key(&p.topic, p.partition)).collect();
                let v = format!("[{}]", ks.join(" "));
                (":assign", v.clone(), v)
            }
            OpKind::Commit { offsets, .. } => {
                let v = edn_offsets(offsets);
                (":commit", v.clone(), v)
            }
            OpKind::Committed { offsets } => (":committed", "nil".to_string(), edn_offsets(offsets)),
            OpKind::Generation { member, generation, partitions } => {
                let ks: Vec<String> = partitions.iter().map(|p| key(&p.topic, p.partition)).collect();
                let v =
                    format!("{{:member {} :generation {generation} :partitions [{}]}}", edn_str(member), ks.join(" "));
                (":generation", v.clone(), v)
            }
            OpKind::EndOffsets { ends } => {
                let m: Vec<String> = ends
                    .iter()
                    .map(|e| format!("{} {}", key(&e.partition.topic, e.partition.partition), e.offset))
                    .collect();
                (":end-offsets", "nil".to_string(), format!("{{{}}}", m.join(", ")))
            }
            OpKind::Crash => (":crash", "nil".to_string(), "nil".to_string()),
            OpKind::CreateTopic { topic, partitions } => {
                let v = format!("{{:topic {} :partitions {partitions}}}", edn_str(topic));
                (":create-topic", v.clone(), v)
            }
            OpKind::Metadata { broker, topics, .. } => {
                let ts: Vec<String> = topics.iter().map(|t| edn_str(t)).collect();
                (":metadata", edn_str(broker), format!("[{}]", ts.join(" ")))
            }
        };
        let error = match &op.outcome {
            Outcome::Ok => String::new(),
            Outcome::Fail { error } | Outcome::Info { error } => format!(", :error {}", edn_str(error)),
        };
        let fr = if op.final_read { ", :final-read true" } else { "" };
        events.push((
            op.invoke_ns,
            0,
            op.index,
            format!(
                "{{:type :invoke, :f {f}, :value {invoke_value}, :process {}, :time {}{fr}}}",
                op.process, op.invoke_ns
            ),
        ));
        events.push((
            op.complete_ns,
            1,
            op.index,
            format!(
                "{{:type {ty}, :f {f}, :value {done_value}, :process {}, :time {}{error}{fr}}}",
                op.process, op.complete_ns
            ),
        ));
    }
    events.sort_by_key(|(t, kind, i, _)| (*t, *kind, *i));
    let mut out = String::new();
    for (n, (_, _, _, line)) in events.iter().enumerate() {
        // Jepsen numbers history entries with :index, in order.
        let _ = writeln!(out, "{{:index {n}, {}", &line[1..]);
    }
    out
}
