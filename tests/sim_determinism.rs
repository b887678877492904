//! Determinism across processes: the same scenario and seed, run by two
//! separate `faultline sim` processes, must print the same trace hash.

use std::process::Command;

fn trace_hash(scenario: &str, seed: u64) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["sim", "--scenario", scenario, "--seed", &seed.to_string()])
        .env_remove("RUST_LOG")
        .output()
        .expect("run faultline sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.code().is_some(), "faultline sim was killed: {stdout}");
    stdout
        .lines()
        .find_map(|l| l.split("trace hash ").nth(1))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| panic!("no trace hash in output:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// Seeds per scenario compared across processes.
const SEEDS: u64 = 20;

#[test]
fn two_processes_agree_on_the_trace_hash() {
    // This test process is one; each `faultline sim` child is another. Both
    // must print the same hash for every seed of every built-in scenario.
    for s in faultline_sim::scenario::builtin().unwrap() {
        for seed in 1..=SEEDS {
            let here = faultline_sim::runner::run_scenario(&s, seed, &Default::default()).unwrap();
            let there = trace_hash(&s.name, seed);
            assert_eq!(there.len(), 16, "{there}");
            assert_eq!(format!("{:016x}", here.trace_hash), there, "{} seed {seed} differs between processes", s.name);
        }
    }
}

/// The table runs every built-in scenario. Its verdicts are the broker's
/// business; this checks the table itself, and that a failing run prints
/// its replay command.
#[test]
fn default_table_lists_every_scenario() {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("sim")
        .env_remove("RUST_LOG")
        .output()
        .expect("run faultline sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    match out.status.code() {
        Some(0) => {}
        Some(1) => assert!(stdout.contains("cargo run --release -- sim --scenario"), "no replay command:\n{stdout}"),
        other => panic!("faultline sim exited with {other:?}:\n{stdout}"),
    }
    for name in ["steady", "partitions", "crash-restart", "disk-faults", "slow-links", "medium-rot"] {
        assert!(stdout.contains(name), "{name} missing from:\n{stdout}");
    }
}
