//! Histories generated from a correct log model pass the checker clean, and
//! one injected fault in such a history is caught.

use proptest::prelude::*;
use proptest::sample::Index as Pick;

use super::testkit::{fail, info, part, poll_kind, Builder};
use super::*;
use crate::history::Polled;

const PARTITIONS: usize = 3;
const FINAL_READER: u64 = 1_000;

#[derive(Debug, Clone)]
enum Step {
    /// A producer sends to a partition. `fate`: mostly acknowledged; some
    /// fail; some time out having landed or not.
    Send { producer: u64, partition: usize, fate: u8 },
    /// A consumer reads up to `max` records of each partition onwards from
    /// its positions.
    Poll { consumer: usize, max: usize },
    /// A consumer crashes and comes back as a new session at the start.
    Restart { consumer: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3u64, 0..PARTITIONS, 0..10u8)
            .prop_map(|(producer, partition, fate)| Step::Send { producer, partition, fate }),
        2 => (0..2usize, 1..4usize).prop_map(|(consumer, max)| Step::Poll { consumer, max }),
        1 => (0..2usize).prop_map(|consumer| Step::Restart { consumer }),
    ]
}

struct Consumer {
    process: u64,
    positions: [usize; PARTITIONS],
}

/// Runs the steps against a correct log, then reads everything in a final
/// read phase.
fn model(steps: &[Step]) -> History {
    let mut b = Builder::default();
    let mut logs: [Vec<String>; PARTITIONS] = Default::default();
    let mut consumers: Vec<Option<Consumer>> = vec![None, None];
    let mut next_process = 10;
    for (n, s) in steps.iter().enumerate() {
        match *s {
            Step::Send { producer, partition, fate } => {
                let value = format!("v{n}");
                let offset = logs[partition].len() as i64;
                match fate {
                    0 => {
                        b.send(producer, &value, None, fail());
                    }
                    1 | 2 => {
                        if fate == 1 {
                            logs[partition].push(value.clone());
                        }
                        b.send(producer, &value, None, info());
                    }
                    _ => {
                        logs[partition].push(value.clone());
                        b.sent(producer, &value, partition as i32, offset);
                    }
                }
            }
            Step::Poll { consumer, max } => {
                let c = consumers[consumer].get_or_insert_with(|| {
                    next_process += 1;
                    b.assign(next_process, &[0, 1, 2]);
                    Consumer { process: next_process, positions: [0; PARTITIONS] }
                });
                let records = read(&logs, &mut c.positions, max);
                b.op(c.process, poll_kind(&records), Outcome::Ok, false);
            }
            Step::Restart { consumer } => {
                if let Some(c) = consumers[consumer].take() {
                    b.op(c.process, OpKind::Crash, info(), false);
                }
            }
        }
    }
    b.op(FINAL_READER, OpKind::Assign { partitions: (0..3).map(part).collect() }, Outcome::Ok, true);
    let mut positions = [0; PARTITIONS];
    loop {
        let records = read(&logs, &mut positions, 3);
        if records.is_empty() {
            break;
        }
        b.op(FINAL_READER, poll_kind(&records), Outcome::Ok, true);
    }
    b.history
}

fn read<'a>(
    logs: &'a [Vec<String>; PARTITIONS],
    positions: &mut [usize; PARTITIONS],
    max: usize,
) -> Vec<(i32, i64, &'a str)> {
    let mut out = Vec::new();
    for (p, log) in logs.iter().enumerate() {
        for (o, v) in log.iter().enumerate().skip(positions[p]).take(max) {
            out.push((p as i32, o as i64, v.as_str()));
        }
        positions[p] = (positions[p] + max).min(log.len());
    }
    out
}

/// Every record of every poll, as (op position, record position).
fn polled(h: &History, final_only: bool) -> Vec<(usize, usize)> {
    let mut at = Vec::new();
    for (i, op) in h.ops.iter().enumerate() {
        if let OpKind::Poll { records } = &op.kind {
            if op.final_read || !final_only {
                at.extend((0..records.len()).map(|j| (i, j)));
            }
        }
    }
    at
}

fn records_mut(h: &mut History, op: usize) -> &mut Vec<Polled> {
    match &mut h.ops[op].kind {
        OpKind::Poll { records } => records,
        _ => unreachable!("polled() only yields polls"),
    }
}

