//! One steady run end to end: produce, consume, final read, checkers.

use faultline_sim::runner::{run_scenario, RunOptions};
use faultline_sim::scenario;

#[test]
fn steady_run_is_valid_and_reads_everything() {
    let s = scenario::builtin_named("steady").unwrap();
    let r = run_scenario(&s, 1, &RunOptions { keep_trace: true }).unwrap();
    println!("{}", r.report);
    println!("ops {} sim {:?} trace events {} hash {:016x}", r.ops, r.sim_time, r.trace.len(), r.trace_hash);
    assert!(r.final_read_complete, "final read did not finish");
    assert!(r.report.valid, "{}", r.report);
    assert!(r.report.stats.sends_ok > 100, "{:?}", r.report.stats);
    assert_eq!(r.report.stats.unseen, 0);
}

/// `faultline check` judges a history file as the run did: the steady
/// run's history is valid, and the same history with one acknowledged
/// value's every read removed is not.
#[test]
fn recorded_histories_are_judged_from_their_file() {
    use faultline_sim::history::{OpKind, Outcome};
    let s = scenario::builtin_named("steady").unwrap();
    let r = run_scenario(&s, 3, &RunOptions::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("faultline-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.jsonl");
    r.history.write_jsonl(std::fs::File::create(&good).unwrap()).unwrap();
    assert_eq!(faultline_sim::cli::check(&good, &[]).unwrap(), 0);

    let mut h = r.history.clone();
    let victim = h
        .ops
        .iter()
        .find_map(|op| match (&op.kind, &op.outcome) {
            (OpKind::Send { value, offset: Some(_), .. }, Outcome::Ok) => Some(value.clone()),
            _ => None,
        })
        .expect("an acknowledged send");
    for op in &mut h.ops {
        if let OpKind::Poll { records } = &mut op.kind {
            records.retain(|rec| rec.value != victim);
        }
    }
    let bad = dir.join("bad.jsonl");
    h.write_jsonl(std::fs::File::create(&bad).unwrap()).unwrap();
    assert_eq!(faultline_sim::cli::check(&bad, &[]).unwrap(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The seed alone replays a swarm-drawn configuration, and prints it.
#[test]
fn swarm_draws_replay_from_the_seed() {
    let s = scenario::builtin_named("crash-restart").unwrap();
    let a = run_scenario(&s, 11, &RunOptions::default()).unwrap();
    let b = run_scenario(&s, 11, &RunOptions::default()).unwrap();
    let draw = a.draw.clone().expect("built-in scenarios draw a configuration");
    assert!(draw.to_string().contains("segment_bytes="), "{draw}");
    assert_eq!(a.draw, b.draw);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert!(a.liveness.passed(), "{}", a.liveness.summary());
}
