//! Timelines of the active controller against a stand-in for the quorum: a
//! log that numbers proposed records and commits them when told.

use super::*;
use kafka_protocol::messages::broker_registration_request::Listener;
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::BrokerId;
use proptest::prelude::*;

use crate::server::topics::MAX_PARTITIONS;

const SESSION: i64 = 9000;
const OK: i16 = 0;

/// One controller over a log: proposals get the next offsets and commit on `commit`.
struct Harness {
    ctl: QuorumController,
    log: Vec<(i64, MetadataRecord)>,
    committed: usize,
    next_offset: i64,
    now: i64,
}

fn config() -> ControllerConfig {
    config_from(BrokerConfig::default())
}

/// The controller's config from a broker config with node id 100 and
/// `num.partitions` 3 (the rebalance off: tests that want it set it).
fn config_from(b: BrokerConfig) -> ControllerConfig {
    let mut c = ControllerConfig::from_broker_config(&BrokerConfig { node_id: 100, num_partitions: 3, ..b });
    c.session_timeout_ms = SESSION;
    c.leader_rebalance_interval_ms = None;
    c
}

impl Harness {
    fn new() -> Harness {
        Harness::with_config(config())
    }

    fn with_config(c: ControllerConfig) -> Harness {
        let mut h = Harness { ctl: QuorumController::new(c, 7), log: vec![], committed: 0, next_offset: 0, now: 1_000 };
        // The quorum's leader-change control record takes offset 0.
        h.next_offset = 1;
        let r = h.ctl.activate(h.next_offset, h.now);
        h.propose(r);
        h.commit();
        h
    }

    /// Append a result's records to the log as the quorum would.
    fn propose<R>(&mut self, r: ControllerResult<R>) -> (Option<i64>, R) {
        if let Some(next) = self.ctl.next_offset() {
            assert_eq!(
                next,
                self.next_offset + r.records.len() as i64,
                "the controller numbered its records from our log end"
            );
        }
        for rec in r.records {
            // Every record goes through the byte format, as the quorum carries it.
            let decoded = MetadataRecord::decode(&rec.encode()).unwrap();
            self.log.push((self.next_offset, decoded));
            self.next_offset += 1;
        }
        if let Some(c) = r.commit_offset {
            assert!(c < self.next_offset, "commit offset {c} beyond the log end {}", self.next_offset);
        }
        (r.commit_offset, r.response)
    }

    fn commit(&mut self) {
        while self.committed < self.log.len() {
            let (offset, rec) = self.log[self.committed].clone();
            self.ctl.replay(offset, &rec).unwrap();
            self.committed += 1;
        }
    }

    /// Propose, commit, and hand back the response (which must have waited for the commit).
    fn run<R>(&mut self, r: ControllerResult<R>) -> R {
        let (_, resp) = self.propose(r);
        self.commit();
        resp
    }

    fn image(&self) -> &MetadataImage {
        self.ctl.image()
    }

    fn register(&mut self, node: i32, incarnation: u128) -> BrokerRegistrationResponse {
        let req = registration(node, incarnation);
        let r = self.ctl.register_broker(&req, self.now);
        self.run(r)
    }

    fn heartbeat(&mut self, node: i32, epoch: i64, offset: i64) -> BrokerHeartbeatResponse {
        self.heartbeat_with(node, epoch, offset, false, false)
    }

    fn heartbeat_with(
        &mut self,
        node: i32,
        epoch: i64,
        offset: i64,
        fence: bool,
        shut: bool,
    ) -> BrokerHeartbeatResponse {
        let req = BrokerHeartbeatRequest::default()
            .with_broker_id(BrokerId(node))
            .with_broker_epoch(epoch)
            .with_current_metadata_offset(offset)
            .with_want_fence(fence)
            .with_want_shut_down(shut);
        let r = self.ctl.broker_heartbeat(&req, self.now);
        self.run(r)
    }

    /// Register and unfence brokers `nodes`; returns their epochs.
    fn brokers(&mut self, nodes: &[i32]) -> BTreeMap<i32, i64> {
        let mut epochs = BTreeMap::new();
        for n in nodes {
            let epoch = self.register(*n, *n as u128).broker_epoch;
            let last = self.image().last_offset();
            let hb = self.heartbeat(*n, epoch, last);
            assert!(!hb.is_fenced && hb.is_caught_up, "{hb:?}");
            epochs.insert(*n, epoch);
        }
        epochs
    }

    fn create(&mut self, name: &str, partitions: i32, rf: i16) -> CreatableTopicResult {
        let req = CreateTopicsRequest::default().with_topics(vec![topic(name, partitions, rf)]);
        let r = self.ctl.create_topics(&req);
        self.run(r).topics.remove(0)
    }

    fn leaders(&self, name: &str) -> Vec<i32> {
        self.image().topic_by_name(name).unwrap().partitions.iter().map(|p| p.leader).collect()
    }

    fn tick(&mut self) {
        let r = self.ctl.tick(self.now);
        self.run(r);
    }
}

fn registration(node: i32, incarnation: u128) -> BrokerRegistrationRequest {
    BrokerRegistrationRequest::default()
        .with_broker_id(BrokerId(node))
        .with_cluster_id(StrBytes::from_static_str(DEFAULT_CLUSTER_ID))
        .with_incarnation_id(Uuid::from_u128(incarnation))
        .with_listeners(vec![Listener::default()
            .with_name(StrBytes::from_static_str("PLAINTEXT"))
            .with_host(StrBytes::from_string(format!("10.0.0.{node}")))
            .with_port(9092)])
}

fn topic(name: &str, partitions: i32, rf: i16) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(name.into())))
        .with_num_partitions(partitions)
        .with_replication_factor(rf)
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

#[test]
fn activation_bootstraps_a_new_cluster() {
    let h = Harness::new();
    assert_eq!(h.image().cluster_id(), Some(DEFAULT_CLUSTER_ID));
    assert_eq!(h.image().feature_level("metadata.version"), Some(METADATA_VERSION));
    assert_eq!(h.image().last_offset(), 2);
    // A second activation over that log writes nothing.
    let mut other = QuorumController::new(config(), 1);
    for (o, r) in &h.log {
        other.replay(*o, r).unwrap();
    }
    let r = other.activate(h.next_offset + 1, 0);
    assert!(r.records.is_empty() && r.commit_offset.is_none());
}

#[test]
fn registration_epoch_is_the_record_offset_and_unfencing_waits_for_catch_up() {
    let mut h = Harness::new();
    let req = registration(1, 11);
    let r = h.ctl.register_broker(&req, h.now);
    let offset = h.next_offset;
    assert_eq!(r.commit_offset, Some(offset), "answered only once the registration commits");
    let resp = h.run(r);
    assert_eq!((resp.error_code, resp.broker_epoch), (0, offset));
    let b = h.image().broker(1).unwrap();
    assert!(b.fenced && b.epoch == offset);
    assert_eq!(b.endpoint("PLAINTEXT").unwrap().host, "10.0.0.1");

    // Behind its registration: stays fenced.
    let hb = h.heartbeat(1, offset, offset - 1);
    assert!(hb.is_fenced && !hb.is_caught_up && hb.error_code == 0);
    assert!(h.image().broker(1).unwrap().fenced);
    // Asking to stay fenced: stays fenced.
    assert!(h.heartbeat_with(1, offset, offset, true, false).is_fenced);
    // Caught up: unfenced, once the UnfenceBroker record commits.
    let req = BrokerHeartbeatRequest::default()
        .with_broker_id(BrokerId(1))
        .with_broker_epoch(offset)
        .with_current_metadata_offset(offset);
    let r = h.ctl.broker_heartbeat(&req, h.now);
    assert_eq!(r.records, [MetadataRecord::UnfenceBroker(BrokerRef { node_id: 1, broker_epoch: offset })]);
    let hb = h.run(r);
    assert!(!hb.is_fenced && hb.is_caught_up);
    assert_eq!(h.image().usable_brokers(), [1]);
    // A steady heartbeat writes nothing and answers at once.
    let r = h.ctl.broker_heartbeat(&req, h.now);
    assert!(r.records.is_empty() && r.commit_offset.is_none() && !r.response.is_fenced, "{r:?}");

    // Wrong epoch, unknown broker.
    assert_eq!(h.heartbeat(1, offset + 5, 100).error_code, code(ResponseError::StaleBrokerEpoch));
    assert_eq!(h.heartbeat(9, 0, 100).error_code, code(ResponseError::BrokerIdNotRegistered));
}

