//! The node core driven request by request, with no socket and no runtime:
//! frames in, steps out, time moved by hand.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::node::{Clock, Node, Output, Step};
use crate::client::batch::{encode, Compression, OutRecord};
use crate::config::BrokerConfig;
use crate::io::{real::RealFs, DiskScope};
use crate::wire::{decode_response, encode_request};

struct Harness {
    _dir: tempfile::TempDir,
    node: Node,
    clock: Clock,
    disk: DiskScope,
    corr: i32,
}

impl Harness {
    /// A node whose log fsyncs only on `flush.ms` (500 ms), so produce
    /// requests have to wait for the high watermark.
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig { data_dir: dir.path().to_path_buf(), ..BrokerConfig::default() };
        config.log.flush_messages = u64::MAX;
        config.log.flush_ms = 500;
        config.groups.offsets_topic_num_partitions = 4;
        config.groups.group_initial_rebalance_delay_ms = 0;
        let disk = DiskScope::unmetered();
        let clock = Clock { now_ms: 1_700_000_000_000, elapsed: Duration::ZERO };
        let fs = std::sync::Arc::new(RealFs);
        let node = Node::open(&disk, fs, config, ("node-0".into(), 9092), clock.now_ms, 7).unwrap();
        let mut h = Harness { _dir: dir, node, clock, disk, corr: 0 };
        let mut t = CreatableTopic::default();
        t.name = TopicName(StrBytes::from_static_str("events"));
        t.num_partitions = 2;
        t.replication_factor = 1;
        let resp: CreateTopicsResponse =
            h.answer(ApiKey::CreateTopics, 5, &CreateTopicsRequest::default().with_topics(vec![t]));
        assert_eq!(resp.topics[0].error_code, 0, "{resp:?}");
        h
    }

    /// Open the node again from its data directory, as after a restart.
    fn restart(&mut self) {
        let config = self.node.config.clone();
        let fs = std::sync::Arc::new(RealFs);
        self.node = Node::open(&self.disk, fs, config, ("node-0".into(), 9092), self.clock.now_ms, 7).unwrap();
    }

    fn advance(&mut self, ms: u64) {
        self.clock.elapsed += Duration::from_millis(ms);
        self.clock.now_ms += ms as i64;
    }

    fn frame<T: Encodable>(&mut self, key: ApiKey, version: i16, body: &T) -> Bytes {
        self.corr += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.corr)
            .with_client_id(Some(StrBytes::from_static_str("node-test")));
        let framed = encode_request(&header, body).unwrap();
        framed.slice(4..)
    }

    fn send<T: Encodable>(&mut self, key: ApiKey, version: i16, body: &T) -> Output {
        let frame = self.frame(key, version, body);
        self.node.handle(&self.disk, self.clock, frame)
    }

    /// Send a request that must be answered at once, and decode the answer.
    fn answer<Req: Encodable, Resp: Decodable>(&mut self, key: ApiKey, version: i16, body: &Req) -> Resp {
        let out = self.send(key, version, body);
        decode(out.step, key, version)
    }
}

fn decode<Resp: Decodable>(step: Step, key: ApiKey, version: i16) -> Resp {
    match step {
        Step::Reply(frame) => decode_response::<Resp>(frame.slice(4..), key, version).unwrap().1,
        Step::Silent => panic!("no reply"),
        Step::Close(why) => panic!("connection closed: {why}"),
        Step::Park(_) => panic!("the request parked"),
        Step::Await(_) => panic!("the request waits for the cluster driver"),
    }
}

fn produce_request(acks: i16, partition: i32, values: &[&str]) -> ProduceRequest {
    let records: Vec<OutRecord> = values
        .iter()
        .map(|v| OutRecord { key: None, value: Some(Bytes::from(v.to_string())), headers: vec![], timestamp: 1 })
        .collect();
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(encode(&records, Compression::None).unwrap());
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_static_str("events"));
    td.partition_data = vec![pd];
    ProduceRequest::default().with_acks(acks).with_timeout_ms(1000).with_topic_data(vec![td])
}

