//! Every advertised API at every advertised version, over real TCP.
//!
//! Clients pick the highest version both sides speak, so an old client
//! (librdkafka asks for ListOffsets v2) exercises versions newer clients never
//! touch. A handler that sets a response field the negotiated version lacks
//! makes the response unencodable and the broker drops the connection, so each
//! version gets a real request here, driven from the version table itself: a
//! newly advertised API or version without a request builder fails this test.

mod broker_support;

use std::time::Duration;

use broker_support::*;
use bytes::BytesMut;
use faultline_broker::wire::{self, accepted_versions, ADVERTISED};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, Request};
use kafka_protocol::records::Compression;

const TOPIC: &str = "versions";

fn code(e: ResponseError) -> i16 {
    e.code()
}

/// Send `req` at `version` and decode the answer at that version; a closed
/// connection or an undecodable answer is an error, not a panic, so one run
/// reports every broken version at once.
async fn try_call<R: Request>(conn: &mut Conn, version: i16, req: &R) -> Result<R::Response, String> {
    let corr = conn.send(version, req).await;
    let key = ApiKey::try_from(R::KEY).unwrap();
    let frame = match tokio::time::timeout(Duration::from_secs(10), wire::read_frame(&mut conn.stream, 64 << 20)).await
    {
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return Err("connection closed instead of a response".into()),
        Ok(Err(e)) => return Err(format!("connection failed: {e}")),
        Err(_) => return Err("no response within 10s".into()),
    };
    let (h, body) = wire::decode_response::<R::Response>(frame, key, version).map_err(|e| e.to_string())?;
    if h.correlation_id != corr {
        return Err(format!("correlation id {} for request {corr}", h.correlation_id));
    }
    Ok(body)
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Check one (API, version): send a request valid for that version and assert
/// on the answer.
async fn check(b: &TestBroker, conn: &mut Conn, key: ApiKey, v: i16) -> Result<(), String> {
    match key {
        ApiKey::Produce => produce_at(b, conn, v).await,
        ApiKey::Fetch => fetch_at(conn, v).await,
        ApiKey::ListOffsets => list_offsets_at(conn, v).await,
        ApiKey::Metadata => metadata_at(conn, v).await,
        ApiKey::FindCoordinator => find_coordinator_at(conn, v).await,
        ApiKey::ApiVersions => api_versions_at(conn, v).await,
        ApiKey::CreateTopics => create_topics_at(conn, v).await,
        ApiKey::DeleteTopics => delete_topics_at(conn, v).await,
        ApiKey::InitProducerId => init_producer_id_at(conn, v).await,
        ApiKey::DescribeConfigs => describe_configs_at(conn, v).await,
        other => panic!("{other:?} is advertised but this test has no request builder for it; add one"),
    }
}

async fn produce_at(b: &TestBroker, conn: &mut Conn, v: i16) -> Result<(), String> {
    if v < accepted_versions(ApiKey::Produce).unwrap().min {
        return produce_refused(b, v).await;
    }
    let mut req = produce_request(TOPIC, 0, 1, batch(Compression::None, &["a", "b"]));
    // Partition 7 does not exist: exercises the error path, whose message
    // field only exists from v8.
    req.topic_data[0]
        .partition_data
        .push(produce_request(TOPIC, 7, 1, batch(Compression::None, &["x"])).topic_data[0].partition_data[0].clone());
    let resp: ProduceResponse = try_call(conn, v, &req).await?;
    let parts = &resp.responses[0].partition_responses;
    ensure!(parts.len() == 2, "{} partition responses", parts.len());
    ensure!(parts[0].error_code == 0 && parts[0].base_offset >= 1, "partition 0: {:?}", parts[0]);
    ensure!(parts[1].error_code == code(ResponseError::UnknownTopicOrPartition), "partition 7: {:?}", parts[1]);
    Ok(())
}

/// Produce v0–v2 are advertised but refused by closing the connection, as
/// Kafka 4.0 does. kafka-protocol cannot encode them, so the body is the v3
/// layout without its leading transactional id, which is what v2 is.
async fn produce_refused(b: &TestBroker, v: i16) -> Result<(), String> {
    let mut conn = b.connect().await;
    let header = conn.header(ApiKey::Produce, v);
    let req = produce_request(TOPIC, 0, 1, batch(Compression::None, &["old"]));
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&[0; 4]);
    header.encode(&mut frame, ApiKey::Produce.request_header_version(v)).unwrap();
    let mut body = BytesMut::new();
    req.encode(&mut body, 3).unwrap();
    assert_eq!(&body[..2], &[0xff, 0xff], "v3 body starts with a null transactional id");
    frame.extend_from_slice(&body[2..]);
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    conn.write_raw(&frame).await;
    ensure!(conn.is_closed_by_broker().await, "Produce v{v} must be refused by closing the connection");
    Ok(())
}

