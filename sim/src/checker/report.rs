//! What a check returns: the anomalies found, counts, statistics and the
//! verdict, serialisable and printable for a failing run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::kind::AnomalyKind;
use crate::history::{Op, OpKind, Outcome, TopicPartition};
use crate::linearizability::kafka::LinReport;
use crate::linearizability::Verdict;

/// How many anomalies of each kind the summary prints.
const EXAMPLES_PER_KIND: usize = 5;
/// How many of an anomaly's ops the summary prints.
const OPS_PER_EXAMPLE: usize = 6;
/// How many items of a long list the summary prints.
const LIST_ITEMS: usize = 8;
/// How far around an anomaly's offsets a printed poll's records reach.
const RECORD_CONTEXT: u64 = 2;

/// One anomaly and the evidence for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    /// Set when the anomaly lies in one partition.
    pub partition: Option<TopicPartition>,
    /// For order anomalies, the earlier read or send then the later one; for
    /// `lost-write`, the lost offset then the read offset that passed it;
    /// otherwise where the values were observed.
    pub offsets: Vec<i64>,
    pub values: Vec<String>,
    /// History indexes of the operations that show it, ascending.
    pub ops: Vec<u64>,
    pub explanation: String,
}

/// What the history holds, whatever the verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub ops: usize,
    pub sends_ok: usize,
    pub sends_fail: usize,
    pub sends_info: usize,
    pub polls: usize,
    /// Records returned by all polls together.
    pub records_read: usize,
    /// Distinct values any poll returned.
    pub values_read: usize,
    /// Acknowledged values no poll returned (lost ones included).
    pub unseen: usize,
    pub final_read_ops: usize,
}

/// The verdict on one history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// False when any anomaly of a kind the options make fatal was found.
    pub valid: bool,
    /// The fatal kinds found, as Jepsen's `bad-error-types`.
    pub invalid_kinds: Vec<AnomalyKind>,
    /// Anomalies found per kind, for every kind (zero included).
    pub counts: BTreeMap<AnomalyKind, usize>,
    pub anomalies: Vec<Anomaly>,
    pub stats: Stats,
    /// The operations the printed examples cite, so the summary can show
    /// them without the history.
    pub example_ops: BTreeMap<u64, Op>,
    /// The linearizability checker's verdict per partition log.
    pub linearizability: LinReport,
    /// Why the configuration does not promise linearizability, if it does
    /// not: then a `nonlinearizable` finding is informational.
    pub lin_caveat: Option<String>,
    /// Why this configuration lets a correct broker lose acknowledged
    /// writes, if it does: `lost-write` is then the measured cost of the
    /// configuration, reported but not fatal.
    pub loss_caveat: Option<String>,
}

impl Report {
    pub(super) fn new(anomalies: Vec<Anomaly>, stats: Stats, invalid_on: &BTreeSet<AnomalyKind>, ops: &[Op]) -> Report {
        let mut counts: BTreeMap<AnomalyKind, usize> = AnomalyKind::ALL.into_iter().map(|k| (k, 0)).collect();
        for a in &anomalies {
            *counts.entry(a.kind).or_default() += 1;
        }
        let invalid_kinds: Vec<AnomalyKind> =
            counts.iter().filter(|(k, n)| **n > 0 && invalid_on.contains(k)).map(|(k, _)| *k).collect();

        let by_index: BTreeMap<u64, &Op> = ops.iter().map(|op| (op.index, op)).collect();
        let mut example_ops = BTreeMap::new();
        for a in examples(&anomalies) {
            for i in a.ops.iter().take(OPS_PER_EXAMPLE) {
                if let Some(op) = by_index.get(i) {
                    example_ops.insert(*i, (*op).clone());
                }
            }
        }

        let linearizability = LinReport { verdict: Verdict::Linearizable, steps: 0, budget: 0, partitions: Vec::new() };
        Report {
            valid: invalid_kinds.is_empty(),
            invalid_kinds,
            counts,
            anomalies,
            stats,
            example_ops,
            linearizability,
            lin_caveat: None,
            loss_caveat: None,
        }
    }

    /// The anomalies of one kind.
    pub fn of_kind(&self, kind: AnomalyKind) -> impl Iterator<Item = &Anomaly> {
        self.anomalies.iter().filter(move |a| a.kind == kind)
    }
}

