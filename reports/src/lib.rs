//! Run reports: one self-contained HTML page per simulated run, and a
//! summary page per sweep. No JavaScript, no network, no fonts loaded:
//! inline SVG charts drawn with plotters, and text. A report is a pure
//! function of the run, so the same scenario and seed give the same bytes
//! (a sweep summary's wall-clock column is the one exception).
//!
//! A run report holds the verdict and the command that replays it;
//! throughput and latency over simulated time with fault windows shaded;
//! each partition's acknowledged end offset and the high watermark
//! ListOffsets reported; every anomaly in words with its operations and the
//! fault that preceded it; a space-time diagram of the messages between
//! nodes around the first anomaly (from the trace); the linearizability
//! verdict per partition, with the longest linearizable prefix and the
//! operation that cannot be placed; the fault timeline and the runner's
//! findings.

pub mod charts;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use faultline_sim::checker::Anomaly;
use faultline_sim::cli::Reporter;
use faultline_sim::history::{Op, OpKind, Outcome};
use faultline_sim::linearizability::Verdict;
use faultline_sim::runner::RunResult;
use faultline_sim::scenario::Scenario;
use faultline_sim::sweep::SeedOutcome;

/// Anomalies a report explains one by one; the rest are counted.
pub const MAX_ANOMALIES: usize = 20;
/// Operations shown per anomaly.
const MAX_OPS: usize = 8;
/// The space-time diagram covers this long before the first anomaly...
const BEFORE: f64 = 0.030;
/// ...and this long after.
const AFTER: f64 = 0.010;

/// The renderer the `faultline` binary hands the simulator's CLI.
pub struct HtmlReporter;

impl Reporter for HtmlReporter {
    fn run_report(&self, dir: &Path, run: &RunResult, replay: &str) -> anyhow::Result<()> {
        write_run(dir, run, replay)
    }

    fn sweep_report(
        &self,
        dir: &Path,
        scenario: &Scenario,
        spec: &str,
        outcomes: &[SeedOutcome],
        reports: &BTreeMap<u64, String>,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let page = render_sweep(scenario, spec, outcomes, reports);
        let path = dir.join("index.html");
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))
    }
}

/// Write `dir/index.html` for one run.
pub fn write_run(dir: &Path, r: &RunResult, replay: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("index.html");
    std::fs::write(&path, render_run(r, replay)?).with_context(|| format!("writing {}", path.display()))
}