async fn fetch_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let partition = |index: i32| {
        FetchPartition::default().with_partition(index).with_fetch_offset(0).with_partition_max_bytes(1 << 20)
    };
    let mut req = FetchRequest::default();
    req.max_wait_ms = 0;
    req.min_bytes = 0;
    req.max_bytes = 1 << 20;
    req.topics = vec![FetchTopic::default().with_topic(name(TOPIC)).with_partitions(vec![partition(0), partition(7)])];
    let resp: FetchResponse = try_call(conn, v, &req).await?;
    let parts = &resp.responses[0].partitions;
    ensure!(parts.len() == 2, "{} partition responses", parts.len());
    let p = &parts[0];
    ensure!(p.error_code == 0 && p.high_watermark >= 1, "partition 0: error {} hw {}", p.error_code, p.high_watermark);
    ensure!(p.records.as_ref().is_some_and(|r| !r.is_empty()), "partition 0 returned no records");
    ensure!(
        parts[1].error_code == code(ResponseError::UnknownTopicOrPartition),
        "partition 7: {}",
        parts[1].error_code
    );
    Ok(())
}

async fn list_offsets_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    const LATEST: i64 = -1;
    const EARLIEST: i64 = -2;
    let partition =
        |index: i32, ts: i64| ListOffsetsPartition::default().with_partition_index(index).with_timestamp(ts);
    let mut req = ListOffsetsRequest::default();
    req.topics = vec![ListOffsetsTopic::default().with_name(name(TOPIC)).with_partitions(vec![
        partition(0, EARLIEST),
        partition(0, LATEST),
        partition(0, 0),
        partition(7, LATEST),
    ])];
    let resp: ListOffsetsResponse = try_call(conn, v, &req).await?;
    let parts = &resp.topics[0].partitions;
    ensure!(parts.len() == 4, "{} partition responses", parts.len());
    ensure!(parts[0].error_code == 0 && parts[0].offset == 0, "earliest: {:?}", parts[0]);
    ensure!(parts[1].error_code == 0 && parts[1].offset >= 1, "latest: {:?}", parts[1]);
    ensure!(parts[2].error_code == 0 && parts[2].offset == 0, "by timestamp: {:?}", parts[2]);
    ensure!(parts[3].error_code == code(ResponseError::UnknownTopicOrPartition), "partition 7: {:?}", parts[3]);
    if v >= 4 {
        ensure!(parts[1].leader_epoch >= 0, "leader epoch {}", parts[1].leader_epoch);
    }
    Ok(())
}

async fn metadata_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    // v0–v3 cannot refuse auto-creation, so a new name is created; from v4 the
    // request says no and the name stays unknown. Per-version names keep one
    // version's topic from answering for another.
    let other = if v < 4 { format!("auto-v{v}") } else { format!("absent-v{v}") };
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![
        MetadataRequestTopic::default().with_name(Some(name(TOPIC))),
        MetadataRequestTopic::default().with_name(Some(name(&other))),
    ]);
    req.allow_auto_topic_creation = v < 4;
    let resp: MetadataResponse = try_call(conn, v, &req).await?;
    ensure!(resp.brokers.len() == 1, "{} brokers", resp.brokers.len());
    let entry = |n: &str| resp.topics.iter().find(|t| t.name.as_ref().is_some_and(|t| t.0.as_str() == n));
    let t = entry(TOPIC);
    ensure!(t.is_some_and(|t| t.error_code == 0 && t.partitions.len() == 1), "topic entry: {t:?}");
    let o = entry(&other);
    let expected = if v < 4 { 0 } else { code(ResponseError::UnknownTopicOrPartition) };
    ensure!(o.is_some_and(|t| t.error_code == expected), "{other} entry: {o:?}");
    Ok(())
}

async fn find_coordinator_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let mut req = FindCoordinatorRequest::default();
    if v >= 4 {
        req.coordinator_keys = vec![str_bytes("group")];
    } else {
        req.key = str_bytes("group");
    }
    let resp: FindCoordinatorResponse = try_call(conn, v, &req).await?;
    // Consumer groups are not built: the documented answer is
    // COORDINATOR_NOT_AVAILABLE, per key from v4.
    let err = code(ResponseError::CoordinatorNotAvailable);
    if v >= 4 {
        ensure!(resp.coordinators.len() == 1 && resp.coordinators[0].error_code == err, "{:?}", resp.coordinators);
    } else {
        ensure!(resp.error_code == err, "error {}", resp.error_code);
    }
    Ok(())
}

async fn api_versions_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let mut req = ApiVersionsRequest::default();
    if v >= 3 {
        req.client_software_name = str_bytes("broker-versions-test");
        req.client_software_version = str_bytes("1.0");
    }
    let resp: ApiVersionsResponse = try_call(conn, v, &req).await?;
    ensure!(resp.error_code == 0, "error {}", resp.error_code);
    ensure!(resp.api_keys.len() == ADVERTISED.len(), "{} api keys", resp.api_keys.len());
    Ok(())
}

