//! How long a consumer group takes to recover, measured from a run's
//! history: what `faultline sim sweep` prints for scenarios with groups.
//!
//! Two figures, both from what clients saw (no broker internals):
//! - **rebalance after a departure**: a member's session ends (it left the
//!   group, or its host crashed) and the time until the members that remain
//!   hold their assignments of the next generation. A crash includes the
//!   coordinator noticing it (`session.timeout.ms`); a leave should not.
//! - **commit after a coordinator crash**: the broker leading the group's
//!   `__consumer_offsets` partition crashes, and the time until a commit
//!   sent after the crash is acknowledged (by the new coordinator, or by the
//!   old one restarted).
//!
//! Measurements, not checks: nothing here fails a run.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::history::{History, Op, OpKind, Outcome};

/// One run's group recovery times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupTiming {
    /// From a member leaving the group to the next generation.
    pub after_leave: Vec<Duration>,
    /// From a member's host crashing to the next generation.
    pub after_crash: Vec<Duration>,
    /// From a coordinator crash to the first acknowledged commit sent after it.
    pub commit_after_coordinator_crash: Vec<Duration>,
}

impl GroupTiming {
    pub fn is_empty(&self) -> bool {
        self.after_leave.is_empty() && self.after_crash.is_empty() && self.commit_after_coordinator_crash.is_empty()
    }

    pub fn extend(&mut self, other: &GroupTiming) {
        self.after_leave.extend_from_slice(&other.after_leave);
        self.after_crash.extend_from_slice(&other.after_crash);
        self.commit_after_coordinator_crash.extend_from_slice(&other.commit_after_coordinator_crash);
    }

    /// One line per figure measured: count, median, p90 and max.
    pub fn summary(&self) -> Vec<String> {
        [
            ("rebalance after a member left", &self.after_leave),
            ("rebalance after a member crashed", &self.after_crash),
            ("first commit after a coordinator crash", &self.commit_after_coordinator_crash),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(what, v)| {
            let mut v = v.clone();
            v.sort();
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64();
            format!("{what}: {} times, median {:.2} s, p90 {:.2} s, max {:.2} s", v.len(), at(0.5), at(0.9), at(1.0))
        })
        .collect()
    }
}

/// Measure `history`; `coordinator_crashes` are the simulated times the
/// broker leading the group's offsets partition was crashed.
pub fn measure(history: &History, coordinator_crashes: &[Duration]) -> GroupTiming {
    let mut timing = GroupTiming::default();
    let ns = Duration::from_nanos;
    // Departures after the final read began are the run winding down.
    let final_start = history.ops.iter().filter(|o| o.final_read).map(|o| o.invoke_ns).min().unwrap_or(u64::MAX);
    let mut sessions: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        sessions.entry(op.process).or_default().push(op);
    }
    // (generation, complete time, process) of every completed rebalance.
    let generations: Vec<(i32, u64, u64)> = history
        .ops
        .iter()
        .filter_map(|o| match &o.kind {
            OpKind::Generation { generation, .. } => Some((*generation, o.complete_ns, o.process)),
            _ => None,
        })
        .collect();
    for (process, ops) in &sessions {
        let Some(last_generation) = generations.iter().filter(|g| g.2 == *process).map(|g| g.0).max() else {
            continue;
        };
        let crash = ops.iter().find(|o| matches!(o.kind, OpKind::Crash)).map(|o| o.invoke_ns);
        let departed = crash.unwrap_or_else(|| ops.iter().map(|o| o.complete_ns).max().unwrap_or(0));
        if departed >= final_start {
            continue;
        }
        let others = || generations.iter().filter(|g| g.2 != *process && g.0 > last_generation);
        if others().any(|g| g.1 < departed) {
            continue; // the group had already moved on without it
        }
        let Some(next) = others().map(|g| g.0).min() else { continue };
        // The members that remain all hold the next generation's assignment.
        let settled = others().filter(|g| g.0 == next).map(|g| g.1).max().expect("next generation listed");
        let took = ns(settled - departed);
        if crash.is_some() {
            timing.after_crash.push(took);
        } else {
            timing.after_leave.push(took);
        }
    }
    for &crash in coordinator_crashes {
        let at = crash.as_nanos() as u64;
        if at >= final_start {
            continue;
        }
        let first = history
            .ops
            .iter()
            .filter(|o| matches!(o.kind, OpKind::Commit { .. }) && o.outcome == Outcome::Ok && o.invoke_ns >= at)
            .map(|o| o.complete_ns)
            .min();
        if let Some(done) = first.filter(|&d| d < final_start) {
            timing.commit_after_coordinator_crash.push(ns(done - at));
        }
    }
    timing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::TopicPartition;

    fn op(process: u64, at_ms: u64, kind: OpKind) -> Op {
        let t = at_ms * 1_000_000;
        Op {
            index: 0,
            process,
            node: format!("c{process}"),
            invoke_ns: t,
            complete_ns: t,
            kind,
            outcome: Outcome::Ok,
            final_read: false,
        }
    }

    fn generation(process: u64, at_ms: u64, generation: i32) -> Op {
        let partitions = vec![TopicPartition { topic: "t".into(), partition: 0 }];
        op(process, at_ms, OpKind::Generation { member: format!("m{process}"), generation, partitions })
    }

    fn commit(process: u64, at_ms: u64) -> Op {
        op(process, at_ms, OpKind::Commit { offsets: BTreeMap::new(), generation: Some(1) })
    }

    #[test]
    fn a_departure_is_timed_to_the_next_generation_of_those_who_remain() {
        let ops = vec![
            generation(1, 100, 1),
            generation(2, 100, 1),
            generation(3, 110, 1),
            op(1, 500, OpKind::Poll { records: vec![] }), // member 1 leaves after this
            generation(2, 800, 2),
            generation(3, 900, 2),
            op(3, 1000, OpKind::Crash),
            generation(2, 3000, 3),
            op(2, 3100, OpKind::Poll { records: vec![] }),
        ];
        let t = measure(&History { ops, ..History::default() }, &[]);
        assert_eq!(t.after_leave, vec![Duration::from_millis(400)]);
        assert_eq!(t.after_crash, vec![Duration::from_millis(2000)]);
    }

    #[test]
    fn a_member_the_group_left_behind_is_not_timed() {
        // Member 1 was paused: the group moved to generation 2 without it.
        let ops = vec![generation(1, 100, 1), generation(2, 100, 1), generation(2, 400, 2), op(1, 900, OpKind::Crash)];
        let t = measure(&History { ops, ..History::default() }, &[]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_coordinator_crash_is_timed_to_the_first_commit_sent_after_it() {
        let mut failed = commit(1, 1200);
        failed.outcome = Outcome::Fail { error: "NOT_COORDINATOR".into() };
        let mut slow = commit(1, 1300);
        slow.invoke_ns = 900_000_000; // sent before the crash
        let ops = vec![commit(1, 500), failed, slow, commit(1, 2500)];
        let mut late = commit(1, 9000);
        late.invoke_ns = 3_000_000_000;
        let mut h = History { ops, ..History::default() };
        h.ops.push(late);
        let t = measure(&h, &[Duration::from_secs(1)]);
        assert_eq!(t.commit_after_coordinator_crash, vec![Duration::from_millis(1500)]);
        assert_eq!(
            t.summary(),
            vec!["first commit after a coordinator crash: 1 times, median 1.50 s, p90 1.50 s, max 1.50 s".to_string()]
        );
    }
}