/// HTML-escape text.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;max-width:960px;margin:1em auto;padding:0 1em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;border-bottom:1px solid #ccc;margin-top:1.6em}\
code,pre{font-family:monospace;background:#f4f4f4}pre{padding:.5em;overflow-x:auto}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;font-size:.9em}\
.bad{color:#b00;font-weight:bold}.ok{color:#070;font-weight:bold}.info{color:#666}\
.anomaly{border-left:4px solid #b00;padding-left:.8em;margin:1em 0}.chart svg{max-width:100%;height:auto}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        esc(title)
    )
}

fn secs(ns: u64) -> String {
    format!("{:.3} s", ns as f64 / 1e9)
}

/// One operation on one line.
pub fn op_line(op: &Op) -> String {
    let outcome = match &op.outcome {
        Outcome::Ok => "ok".to_string(),
        Outcome::Fail { error } => format!("fail ({error})"),
        Outcome::Info { error } => format!("info ({error})"),
    };
    let short = |v: &str| v.split(':').next().unwrap_or(v).to_string();
    let what = match &op.kind {
        OpKind::Send { topic, value, partition, offset, .. } => match (partition, offset) {
            (Some(p), Some(o)) => format!("send {} → {topic}-{p}@{o}", short(value)),
            (Some(p), None) => format!("send {} → {topic}-{p}", short(value)),
            _ => format!("send {} → {topic}", short(value)),
        },
        OpKind::Poll { records } => {
            let shown: Vec<String> = records
                .iter()
                .take(6)
                .map(|r| format!("{}-{}@{}={}", r.partition.topic, r.partition.partition, r.offset, short(&r.value)))
                .collect();
            let more = records.len().saturating_sub(6);
            let more = if more > 0 { format!(" +{more}") } else { String::new() };
            format!("poll [{}{more}]", shown.join(" "))
        }
        OpKind::Assign { partitions } => format!("assign {} partitions", partitions.len()),
        OpKind::Commit { offsets, generation } => {
            format!("commit {} offsets in generation {generation:?}", offsets.len())
        }
        OpKind::Generation { member, generation, partitions } => {
            format!("generation {generation}: {member} owns {} partitions", partitions.len())
        }
        OpKind::Committed { offsets } => format!("committed offsets read back: {} partitions", offsets.len()),
        OpKind::EndOffsets { ends } => {
            let e: Vec<String> =
                ends.iter().map(|e| format!("{}-{}={}", e.partition.topic, e.partition.partition, e.offset)).collect();
            format!("end offsets [{}]", e.join(" "))
        }
        OpKind::Crash => "crash".into(),
        OpKind::CreateTopic { topic, partitions } => format!("create topic {topic} ({partitions} partitions)"),
        OpKind::Metadata { broker, topics, .. } => format!("metadata from {broker}: [{}]", topics.join(" ")),
    };
    format!(
        "#{} {} (process {}) {}–{}: {what} ⇒ {outcome}",
        op.index,
        op.node,
        op.process,
        secs(op.invoke_ns),
        secs(op.complete_ns)
    )
}

/// When an anomaly became visible: the latest completion among its
/// operations, in seconds.
fn anomaly_time(r: &RunResult, a: &Anomaly) -> Option<f64> {
    a.ops.iter().filter_map(|i| r.history.ops.get(*i as usize)).map(|o| o.complete_ns).max().map(|ns| ns as f64 / 1e9)
}

/// The last fault that began at or before `t`, with how long before.
fn preceding_fault(r: &RunResult, t: f64) -> String {
    let before = r.timeline.iter().rfind(|e| e.at.as_secs_f64() <= t && !e.what.starts_with("end "));
    match before {
        Some(e) => format!("{} at {:.3} s, {:.3} s before", e.what, e.at.as_secs_f64(), t - e.at.as_secs_f64()),
        None => "no fault had been injected before it".into(),
    }
}

/// The HTML report of one run.
pub fn render_run(r: &RunResult, replay: &str) -> anyhow::Result<String> {
    let mut b = String::new();
    let verdict = r.verdict();
    let class = if r.passed() { "ok" } else { "bad" };
    let _ = writeln!(b, "<h1>Faultline run: scenario {} seed {}</h1>", esc(&r.scenario), r.seed);
    let _ = writeln!(b, "<p>Verdict: <span class=\"{class}\">{}</span></p>", esc(&verdict));
    let _ = writeln!(b, "<p>Replay: <code>{}</code></p>", esc(replay));
    if let Some(d) = &r.draw {
        let _ = writeln!(b, "<p>Configuration drawn by the seed: <code>{}</code></p>", esc(&d.to_string()));
    }
    let _ = writeln!(
        b,
        "<p>{} operations, {} faults, {:.3} s simulated, trace hash <code>{:016x}</code>.<br>{}</p>",
        r.ops,
        r.faults,
        r.sim_time.as_secs_f64(),
        r.trace_hash,
        esc(&r.liveness.summary())
    );

    let _ =
        writeln!(b, "<h2>Throughput and latency</h2>\n<div class=\"chart\">{}</div>", charts::throughput_latency(r)?);
    let _ = writeln!(b, "<h2>Offsets per partition</h2>\n<div class=\"chart\">{}</div>", charts::offsets(r)?);

    // Anomalies.
    let rep = &r.report;
    let _ = writeln!(b, "<h2>Anomalies</h2>");
    if rep.anomalies.is_empty() {
        let _ = writeln!(b, "<p class=\"ok\">None found.</p>");
    } else {
        let counts: Vec<String> =
            rep.counts.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k}: {n}")).collect();
        let _ = writeln!(b, "<p>{}</p>", esc(&counts.join(", ")));
    }
    for a in rep.anomalies.iter().take(MAX_ANOMALIES) {
        let fatal = rep.invalid_kinds.contains(&a.kind);
        let _ = writeln!(
            b,
            "<div class=\"anomaly\"><h3>{}{}</h3>\n<p>{}.</p>\n<p>{}</p>",
            esc(a.kind.as_str()),
            if fatal { "" } else { " <span class=\"info\">(informational)</span>" },
            esc(a.kind.description()),
            esc(&a.explanation)
        );
        if let Some(t) = anomaly_time(r, a) {
            let _ = writeln!(b, "<p>Seen at {t:.3} s. Preceding fault: {}.</p>", esc(&preceding_fault(r, t)));
        }
        let _ = writeln!(b, "<pre>");
        for i in a.ops.iter().take(MAX_OPS) {
            if let Some(op) = r.history.ops.get(*i as usize) {
                let _ = writeln!(b, "{}", esc(&op_line(op)));
            }
        }
        if a.ops.len() > MAX_OPS {
            let _ = writeln!(b, "… and {} more operations", a.ops.len() - MAX_OPS);
        }
        let _ = writeln!(b, "</pre></div>");
    }
    if rep.anomalies.len() > MAX_ANOMALIES {
        let _ = writeln!(
            b,
            "<p>… and {} more anomalies (see <code>--out</code>).</p>",
            rep.anomalies.len() - MAX_ANOMALIES
        );
    }

    // Space-time diagram around the first anomaly.
    if let Some(t) = rep.anomalies.first().and_then(|a| anomaly_time(r, a)) {
        let _ = writeln!(
            b,
            "<h2>Messages around the first anomaly</h2>\n<p>Each arrow is bytes a node received (blue: towards a later lane, green: back), drawn from the millisecond before; the trace records only receipt. The red line is when the first anomaly became visible.</p>\n<div class=\"chart\">{}</div>",
            charts::space_time(r, (t - BEFORE).max(0.0), t + AFTER, t)?
        );
    }

    // Linearizability.
    let lin = &rep.linearizability;
    let _ = writeln!(b, "<h2>Linearizability</h2>\n<p>{}</p>", esc(&lin.summary()));
    if let Some(why) = &rep.lin_caveat {
        let _ = writeln!(
            b,
            "<p class=\"info\">Documented finding: this configuration does not promise linearizability ({}), so the verdict is informational.</p>",
            esc(why)
        );
    }
    let _ = writeln!(b, "<table><tr><th>partition</th><th>operations</th><th>verdict</th><th>search steps</th></tr>");
    for p in &lin.partitions {
        let class = match p.verdict {
            Verdict::Linearizable => "ok",
            Verdict::Unknown => "info",
            Verdict::NotLinearizable => "bad",
        };
        let _ = writeln!(
            b,
            "<tr><td>{}-{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td></tr>",
            esc(&p.partition.topic),
            p.partition.partition,
            p.ops,
            p.verdict.as_str(),
            p.steps
        );
    }
    let _ = writeln!(b, "</table>");
    for p in lin.failures() {
        let _ = writeln!(
            b,
            "<h3>{}-{}: not linearizable</h3>\n<p>{}</p>\n<p>Longest linearizable prefix: {} operations; the last of them, in linearization order:</p>\n<pre>",
            esc(&p.partition.topic),
            p.partition.partition,
            esc(&p.explanation()),
            p.prefix_len
        );
        for t in &p.prefix_tail_text {
            let _ = writeln!(b, "{}", esc(t));
        }
        let _ = writeln!(b, "</pre>");
        if let Some(u) = &p.unplaceable_text {
            let _ = writeln!(b, "<p>The operation that cannot be placed:</p>\n<pre class=\"bad\">{}</pre>", esc(u));
        }
    }

    // Timeline and findings.
    let _ = writeln!(b, "<h2>Fault timeline</h2>");
    if r.timeline.is_empty() {
        let _ = writeln!(b, "<p>No faults.</p>");
    } else {
        let _ = writeln!(b, "<table><tr><th>at</th><th>what</th></tr>");
        for e in &r.timeline {
            let _ = writeln!(b, "<tr><td>{:.3} s</td><td>{}</td></tr>", e.at.as_secs_f64(), esc(&e.what));
        }
        let _ = writeln!(b, "</table>");
    }
    let findings = r.findings();
    if !findings.trim().is_empty() {
        let _ = writeln!(b, "<h2>Findings</h2>\n<pre>{}</pre>", esc(findings.trim()));
    }
    let _ = writeln!(b, "<h2>Checker summary</h2>\n<pre>{}</pre>", esc(&rep.to_string()));
    Ok(page(&format!("Faultline {} seed {}", r.scenario, r.seed), &b))
}

