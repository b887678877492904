//! The broker node: accepts Kafka connections, owns topics and partition logs,
//! and answers requests. The same code runs in `faultline serve` and in the
//! simulator: all I/O goes through the [`Env`].
//!
//! - [`topics`]: the topic registry and its on-disk layout.
//! - [`partition`]: one hosted partition (log + leadership state).
//! - [`connection`]: one client connection: framing, version checks, dispatch.
//! - [`handlers`]: one module per Kafka API.
//! - [`flusher`]: the background task applying `flush.ms` and `segment.ms`.
//! - [`producer_ids`]: durable allocation of idempotent producer ids.

mod connection;
mod flusher;
mod handlers;
pub mod partition;
pub mod producer_ids;
pub mod topic_config;
pub mod topics;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{oneshot, watch, Notify};

use crate::config::BrokerConfig;
use crate::io::{self, Env};
use producer_ids::ProducerIds;
use topics::Topics;

/// State shared by every task of one broker.
pub(crate) struct Broker {
    pub env: Env,
    pub config: BrokerConfig,
    pub topics: Topics,
    pub producer_ids: ProducerIds,
    /// Host and port clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Signalled whenever a high watermark may have advanced: wakes produce
    /// requests waiting for durability and fetches waiting for data.
    pub hw_advanced: Notify,
    /// Becomes true when the broker is asked to stop. Held here, not by the
    /// [`RunningBroker`], so that dropping the handle does not stop serving.
    stop: watch::Sender<bool>,
}

impl Broker {
    /// Resolves once the broker is asked to stop.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// A broker that is serving. Dropping it does not stop it; call
/// [`RunningBroker::shutdown`].
pub struct RunningBroker {
    local_addr: SocketAddr,
    broker: Arc<Broker>,
    done: oneshot::Receiver<()>,
}

impl RunningBroker {
    /// The address the listener is bound to (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address advertised to clients in Metadata responses.
    pub fn advertised_addr(&self) -> String {
        format!("{}:{}", self.broker.advertised_host, self.broker.advertised_port)
    }

    /// Serve until [`RunningBroker::shutdown`] is called elsewhere or the
    /// world (process or simulated host) ends.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.done.await.context("broker accept loop ended abnormally")
    }

    /// Stop accepting and serving, flush every partition, and return once the
    /// listener is closed. In-flight requests finish; idle connections close.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.broker.stop.send_replace(true);
        self.done.await.context("broker accept loop ended abnormally")?;
        for topic in self.broker.topics.all() {
            for p in &topic.partitions {
                if let Err(e) = p.flush() {
                    tracing::warn!(topic = %topic.name, partition = p.index, error = %e, "flush at shutdown failed");
                }
            }
        }
        self.broker.env.pay_disk_latency().await;
        tracing::info!("broker stopped");
        Ok(())
    }
}

/// Open the data directory (recovering every partition), bind the listener
/// and start serving in background tasks.
pub async fn start(env: Env, config: BrokerConfig) -> anyhow::Result<RunningBroker> {
    anyhow::ensure!(config.num_partitions >= 1, "num_partitions must be at least 1, not {}", config.num_partitions);
    anyhow::ensure!(config.socket_request_max_bytes >= 64, "socket_request_max_bytes is too small");
    let topics = Topics::open(env.clone(), config.clone())
        .with_context(|| format!("cannot open data directory {}", config.data_dir.display()))?;
    let producer_ids = ProducerIds::open(env.fs(), &config.data_dir)
        .with_context(|| format!("cannot load producer ids from {}", config.data_dir.display()))?;
    env.pay_disk_latency().await;
    let listener = env.listen(&config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let local_addr = listener.local_addr()?;
    let advertised = config.advertised_listener.clone().unwrap_or_else(|| local_addr.to_string());
    let (host, port) = parse_host_port(&advertised)?;
    let broker = Arc::new(Broker {
        env: env.clone(),
        config,
        topics,
        producer_ids,
        advertised_host: host,
        advertised_port: port,
        hw_advanced: Notify::new(),
        stop: watch::channel(false).0,
    });
    tracing::info!(node_id = broker.config.node_id, %local_addr, %advertised, "broker listening");
    flusher::spawn(broker.clone());
    let (done_tx, done) = oneshot::channel();
    let b = broker.clone();
    io::spawn(&env, "broker-accept", async move {
        connection::accept_loop(b, listener).await;
        let _ = done_tx.send(());
    });
    Ok(RunningBroker { local_addr, broker, done })
}

/// Run a broker until the process (or simulated host) dies.
pub async fn run(env: Env, config: BrokerConfig) -> anyhow::Result<()> {
    start(env, config).await?.wait().await
}

fn parse_host_port(addr: &str) -> anyhow::Result<(String, i32)> {
    let (host, port) =
        addr.rsplit_once(':').with_context(|| format!("advertised listener {addr:?} is not host:port"))?;
    let port: u16 = port.parse().with_context(|| format!("advertised listener {addr:?} has a bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    anyhow::ensure!(!host.is_empty(), "advertised listener {addr:?} has no host");
    Ok((host.to_string(), port as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parsing() {
        assert_eq!(parse_host_port("127.0.0.1:9092").unwrap(), ("127.0.0.1".into(), 9092));
        assert_eq!(parse_host_port("broker-1:19092").unwrap(), ("broker-1".into(), 19092));
        assert_eq!(parse_host_port("[::1]:9092").unwrap(), ("::1".into(), 9092));
        assert!(parse_host_port("nohost").is_err());
        assert!(parse_host_port("h:99999").is_err());
        assert!(parse_host_port(":9092").is_err());
    }
}
