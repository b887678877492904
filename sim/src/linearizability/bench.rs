//! Linearizable partition-log histories generated from a sequential
//! execution, for the checker's property tests and its benchmark
//! (`faultline sim linbench`).
//!
//! Clients run one operation at a time. At each tick one client, drawn
//! from the seed, moves its operation on by one stage: invoke it, apply it
//! to a sequential log (its linearization point, where its output is
//! decided), or return it. So every history is linearizable by
//! construction, with up to `clients` operations overlapping.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::kafka::LogOp;
use super::models::{LogInput, LogOutput};
use super::{check, Operation, Verdict, NEVER};

/// Share of appends that time out (become `info`) after they took effect;
/// half as many time out before. The client then comes back as a new
/// process.
const INFO_SHARE: f64 = 0.02;

enum Stage {
    Idle,
    Invoked { input: LogInput, call: u64 },
    Applied { input: LogInput, output: LogOutput, call: u64 },
}

/// What a timed-out append looks like in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Infos {
    /// As Faultline's history gives them to the checker: one that took
    /// effect has its offset (a read saw it there) and no return; one that
    /// did not is absent.
    Kafka,
    /// Outcome unknown, output unknown: the general case, whose cost grows
    /// with the number of them pending at once.
    Unknown,
}

/// A linearizable history of `n` operations on one partition log by
/// `clients` concurrent clients, timed-out appends as Faultline records them.
pub fn generate(n: usize, clients: usize, seed: u64) -> Vec<LogOp> {
    generate_with(n, clients, seed, Infos::Kafka)
}

/// [`generate`], choosing how timed-out appends appear.
pub fn generate_with(n: usize, clients: usize, seed: u64, infos: Infos) -> Vec<LogOp> {
    let clients = clients.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut log: Vec<String> = Vec::new();
    let mut stages: Vec<Stage> = (0..clients).map(|_| Stage::Idle).collect();
    let mut process: Vec<u64> = (0..clients as u64).collect();
    let mut next_process = clients as u64;
    let mut ops: Vec<LogOp> = Vec::with_capacity(n);
    let mut invoked = 0usize;
    let mut time = 0u64;
    let mut values = 0u64;
    while ops.len() < n {
        time += 1;
        let c = rng.random_range(0..clients);
        let stage = std::mem::replace(&mut stages[c], Stage::Idle);
        stages[c] = match stage {
            Stage::Idle if invoked < n => {
                invoked += 1;
                let pick = rng.random_range(0..10);
                let input = if pick < 5 || log.is_empty() {
                    values += 1;
                    LogInput::Append { value: format!("v{values}") }
                } else if pick < 8 {
                    // A read of a few offsets near the end, as a consumer
                    // tailing the log makes.
                    let from = rng.random_range(log.len().saturating_sub(8)..log.len()) as i64;
                    let k = rng.random_range(1..=3);
                    LogInput::Read { offsets: (from..from + k).collect() }
                } else {
                    LogInput::End
                };
                Stage::Invoked { input, call: time }
            }
            Stage::Idle => Stage::Idle,
            Stage::Invoked { input: input @ LogInput::Append { .. }, call } if rng.random_bool(INFO_SHARE / 2.0) => {
                // Timed out before it took effect.
                if infos == Infos::Unknown {
                    ops.push(Operation {
                        id: ops.len() as u64,
                        client: process[c],
                        input,
                        output: None,
                        call,
                        ret: NEVER,
                    });
                }
                invoked -= usize::from(infos == Infos::Kafka);
                process[c] = next_process;
                next_process += 1;
                Stage::Idle
            }
            Stage::Invoked { input, call } => {
                let (input, output) = match input {
                    LogInput::Append { value } => {
                        log.push(value.clone());
                        (LogInput::Append { value }, LogOutput::Offset { offset: log.len() as i64 - 1 })
                    }
                    LogInput::Read { offsets } => {
                        // Only what is there: a read past the end returns
                        // the records up to it.
                        let offsets: Vec<i64> = offsets.into_iter().filter(|o| (*o as usize) < log.len()).collect();
                        let values = offsets.iter().map(|o| log[*o as usize].clone()).collect();
                        (LogInput::Read { offsets }, LogOutput::Values { values })
                    }
                    LogInput::End => (LogInput::End, LogOutput::End { offset: log.len() as i64 }),
                };
                Stage::Applied { input, output, call }
            }
            Stage::Applied { input, output, call } => {
                let id = ops.len() as u64;
                if matches!(input, LogInput::Append { .. }) && rng.random_bool(INFO_SHARE) {
                    let output = (infos == Infos::Kafka).then_some(output);
                    ops.push(Operation { id, client: process[c], input, output, call, ret: NEVER });
                    process[c] = next_process;
                    next_process += 1;
                } else {
                    ops.push(Operation::ok(id, process[c], input, output, call, time));
                }
                Stage::Idle
            }
        };
    }
    ops
}

/// One benchmark measurement.
#[derive(Debug, Clone)]
pub struct Row {
    pub ops: usize,
    pub clients: usize,
    pub verdict: Verdict,
    pub steps: u64,
    pub wall: Duration,
}

/// Make the end-offset query nearest the middle of `ops` report an end 10
/// records short (or 0): a stale read no order can explain once enough
/// appends completed before it.
pub fn plant_stale_end(ops: &mut [LogOp]) -> bool {
    let mid = ops.len() / 2;
    let pick = (mid..ops.len())
        .chain(0..mid)
        .find(|&i| matches!(ops[i].output, Some(LogOutput::End { offset }) if offset >= 10));
    match pick {
        Some(i) => {
            if let Some(LogOutput::End { offset }) = &mut ops[i].output {
                *offset -= 10;
            }
            true
        }
        None => false,
    }
}

/// Check a generated history of each size for each client count; with
/// `stale`, one end-offset answer in it is made stale first.
pub fn run(sizes: &[usize], clients: &[usize], budget: u64, stale: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    for &n in sizes {
        for &c in clients {
            let mut ops = generate(n, c, (n as u64) << 8 | c as u64);
            if stale {
                plant_stale_end(&mut ops);
            }
            let watch = crate::seam::Stopwatch::start();
            let mut left = budget;
            let o = check(&super::models::LogModel, &ops, &mut left);
            rows.push(Row { ops: n, clients: c, verdict: o.verdict, steps: o.steps, wall: watch.elapsed() });
        }
    }
    rows
}
