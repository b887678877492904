//! The metadata quorum checks: judge what the servers reported through the
//! seam ([`crate::history::Observed`]) and the cluster's answers to
//! CreateTopics and Metadata.
//!
//! - `quorum-two-leaders`: two nodes name different leaders for one epoch
//!   (Raft's election safety).
//! - `metadata-divergence`: two nodes (or one node in two incarnations)
//!   applied different records at one offset: committed metadata changed.
//! - `metadata-order`: within one incarnation a node applied offsets out of
//!   order, or skipped a record some node applied — its applied sequence is
//!   then not a prefix of the longest. An incarnation may start anywhere (it
//!   may load a snapshot), but from there on it applies every record.
//! - `topic-lost`: an acknowledged CreateTopics whose topic a broker's
//!   Metadata answer after the heal does not list.
//!
//! [`leader_elected_after`] measures the election after the heal, which the
//! runner bounds.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Anomaly, AnomalyKind};
use crate::history::{History, ObservedEvent, OpKind, Outcome};

/// Run every quorum check over `history`.
pub(super) fn quorum_checks(history: &History, found: &mut Vec<Anomaly>) {
    two_leaders(history, found);
    applied(history, found);
    topics(history, found);
}

fn anomaly(kind: AnomalyKind, offsets: Vec<i64>, ops: Vec<u64>, explanation: String) -> Anomaly {
    Anomaly { kind, partition: None, offsets, values: Vec::new(), ops, explanation }
}

/// A simulated time in ns, as seconds for an explanation.
pub(super) fn ms(at_ns: u64) -> String {
    format!("{:.3} s", at_ns as f64 / 1e9)
}

fn two_leaders(history: &History, found: &mut Vec<Anomaly>) {
    // epoch -> (leader, who said so first, when)
    let mut named: BTreeMap<i32, (i32, String, u64)> = BTreeMap::new();
    let mut reported: BTreeMap<(i32, i32), ()> = BTreeMap::new();
    for o in &history.observations {
        let ObservedEvent::QuorumLeader { epoch, leader: Some(leader), .. } = o.event else { continue };
        let (first, by, at) = named.entry(epoch).or_insert_with(|| (leader, o.host.clone(), o.at_ns)).clone();
        if first != leader && reported.insert((epoch, leader), ()).is_none() {
            found.push(anomaly(
                AnomalyKind::QuorumTwoLeaders,
                Vec::new(),
                Vec::new(),
                format!(
                    "epoch {epoch} has two leaders: {by} named node {first} at {}, {} named node {leader} at {}",
                    ms(at),
                    o.host,
                    ms(o.at_ns)
                ),
            ));
        }
    }
}

fn applied(history: &History, found: &mut Vec<Anomaly>) {
    // offset -> (digest, first host to apply it, when)
    let mut committed: BTreeMap<i64, (u64, String, u64)> = BTreeMap::new();
    let mut diverged: BTreeMap<i64, ()> = BTreeMap::new();
    for o in &history.observations {
        let ObservedEvent::MetadataApplied { offset, digest, .. } = o.event else { continue };
        let (first, by, at) = committed.entry(offset).or_insert_with(|| (digest, o.host.clone(), o.at_ns)).clone();
        if first != digest && diverged.insert(offset, ()).is_none() {
            found.push(anomaly(
                AnomalyKind::MetadataDivergence,
                vec![offset],
                Vec::new(),
                format!(
                    "metadata offset {offset} was applied with digest {first:016x} by {by} at {} and with digest \
                     {digest:016x} by {} (incarnation {}) at {}: committed metadata changed",
                    ms(at),
                    o.host,
                    o.incarnation,
                    ms(o.at_ns)
                ),
            ));
        }
    }
    // (host, incarnation) -> last offset applied
    let mut last: BTreeMap<(&str, u64), i64> = BTreeMap::new();
    let mut flagged: BTreeMap<&str, ()> = BTreeMap::new();
    for o in &history.observations {
        let ObservedEvent::MetadataApplied { offset, .. } = o.event else { continue };
        let key = (o.host.as_str(), o.incarnation);
        let prev = last.insert(key, offset);
        let Some(prev) = prev else { continue };
        let why = if offset <= prev {
            Some(format!("applied offset {offset} after offset {prev}"))
        } else {
            committed.range(prev + 1..offset).next().map(|(skipped, (_, by, _))| {
                format!("went from offset {prev} to {offset}, skipping {skipped}, which {by} applied")
            })
        };
        // One finding per host is enough: after the first, every later
        // record of that incarnation would repeat it.
        if let Some(why) = why {
            if flagged.insert(o.host.as_str(), ()).is_none() {
                found.push(anomaly(
                    AnomalyKind::MetadataOrder,
                    vec![prev, offset],
                    Vec::new(),
                    format!(
                        "{} (incarnation {}) {why} at {}: its applied sequence is not a prefix of the longest",
                        o.host,
                        o.incarnation,
                        ms(o.at_ns)
                    ),
                ));
            }
        }
    }
}

