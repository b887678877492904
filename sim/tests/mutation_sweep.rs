//! The test `sim/mutation.sh` gives cargo-mutants: a short sweep of every
//! built-in scenario that stops at the first failing seed. A mutant of the
//! broker that no run notices survives, and is either equivalent or a gap in
//! the simulator. Ignored in a normal `cargo test` (the per-scenario
//! `scenarios_pass` test covers the clean build); `MUTATION_SEEDS` sets the
//! seeds per scenario.

use faultline_sim::runner::{run_scenario, RunOptions};
use faultline_sim::scenario;

#[test]
#[ignore = "run by sim/mutation.sh"]
fn mutation_sweep() {
    let seeds: u64 = std::env::var("MUTATION_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    for s in scenario::builtin().unwrap() {
        for seed in 1..=seeds {
            let r = run_scenario(&s, seed, &RunOptions::default()).unwrap();
            assert!(r.passed(), "{} seed {seed}: {}{}", s.name, r.verdict(), r.findings());
        }
    }
}
