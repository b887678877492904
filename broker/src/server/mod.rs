//! The broker node: accepts Kafka connections, owns topics and partition logs,
//! and answers requests. The same code runs in `faultline serve` and in the
//! simulator: all I/O goes through the [`Env`].
//!
//! - [`node`]: the sans-IO core — Kafka request logic as a state machine.
//! - [`shell`]: the async shell that drives the core: connections, parked
//!   requests, the policy timer.
//! - [`handlers`]: one module per Kafka API, called by the core.
//! - [`partition`]: one hosted partition (log + replica state).
//! - [`topics`]: the topic registry and its on-disk layout.
//! - [`producer_ids`]: durable allocation of idempotent producer ids.
//! - [`group`]: consumer groups — the group coordinator and its records in
//!   `__consumer_offsets`.

pub mod group;
pub(crate) mod handlers;
pub mod node;
pub mod partition;
pub mod producer_ids;
pub(crate) mod shell;
pub mod topic_config;
pub mod topics;

#[cfg(test)]
mod full_disk_tests;
#[cfg(test)]
mod node_tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;

use crate::config::BrokerConfig;
use crate::io::{self, on_disk, Env};
use node::Node;
use shell::Shell;

/// A broker that is serving. Dropping it does not stop it; call
/// [`RunningBroker::shutdown`].
pub struct RunningBroker {
    local_addr: SocketAddr,
    shell: Arc<Shell>,
    done: oneshot::Receiver<()>,
}

impl RunningBroker {
    /// The address the listener is bound to (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address advertised to clients in Metadata responses.
    pub fn advertised_addr(&self) -> String {
        format!("{}:{}", self.shell.node.advertised_host, self.shell.node.advertised_port)
    }

    /// Serve until [`RunningBroker::shutdown`] is called elsewhere or the
    /// world (process or simulated host) ends.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.done).await.context("broker accept loop ended abnormally")
    }

    /// Stop accepting and serving, flush every partition, and return once the
    /// listener is closed. In-flight requests finish; idle connections close.
    ///
    /// In a cluster this is a controlled shutdown first (Kafka's): the
    /// controller moves every partition this broker leads to another ISR
    /// member, so producers fail over without waiting for a session to
    /// expire. If that takes longer than a broker session, the node stops
    /// anyway and the controller fences it as it would a crash.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(link) = self.shell.node.cluster() {
            let env = &self.shell.env;
            let limit = Duration::from_millis(self.shell.node.config.broker_session_timeout_ms);
            let done = link.controlled_shutdown();
            tokio::select! {
                biased;
                r = done => match r {
                    Ok(()) => tracing::info!("controlled shutdown complete"),
                    Err(_) => tracing::warn!("controlled shutdown cut short: the cluster driver stopped"),
                },
                _ = env.sleep(limit) => tracing::warn!(?limit, "controlled shutdown timed out; stopping anyway"),
            }
        }
        self.shell.request_stop();
        self.done.await.context("broker accept loop ended abnormally")?;
        let node = self.shell.node.clone();
        on_disk(&self.shell.env, |disk| node.flush_all(disk)).await;
        tracing::info!("broker stopped");
        Ok(())
    }
}

/// Open the data directory (recovering every partition), bind the listener
/// and start serving in background tasks.
pub async fn start(env: Env, config: BrokerConfig) -> anyhow::Result<RunningBroker> {
    let listener = env.listen(&config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let local_addr = listener.local_addr()?;
    let advertised = config.advertised_listener.clone().unwrap_or_else(|| local_addr.to_string());
    let host_port = parse_host_port(&advertised)?;
    let cluster = config.cluster_mode().map_err(|m| anyhow::anyhow!("bad cluster settings: {m}"))?;
    let (fs, now_ms, seed) = (env.fs(), env.now_ms(), env.random_u64());
    let node = on_disk(&env, move |disk| Node::open(disk, fs, config, host_port, now_ms, seed)).await?;
    let shell = Arc::new(Shell::new(env.clone(), Arc::new(node)));
    if let Some(mode) = cluster {
        crate::cluster::driver::start(shell.clone(), mode).await?;
    }
    tracing::info!(node_id = shell.node.config.node_id, %local_addr, %advertised, "broker listening");
    shell::spawn_ticker(shell.clone());
    let (done_tx, done) = oneshot::channel();
    let s = shell.clone();
    io::spawn(&env, "broker-accept", async move {
        shell::accept_loop(s, listener).await;
        let _ = done_tx.send(());
    });
    Ok(RunningBroker { local_addr, shell, done })
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
