//! The broker over real TCP: ApiVersions negotiation, Metadata with
//! auto-creation, topic administration and the not-yet-supported APIs.

mod broker_support;

use broker_support::*;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

fn code(e: ResponseError) -> i16 {
    e.code()
}

#[tokio::test]
async fn api_versions_v0_to_v3_list_our_table() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    for v in 0..=3 {
        let resp: ApiVersionsResponse = c.call(v, &ApiVersionsRequest::default()).await;
        assert_eq!(resp.error_code, 0, "v{v}");
        let produce = resp.api_keys.iter().find(|k| k.api_key == ApiKey::Produce as i16).unwrap();
        assert_eq!((produce.min_version, produce.max_version), (0, 9));
        let fetch = resp.api_keys.iter().find(|k| k.api_key == ApiKey::Fetch as i16).unwrap();
        assert_eq!((fetch.min_version, fetch.max_version), (4, 12));
        assert_eq!(resp.api_keys.len(), faultline_broker::wire::ADVERTISED.len());
    }
}

#[tokio::test]
async fn api_versions_beyond_our_range_get_a_v0_unsupported_version_answer() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    for v in [4, 77] {
        // The client encodes its newest version; the answer is always v0.
        let mut header = c.header(ApiKey::ApiVersions, v);
        header.request_api_version = v;
        let mut frame = bytes::BytesMut::new();
        frame.extend_from_slice(&[0; 4]);
        header.encode(&mut frame, 2).unwrap();
        ApiVersionsRequest::default().encode(&mut frame, 4).unwrap();
        let len = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        c.write_raw(&frame).await;
        let raw = faultline_broker::wire::read_frame(&mut c.stream, 1 << 20).await.unwrap().unwrap();
        let (h, resp): (_, ApiVersionsResponse) =
            faultline_broker::wire::decode_response(raw, ApiKey::ApiVersions, 0).unwrap();
        assert_eq!(h.correlation_id, header.correlation_id);
        assert_eq!(resp.error_code, code(ResponseError::UnsupportedVersion));
        assert!(resp.api_keys.iter().any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version == 3));
    }
    // The connection keeps serving after the probe, as clients retry on it.
    let resp: ApiVersionsResponse = c.call(3, &ApiVersionsRequest::default()).await;
    assert_eq!(resp.error_code, 0);
}

fn metadata_request(topics: &[&str], auto_create: bool) -> MetadataRequest {
    let mut req = MetadataRequest::default();
    req.topics = Some(topics.iter().map(|t| MetadataRequestTopic::default().with_name(Some(name(t)))).collect());
    req.allow_auto_topic_creation = auto_create;
    req
}

#[tokio::test]
async fn metadata_auto_creates_only_when_allowed() {
    let b = TestBroker::start_with(|c| c.num_partitions = 3).await;
    let mut c = b.connect().await;
    let resp: MetadataResponse = c.call(9, &metadata_request(&["absent"], false)).await;
    assert_eq!(resp.topics[0].error_code, code(ResponseError::UnknownTopicOrPartition));
    let resp: MetadataResponse = c.call(9, &metadata_request(&["bad/name"], true)).await;
    assert_eq!(resp.topics[0].error_code, code(ResponseError::InvalidTopicException));

    let resp: MetadataResponse = c.call(11, &metadata_request(&["auto"], true)).await;
    let t = &resp.topics[0];
    assert_eq!(t.error_code, 0);
    assert_eq!(t.partitions.len(), 3);
    assert!(!t.topic_id.is_nil());
    assert_eq!(resp.brokers[0].port, b.broker.as_ref().unwrap().local_addr().port() as i32);
    assert!(t.partitions.iter().all(|p| p.leader_id.0 == 0 && p.leader_epoch == 0 && p.isr_nodes.len() == 1));

    // v0: an empty list means every topic; v1+: null does.
    let all: MetadataResponse = c.call(0, &MetadataRequest::default().with_topics(Some(vec![]))).await;
    assert_eq!(all.topics.len(), 1);
    let all: MetadataResponse = c.call(1, &MetadataRequest::default().with_topics(None)).await;
    assert_eq!(all.topics.len(), 1);
}

#[tokio::test]
async fn metadata_respects_broker_auto_create_setting() {
    let b = TestBroker::start_with(|c| c.auto_create_topics_enable = false).await;
    let mut c = b.connect().await;
    let resp: MetadataResponse = c.call(9, &metadata_request(&["absent"], true)).await;
    assert_eq!(resp.topics[0].error_code, code(ResponseError::UnknownTopicOrPartition));
}