fn acknowledged(h: &History, value: &str) -> bool {
    h.ops.iter().any(|op| op.outcome == Outcome::Ok && matches!(&op.kind, OpKind::Send { value: v, .. } if v == value))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn correct_histories_pass(steps in prop::collection::vec(step(), 0..60)) {
        let h = model(&steps);
        let r = check(&h, &CheckOptions::all());
        prop_assert!(r.valid && r.anomalies.is_empty(), "{}", r);
    }

    #[test]
    fn dropped_final_record_is_lost(steps in prop::collection::vec(step(), 1..60), pick: Pick) {
        let mut h = model(&steps);
        // Only an acknowledged record below the final read's end can be
        // shown lost: past the end it is merely unseen, and an unacknowledged
        // one may legitimately vanish.
        let finals = polled(&h, true);
        let mut end = [i64::MIN; PARTITIONS];
        for &(i, j) in &finals {
            let r = record(&h, i, j);
            end[r.partition.partition as usize] = end[r.partition.partition as usize].max(r.offset);
        }
        let candidates: Vec<(usize, usize)> = finals
            .into_iter()
            .filter(|&(i, j)| {
                let r = record(&h, i, j);
                acknowledged(&h, &r.value) && r.offset < end[r.partition.partition as usize]
            })
            .collect();
        prop_assume!(!candidates.is_empty());
        let (i, j) = *pick.get(&candidates);
        let dropped = records_mut(&mut h, i).remove(j);
        let r = check(&h, &CheckOptions::default());
        prop_assert!(!r.valid, "{}", r);
        prop_assert!(r.of_kind(AnomalyKind::LostWrite).any(|a| a.values == vec![dropped.value.clone()]), "{}", r);
    }

    #[test]
    fn changed_value_is_caught(steps in prop::collection::vec(step(), 1..60), pick: Pick, fresh: bool) {
        let mut h = model(&steps);
        let all = polled(&h, false);
        prop_assume!(!all.is_empty());
        let (i, j) = *pick.get(&all);
        let other = all.iter().rev().find_map(|&(i2, j2)| match &h.ops[i2].kind {
            OpKind::Poll { records } if records[j2].value != record(&h, i, j).value => Some(records[j2].value.clone()),
            _ => None,
        });
        let new = match (fresh, other) {
            (false, Some(v)) => v,
            _ => "changed".to_string(),
        };
        records_mut(&mut h, i)[j].value = new;
        let r = check(&h, &CheckOptions::default());
        prop_assert!(!r.valid, "{}", r);
    }

    #[test]
    fn duplicated_value_is_caught(steps in prop::collection::vec(step(), 1..60), pick: Pick, partition in 0..3i32) {
        let mut h = model(&steps);
        let all = polled(&h, false);
        prop_assume!(!all.is_empty());
        let (i, j) = *pick.get(&all);
        let value = record(&h, i, j).value.clone();
        // Past every offset, so only the duplicate is wrong.
        let last = h.ops.len() - 1;
        records_mut(&mut h, last).push(Polled { partition: part(partition), offset: 1_000, value: value.clone() });
        let r = check(&h, &CheckOptions::default());
        prop_assert!(!r.valid, "{}", r);
        prop_assert!(r.of_kind(AnomalyKind::Duplicate).any(|a| a.values == vec![value.clone()]), "{}", r);
    }
}

fn record(h: &History, op: usize, record: usize) -> &Polled {
    match &h.ops[op].kind {
        OpKind::Poll { records } => &records[record],
        _ => unreachable!("polled() only yields polls"),
    }
}

#[test]
fn model_reads_everything() {
    let steps = [
        Step::Send { producer: 0, partition: 0, fate: 9 },
        Step::Send { producer: 1, partition: 0, fate: 1 },
        Step::Poll { consumer: 0, max: 1 },
        Step::Send { producer: 0, partition: 2, fate: 0 },
        Step::Restart { consumer: 0 },
        Step::Poll { consumer: 0, max: 3 },
    ];
    let h = model(&steps);
    let r = check(&h, &CheckOptions::all());
    assert!(r.anomalies.is_empty(), "{r}");
    assert_eq!(r.stats.final_read_ops, 2);
    assert_eq!((r.stats.sends_ok, r.stats.sends_info, r.stats.sends_fail), (1, 1, 1));
}