fn fetch_request(offset: i64, min_bytes: i32, max_wait_ms: i32) -> FetchRequest {
    let mut fp = FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = offset;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_static_str("events"));
    ft.partitions = vec![fp];
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(1 << 20)
        .with_topics(vec![ft])
}

fn latest_offset(h: &mut Harness) -> i64 {
    let mut lp = ListOffsetsPartition::default();
    lp.partition_index = 0;
    lp.timestamp = -1;
    let mut lt = ListOffsetsTopic::default();
    lt.name = TopicName(StrBytes::from_static_str("events"));
    lt.partitions = vec![lp];
    let req = ListOffsetsRequest::default().with_replica_id((-1).into()).with_topics(vec![lt]);
    let resp: ListOffsetsResponse = h.answer(ApiKey::ListOffsets, 4, &req);
    assert_eq!(resp.topics[0].partitions[0].error_code, 0);
    resp.topics[0].partitions[0].offset
}

#[test]
fn metadata_lists_the_node_and_its_partitions() {
    let mut h = Harness::new();
    let mut t = MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_static_str("events")));
    let resp: MetadataResponse = h.answer(ApiKey::Metadata, 9, &MetadataRequest::default().with_topics(Some(vec![t])));
    assert_eq!(resp.brokers.len(), 1);
    assert_eq!((resp.brokers[0].host.as_str(), resp.brokers[0].port), ("node-0", 9092));
    assert_eq!(resp.topics[0].partitions.len(), 2);
    assert!(resp.topics[0].partitions.iter().all(|p| p.leader_id.0 == 0 && p.leader_epoch == 0));
}

#[test]
fn acks_all_waits_for_the_high_watermark() {
    let mut h = Harness::new();
    let out = h.send(ApiKey::Produce, 9, &produce_request(-1, 0, &["a", "b"]));
    let Step::Park(parked) = out.step else { panic!("acks=-1 answered before the batch was durable") };
    assert!(out.wake.is_empty());
    // Appended but not fsynced: not visible to ListOffsets either.
    assert_eq!(latest_offset(&mut h), 0);
    assert!(!parked.stale());
    h.advance(600);
    let (wake, _) = h.node.tick(&h.disk, h.clock);
    assert_eq!(wake.len(), 1, "flush.ms moved the high watermark of one partition");
    assert!(parked.stale(), "the parked produce sees its partition moved");
    let resumed = h.node.resume(&h.disk, h.clock, parked);
    let resp: ProduceResponse = decode(resumed.step, ApiKey::Produce, 9);
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    assert_eq!(latest_offset(&mut h), 2);
}

#[test]
fn acks_one_is_answered_on_the_same_condition_with_one_replica() {
    let mut h = Harness::new();
    let out = h.send(ApiKey::Produce, 9, &produce_request(1, 1, &["x"]));
    let Step::Park(parked) = out.step else { panic!("acks=1 answered before the batch was durable") };
    h.advance(600);
    h.node.tick(&h.disk, h.clock);
    let resp: ProduceResponse = decode(h.node.resume(&h.disk, h.clock, parked).step, ApiKey::Produce, 9);
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
}

#[test]
fn acks_all_times_out_without_a_flush() {
    let mut h = Harness::new();
    let Step::Park(parked) = h.send(ApiKey::Produce, 9, &produce_request(-1, 0, &["a"])).step else {
        panic!("answered early")
    };
    h.advance(1001);
    let resp: ProduceResponse = decode(h.node.resume(&h.disk, h.clock, parked).step, ApiKey::Produce, 9);
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, ResponseError::RequestTimedOut.code());
}

#[test]
fn acks_zero_is_silent_and_a_failure_closes() {
    let mut h = Harness::new();
    assert!(matches!(h.send(ApiKey::Produce, 9, &produce_request(0, 0, &["a"])).step, Step::Silent));
    assert!(matches!(h.send(ApiKey::Produce, 9, &produce_request(0, 7, &["a"])).step, Step::Close(_)));
    let resp: ProduceResponse = h.answer(ApiKey::Produce, 9, &produce_request(2, 0, &["a"]));
    assert_eq!(resp.responses[0].partition_responses[0].error_code, ResponseError::InvalidRequiredAcks.code());
}

