//! Same scenario, same seed, same run: the trace hash (which covers every
//! byte delivered, every disk event, every fault and every client operation)
//! must not change between two runs in one process.

use faultline_sim::runner::{run_scenario, RunOptions};
use faultline_sim::scenario;

#[test]
fn every_builtin_scenario_is_deterministic() {
    for s in scenario::builtin().unwrap() {
        for seed in 1..=20 {
            let a = run_scenario(&s, seed, &RunOptions::default()).unwrap();
            let b = run_scenario(&s, seed, &RunOptions::default()).unwrap();
            println!(
                "{} seed {seed}: {} ops, {} faults, {}, trace {:016x}",
                s.name,
                a.ops,
                a.faults,
                a.verdict(),
                a.trace_hash
            );
            assert_eq!(a.trace_hash, b.trace_hash, "{} seed {seed} diverged", s.name);
            assert_eq!(a.history, b.history, "{} seed {seed}: histories differ", s.name);
            assert!(a.ops > 0, "{} seed {seed} recorded nothing", s.name);
        }
    }
}

#[test]
fn different_seeds_differ() {
    let s = scenario::builtin_named("partitions").unwrap();
    let a = run_scenario(&s, 10, &RunOptions::default()).unwrap();
    let b = run_scenario(&s, 11, &RunOptions::default()).unwrap();
    assert_ne!(a.trace_hash, b.trace_hash);
}