#[test]
fn registrations_are_checked() {
    let mut h = Harness::new();
    let mut bad = registration(1, 1);
    bad.cluster_id = StrBytes::from_static_str("other");
    let check = |h: &mut Harness, req: &BrokerRegistrationRequest, want: ResponseError| {
        let r = h.ctl.register_broker(req, h.now);
        assert!(r.records.is_empty());
        assert_eq!(r.response.error_code, want.code(), "{req:?}");
    };
    check(&mut h, &bad, ResponseError::InconsistentClusterId);
    check(&mut h, &registration(-1, 1), ResponseError::InvalidRegistration);
    check(&mut h, &registration(1, 1).with_listeners(vec![]), ResponseError::InvalidRegistration);
    let mut no_port = registration(1, 1);
    no_port.listeners[0].port = 0;
    check(&mut h, &no_port, ResponseError::InvalidRegistration);
    let mut twice = registration(1, 1);
    twice.listeners.push(twice.listeners[0].clone());
    check(&mut h, &twice, ResponseError::InvalidRegistration);

    // Another incarnation while the first one's session is alive: refused,
    // until the session lapses.
    let epochs = h.brokers(&[1]);
    check(&mut h, &registration(1, 2), ResponseError::DuplicateBrokerRegistration);
    // The same incarnation registering again (it lost the answer) is fine.
    let again = h.register(1, 1);
    assert!(again.error_code == 0 && again.broker_epoch > epochs[&1]);
    assert!(h.image().broker(1).unwrap().fenced);
    // Fenced, the id is free for a new process.
    assert_eq!(h.register(1, 2).error_code, 0);
}

#[test]
fn the_session_timeout_fences_and_moves_leadership_then_the_return_restores_it() {
    let mut h = Harness::new();
    let epochs = h.brokers(&[1, 2, 3]);
    let created = h.create("t", 3, 1);
    assert_eq!(created.error_code, 0, "{created:?}");
    let before = h.leaders("t");
    assert_eq!(before.iter().collect::<BTreeSet<_>>().len(), 3, "one partition per broker: {before:?}");
    let led_by_2 = before.iter().position(|l| *l == 2).unwrap();

    // 1 and 3 heartbeat; 2 falls silent.
    let start = h.now;
    assert_eq!(h.ctl.next_deadline(), Some(start + SESSION + 1));
    for step in 1..=4 {
        h.now = start + step * 2000;
        for n in [1, 3] {
            let last = h.image().last_offset();
            h.heartbeat(n, epochs[&n], last);
        }
        h.tick();
        assert!(!h.image().broker(2).unwrap().fenced, "fenced early at +{}", step * 2000);
    }
    h.now = start + SESSION + 1;
    let r = h.ctl.tick(h.now);
    assert_eq!(r.records[0], MetadataRecord::FenceBroker(BrokerRef { node_id: 2, broker_epoch: epochs[&2] }));
    h.run(r);
    let p = h.image().partition(created.topic_id, led_by_2 as i32).unwrap().clone();
    assert_eq!((p.leader, p.leader_epoch, p.partition_epoch, p.isr.clone()), (NO_LEADER, 1, 1, vec![2]));
    let after: Vec<i32> = h.leaders("t");
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        if i != led_by_2 {
            assert_eq!(b, a, "other partitions keep their leader");
        }
    }
    // A tick with nothing due writes nothing.
    assert!(h.ctl.tick(h.now).records.is_empty());

    // Broker 2 restarts: a new incarnation may register now its session lapsed.
    let reg = h.register(2, 22);
    assert_eq!(reg.error_code, 0);
    assert_eq!(h.leaders("t")[led_by_2], NO_LEADER, "not before it is unfenced");
    let last = h.image().last_offset();
    assert!(!h.heartbeat(2, reg.broker_epoch, last).is_fenced);
    let p = h.image().partition(created.topic_id, led_by_2 as i32).unwrap();
    assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 2, 2));
}

#[test]
fn re_registering_while_unfenced_takes_leadership_away_first() {
    let mut h = Harness::new();
    let epochs = h.brokers(&[1]);
    h.create("t", 2, 1);
    assert_eq!(h.leaders("t"), [1, 1]);
    let again = h.register(1, 1);
    assert!(again.broker_epoch > epochs[&1]);
    assert_eq!(h.leaders("t"), [NO_LEADER, NO_LEADER]);
    let last = h.image().last_offset();
    h.heartbeat(1, again.broker_epoch, last);
    assert_eq!(h.leaders("t"), [1, 1]);
    let p = h.image().topic_by_name("t").unwrap().partitions[0].clone();
    assert_eq!((p.leader_epoch, p.partition_epoch), (2, 2));
}

#[test]
fn create_topics_spreads_leaders_round_robin_with_a_rotating_start() {
    let mut h = Harness::new();
    h.brokers(&[1, 2, 3]);
    let r = h.create("six", 6, 1);
    assert_eq!((r.error_code, r.num_partitions, r.replication_factor), (0, 6, 1));
    assert!(r.configs.as_ref().is_some_and(|c| !c.is_empty()));
    let leaders = h.leaders("six");
    for b in [1, 2, 3] {
        assert_eq!(leaders.iter().filter(|l| **l == b).count(), 2, "{leaders:?}");
    }
    // Single-partition topics do not all land on the same broker.
    let firsts: Vec<i32> = (0..3)
        .map(|i| {
            h.create(&format!("one-{i}"), 1, 1);
            h.leaders(&format!("one-{i}"))[0]
        })
        .collect();
    assert_eq!(firsts.iter().collect::<BTreeSet<_>>().len(), 3, "{firsts:?}");
    // -1 takes num.partitions (3 here) and default.replication.factor.
    let d = h.create("defaults", -1, -1);
    assert_eq!((d.num_partitions, d.replication_factor), (3, 1));
    let t = h.image().topic_by_name("six").unwrap();
    assert!(t.partitions.iter().all(|p| p.replicas.len() == 1 && p.isr == p.replicas && p.leader_epoch == 0));
}

