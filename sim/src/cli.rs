//! `faultline sim`: run scenarios, single seeds, sweeps and the speed bench.
//!
//! - no arguments: every built-in scenario on a fixed seed, as a table;
//! - `--scenario FILE|NAME --seed N`: one run, with anomalies, the fault
//!   timeline around them and the command that replays it;
//! - `sweep --scenario FILE|NAME --seeds 1..1000 [--jobs N] [--shard i/n]`;
//! - `bench`: simulation speed on the default scenario;
//! - [`check`]: the checkers on a recorded history file (`faultline check`).
//!
//! `--duration S` and `--ops N` scale a scenario for longer runs: the first
//! sets the fault window, the second the producers' rate so that about N
//! sends are attempted in it.
//!
//! The exit code is 0 when every run passed, 1 otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};

use crate::runner::{run_scenario, RunOptions, RunResult};
use crate::scenario::{self, Scenario};
use crate::seam::Stopwatch;
use crate::simlog;
use crate::sweep::{self, SeedOutcome};

/// The seed the default table runs.
pub const DEFAULT_SEED: u64 = 1;
/// The scenario `bench` measures.
pub const BENCH_SCENARIO: &str = "steady";

#[derive(ClapArgs, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one scenario over many seeds, on several threads.
    Sweep(SweepArgs),
    /// Measure simulation speed: simulated seconds, operations and seeds per wall second.
    Bench(BenchArgs),
    /// Measure the linearizability checker: time against history length
    /// and concurrency, on generated linearizable partition-log histories.
    Linbench(LinbenchArgs),
}

#[derive(ClapArgs, Debug)]
struct RunArgs {
    /// Scenario file, or the name of a built-in scenario: one of the files
    /// under scenarios/ (steady, partitions, crash-restart, disk-faults,
    /// slow-links, medium-rot, groups, groups-failover, quorum-*,
    /// replication-*; an unknown name lists them). Without it, every
    /// built-in runs.
    #[arg(long)]
    scenario: Option<String>,
    /// Run seed.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Write the trace (one event per line, with simulated time) to FILE.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Write the history as JSON lines to FILE.
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Write trace, history, timeline and report for each run into DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write the partition-log operations as Porcupine-style JSON to FILE.
    #[arg(long, value_name = "FILE")]
    export_porcupine: Option<PathBuf>,
    /// Write the history as Jepsen EDN (for Elle and Knossos) to FILE.
    #[arg(long, value_name = "FILE")]
    export_edn: Option<PathBuf>,
    /// Write an HTML report of the run into DIR (index.html).
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    #[command(flatten)]
    scale: Scale,
}

/// Scaling a scenario for longer, larger runs.
#[derive(ClapArgs, Debug, Clone, Default)]
struct Scale {
    /// Simulated seconds of workload and faults, instead of the scenario's.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Sends to attempt in all (sets the producers' rate to fit the window).
    #[arg(long, value_name = "N")]
    ops: Option<u64>,
}

impl Scale {
    fn apply(&self, mut s: Scenario) -> anyhow::Result<Scenario> {
        if let Some(d) = self.duration {
            s.duration_s = d;
        }
        if let Some(n) = self.ops {
            let senders = f64::from(s.workload.producers * s.workload.concurrency.max(1)).max(1.0);
            s.workload.rate = n as f64 / (senders * s.duration_s);
        }
        s.validate()?;
        Ok(s)
    }
}

#[derive(ClapArgs, Debug)]
struct SweepArgs {
    /// Scenario file or built-in name.
    #[arg(long)]
    scenario: String,
    /// Seeds: N, A..B (B excluded) or A..=B.
    #[arg(long, default_value = "1..101")]
    seeds: String,
    /// Threads; defaults to the number of cores.
    #[arg(long)]
    jobs: Option<usize>,
    /// Run only shard i of n (1-based): the seeds whose position in the
    /// range is i - 1 modulo n, so n machines split one sweep.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Write an HTML summary of the sweep into DIR, with a report for each
    /// failing seed (re-run with its trace kept).
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    #[command(flatten)]
    scale: Scale,
}

#[derive(ClapArgs, Debug)]
struct LinbenchArgs {
    /// History lengths, in operations.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    ops: Vec<usize>,
    /// Concurrent clients.
    #[arg(long, value_delimiter = ',', default_value = "2,10,50")]
    clients: Vec<usize>,
    /// Search steps allowed per history.
    #[arg(long, default_value_t = 200_000_000)]
    budget: u64,
    /// Make one end-offset answer in each history stale, to time the
    /// search for a history that is not linearizable.
    #[arg(long)]
    stale: bool,
}

