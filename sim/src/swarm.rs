//! Swarm testing: a scenario declares ranges, and each seed draws its own
//! configuration from them (as FoundationDB's and TigerBeetle's simulators
//! do), so a sweep covers many configurations and not one.
//!
//! Every field is optional; a field left out keeps the scenario's value.
//! Sizes are `[min, max]` drawn log-uniformly (bytes to tens of KiB are
//! equally likely decades), other numbers `[min, max]` uniformly, `acks` and
//! `compression` lists of choices, `idempotence`, `keep_nemesis` and
//! `pre_vote` probabilities. Each field draws from its own stream labelled
//! `swarm/<field>` of the run seed, so adding a field, or drawing more for
//! one, never changes what the others draw.
//!
//! Draws that would make an invalid configuration are mended, not redrawn:
//! idempotence forces acks -1 and at least one retry, and caps the requests
//! in flight at 5, as Kafka does.

use std::fmt;

use anyhow::bail;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;
use crate::seed;

/// The ranges of a scenario's `[swarm]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Swarm {
    /// `segment.bytes` (log-uniform).
    pub segment_bytes: Option<[u64; 2]>,
    /// `index.interval.bytes` (log-uniform).
    pub index_interval_bytes: Option<[u64; 2]>,
    /// `flush.messages` (log-uniform).
    pub flush_messages: Option<[u64; 2]>,
    /// `flush.ms`.
    pub flush_ms: Option<[i64; 2]>,
    /// Partitions of every topic.
    pub partitions: Option<[i32; 2]>,
    /// Padding bytes per value (log-uniform).
    pub value_size: Option<[usize; 2]>,
    /// Codecs to pick from.
    pub compression: Option<Vec<String>>,
    /// `acks` values to pick from.
    pub acks: Option<Vec<i16>>,
    pub linger_ms: Option<[u64; 2]>,
    /// `batch.size` (log-uniform).
    pub batch_size: Option<[usize; 2]>,
    /// `max.in.flight.requests.per.connection`.
    pub max_in_flight: Option<[usize; 2]>,
    /// Probability that the producers are idempotent.
    pub idempotence: Option<f64>,
    pub retries: Option<[u32; 2]>,
    /// Sends in flight per producer.
    pub concurrency: Option<[u32; 2]>,
    /// Fraction of keyed sends.
    pub keyed: Option<[f64; 2]>,
    /// Consumers' fetch size (log-uniform).
    pub fetch_max_bytes: Option<[i32; 2]>,
    /// The final read's fetch size (log-uniform).
    pub final_fetch_max_bytes: Option<[i32; 2]>,
    pub seek_probability: Option<[f64; 2]>,
    /// Divides every nemesis interval: above 1, faults come more often.
    pub fault_rate: Option<[f64; 2]>,
    /// Probability that each of the scenario's nemeses takes part (at least
    /// one always does, if there are any).
    pub keep_nemesis: Option<f64>,
    /// Probability that the metadata quorum's voters ask for pre-votes
    /// (KIP-996); without, elections split more often.
    pub pre_vote: Option<f64>,
}

/// What one seed drew: (field, value) in field order, for printing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Draw {
    pub values: Vec<(String, String)>,
}

impl fmt::Display for Draw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(" "))
    }
}

fn stream(seed: u64, field: &str) -> ChaCha8Rng {
    seed::rng(seed, &format!("swarm/{field}"))
}

fn log_uniform(rng: &mut ChaCha8Rng, [lo, hi]: [f64; 2]) -> f64 {
    if hi <= lo {
        return lo;
    }
    let (a, b) = (lo.max(1.0).ln(), hi.max(1.0).ln());
    rng.random_range(a..=b).exp().clamp(lo, hi)
}

fn uniform_f(rng: &mut ChaCha8Rng, [lo, hi]: [f64; 2]) -> f64 {
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..=hi)
    }
}

fn uniform_i(rng: &mut ChaCha8Rng, [lo, hi]: [i64; 2]) -> i64 {
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..=hi)
    }
}