#[test]
fn create_topics_validates_like_kafka() {
    let mut h = Harness::new();
    // No brokers yet.
    let r = h.create("t", 1, 1);
    assert_eq!(r.error_code, code(ResponseError::InvalidReplicationFactor));
    h.brokers(&[1, 2, 3]);
    assert_eq!(h.create("t", 1, 1).error_code, 0);
    let cases: Vec<(CreatableTopic, i16, &str)> = vec![
        (topic("t", 1, 1), ResponseError::TopicAlreadyExists.code(), "already exists"),
        (topic("a.b", 1, 1), OK, ""),
        (topic("a_b", 1, 1), ResponseError::InvalidTopicException.code(), "collides"),
        (topic("bad name", 1, 1), ResponseError::InvalidTopicException.code(), "legal characters"),
        (topic("", 1, 1), ResponseError::InvalidTopicException.code(), "empty"),
        (topic("zero", 0, 1), ResponseError::InvalidPartitions.code(), "between 1 and"),
        (topic("huge", MAX_PARTITIONS + 1, 1), ResponseError::InvalidPartitions.code(), "between 1 and"),
        (topic("rf0", 1, 0), ResponseError::InvalidReplicationFactor.code(), "at least 1"),
        (topic("rf3", 1, 3), OK, ""),
        (topic("rf4", 1, 4), ResponseError::InvalidReplicationFactor.code(), "only 3 broker(s)"),
        (
            topic("cfg", 1, 1).with_configs(vec![CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("retention.bogus"))
                .with_value(Some(StrBytes::from_static_str("1")))]),
            ResponseError::InvalidConfig.code(),
            "unknown topic config",
        ),
    ];
    for (t, want, needle) in cases {
        let name = t.name.to_string();
        let req = CreateTopicsRequest::default().with_topics(vec![t]);
        let r = h.ctl.create_topics(&req);
        let resp = h.run(r).topics.remove(0);
        assert_eq!(resp.error_code, want, "{name}: {resp:?}");
        assert!(resp.error_message.as_ref().is_none_or(|m| m.contains(needle)), "{name}: {resp:?}");
    }
    // Named twice in one request: both refused.
    let req = CreateTopicsRequest::default().with_topics(vec![topic("dup", 1, 1), topic("dup", 1, 1)]);
    let r = h.ctl.create_topics(&req);
    assert!(r.records.is_empty());
    assert!(r.response.topics.iter().all(|t| t.error_code == code(ResponseError::InvalidRequest)));
    // validate_only writes nothing.
    let req = CreateTopicsRequest::default().with_topics(vec![topic("v", 4, 1)]).with_validate_only(true);
    let r = h.ctl.create_topics(&req);
    assert!(r.records.is_empty() && r.response.topics[0].error_code == 0 && r.response.topics[0].num_partitions == 4);
    assert!(h.image().topic_by_name("v").is_none());
}

#[test]
fn the_per_broker_replica_limit_is_a_policy_violation() {
    let mut c = config();
    c.max_replicas_per_broker = 4;
    let mut h = Harness::new();
    h.ctl = QuorumController::new(c, 1);
    h.log.clear();
    h.committed = 0;
    h.next_offset = 1;
    let r = h.ctl.activate(1, h.now);
    h.run(r);
    h.brokers(&[1, 2]);
    assert_eq!(h.create("a", 8, 1).error_code, 0);
    let r = h.create("b", 1, 1);
    assert_eq!(r.error_code, code(ResponseError::PolicyViolation));
    assert!(r.error_message.unwrap().contains("limit is 4"));
}

#[test]
fn replication_factor_three_places_distinct_replicas_and_moves_leaders_within_the_isr() {
    let mut h = Harness::new();
    let epochs = h.brokers(&[1, 2, 3, 4]);
    assert_eq!(h.create("too-many", 1, 5).error_code, code(ResponseError::InvalidReplicationFactor));
    let r = h.create("r3", 8, 3);
    assert_eq!(r.error_code, 0, "{r:?}");
    let t = h.image().topic_by_name("r3").unwrap().clone();
    for p in &t.partitions {
        assert_eq!(p.replicas.iter().collect::<BTreeSet<_>>().len(), 3);
        assert_eq!((p.isr.clone(), p.leader), (p.replicas.clone(), p.replicas[0]));
    }
    let load = h.image().replicas_per_broker();
    assert!(load.values().all(|n| *n == 6), "{load:?}");

    // Fence broker 1 (it asks to be): each partition it led moves to the next ISR member.
    let last = h.image().last_offset();
    assert!(h.heartbeat_with(1, epochs[&1], last, true, false).is_fenced);
    let after = h.image().topic_by_name("r3").unwrap();
    for (old, new) in t.partitions.iter().zip(&after.partitions) {
        if old.replicas.contains(&1) {
            assert!(!new.isr.contains(&1), "{new:?}");
            assert_eq!(new.partition_epoch, 1);
        }
        if old.leader == 1 {
            let expected = *old.replicas.iter().find(|r| **r != 1).unwrap();
            assert_eq!((new.leader, new.leader_epoch), (expected, 1));
        } else {
            assert_eq!((new.leader, new.leader_epoch), (old.leader, 0));
        }
    }
    // New topics avoid the fenced broker.
    h.create("later", 4, 3);
    let later = h.image().topic_by_name("later").unwrap();
    assert!(later.partitions.iter().all(|p| !p.replicas.contains(&1)));
}

#[test]
fn the_last_isr_member_keeps_its_place_and_the_partition_goes_offline() {
    let mut h = Harness::new();
    let epochs = h.brokers(&[1, 2]);
    h.create("r2", 1, 2);
    let id = h.image().topic_by_name("r2").unwrap().id;
    let leader = h.image().partition(id, 0).unwrap().leader;
    let other = if leader == 1 { 2 } else { 1 };
    let last = h.image().last_offset();
    h.heartbeat_with(leader, epochs[&leader], last, true, false);
    assert_eq!(h.image().partition(id, 0).unwrap().leader, other);
    let last = h.image().last_offset();
    h.heartbeat_with(other, epochs[&other], last, true, false);
    let p = h.image().partition(id, 0).unwrap();
    assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![other]));
    // The first one back is not in the ISR: the partition stays offline
    // (no unclean election) until the last ISR member returns.
    h.heartbeat(leader, epochs[&leader], 1_000);
    assert_eq!(h.image().partition(id, 0).unwrap().leader, NO_LEADER);
    h.heartbeat(other, epochs[&other], 1_000);
    assert_eq!(h.image().partition(id, 0).unwrap().leader, other);
}

#[test]
fn controlled_shutdown_moves_leadership_then_lets_the_broker_go() {
    let mut h = Harness::new();
    let epochs = h.brokers(&[1, 2]);
    h.create("t", 2, 1);
    let leaders = h.leaders("t");
    let last = h.image().last_offset();
    let req = BrokerHeartbeatRequest::default()
        .with_broker_id(BrokerId(1))
        .with_broker_epoch(epochs[&1])
        .with_current_metadata_offset(last)
        .with_want_shut_down(true);
    let r = h.ctl.broker_heartbeat(&req, h.now);
    assert_eq!(r.records[0], MetadataRecord::ControlledShutdown(BrokerRef { node_id: 1, broker_epoch: epochs[&1] }));
    let resp = h.run(r);
    assert!(!resp.should_shut_down && !resp.is_fenced, "{resp:?} not before the moves commit and it has seen them");
    let p = leaders.iter().position(|l| *l == 1).unwrap();
    assert_eq!(h.leaders("t")[p], NO_LEADER, "one replica: offline");
    assert!(!h.image().is_usable(1));
    // New topics avoid it.
    h.create("u", 2, 1);
    assert_eq!(h.leaders("u"), [2, 2]);
    // Caught up on the moves: it may shut down, fenced.
    let last = h.image().last_offset();
    let resp = h.heartbeat_with(1, epochs[&1], last, false, true);
    assert!(resp.should_shut_down && resp.is_fenced);
    assert!(h.image().broker(1).unwrap().fenced);
    // A fenced broker asking to shut down may go at once.
    assert!(h.heartbeat_with(1, epochs[&1], last, false, true).should_shut_down);
    // It is not unfenced again by heartbeating; a new registration brings it back.
    assert!(h.heartbeat(1, epochs[&1], last).is_fenced);
    let again = h.register(1, 1);
    let last = h.image().last_offset();
    assert!(!h.heartbeat(1, again.broker_epoch, last).is_fenced);
    assert!(h.image().is_usable(1));
}

