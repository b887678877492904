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
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, Request, StrBytes};
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
        ApiKey::OffsetForLeaderEpoch => offset_for_leader_epoch_at(conn, v).await,
        ApiKey::Metadata => metadata_at(conn, v).await,
        ApiKey::FindCoordinator => find_coordinator_at(conn, v).await,
        ApiKey::ApiVersions => api_versions_at(conn, v).await,
        ApiKey::CreateTopics => create_topics_at(conn, v).await,
        ApiKey::DeleteTopics => delete_topics_at(conn, v).await,
        ApiKey::InitProducerId => init_producer_id_at(conn, v).await,
        ApiKey::DescribeConfigs => describe_configs_at(conn, v).await,
        ApiKey::JoinGroup => join_group_at(conn, v).await,
        ApiKey::SyncGroup => sync_group_at(conn, v).await,
        ApiKey::Heartbeat => heartbeat_at(conn, v).await,
        ApiKey::LeaveGroup => leave_group_at(conn, v).await,
        ApiKey::OffsetCommit => offset_commit_at(conn, v).await,
        ApiKey::OffsetFetch => offset_fetch_at(conn, v).await,
        ApiKey::ListGroups => list_groups_at(conn, v).await,
        ApiKey::DescribeGroups => describe_groups_at(conn, v).await,
        ApiKey::DeleteGroups => delete_groups_at(conn, v).await,
        ApiKey::OffsetDelete => offset_delete_at(conn, v).await,
        ApiKey::Vote => not_routed_at::<VoteRequest>(conn, v, |r| r.error_code).await,
        ApiKey::BeginQuorumEpoch => not_routed_at::<BeginQuorumEpochRequest>(conn, v, |r| r.error_code).await,
        ApiKey::EndQuorumEpoch => not_routed_at::<EndQuorumEpochRequest>(conn, v, |r| r.error_code).await,
        ApiKey::DescribeQuorum => not_routed_at::<DescribeQuorumRequest>(conn, v, |r| r.error_code).await,
        ApiKey::FetchSnapshot => not_routed_at::<FetchSnapshotRequest>(conn, v, |r| r.error_code).await,
        ApiKey::BrokerRegistration => not_routed_at::<BrokerRegistrationRequest>(conn, v, |r| r.error_code).await,
        ApiKey::BrokerHeartbeat => not_routed_at::<BrokerHeartbeatRequest>(conn, v, |r| r.error_code).await,
        ApiKey::UnregisterBroker => not_routed_at::<UnregisterBrokerRequest>(conn, v, |r| r.error_code).await,
        ApiKey::AlterPartition => not_routed_at::<AlterPartitionRequest>(conn, v, |r| r.error_code).await,
        ApiKey::AllocateProducerIds => not_routed_at::<AllocateProducerIdsRequest>(conn, v, |r| r.error_code).await,
        ApiKey::ElectLeaders => elect_leaders_at(conn, v).await,
        ApiKey::ConsumerGroupHeartbeat => consumer_group_heartbeat_at(conn, v).await,
        ApiKey::ConsumerGroupDescribe => consumer_group_describe_at(conn, v).await,
        other => panic!("{other:?} is advertised but this test has no request builder for it; add one"),
    }
}

/// An inner-cluster API the node does not route yet: answered, at every
/// version, with NOT_CONTROLLER in the body.
async fn not_routed_at<R: Request + Default>(
    conn: &mut Conn,
    v: i16,
    error_code: impl Fn(&R::Response) -> i16,
) -> Result<(), String> {
    let resp = try_call(conn, v, &R::default()).await?;
    ensure!(error_code(&resp) == code(ResponseError::NotController), "error {}", error_code(&resp));
    Ok(())
}

