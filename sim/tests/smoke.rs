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
