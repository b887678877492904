//! Corruption the client's CRC check catches on one read is not a finding:
//! the consumer fails that poll, keeps its position and fetches the data
//! again. Only corruption that outlasts the final read's retries (see the
//! planted `skip_crc_on_recovery` test) fails a run.

use faultline_sim::runner::{run_scenario, RunOptions};
use faultline_sim::scenario;

#[test]
fn transient_read_corruption_is_retried_not_reported() {
    let mut s = scenario::builtin_named("steady").unwrap();
    s.name = "steady-bit-flips".into();
    // Every read of the broker's disk during the run may come back with a
    // flipped bit; the medium stays intact, and the heal ends it.
    s.faults.disk.read_corruption = 0.5;
    s.validate().unwrap();
    let r = run_scenario(&s, 1, &RunOptions::default()).unwrap();
    println!("{}{}", r.report, r.findings());
    assert!(r.corrupt_polls > 0, "no poll met corrupt data; the test proves nothing");
    assert!(r.unreadable.is_empty(), "{}", r.findings());
    // No skips, no reordering: a refused fetch moved no position.
    assert!(r.report.valid, "{}", r.report);
    assert!(r.final_read_complete, "{}", r.findings());
    assert!(r.passed(), "{}", r.verdict());
}
