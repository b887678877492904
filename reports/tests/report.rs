//! The report of a failing seed names its anomaly, draws its charts, shows
//! the linearizability diagnosis and the replay command, and is the same
//! bytes every time the seed runs.

use std::collections::BTreeMap;

use faultline_broker::config::PlantedBugs;
use faultline_reports::{render_run, render_sweep};
use faultline_sim::runner::{run_scenario, RunOptions};
use faultline_sim::scenario::{self, Scenario};
use faultline_sim::sweep;

/// The committed example's scenario: steady without its swarm, with the
/// planted stale_end_offsets bug.
fn stale_end_offsets() -> Scenario {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("example/stale-end-offsets.toml");
    let s = Scenario::load(&path).unwrap();
    let mut steady = scenario::builtin_named("steady").unwrap();
    steady.swarm = None;
    steady.name = s.name.clone();
    steady.description = s.description.clone();
    steady.cluster.bugs = PlantedBugs { stale_end_offsets: true, ..PlantedBugs::default() };
    assert_eq!(s, steady, "the example is steady without its swarm, plus the bug");
    s
}

const REPLAY: &str = "cargo run --release -- sim --scenario reports/example/stale-end-offsets.toml --seed 1";

#[test]
fn a_failing_seed_report_explains_itself_and_is_deterministic() {
    let s = stale_end_offsets();
    let opts = RunOptions { keep_trace: true };
    let r = run_scenario(&s, 1, &opts).unwrap();
    assert!(!r.passed(), "seed 1 of the planted bug fails: {}", r.verdict());
    let html = render_run(&r, REPLAY).unwrap();

    // The anomaly is named and explained, with the fault before it.
    assert!(html.contains("INVALID (nonlinearizable)"), "verdict missing");
    assert!(html.contains("<h3>nonlinearizable</h3>"), "anomaly not named");
    assert!(html.contains("cannot be placed"), "no unplaceable operation");
    assert!(html.contains("Longest linearizable prefix"), "no prefix");
    assert!(html.contains("Preceding fault: no fault had been injected before it"), "no preceding fault");
    // Charts: throughput/latency, offsets, the space-time diagram.
    assert_eq!(html.matches("<svg").count(), 3, "three charts");
    assert!(html.contains("acknowledged sends per second"));
    assert!(html.contains("high watermark"));
    assert!(html.contains("messages received between"));
    assert!(html.contains("broker-0") && html.contains("consumer-0"), "space-time lanes");
    // Replay command, and nothing that fetches anything.
    assert!(html.contains(REPLAY), "replay command missing");
    assert!(only_svg_namespace(&html), "the report must not load anything");

    // Same seed, same bytes.
    let again = run_scenario(&s, 1, &opts).unwrap();
    assert_eq!(render_run(&again, REPLAY).unwrap(), html, "the report differs between two runs of one seed");
}

/// The only URL allowed is the SVG namespace declaration.
fn only_svg_namespace(html: &str) -> bool {
    !html.contains("<script") && html.replace("http://www.w3.org/2000/svg", "").find("http").is_none()
}

#[test]
fn the_sweep_summary_links_failing_seeds_with_replay_commands() {
    let s = stale_end_offsets();
    let outcomes: Vec<_> = [1, 2].iter().map(|&seed| sweep::run_one(&s, seed)).collect();
    assert!(outcomes.iter().any(|o| !o.passed));
    let reports: BTreeMap<u64, String> =
        outcomes.iter().filter(|o| !o.passed).map(|o| (o.seed, format!("seed-{}", o.seed))).collect();
    let html = render_sweep(&s, "stale.toml", &outcomes, &reports);
    assert!(html.contains("nonlinearizable"), "anomalies by kind");
    let first = outcomes.iter().find(|o| !o.passed).unwrap().seed;
    assert!(html.contains(&format!("href=\"seed-{first}/index.html\"")), "link to the failing seed");
    assert!(html.contains(&format!("sim --scenario stale.toml --seed {first}")), "replay command");
    assert!(only_svg_namespace(&html));
}