#[derive(ClapArgs, Debug)]
struct BenchArgs {
    /// Scenario file or built-in name.
    #[arg(long, default_value = BENCH_SCENARIO)]
    scenario: String,
    /// How many seeds to run (one after another on one thread).
    #[arg(long, default_value_t = 10)]
    seeds: u64,
}

/// Renders HTML reports. The simulator only calls it; the `faultline`
/// binary passes the `faultline-reports` crate's renderer, which depends on
/// this crate, not the reverse.
pub trait Reporter {
    /// Write the report of one run into `dir`.
    fn run_report(&self, dir: &Path, run: &RunResult, replay: &str) -> anyhow::Result<()>;
    /// Write a sweep's summary into `dir`; `reports` maps each failing seed
    /// to the sub-directory of `dir` its own report was written to.
    fn sweep_report(
        &self,
        dir: &Path,
        scenario: &Scenario,
        spec: &str,
        outcomes: &[SeedOutcome],
        reports: &BTreeMap<u64, String>,
    ) -> anyhow::Result<()>;
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    run_with(args, None)
}

/// [`run`], with a renderer for `--report`.
pub fn run_with(args: Args, reporter: Option<&dyn Reporter>) -> anyhow::Result<i32> {
    simlog::init();
    let wants_report = match &args.command {
        Some(Command::Sweep(a)) => a.report.is_some(),
        None => args.run.report.is_some(),
        _ => false,
    };
    anyhow::ensure!(!wants_report || reporter.is_some(), "--report needs the faultline binary's report renderer");
    match args.command {
        Some(Command::Sweep(a)) => run_sweep(a, reporter),
        Some(Command::Bench(a)) => run_bench(a),
        Some(Command::Linbench(a)) => run_linbench(a),
        None => match &args.run.scenario {
            Some(s) => run_single(s, &args.run, reporter),
            None => run_table(&args.run),
        },
    }
}

fn run_linbench(a: LinbenchArgs) -> anyhow::Result<i32> {
    println!("{:>8} {:>8}  {:<18} {:>12} {:>10} {:>12}", "ops", "clients", "verdict", "steps", "ms", "ops/s");
    for &n in &a.ops {
        for &c in &a.clients {
            for row in crate::linearizability::bench::run(&[n], &[c], a.budget, a.stale) {
                let secs = row.wall.as_secs_f64().max(1e-9);
                println!(
                    "{:>8} {:>8}  {:<18} {:>12} {:>10.1} {:>12.0}",
                    row.ops,
                    row.clients,
                    row.verdict.as_str(),
                    row.steps,
                    secs * 1e3,
                    row.ops as f64 / secs
                );
            }
        }
    }
    Ok(0)
}

/// A scenario by file path, else by built-in name.
pub fn resolve(spec: &str) -> anyhow::Result<Scenario> {
    let path = Path::new(spec);
    if path.exists() {
        return Scenario::load(path);
    }
    scenario::builtin_named(spec).with_context(|| {
        let names: Vec<&str> = scenario::BUILTIN.iter().map(|(f, _)| f.trim_end_matches(".toml")).collect();
        format!("no scenario file {spec:?} and no built-in scenario of that name (built-in: {})", names.join(", "))
    })
}

/// The command that replays one run.
pub fn replay_command(spec: &str, seed: u64) -> String {
    format!("cargo run --release -- sim --scenario {spec} --seed {seed}")
}

fn hash_hex(h: u64) -> String {
    format!("{h:016x}")
}

fn run_table(args: &RunArgs) -> anyhow::Result<i32> {
    let scenarios =
        scenario::builtin()?.into_iter().map(|s| args.scale.apply(s)).collect::<anyhow::Result<Vec<_>>>()?;
    let opts = RunOptions { keep_trace: args.out.is_some() };
    println!("{:<16} {:>6} {:>6} {:>6}  {:<40} trace hash", "scenario", "seed", "ops", "faults", "verdict");
    let mut failed = Vec::new();
    for s in &scenarios {
        let r = run_scenario(s, args.seed, &opts)?;
        println!(
            "{:<16} {:>6} {:>6} {:>6}  {:<40} {}",
            s.name,
            r.seed,
            r.ops,
            r.faults,
            r.verdict(),
            hash_hex(r.trace_hash)
        );
        if let Some(dir) = &args.out {
            write_outputs(dir, &r)?;
        }
        if !r.passed() {
            failed.push((s.name.clone(), r.seed));
        }
    }
    if failed.is_empty() {
        return Ok(0);
    }
    println!("\n{} of {} scenarios failed; replay with:", failed.len(), scenarios.len());
    for (name, seed) in failed {
        println!("  {}", replay_command(&name, seed));
    }
    Ok(1)
}