#[test]
fn fetch_long_polls_until_data_or_deadline() {
    let mut h = Harness::new();
    // Nothing to read: the fetch parks on partition 0.
    let Step::Park(parked) = h.send(ApiKey::Fetch, 12, &fetch_request(0, 1, 500)).step else {
        panic!("an empty fetch with min_bytes=1 answered at once")
    };
    assert_eq!(parked.watched().count(), 1);
    // A produce and a flush move the high watermark; the fetch completes.
    let Step::Park(produce) = h.send(ApiKey::Produce, 9, &produce_request(-1, 0, &["hello"])).step else {
        panic!("answered early")
    };
    assert!(!parked.stale(), "an append alone is below the high watermark");
    h.advance(500);
    h.node.tick(&h.disk, h.clock);
    assert!(parked.stale());
    let resp: FetchResponse = decode(h.node.resume(&h.disk, h.clock, parked).step, ApiKey::Fetch, 12);
    let pd = &resp.responses[0].partitions[0];
    assert_eq!((pd.error_code, pd.high_watermark), (0, 1));
    assert!(!pd.records.as_ref().unwrap().is_empty());
    drop(h.node.resume(&h.disk, h.clock, produce));

    // From the end, a fetch waits out its deadline and answers empty.
    let Step::Park(parked) = h.send(ApiKey::Fetch, 12, &fetch_request(1, 1, 200)).step else { panic!() };
    h.advance(100);
    let Step::Park(parked) = h.node.resume(&h.disk, h.clock, parked).step else { panic!("answered before deadline") };
    h.advance(100);
    let resp: FetchResponse = decode(h.node.resume(&h.disk, h.clock, parked).step, ApiKey::Fetch, 12);
    assert!(resp.responses[0].partitions[0].records.as_ref().unwrap().is_empty());
    // min_bytes=0 never waits.
    let _: FetchResponse = h.answer(ApiKey::Fetch, 12, &fetch_request(1, 0, 10_000));
}

#[test]
fn a_deleted_topic_wakes_and_fails_its_waiters() {
    let mut h = Harness::new();
    let Step::Park(parked) = h.send(ApiKey::Fetch, 12, &fetch_request(0, 1, 10_000)).step else { panic!() };
    let req = DeleteTopicsRequest::default().with_topic_names(vec![TopicName(StrBytes::from_static_str("events"))]);
    let resp: DeleteTopicsResponse = h.answer(ApiKey::DeleteTopics, 4, &req);
    assert_eq!(resp.responses[0].error_code, 0);
    assert!(parked.stale());
    let resp: FetchResponse = decode(h.node.resume(&h.disk, h.clock, parked).step, ApiKey::Fetch, 12);
    assert_eq!(resp.responses[0].partitions[0].error_code, ResponseError::UnknownTopicOrPartition.code());
}

#[test]
fn garbage_closes_the_connection() {
    let h = Harness::new();
    let out = h.node.handle(&h.disk, h.clock, Bytes::from_static(b"\x00\x03"));
    assert!(matches!(out.step, Step::Close(_)));
}

// ------------------------------------------------------------ consumer groups

fn join_request(member: &str) -> JoinGroupRequest {
    let mut p = kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol::default();
    p.name = StrBytes::from_static_str("range");
    p.metadata = Bytes::from_static(b"sub");
    JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(20_000)
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![p])
}

/// Join through the two-step handshake; returns the answer (or the parked request) and the member id.
fn join(h: &mut Harness) -> (Output, String) {
    let r: JoinGroupResponse = h.answer(ApiKey::JoinGroup, 9, &join_request(""));
    assert_eq!(r.error_code, ResponseError::MemberIdRequired.code());
    let id = r.member_id.to_string();
    (h.send(ApiKey::JoinGroup, 9, &join_request(&id)), id)
}