#[test]
fn delete_topics_by_name_and_id() {
    let mut h = Harness::new();
    h.brokers(&[1]);
    let a = h.create("a", 1, 1);
    h.create("b", 1, 1);
    let req = DeleteTopicsRequest::default().with_topic_names(vec![
        TopicName(StrBytes::from_static_str("a")),
        TopicName(StrBytes::from_static_str("nope")),
    ]);
    let r = h.ctl.delete_topics(&req, 5);
    let resp = h.run(r);
    assert_eq!(resp.responses[0].error_code, 0);
    assert_eq!(resp.responses[0].topic_id, a.topic_id);
    assert_eq!(resp.responses[1].error_code, code(ResponseError::UnknownTopicOrPartition));
    assert!(h.image().topic_by_name("a").is_none());

    let b_id = h.image().topic_by_name("b").unwrap().id;
    let by_id = |id| DeleteTopicState::default().with_name(None).with_topic_id(id);
    let req = DeleteTopicsRequest::default().with_topics(vec![by_id(b_id), by_id(b_id), by_id(Uuid::from_u128(5))]);
    let r = h.ctl.delete_topics(&req, 6);
    assert!(r.records.is_empty());
    let codes: Vec<i16> = r.response.responses.iter().map(|t| t.error_code).collect();
    assert_eq!(
        codes,
        [code(ResponseError::InvalidRequest), code(ResponseError::InvalidRequest), code(ResponseError::UnknownTopicId)]
    );
    let req = DeleteTopicsRequest::default().with_topics(vec![by_id(b_id)]);
    let r = h.ctl.delete_topics(&req, 6);
    let resp = h.run(r);
    assert_eq!(
        (resp.responses[0].error_code, resp.responses[0].name.as_ref().map(|n| n.to_string())),
        (0, Some("b".into()))
    );
    assert_eq!(h.image().topics().count(), 0);
    // A deleted name can be created again, with a new id.
    let again = h.create("a", 1, 1);
    assert!(again.error_code == 0 && again.topic_id != a.topic_id);
}

#[test]
fn manual_assignments_are_checked() {
    let mut h = Harness::new();
    h.brokers(&[1, 2]);
    let assign = |parts: &[(i32, &[i32])]| {
        topic("m", -1, -1).with_assignments(
            parts
                .iter()
                .map(|(p, b)| {
                    CreatableReplicaAssignment::default()
                        .with_partition_index(*p)
                        .with_broker_ids(b.iter().map(|b| BrokerId(*b)).collect())
                })
                .collect(),
        )
    };
    let cases: Vec<(CreatableTopic, i16)> = vec![
        (assign(&[(0, &[1]), (2, &[2])]), ResponseError::InvalidReplicaAssignment.code()),
        (assign(&[(0, &[7])]), ResponseError::InvalidReplicaAssignment.code()),
        (assign(&[(0, &[1, 2])]).with_name(TopicName(StrBytes::from_static_str("m2"))), OK),
        (assign(&[(0, &[1])]).with_num_partitions(1), ResponseError::InvalidRequest.code()),
        (assign(&[(0, &[2]), (1, &[2]), (2, &[1])]), OK),
    ];
    for (t, want) in cases {
        let req = CreateTopicsRequest::default().with_topics(vec![t.clone()]);
        let r = h.ctl.create_topics(&req);
        let resp = h.run(r).topics.remove(0);
        assert_eq!(resp.error_code, want, "{t:?}: {resp:?}");
    }
    assert_eq!(h.leaders("m"), [2, 2, 1]);
}

#[test]
fn unregistering_a_broker_moves_its_leadership() {
    let mut h = Harness::new();
    h.brokers(&[1, 2]);
    h.create("t", 2, 1);
    let r = h.ctl.unregister_broker(&UnregisterBrokerRequest::default().with_broker_id(BrokerId(1)));
    assert_eq!(h.run(r).error_code, 0);
    assert!(h.image().broker(1).is_none());
    assert!(h.leaders("t").contains(&NO_LEADER));
    let r = h.ctl.unregister_broker(&UnregisterBrokerRequest::default().with_broker_id(BrokerId(1)));
    assert_eq!(r.response.error_code, code(ResponseError::BrokerIdNotRegistered));
}

#[test]
fn a_standby_answers_not_controller_and_resigning_drops_what_is_uncommitted() {
    let mut h = Harness::new();
    h.brokers(&[1]);
    // Proposed, never committed; leadership lost.
    let r = h.ctl.create_topics(&CreateTopicsRequest::default().with_topics(vec![topic("lost", 1, 1)]));
    assert!(h.ctl.working_image().unwrap().topic_by_name("lost").is_some());
    assert!(r.commit_offset.is_some());
    h.ctl.resign();
    assert!(!h.ctl.is_active());
    let nc = code(ResponseError::NotController);
    let r = h.ctl.create_topics(&CreateTopicsRequest::default().with_topics(vec![topic("x", 1, 1)]));
    assert!(r.records.is_empty() && r.response.topics[0].error_code == nc);
    assert_eq!(h.ctl.register_broker(&registration(2, 2), 0).response.error_code, nc);
    assert_eq!(h.ctl.broker_heartbeat(&BrokerHeartbeatRequest::default(), 0).response.error_code, nc);
    let d = h.ctl.delete_topics(
        &DeleteTopicsRequest::default().with_topic_names(vec![TopicName(StrBytes::from_static_str("x"))]),
        5,
    );
    assert_eq!(d.response.responses[0].error_code, nc);
    assert!(h.ctl.tick(i64::MAX / 2).records.is_empty());
    assert_eq!(h.ctl.next_deadline(), None);
    // Active again over the committed log: the lost topic never existed.
    let r = h.ctl.activate(h.next_offset, h.now);
    assert!(r.records.is_empty());
    assert!(h.ctl.working_image().unwrap().topic_by_name("lost").is_none());
    assert_eq!(h.create("lost", 1, 1).error_code, 0);
}

#[test]
fn an_answer_read_from_uncommitted_records_waits_for_them() {
    let mut h = Harness::new();
    h.brokers(&[1]);
    let first = h.ctl.create_topics(&CreateTopicsRequest::default().with_topics(vec![topic("t", 1, 1)]));
    let (wait, _) = h.propose(first);
    // The duplicate is refused at once, from the working image, but must not
    // be sent before the topic it saw commits.
    let dup = h.ctl.create_topics(&CreateTopicsRequest::default().with_topics(vec![topic("t", 1, 1)]));
    assert!(dup.records.is_empty());
    assert_eq!(dup.commit_offset, wait);
    assert_eq!(dup.response.topics[0].error_code, code(ResponseError::TopicAlreadyExists));
    h.commit();
    let dup = h.ctl.create_topics(&CreateTopicsRequest::default().with_topics(vec![topic("t", 1, 1)]));
    assert_eq!(dup.commit_offset, None);
}

#[test]
fn a_new_active_controller_takes_over_with_fresh_sessions() {
    let mut h = Harness::new();
    let epochs = h.brokers(&[1, 2]);
    h.create("t", 2, 1);
    // Another controller has replayed the same committed log.
    let mut next = QuorumController::new(config(), 99);
    for (o, r) in &h.log {
        next.replay(*o, r).unwrap();
    }
    assert_eq!(next.image(), h.image());
    h.ctl.resign();
    h.now += 8_000;
    // The new leader's control record takes one offset.
    h.next_offset += 1;
    let r = next.activate(h.next_offset, h.now);
    assert!(r.records.is_empty());
    h.ctl = next;
    // Sessions start afresh: nobody is fenced for silence under the old controller.
    h.now += 5_000;
    h.tick();
    assert_eq!(h.image().usable_brokers(), [1, 2]);
    // Heartbeats carry on with the same epochs.
    let last = h.image().last_offset();
    assert_eq!(h.heartbeat(1, epochs[&1], last).error_code, 0);
    h.now += SESSION;
    h.tick();
    assert_eq!(h.image().usable_brokers(), [1]);
    // Snapshot of the new controller's image loads to the same image.
    let snap = h.image().to_snapshot();
    assert_eq!(&MetadataImage::from_snapshot(&snap).unwrap(), h.image());
}

