//! Leader epoch uniqueness (`leader-epoch-reused`): one leader epoch of a
//! partition names one leader's tenure, held by one broker in one run of
//! its process.
//!
//! Followers find where their log diverges from the leader's by leader
//! epoch (KIP-101, OffsetForLeaderEpoch): two tenures in one epoch — two
//! brokers, or a broker and its own restarted process, which may have lost
//! an unsynced tail and written other records at the same offsets — make
//! two different logs look alike, and the truncation that should repair one
//! of them never happens. The controller bumps the epoch on every leader
//! change, including the one that takes leadership away from a broker's
//! previous run when it registers again. Judged from what brokers reported
//! through the seam (`PartitionLeader`); a run without a quorum reports
//! nothing and passes.

use std::collections::BTreeMap;

use super::kind::AnomalyKind;
use super::quorum::ms;
use super::report::Anomaly;
use crate::history::{History, ObservedEvent, TopicPartition};

/// Adds a `leader-epoch-reused` anomaly for every partition leader epoch
/// taken by a second (broker, run).
pub(super) fn leader_epoch_checks(history: &History, out: &mut Vec<Anomaly>) {
    // (topic, partition, epoch) -> the first (host, incarnation) to lead it, and when
    let mut first: BTreeMap<(&str, i32, i32), (&str, u64, u64)> = BTreeMap::new();
    for o in &history.observations {
        let ObservedEvent::PartitionLeader { topic, partition, leader_epoch, .. } = &o.event else { continue };
        let key = (topic.as_str(), *partition, *leader_epoch);
        let (host, incarnation, at) = *first.entry(key).or_insert((o.host.as_str(), o.incarnation, o.at_ns));
        if (host, incarnation) == (o.host.as_str(), o.incarnation) {
            continue; // the same tenure, its role applied again
        }
        out.push(Anomaly {
            kind: AnomalyKind::LeaderEpochReused,
            partition: Some(TopicPartition { topic: topic.clone(), partition: *partition }),
            offsets: Vec::new(),
            values: Vec::new(),
            ops: Vec::new(),
            explanation: format!(
                "leader epoch {leader_epoch} of {topic}-{partition} was taken by {host} (run {incarnation}) at {} \
                 and again by {} (run {}) at {}",
                ms(at),
                o.host,
                o.incarnation,
                ms(o.at_ns)
            ),
        });
        // One finding per tenure that reused the epoch.
        first.insert(key, (o.host.as_str(), o.incarnation, o.at_ns));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Observed;

    fn leads(at_ms: u64, host: &str, incarnation: u64, partition: i32, leader_epoch: i32) -> Observed {
        let node = host.trim_start_matches("broker-").parse().unwrap();
        let event = ObservedEvent::PartitionLeader { node, topic: "events".into(), partition, leader_epoch };
        Observed { at_ns: at_ms * 1_000_000, host: host.into(), incarnation, event }
    }

    fn found(observations: Vec<Observed>) -> Vec<Anomaly> {
        let mut out = Vec::new();
        leader_epoch_checks(&History { observations, ..History::default() }, &mut out);
        out
    }

    #[test]
    fn each_epoch_its_own_tenure_passes() {
        let ok = found(vec![
            leads(100, "broker-1", 1, 0, 0),
            leads(150, "broker-1", 1, 0, 0), // the role applied again
            leads(200, "broker-2", 1, 0, 1),
            leads(300, "broker-1", 2, 0, 2), // restarted, led again at a new epoch
            leads(300, "broker-2", 1, 1, 2), // another partition's epoch 2
        ]);
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn a_restarted_broker_leading_at_its_old_epoch_is_caught() {
        let bad = found(vec![leads(100, "broker-1", 1, 0, 3), leads(900, "broker-1", 2, 0, 3)]);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].kind, AnomalyKind::LeaderEpochReused);
        assert!(bad[0].explanation.contains("broker-1 (run 1)") && bad[0].explanation.contains("(run 2)"));
    }

    #[test]
    fn two_brokers_in_one_epoch_are_caught() {
        let bad = found(vec![leads(100, "broker-1", 1, 0, 3), leads(200, "broker-2", 1, 0, 3)]);
        assert_eq!(bad.len(), 1);
    }
}