#[tokio::test]
async fn create_describe_and_delete_topics() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;

    let mut req = CreateTopicsRequest::default();
    req.validate_only = true;
    req.topics = vec![new_topic("t1", 2, &[("segment.bytes", "2097152")])];
    let resp: CreateTopicsResponse = c.call(7, &req).await;
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].num_partitions, 2);
    let listed: MetadataResponse = c.call(9, &MetadataRequest::default().with_topics(None)).await;
    assert!(listed.topics.is_empty(), "validate_only creates nothing");

    req.validate_only = false;
    let mut rf3 = new_topic("t3", 1, &[]);
    rf3.replication_factor = 3;
    let mut defaulted = new_topic("t4", -1, &[]);
    defaulted.replication_factor = -1;
    req.topics = vec![
        new_topic("t1", 2, &[("segment.bytes", "2097152")]),
        new_topic("bad name", 1, &[]),
        rf3,
        new_topic("t5", 1, &[("retention.bytes", "1")]),
        defaulted,
        new_topic("t6", 0, &[]),
    ];
    let resp: CreateTopicsResponse = c.call(7, &req).await;
    let codes: Vec<i16> = resp.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(
        codes,
        vec![
            0,
            code(ResponseError::InvalidTopicException),
            code(ResponseError::InvalidReplicationFactor),
            code(ResponseError::InvalidConfig),
            0,
            code(ResponseError::InvalidPartitions),
        ]
    );
    assert!(resp.topics[2].error_message.as_deref().unwrap().contains("a single broker holds one replica"));
    assert_eq!(resp.topics[4].num_partitions, 1);
    let again: CreateTopicsResponse = c.call(7, &req).await;
    assert_eq!(again.topics[0].error_code, code(ResponseError::TopicAlreadyExists));

    let mut d = DescribeConfigsRequest::default();
    d.resources = vec![
        DescribeConfigsResource::default().with_resource_type(2).with_resource_name(str_bytes("t1")),
        DescribeConfigsResource::default().with_resource_type(2).with_resource_name(str_bytes("nope")),
    ];
    let resp: DescribeConfigsResponse = c.call(4, &d).await;
    let configs = &resp.results[0].configs;
    let seg = configs.iter().find(|e| e.name.as_str() == "segment.bytes").unwrap();
    assert_eq!(seg.value.as_deref(), Some("2097152"));
    assert_eq!(seg.config_source, 1, "DYNAMIC_TOPIC_CONFIG");
    let flush = configs.iter().find(|e| e.name.as_str() == "flush.messages").unwrap();
    assert_eq!((flush.value.as_deref(), flush.config_source), (Some("1"), 5));
    assert_eq!(resp.results[1].error_code, code(ResponseError::UnknownTopicOrPartition));

    let mut del = DeleteTopicsRequest::default();
    del.topic_names = vec![name("t1"), name("nope")];
    let resp: DeleteTopicsResponse = c.call(5, &del).await;
    assert_eq!(resp.responses[0].error_code, 0);
    assert_eq!(resp.responses[1].error_code, code(ResponseError::UnknownTopicOrPartition));
    assert!(!b.dir.path().join("t1-0").exists() && !b.dir.path().join("topics/t1.json").exists());
    let listed: MetadataResponse = c.call(9, &MetadataRequest::default().with_topics(None)).await;
    let names: Vec<&str> = listed.topics.iter().map(|t| t.name.as_ref().unwrap().0.as_str()).collect();
    assert_eq!(names, vec!["t4"]);
}

#[tokio::test]
async fn groups_find_this_broker_and_transactions_fail_clearly() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    let resp: FindCoordinatorResponse =
        c.call(3, &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"))).await;
    assert_eq!(resp.error_code, 0);
    assert_eq!(resp.node_id.0, 0);
    let resp: FindCoordinatorResponse =
        c.call(4, &FindCoordinatorRequest::default().with_coordinator_keys(vec![StrBytes::from_static_str("g")])).await;
    assert_eq!(resp.coordinators[0].error_code, 0);
    let txn = FindCoordinatorRequest::default().with_key_type(1).with_key(StrBytes::from_static_str("t"));
    let resp: FindCoordinatorResponse = c.call(3, &txn).await;
    assert_eq!(resp.error_code, code(ResponseError::InvalidRequest));
    assert!(resp.error_message.unwrap().contains("not supported"));
    // Idempotent producers get an id (tests/broker_idempotence.rs); transactional ones are refused.
    let txn =
        InitProducerIdRequest::default().with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("t"))));
    let resp: InitProducerIdResponse = c.call(4, &txn).await;
    assert_eq!(resp.error_code, code(ResponseError::InvalidRequest));
}
