//! `faultline produce`: send stdin lines as records (`key<TAB>value` with
//! `--keyed`), report a summary on stderr, exit non-zero if any failed.

use std::collections::VecDeque;

use faultline_broker::client::{
    parse_bootstrap, Compression, DeliveryFuture, ProduceError, Producer, ProducerConfig, ProducerRecord,
};
use faultline_broker::io::real::RealIo;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Sends allowed to be outstanding before the oldest is awaited.
const MAX_OUTSTANDING: usize = 10_000;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: super::TopicTarget,
    /// Lines are `key<TAB>value`.
    #[arg(long)]
    keyed: bool,
    /// 0, 1 or -1 (all in-sync replicas; "all" also accepted).
    #[arg(long, default_value = "-1", value_parser = parse_acks, allow_hyphen_values = true)]
    acks: i16,
    /// Send every record to this partition instead of using the partitioner.
    #[arg(long)]
    partition: Option<i32>,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
}

fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "all" | "-1" => Ok(-1),
        "0" => Ok(0),
        "1" => Ok(1),
        _ => Err(format!("acks must be 0, 1, -1 or all, not {s:?}")),
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    definite: u64,
    indeterminate: u64,
}

impl Tally {
    fn record(&mut self, line: u64, outcome: Result<(), ProduceError>) {
        match outcome {
            Ok(()) => self.ok += 1,
            Err(e) => {
                eprintln!("line {line}: {e}");
                if e.is_definite() {
                    self.definite += 1;
                } else {
                    self.indeterminate += 1;
                }
            }
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<i32> {
    let mut config = ProducerConfig::new(parse_bootstrap(&args.target.bootstrap_server)?);
    config.acks = args.acks;
    config.compression_type = args.compression.parse::<Compression>()?;
    config.linger_ms = args.linger_ms;
    let producer = Producer::new(RealIo::new(), config)?;
    let mut pending: VecDeque<(u64, DeliveryFuture)> = VecDeque::new();
    let mut tally = Tally::default();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut n = 0u64;
    while let Some(line) = lines.next_line().await? {
        n += 1;
        let mut record = if args.keyed {
            match line.split_once('\t') {
                Some((k, v)) => ProducerRecord::new(&args.target.topic, v.to_string()).with_key(k.to_string()),
                None => {
                    eprintln!("line {n}: no TAB between key and value; skipped");
                    tally.definite += 1;
                    continue;
                }
            }
        } else {
            ProducerRecord::new(&args.target.topic, line)
        };
        record.partition = args.partition;
        pending.push_back((n, producer.send(record)));
        if pending.len() >= MAX_OUTSTANDING {
            let (line, f) = pending.pop_front().expect("non-empty");
            tally.record(line, f.await.map(drop));
        }
    }
    for (line, f) in pending {
        tally.record(line, f.await.map(drop));
    }
    producer.close().await;
    eprintln!(
        "produced {} of {} records to {} ({} failed: {} not written, {} unknown)",
        tally.ok,
        n,
        args.target.topic,
        tally.definite + tally.indeterminate,
        tally.definite,
        tally.indeterminate
    );
    Ok(if tally.definite + tally.indeterminate > 0 { 1 } else { 0 })
}
