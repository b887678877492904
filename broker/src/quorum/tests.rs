//! Unit tests of the quorum core's message handlers, and the harness sweeps.

use super::harness::{self, SimConfig};
use super::*;

fn seeds(default: u64) -> u64 {
    std::env::var("QUORUM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

#[test]
fn harness_clean_sweep() {
    let n = seeds(300);
    let (failed, passed) = harness::sweep(0..n, &SimConfig::default());
    if let Some((seed, o)) = failed {
        panic!("seed {seed} failed: {o:?}");
    }
    let mut times: Vec<i64> = passed.iter().filter_map(|o| o.heal_to_leader_ms).collect();
    times.sort_unstable();
    let pct = |p: usize| times[(times.len() - 1) * p / 100];
    let committed: i64 = passed.iter().map(|o| o.committed).sum();
    let loads: usize = passed.iter().map(|o| o.snapshot_loads).sum();
    println!(
        "{n} seeds passed; heal to stable leader ms: p50 {} p99 {} max {}; {committed} offsets committed; {loads} snapshot downloads",
        pct(50),
        pct(99),
        pct(100)
    );
}