#[tokio::test]
async fn api_versions_lists_the_inner_cluster_apis() {
    let b = TestBroker::start().await;
    let mut conn = b.connect().await;
    let resp: ApiVersionsResponse = conn.call(3, &ApiVersionsRequest::default()).await;
    let listed =
        |key: ApiKey| resp.api_keys.iter().find(|k| k.api_key == key as i16).map(|k| (k.min_version, k.max_version));
    for (key, range) in [
        (ApiKey::Vote, (0, 2)),
        (ApiKey::BeginQuorumEpoch, (0, 1)),
        (ApiKey::EndQuorumEpoch, (0, 1)),
        (ApiKey::DescribeQuorum, (0, 2)),
        (ApiKey::FetchSnapshot, (0, 1)),
        (ApiKey::BrokerRegistration, (0, 4)),
        (ApiKey::BrokerHeartbeat, (0, 1)),
        (ApiKey::UnregisterBroker, (0, 0)),
        (ApiKey::Fetch, (4, 12)),
        (ApiKey::CreateTopics, (2, 7)),
        (ApiKey::DeleteTopics, (1, 6)),
    ] {
        assert_eq!(listed(key), Some(range), "{key:?}");
    }
    for &key in wire::CLUSTER_APIS {
        assert!(listed(key).is_some(), "{key:?}");
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

async fn offset_for_leader_epoch_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
    use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
    let partition = |index: i32, epoch: i32| {
        OffsetForLeaderPartition::default().with_partition(index).with_current_leader_epoch(-1).with_leader_epoch(epoch)
    };
    let mut req = OffsetForLeaderEpochRequest::default();
    req.replica_id = kafka_protocol::messages::BrokerId(-1);
    req.topics = vec![OffsetForLeaderTopic::default()
        .with_topic(name(TOPIC))
        .with_partitions(vec![partition(0, 0), partition(7, 0)])];
    let resp: OffsetForLeaderEpochResponse = try_call(conn, v, &req).await?;
    let parts = &resp.topics[0].partitions;
    ensure!(parts.len() == 2, "{} partition responses", parts.len());
    // The single broker's log is written in epoch 0 and ends past offset 0.
    ensure!(parts[0].error_code == 0 && parts[0].leader_epoch == 0 && parts[0].end_offset >= 1, "{:?}", parts[0]);
    ensure!(parts[1].error_code == code(ResponseError::UnknownTopicOrPartition), "partition 7: {:?}", parts[1]);
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
    // This broker coordinates every group itself, per key from v4.
    if v >= 4 {
        let c = resp.coordinators.first();
        ensure!(resp.coordinators.len() == 1, "{:?}", resp.coordinators);
        ensure!(c.is_some_and(|c| c.error_code == 0 && c.node_id.0 >= 0 && c.port > 0), "{c:?}");
    } else {
        ensure!(resp.error_code == 0 && resp.node_id.0 >= 0 && resp.port > 0, "group: {resp:?}");
    }
    if v >= 1 {
        // Key type 1 (transactions, from v1) is refused: not built.
        req.key_type = 1;
        let resp: FindCoordinatorResponse = try_call(conn, v, &req).await?;
        let err = code(ResponseError::InvalidRequest);
        if v >= 4 {
            ensure!(resp.coordinators.len() == 1 && resp.coordinators[0].error_code == err, "{:?}", resp.coordinators);
        } else {
            ensure!(resp.error_code == err, "transaction: {resp:?}");
        }
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

// ------------------------------------------------------------ consumer groups
//
// Each version works on groups of its own (`<api>-v<version>`), so one
// version's state never answers for another's. The helpers set groups up at
// fixed versions; the builders send the API under test at `v`.

const PROTOCOL_TYPE: &str = "consumer";
const PROTOCOL: &str = "range";
const SESSION_MS: i32 = 10_000;

fn group(g: &str) -> GroupId {
    GroupId(str_bytes(g))
}

fn join_request(g: &str, member_id: &str) -> JoinGroupRequest {
    let mut req = JoinGroupRequest::default();
    req.group_id = group(g);
    req.session_timeout_ms = SESSION_MS;
    req.rebalance_timeout_ms = SESSION_MS;
    req.member_id = str_bytes(member_id);
    req.protocol_type = str_bytes(PROTOCOL_TYPE);
    req.protocols = vec![JoinGroupRequestProtocol::default()
        .with_name(str_bytes(PROTOCOL))
        .with_metadata(bytes::Bytes::from_static(b"meta"))];
    req
}

/// Join `g` as its only member at JoinGroup `v`: from v4 the first join
/// without a member id answers MEMBER_ID_REQUIRED with the id to join with.
async fn join_at(conn: &mut Conn, v: i16, g: &str) -> Result<JoinGroupResponse, String> {
    let mut member_id = String::new();
    if v >= 4 {
        let first: JoinGroupResponse = try_call(conn, v, &join_request(g, "")).await?;
        ensure!(first.error_code == code(ResponseError::MemberIdRequired), "first join: {first:?}");
        ensure!(!first.member_id.is_empty(), "first join gave no member id");
        member_id = first.member_id.to_string();
    }
    let resp: JoinGroupResponse = try_call(conn, v, &join_request(g, &member_id)).await?;
    ensure!(resp.error_code == 0, "join: {resp:?}");
    Ok(resp)
}

/// Join `g` and sync (at fixed versions): the group is Stable with one
/// member. Returns (member id, generation).
async fn stable_member(conn: &mut Conn, g: &str) -> Result<(String, i32), String> {
    let joined = join_at(conn, 5, g).await?;
    let member_id = joined.member_id.to_string();
    let mut req = SyncGroupRequest::default();
    req.group_id = group(g);
    req.generation_id = joined.generation_id;
    req.member_id = str_bytes(&member_id);
    req.assignments = vec![SyncGroupRequestAssignment::default()
        .with_member_id(str_bytes(&member_id))
        .with_assignment(bytes::Bytes::from_static(b"assigned"))];
    let synced: SyncGroupResponse = try_call(conn, 3, &req).await?;
    ensure!(synced.error_code == 0, "setup sync: {synced:?}");
    Ok((member_id, joined.generation_id))
}

fn commit_request(g: &str, offsets: &[(i32, i64)]) -> OffsetCommitRequest {
    let mut req = OffsetCommitRequest::default();
    req.group_id = group(g);
    req.generation_id_or_member_epoch = -1;
    req.topics = vec![OffsetCommitRequestTopic::default().with_name(name(TOPIC)).with_partitions(
        offsets
            .iter()
            .map(|&(p, o)| {
                OffsetCommitRequestPartition::default()
                    .with_partition_index(p)
                    .with_committed_offset(o)
                    .with_committed_metadata(Some(str_bytes("meta")))
            })
            .collect(),
    )];
    req
}

/// A "simple" commit (no generation, no member) of partition 0 at `offset`:
/// creates `g` as an Empty group holding an offset.
async fn commit_simple(conn: &mut Conn, g: &str, offset: i64) -> Result<(), String> {
    let resp: OffsetCommitResponse = try_call(conn, 2, &commit_request(g, &[(0, offset)])).await?;
    let e = resp.topics.first().and_then(|t| t.partitions.first()).map(|p| p.error_code);
    ensure!(e == Some(0), "setup commit: {resp:?}");
    Ok(())
}

/// The committed offset of `TOPIC` partition 0 in `g` (-1 if none), at a fixed version.
async fn committed(conn: &mut Conn, g: &str) -> Result<i64, String> {
    let mut req = OffsetFetchRequest::default();
    req.group_id = group(g);
    req.topics = Some(vec![OffsetFetchRequestTopic::default().with_name(name(TOPIC)).with_partition_indexes(vec![0])]);
    let resp: OffsetFetchResponse = try_call(conn, 5, &req).await?;
    ensure!(resp.error_code == 0, "setup fetch: {resp:?}");
    resp.topics
        .first()
        .and_then(|t| t.partitions.first())
        .map(|p| p.committed_offset)
        .ok_or_else(|| format!("setup fetch: {resp:?}"))
}

async fn join_group_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let g = format!("join-v{v}");
    let resp = join_at(conn, v, &g).await?;
    ensure!(resp.generation_id >= 1, "generation {}", resp.generation_id);
    ensure!(resp.leader == resp.member_id, "leader {} member {}", resp.leader, resp.member_id);
    ensure!(resp.protocol_name.as_deref() == Some(PROTOCOL), "protocol {:?}", resp.protocol_name);
    ensure!(resp.members.len() == 1 && resp.members[0].member_id == resp.member_id, "members {:?}", resp.members);
    ensure!(resp.members[0].metadata.as_ref() == b"meta", "metadata {:?}", resp.members[0].metadata);
    if v >= 7 {
        ensure!(resp.protocol_type.as_deref() == Some(PROTOCOL_TYPE), "protocol type {:?}", resp.protocol_type);
    }
    // The error paths: a member id the group never gave out, and a session
    // timeout below group.min.session.timeout.ms.
    let resp: JoinGroupResponse = try_call(conn, v, &join_request(&g, "stranger")).await?;
    ensure!(resp.error_code == code(ResponseError::UnknownMemberId), "stranger: {resp:?}");
    let mut req = join_request(&format!("join-short-v{v}"), "");
    req.session_timeout_ms = 1;
    let resp: JoinGroupResponse = try_call(conn, v, &req).await?;
    ensure!(resp.error_code == code(ResponseError::InvalidSessionTimeout), "short session: {resp:?}");
    Ok(())
}

async fn sync_group_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let g = format!("sync-v{v}");
    let joined = join_at(conn, 5, &g).await?;
    let mut req = SyncGroupRequest::default();
    req.group_id = group(&g);
    req.generation_id = joined.generation_id + 1;
    req.member_id = joined.member_id.clone();
    if v >= 5 {
        req.protocol_type = Some(str_bytes(PROTOCOL_TYPE));
        req.protocol_name = Some(str_bytes(PROTOCOL));
    }
    req.assignments = vec![SyncGroupRequestAssignment::default()
        .with_member_id(joined.member_id.clone())
        .with_assignment(bytes::Bytes::from_static(b"assigned"))];
    let resp: SyncGroupResponse = try_call(conn, v, &req).await?;
    ensure!(resp.error_code == code(ResponseError::IllegalGeneration), "wrong generation: {resp:?}");
    req.generation_id = joined.generation_id;
    let resp: SyncGroupResponse = try_call(conn, v, &req).await?;
    ensure!(resp.error_code == 0 && resp.assignment.as_ref() == b"assigned", "sync: {resp:?}");
    if v >= 5 {
        ensure!(resp.protocol_type.as_deref() == Some(PROTOCOL_TYPE), "protocol type {:?}", resp.protocol_type);
        ensure!(resp.protocol_name.as_deref() == Some(PROTOCOL), "protocol {:?}", resp.protocol_name);
    }
    Ok(())
}

async fn heartbeat_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let g = format!("heartbeat-v{v}");
    let (member_id, generation) = stable_member(conn, &g).await?;
    let mut req = HeartbeatRequest::default();
    req.group_id = group(&g);
    req.generation_id = generation;
    req.member_id = str_bytes(&member_id);
    let resp: HeartbeatResponse = try_call(conn, v, &req).await?;
    ensure!(resp.error_code == 0, "heartbeat: {resp:?}");
    req.generation_id = generation + 1;
    let resp: HeartbeatResponse = try_call(conn, v, &req).await?;
    ensure!(resp.error_code == code(ResponseError::IllegalGeneration), "wrong generation: {resp:?}");
    req.generation_id = generation;
    req.member_id = str_bytes("stranger");
    let resp: HeartbeatResponse = try_call(conn, v, &req).await?;
    ensure!(resp.error_code == code(ResponseError::UnknownMemberId), "stranger: {resp:?}");
    Ok(())
}

