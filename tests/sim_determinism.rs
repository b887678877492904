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

#[test]
fn two_processes_agree_on_the_trace_hash() {
    for (scenario, seed) in
        [("steady", 3), ("partitions", 4), ("crash-restart", 5), ("disk-faults", 6), ("slow-links", 7)]
    {
        let a = trace_hash(scenario, seed);
        let b = trace_hash(scenario, seed);
        assert_eq!(a, b, "{scenario} seed {seed} differs between processes");
        assert_eq!(a.len(), 16, "{a}");
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
    for name in ["steady", "partitions", "crash-restart", "disk-faults", "slow-links"] {
        assert!(stdout.contains(name), "{name} missing from:\n{stdout}");
    }
}