fn sync_request(member: &str, generation: i32, assignment: &[(&str, &'static [u8])]) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_generation_id(generation)
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_assignments(
            assignment
                .iter()
                .map(|(m, a)| {
                    kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_string(m.to_string()))
                        .with_assignment(Bytes::from_static(a))
                })
                .collect(),
        )
}

/// The leader's SyncGroup: it parks until the generation's record is
/// fsynced (here by `flush.ms`), then answers.
fn durable_sync(h: &mut Harness, req: &SyncGroupRequest) -> SyncGroupResponse {
    let Step::Park(parked) = h.send(ApiKey::SyncGroup, 5, req).step else {
        panic!("the leader's sync must wait for the group's record to be durable")
    };
    assert!(!parked.stale());
    h.advance(600);
    h.node.tick(&h.disk, h.clock);
    assert!(parked.stale(), "the flush moved the offsets partition's high watermark");
    decode(h.node.resume(&h.disk, h.clock, parked).step, ApiKey::SyncGroup, 5)
}

fn commit_request(member: &str, generation: i32, offset: i64) -> OffsetCommitRequest {
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    let p = OffsetCommitRequestPartition::default().with_partition_index(1).with_committed_offset(offset);
    let t = OffsetCommitRequestTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("events")))
        .with_partitions(vec![p]);
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_topics(vec![t])
}

fn fetch_committed(h: &mut Harness) -> i64 {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    let t = OffsetFetchRequestTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("events")))
        .with_partition_indexes(vec![1]);
    let req =
        OffsetFetchRequest::default().with_group_id(GroupId(StrBytes::from_static_str("g"))).with_topics(Some(vec![t]));
    let resp: OffsetFetchResponse = h.answer(ApiKey::OffsetFetch, 5, &req);
    assert_eq!(resp.error_code, 0);
    resp.topics[0].partitions[0].committed_offset
}

#[test]
fn find_coordinator_names_this_node_for_groups_and_refuses_transactions() {
    let mut h = Harness::new();
    let req = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![StrBytes::from_static_str("g"), StrBytes::from_static_str("h")]);
    let resp: FindCoordinatorResponse = h.answer(ApiKey::FindCoordinator, 4, &req);
    assert!(resp.coordinators.iter().all(|c| c.error_code == 0 && c.node_id.0 == 0 && c.port == 9092));
    assert!(h.node.topics.get("__consumer_offsets").is_some(), "created on first use");
    let req = FindCoordinatorRequest::default().with_key_type(1).with_key(StrBytes::from_static_str("txn"));
    let resp: FindCoordinatorResponse = h.answer(ApiKey::FindCoordinator, 3, &req);
    assert_eq!(resp.error_code, ResponseError::InvalidRequest.code());
    assert!(resp.error_message.unwrap().contains("transactions"));
}

#[test]
fn a_join_parks_until_the_rebalance_completes() {
    let mut h = Harness::new();
    let (out, a) = join(&mut h);
    let ra: JoinGroupResponse = decode(out.step, ApiKey::JoinGroup, 9);
    assert_eq!((ra.error_code, ra.generation_id), (0, 1));
    let sa = durable_sync(&mut h, &sync_request(&a, 1, &[(&a, b"all")]));
    assert_eq!(sa.assignment, Bytes::from_static(b"all"));
    // A second member: its join parks until `a` rejoins.
    let (out, b) = join(&mut h);
    let Step::Park(parked_b) = out.step else { panic!("the newcomer's join must wait") };
    assert!(!parked_b.stale());
    let hb = HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_generation_id(1)
        .with_member_id(StrBytes::from_string(a.clone()));
    let r: HeartbeatResponse = h.answer(ApiKey::Heartbeat, 4, &hb);
    assert_eq!(r.error_code, ResponseError::RebalanceInProgress.code());
    let out = h.send(ApiKey::JoinGroup, 9, &join_request(&a));
    assert!(out.wake.iter().any(|w| matches!(w, super::node::Wake::Group(_))), "the join woke the group");
    let ra: JoinGroupResponse = decode(out.step, ApiKey::JoinGroup, 9);
    assert!(parked_b.stale(), "b sees the group's signal moved");
    let rb: JoinGroupResponse = decode(h.node.resume(&h.disk, h.clock, parked_b).step, ApiKey::JoinGroup, 9);
    assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
    assert_eq!(rb.member_id.as_str(), b);
    // The follower's sync parks until the leader's.
    let leader = ra.leader.to_string();
    let follower = if leader == a { b.clone() } else { a.clone() };
    let Step::Park(parked) = h.send(ApiKey::SyncGroup, 5, &sync_request(&follower, 2, &[])).step else {
        panic!("follower sync must wait")
    };
    let _ = durable_sync(&mut h, &sync_request(&leader, 2, &[(&leader, b"p0"), (&follower, b"p1")]));
    assert!(parked.stale());
    let sf: SyncGroupResponse = decode(h.node.resume(&h.disk, h.clock, parked).step, ApiKey::SyncGroup, 5);
    assert_eq!((sf.error_code, sf.assignment), (0, Bytes::from_static(b"p1")));
}

