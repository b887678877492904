//! The broker node: accepts Kafka connections, owns topics and partition logs,
//! and answers requests. The same code runs in `faultline serve` and in the
//! simulator.

use crate::config::BrokerConfig;
use crate::io::Env;

/// Run a broker until the process (or simulated host) dies.
pub async fn run(_env: Env, _config: BrokerConfig) -> anyhow::Result<()> {
    todo!("broker")
}