/// The HTML summary of a sweep: verdicts per seed, anomalies by kind, time
/// per seed, and links to the failing seeds' reports with their replay
/// commands.
pub fn render_sweep(
    scenario: &Scenario,
    spec: &str,
    outcomes: &[SeedOutcome],
    reports: &BTreeMap<u64, String>,
) -> String {
    let mut b = String::new();
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    let _ = writeln!(b, "<h1>Faultline sweep: scenario {}</h1>", esc(&scenario.name));
    let _ = writeln!(
        b,
        "<p>{} seeds: <span class=\"ok\">{} passed</span>, <span class=\"{}\">{} failed</span>.</p>",
        outcomes.len(),
        outcomes.len() - failed,
        if failed > 0 { "bad" } else { "ok" },
        failed
    );
    let mut kinds: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for o in outcomes {
        for (k, n) in &o.anomalies {
            let e = kinds.entry(k.as_str()).or_default();
            e.0 += 1;
            e.1 += n;
        }
    }
    let _ = writeln!(b, "<h2>Anomalies by kind</h2>");
    if kinds.is_empty() {
        let _ = writeln!(b, "<p class=\"ok\">None.</p>");
    } else {
        let _ = writeln!(b, "<table><tr><th>kind</th><th>seeds</th><th>anomalies</th></tr>");
        for (k, (seeds, n)) in kinds {
            let _ = writeln!(b, "<tr><td>{}</td><td>{seeds}</td><td>{n}</td></tr>", esc(k));
        }
        let _ = writeln!(b, "</table>");
    }
    let _ = writeln!(b, "<h2>Failing seeds</h2>");
    if failed == 0 {
        let _ = writeln!(b, "<p class=\"ok\">None.</p>");
    }
    for o in outcomes.iter().filter(|o| !o.passed) {
        let link = match reports.get(&o.seed) {
            Some(sub) => format!("<a href=\"{}/index.html\">report</a>", esc(sub)),
            None => "no report".into(),
        };
        let _ = writeln!(
            b,
            "<p>seed {}: <span class=\"bad\">{}</span> — {link}<br><code>{}</code></p>",
            o.seed,
            esc(o.error.as_deref().unwrap_or(&o.verdict)),
            esc(&faultline_sim::cli::replay_command(spec, o.seed))
        );
    }
    let _ = writeln!(
        b,
        "<h2>Every seed</h2>\n<table><tr><th>seed</th><th>verdict</th><th>ops</th><th>faults</th><th>simulated</th><th>wall</th><th>trace hash</th></tr>"
    );
    for o in outcomes {
        let class = if o.passed { "ok" } else { "bad" };
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{:.3} s</td><td>{}</td><td><code>{:016x}</code></td></tr>",
            o.seed,
            esc(&o.verdict),
            o.ops,
            o.faults,
            o.sim_time.as_secs_f64(),
            wall(o.wall),
            o.trace_hash
        );
    }
    let _ = writeln!(b, "</table>");
    page(&format!("Faultline sweep {}", scenario.name), &b)
}

fn wall(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}