#[test]
fn a_record_written_by_another_leader_makes_the_active_controller_resign() {
    let mut h = Harness::new();
    let rec = MetadataRecord::FeatureLevel { name: "x".into(), level: 1 };
    h.ctl.replay(h.next_offset + 3, &rec).unwrap();
    assert!(!h.ctl.is_active());
}

proptest! {
    #[test]
    fn placement_is_distinct_and_leaders_spread(
        n in 1usize..7,
        rf_seed in 0usize..7,
        partitions in 1i32..40,
        start in 0usize..100,
    ) {
        let rf = 1 + rf_seed % n;
        let brokers: Vec<i32> = (0..n as i32).map(|b| b * 10 + 1).collect();
        let placed = place_replicas(&brokers, partitions, rf, start);
        prop_assert_eq!(placed.len(), partitions as usize);
        let mut leaders = BTreeMap::new();
        let mut load = BTreeMap::new();
        for replicas in &placed {
            prop_assert_eq!(replicas.len(), rf);
            prop_assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), rf);
            prop_assert!(replicas.iter().all(|r| brokers.contains(r)));
            *leaders.entry(replicas[0]).or_insert(0i32) += 1;
            for r in replicas {
                *load.entry(*r).or_insert(0i32) += 1;
            }
        }
        let counts: Vec<i32> = brokers.iter().map(|b| leaders.get(b).copied().unwrap_or(0)).collect();
        prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "leaders {:?}", counts);
        // Replicas in all: within one partition's worth of even, plus the shift's drift.
        let loads: Vec<i32> = brokers.iter().map(|b| load.get(b).copied().unwrap_or(0)).collect();
        prop_assert!(loads.iter().max().unwrap() - loads.iter().min().unwrap() <= rf as i32, "load {:?}", loads);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Register {
        node: i32,
        incarnation: u128,
    },
    Heartbeat {
        node: i32,
        caught_up: bool,
        want_fence: bool,
        want_shut_down: bool,
    },
    Advance {
        ms: i64,
    },
    Create {
        name: u8,
        partitions: i32,
        rf: i16,
    },
    Delete {
        name: u8,
    },
    /// Propose a CreateTopics, then lose leadership before it commits; another
    /// controller takes over from the committed log.
    FailOver {
        name: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0i32..4, 0u128..3).prop_map(|(node, incarnation)| Op::Register { node, incarnation }),
        6 => (0i32..4, proptest::bool::weighted(0.85), proptest::bool::weighted(0.1), proptest::bool::weighted(0.1)).prop_map(
            |(node, caught_up, want_fence, want_shut_down)| Op::Heartbeat { node, caught_up, want_fence, want_shut_down }
        ),
        2 => (0i64..6000).prop_map(|ms| Op::Advance { ms }),
        2 => (0u8..5, 1i32..6, 1i16..4).prop_map(|(name, partitions, rf)| Op::Create { name, partitions, rf }),
        1 => (0u8..5).prop_map(|name| Op::Delete { name }),
        1 => (5u8..7).prop_map(|name| Op::FailOver { name }),
    ]
}

/// What must hold of the committed image after every step.
fn check_invariants(image: &MetadataImage) -> Result<(), TestCaseError> {
    for t in image.topics() {
        for (i, p) in t.partitions.iter().enumerate() {
            if p.leader != NO_LEADER {
                prop_assert!(image.is_usable(p.leader), "{}-{i}: leader {} is not usable: {p:?}", t.name, p.leader);
            } else {
                prop_assert!(
                    !p.isr.iter().any(|r| image.is_usable(*r)),
                    "{}-{i}: offline with a usable ISR member: {p:?}",
                    t.name
                );
            }
        }
    }
    let snap = MetadataImage::from_snapshot(&image.to_snapshot()).unwrap();
    prop_assert_eq!(&snap, image);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_timelines_keep_leaders_usable_and_replicas_agree(ops in proptest::collection::vec(op(), 1..60)) {
        let mut h = Harness::new();
        h.brokers(&[0, 1, 2]);
        let mut previous = h.image().clone();
        for op in ops {
            match op {
                Op::Register { node, incarnation } => {
                    h.register(node, incarnation);
                }
                Op::Heartbeat { node, caught_up, want_fence, want_shut_down } => {
                    let epoch = h.image().broker(node).map_or(0, |b| b.epoch);
                    let offset = if caught_up { h.image().last_offset() } else { epoch - 1 };
                    let resp = h.heartbeat_with(node, epoch, offset, want_fence, want_shut_down);
                    if resp.error_code == 0 {
                        prop_assert_eq!(resp.is_fenced, h.image().broker(node).unwrap().fenced);
                    }
                }
                Op::Advance { ms } => {
                    h.now += ms;
                    h.tick();
                }
                Op::Create { name, partitions, rf } => {
                    h.create(&format!("t{name}"), partitions, rf);
                }
                Op::Delete { name } => {
                    let req = DeleteTopicsRequest::default()
                        .with_topic_names(vec![TopicName(StrBytes::from_string(format!("t{name}")))]);
                    let r = h.ctl.delete_topics(&req, 5);
                    h.run(r);
                }
                Op::FailOver { name } => {
                    let req = CreateTopicsRequest::default().with_topics(vec![topic(&format!("t{name}"), 2, 1)]);
                    let r = h.ctl.create_topics(&req);
                    h.propose(r);
                    // Lost before commit: the new leader's log ends at the commit point.
                    h.log.truncate(h.committed);
                    h.next_offset = h.log.last().map_or(1, |(o, _)| o + 1) + 1;
                    let mut next = QuorumController::new(config(), name as u64);
                    for (o, r) in &h.log {
                        next.replay(*o, r).unwrap();
                    }
                    prop_assert_eq!(next.image(), h.image());
                    let r = next.activate(h.next_offset, h.now);
                    h.ctl = next;
                    h.run(r);
                    let lost = format!("t{name}");
                    prop_assert!(h.image().topic_by_name(&lost).is_none());
                }
            }
            check_invariants(h.image())?;
            // Epochs only move forward, partition by partition.
            for t in previous.topics() {
                for (i, old) in t.partitions.iter().enumerate() {
                    if let Some(new) = h.image().partition(t.id, i as i32) {
                        prop_assert!(new.partition_epoch >= old.partition_epoch && new.leader_epoch >= old.leader_epoch);
                    }
                }
            }
            previous = h.image().clone();
        }
    }
}

// ---- replication factor defaults -------------------------------------------

#[test]
fn minus_one_takes_default_replication_factor() {
    let mut h = Harness::with_config(config_from(BrokerConfig { default_replication_factor: 2, ..Default::default() }));
    h.brokers(&[1, 2, 3]);
    let r = h.create("d", 4, -1);
    assert_eq!((r.error_code, r.replication_factor), (0, 2), "{r:?}");
    let t = h.image().topic_by_name("d").unwrap();
    assert!(t.partitions.iter().all(|p| p.replicas.len() == 2 && p.isr == p.replicas));
}

