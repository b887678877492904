//! `faultline bench`: produce and fetch throughput over loopback with our own
//! client, next to the machine's raw sequential-write bandwidth, so the
//! broker's overhead over the disk is one number.
//!
//! Real mode only: the raw-disk baseline uses std::fs and the wall clock.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use faultline_broker::client::{
    parse_bootstrap, Admin, AdminConfig, AutoOffsetReset, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use faultline_broker::config::BrokerConfig;
use faultline_broker::io::real::RealIo;
use faultline_broker::io::Env;
use faultline_broker::server;

/// Record value sizes measured.
const SIZES: [usize; 2] = [100, 1024];
const MIB: usize = 1 << 20;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Records per record size.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Measure this broker instead of starting one in-process.
    #[arg(long)]
    bootstrap_server: Option<String>,
}

struct Row {
    size: usize,
    produce: Duration,
    fetch: Duration,
    raw: Duration,
}

pub async fn run(args: Args) -> anyhow::Result<i32> {
    anyhow::ensure!(args.records > 0, "--records must be positive");
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let env = RealIo::new();
    let (bootstrap, broker) = match &args.bootstrap_server {
        Some(b) => (parse_bootstrap(b)?, None),
        None => {
            let config = BrokerConfig {
                listen: "127.0.0.1:0".into(),
                data_dir: dir.path().join("data"),
                ..BrokerConfig::default()
            };
            let running = server::start(env.clone(), config).await.context("cannot start the in-process broker")?;
            (vec![running.local_addr().to_string()], Some(running))
        }
    };
    let mut rows = Vec::new();
    for size in SIZES {
        let topic = format!("bench-{size}b-{}", env.now_ms());
        let admin = Admin::new(env.clone(), AdminConfig::new(bootstrap.clone()))?;
        admin.create_topics(&[NewTopic::new(&topic, 1, 1)]).await.with_context(|| format!("cannot create {topic}"))?;
        let produce = produce(&env, &bootstrap, &topic, size, args.records).await?;
        let fetch = fetch(&env, &bootstrap, &topic, args.records).await?;
        let raw = raw_write(dir.path(), size as u64 * args.records)?;
        rows.push(Row { size, produce, fetch, raw });
    }
    print_table(&rows, args.records);
    if let Some(b) = broker {
        b.shutdown().await?;
    }
    Ok(0)
}

async fn produce(env: &Env, bootstrap: &[String], topic: &str, size: usize, records: u64) -> anyhow::Result<Duration> {
    let mut config = ProducerConfig::new(bootstrap.to_vec());
    config.acks = -1;
    config.linger_ms = 10;
    config.batch_size = MIB - 1024;
    config.max_request_size = 4 * MIB;
    let producer = Producer::new(env.clone(), config)?;
    let value = bytes::Bytes::from(vec![b'x'; size]);
    let start = Instant::now();
    let futures: Vec<_> = (0..records).map(|_| producer.send(ProducerRecord::new(topic, value.clone()))).collect();
    for f in futures {
        f.await.context("produce failed")?;
    }
    let took = start.elapsed();
    producer.close().await;
    Ok(took)
}

async fn fetch(env: &Env, bootstrap: &[String], topic: &str, records: u64) -> anyhow::Result<Duration> {
    let mut config = ConsumerConfig::new(bootstrap.to_vec());
    config.auto_offset_reset = AutoOffsetReset::Earliest;
    config.max_partition_fetch_bytes = 8 * MIB as i32;
    let mut consumer = Consumer::new(env.clone(), config)?;
    consumer.assign(vec![TopicPartition::new(topic, 0)]);
    let start = Instant::now();
    let mut got = 0u64;
    while got < records {
        let batch = consumer.poll(Duration::from_secs(5)).await?;
        anyhow::ensure!(!batch.is_empty(), "fetch stalled after {got} of {records} records");
        got += batch.len() as u64;
    }
    Ok(start.elapsed())
}

/// Write `bytes` sequentially in 1 MiB chunks and fsync once at the end.
fn raw_write(dir: &std::path::Path, bytes: u64) -> anyhow::Result<Duration> {
    let path = dir.join("raw-write");
    let chunk = vec![b'x'; MIB];
    let start = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MIB as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    let took = start.elapsed();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(took)
}

fn print_table(rows: &[Row], records: u64) {
    let rate = |d: Duration| records as f64 / d.as_secs_f64().max(1e-9);
    let mbps = |size: usize, d: Duration| (size as f64 * records as f64) / 1e6 / d.as_secs_f64().max(1e-9);
    println!(
        "{:>7} {:>9} {:>14} {:>12} {:>14} {:>12} {:>12} {:>12}",
        "size", "records", "produce rec/s", "produce MB/s", "fetch rec/s", "fetch MB/s", "raw MB/s", "produce/raw"
    );
    for r in rows {
        let (p, raw) = (mbps(r.size, r.produce), mbps(r.size, r.raw));
        let size = if r.size >= 1024 { format!("{} KiB", r.size / 1024) } else { format!("{} B", r.size) };
        println!(
            "{:>7} {:>9} {:>14.0} {:>12.1} {:>14.0} {:>12.1} {:>12.1} {:>12.2}",
            size,
            records,
            rate(r.produce),
            p,
            rate(r.fetch),
            mbps(r.size, r.fetch),
            raw,
            p / raw
        );
    }
}