async fn create_topics_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let mut req = CreateTopicsRequest::default();
    req.timeout_ms = 5000;
    req.topics = vec![
        new_topic(&format!("created-v{v}"), 2, &[("segment.bytes", "2097152")]),
        // Already exists: the error path.
        new_topic(TOPIC, 1, &[]),
    ];
    let resp: CreateTopicsResponse = try_call(conn, v, &req).await?;
    ensure!(resp.topics.len() == 2, "{} results", resp.topics.len());
    let created = &resp.topics[0];
    ensure!(created.error_code == 0, "create: {:?}", created.error_message);
    if v >= 5 {
        ensure!(created.num_partitions == 2, "num_partitions {}", created.num_partitions);
    }
    ensure!(resp.topics[1].error_code == code(ResponseError::TopicAlreadyExists), "existing: {:?}", resp.topics[1]);
    Ok(())
}

async fn delete_topics_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let doomed = format!("doomed-v{v}");
    create_topic(conn, &doomed, 1, &[]).await;
    let mut req = DeleteTopicsRequest::default();
    req.timeout_ms = 5000;
    // Names moved into `topics` (which may also carry ids) at v6.
    let names = [doomed.as_str(), "never-existed"];
    if v >= 6 {
        req.topics = names.iter().map(|n| DeleteTopicState::default().with_name(Some(name(n)))).collect();
    } else {
        req.topic_names = names.iter().map(|n| name(n)).collect();
    }
    let resp: DeleteTopicsResponse = try_call(conn, v, &req).await?;
    ensure!(resp.responses.len() == 2, "{} results", resp.responses.len());
    ensure!(resp.responses[0].error_code == 0, "delete: {:?}", resp.responses[0]);
    ensure!(
        resp.responses[1].error_code == code(ResponseError::UnknownTopicOrPartition),
        "missing: {:?}",
        resp.responses[1]
    );
    Ok(())
}

async fn init_producer_id_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let mut req = InitProducerIdRequest::default();
    req.transaction_timeout_ms = 60_000;
    let resp: InitProducerIdResponse = try_call(conn, v, &req).await?;
    ensure!(resp.error_code == 0 && resp.producer_id.0 >= 0 && resp.producer_epoch == 0, "idempotent: {resp:?}");
    // Transactions are not built: the documented answer is INVALID_REQUEST.
    req.transactional_id = Some(TransactionalId(str_bytes("txn")));
    let resp: InitProducerIdResponse = try_call(conn, v, &req).await?;
    ensure!(resp.error_code == code(ResponseError::InvalidRequest), "transactional: {resp:?}");
    Ok(())
}

async fn describe_configs_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let mut req = DescribeConfigsRequest::default();
    req.include_synonyms = true;
    req.include_documentation = v >= 3;
    req.resources = vec![
        DescribeConfigsResource::default().with_resource_type(2).with_resource_name(str_bytes(TOPIC)),
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(str_bytes(TOPIC))
            .with_configuration_keys(Some(vec![str_bytes("segment.bytes")])),
        DescribeConfigsResource::default().with_resource_type(2).with_resource_name(str_bytes("never-created")),
        // A broker resource: not supported.
        DescribeConfigsResource::default().with_resource_type(4).with_resource_name(str_bytes("0")),
    ];
    let resp: DescribeConfigsResponse = try_call(conn, v, &req).await?;
    let r = &resp.results;
    ensure!(r.len() == 4, "{} results", r.len());
    ensure!(r[0].error_code == 0 && !r[0].configs.is_empty(), "all configs: {:?}", r[0].error_message);
    ensure!(r[1].error_code == 0 && r[1].configs.len() == 1, "one key: {:?}", r[1]);
    ensure!(r[2].error_code == code(ResponseError::UnknownTopicOrPartition), "absent: {:?}", r[2]);
    ensure!(r[3].error_code == code(ResponseError::InvalidRequest), "broker resource: {:?}", r[3]);
    Ok(())
}

#[tokio::test]
async fn every_advertised_version_gets_a_decodable_answer() {
    let b = TestBroker::start().await;
    let mut conn = b.connect().await;
    create_topic(&mut conn, TOPIC, 1, &[]).await;
    let (err, _) = produce(&mut conn, TOPIC, 0, batch(Compression::None, &["seed"])).await;
    assert_eq!(err, 0);

    let mut failures = Vec::new();
    let mut checked = 0;
    for &(key, min, max) in ADVERTISED {
        for v in min..=max {
            checked += 1;
            if let Err(why) = check(&b, &mut conn, key, v).await {
                failures.push(format!("{key:?} v{v}: {why}"));
                // The broker may have closed the connection; later versions
                // deserve a clean one.
                conn = b.connect().await;
            }
        }
    }
    assert!(failures.is_empty(), "{} of {checked} versions failed:\n{}", failures.len(), failures.join("\n"));
}