#[test]
fn a_commit_is_answered_once_durable_and_survives_a_restart() {
    let mut h = Harness::new();
    let (out, a) = join(&mut h);
    let _: JoinGroupResponse = decode(out.step, ApiKey::JoinGroup, 9);
    let _ = durable_sync(&mut h, &sync_request(&a, 1, &[(&a, b"all")]));
    // A stale generation is refused at once.
    let r: OffsetCommitResponse = h.answer(ApiKey::OffsetCommit, 8, &commit_request(&a, 0, 7));
    assert_eq!(r.topics[0].partitions[0].error_code, ResponseError::IllegalGeneration.code());
    let Step::Park(parked) = h.send(ApiKey::OffsetCommit, 8, &commit_request(&a, 1, 7)).step else {
        panic!("a commit is answered only once durable")
    };
    assert_eq!(fetch_committed(&mut h), 7, "served from the append");
    h.advance(600);
    h.node.tick(&h.disk, h.clock);
    assert!(parked.stale());
    let r: OffsetCommitResponse = decode(h.node.resume(&h.disk, h.clock, parked).step, ApiKey::OffsetCommit, 8);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    h.restart();
    assert_eq!(fetch_committed(&mut h), 7);
    let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_static_str("g"))]);
    let d: DescribeGroupsResponse = h.answer(ApiKey::DescribeGroups, 5, &req);
    assert_eq!(d.groups[0].group_state.as_str(), "Stable");
    assert_eq!(d.groups[0].members.len(), 1);
    assert_eq!(d.groups[0].members[0].member_assignment, Bytes::from_static(b"all"));
    let l: ListGroupsResponse = h.answer(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    assert_eq!(l.groups.len(), 1);
    // The member is gone once its session lapses; then the group can be deleted.
    h.advance(11_000);
    h.node.tick(&h.disk, h.clock);
    let req = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(StrBytes::from_static_str("g"))]);
    let Step::Park(parked) = h.send(ApiKey::DeleteGroups, 2, &req).step else {
        panic!("a deletion is answered only once durable")
    };
    assert_eq!(fetch_committed(&mut h), -1);
    h.advance(600);
    h.node.tick(&h.disk, h.clock);
    let r: DeleteGroupsResponse = decode(h.node.resume(&h.disk, h.clock, parked).step, ApiKey::DeleteGroups, 2);
    assert_eq!(r.results[0].error_code, 0);
    h.restart();
    assert_eq!(fetch_committed(&mut h), -1, "the deletion is durable too");
}

#[test]
fn clients_cannot_write_to_the_offsets_topic() {
    let mut h = Harness::new();
    let _: FindCoordinatorResponse = h.answer(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g")),
    );
    let mut req = produce_request(-1, 0, &["x"]);
    req.topic_data[0].name = TopicName(StrBytes::from_static_str("__consumer_offsets"));
    let resp: ProduceResponse = h.answer(ApiKey::Produce, 9, &req);
    assert_eq!(resp.responses[0].partition_responses[0].error_code, ResponseError::InvalidTopicException.code());
}