fn topics(history: &History, found: &mut Vec<Anomaly>) {
    let created: Vec<(&str, u64, u64)> = history
        .ops
        .iter()
        .filter_map(|op| match (&op.kind, &op.outcome) {
            (OpKind::CreateTopic { topic, .. }, Outcome::Ok) => Some((topic.as_str(), op.complete_ns, op.index)),
            _ => None,
        })
        .collect();
    for op in &history.ops {
        let (OpKind::Metadata { broker, topics, .. }, Outcome::Ok) = (&op.kind, &op.outcome) else { continue };
        if !op.final_read {
            continue;
        }
        for &(topic, acked_ns, create_op) in &created {
            if acked_ns <= op.invoke_ns && !topics.iter().any(|t| t == topic) {
                found.push(anomaly(
                    AnomalyKind::TopicLost,
                    Vec::new(),
                    vec![create_op, op.index],
                    format!(
                        "CreateTopics of {topic} was acknowledged at {}, but {broker}'s Metadata answer after the \
                         heal (at {}) does not list it",
                        ms(acked_ns),
                        ms(op.complete_ns)
                    ),
                ));
            }
        }
    }
}

/// How long after `from` (the heal) the quorum had a leader: the first
/// moment at or after `from` when a majority of the `voters` (host names),
/// the leader among them, each named the same leader in the same epoch in
/// their current incarnation. `None` if that never happened. A stopped
/// host agrees with nobody until it starts again; then, until it reports
/// anew, it is taken to believe its last report (the leader it persisted).
pub fn leader_elected_after(history: &History, voters: &BTreeMap<String, i32>, from: Duration) -> Option<Duration> {
    let from_ns = from.as_nanos() as u64;
    let mut state: BTreeMap<&str, Option<(i32, i32)>> = voters.keys().map(|h| (h.as_str(), None)).collect();
    let majority = voters.len() / 2 + 1;
    let agreed = |state: &BTreeMap<&str, Option<(i32, i32)>>| {
        state.values().flatten().any(|&(epoch, leader)| {
            let same = state.values().filter(|s| **s == Some((epoch, leader))).count();
            let leader_agrees = voters
                .iter()
                .any(|(h, id)| *id == leader && state.get(h.as_str()).copied().flatten() == Some((epoch, leader)));
            same >= majority && leader_agrees
        })
    };
    let mut believed: BTreeMap<&str, Option<(i32, i32)>> = BTreeMap::new();
    let mut checked_at_from = false;
    for o in &history.observations {
        if o.at_ns >= from_ns && !checked_at_from {
            checked_at_from = true;
            if agreed(&state) {
                return Some(Duration::ZERO);
            }
        }
        let Some(s) = state.get_mut(o.host.as_str()) else { continue };
        match o.event {
            // A stopped node agrees with nobody. A restarted one reports
            // nothing when it resumes the leader it persisted, so it is
            // taken to believe what it last reported before it stopped.
            ObservedEvent::Stopped => {
                believed.insert(o.host.as_str(), s.take());
            }
            ObservedEvent::Started => *s = believed.get(o.host.as_str()).copied().flatten(),
            ObservedEvent::QuorumLeader { epoch, leader, .. } => *s = leader.map(|l| (epoch, l)),
            _ => continue,
        }
        if o.at_ns >= from_ns && agreed(&state) {
            return Some(Duration::from_nanos(o.at_ns - from_ns));
        }
    }
    (!checked_at_from && agreed(&state)).then_some(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Observed, Op};

    fn obs(at_ms: u64, host: &str, incarnation: u64, event: ObservedEvent) -> Observed {
        Observed { at_ns: at_ms * 1_000_000, host: host.into(), incarnation, event }
    }

    fn leader(node: i32, epoch: i32, leader: Option<i32>) -> ObservedEvent {
        ObservedEvent::QuorumLeader { node, epoch, leader }
    }

    fn applied_ev(node: i32, offset: i64, digest: u64) -> ObservedEvent {
        ObservedEvent::MetadataApplied { node, offset, digest }
    }

    fn check(h: &History) -> Vec<Anomaly> {
        let mut found = Vec::new();
        quorum_checks(h, &mut found);
        found
    }

    fn kinds(h: &History) -> Vec<AnomalyKind> {
        check(h).into_iter().map(|a| a.kind).collect()
    }

    fn healthy() -> History {
        let mut h = History::default();
        for (i, host) in ["broker-0", "broker-1", "broker-2"].iter().enumerate() {
            h.observations.push(obs(0, host, 1, ObservedEvent::Started));
            h.observations.push(obs(1000 + i as u64, host, 1, leader(i as i32, 1, Some(0))));
            for off in [1, 2, 4] {
                h.observations.push(obs(1100 + off as u64, host, 1, applied_ev(i as i32, off, off as u64 * 7)));
            }
        }
        h
    }

    #[test]
    fn a_healthy_quorum_shows_nothing() {
        assert!(check(&healthy()).is_empty(), "{:?}", check(&healthy()));
    }

    #[test]
    fn two_leaders_in_one_epoch_are_caught() {
        let mut h = healthy();
        h.observations.push(obs(2000, "broker-2", 1, leader(2, 1, Some(2))));
        assert_eq!(kinds(&h), [AnomalyKind::QuorumTwoLeaders]);
        // A new epoch may have a new leader.
        let mut h = healthy();
        h.observations.push(obs(2000, "broker-2", 1, leader(2, 2, Some(2))));
        assert!(kinds(&h).is_empty());
    }

    #[test]
    fn a_changed_record_is_caught_even_across_restarts() {
        let mut h = healthy();
        h.observations.push(obs(3000, "broker-1", 2, ObservedEvent::Started));
        h.observations.push(obs(3001, "broker-1", 2, applied_ev(1, 1, 7)));
        h.observations.push(obs(3002, "broker-1", 2, applied_ev(1, 2, 99)));
        assert_eq!(kinds(&h), [AnomalyKind::MetadataDivergence]);
    }

    #[test]
    fn replay_after_a_restart_is_fine_but_going_back_within_one_is_not() {
        let mut h = healthy();
        h.observations.push(obs(3000, "broker-1", 2, applied_ev(1, 1, 7)));
        h.observations.push(obs(3001, "broker-1", 2, applied_ev(1, 2, 14)));
        assert!(kinds(&h).is_empty());
        h.observations.push(obs(3002, "broker-1", 2, applied_ev(1, 2, 14)));
        assert_eq!(kinds(&h), [AnomalyKind::MetadataOrder]);
    }

    #[test]
    fn a_skipped_record_is_caught() {
        let mut h = healthy();
        h.observations.push(obs(3000, "broker-0", 1, applied_ev(0, 5, 35)));
        h.observations.push(obs(3001, "broker-1", 1, applied_ev(1, 6, 42)));
        assert_eq!(kinds(&h), [AnomalyKind::MetadataOrder]);
    }

    fn op(index: u64, invoke_ms: u64, complete_ms: u64, kind: OpKind, outcome: Outcome) -> Op {
        Op {
            index,
            process: 0,
            node: "reader".into(),
            invoke_ns: invoke_ms * 1_000_000,
            complete_ns: complete_ms * 1_000_000,
            kind,
            outcome,
            final_read: index > 0,
        }
    }

    #[test]
    fn an_acknowledged_topic_missing_from_metadata_is_caught() {
        let mut h = History::default();
        h.push(op(0, 10, 20, OpKind::CreateTopic { topic: "events".into(), partitions: 2 }, Outcome::Ok));
        let meta =
            |topics: Vec<String>| OpKind::Metadata { broker: "broker-1".into(), topics, isr: Default::default() };
        h.push(op(1, 5000, 5001, meta(vec!["events".into()]), Outcome::Ok));
        assert!(kinds(&h).is_empty());
        h.push(op(2, 5002, 5003, meta(vec![]), Outcome::Ok));
        assert_eq!(kinds(&h), [AnomalyKind::TopicLost]);
        assert_eq!(check(&h)[0].ops, [0, 2]);
    }

    #[test]
    fn election_time_counts_from_the_heal() {
        let voters: BTreeMap<String, i32> =
            [("broker-0", 0), ("broker-1", 1), ("broker-2", 2)].into_iter().map(|(h, i)| (h.into(), i)).collect();
        let h = healthy();
        // Agreed long before the heal at 5 s: elected at once.
        assert_eq!(leader_elected_after(&h, &voters, Duration::from_secs(5)), Some(Duration::ZERO));
        let mut h = healthy();
        h.observations.push(obs(4000, "broker-0", 1, ObservedEvent::Stopped));
        assert_eq!(leader_elected_after(&h, &voters, Duration::from_secs(5)), None);
        h.observations.push(obs(6000, "broker-1", 1, leader(1, 2, Some(1))));
        assert_eq!(leader_elected_after(&h, &voters, Duration::from_secs(5)), None);
        h.observations.push(obs(6500, "broker-2", 1, leader(2, 2, Some(1))));
        assert_eq!(leader_elected_after(&h, &voters, Duration::from_secs(5)), Some(Duration::from_millis(1500)));
        // A restarted leader resumes what it persisted.
        let mut h = healthy();
        h.observations.push(obs(4000, "broker-0", 1, ObservedEvent::Stopped));
        h.observations.push(obs(5002, "broker-0", 2, ObservedEvent::Started));
        assert_eq!(leader_elected_after(&h, &voters, Duration::from_secs(5)), Some(Duration::from_millis(2)));
    }
}
