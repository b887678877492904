//! `faultline groups`: list, describe and delete consumer groups and reset
//! their committed offsets, in the spirit of `kafka-consumer-groups.sh`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use faultline_broker::client::{parse_bootstrap, Admin, AdminConfig, Consumer, ConsumerConfig, TopicPartition};
use faultline_broker::io::real::RealIo;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// List every group with its state.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Committed offsets, log end offsets and lag per partition, and the members.
    Describe {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        group: String,
    },
    /// Delete a group with no members, and its committed offsets.
    Delete {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        group: String,
    },
    /// Move a group's committed offsets of a topic (the group must have no
    /// members). Prints the plan; `--execute` applies it.
    ResetOffsets {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        group: String,
        #[arg(long)]
        topic: String,
        /// The log start of each partition.
        #[arg(long, conflicts_with_all = ["to_latest", "to_offset"])]
        to_earliest: bool,
        /// The log end of each partition.
        #[arg(long, conflicts_with_all = ["to_earliest", "to_offset"])]
        to_latest: bool,
        /// This offset in every partition (kept within the log).
        #[arg(long, conflicts_with_all = ["to_earliest", "to_latest"])]
        to_offset: Option<i64>,
        #[arg(long)]
        execute: bool,
    },
}

#[derive(clap::Args, Debug)]
struct Common {
    /// Comma-separated broker addresses, host:port.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
}

fn clients(common: &Common) -> anyhow::Result<(Admin, Consumer)> {
    let servers = parse_bootstrap(&common.bootstrap_server)?;
    let admin = Admin::new(RealIo::new(), AdminConfig::new(servers.clone()))?;
    let consumer = Consumer::new(RealIo::new(), ConsumerConfig::new(servers))?;
    Ok((admin, consumer))
}

/// Every partition of `topic`.
async fn partitions(admin: &Admin, topic: &str) -> anyhow::Result<Vec<TopicPartition>> {
    let t = admin.describe_topics(&[topic.to_string()]).await?;
    Ok(t.iter().flat_map(|t| t.partitions.iter().map(|p| TopicPartition::new(t.name.clone(), p.partition))).collect())
}

pub async fn run(args: Args) -> anyhow::Result<i32> {
    match args.action {
        Action::List { common } => {
            let (admin, _) = clients(&common)?;
            println!("{:<40} {:<22} PROTOCOL-TYPE", "GROUP", "STATE");
            for g in admin.list_groups().await? {
                println!("{:<40} {:<22} {}", g.group_id, g.state, g.protocol_type);
            }
        }
        Action::Describe { common, group } => {
            let (admin, consumer) = clients(&common)?;
            let desc = admin.describe_group(&group).await.with_context(|| format!("cannot describe group {group}"))?;
            let committed = admin.group_offsets(&group).await?;
            let owner: BTreeMap<&TopicPartition, &str> = desc
                .members
                .iter()
                .flat_map(|m| m.assignment.iter().map(move |tp| (tp, m.member_id.as_str())))
                .collect();
            let mut tps: BTreeSet<TopicPartition> = committed.keys().cloned().collect();
            tps.extend(owner.keys().map(|tp| (*tp).clone()));
            let tps: Vec<TopicPartition> = tps.into_iter().collect();
            let ends = if tps.is_empty() { BTreeMap::new() } else { consumer.end_offsets(&tps).await? };
            println!(
                "Group {group}: state {}, protocol {} ({}), {} members",
                desc.state,
                desc.protocol,
                desc.protocol_type,
                desc.members.len()
            );
            println!(
                "\n{:<30} {:>9} {:>14} {:>14} {:>8}  CONSUMER-ID",
                "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"
            );
            for tp in &tps {
                let current = committed.get(tp);
                let end = ends.get(tp);
                let lag = match (current, end) {
                    (Some(c), Some(e)) => (e - c).to_string(),
                    _ => "-".into(),
                };
                println!(
                    "{:<30} {:>9} {:>14} {:>14} {:>8}  {}",
                    tp.topic,
                    tp.partition,
                    current.map_or("-".into(), i64::to_string),
                    end.map_or("-".into(), i64::to_string),
                    lag,
                    owner.get(tp).copied().unwrap_or("-")
                );
            }
            if !desc.members.is_empty() {
                println!("\n{:<60} {:<20} {:<24} ASSIGNMENT", "CONSUMER-ID", "INSTANCE-ID", "CLIENT-ID");
                for m in &desc.members {
                    let parts: Vec<String> = m.assignment.iter().map(ToString::to_string).collect();
                    println!(
                        "{:<60} {:<20} {:<24} {}",
                        m.member_id,
                        m.group_instance_id.as_deref().unwrap_or("-"),
                        m.client_id,
                        parts.join(",")
                    );
                }
            }
        }
        Action::Delete { common, group } => {
            let (admin, _) = clients(&common)?;
            admin.delete_group(&group).await.with_context(|| format!("cannot delete group {group}"))?;
            println!("Deleted group {group}.");
        }
        Action::ResetOffsets { common, group, topic, to_earliest, to_latest, to_offset, execute } => {
            let (admin, consumer) = clients(&common)?;
            let tps = partitions(&admin, &topic).await?;
            let starts = consumer.beginning_offsets(&tps).await?;
            let ends = consumer.end_offsets(&tps).await?;
            let mut plan = BTreeMap::new();
            for tp in &tps {
                let (start, end) = (starts[tp], ends[tp]);
                let target = if to_earliest {
                    start
                } else if to_latest {
                    end
                } else if let Some(o) = to_offset {
                    o.clamp(start, end)
                } else {
                    anyhow::bail!("say where to: --to-earliest, --to-latest or --to-offset N");
                };
                plan.insert(tp.clone(), target);
            }
            println!("{:<40} {:<30} {:>9} {:>11}", "GROUP", "TOPIC", "PARTITION", "NEW-OFFSET");
            for (tp, o) in &plan {
                println!("{:<40} {:<30} {:>9} {:>11}", group, tp.topic, tp.partition, o);
            }
            if execute {
                admin
                    .alter_group_offsets(&group, &plan)
                    .await
                    .with_context(|| format!("cannot reset the offsets of group {group} (it must have no members)"))?;
                println!("Offsets reset.");
            } else {
                println!("Dry run: nothing changed; add --execute to apply.");
            }
        }
    }
    Ok(0)
}
