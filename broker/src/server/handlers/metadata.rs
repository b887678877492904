//! Metadata: brokers, topics and partition leaders, auto-creating requested
//! topics as `auto.create.topics.enable` allows.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use uuid::Uuid;

use super::{str_bytes, topic_name};
use crate::server::topics::{Topic, TopicSpec};
use crate::server::Broker;

/// The cluster id clients see; a single-broker cluster needs no generated one.
pub const CLUSTER_ID: &str = "faultline";

pub async fn handle(b: &Broker, req: MetadataRequest, version: i16) -> MetadataResponse {
    let mut resp = MetadataResponse::default();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = b.config.node_id.into();
    broker.host = str_bytes(b.advertised_host.clone());
    broker.port = b.advertised_port;
    resp.brokers = vec![broker];
    resp.cluster_id = Some(str_bytes(CLUSTER_ID));
    resp.controller_id = b.config.node_id.into();

    // v0 has no null list: an empty one means every topic.
    let requested = match req.topics {
        Some(t) if !(version == 0 && t.is_empty()) => t,
        _ => {
            resp.topics = b.topics.all().iter().map(|t| describe(b, t)).collect();
            return resp;
        }
    };
    // Before v4 the request cannot say no to auto-creation.
    let may_create = b.config.auto_create_topics_enable && (version < 4 || req.allow_auto_topic_creation);
    let mut created = false;
    let mut seen = std::collections::BTreeSet::new();
    for wanted in requested {
        let entry = match wanted.name {
            Some(name) => {
                if !seen.insert(name.0.to_string()) {
                    continue;
                }
                match b.topics.get(&name) {
                    Some(t) => describe(b, &t),
                    None if may_create => match b.topics.create(&TopicSpec::defaults(&name)) {
                        Ok(t) => {
                            created = true;
                            describe(b, &t)
                        }
                        Err(e) => {
                            tracing::debug!(topic = %name.0, error = %e.message, "auto-creation refused");
                            error_entry(Some(name), Uuid::nil(), e.code)
                        }
                    },
                    None => {
                        let code = match crate::server::topics::validate_topic_name(&name) {
                            Ok(()) => ResponseError::UnknownTopicOrPartition,
                            Err(_) => ResponseError::InvalidTopicException,
                        };
                        error_entry(Some(name), Uuid::nil(), code)
                    }
                }
            }
            None => match b.topics.get_by_id(wanted.topic_id) {
                Some(t) => describe(b, &t),
                None => error_entry(None, wanted.topic_id, ResponseError::UnknownTopicId),
            },
        };
        resp.topics.push(entry);
    }
    if created {
        b.env.pay_disk_latency().await;
    }
    resp
}

fn describe(b: &Broker, t: &Topic) -> MetadataResponseTopic {
    let node = b.config.node_id;
    let mut entry = MetadataResponseTopic::default();
    entry.name = Some(topic_name(&t.name));
    entry.topic_id = t.id;
    entry.partitions = t
        .partitions
        .iter()
        .map(|p| {
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = p.index;
            mp.leader_id = node.into();
            mp.leader_epoch = p.leader_epoch;
            mp.replica_nodes = vec![node.into()];
            mp.isr_nodes = vec![node.into()];
            mp
        })
        .collect();
    entry
}

fn error_entry(name: Option<TopicName>, id: Uuid, code: ResponseError) -> MetadataResponseTopic {
    let mut entry = MetadataResponseTopic::default();
    entry.name = name;
    entry.topic_id = id;
    entry.error_code = code.code();
    entry
}
