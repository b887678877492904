//! The admin client: create, delete, list and describe topics, and read
//! topic configs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest};
use kafka_protocol::protocol::StrBytes;

use super::cluster::{Cluster, ClusterConfig};
use super::consumer::topic_name;
use super::ClientError;
use crate::io::Env;

/// DescribeConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;

/// Admin client settings.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub bootstrap_servers: Vec<String>,
    pub client_id: String,
    pub request_timeout_ms: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            bootstrap_servers: vec!["127.0.0.1:9092".into()],
            client_id: "faultline-admin".into(),
            request_timeout_ms: 30_000,
        }
    }
}

impl AdminConfig {
    pub fn new(bootstrap_servers: Vec<String>) -> Self {
        AdminConfig { bootstrap_servers, ..AdminConfig::default() }
    }
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub num_partitions: i32,
    pub replication_factor: i16,
    /// Topic-level configs (`segment.bytes`, `cleanup.policy`, ...).
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, num_partitions: i32, replication_factor: i16) -> Self {
        NewTopic { name: name.into(), num_partitions, replication_factor, configs: BTreeMap::new() }
    }

    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// One partition of a described topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: i32,
    /// `None` while there is no leader.
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
}

/// A described topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub is_internal: bool,
    pub partitions: Vec<PartitionDescription>,
}

/// A Kafka admin client.
pub struct Admin {
    cluster: Arc<Cluster>,
    request_timeout: Duration,
}

impl Admin {
    pub fn new(env: Env, config: AdminConfig) -> Result<Admin, ClientError> {
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        let cluster = Cluster::new(
            env,
            ClusterConfig { bootstrap_servers: config.bootstrap_servers, client_id: config.client_id, request_timeout },
        )?;
        Ok(Admin { cluster, request_timeout })
    }

    fn timeout_ms(&self) -> i32 {
        self.request_timeout.as_millis().min(i32::MAX as u128) as i32
    }

    /// Create topics; the first per-topic error (e.g. TOPIC_ALREADY_EXISTS) is returned.
    pub async fn create_topics(&self, topics: &[NewTopic]) -> Result<(), ClientError> {
        for t in topics {
            if t.name.is_empty() || t.num_partitions < 1 || t.replication_factor < 1 {
                return Err(ClientError::InvalidArgument(format!(
                    "topic {:?} needs a name, at least one partition and a replication factor of at least one",
                    t.name
                )));
            }
        }
        let creatable: Vec<CreatableTopic> = topics
            .iter()
            .map(|t| {
                CreatableTopic::default()
                    .with_name(topic_name(&t.name))
                    .with_num_partitions(t.num_partitions)
                    .with_replication_factor(t.replication_factor)
                    .with_configs(
                        t.configs
                            .iter()
                            .map(|(k, v)| {
                                CreatableTopicConfig::default()
                                    .with_name(StrBytes::from_string(k.clone()))
                                    .with_value(Some(StrBytes::from_string(v.clone())))
                            })
                            .collect(),
                    )
            })
            .collect();
        let timeout_ms = self.timeout_ms();
        let resp = self
            .cluster
            .send_controller(|_| CreateTopicsRequest::default().with_topics(creatable).with_timeout_ms(timeout_ms))
            .await?;
        for r in resp.topics {
            if r.error_code != 0 {
                let msg = r.error_message.as_ref().map(|m| m.to_string());
                return Err(ClientError::broker(format!("create topic {}", r.name.0), r.error_code, msg.as_deref()));
            }
            self.cluster.invalidate(&r.name.0);
        }
        Ok(())
    }

    /// Delete topics; the first per-topic error is returned.
    pub async fn delete_topics(&self, names: &[String]) -> Result<(), ClientError> {
        let timeout_ms = self.timeout_ms();
        let resp = self
            .cluster
            .send_controller(|version| {
                let req = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
                // v6 names topics in `topics`; earlier versions in `topic_names`.
                if version >= 6 {
                    req.with_topics(
                        names.iter().map(|n| DeleteTopicState::default().with_name(Some(topic_name(n)))).collect(),
                    )
                } else {
                    req.with_topic_names(names.iter().map(|n| topic_name(n)).collect())
                }
            })
            .await?;
        for r in resp.responses {
            let name = r.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            self.cluster.invalidate(&name);
            if r.error_code != 0 {
                let msg = r.error_message.as_ref().map(|m| m.to_string());
                return Err(ClientError::broker(format!("delete topic {name}"), r.error_code, msg.as_deref()));
            }
        }
        Ok(())
    }

    /// Names of all non-internal topics, sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>, ClientError> {
        let all = self.cluster.refresh(None, false).await?;
        Ok(all.into_values().filter(|t| !t.is_internal && t.error_code == 0).map(|t| t.name).collect())
    }

    /// Partitions, leaders, replicas and ISR of `names` (all topics if empty).
    pub async fn describe_topics(&self, names: &[String]) -> Result<Vec<TopicDescription>, ClientError> {
        let got = self.cluster.refresh(if names.is_empty() { None } else { Some(names) }, false).await?;
        let mut out = Vec::new();
        for name in if names.is_empty() { got.keys().cloned().collect() } else { names.to_vec() } {
            let Some(t) = got.get(&name) else {
                return Err(ClientError::Protocol(format!("metadata response does not mention topic {name}")));
            };
            if t.error_code != 0 {
                return Err(ClientError::broker(format!("describe topic {name}"), t.error_code, None));
            }
            out.push(TopicDescription {
                name: t.name.clone(),
                is_internal: t.is_internal,
                partitions: t
                    .partitions
                    .values()
                    .map(|p| PartitionDescription {
                        partition: p.partition,
                        leader: (p.leader >= 0).then_some(p.leader),
                        leader_epoch: p.leader_epoch,
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                        offline_replicas: p.offline_replicas.clone(),
                    })
                    .collect(),
            });
        }
        Ok(out)
    }

    /// A topic's configs, name to value (null values as empty strings).
    pub async fn describe_configs(&self, topic: &str) -> Result<BTreeMap<String, String>, ClientError> {
        let resource = DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(None);
        let resp = self.cluster.send_any(|_| DescribeConfigsRequest::default().with_resources(vec![resource])).await?;
        let mut out = BTreeMap::new();
        for r in resp.results {
            if r.error_code != 0 {
                let msg = r.error_message.as_ref().map(|m| m.to_string());
                return Err(ClientError::broker(format!("describe configs of {topic}"), r.error_code, msg.as_deref()));
            }
            for c in r.configs {
                out.insert(c.name.to_string(), c.value.map(|v| v.to_string()).unwrap_or_default());
            }
        }
        Ok(out)
    }
}