async fn leave_group_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let g = format!("leave-v{v}");
    let (member_id, _) = stable_member(conn, &g).await?;
    let mut req = LeaveGroupRequest::default();
    req.group_id = group(&g);
    // One member per request before v3; a batch of them, each answered, from v3.
    if v >= 3 {
        req.members = [member_id.as_str(), "stranger"]
            .iter()
            .map(|m| MemberIdentity::default().with_member_id(str_bytes(m)))
            .collect();
        let resp: LeaveGroupResponse = try_call(conn, v, &req).await?;
        ensure!(resp.error_code == 0 && resp.members.len() == 2, "leave: {resp:?}");
        ensure!(resp.members[0].member_id.as_str() == member_id && resp.members[0].error_code == 0, "member: {resp:?}");
        ensure!(resp.members[1].error_code == code(ResponseError::UnknownMemberId), "stranger: {resp:?}");
    } else {
        req.member_id = str_bytes(&member_id);
        let resp: LeaveGroupResponse = try_call(conn, v, &req).await?;
        ensure!(resp.error_code == 0, "leave: {resp:?}");
        let resp: LeaveGroupResponse = try_call(conn, v, &req).await?;
        ensure!(resp.error_code == code(ResponseError::UnknownMemberId), "left twice: {resp:?}");
    }
    Ok(())
}

