//! Every built-in scenario gets a valid verdict on a handful of seeds inside
//! `cargo test`, not only in the CI sweeps: a change that breaks the broker
//! under faults fails here first, with the replay command.

use faultline_sim::runner::{run_scenario, RunOptions};
use faultline_sim::scenario;

const SEEDS: u64 = 5;

#[test]
fn every_builtin_scenario_passes() {
    let mut failed = Vec::new();
    for s in scenario::builtin().unwrap() {
        for seed in 1..=SEEDS {
            let r = run_scenario(&s, seed, &RunOptions::default()).unwrap();
            if !r.passed() {
                failed.push(format!(
                    "{} seed {seed}: {}{}\n  replay: cargo run --release -- sim --scenario {} --seed {seed}",
                    s.name,
                    r.verdict(),
                    r.findings(),
                    s.name
                ));
            }
        }
    }
    assert!(failed.is_empty(), "built-in scenarios failed:\n{}", failed.join("\n"));
}