/// The first few anomalies of each kind: the ones the summary prints.
fn examples(anomalies: &[Anomaly]) -> impl Iterator<Item = &Anomaly> {
    let mut shown: BTreeMap<AnomalyKind, usize> = BTreeMap::new();
    anomalies.iter().filter(move |a| {
        let n = shown.entry(a.kind).or_default();
        *n += 1;
        *n <= EXAMPLES_PER_KIND
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let found: Vec<String> = self.counts.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}")).collect();
        let verdict = if self.valid { "valid" } else { "INVALID" };
        if found.is_empty() {
            writeln!(f, "{verdict}: no anomalies")?;
        } else {
            writeln!(f, "{verdict}: {}", found.join(", "))?;
        }
        let s = &self.stats;
        writeln!(
            f,
            "{} ops: sends ok {} / fail {} / info {}; polls {} returned {} records ({} distinct values); {} acknowledged values unread; {} final-read ops",
            s.ops, s.sends_ok, s.sends_fail, s.sends_info, s.polls, s.records_read, s.values_read, s.unseen, s.final_read_ops
        )?;
        writeln!(f, "{}", self.linearizability.summary())?;
        if let Some(why) = &self.lin_caveat {
            writeln!(f, "  (not promised by this configuration, so informational: {why})")?;
        }

        for kind in AnomalyKind::ALL {
            let n = self.counts.get(&kind).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let role = if self.invalid_kinds.contains(&kind) { "" } else { " (informational)" };
            writeln!(f, "\n{kind}{role}: {n} — {}", kind.description())?;
            if let (AnomalyKind::LostWrite, Some(why), false) =
                (kind, &self.loss_caveat, self.invalid_kinds.contains(&kind))
            {
                writeln!(f, "  acknowledged writes this configuration may lose: {why}")?;
            }
            for a in self.of_kind(kind).take(EXAMPLES_PER_KIND) {
                self.fmt_anomaly(f, a)?;
            }
            if kind == AnomalyKind::NonLinearizable {
                for p in self.linearizability.failures().take(EXAMPLES_PER_KIND) {
                    writeln!(
                        f,
                        "  longest linearizable prefix of {}-{}, last operations:",
                        p.partition.topic, p.partition.partition
                    )?;
                    for t in &p.prefix_tail_text {
                        writeln!(f, "    {t}")?;
                    }
                    if let Some(u) = &p.unplaceable_text {
                        writeln!(f, "  cannot be placed: {u}")?;
                    }
                }
            }
            if n > EXAMPLES_PER_KIND {
                writeln!(f, "  … and {} more", n - EXAMPLES_PER_KIND)?;
            }
        }
        Ok(())
    }
}

impl Report {
    fn fmt_anomaly(&self, f: &mut fmt::Formatter<'_>, a: &Anomaly) -> fmt::Result {
        let place = a.partition.as_ref().map(partition_name).unwrap_or_else(|| "-".into());
        writeln!(f, "  {place} offsets {} values {}: {}", capped(&a.offsets), capped(&a.values), a.explanation)?;
        for i in a.ops.iter().take(OPS_PER_EXAMPLE) {
            match self.example_ops.get(i) {
                Some(op) => writeln!(f, "    {}", render_op(op, a))?,
                None => writeln!(f, "    #{i}")?,
            }
        }
        if a.ops.len() > OPS_PER_EXAMPLE {
            writeln!(f, "    … and {} more ops", a.ops.len() - OPS_PER_EXAMPLE)?;
        }
        Ok(())
    }
}

/// Kafka's usual spelling of a topic-partition.
pub(super) fn partition_name(p: &TopicPartition) -> String {
    format!("{}-{}", p.topic, p.partition)
}

/// A list printed in brackets, cut short when long.
pub(super) fn capped<T: fmt::Debug>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().take(LIST_ITEMS).map(|i| format!("{i:?}")).collect();
    let more = items.len().saturating_sub(LIST_ITEMS);
    if more > 0 {
        format!("[{} … +{more}]", shown.join(", "))
    } else {
        format!("[{}]", shown.join(", "))
    }
}

/// One op on one line, a poll showing only its records near the anomaly.
fn render_op(op: &Op, a: &Anomaly) -> String {
    let outcome = match &op.outcome {
        Outcome::Ok => "ok".to_string(),
        Outcome::Fail { error } => format!("fail ({error})"),
        Outcome::Info { error } => format!("info ({error})"),
    };
    let head = format!(
        "#{} process {} on {} at {}..{} ns{}",
        op.index,
        op.process,
        op.node,
        op.invoke_ns,
        op.complete_ns,
        if op.final_read { " [final read]" } else { "" }
    );
    let body = match &op.kind {
        OpKind::Send { topic, value, partition, offset, .. } => {
            let at = match (partition, offset) {
                (Some(p), Some(o)) => format!(" -> {topic}-{p}@{o}"),
                (Some(p), None) => format!(" -> {topic}-{p}"),
                _ => format!(" -> {topic}"),
            };
            format!("send {value:?}{at}")
        }
        OpKind::Poll { records } => {
            let near = |p: &TopicPartition, o: i64| {
                a.partition.as_ref().is_none_or(|ap| ap == p)
                    && a.offsets.iter().any(|x| o.abs_diff(*x) <= RECORD_CONTEXT)
            };
            let shown: Vec<String> = records
                .iter()
                .filter(|r| near(&r.partition, r.offset) || a.values.contains(&r.value))
                .map(|r| format!("{}@{}={:?}", partition_name(&r.partition), r.offset, r.value))
                .collect();
            let hidden = records.len() - shown.len();
            let tail = if hidden > 0 { format!(" (+{hidden} other records)") } else { String::new() };
            format!("poll [{}]{tail}", shown.join(" "))
        }
        OpKind::Assign { partitions } => {
            let ps: Vec<String> = partitions.iter().map(partition_name).collect();
            format!("assign [{}]", ps.join(" "))
        }
        OpKind::Commit { offsets, generation } => format!("commit {offsets:?} in generation {generation:?}"),
        OpKind::EndOffsets { ends } => {
            let ends: Vec<String> =
                ends.iter().map(|e| format!("{}={}", partition_name(&e.partition), e.offset)).collect();
            format!("end offsets [{}]", ends.join(" "))
        }
        OpKind::Generation { member, generation, partitions } => {
            let parts: Vec<String> = partitions.iter().map(TopicPartition::key).collect();
            format!("generation {generation}: {member} owns [{}]", parts.join(", "))
        }
        OpKind::Committed { offsets } => format!("committed offsets read back {offsets:?}"),
        OpKind::Crash => "crash".to_string(),
        OpKind::CreateTopic { topic, partitions } => format!("create topic {topic} ({partitions} partitions)"),
        OpKind::Metadata { broker, topics, .. } => format!("metadata from {broker}: [{}]", topics.join(" ")),
    };
    format!("{head}: {body} => {outcome}")
}