async fn offset_commit_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let g = format!("commit-v{v}");
    // A simple commit: partition 7 does not exist.
    let resp: OffsetCommitResponse = try_call(conn, v, &commit_request(&g, &[(0, 1), (7, 1)])).await?;
    let parts = &resp.topics[0].partitions;
    ensure!(parts.len() == 2, "{} partition responses", parts.len());
    ensure!(parts[0].error_code == 0, "partition 0: {:?}", parts[0]);
    ensure!(parts[1].error_code == code(ResponseError::UnknownTopicOrPartition), "partition 7: {:?}", parts[1]);
    ensure!(committed(conn, &g).await? == 1, "simple commit not stored");
    // A member's commit, then one with a stale generation.
    let member_group = format!("commit-member-v{v}");
    let (member_id, generation) = stable_member(conn, &member_group).await?;
    let mut req = commit_request(&member_group, &[(0, 2)]);
    req.generation_id_or_member_epoch = generation;
    req.member_id = str_bytes(&member_id);
    let resp: OffsetCommitResponse = try_call(conn, v, &req).await?;
    ensure!(resp.topics[0].partitions[0].error_code == 0, "member commit: {resp:?}");
    ensure!(committed(conn, &member_group).await? == 2, "member commit not stored");
    req.generation_id_or_member_epoch = generation + 1;
    let resp: OffsetCommitResponse = try_call(conn, v, &req).await?;
    ensure!(
        resp.topics[0].partitions[0].error_code == code(ResponseError::IllegalGeneration),
        "stale generation: {resp:?}"
    );
    Ok(())
}

