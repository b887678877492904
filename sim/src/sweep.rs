//! Sweeps: one scenario over many seeds, spread across OS threads.
//!
//! Each simulation is single-threaded and owns its world; a sweep runs
//! several of them side by side, one per thread, outside any simulation.
//! Results come back in seed order whatever order the threads finish in.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::{bail, Context};

use crate::group_timing::{self, GroupTiming};
use crate::runner::{run_scenario, RunOptions, CORRUPT_READ, SEQUENCE_REFUSED};
use crate::scenario::Scenario;

/// What a sweep keeps of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedOutcome {
    pub seed: u64,
    pub passed: bool,
    pub verdict: String,
    pub ops: usize,
    pub faults: usize,
    pub trace_hash: u64,
    /// Anomaly kinds found (invalid or not) and how many of each.
    pub anomalies: BTreeMap<String, usize>,
    /// Set if the simulation itself failed.
    pub error: Option<String>,
    /// Simulated time the run took.
    pub sim_time: std::time::Duration,
    /// Wall-clock time the run took (the only field that differs between
    /// two sweeps of the same seeds).
    pub wall: std::time::Duration,
    /// How long the consumer group took to recover from departures and
    /// coordinator crashes (empty without groups).
    pub group_timing: GroupTiming,
}

/// Parse "N", "A..B" (B excluded) or "A..=B".
pub fn parse_seeds(s: &str) -> anyhow::Result<RangeInclusive<u64>> {
    let num = |x: &str| x.trim().parse::<u64>().with_context(|| format!("bad seed {x:?} in {s:?}"));
    let r = if let Some((a, b)) = s.split_once("..=") {
        num(a)?..=num(b)?
    } else if let Some((a, b)) = s.split_once("..") {
        let (a, b) = (num(a)?, num(b)?);
        if b == 0 || b <= a {
            bail!("seed range {s:?} is empty");
        }
        a..=b - 1
    } else {
        let n = num(s)?;
        n..=n
    };
    if r.is_empty() {
        bail!("seed range {s:?} is empty");
    }
    Ok(r)
}

/// Parse a shard "i/n" (1-based).
pub fn parse_shard(s: &str) -> anyhow::Result<(u64, u64)> {
    let bad = || anyhow::anyhow!("bad shard {s:?}: want i/n with 1 <= i <= n");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (u64, u64) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if n == 0 || i == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

/// The seeds of shard `i` of `n`: every n-th, starting with the i-th.
pub fn shard(seeds: &[u64], i: u64, n: u64) -> Vec<u64> {
    seeds.iter().enumerate().filter(|(k, _)| *k as u64 % n == i - 1).map(|(_, s)| *s).collect()
}

/// Run `scenario` for every seed on `jobs` threads, calling `progress` as
/// each run ends (from the calling thread). Returns outcomes in seed order.
pub fn sweep(
    scenario: &Scenario,
    seeds: &[u64],
    jobs: usize,
    mut progress: impl FnMut(&SeedOutcome),
) -> Vec<SeedOutcome> {
    let seeds: Vec<u64> = seeds.to_vec();
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    let mut out = Vec::with_capacity(seeds.len());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(seeds.len()) {
            let tx = tx.clone();
            let (seeds, next) = (&seeds, &next);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { break };
                if tx.send(run_one(scenario, seed)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for o in rx {
            progress(&o);
            out.push(o);
        }
    });
    out.sort_by_key(|o| o.seed);
    out
}

/// Run one seed, keeping only what a sweep reports.
pub fn run_one(scenario: &Scenario, seed: u64) -> SeedOutcome {
    let watch = crate::seam::Stopwatch::start();
    match run_scenario(scenario, seed, &RunOptions::default()) {
        Ok(r) => {
            let mut anomalies: BTreeMap<String, usize> =
                r.report.counts.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k.to_string(), *n)).collect();
            // The runner's own finding, counted beside the checkers' kinds.
            if !r.unreadable.is_empty() {
                anomalies.insert(CORRUPT_READ.to_string(), r.unreadable.len());
            }
            if r.sequence_refusals > 0 {
                anomalies.insert(SEQUENCE_REFUSED.to_string(), r.sequence_refusals as usize);
            }
            if !r.liveness.passed() {
                anomalies.insert("not-live".to_string(), 1);
            }
            SeedOutcome {
                seed,
                passed: r.passed(),
                verdict: r.verdict(),
                ops: r.ops,
                faults: r.faults,
                trace_hash: r.trace_hash,
                anomalies,
                error: None,
                sim_time: r.sim_time,
                wall: watch.elapsed(),
                group_timing: group_timing::measure(&r.history, &r.coordinator_crashes),
            }
        }
        Err(e) => SeedOutcome {
            seed,
            passed: false,
            verdict: "ERROR".into(),
            ops: 0,
            faults: 0,
            trace_hash: 0,
            anomalies: BTreeMap::new(),
            error: Some(format!("{e:#}")),
            sim_time: std::time::Duration::ZERO,
            wall: watch.elapsed(),
            group_timing: GroupTiming::default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges() {
        assert_eq!(parse_seeds("1..4").unwrap(), 1..=3);
        assert_eq!(parse_seeds("1..=4").unwrap(), 1..=4);
        assert_eq!(parse_seeds("7").unwrap(), 7..=7);
        assert!(parse_seeds("4..1").is_err());
        assert!(parse_seeds("x..3").is_err());
    }

    #[test]
    fn shards_split_a_range_without_overlap() {
        let seeds: Vec<u64> = (1..=10).collect();
        let parts: Vec<Vec<u64>> = (1..=3).map(|i| shard(&seeds, i, 3)).collect();
        assert_eq!(parts[0], vec![1, 4, 7, 10]);
        let mut all: Vec<u64> = parts.concat();
        all.sort();
        assert_eq!(all, seeds);
        assert_eq!(parse_shard("2/3").unwrap(), (2, 3));
        assert!(parse_shard("0/3").is_err() && parse_shard("4/3").is_err() && parse_shard("x").is_err());
    }
}
