//! The `faultline` binary: one program for both worlds. `serve`, `topics`, `groups`,
//! `produce`, `consume` and `bench` run for real over TCP; `sim` runs the same
//! nodes inside the deterministic simulator.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "faultline", version, about = "A Kafka-style event streaming broker, testable by seed")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker on real sockets and files.
    Serve(cmd::serve::Args),
    /// Start a local cluster of `serve` processes on loopback (stops them on Ctrl-C/SIGTERM).
    Cluster(cmd::cluster::Args),
    /// Describe the metadata quorum: leader, epoch, high watermark, voters and observers.
    Quorum(cmd::quorum::Args),
    /// Create, list, describe and delete topics.
    Topics(cmd::topics::Args),
    /// List, describe and delete consumer groups; reset their offsets.
    Groups(cmd::groups::Args),
    /// Produce lines from stdin.
    Produce(cmd::produce::Args),
    /// Consume records to stdout.
    Consume(cmd::consume::Args),
    /// Measure produce/fetch throughput on loopback against raw disk bandwidth.
    Bench(cmd::bench::Args),
    /// Run scenarios in the deterministic simulator.
    Sim(faultline_sim::cli::Args),
    /// Judge a recorded history (JSON lines, as `sim --history` writes) with
    /// the checkers; exits 1 if it shows an anomaly that makes it invalid.
    Check(CheckArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The history file.
    history: std::path::PathBuf,
    /// Anomaly kinds that make the history invalid (repeatable); by default
    /// every kind but `unseen`.
    #[arg(long = "checker", value_name = "KIND")]
    checkers: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        // The simulator installs its own subscriber that stamps sim-time.
        Command::Sim(args) => faultline_sim::cli::run_with(args, Some(&faultline_reports::HtmlReporter)),
        Command::Check(a) => faultline_sim::cli::check(&a.history, &a.checkers),
        other => {
            init_logging();
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            rt.block_on(async move {
                match other {
                    Command::Serve(a) => cmd::serve::run(a).await,
                    Command::Cluster(a) => cmd::cluster::run(a).await,
                    Command::Quorum(a) => cmd::quorum::run(a).await,
                    Command::Topics(a) => cmd::topics::run(a).await,
                    Command::Groups(a) => cmd::groups::run(a).await,
                    Command::Produce(a) => cmd::produce::run(a).await,
                    Command::Consume(a) => cmd::consume::run(a).await,
                    Command::Bench(a) => cmd::bench::run(a).await,
                    Command::Sim(_) | Command::Check(_) => unreachable!(),
                }
            })
        }
    };
    match code {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
