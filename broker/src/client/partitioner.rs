//! Which partition a record goes to: Kafka's default partitioner.
//!
//! Keyed records hash with Kafka's murmur2 so that a key lands on exactly the
//! partition a Java client would pick. Keyless records are sticky: they stay on
//! one partition until a batch for it is sent, then move to a random other
//! partition, so that small records fill batches instead of spraying
//! one-record batches everywhere.

use std::collections::BTreeMap;

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), bit for bit.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    // Java's switch falls through: 3 mixes bytes 2, 1 and 0; 2 mixes 1 and 0.
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clear the sign bit (not `abs`, which overflows).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition Kafka's default partitioner gives a serialized key.
pub fn partition_for_key(key: &[u8], num_partitions: i32) -> i32 {
    assert!(num_partitions > 0, "a topic has at least one partition");
    to_positive(murmur2(key)) % num_partitions
}

/// Sticky choice for keyless records, one current partition per topic.
#[derive(Debug, Default)]
pub struct StickyPartitioner {
    current: BTreeMap<String, i32>,
}

impl StickyPartitioner {
    /// The partition a keyless record for `topic` goes to now. `available` are
    /// the partitions that have a leader (may be empty: then any partition);
    /// `random` is a fresh random number from the environment.
    pub fn partition(&mut self, topic: &str, num_partitions: i32, available: &[i32], random: u64) -> i32 {
        assert!(num_partitions > 0, "a topic has at least one partition");
        if let Some(&p) = self.current.get(topic) {
            if p < num_partitions {
                return p;
            }
        }
        let p = pick(num_partitions, available, None, random);
        self.current.insert(topic.to_string(), p);
        p
    }

    /// A batch of `topic`'s partition `sent` went out: if that was the sticky
    /// partition, move to a different one so load spreads over partitions.
    pub fn on_batch_sent(&mut self, topic: &str, sent: i32, num_partitions: i32, available: &[i32], random: u64) {
        if self.current.get(topic) == Some(&sent) && num_partitions > 0 {
            let p = pick(num_partitions, available, Some(sent), random);
            self.current.insert(topic.to_string(), p);
        }
    }
}

/// A random partition, preferring ones with a leader and avoiding `previous`
/// when there is any other choice.
fn pick(num_partitions: i32, available: &[i32], previous: Option<i32>, random: u64) -> i32 {
    let all: Vec<i32>;
    let pool = if available.is_empty() {
        all = (0..num_partitions).collect();
        &all[..]
    } else {
        available
    };
    let others: Vec<i32> = pool.iter().copied().filter(|p| Some(*p) != previous).collect();
    let choices = if others.is_empty() { pool } else { &others[..] };
    choices[(random % choices.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka_vectors() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key), *want, "key {:?}", String::from_utf8_lossy(key));
        }
    }

    /// A literal transcription of the Java code with i32 arithmetic and
    /// `>>>`, to cross-check the u32 version on arbitrary input.
    fn murmur2_java(data: &[u8]) -> i32 {
        let length = data.len() as i32;
        let seed: i32 = 0x9747b28c_u32 as i32;
        let m: i32 = 0x5bd1e995;
        let r = 24;
        let mut h: i32 = seed ^ length;
        let length4 = length / 4;
        for i in 0..length4 {
            let i4 = (i * 4) as usize;
            let mut k: i32 = (data[i4] as i32 & 0xff)
                .wrapping_add((data[i4 + 1] as i32 & 0xff) << 8)
                .wrapping_add((data[i4 + 2] as i32 & 0xff) << 16)
                .wrapping_add((data[i4 + 3] as i32 & 0xff) << 24);
            k = k.wrapping_mul(m);
            k ^= ((k as u32) >> r) as i32;
            k = k.wrapping_mul(m);
            h = h.wrapping_mul(m);
            h ^= k;
        }
        let base = (length & !3) as usize;
        let rem = length % 4;
        if rem == 3 {
            h ^= (data[base + 2] as i32 & 0xff) << 16;
        }
        if rem >= 2 {
            h ^= (data[base + 1] as i32 & 0xff) << 8;
        }
        if rem >= 1 {
            h ^= data[base] as i32 & 0xff;
            h = h.wrapping_mul(m);
        }
        h ^= ((h as u32) >> 13) as i32;
        h = h.wrapping_mul(m);
        h ^= ((h as u32) >> 15) as i32;
        h
    }

    proptest::proptest! {
        #[test]
        fn murmur2_matches_java_transcription(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            proptest::prop_assert_eq!(murmur2(&data), murmur2_java(&data));
        }
    }

    #[test]
    fn keys_land_in_range_and_are_stable() {
        for n in 1..20 {
            let p = partition_for_key(b"some-key", n);
            assert!((0..n).contains(&p));
            assert_eq!(p, partition_for_key(b"some-key", n));
        }
        // toPositive, not abs: "21" hashes negative.
        assert_eq!(partition_for_key(b"21", 3), (-973_932_308_i32 & 0x7fff_ffff) % 3);
    }

    #[test]
    fn sticky_stays_until_batch_sent_then_moves() {
        let mut s = StickyPartitioner::default();
        let first = s.partition("t", 4, &[], 7);
        for r in 0..10 {
            assert_eq!(s.partition("t", 4, &[], r), first);
        }
        s.on_batch_sent("t", (first + 1) % 4, 4, &[], 3);
        assert_eq!(s.partition("t", 4, &[], 0), first, "another partition's batch does not move it");
        s.on_batch_sent("t", first, 4, &[], 5);
        assert_ne!(s.partition("t", 4, &[], 0), first);
    }

    #[test]
    fn sticky_prefers_available_and_handles_one_partition() {
        let mut s = StickyPartitioner::default();
        assert_eq!(s.partition("t", 3, &[2], 100), 2);
        s.on_batch_sent("t", 2, 3, &[2], 1);
        assert_eq!(s.partition("t", 3, &[2], 0), 2);
        assert_eq!(s.partition("one", 1, &[], 9), 0);
        s.on_batch_sent("one", 0, 1, &[], 9);
        assert_eq!(s.partition("one", 1, &[], 9), 0);
    }
}