#[test]
fn the_offsets_topic_waits_for_offsets_topic_replication_factor_brokers() {
    let mut h = Harness::new();
    assert_eq!(config().defaults.groups.offsets_topic_replication_factor, 3, "Kafka's default");
    h.brokers(&[1, 2]);
    let r = h.create(OFFSETS_TOPIC, 5, -1);
    assert_eq!(r.error_code, code(ResponseError::InvalidReplicationFactor));
    let message = r.error_message.unwrap();
    assert!(message.contains("offsets.topic.replication.factor") && message.contains("only 2"), "{message}");
    // Other topics' -1 still means default.replication.factor.
    assert_eq!(h.create("plain", 1, -1).replication_factor, 1);
    h.brokers(&[3]);
    let r = h.create(OFFSETS_TOPIC, 5, -1);
    assert_eq!((r.error_code, r.replication_factor), (0, 3), "{r:?}");
    let t = h.image().topic_by_name(OFFSETS_TOPIC).unwrap();
    assert!(t.partitions.iter().all(|p| p.replicas.len() == 3));
}

// ---- AlterPartition ----------------------------------------------------------

use kafka_protocol::messages::alter_partition_request::{BrokerState as IsrMember, PartitionData, TopicData};

/// A v3 AlterPartition from `broker` for one partition, at the epochs the
/// committed image has.
fn alter_request(
    h: &Harness,
    broker: i32,
    epoch: i64,
    topic_id: Uuid,
    partition: i32,
    isr: &[i32],
) -> AlterPartitionRequest {
    let p = h.image().partition(topic_id, partition).cloned();
    let data = PartitionData::default()
        .with_partition_index(partition)
        .with_leader_epoch(p.as_ref().map_or(0, |p| p.leader_epoch))
        .with_partition_epoch(p.as_ref().map_or(0, |p| p.partition_epoch))
        .with_new_isr_with_epochs(
            isr.iter().map(|b| IsrMember::default().with_broker_id(BrokerId(*b)).with_broker_epoch(-1)).collect(),
        );
    AlterPartitionRequest::default()
        .with_broker_id(BrokerId(broker))
        .with_broker_epoch(epoch)
        .with_topics(vec![TopicData::default().with_topic_id(topic_id).with_partitions(vec![data])])
}

impl Harness {
    /// Send `req`; the partition answer (or the top-level error as one).
    fn alter(&mut self, req: &AlterPartitionRequest) -> alter_partition_response::PartitionData {
        let r = self.ctl.alter_partition(req);
        let resp = self.run(r);
        if resp.error_code != 0 {
            return alter_partition_response::PartitionData::default().with_error_code(resp.error_code);
        }
        resp.topics[0].partitions[0].clone()
    }
}

/// Three brokers, one partition on all three; (topic id, leader, followers, epochs).
fn replicated() -> (Harness, Uuid, i32, Vec<i32>, BTreeMap<i32, i64>) {
    let mut h = Harness::new();
    let epochs = h.brokers(&[1, 2, 3, 4]);
    let r = h.create_with("r", 1, 3, &[]);
    assert_eq!(r.error_code, 0);
    let p = h.image().partition(r.topic_id, 0).unwrap().clone();
    let followers = p.replicas[1..].to_vec();
    (h, r.topic_id, p.leader, followers, epochs)
}

impl Harness {
    fn create_with(&mut self, name: &str, partitions: i32, rf: i16, configs: &[(&str, &str)]) -> CreatableTopicResult {
        let t = topic(name, partitions, rf).with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string())))
                })
                .collect(),
        );
        let r = self.ctl.create_topics(&CreateTopicsRequest::default().with_topics(vec![t]));
        self.run(r).topics.remove(0)
    }
}

#[test]
fn alter_partition_shrinks_and_expands_the_isr_after_commit() {
    let (mut h, id, leader, followers, epochs) = replicated();
    let before = h.image().partition(id, 0).unwrap().clone();
    let req = alter_request(&h, leader, epochs[&leader], id, 0, &[leader, followers[0]]);
    let r = h.ctl.alter_partition(&req);
    assert_eq!(r.records.len(), 1, "one PartitionChange");
    assert_eq!(r.commit_offset, Some(h.next_offset), "answered once the change commits");
    let resp = h.run(r);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(resp.topics[0].topic_id, id);
    assert_eq!(p.error_code, 0, "{p:?}");
    assert_eq!(p.isr, [BrokerId(leader), BrokerId(followers[0])]);
    assert_eq!(
        (p.leader_id.0, p.leader_epoch, p.partition_epoch),
        (leader, before.leader_epoch, before.partition_epoch + 1)
    );
    let now = h.image().partition(id, 0).unwrap();
    assert_eq!(
        (now.isr.clone(), now.leader, now.leader_epoch),
        (vec![leader, followers[0]], leader, before.leader_epoch)
    );

    // The same ISR (in any order): the current state, nothing written.
    let req = alter_request(&h, leader, epochs[&leader], id, 0, &[followers[0], leader]);
    let r = h.ctl.alter_partition(&req);
    assert!(r.records.is_empty() && r.commit_offset.is_none());
    assert_eq!(r.response.topics[0].partitions[0].partition_epoch, before.partition_epoch + 1);

    // Back to all three, as v2 would send it (new_isr, no epochs); -1 skips the broker epoch check.
    let mut req = alter_request(&h, leader, -1, id, 0, &[]);
    let all: Vec<BrokerId> = before.replicas.iter().copied().map(BrokerId).collect();
    req.topics[0].partitions[0].new_isr = all.clone();
    let p = h.alter(&req);
    assert_eq!((p.error_code, p.isr.clone(), p.partition_epoch), (0, all, before.partition_epoch + 2));
}

#[test]
fn alter_partition_refuses_like_kafka() {
    let (mut h, id, leader, followers, epochs) = replicated();
    let e = epochs[&leader];
    let (f0, f1) = (followers[0], followers[1]);
    let outsider = *[1, 2, 3, 4].iter().find(|b| ![leader, f0, f1].contains(b)).unwrap();
    let cases: Vec<(&str, AlterPartitionRequest, ResponseError)> = vec![
        ("stale broker epoch", alter_request(&h, leader, e + 100, id, 0, &[leader]), ResponseError::StaleBrokerEpoch),
        ("unregistered sender", alter_request(&h, 9, 3, id, 0, &[leader]), ResponseError::StaleBrokerEpoch),
        (
            "unknown topic id",
            alter_request(&h, leader, e, Uuid::from_u128(77), 0, &[leader]),
            ResponseError::UnknownTopicId,
        ),
        ("unknown partition", alter_request(&h, leader, e, id, 5, &[leader]), ResponseError::UnknownTopicOrPartition),
        ("a follower", alter_request(&h, f0, epochs[&f0], id, 0, &[f0]), ResponseError::NotLeaderOrFollower),
        ("empty ISR", alter_request(&h, leader, e, id, 0, &[]), ResponseError::InvalidRequest),
        ("repeated member", alter_request(&h, leader, e, id, 0, &[leader, f0, f0]), ResponseError::InvalidRequest),
        ("leader left out", alter_request(&h, leader, e, id, 0, &[f0, f1]), ResponseError::InvalidRequest),
        ("not a replica", alter_request(&h, leader, e, id, 0, &[leader, outsider]), ResponseError::InvalidRequest),
    ];
    let mut fenced_epoch = alter_request(&h, leader, e, id, 0, &[leader]);
    fenced_epoch.topics[0].partitions[0].leader_epoch += 1;
    let mut stale_version = alter_request(&h, leader, e, id, 0, &[leader]);
    stale_version.topics[0].partitions[0].partition_epoch -= 1;
    let mut recovering = alter_request(&h, leader, e, id, 0, &[leader]);
    recovering.topics[0].partitions[0].leader_recovery_state = 1;
    let cases = cases.into_iter().chain([
        ("leader epoch differs", fenced_epoch, ResponseError::FencedLeaderEpoch),
        ("partition epoch differs", stale_version, ResponseError::InvalidUpdateVersion),
        ("leader recovering", recovering, ResponseError::InvalidRequest),
    ]);
    let before = h.image().clone();
    for (what, req, want) in cases {
        let r = h.ctl.alter_partition(&req);
        assert!(r.records.is_empty(), "{what}");
        let got = if r.response.error_code != 0 {
            r.response.error_code
        } else {
            r.response.topics[0].partitions[0].error_code
        };
        assert_eq!(got, want.code(), "{what}: {:?}", r.response);
    }
    assert_eq!(h.image(), &before);

    // Not the active controller.
    h.ctl.resign();
    let r = h.ctl.alter_partition(&alter_request(&h, leader, e, id, 0, &[leader]));
    assert_eq!(r.response.error_code, code(ResponseError::NotController));
}

