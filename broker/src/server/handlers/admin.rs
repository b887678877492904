//! Topic administration: CreateTopics, DeleteTopics and DescribeConfigs (for
//! topics).

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse,
};
use uuid::Uuid;

use super::{str_bytes, topic_name};
use crate::server::node::Cx;
use crate::server::topic_config::{config_source, creatable_configs, describe};
use crate::server::topics::{TopicError, TopicSpec};

/// DescribeConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;

pub fn create_topics(cx: &mut Cx, req: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut counts = BTreeMap::new();
    for t in &req.topics {
        *counts.entry(t.name.0.to_string()).or_insert(0) += 1;
    }
    let mut resp = CreateTopicsResponse::default();
    for t in req.topics {
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        let outcome = if counts[t.name.as_str()] > 1 {
            Err(TopicError {
                code: ResponseError::InvalidRequest,
                message: "topic named more than once in the request".into(),
            })
        } else {
            spec_of(cx, t).and_then(|spec| {
                if req.validate_only {
                    cx.node.topics.validate(&spec).map(|(n, rf, config)| (Uuid::nil(), n, rf, config, spec.configs))
                } else {
                    cx.node.topics.create(cx.disk, &spec, cx.clock.now_ms).map(|t| {
                        (t.id, t.partitions.len() as i32, t.replication_factor, t.config.clone(), t.overrides.clone())
                    })
                }
            })
        };
        match outcome {
            Ok((id, partitions, rf, config, overrides)) => {
                r.topic_id = id;
                r.num_partitions = partitions;
                r.replication_factor = rf;
                r.configs = Some(creatable_configs(&config, &overrides));
            }
            Err(e) => {
                tracing::debug!(topic = %r.name.0, version, error = %e.message, "topic not created");
                r.error_code = e.code.code();
                r.error_message = Some(str_bytes(e.message));
                r.num_partitions = -1;
                r.replication_factor = -1;
                r.configs = None;
            }
        }
        resp.topics.push(r);
    }
    resp
}

/// Turn a CreateTopics entry into a spec. Manual assignments are accepted only
/// when they place every partition on this broker alone.
fn spec_of(cx: &Cx, t: CreatableTopic) -> Result<TopicSpec, TopicError> {
    let mut num_partitions = t.num_partitions;
    let mut replication_factor = t.replication_factor;
    if !t.assignments.is_empty() {
        if num_partitions != -1 || replication_factor != -1 {
            return Err(TopicError {
                code: ResponseError::InvalidRequest,
                message: "with replica assignments, num_partitions and replication_factor must be -1".into(),
            });
        }
        let indexes: BTreeSet<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
        let contiguous = indexes.len() == t.assignments.len() && indexes.iter().copied().eq(0..indexes.len() as i32);
        if !contiguous {
            return Err(TopicError {
                code: ResponseError::InvalidReplicaAssignment,
                message: "assigned partitions must be numbered 0..n without gaps".into(),
            });
        }
        if t.assignments.iter().any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != cx.node.config.node_id) {
            return Err(TopicError {
                code: ResponseError::InvalidReplicaAssignment,
                message: format!(
                    "every partition must be assigned to broker {} alone: a single broker holds one replica of each partition",
                    cx.node.config.node_id
                ),
            });
        }
        num_partitions = indexes.len() as i32;
        replication_factor = 1;
    }
    let configs = t.configs.into_iter().filter_map(|c| Some((c.name.to_string(), c.value?.to_string()))).collect();
    Ok(TopicSpec { name: t.name.0.to_string(), num_partitions, replication_factor, configs })
}

/// The request in its v6 shape (every topic in `topics`, by name or id), as
/// the controller takes it.
pub fn delete_topics_v6(mut req: DeleteTopicsRequest, version: i16) -> DeleteTopicsRequest {
    if version < 6 {
        req.topics = std::mem::take(&mut req.topic_names)
            .into_iter()
            .map(|n| kafka_protocol::messages::delete_topics_request::DeleteTopicState::default().with_name(Some(n)))
            .collect();
    }
    req
}

pub fn delete_topics(cx: &mut Cx, req: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let wanted: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics.into_iter().map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id)).collect()
    } else {
        req.topic_names.into_iter().map(|n| (Some(n.0.to_string()), Uuid::nil())).collect()
    };
    let mut resp = DeleteTopicsResponse::default();
    for (name, id) in wanted {
        let mut r = DeletableTopicResult::default();
        r.topic_id = id;
        r.name = name.as_deref().map(topic_name);
        let resolved =
            match &name {
                Some(n) => Ok(n.clone()),
                None => cx.node.topics.get_by_id(id).map(|t| t.name.clone()).ok_or(TopicError {
                    code: ResponseError::UnknownTopicId,
                    message: format!("no topic has id {id}"),
                }),
            };
        match resolved.and_then(|n| cx.node.topics.delete(cx.disk, &n)) {
            Ok(t) => {
                r.name = Some(topic_name(&t.name));
                r.topic_id = t.id;
            }
            Err(e) => {
                r.error_code = e.code.code();
                r.error_message = Some(str_bytes(e.message));
            }
        }
        resp.responses.push(r);
    }
    resp
}

pub fn describe_configs(cx: &mut Cx, req: DescribeConfigsRequest, version: i16) -> DescribeConfigsResponse {
    let mut resp = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut r = DescribeConfigsResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        if res.resource_type != RESOURCE_TOPIC {
            r.error_code = ResponseError::InvalidRequest.code();
            r.error_message = Some(str_bytes(format!(
                "resource type {} is not supported: only topic configs (type {RESOURCE_TOPIC}) can be described",
                res.resource_type
            )));
        } else if let Some(t) = cx.node.topics.get(&res.resource_name) {
            // Null asks for every config; so does an empty list, which would
            // otherwise ask for nothing at all.
            let keys: Option<BTreeSet<String>> =
                res.configuration_keys.filter(|k| !k.is_empty()).map(|k| k.iter().map(|s| s.to_string()).collect());
            r.configs = describe(&t.config, &t.overrides)
                .into_iter()
                .filter(|e| keys.as_ref().is_none_or(|k| k.contains(e.name)))
                .map(|e| {
                    let mut c = DescribeConfigsResourceResult::default();
                    c.config_source = config_source(&e);
                    c.config_type = if version >= 3 { e.config_type as i8 } else { 0 };
                    c.name = str_bytes(e.name);
                    c.value = Some(str_bytes(e.value));
                    c
                })
                .collect();
        } else {
            r.error_code = ResponseError::UnknownTopicOrPartition.code();
            r.error_message = Some(str_bytes(format!("topic {:?} does not exist", res.resource_name.as_str())));
        }
        resp.results.push(r);
    }
    resp
}