fn run_single(spec: &str, args: &RunArgs, reporter: Option<&dyn Reporter>) -> anyhow::Result<i32> {
    let s = args.scale.apply(resolve(spec)?)?;
    let opts = RunOptions { keep_trace: args.trace.is_some() || args.out.is_some() || args.report.is_some() };
    let watch = Stopwatch::start();
    let r = run_scenario(&s, args.seed, &opts)?;
    let wall = watch.elapsed();
    println!("scenario {} seed {}: {}", s.name, r.seed, r.verdict());
    if let Some(d) = &r.draw {
        println!("configuration drawn by the seed: {d}");
    }
    println!("{}", r.liveness.summary());
    println!(
        "{} operations, {} faults, {:.1} s simulated in {:.2} s, trace hash {}",
        r.ops,
        r.faults,
        r.sim_time.as_secs_f64(),
        wall.as_secs_f64(),
        hash_hex(r.trace_hash)
    );
    print!("{}", r.report);
    print!("{}", r.findings());
    if let Some(path) = &args.trace {
        let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        r.trace.write_text(std::io::BufWriter::new(f))?;
    }
    if let Some(path) = &args.history {
        let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        r.history.write_jsonl(std::io::BufWriter::new(f))?;
    }
    if let Some(dir) = &args.out {
        write_outputs(dir, &r)?;
    }
    if let Some(path) = &args.export_porcupine {
        std::fs::write(path, crate::linearizability::export::porcupine_json(&r.history))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.export_edn {
        std::fs::write(path, crate::linearizability::export::jepsen_edn(&r.history))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let (Some(dir), Some(rep)) = (&args.report, reporter) {
        rep.run_report(dir, &r, &replay_command(spec, r.seed))?;
        println!("report: {}", dir.join("index.html").display());
    }
    if r.passed() {
        return Ok(0);
    }
    print_timeline_near_anomalies(&r);
    println!("\nreplay: {}", replay_command(spec, r.seed));
    Ok(1)
}

/// The fault timeline within a second of the operations the anomalies
/// cite, or the whole timeline if none are cited.
fn print_timeline_near_anomalies(r: &RunResult) {
    let times: Vec<Duration> = r
        .report
        .anomalies
        .iter()
        .flat_map(|a| a.ops.iter())
        .filter_map(|i| r.history.ops.get(*i as usize))
        .flat_map(|op| [Duration::from_nanos(op.invoke_ns), Duration::from_nanos(op.complete_ns)])
        .collect();
    let window = Duration::from_secs(1);
    let near: Vec<_> = r
        .timeline
        .iter()
        .filter(|e| times.is_empty() || times.iter().any(|t| e.at + window >= *t && e.at <= *t + window))
        .collect();
    println!("\nfault timeline{}:", if times.is_empty() { "" } else { " around the anomalies" });
    if near.is_empty() {
        println!("  (no faults nearby)");
    }
    for e in near {
        println!("  {:>9.3} s  {}", e.at.as_secs_f64(), e.what);
    }
}

fn write_outputs(dir: &Path, r: &RunResult) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = format!("{}-{}", r.scenario, r.seed);
    let create = |ext: &str| -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
        let p = dir.join(format!("{stem}.{ext}"));
        Ok(std::io::BufWriter::new(std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?))
    };
    r.trace.write_text(create("trace")?)?;
    r.history.write_jsonl(create("history.jsonl")?)?;
    let mut t = create("timeline")?;
    for e in &r.timeline {
        use std::io::Write;
        writeln!(t, "{:>9.3} {}", e.at.as_secs_f64(), e.what)?;
    }
    use std::io::Write;
    write!(create("report")?, "{}{}", r.report, r.findings())?;
    Ok(())
}

