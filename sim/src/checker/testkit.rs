//! Builds small histories by hand for the checker's tests: topic `t`,
//! times that advance one step per operation.

use crate::history::{History, Op, OpKind, Outcome, Polled, TopicPartition};

use super::{check, AnomalyKind, CheckOptions, Report};

pub(super) fn part(partition: i32) -> TopicPartition {
    TopicPartition { topic: "t".to_string(), partition }
}

pub(super) fn info() -> Outcome {
    Outcome::Info { error: "timed out".to_string() }
}

pub(super) fn fail() -> Outcome {
    Outcome::Fail { error: "NOT_LEADER_OR_FOLLOWER".to_string() }
}

#[derive(Default)]
pub(super) struct Builder {
    pub history: History,
    now: u64,
}

impl Builder {
    pub fn op(&mut self, process: u64, kind: OpKind, outcome: Outcome, final_read: bool) -> u64 {
        self.op_at(process, kind, outcome, final_read, self.now + 1, self.now + 2)
    }

    /// An op with explicit invoke and complete times.
    pub fn op_at(
        &mut self,
        process: u64,
        kind: OpKind,
        outcome: Outcome,
        final_read: bool,
        invoke_ns: u64,
        complete_ns: u64,
    ) -> u64 {
        self.now = self.now.max(complete_ns);
        self.history.push(Op {
            index: 0,
            process,
            node: format!("client{process}"),
            invoke_ns,
            complete_ns,
            kind,
            outcome,
            final_read,
        });
        self.history.ops.len() as u64 - 1
    }

    /// A send; `at` is where it landed, if the client learned it.
    pub fn send(&mut self, process: u64, value: &str, at: Option<(i32, i64)>, outcome: Outcome) -> u64 {
        self.op(process, send_kind(value, at), outcome, false)
    }

    /// An acknowledged send.
    pub fn sent(&mut self, process: u64, value: &str, partition: i32, offset: i64) -> u64 {
        self.send(process, value, Some((partition, offset)), Outcome::Ok)
    }

    pub fn poll(&mut self, process: u64, records: &[(i32, i64, &str)]) -> u64 {
        self.op(process, poll_kind(records), Outcome::Ok, false)
    }

    pub fn final_poll(&mut self, process: u64, records: &[(i32, i64, &str)]) -> u64 {
        self.op(process, poll_kind(records), Outcome::Ok, true)
    }

    pub fn assign(&mut self, process: u64, partitions: &[i32]) -> u64 {
        let partitions = partitions.iter().map(|p| part(*p)).collect();
        self.op(process, OpKind::Assign { partitions }, Outcome::Ok, false)
    }

    pub fn check(&self) -> Report {
        check(&self.history, &CheckOptions::default())
    }
}

pub(super) fn send_kind(value: &str, at: Option<(i32, i64)>) -> OpKind {
    OpKind::Send {
        topic: "t".to_string(),
        key: None,
        value: value.to_string(),
        partition: at.map(|(p, _)| p),
        offset: at.map(|(_, o)| o),
    }
}

pub(super) fn poll_kind(records: &[(i32, i64, &str)]) -> OpKind {
    OpKind::Poll {
        records: records
            .iter()
            .map(|(p, o, v)| Polled { partition: part(*p), offset: *o, value: v.to_string() })
            .collect(),
    }
}

/// The kinds a report found, each once, in order.
/// The ordering checkers' kinds found, in order. `nonlinearizable` is left
/// out: most ordering anomalies are also not linearizable, and the tests
/// that care assert it apart.
pub(super) fn kinds(report: &Report) -> Vec<AnomalyKind> {
    let mut ks: Vec<AnomalyKind> =
        report.anomalies.iter().map(|a| a.kind).filter(|k| *k != AnomalyKind::NonLinearizable).collect();
    ks.dedup();
    ks
}
