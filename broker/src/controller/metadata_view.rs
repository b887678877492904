//! What a Metadata response says in cluster mode, read from a
//! [`MetadataImage`]: the live brokers with their advertised address on the
//! listener the request came in on, the controller id, and each partition's
//! leader, leader epoch, replicas, ISR and offline replicas — as Kafka's
//! `KRaftMetadataCache` answers. Auto-creation of unknown topics is the
//! caller's (it is a CreateTopics sent to the controller).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::image::{MetadataImage, TopicImage, NO_LEADER};
use crate::server::topics::validate_topic_name;

/// A broker that clients may be sent to: registered, not fenced, and
/// advertising `listener`.
fn alive_on(image: &MetadataImage, node_id: i32, listener: &str) -> bool {
    image.broker(node_id).is_some_and(|b| !b.fenced && b.endpoint(listener).is_some())
}

/// Every live broker with its address on `listener`, by id. Fenced brokers
/// are left out: clients must not be sent to them.
pub fn brokers(image: &MetadataImage, listener: &str) -> Vec<MetadataResponseBroker> {
    image
        .brokers()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let e = b.endpoint(listener)?;
            let mut out = MetadataResponseBroker::default();
            out.node_id = BrokerId(b.node_id);
            out.host = StrBytes::from_string(e.host.clone());
            out.port = e.port as i32;
            out.rack = b.rack.clone().map(StrBytes::from_string);
            Some(out)
        })
        .collect()
}

/// One topic as Metadata describes it. A partition whose leader is offline
/// or fenced has leader -1 and LEADER_NOT_AVAILABLE, so clients refresh and
/// retry.
pub fn topic(image: &MetadataImage, t: &TopicImage, listener: &str) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(TopicName(StrBytes::from_string(t.name.clone())));
    out.topic_id = t.id;
    out.partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = i as i32;
            if p.leader != NO_LEADER && alive_on(image, p.leader, listener) {
                mp.leader_id = BrokerId(p.leader);
            } else {
                mp.leader_id = BrokerId(NO_LEADER);
                mp.error_code = ResponseError::LeaderNotAvailable.code();
            }
            mp.leader_epoch = p.leader_epoch;
            mp.replica_nodes = p.replicas.iter().map(|r| BrokerId(*r)).collect();
            mp.isr_nodes = p.isr.iter().map(|r| BrokerId(*r)).collect();
            mp.offline_replicas =
                p.replicas.iter().filter(|r| !alive_on(image, **r, listener)).map(|r| BrokerId(*r)).collect();
            mp
        })
        .collect();
    out
}

/// A topic entry carrying only an error.
pub fn error_topic(name: Option<TopicName>, id: Uuid, code: ResponseError) -> MetadataResponseTopic {
    let mut entry = MetadataResponseTopic::default();
    entry.name = name;
    entry.topic_id = id;
    entry.error_code = code.code();
    entry
}

