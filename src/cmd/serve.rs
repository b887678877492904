//! `faultline serve`: run one broker on real sockets and files.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use faultline_broker::config::{BrokerConfig, MIN_SEGMENT_BYTES};
use faultline_broker::io::real::RealIo;
use faultline_broker::server;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory holding the partition logs and topic metadata (`log.dirs`).
    /// Overrides `data_dir` from the config file; required if the file does not set it.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to bind, host:port. Port 0 picks a free port; the bound address
    /// is printed as `listening on HOST:PORT`. Default: 127.0.0.1:9092.
    #[arg(long)]
    pub listen: Option<String>,
    /// TOML file with a broker config (the fields of `BrokerConfig`, e.g.
    /// `num_partitions = 3` and a `[log]` table with `flush_messages`,
    /// `segment_bytes`, ...). Flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address clients are told to connect to, host:port. Default: the bound address.
    #[arg(long)]
    pub advertised_listener: Option<String>,
    /// Create topics on first use in a Metadata request (`auto.create.topics.enable`). Default: true.
    #[arg(long)]
    pub auto_create_topics: Option<bool>,
    /// Partitions of an auto-created topic or of one created with -1 (`num.partitions`). Default: 1.
    #[arg(long)]
    pub num_partitions: Option<i32>,
}

/// The broker config from the file (if any) with the flags applied.
pub fn build_config(args: &Args, file_text: Option<&str>) -> anyhow::Result<BrokerConfig> {
    let mut config = match file_text {
        Some(text) => toml::from_str::<BrokerConfig>(text).context("bad config file")?,
        None => BrokerConfig::default(),
    };
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    } else if file_text.is_none() {
        anyhow::bail!("--data-dir is required (or set data_dir in --config)");
    }
    if let Some(l) = &args.listen {
        config.listen = l.clone();
    }
    if let Some(a) = &args.advertised_listener {
        config.advertised_listener = Some(a.clone());
    }
    if let Some(a) = args.auto_create_topics {
        config.auto_create_topics_enable = a;
    }
    if let Some(n) = args.num_partitions {
        anyhow::ensure!(n >= 1, "--num-partitions must be at least 1, not {n}");
        config.num_partitions = n;
    }
    anyhow::ensure!(
        config.log.segment_bytes >= MIN_SEGMENT_BYTES,
        "log segment_bytes {} is below the minimum {MIN_SEGMENT_BYTES} (1 MiB); internal_segment_bytes sets smaller \
         segments for tests",
        config.log.segment_bytes
    );
    config.cluster_mode().map_err(|m| anyhow::anyhow!("bad cluster settings: {m}"))?;
    if config.bugs.any() {
        anyhow::bail!(
            "the config enables planted bugs ({:?}); they exist only for the simulator and `serve` refuses them",
            config.bugs
        );
    }
    Ok(config)
}

pub async fn run(args: Args) -> anyhow::Result<i32> {
    let text = match &args.config {
        Some(path) => {
            Some(std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?)
        }
        None => None,
    };
    let config = build_config(&args, text.as_deref())?;
    let mut broker = server::start(RealIo::new(), config).await?;
    // A harness started with port 0 reads this line to find the broker.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", broker.local_addr())?;
    out.flush()?;
    drop(out);
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot wait for SIGTERM")?;
    tokio::select! {
        biased;
        r = tokio::signal::ctrl_c() => {
            r.context("cannot wait for ctrl-c")?;
            tracing::info!("interrupted; shutting down");
        }
        _ = term.recv() => tracing::info!("terminated; shutting down"),
        r = broker.wait() => return r.map(|()| 0),
    }
    // A cluster node hands its partition leadership over first (controlled
    // shutdown); every node flushes its partitions before it exits.
    broker.shutdown().await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Args {
        Args {
            data_dir: Some("/tmp/x".into()),
            listen: None,
            config: None,
            advertised_listener: None,
            auto_create_topics: None,
            num_partitions: None,
        }
    }

    #[test]
    fn flags_override_the_file() {
        let file = "listen = \"0.0.0.0:1\"\nnum_partitions = 4\n[log]\nflush_messages = 10\n";
        let mut a = args();
        a.num_partitions = Some(2);
        let c = build_config(&a, Some(file)).unwrap();
        assert_eq!((c.listen.as_str(), c.num_partitions, c.log.flush_messages), ("0.0.0.0:1", 2, 10));
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn refuses_planted_bugs_and_missing_data_dir() {
        let err = build_config(&args(), Some("[bugs]\nack_before_durable = true\n")).unwrap_err();
        assert!(err.to_string().contains("planted bugs"), "{err}");
        let mut a = args();
        a.data_dir = None;
        assert!(build_config(&a, None).is_err());
        assert!(build_config(&args(), Some("no_such_field = 1")).is_err());
    }

    #[test]
    fn cluster_settings_are_checked_and_single_node_is_unchanged() {
        let c = build_config(&args(), Some("broker_session_timeout_ms = 9000\n")).unwrap();
        assert_eq!(c.cluster_mode(), Ok(None));
        let err = build_config(&args(), Some("process_roles = \"broker\"\n")).unwrap_err();
        assert!(format!("{err:#}").contains("controller_quorum_voters is required"), "{err:#}");
        let text =
            "process_roles = \"broker,controller\"\nnode_id = 1\ncontroller_quorum_voters = \"1@127.0.0.1:9093\"\n";
        let c = build_config(&args(), Some(text)).unwrap();
        assert!(c.cluster_mode().unwrap().is_some_and(|m| m.roles.broker && m.roles.controller));
    }

    #[test]
    fn segment_bytes_has_kafkas_minimum_and_the_internal_setting_bypasses_it() {
        let err = build_config(&args(), Some("[log]\nsegment_bytes = 100\n")).unwrap_err();
        assert!(err.to_string().contains("minimum"), "{err}");
        let c = build_config(&args(), Some("[log]\ninternal_segment_bytes = 100\n")).unwrap();
        assert_eq!(c.log.effective_segment_bytes(), 100);
    }
}
