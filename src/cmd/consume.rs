//! `faultline consume`: print a topic's record values to stdout.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use faultline_broker::client::{
    parse_bootstrap, Admin, AdminConfig, AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, TopicPartition,
};
use faultline_broker::io::real::RealIo;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: super::TopicTarget,
    /// Start at the log start instead of the log end.
    #[arg(long)]
    from_beginning: bool,
    /// Read only this partition (default: all of the topic's partitions).
    #[arg(long)]
    partition: Option<i32>,
    /// Exit after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Exit when no record arrives for this long (default: wait forever).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print `key<TAB>` before each value.
    #[arg(long)]
    print_key: bool,
    /// Print `partition:offset<TAB>` before each record.
    #[arg(long)]
    print_offset: bool,
}

pub async fn run(args: Args) -> anyhow::Result<i32> {
    let servers = parse_bootstrap(&args.target.bootstrap_server)?;
    let env = RealIo::new();
    let partitions: Vec<TopicPartition> = match args.partition {
        Some(p) => vec![TopicPartition::new(&args.target.topic, p)],
        None => {
            let admin = Admin::new(env.clone(), AdminConfig::new(servers.clone()))?;
            let d = admin
                .describe_topics(std::slice::from_ref(&args.target.topic))
                .await
                .with_context(|| format!("topic {}", args.target.topic))?;
            d[0].partitions.iter().map(|p| TopicPartition::new(&args.target.topic, p.partition)).collect()
        }
    };
    let mut config = ConsumerConfig::new(servers);
    config.auto_offset_reset = if args.from_beginning { AutoOffsetReset::Earliest } else { AutoOffsetReset::Latest };
    let mut consumer = Consumer::new(env.clone(), config)?;
    consumer.assign(partitions);
    if args.from_beginning {
        consumer.seek_to_beginning(&[]).await?;
    } else {
        consumer.seek_to_end(&[]).await?;
    }
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut idle_since = env.elapsed();
    let mut count = 0u64;
    let stdout = std::io::stdout();
    'poll: loop {
        if args.max_messages.is_some_and(|m| count >= m) {
            break;
        }
        let records = consumer.poll(Duration::from_millis(500)).await?;
        if records.is_empty() {
            if idle_limit.is_some_and(|l| env.elapsed() - idle_since >= l) {
                break;
            }
            continue;
        }
        idle_since = env.elapsed();
        let mut out = stdout.lock();
        for r in &records {
            if args.max_messages.is_some_and(|m| count >= m) {
                out.flush()?;
                break 'poll;
            }
            print_record(&mut out, r, &args)?;
            count += 1;
        }
        out.flush()?;
    }
    eprintln!("Processed a total of {count} messages");
    Ok(0)
}

fn print_record(out: &mut impl Write, r: &ConsumerRecord, args: &Args) -> std::io::Result<()> {
    if args.print_offset {
        write!(out, "{}:{}\t", r.partition, r.offset)?;
    }
    if args.print_key {
        match &r.key {
            Some(k) => out.write_all(k)?,
            None => out.write_all(b"null")?,
        }
        out.write_all(b"\t")?;
    }
    match &r.value {
        Some(v) => out.write_all(v)?,
        None => out.write_all(b"null")?,
    }
    out.write_all(b"\n")
}