async fn offset_fetch_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let g = format!("fetch-v{v}");
    commit_simple(conn, &g, 42).await?;
    let mut req = OffsetFetchRequest::default();
    // Groups moved into `groups` (several per request) at v8.
    if v >= 8 {
        req.groups = [g.as_str(), "never-committed"]
            .iter()
            .map(|id| {
                OffsetFetchRequestGroup::default().with_group_id(group(id)).with_topics(Some(vec![
                    OffsetFetchRequestTopics::default().with_name(name(TOPIC)).with_partition_indexes(vec![0, 7]),
                ]))
            })
            .collect();
        let resp: OffsetFetchResponse = try_call(conn, v, &req).await?;
        ensure!(resp.groups.len() == 2, "{} groups", resp.groups.len());
        for (rg, want) in resp.groups.iter().zip([42, -1]) {
            ensure!(rg.error_code == 0 && rg.topics.len() == 1, "group {}: {rg:?}", rg.group_id.0);
            let parts = &rg.topics[0].partitions;
            ensure!(parts.len() == 2, "group {}: {parts:?}", rg.group_id.0);
            ensure!(parts[0].partition_index == 0 && parts[0].committed_offset == want, "{}: {parts:?}", rg.group_id.0);
            ensure!(parts[1].committed_offset == -1, "{} partition 7: {parts:?}", rg.group_id.0);
        }
        ensure!(is_committed_metadata(&resp.groups[0].topics[0].partitions[0].metadata), "metadata lost: {resp:?}");
        return Ok(());
    }
    req.group_id = group(&g);
    req.topics =
        Some(vec![OffsetFetchRequestTopic::default().with_name(name(TOPIC)).with_partition_indexes(vec![0, 7])]);
    let resp: OffsetFetchResponse = try_call(conn, v, &req).await?;
    ensure!(resp.error_code == 0 && resp.topics.len() == 1, "fetch: {resp:?}");
    let parts = &resp.topics[0].partitions;
    ensure!(parts.len() == 2, "{} partition responses", parts.len());
    ensure!(parts[0].error_code == 0 && parts[0].committed_offset == 42, "partition 0: {:?}", parts[0]);
    ensure!(is_committed_metadata(&parts[0].metadata), "metadata lost: {:?}", parts[0]);
    ensure!(parts[1].committed_offset == -1, "partition 7: {:?}", parts[1]);
    if v >= 2 {
        // Null topics: everything the group committed (from v2).
        req.topics = None;
        let resp: OffsetFetchResponse = try_call(conn, v, &req).await?;
        let all: Vec<_> = resp
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, p.committed_offset)))
            .collect();
        ensure!(resp.error_code == 0 && all == [(0, 42)], "all offsets: {resp:?}");
    }
    Ok(())
}

