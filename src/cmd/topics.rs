//! `faultline topics`: create, list, describe and delete topics with the admin client.

use std::collections::BTreeMap;

use anyhow::Context;
use faultline_broker::client::{parse_bootstrap, Admin, AdminConfig, NewTopic};
use faultline_broker::io::real::RealIo;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Create a topic.
    Create {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication_factor: i16,
        /// Topic config as key=value (repeatable), e.g. --config segment.bytes=1048576.
        #[arg(long = "config", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topic names.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Show partitions, leaders, replicas, ISR and configs (all topics without --topic).
    Describe {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        topic: Option<String>,
    },
    /// Delete a topic.
    Delete {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        topic: String,
    },
}

#[derive(clap::Args, Debug)]
struct Common {
    /// Comma-separated broker addresses, host:port.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

fn admin(common: &Common) -> anyhow::Result<Admin> {
    let servers = parse_bootstrap(&common.bootstrap_server)?;
    Ok(Admin::new(RealIo::new(), AdminConfig::new(servers))?)
}

pub async fn run(args: Args) -> anyhow::Result<i32> {
    match args.action {
        Action::Create { common, topic, partitions, replication_factor, configs } => {
            let new = NewTopic {
                name: topic.clone(),
                num_partitions: partitions,
                replication_factor,
                configs: configs.into_iter().collect::<BTreeMap<_, _>>(),
            };
            admin(&common)?.create_topics(&[new]).await.with_context(|| format!("cannot create topic {topic}"))?;
            println!("Created topic {topic}.");
        }
        Action::List { common } => {
            for t in admin(&common)?.list_topics().await? {
                println!("{t}");
            }
        }
        Action::Describe { common, topic } => {
            let admin = admin(&common)?;
            let names: Vec<String> = topic.into_iter().collect();
            for t in admin.describe_topics(&names).await? {
                let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
                let configs = admin.describe_configs(&t.name).await?;
                let configs: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "Topic: {}\tPartitionCount: {}\tReplicationFactor: {}\tConfigs: {}",
                    t.name,
                    t.partitions.len(),
                    rf,
                    configs.join(",")
                );
                for p in &t.partitions {
                    let leader = p.leader.map_or("none".to_string(), |l| l.to_string());
                    println!(
                        "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
                        t.name,
                        p.partition,
                        leader,
                        join(&p.replicas),
                        join(&p.isr)
                    );
                }
            }
        }
        Action::Delete { common, topic } => {
            admin(&common)?
                .delete_topics(std::slice::from_ref(&topic))
                .await
                .with_context(|| format!("cannot delete topic {topic}"))?;
            println!("Deleted topic {topic}.");
        }
    }
    Ok(0)
}

fn join(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}