fn pair<T: Copy + Into<f64>>(r: [T; 2]) -> [f64; 2] {
    [r[0].into(), r[1].into()]
}

impl Swarm {
    pub fn validate(&self) -> anyhow::Result<()> {
        fn ordered<T: PartialOrd + fmt::Debug>(name: &str, r: &Option<[T; 2]>) -> anyhow::Result<()> {
            if let Some([a, b]) = r {
                if a > b {
                    bail!("swarm.{name}: min {a:?} exceeds max {b:?}");
                }
            }
            Ok(())
        }
        ordered("segment_bytes", &self.segment_bytes)?;
        ordered("index_interval_bytes", &self.index_interval_bytes)?;
        ordered("flush_messages", &self.flush_messages)?;
        ordered("flush_ms", &self.flush_ms)?;
        ordered("partitions", &self.partitions)?;
        ordered("value_size", &self.value_size)?;
        ordered("linger_ms", &self.linger_ms)?;
        ordered("batch_size", &self.batch_size)?;
        ordered("max_in_flight", &self.max_in_flight)?;
        ordered("retries", &self.retries)?;
        ordered("concurrency", &self.concurrency)?;
        ordered("keyed", &self.keyed)?;
        ordered("fetch_max_bytes", &self.fetch_max_bytes)?;
        ordered("final_fetch_max_bytes", &self.final_fetch_max_bytes)?;
        ordered("seek_probability", &self.seek_probability)?;
        ordered("fault_rate", &self.fault_rate)?;
        if self.segment_bytes.is_some_and(|[a, _]| a < 1024) {
            bail!("swarm.segment_bytes must be at least 1024");
        }
        if self.partitions.is_some_and(|[a, b]| a < 1 || b > 64) {
            bail!("swarm.partitions must lie in 1..=64");
        }
        if self.value_size.is_some_and(|[_, b]| b > 1 << 20) {
            bail!("swarm.value_size must be at most 1 MiB");
        }
        if self.max_in_flight.is_some_and(|[a, _]| a == 0) || self.concurrency.is_some_and(|[a, b]| a == 0 || b > 64) {
            bail!("swarm.max_in_flight and swarm.concurrency must be positive (concurrency at most 64)");
        }
        if self.fetch_max_bytes.is_some_and(|[a, _]| a < 1) || self.final_fetch_max_bytes.is_some_and(|[a, _]| a < 1) {
            bail!("swarm fetch sizes must be positive");
        }
        if self.fault_rate.is_some_and(|[a, _]| a <= 0.0) {
            bail!("swarm.fault_rate must be positive");
        }
        for (name, p) in
            [("idempotence", self.idempotence), ("keep_nemesis", self.keep_nemesis), ("pre_vote", self.pre_vote)]
        {
            if p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
                bail!("swarm.{name} must be a probability");
            }
        }
        for r in [&self.keyed, &self.seek_probability].into_iter().flatten() {
            if !(0.0..=1.0).contains(&r[0]) || !(0.0..=1.0).contains(&r[1]) {
                bail!("swarm.keyed and swarm.seek_probability must lie in [0, 1]");
            }
        }
        if let Some(acks) = &self.acks {
            if acks.is_empty() || acks.iter().any(|a| ![0, 1, -1].contains(a)) {
                bail!("swarm.acks must list some of 0, 1, -1");
            }
        }
        if let Some(cs) = &self.compression {
            if cs.is_empty() || cs.iter().any(|c| c.parse::<faultline_broker::client::Compression>().is_err()) {
                bail!("swarm.compression must list some of none, gzip, snappy, lz4, zstd");
            }
        }
        Ok(())
    }

    /// `base` with this seed's draws applied, and the draws.
    pub fn apply(&self, base: &Scenario, seed: u64) -> (Scenario, Draw) {
        let mut s = base.clone();
        s.swarm = None;
        let mut d = Draw::default();
        let mut note = |k: &str, v: String| d.values.push((k.to_string(), v));
        let w = &mut s.workload;
        let log = &mut s.cluster.log;

        if let Some(r) = self.segment_bytes {
            log.segment_bytes = log_uniform(&mut stream(seed, "segment_bytes"), [r[0] as f64, r[1] as f64]) as u64;
            note("segment_bytes", log.segment_bytes.to_string());
        }
        if let Some(r) = self.index_interval_bytes {
            log.index_interval_bytes =
                log_uniform(&mut stream(seed, "index_interval_bytes"), [r[0] as f64, r[1] as f64]) as u64;
            note("index_interval_bytes", log.index_interval_bytes.to_string());
        }
        if let Some(r) = self.flush_messages {
            log.flush_messages = log_uniform(&mut stream(seed, "flush_messages"), [r[0] as f64, r[1] as f64]) as u64;
            note("flush_messages", log.flush_messages.to_string());
        }
        if let Some(r) = self.flush_ms {
            log.flush_ms = uniform_i(&mut stream(seed, "flush_ms"), r);
            note("flush_ms", log.flush_ms.to_string());
        }
        if let Some(r) = self.partitions {
            let n = uniform_i(&mut stream(seed, "partitions"), [r[0].into(), r[1].into()]) as i32;
            for t in &mut s.cluster.topics {
                t.partitions = n;
            }
            note("partitions", n.to_string());
        }
        if let Some(r) = self.value_size {
            w.value_size = log_uniform(&mut stream(seed, "value_size"), [r[0] as f64, r[1] as f64]) as usize;
            note("value_size", w.value_size.to_string());
        }
        if let Some(cs) = &self.compression {
            w.compression = cs[stream(seed, "compression").random_range(0..cs.len())].clone();
            note("compression", w.compression.clone());
        }
        if let Some(acks) = &self.acks {
            w.acks = acks[stream(seed, "acks").random_range(0..acks.len())];
        }
        if let Some(r) = self.linger_ms {
            w.linger_ms = uniform_i(&mut stream(seed, "linger_ms"), [r[0] as i64, r[1] as i64]) as u64;
            note("linger_ms", w.linger_ms.to_string());
        }
        if let Some(r) = self.batch_size {
            w.batch_size = log_uniform(&mut stream(seed, "batch_size"), [r[0] as f64, r[1] as f64]) as usize;
            note("batch_size", w.batch_size.to_string());
        }
        if let Some(r) = self.max_in_flight {
            w.max_in_flight = uniform_i(&mut stream(seed, "max_in_flight"), [r[0] as i64, r[1] as i64]) as usize;
        }
        if let Some(p) = self.idempotence {
            w.idempotence = stream(seed, "idempotence").random_bool(p);
        }
        if let Some(r) = self.retries {
            w.retries = uniform_i(&mut stream(seed, "retries"), [r[0].into(), r[1].into()]) as u32;
        }
        if w.idempotence {
            // Kafka's rules for an idempotent producer.
            w.acks = -1;
            w.max_in_flight = w.max_in_flight.min(5);
            w.retries = w.retries.max(1);
        }
        if self.acks.is_some() || self.idempotence.is_some() {
            note("acks", w.acks.to_string());
        }
        if self.max_in_flight.is_some() || self.idempotence.is_some() {
            note("max_in_flight", w.max_in_flight.to_string());
        }
        if self.idempotence.is_some() {
            note("idempotence", w.idempotence.to_string());
        }
        if self.retries.is_some() || self.idempotence.is_some() {
            note("retries", w.retries.to_string());
        }
        if let Some(r) = self.concurrency {
            w.concurrency = uniform_i(&mut stream(seed, "concurrency"), [r[0].into(), r[1].into()]) as u32;
            note("concurrency", w.concurrency.to_string());
        }
        if let Some(r) = self.keyed {
            w.keyed = (uniform_f(&mut stream(seed, "keyed"), r) * 100.0).round() / 100.0;
            note("keyed", w.keyed.to_string());
        }
        if let Some(r) = self.fetch_max_bytes {
            w.fetch_max_bytes = log_uniform(&mut stream(seed, "fetch_max_bytes"), pair(r)) as i32;
            note("fetch_max_bytes", w.fetch_max_bytes.to_string());
        }
        if let Some(r) = self.final_fetch_max_bytes {
            w.final_fetch_max_bytes = log_uniform(&mut stream(seed, "final_fetch_max_bytes"), pair(r)) as i32;
            note("final_fetch_max_bytes", w.final_fetch_max_bytes.to_string());
        }
        if let Some(r) = self.seek_probability {
            w.seek_probability = (uniform_f(&mut stream(seed, "seek_probability"), r) * 100.0).round() / 100.0;
            note("seek_probability", w.seek_probability.to_string());
        }
        if let Some(p) = self.keep_nemesis {
            let mut rng = stream(seed, "keep_nemesis");
            let all = std::mem::take(&mut s.faults.nemeses);
            let keep: Vec<bool> = all.iter().map(|_| rng.random_bool(p)).collect();
            let mut kept: Vec<_> = all.iter().zip(&keep).filter(|(_, k)| **k).map(|(n, _)| n.clone()).collect();
            if kept.is_empty() && !all.is_empty() {
                kept.push(all[rng.random_range(0..all.len())].clone());
            }
            let names: Vec<&str> = kept.iter().map(|n| n.kind.name()).collect();
            note("nemeses", format!("[{}]", names.join(",")));
            s.faults.nemeses = kept;
        }
        if let Some(p) = self.pre_vote {
            s.cluster.pre_vote = stream(seed, "pre_vote").random_bool(p);
            note("pre_vote", s.cluster.pre_vote.to_string());
        }
        if let Some(r) = self.fault_rate {
            let rate = (uniform_f(&mut stream(seed, "fault_rate"), r) * 100.0).round() / 100.0;
            for n in &mut s.faults.nemeses {
                n.interval_s /= rate;
            }
            note("fault_rate", rate.to_string());
        }
        (s, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario;

    fn swarmed() -> Scenario {
        let mut s = scenario::builtin_named("crash-restart").unwrap();
        s.swarm = Some(Swarm {
            segment_bytes: Some([2048, 1 << 20]),
            value_size: Some([1, 40_000]),
            acks: Some(vec![0, 1, -1]),
            idempotence: Some(0.5),
            max_in_flight: Some([1, 8]),
            compression: Some(vec!["none".into(), "zstd".into()]),
            keep_nemesis: Some(0.5),
            fault_rate: Some([0.5, 2.0]),
            ..Swarm::default()
        });
        s
    }

    #[test]
    fn the_seed_alone_decides_the_draw() {
        let s = swarmed();
        let (a, da) = s.resolve(7);
        let (b, db) = s.resolve(7);
        assert_eq!(a, b);
        assert_eq!(da, db);
        let differ = (8..40).any(|seed| s.resolve(seed).1 != da);
        assert!(differ, "every seed drew the same configuration");
    }

    #[test]
    fn draws_stay_in_range_and_valid() {
        let s = swarmed();
        for seed in 0..200 {
            let (r, _) = s.resolve(seed);
            r.validate().unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
            assert!((2048..=1 << 20).contains(&r.cluster.log.segment_bytes));
            assert!(r.workload.value_size <= 40_000);
            if r.workload.idempotence {
                assert_eq!(r.workload.acks, -1);
                assert!(r.workload.max_in_flight <= 5 && r.workload.retries >= 1);
            }
            assert!(!r.faults.nemeses.is_empty());
            assert!(r.swarm.is_none());
        }
    }

    #[test]
    fn one_field_does_not_disturb_another() {
        let s = swarmed();
        let mut more = s.clone();
        more.swarm.as_mut().unwrap().linger_ms = Some([0, 50]);
        for seed in 0..20 {
            let (a, _) = s.resolve(seed);
            let (b, _) = more.resolve(seed);
            assert_eq!(a.cluster.log.segment_bytes, b.cluster.log.segment_bytes);
            assert_eq!(a.workload.acks, b.workload.acks);
        }
    }
}