fn is_committed_metadata(m: &Option<StrBytes>) -> bool {
    m.as_deref() == Some("meta")
}

async fn list_groups_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let g = format!("list-v{v}");
    commit_simple(conn, &g, 1).await?;
    let mut req = ListGroupsRequest::default();
    let resp: ListGroupsResponse = try_call(conn, v, &req).await?;
    let listed = |resp: &ListGroupsResponse| resp.groups.iter().find(|l| l.group_id.0.as_str() == g).cloned();
    ensure!(resp.error_code == 0, "error {}", resp.error_code);
    let l = listed(&resp);
    ensure!(l.is_some(), "{g} not listed: {:?}", resp.groups);
    if v >= 4 {
        ensure!(l.is_some_and(|l| l.group_state.as_str() == "Empty"), "state: {:?}", listed(&resp));
        // States filter (v4+): the group is Empty, not Stable.
        req.states_filter = vec![str_bytes("Stable")];
        let resp: ListGroupsResponse = try_call(conn, v, &req).await?;
        ensure!(resp.error_code == 0 && listed(&resp).is_none(), "Stable filter: {:?}", resp.groups);
        req.states_filter = vec![str_bytes("Empty")];
        let resp: ListGroupsResponse = try_call(conn, v, &req).await?;
        ensure!(resp.error_code == 0 && listed(&resp).is_some(), "Empty filter: {:?}", resp.groups);
    }
    if v >= 5 {
        req.states_filter = Vec::new();
        req.types_filter = vec![str_bytes("classic")];
        let resp: ListGroupsResponse = try_call(conn, v, &req).await?;
        ensure!(listed(&resp).is_some_and(|l| l.group_type.as_str() == "classic"), "classic filter: {:?}", resp.groups);
        req.types_filter = vec![str_bytes("consumer")];
        let resp: ListGroupsResponse = try_call(conn, v, &req).await?;
        ensure!(resp.error_code == 0 && resp.groups.is_empty(), "consumer filter: {:?}", resp.groups);
    }
    Ok(())
}

async fn describe_groups_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let g = format!("describe-v{v}");
    let (member_id, _) = stable_member(conn, &g).await?;
    let mut req = DescribeGroupsRequest::default();
    req.groups = vec![group(&g), group("never-existed")];
    req.include_authorized_operations = v >= 3;
    let resp: DescribeGroupsResponse = try_call(conn, v, &req).await?;
    ensure!(resp.groups.len() == 2, "{} groups", resp.groups.len());
    let d = &resp.groups[0];
    ensure!(d.error_code == 0 && d.group_state.as_str() == "Stable", "group: {d:?}");
    ensure!(d.protocol_type.as_str() == PROTOCOL_TYPE && d.protocol_data.as_str() == PROTOCOL, "protocol: {d:?}");
    ensure!(d.members.len() == 1 && d.members[0].member_id.as_str() == member_id, "members: {:?}", d.members);
    ensure!(d.members[0].member_assignment.as_ref() == b"assigned", "assignment: {:?}", d.members[0]);
    let absent = &resp.groups[1];
    ensure!(absent.error_code == 0 && absent.group_state.as_str() == "Dead", "absent: {absent:?}");
    Ok(())
}

async fn delete_groups_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let empty = format!("delete-v{v}");
    commit_simple(conn, &empty, 1).await?;
    let busy = format!("delete-busy-v{v}");
    stable_member(conn, &busy).await?;
    let mut req = DeleteGroupsRequest::default();
    req.groups_names = vec![group(&empty), group(&busy), group("never-existed")];
    let resp: DeleteGroupsResponse = try_call(conn, v, &req).await?;
    let r = &resp.results;
    ensure!(r.len() == 3, "{} results", r.len());
    ensure!(r[0].group_id.0.as_str() == empty && r[0].error_code == 0, "empty: {:?}", r[0]);
    ensure!(r[1].error_code == code(ResponseError::NonEmptyGroup), "busy: {:?}", r[1]);
    ensure!(r[2].error_code == code(ResponseError::GroupIdNotFound), "absent: {:?}", r[2]);
    ensure!(committed(conn, &empty).await? == -1, "deleted group's offset still served");
    Ok(())
}