#[test]
fn alter_partition_refuses_to_add_an_ineligible_replica() {
    let (mut h, id, leader, followers, epochs) = replicated();
    let (f0, f1) = (followers[0], followers[1]);
    let p = h.alter(&alter_request(&h, leader, epochs[&leader], id, 0, &[leader]));
    assert_eq!(p.error_code, 0);
    // f0 is fenced: it may not come back into the ISR.
    let last = h.image().last_offset();
    h.heartbeat_with(f0, epochs[&f0], last, true, false);
    let p = h.alter(&alter_request(&h, leader, epochs[&leader], id, 0, &[leader, f0]));
    assert_eq!(p.error_code, code(ResponseError::IneligibleReplica));
    // f1 is shutting down: likewise.
    let last = h.image().last_offset();
    h.heartbeat_with(f1, epochs[&f1], last, false, true);
    let p = h.alter(&alter_request(&h, leader, epochs[&leader], id, 0, &[leader, f1]));
    assert_eq!(p.error_code, code(ResponseError::IneligibleReplica));
    // f0 unfenced, but named at an epoch that is not its registration's (v3).
    let last = h.image().last_offset();
    assert!(!h.heartbeat(f0, epochs[&f0], last).is_fenced);
    let mut req = alter_request(&h, leader, epochs[&leader], id, 0, &[leader, f0]);
    req.topics[0].partitions[0].new_isr_with_epochs[1].broker_epoch = epochs[&f0] + 1;
    assert_eq!(h.alter(&req).error_code, code(ResponseError::IneligibleReplica));
    // At its epoch: back in.
    req.topics[0].partitions[0].new_isr_with_epochs[1].broker_epoch = epochs[&f0];
    let p = h.alter(&req);
    assert_eq!((p.error_code, p.isr.len()), (0, 2));
    // A member already in the ISR is kept whatever its state (shrinks never fail on it).
    let last = h.image().last_offset();
    h.heartbeat_with(f0, epochs[&f0], last, true, false);
    let p = h.image().partition(id, 0).unwrap().clone();
    assert_eq!(p.isr, [leader], "fencing took f0 out again");
}

// ---- unclean leader election --------------------------------------------------

/// Two brokers, a two-replica partition whose ISR is just its leader; then
/// the leader is fenced. Returns the partition afterwards.
fn leader_lost_with_isr_of_one(h: &mut Harness, configs: &[(&str, &str)]) -> (Uuid, i32, i32, PartitionRegistration) {
    let epochs = h.brokers(&[1, 2]);
    let r = h.create_with("u", 1, 2, configs);
    assert_eq!(r.error_code, 0, "{r:?}");
    let p = h.image().partition(r.topic_id, 0).unwrap().clone();
    let (leader, other) = (p.replicas[0], p.replicas[1]);
    assert_eq!(h.alter(&alter_request(h, leader, epochs[&leader], r.topic_id, 0, &[leader])).error_code, 0);
    let last = h.image().last_offset();
    h.heartbeat_with(leader, epochs[&leader], last, true, false);
    (r.topic_id, leader, other, h.image().partition(r.topic_id, 0).unwrap().clone())
}

#[test]
fn without_unclean_election_a_partition_whose_isr_is_gone_stays_offline() {
    let mut h = Harness::new();
    let (_, leader, _, p) = leader_lost_with_isr_of_one(&mut h, &[]);
    assert_eq!((p.leader, p.isr), (NO_LEADER, vec![leader]));
}

#[test]
fn unclean_election_elects_a_replica_outside_the_isr_when_the_topic_allows_it() {
    let mut h = Harness::new();
    let (id, leader, other, p) = leader_lost_with_isr_of_one(&mut h, &[("unclean.leader.election.enable", "true")]);
    assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (other, vec![other], 1), "{p:?}");
    // Now the other goes too, and the old leader returns: it is not in the
    // ISR, but unclean election gives it the partition on its unfencing.
    let epochs: BTreeMap<i32, i64> = h.image().brokers().map(|b| (b.node_id, b.epoch)).collect();
    let last = h.image().last_offset();
    h.heartbeat_with(other, epochs[&other], last, true, false);
    assert_eq!(h.image().partition(id, 0).unwrap().leader, NO_LEADER);
    let last = h.image().last_offset();
    assert!(!h.heartbeat(leader, epochs[&leader], last).is_fenced);
    let p = h.image().partition(id, 0).unwrap();
    assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (leader, vec![leader], 3));
}

#[test]
fn the_broker_default_and_the_planted_bug_enable_unclean_election_too() {
    let log = LogConfig { unclean_leader_election_enable: true, ..Default::default() };
    let mut h = Harness::with_config(config_from(BrokerConfig { log, ..Default::default() }));
    let (_, _, other, p) = leader_lost_with_isr_of_one(&mut h, &[]);
    assert_eq!(p.leader, other);
    // A topic may still refuse it.
    let log = LogConfig { unclean_leader_election_enable: true, ..Default::default() };
    let mut h = Harness::with_config(config_from(BrokerConfig { log, ..Default::default() }));
    let (_, _, _, p) = leader_lost_with_isr_of_one(&mut h, &[("unclean.leader.election.enable", "false")]);
    assert_eq!(p.leader, NO_LEADER);
    // The planted bug overrides every topic.
    let bugs = crate::config::PlantedBugs { unclean_election_always: true, ..Default::default() };
    let mut h = Harness::with_config(config_from(BrokerConfig { bugs, ..Default::default() }));
    let (_, _, other, p) = leader_lost_with_isr_of_one(&mut h, &[("unclean.leader.election.enable", "false")]);
    assert_eq!((p.leader, p.isr), (other, vec![other]));
}

// ---- ElectLeaders and the auto leader rebalance ---------------------------------

use kafka_protocol::messages::elect_leaders_request::TopicPartitions;

impl Harness {
    fn elect(&mut self, election_type: i8, partitions: Option<&[(&str, &[i32])]>) -> ElectLeadersResponse {
        let req = ElectLeadersRequest::default().with_election_type(election_type).with_topic_partitions(
            partitions.map(|ps| {
                ps.iter()
                    .map(|(t, p)| {
                        TopicPartitions::default()
                            .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(p.to_vec())
                    })
                    .collect()
            }),
        );
        let r = self.ctl.elect_leaders(&req);
        self.run(r)
    }
}

fn election_codes(r: &ElectLeadersResponse) -> Vec<(String, i32, i16)> {
    r.replica_election_results
        .iter()
        .flat_map(|t| t.partition_result.iter().map(|p| (t.topic.to_string(), p.partition_id, p.error_code)))
        .collect()
}

