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

/// Sweep with one planted bug until the harness catches it; the bound is
/// part of the claim that the harness can.
fn catches(bugs: QuorumBugs, bound: u64) -> u64 {
    let sim = SimConfig { bugs, ..SimConfig::default() };
    let (failed, _) = harness::sweep(0..bound, &sim);
    let (seed, o) = failed.unwrap_or_else(|| panic!("{bugs:?} not caught in {bound} seeds"));
    println!("{bugs:?} caught at seed {seed}: {}", o.failure.unwrap_or_default());
    seed
}

#[test]
fn harness_catches_vote_before_persist() {
    catches(QuorumBugs { vote_before_persist: true, ..QuorumBugs::default() }, 3000);
}

#[test]
fn harness_catches_commit_of_previous_epoch() {
    catches(QuorumBugs { commit_previous_epoch: true, ..QuorumBugs::default() }, 3000);
}

#[test]
fn harness_catches_kept_divergent_suffix() {
    catches(QuorumBugs { keep_divergent_suffix: true, ..QuorumBugs::default() }, 3000);
}

/// How often each planted bug is caught, for the record:
/// `QUORUM_SEEDS=3000 cargo test --release -p faultline-broker --lib quorum::tests::planted_bug_catch_rates -- --ignored --nocapture`
#[test]
#[ignore]
fn planted_bug_catch_rates() {
    let n = seeds(1000);
    for bugs in [
        QuorumBugs { vote_before_persist: true, ..QuorumBugs::default() },
        QuorumBugs { commit_previous_epoch: true, ..QuorumBugs::default() },
        QuorumBugs { keep_divergent_suffix: true, ..QuorumBugs::default() },
    ] {
        let sim = SimConfig { bugs, ..SimConfig::default() };
        let failing: Vec<u64> = (0..n).filter(|&s| harness::run(s, &sim).failure.is_some()).collect();
        println!(
            "{bugs:?}: caught in {} of {n} seeds; first {:?}",
            failing.len(),
            failing.iter().take(5).collect::<Vec<_>>()
        );
    }
}