/// A whole Metadata response from `image`: every topic when `requested` is
/// `None`, else each requested one (by name or id), unknown ones with
/// UNKNOWN_TOPIC_OR_PARTITION / UNKNOWN_TOPIC_ID and badly named ones with
/// INVALID_TOPIC_EXCEPTION. `controller_id` is the quorum's current leader
/// (-1 if none is known).
pub fn response(
    image: &MetadataImage,
    cluster_id: &str,
    controller_id: i32,
    listener: &str,
    requested: Option<&[MetadataRequestTopic]>,
) -> MetadataResponse {
    let mut resp = MetadataResponse::default();
    resp.brokers = brokers(image, listener);
    resp.cluster_id = Some(StrBytes::from_string(image.cluster_id().unwrap_or(cluster_id).to_string()));
    resp.controller_id = BrokerId(controller_id);
    resp.topics = match requested {
        None => image.topics().map(|t| topic(image, t, listener)).collect(),
        Some(wanted) => {
            let mut seen = std::collections::BTreeSet::new();
            wanted
                .iter()
                .filter(|w| w.name.as_ref().is_none_or(|n| seen.insert(n.0.to_string())))
                .map(|w| match &w.name {
                    Some(name) => match image.topic_by_name(name) {
                        Some(t) => topic(image, t, listener),
                        None => {
                            let code = match validate_topic_name(name) {
                                Ok(()) => ResponseError::UnknownTopicOrPartition,
                                Err(_) => ResponseError::InvalidTopicException,
                            };
                            error_topic(Some(name.clone()), Uuid::nil(), code)
                        }
                    },
                    None => match image.topic(w.topic_id) {
                        Some(t) => topic(image, t, listener),
                        None => error_topic(None, w.topic_id, ResponseError::UnknownTopicId),
                    },
                })
                .collect()
        }
    };
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::records::{
        BrokerRef, Endpoint, MetadataRecord, PartitionRecord, RegisterBroker, TopicRecord,
    };
    use std::collections::BTreeMap;

    #[test]
    fn live_brokers_leaders_and_offline_replicas() {
        let mut image = MetadataImage::empty();
        let mut offset = 0;
        let mut apply = |image: &mut MetadataImage, r: MetadataRecord| {
            image.apply(offset, &r).unwrap();
            offset += 1;
        };
        for n in 1..=3 {
            apply(
                &mut image,
                MetadataRecord::RegisterBroker(RegisterBroker {
                    node_id: n,
                    broker_epoch: n as i64,
                    incarnation_id: Uuid::from_u128(n as u128),
                    listeners: vec![Endpoint {
                        name: "PLAINTEXT".into(),
                        host: format!("10.0.0.{n}"),
                        port: 9092,
                        security_protocol: 0,
                    }],
                    rack: None,
                    fenced: n == 3,
                }),
            );
        }
        let id = Uuid::from_u128(42);
        apply(
            &mut image,
            MetadataRecord::Topic(TopicRecord { name: "t".into(), topic_id: id, configs: BTreeMap::new() }),
        );
        for (p, leader) in [(0, 1), (1, 3)] {
            apply(
                &mut image,
                MetadataRecord::Partition(PartitionRecord {
                    topic_id: id,
                    partition: p,
                    replicas: vec![leader],
                    isr: vec![leader],
                    leader,
                    leader_epoch: 4,
                    partition_epoch: 0,
                }),
            );
        }
        apply(&mut image, MetadataRecord::FenceBroker(BrokerRef { node_id: 2, broker_epoch: 2 }));

        let wanted = [
            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str("t")))),
            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str("nope")))),
            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str("bad/name")))),
            MetadataRequestTopic::default().with_name(None).with_topic_id(Uuid::from_u128(7)),
        ];
        let resp = response(&image, "c", 2, "PLAINTEXT", Some(&wanted));
        let ids: Vec<i32> = resp.brokers.iter().map(|b| b.node_id.0).collect();
        assert_eq!(ids, [1]);
        assert_eq!(resp.brokers[0].host.as_str(), "10.0.0.1");
        assert_eq!(resp.controller_id.0, 2);
        let t = &resp.topics[0];
        assert_eq!((t.partitions[0].leader_id.0, t.partitions[0].leader_epoch, t.partitions[0].error_code), (1, 4, 0));
        assert_eq!(t.partitions[1].leader_id.0, -1);
        assert_eq!(t.partitions[1].error_code, ResponseError::LeaderNotAvailable.code());
        assert_eq!(t.partitions[1].offline_replicas, [BrokerId(3)]);
        let codes: Vec<i16> = resp.topics.iter().map(|t| t.error_code).collect();
        assert_eq!(
            codes,
            [
                0,
                ResponseError::UnknownTopicOrPartition.code(),
                ResponseError::InvalidTopicException.code(),
                ResponseError::UnknownTopicId.code()
            ]
        );
        // Another listener name advertises nothing.
        assert!(brokers(&image, "INTERNAL").is_empty());
        assert_eq!(response(&image, "c", 2, "PLAINTEXT", None).topics.len(), 1);
    }
}