/// A single broker leads every partition it has: ElectLeaders has nothing to do.
async fn elect_leaders_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let req = ElectLeadersRequest::default().with_election_type(0).with_topic_partitions(Some(vec![
        TopicPartitions::default().with_topic(name(TOPIC)).with_partitions(vec![0, 99]),
    ]));
    let resp: ElectLeadersResponse = try_call(conn, v, &req).await?;
    ensure!(resp.error_code == 0, "error {}", resp.error_code);
    let r = &resp.replica_election_results;
    ensure!(r.len() == 1 && r[0].partition_result.len() == 2, "{resp:?}");
    let codes: Vec<i16> = r[0].partition_result.iter().map(|p| p.error_code).collect();
    ensure!(
        codes == [code(ResponseError::ElectionNotNeeded), code(ResponseError::UnknownTopicOrPartition)],
        "{codes:?}"
    );
    let all: ElectLeadersResponse = try_call(conn, v, &ElectLeadersRequest::default().with_election_type(1)).await?;
    ensure!(all.error_code == 0 && all.replica_election_results.is_empty(), "{all:?}");
    Ok(())
}

async fn offset_delete_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let g = format!("offset-delete-v{v}");
    commit_simple(conn, &g, 5).await?;
    let mut req = OffsetDeleteRequest::default();
    req.group_id = group(&g);
    req.topics = vec![OffsetDeleteRequestTopic::default()
        .with_name(name(TOPIC))
        .with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(0)])];
    let resp: OffsetDeleteResponse = try_call(conn, v, &req).await?;
    ensure!(resp.error_code == 0 && resp.topics.len() == 1, "delete: {resp:?}");
    let parts = &resp.topics[0].partitions;
    ensure!(parts.len() == 1 && parts[0].partition_index == 0 && parts[0].error_code == 0, "partition 0: {parts:?}");
    ensure!(committed(conn, &g).await? == -1, "deleted offset still served");
    req.group_id = group("never-existed");
    let resp: OffsetDeleteResponse = try_call(conn, v, &req).await?;
    ensure!(resp.error_code == code(ResponseError::GroupIdNotFound), "absent group: {resp:?}");
    Ok(())
}

/// A KIP-848 member joins `g` (member epoch 0) subscribed to the test topic.
async fn consumer_join(conn: &mut Conn, v: i16, g: &str) -> Result<ConsumerGroupHeartbeatResponse, String> {
    let mut req = ConsumerGroupHeartbeatRequest::default();
    req.group_id = group(g);
    // v0: the coordinator names the member; from v1 the member names itself.
    req.member_id = if v >= 1 { str_bytes(&format!("{g}-member")) } else { str_bytes("") };
    req.member_epoch = 0;
    req.rebalance_timeout_ms = 30_000;
    req.subscribed_topic_names = Some(vec![name(TOPIC)]);
    req.topic_partitions = Some(Vec::new());
    let resp: ConsumerGroupHeartbeatResponse = try_call(conn, v, &req).await?;
    ensure!(resp.error_code == 0, "join: {resp:?}");
    Ok(resp)
}

