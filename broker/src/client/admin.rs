//! The admin client: create, delete, list and describe topics, read topic
//! configs, and list, describe and delete consumer groups and read and
//! reset their committed offsets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteGroupsRequest, DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    GroupId, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::cluster::{Cluster, ClusterConfig};
use super::consumer::topic_name;
use super::{assignor, group, ClientError, TopicPartition};
use crate::io::Env;

/// DescribeConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// The metadata quorum as its leader describes it (DescribeQuorum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumDescription {
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
    /// (node id, log end offset) of each voter.
    pub voters: Vec<(i32, i64)>,
    /// (node id, log end offset) of each observer the leader tracks.
    pub observers: Vec<(i32, i64)>,
}

/// Times a topic request answered NOT_CONTROLLER is sent again.
const CONTROLLER_RETRIES: u32 = 50;
/// Pause before each such retry.
const CONTROLLER_RETRY_BACKOFF: Duration = Duration::from_millis(200);

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
    env: Env,
    cluster: Arc<Cluster>,
    request_timeout: Duration,
}

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
}

/// A member as DescribeGroups reports it (a consumer's assignment decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub assignment: Vec<TopicPartition>,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

impl Admin {
    pub fn new(env: Env, config: AdminConfig) -> Result<Admin, ClientError> {
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        let cluster = Cluster::new(
            env.clone(),
            ClusterConfig { bootstrap_servers: config.bootstrap_servers, client_id: config.client_id, request_timeout },
        )?;
        Ok(Admin { env, cluster, request_timeout })
    }

    fn timeout_ms(&self) -> i32 {
        self.request_timeout.as_millis().min(i32::MAX as u128) as i32
    }

    /// Whether to send a controller request again: some topic got
    /// NOT_CONTROLLER (a cluster electing its controller, or one that just
    /// lost leadership), and attempts remain. Waits before saying yes, as
    /// Kafka's admin client backs off.
    async fn retry_controller(&self, codes: impl Iterator<Item = i16>, attempts: &mut u32) -> bool {
        let not_controller = ResponseError::NotController.code();
        let mut codes = codes;
        if *attempts >= CONTROLLER_RETRIES || !codes.any(|c| c == not_controller) {
            return false;
        }
        *attempts += 1;
        self.cluster.env().sleep(CONTROLLER_RETRY_BACKOFF).await;
        true
    }

    /// DescribeQuorum, asked of any node (a node that does not lead the
    /// quorum asks the leader).
    pub async fn describe_quorum(&self) -> Result<QuorumDescription, ClientError> {
        let resp = self.cluster.send_any(|_| crate::quorum::describe_quorum_request()).await?;
        let partition = resp.topics.first().and_then(|t| t.partitions.first());
        let code =
            partition.map_or(resp.error_code, |p| if resp.error_code != 0 { resp.error_code } else { p.error_code });
        if code != 0 {
            let msg = resp.error_message.as_ref().map(|m| m.to_string());
            return Err(ClientError::broker("describe quorum".to_string(), code, msg.as_deref()));
        }
        let p = partition.ok_or_else(|| ClientError::Protocol("DescribeQuorum answered no partition".into()))?;
        let replicas = |rs: &[kafka_protocol::messages::describe_quorum_response::ReplicaState]| {
            rs.iter().map(|r| (r.replica_id.0, r.log_end_offset)).collect()
        };
        Ok(QuorumDescription {
            leader_id: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            high_watermark: p.high_watermark,
            voters: replicas(&p.current_voters),
            observers: replicas(&p.observers),
        })
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
        let mut attempts = 0;
        let resp = loop {
            let topics = creatable.clone();
            let resp = self
                .cluster
                .send_controller(|_| CreateTopicsRequest::default().with_topics(topics).with_timeout_ms(timeout_ms))
                .await?;
            if !self.retry_controller(resp.topics.iter().map(|r| r.error_code), &mut attempts).await {
                break resp;
            }
        };
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
        let mut attempts = 0;
        let resp = loop {
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
            if !self.retry_controller(resp.responses.iter().map(|r| r.error_code), &mut attempts).await {
                break resp;
            }
        };
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

    async fn coordinator(&self, group: &str) -> Result<Arc<super::connection::Connection>, ClientError> {
        group::find_coordinator(&self.env, &self.cluster, group, Duration::from_millis(100)).await
    }

    /// Every group the broker coordinates.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let resp = self.cluster.send_any(|_| ListGroupsRequest::default()).await?;
        if resp.error_code != 0 {
            return Err(ClientError::broker("list groups", resp.error_code, None));
        }
        let mut out: Vec<GroupListing> = resp
            .groups
            .into_iter()
            .map(|g| GroupListing {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// A group's state and members; a consumer group's assignments decoded.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let conn = self.coordinator(group).await?;
        let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let resp = self.cluster.send(&conn, |_| req).await?;
        let g = resp
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("DescribeGroups answered nothing".into()))?;
        if g.error_code != 0 {
            return Err(ClientError::broker(format!("describe group {group}"), g.error_code, None));
        }
        let consumer = g.protocol_type.as_str() == "consumer";
        let members = g
            .members
            .into_iter()
            .map(|m| GroupMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.map(|i| i.to_string()),
                client_id: m.client_id.to_string(),
                client_host: m.client_host.to_string(),
                assignment: if consumer {
                    assignor::decode_assignment(m.member_assignment).unwrap_or_default()
                } else {
                    Vec::new()
                },
            })
            .collect();
        Ok(GroupDescription {
            group_id: group.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            members,
        })
    }

    /// Delete a group with no members, and its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let conn = self.coordinator(group).await?;
        let req =
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let resp = self.cluster.send(&conn, |_| req).await?;
        match resp.results.first() {
            Some(r) if r.error_code != 0 => {
                Err(ClientError::broker(format!("delete group {group}"), r.error_code, None))
            }
            Some(_) => Ok(()),
            None => Err(ClientError::Protocol("DeleteGroups answered nothing".into())),
        }
    }

    /// Every committed offset of a group.
    pub async fn group_offsets(&self, group: &str) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        let conn = self.coordinator(group).await?;
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_topics(None);
        let resp = self.cluster.send(&conn, |_| req).await?;
        if resp.error_code != 0 {
            return Err(ClientError::broker(format!("fetch offsets of group {group}"), resp.error_code, None));
        }
        let mut out = BTreeMap::new();
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code == 0 && p.committed_offset >= 0 {
                    out.insert(TopicPartition::new(t.name.0.to_string(), p.partition_index), p.committed_offset);
                }
            }
        }
        Ok(out)
    }

    /// Set a group's committed offsets (the group must have no members, as
    /// Kafka's `--reset-offsets` requires: the commit carries no generation).
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), ClientError> {
        let conn = self.coordinator(group).await?;
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, off) in offsets {
            by_topic.entry(&tp.topic).or_default().push(
                OffsetCommitRequestPartition::default().with_partition_index(tp.partition).with_committed_offset(*off),
            );
        }
        let topics = by_topic
            .into_iter()
            .map(|(t, ps)| OffsetCommitRequestTopic::default().with_name(topic_name(t)).with_partitions(ps))
            .collect();
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(topics);
        let resp = self.cluster.send(&conn, |_| req).await?;
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                    return Err(ClientError::broker(
                        format!("reset offsets of group {group} at {tp}"),
                        p.error_code,
                        None,
                    ));
                }
            }
        }
        Ok(())
    }
}
