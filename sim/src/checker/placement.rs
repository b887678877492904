//! Where keyed records land (`misplaced-key`): a keyed send must go to the
//! partition Kafka's default partitioner gives its key,
//! `toPositive(murmur2(key)) % partitions`, so that a Java client, kcat and
//! Faultline's producer agree on which partition holds a key.
//!
//! The hash here is the checker's own reading of Kafka's
//! `Utils.murmur2`, written apart from the producer's so that a bug in the
//! producer's cannot hide itself; `tests` pins both to Kafka's test vectors.
//! The partition count comes from the final read's `assign`, which names
//! every partition of every topic; without it (the final read never began)
//! there is nothing to judge.

use std::collections::BTreeMap;

use super::kind::AnomalyKind;
use super::report::Anomaly;
use crate::history::{History, OpKind, Outcome, TopicPartition};

pub(super) fn key_placement(history: &History, out: &mut Vec<Anomaly>) {
    let mut partitions: BTreeMap<&str, i32> = BTreeMap::new();
    for op in history.ops.iter().filter(|op| op.final_read) {
        if let OpKind::Assign { partitions: assigned } = &op.kind {
            for tp in assigned {
                let n = partitions.entry(tp.topic.as_str()).or_insert(0);
                *n = (*n).max(tp.partition + 1);
            }
        }
    }
    for op in &history.ops {
        let OpKind::Send { topic, key: Some(key), value, partition: Some(partition), offset } = &op.kind else {
            continue;
        };
        let Some(&n) = partitions.get(topic.as_str()) else { continue };
        if matches!(op.outcome, Outcome::Fail { .. }) {
            continue;
        }
        let expected = kafka_partition(key.as_bytes(), n);
        if *partition != expected {
            out.push(Anomaly {
                kind: AnomalyKind::MisplacedKey,
                partition: Some(TopicPartition { topic: topic.clone(), partition: *partition }),
                offsets: offset.iter().copied().collect(),
                values: vec![value.clone()],
                ops: vec![op.index],
                explanation: format!(
                    "#{} sent key {key:?} to {topic}-{partition}; Kafka's partitioner puts it in {topic}-{expected} of {n}",
                    op.index
                ),
            });
        }
    }
}

/// `Utils.toPositive(Utils.murmur2(key)) % partitions`.
fn kafka_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) as i32 % partitions
}

/// Kafka's murmur2 (seed 0x9747b28c), read straight off the Java: whole
/// little-endian words first, then the 1 to 3 trailing bytes, then the
/// final avalanche.
fn murmur2(key: &[u8]) -> u32 {
    let m: u32 = 0x5bd1_e995;
    let whole = key.len() / 4 * 4;
    let mut h = 0x9747_b28c_u32 ^ key.len() as u32;
    let mut i = 0;
    while i < whole {
        let w =
            u32::from(key[i]) | u32::from(key[i + 1]) << 8 | u32::from(key[i + 2]) << 16 | u32::from(key[i + 3]) << 24;
        let k = w.wrapping_mul(m);
        h = h.wrapping_mul(m) ^ (k ^ k >> 24).wrapping_mul(m);
        i += 4;
    }
    let rest = &key[whole..];
    for (shift, &b) in rest.iter().enumerate().rev() {
        h ^= u32::from(b) << (8 * shift);
    }
    if !rest.is_empty() {
        h = h.wrapping_mul(m);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^ h >> 15
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2` vectors.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&str, i32); 6] = [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            ("abc", 479470107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key.as_bytes()) as i32, want, "{key}");
            assert_eq!(faultline_broker::client::partitioner::murmur2(key.as_bytes()), want, "{key}");
        }
    }

    #[test]
    fn partition_is_positive_modulo() {
        for p in 1..8 {
            let got = kafka_partition(b"foobar", p);
            assert!((0..p).contains(&got));
            assert_eq!(got, faultline_broker::client::partitioner::partition_for_key(b"foobar", p));
        }
    }
}
