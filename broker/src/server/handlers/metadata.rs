//! Metadata: brokers, topics and partition leaders, auto-creating requested
//! topics as `auto.create.topics.enable` allows.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
use uuid::Uuid;

use super::{str_bytes, topic_name};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};

use crate::cluster::link::{ClusterLink, LISTENER};
use crate::cluster::peers::PeerRequest;
use crate::controller::metadata_view::{error_topic, response};
use crate::server::node::Cx;
use crate::server::topics::{Topic, TopicSpec};

/// The cluster id clients see; a single-broker cluster needs no generated one.
pub const CLUSTER_ID: &str = crate::controller::quorum_controller::DEFAULT_CLUSTER_ID;

pub fn handle(cx: &mut Cx, req: MetadataRequest, version: i16) -> MetadataResponse {
    if let Some(link) = cx.node.cluster() {
        return from_image(cx, link, req, version);
    }
    let mut resp = MetadataResponse::default();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = cx.node.config.node_id.into();
    broker.host = str_bytes(cx.node.advertised_host.clone());
    broker.port = cx.node.advertised_port;
    resp.brokers = vec![broker];
    resp.cluster_id = Some(str_bytes(CLUSTER_ID));
    resp.controller_id = cx.node.config.node_id.into();

    // v0 has no null list: an empty one means every topic.
    let requested = match req.topics {
        Some(t) if !(version == 0 && t.is_empty()) => t,
        _ => {
            resp.topics = cx.node.topics.all().iter().map(|t| describe(cx, t)).collect();
            return resp;
        }
    };
    // Before v4 the request cannot say no to auto-creation.
    let may_create = cx.node.config.auto_create_topics_enable && (version < 4 || req.allow_auto_topic_creation);
    let mut seen = std::collections::BTreeSet::new();
    // Auto-creation is bounded per request; the rest answer UNKNOWN_TOPIC_OR_PARTITION
    // and clients ask again.
    let mut created = 0usize;
    for wanted in requested {
        let entry = match wanted.name {
            Some(name) => {
                if !seen.insert(name.0.to_string()) {
                    continue;
                }
                match cx.node.topics.get(&name) {
                    Some(t) => describe(cx, &t),
                    None if may_create && created < cx.node.config.max_auto_created_topics_per_request => {
                        match cx.node.topics.create(cx.disk, &TopicSpec::defaults(&name), cx.clock.now_ms) {
                            Ok(t) => {
                                created += 1;
                                describe(cx, &t)
                            }
                            Err(e) => {
                                tracing::debug!(topic = %name.0, error = %e.message, "auto-creation refused");
                                error_topic(Some(name), Uuid::nil(), e.code)
                            }
                        }
                    }
                    None => {
                        let code = match crate::server::topics::validate_topic_name(&name) {
                            Ok(()) => ResponseError::UnknownTopicOrPartition,
                            Err(_) => ResponseError::InvalidTopicException,
                        };
                        error_topic(Some(name), Uuid::nil(), code)
                    }
                }
            }
            None => match cx.node.topics.get_by_id(wanted.topic_id) {
                Some(t) => describe(cx, &t),
                None => error_topic(None, wanted.topic_id, ResponseError::UnknownTopicId),
            },
        };
        resp.topics.push(entry);
    }
    resp
}

fn describe(cx: &Cx, t: &Topic) -> MetadataResponseTopic {
    let node = cx.node.config.node_id;
    let mut entry = MetadataResponseTopic::default();
    entry.name = Some(topic_name(&t.name));
    entry.topic_id = t.id;
    entry.is_internal = t.name == crate::server::group::OFFSETS_TOPIC;
    entry.partitions = t
        .partitions
        .iter()
        .map(|p| {
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = p.index;
            mp.leader_id = node.into();
            mp.leader_epoch = p.leader_epoch();
            mp.replica_nodes = vec![node.into()];
            mp.isr_nodes = vec![node.into()];
            mp
        })
        .collect();
    entry
}

/// Cluster mode: the answer comes from the metadata image. A missing topic
/// that may be auto-created is handed to the controller, and answered
/// LEADER_NOT_AVAILABLE so the client asks again, as Kafka does.
fn from_image(cx: &mut Cx, link: &ClusterLink, req: MetadataRequest, version: i16) -> MetadataResponse {
    let image = link.image();
    let requested = req.topics.as_deref().filter(|t| !(version == 0 && t.is_empty()));
    let mut resp = response(&image, CLUSTER_ID, link.controller_id(), LISTENER, requested);
    let may_create = cx.node.config.auto_create_topics_enable && (version < 4 || req.allow_auto_topic_creation);
    if !may_create {
        return resp;
    }
    let missing: Vec<TopicName> = resp
        .topics
        .iter_mut()
        .filter(|t| t.error_code == ResponseError::UnknownTopicOrPartition.code())
        .take(cx.node.config.max_auto_created_topics_per_request)
        .filter_map(|t| {
            t.error_code = ResponseError::LeaderNotAvailable.code();
            t.name.clone()
        })
        .collect();
    if !missing.is_empty() {
        let topics = missing
            .into_iter()
            .map(|name| CreatableTopic::default().with_name(name).with_num_partitions(-1).with_replication_factor(-1))
            .collect();
        link.submit(PeerRequest::CreateTopics(
            CreateTopicsRequest::default().with_topics(topics).with_timeout_ms(30_000),
        ));
    }
    resp
}
