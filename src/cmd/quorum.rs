//! `faultline quorum`: the metadata quorum as DescribeQuorum reports it, in
//! the spirit of `kafka-metadata-quorum.sh describe --status --replication`.

use std::io::Write;

use faultline_broker::client::{parse_bootstrap, Admin, AdminConfig};
use faultline_broker::io::real::RealIo;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Comma-separated node addresses, host:port.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
}

pub async fn run(args: Args) -> anyhow::Result<i32> {
    let admin = Admin::new(RealIo::new(), AdminConfig::new(parse_bootstrap(&args.bootstrap_server)?))?;
    let q = admin.describe_quorum().await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "LeaderId:      {}", q.leader_id)?;
    writeln!(out, "LeaderEpoch:   {}", q.leader_epoch)?;
    writeln!(out, "HighWatermark: {}", q.high_watermark)?;
    writeln!(out, "NodeId  LogEndOffset  Lag  Status")?;
    for (role, replicas) in [("Voter", &q.voters), ("Observer", &q.observers)] {
        for (id, leo) in replicas {
            let status = if *id == q.leader_id { "Leader" } else { role };
            writeln!(out, "{id:<7} {leo:<13} {:<4} {status}", (q.high_watermark - leo).max(0))?;
        }
    }
    Ok(0)
}