/// The preferred replica of a three-replica partition was fenced, came
/// back, and is in the ISR again, following.
fn preferred_replica_back_as_follower(h: &mut Harness) -> (Uuid, i32) {
    let epochs = h.brokers(&[1, 2, 3]);
    let r = h.create("p", 1, 3);
    let id = r.topic_id;
    let preferred = h.image().partition(id, 0).unwrap().replicas[0];
    let last = h.image().last_offset();
    h.heartbeat_with(preferred, epochs[&preferred], last, true, false);
    let last = h.image().last_offset();
    assert!(!h.heartbeat(preferred, epochs[&preferred], last).is_fenced);
    let p = h.image().partition(id, 0).unwrap().clone();
    assert!(p.leader != preferred && !p.isr.contains(&preferred), "{p:?}");
    assert_eq!(
        election_codes(&h.elect(0, Some(&[("p", &[0])]))),
        [("p".into(), 0, code(ResponseError::PreferredLeaderNotAvailable))]
    );
    let mut isr = p.isr.clone();
    isr.push(preferred);
    assert_eq!(h.alter(&alter_request(h, p.leader, -1, id, 0, &isr)).error_code, 0);
    (id, preferred)
}

#[test]
fn preferred_election_moves_leadership_back_to_the_first_replica() {
    let mut h = Harness::new();
    let (id, preferred) = preferred_replica_back_as_follower(&mut h);
    let before = h.image().partition(id, 0).unwrap().clone();
    let r = h.elect(0, Some(&[("p", &[0, 7]), ("nope", &[0])]));
    assert_eq!(
        election_codes(&r),
        [
            ("p".into(), 0, 0),
            ("p".into(), 7, code(ResponseError::UnknownTopicOrPartition)),
            ("nope".into(), 0, code(ResponseError::UnknownTopicOrPartition)),
        ]
    );
    let p = h.image().partition(id, 0).unwrap();
    assert_eq!((p.leader, p.leader_epoch, p.isr.clone()), (preferred, before.leader_epoch + 1, before.isr.clone()));
    assert_eq!(
        election_codes(&h.elect(0, Some(&[("p", &[0])]))),
        [("p".into(), 0, code(ResponseError::ElectionNotNeeded))]
    );
    // Asked for every partition: only elections that happened are listed.
    assert!(h.elect(0, None).replica_election_results.is_empty());
    assert_eq!(h.elect(9, None).error_code, code(ResponseError::InvalidRequest));
}

#[test]
fn unclean_election_on_request_ignores_the_topic_config() {
    let mut h = Harness::new();
    let (id, _, other, p) = leader_lost_with_isr_of_one(&mut h, &[]);
    assert_eq!(p.leader, NO_LEADER);
    // Preferred cannot help: the preferred replica is fenced.
    assert_eq!(
        election_codes(&h.elect(0, Some(&[("u", &[0])]))),
        [("u".into(), 0, code(ResponseError::PreferredLeaderNotAvailable))]
    );
    let r = h.elect(1, None);
    assert_eq!(election_codes(&r), [("u".into(), 0, 0)]);
    let p = h.image().partition(id, 0).unwrap();
    assert_eq!((p.leader, p.isr.clone()), (other, vec![other]));
    assert_eq!(
        election_codes(&h.elect(1, Some(&[("u", &[0])]))),
        [("u".into(), 0, code(ResponseError::ElectionNotNeeded))]
    );
    // No usable replica at all.
    let epoch = h.image().broker(other).unwrap().epoch;
    let last = h.image().last_offset();
    h.heartbeat_with(other, epoch, last, true, false);
    assert_eq!(
        election_codes(&h.elect(1, Some(&[("u", &[0])]))),
        [("u".into(), 0, code(ResponseError::EligibleLeadersNotAvailable))]
    );
    h.ctl.resign();
    let r = h.ctl.elect_leaders(&ElectLeadersRequest::default());
    assert_eq!(r.response.error_code, code(ResponseError::NotController));
}

#[test]
fn the_auto_leader_rebalance_moves_leaders_back_every_interval() {
    let mut c = config();
    c.leader_rebalance_interval_ms = Some(5_000);
    let mut h = Harness::with_config(c);
    let (id, preferred) = preferred_replica_back_as_follower(&mut h);
    let start = h.now;
    assert_eq!(h.ctl.next_deadline(), Some(start + 5_000), "the rebalance is due before any session lapses");
    h.tick();
    assert_ne!(h.image().partition(id, 0).unwrap().leader, preferred, "not before the interval");
    h.now = start + 5_000;
    h.tick();
    assert_eq!(h.image().partition(id, 0).unwrap().leader, preferred);
    assert_eq!(h.ctl.next_deadline(), Some(start + SESSION + 1));
    // Off: never.
    let mut h = Harness::new();
    let (id, preferred) = preferred_replica_back_as_follower(&mut h);
    h.now += 8_000;
    h.tick();
    assert_ne!(h.image().partition(id, 0).unwrap().leader, preferred);
}

#[test]
fn broker_config_turns_the_rebalance_on_by_default() {
    let c = ControllerConfig::from_broker_config(&BrokerConfig::default());
    assert_eq!(c.leader_rebalance_interval_ms, Some(300_000));
    let off = BrokerConfig { auto_leader_rebalance_enable: false, ..Default::default() };
    assert_eq!(ControllerConfig::from_broker_config(&off).leader_rebalance_interval_ms, None);
}

// ---- AllocateProducerIds ------------------------------------------------------------

#[test]
fn producer_id_blocks_never_overlap_across_brokers_failovers_and_snapshots() {
    let mut h = Harness::new();
    let epochs = h.brokers(&[1, 2]);
    let ask = |node: i32, epoch: i64| {
        AllocateProducerIdsRequest::default().with_broker_id(BrokerId(node)).with_broker_epoch(epoch)
    };
    let r = h.ctl.allocate_producer_ids(&ask(1, epochs[&1]));
    assert_eq!(r.records.len(), 1);
    assert_eq!(r.commit_offset, Some(h.next_offset), "answered once the block is committed");
    let a = h.run(r);
    let r = h.ctl.allocate_producer_ids(&ask(2, epochs[&2]));
    let b = h.run(r);
    assert_eq!((a.error_code, a.producer_id_start.0, a.producer_id_len), (0, 0, PRODUCER_ID_BLOCK_SIZE));
    assert_eq!((b.error_code, b.producer_id_start.0), (0, PRODUCER_ID_BLOCK_SIZE as i64));
    assert_eq!(h.image().next_producer_id(), 2 * PRODUCER_ID_BLOCK_SIZE as i64);
    // Stale or unknown brokers get nothing.
    for req in [ask(1, epochs[&1] + 1), ask(9, 0)] {
        let r = h.ctl.allocate_producer_ids(&req);
        assert!(r.records.is_empty());
        assert_eq!(r.response.error_code, code(ResponseError::StaleBrokerEpoch));
    }
    // A snapshot keeps the counter; a new controller continues after it.
    let snap = MetadataImage::from_snapshot(&h.image().to_snapshot()).unwrap();
    assert_eq!(snap.next_producer_id(), h.image().next_producer_id());
    let mut next = QuorumController::new(config(), 3);
    next.load_snapshot(snap);
    h.ctl.resign();
    h.next_offset += 1;
    h.ctl = next;
    let r = h.ctl.activate(h.next_offset, h.now);
    h.run(r);
    let r = h.ctl.allocate_producer_ids(&ask(1, epochs[&1]));
    let c = h.run(r);
    assert_eq!(c.producer_id_start.0, 2 * PRODUCER_ID_BLOCK_SIZE as i64);
    h.ctl.resign();
    assert_eq!(
        h.ctl.allocate_producer_ids(&ask(1, epochs[&1])).response.error_code,
        code(ResponseError::NotController)
    );
}