async fn consumer_group_heartbeat_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let g = format!("kip848-v{v}");
    let resp = consumer_join(conn, v, &g).await?;
    let member_id = resp.member_id.clone().unwrap_or_default();
    ensure!(!member_id.is_empty() && resp.member_epoch > 0, "join: {resp:?}");
    ensure!(resp.heartbeat_interval_ms == 5_000, "heartbeat interval: {resp:?}");
    let a = resp.assignment.as_ref().map(|a| a.topic_partitions.clone()).unwrap_or_default();
    ensure!(a.len() == 1 && a[0].partitions == [0], "the only member gets the only partition: {resp:?}");
    // A wrong epoch is fenced.
    let mut req = ConsumerGroupHeartbeatRequest::default();
    req.group_id = group(&g);
    req.member_id = member_id.clone();
    req.member_epoch = resp.member_epoch + 7;
    req.rebalance_timeout_ms = -1;
    let fenced: ConsumerGroupHeartbeatResponse = try_call(conn, v, &req).await?;
    ensure!(fenced.error_code == code(ResponseError::FencedMemberEpoch), "wrong epoch: {fenced:?}");
    // Commits carry the member epoch (OffsetCommit v9).
    let mut commit = commit_request(&g, &[(0, 3)]);
    commit.member_id = member_id.clone();
    commit.generation_id_or_member_epoch = resp.member_epoch;
    let r: OffsetCommitResponse = try_call(conn, 9, &commit).await?;
    ensure!(r.topics[0].partitions[0].error_code == 0, "commit at the member epoch: {r:?}");
    commit.generation_id_or_member_epoch = resp.member_epoch - 1;
    let r: OffsetCommitResponse = try_call(conn, 9, &commit).await?;
    ensure!(
        r.topics[0].partitions[0].error_code == code(ResponseError::StaleMemberEpoch),
        "commit at a stale epoch: {r:?}"
    );
    // A classic member cannot join a consumer group in use.
    let join: JoinGroupResponse = try_call(conn, 5, &join_request(&g, "")).await?;
    ensure!(join.error_code == code(ResponseError::InconsistentGroupProtocol), "classic join: {join:?}");
    // The member leaves.
    req.member_epoch = -1;
    let left: ConsumerGroupHeartbeatResponse = try_call(conn, v, &req).await?;
    ensure!(left.error_code == 0 && left.member_epoch == -1, "leave: {left:?}");
    if v >= 1 {
        // Subscription by regex (v1).
        let mut req = ConsumerGroupHeartbeatRequest::default();
        req.group_id = group(&format!("{g}-regex"));
        req.member_id = str_bytes("regex-member");
        req.rebalance_timeout_ms = 30_000;
        req.subscribed_topic_regex = Some(str_bytes("vers.*"));
        req.topic_partitions = Some(Vec::new());
        let r: ConsumerGroupHeartbeatResponse = try_call(conn, v, &req).await?;
        let a = r.assignment.as_ref().map(|a| a.topic_partitions.len()).unwrap_or(0);
        ensure!(r.error_code == 0 && a == 1, "regex subscription: {r:?}");
    }
    Ok(())
}

async fn consumer_group_describe_at(conn: &mut Conn, v: i16) -> Result<(), String> {
    let g = format!("kip848-describe-v{v}");
    let joined = consumer_join(conn, 1, &g).await?;
    let mut req = ConsumerGroupDescribeRequest::default();
    req.group_ids = vec![group(&g), group("never-existed")];
    let resp: ConsumerGroupDescribeResponse = try_call(conn, v, &req).await?;
    ensure!(resp.groups.len() == 2, "{} groups", resp.groups.len());
    let d = &resp.groups[0];
    ensure!(d.error_code == 0 && d.group_state.as_str() == "Stable", "group: {d:?}");
    ensure!(d.group_epoch > 0 && d.assignment_epoch == d.group_epoch && d.assignor_name.as_str() == "uniform", "{d:?}");
    ensure!(d.members.len() == 1, "members: {:?}", d.members);
    let m = &d.members[0];
    ensure!(Some(&m.member_id) == joined.member_id.as_ref() && m.member_epoch == joined.member_epoch, "member: {m:?}");
    let tp = &m.assignment.topic_partitions;
    ensure!(tp.len() == 1 && tp[0].topic_name.0.as_str() == TOPIC && tp[0].partitions == [0], "assignment: {m:?}");
    ensure!(m.target_assignment == m.assignment, "target: {m:?}");
    ensure!(resp.groups[1].error_code == code(ResponseError::GroupIdNotFound), "absent: {:?}", resp.groups[1]);
    Ok(())
}

#[tokio::test]
async fn every_advertised_version_gets_a_decodable_answer() {
    // No initial rebalance delay: every group-API version joins a group of its own.
    let b = TestBroker::start_with(|c| c.groups.group_initial_rebalance_delay_ms = 0).await;
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
