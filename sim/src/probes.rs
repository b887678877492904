//! Protocol probes: requests a Kafka broker must refuse, sent by the reader
//! once its topics exist, so that the paths which turn bad input into a
//! clear error are reached by every run and not only by unit tests. A broker
//! that accepts one of them, or refuses it with another code, gives the run
//! the [`PROTOCOL_PROBE`] finding, which is always fatal: no configuration
//! or fault excuses it (a probe that gets no answer at all says nothing and
//! is retried, up to [`ATTEMPTS`]).
//!
//! Single-broker runs only: in cluster mode the same requests are judged by
//! the controller, whose refusals the quorum tests cover.

use std::time::Duration;

use faultline_broker::client::cluster::{Cluster, ClusterConfig};
use faultline_broker::io::Env;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::{BrokerId, CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

/// The run-level finding: the broker answered a probe as Kafka does not.
pub const PROTOCOL_PROBE: &str = "protocol-probe";

/// Tries per probe before its silence is reported (as informational).
pub const ATTEMPTS: u32 = 20;

/// A topic no scenario creates, auto-creation being off in the simulator.
const MISSING_TOPIC: &str = "probe-missing-topic";
/// The name of the topic a refused CreateTopics must not create.
const REFUSED_TOPIC: &str = "probe-refused-topic";

/// Run every probe against `bootstrap`; the wrong answers, one line each.
pub async fn run(env: &Env, bootstrap: Vec<String>, request_timeout: Duration) -> Vec<String> {
    let config = ClusterConfig { bootstrap_servers: bootstrap, client_id: "probes".into(), request_timeout };
    let Ok(cluster) = Cluster::new(env.clone(), config) else { return vec!["cannot build a probe client".into()] };
    let mut wrong = Vec::new();
    for probe in [Probe::UnknownTopicMetadata, Probe::AssignmentsWithPartitionCount] {
        let mut answer = None;
        for _ in 0..ATTEMPTS {
            match probe.ask(&cluster).await {
                Ok(code) => {
                    answer = Some(code);
                    break;
                }
                Err(e) => {
                    tracing::debug!(?probe, error = %e, "probe unanswered; retrying");
                    env.sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if let Some(code) = answer.filter(|&c| c != probe.expected().code()) {
            wrong.push(format!(
                "{}: expected {:?}, got {}",
                probe.describe(),
                probe.expected(),
                match code {
                    0 => "no error".to_string(),
                    c => ResponseError::try_from_code(c).map_or_else(|| format!("code {c}"), |e| format!("{e:?}")),
                }
            ));
        }
    }
    wrong
}

#[derive(Debug, Clone, Copy)]
enum Probe {
    /// Metadata for a topic that does not exist, auto-creation off.
    UnknownTopicMetadata,
    /// CreateTopics with manual replica assignments and a partition count:
    /// Kafka wants -1 for both counts when assignments are given.
    AssignmentsWithPartitionCount,
}

impl Probe {
    fn describe(self) -> &'static str {
        match self {
            Probe::UnknownTopicMetadata => "Metadata for a missing topic without auto-creation",
            Probe::AssignmentsWithPartitionCount => {
                "CreateTopics with replica assignments and num_partitions 1 (Kafka wants -1)"
            }
        }
    }

    fn expected(self) -> ResponseError {
        match self {
            Probe::UnknownTopicMetadata => ResponseError::UnknownTopicOrPartition,
            Probe::AssignmentsWithPartitionCount => ResponseError::InvalidRequest,
        }
    }

    /// The error code the broker answered with (0: none).
    async fn ask(self, cluster: &Cluster) -> Result<i16, String> {
        match self {
            Probe::UnknownTopicMetadata => {
                let topics = [MISSING_TOPIC.to_string()];
                let answer = cluster.refresh(Some(&topics), false).await.map_err(|e| e.to_string())?;
                Ok(answer.get(MISSING_TOPIC).map_or(0, |t| t.error_code))
            }
            Probe::AssignmentsWithPartitionCount => {
                let topic = CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(REFUSED_TOPIC)))
                    .with_num_partitions(1)
                    .with_replication_factor(-1)
                    .with_assignments(vec![CreatableReplicaAssignment::default()
                        .with_partition_index(0)
                        .with_broker_ids(vec![BrokerId(0)])]);
                let resp = cluster
                    .send_any(|_| CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(1000))
                    .await
                    .map_err(|e| e.to_string())?;
                resp.topics.first().map(|t| t.error_code).ok_or_else(|| "an answer with no topic".to_string())
            }
        }
    }
}