fn run_sweep(a: SweepArgs, reporter: Option<&dyn Reporter>) -> anyhow::Result<i32> {
    let s = a.scale.apply(resolve(&a.scenario)?)?;
    let mut seeds: Vec<u64> = sweep::parse_seeds(&a.seeds)?.collect();
    if let Some(shard) = &a.shard {
        let (i, n) = sweep::parse_shard(shard)?;
        seeds = sweep::shard(&seeds, i, n);
    }
    let jobs = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    let total = seeds.len() as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} seeds, {msg} [{elapsed} < {eta}]")
            .expect("progress template")
            .progress_chars("=> "),
    );
    let watch = Stopwatch::start();
    let mut failures = 0usize;
    let outcomes = sweep::sweep(&s, &seeds, jobs, |o| {
        if !o.passed {
            failures += 1;
            bar.println(format!("seed {}: {}", o.seed, o.error.as_deref().unwrap_or(&o.verdict)));
        }
        bar.set_message(format!("{failures} failing"));
        bar.inc(1);
    });
    bar.finish_and_clear();
    print_sweep_summary(&a.scenario, &s, &outcomes, jobs, watch.elapsed());
    if let (Some(dir), Some(rep)) = (&a.report, reporter) {
        let mut reports = BTreeMap::new();
        for o in outcomes.iter().filter(|o| !o.passed && o.error.is_none()) {
            let sub = format!("seed-{}", o.seed);
            let r = run_scenario(&s, o.seed, &RunOptions { keep_trace: true })?;
            rep.run_report(&dir.join(&sub), &r, &replay_command(&a.scenario, o.seed))?;
            reports.insert(o.seed, sub);
        }
        rep.sweep_report(dir, &s, &a.scenario, &outcomes, &reports)?;
        println!("report: {}", dir.join("index.html").display());
    }
    Ok(if outcomes.iter().all(|o| o.passed) { 0 } else { 1 })
}

fn print_sweep_summary(spec: &str, s: &Scenario, outcomes: &[SeedOutcome], jobs: usize, wall: Duration) {
    let failed: Vec<&SeedOutcome> = outcomes.iter().filter(|o| !o.passed).collect();
    let ops: usize = outcomes.iter().map(|o| o.ops).sum();
    let faults: usize = outcomes.iter().map(|o| o.faults).sum();
    println!(
        "scenario {}: {} seeds, {} passed, {} failed; {} operations, {} faults; {:.1} s on {} threads ({:.0} seeds/min)",
        s.name,
        outcomes.len(),
        outcomes.len() - failed.len(),
        failed.len(),
        ops,
        faults,
        wall.as_secs_f64(),
        jobs,
        outcomes.len() as f64 * 60.0 / wall.as_secs_f64().max(1e-9)
    );
    let mut kinds: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for o in outcomes {
        for (k, n) in &o.anomalies {
            let e = kinds.entry(k.as_str()).or_default();
            e.0 += 1;
            e.1 += n;
        }
    }
    for (k, (seeds, n)) in kinds {
        println!("  {k}: {n} in {seeds} seeds");
    }
    let mut timing = crate::group_timing::GroupTiming::default();
    for o in outcomes {
        timing.extend(&o.group_timing);
    }
    for line in timing.summary() {
        println!("  group {line}");
    }
    if !failed.is_empty() {
        println!("failing seeds (replay with):");
        for o in failed {
            println!("  {:<48} # {}", replay_command(spec, o.seed), o.error.as_deref().unwrap_or(&o.verdict));
        }
    }
}

/// `faultline check HISTORY.jsonl`: judge a recorded history (the format
/// `--history` writes) with the checkers. `checkers` names the kinds that
/// make it invalid; empty means every kind but `unseen`. Prints the report;
/// returns 0 if valid, 1 otherwise.
pub fn check(path: &Path, checkers: &[String]) -> anyhow::Result<i32> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let history = crate::history::History::read_jsonl(std::io::BufReader::new(f))
        .with_context(|| format!("reading {}", path.display()))?;
    let opts = if checkers.is_empty() {
        crate::checker::CheckOptions::default()
    } else {
        crate::checker::CheckOptions::from_names(checkers)?
    };
    let report = crate::checker::check(&history, &opts);
    print!("{report}");
    Ok(if report.valid { 0 } else { 1 })
}

fn run_bench(a: BenchArgs) -> anyhow::Result<i32> {
    let s = resolve(&a.scenario)?;
    anyhow::ensure!(a.seeds > 0, "--seeds must be at least 1");
    let watch = Stopwatch::start();
    let (mut sim, mut ops) = (Duration::ZERO, 0usize);
    for seed in 1..=a.seeds {
        let r = run_scenario(&s, seed, &RunOptions::default())?;
        sim += r.sim_time;
        ops += r.ops;
    }
    let wall = watch.elapsed().as_secs_f64().max(1e-9);
    println!("scenario {}: {} seeds in {:.2} s wall, {:.1} s simulated", s.name, a.seeds, wall, sim.as_secs_f64());
    println!("  {:.1} simulated seconds per wall second", sim.as_secs_f64() / wall);
    println!("  {:.0} client operations per wall second", ops as f64 / wall);
    println!("  {:.0} seeds per minute (one thread)", a.seeds as f64 * 60.0 / wall);
    Ok(0)
}
