//! Consumer groups (KIP-848) driven heartbeat by heartbeat, with no socket,
//! no disk and time moved by hand: joins, assignment, revocation before
//! reassignment, fencing, session expiry, leaving, static members, the
//! classic/consumer boundary, a rebuild from the records, and a property
//! test that no partition is ever owned by two members.

use std::collections::BTreeSet;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;
use proptest::prelude::*;
use uuid::Uuid;

use super::consumer::{TopicMeta, TopicsView};
use super::coordinator::{Client, Effects, GroupCoordinator};
use super::records::{Assignment, Record};
use crate::config::{GroupConfig, PlantedBugs};
use crate::server::node::Clock;

const G: &str = "kip848";
const T: u128 = 0xA;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

struct H {
    c: GroupCoordinator,
    clock: Clock,
    log: Vec<Record>,
    topics: TopicsView,
}

/// A client's view: what it owns and its epoch.
#[derive(Debug, Clone, Default)]
struct Member {
    id: String,
    epoch: i32,
    owned: Assignment,
}

impl H {
    fn new(partitions: i32) -> H {
        let mut topics = TopicsView::new();
        topics.insert("events".into(), TopicMeta { id: Uuid::from_u128(T), partitions });
        H {
            c: GroupCoordinator::new(0, GroupConfig::default(), PlantedBugs::default()),
            clock: Clock { now_ms: 1_700_000_000_000, elapsed: Duration::from_secs(1) },
            log: Vec::new(),
            topics,
        }
    }

    fn advance(&mut self, ms: u64) {
        self.clock.elapsed += Duration::from_millis(ms);
        self.clock.now_ms += ms as i64;
        let mut fx = Effects::default();
        self.c.tick(self.clock, &mut fx);
        self.log.extend(fx.records);
    }

    fn send(&mut self, req: &ConsumerGroupHeartbeatRequest) -> ConsumerGroupHeartbeatResponse {
        let mut fx = Effects::default();
        let r = self.c.consumer_heartbeat(
            req,
            Client { client_id: "c", client_host: "/h" },
            &self.topics,
            self.clock,
            &mut fx,
        );
        self.log.extend(fx.records);
        r
    }

    fn req(m: &Member, instance: Option<&str>) -> ConsumerGroupHeartbeatRequest {
        let mut r = ConsumerGroupHeartbeatRequest::default();
        r.group_id = GroupId(sb(G));
        r.member_id = sb(&m.id);
        r.member_epoch = m.epoch;
        r.instance_id = instance.map(sb);
        r.rebalance_timeout_ms = if m.epoch == 0 { 60_000 } else { -1 };
        if m.epoch == 0 {
            r.subscribed_topic_names = Some(vec![TopicName(sb("events"))]);
        }
        r.topic_partitions = Some(
            m.owned
                .iter()
                .map(|(t, ps)| {
                    let mut tp = TopicPartitions::default();
                    tp.topic_id = *t;
                    tp.partitions = ps.iter().copied().collect();
                    tp
                })
                .collect(),
        );
        r
    }

    /// One heartbeat of `m`, which then acts as a client does: adopt the
    /// epoch and assignment (dropping revoked partitions at once), or, if
    /// fenced, drop everything and rejoin at epoch 0.
    fn beat(&mut self, m: &mut Member) -> ConsumerGroupHeartbeatResponse {
        let r = self.send(&H::req(m, None));
        if r.error_code == ResponseError::FencedMemberEpoch.code()
            || r.error_code == ResponseError::UnknownMemberId.code()
        {
            m.epoch = 0;
            m.owned.clear();
        } else if r.error_code == 0 {
            m.epoch = r.member_epoch;
            if let Some(a) = &r.assignment {
                m.owned = a
                    .topic_partitions
                    .iter()
                    .map(|tp| (tp.topic_id, tp.partitions.iter().copied().collect()))
                    .collect();
            }
        }
        r
    }

    fn join(&mut self, id: &str) -> Member {
        let mut m = Member { id: id.into(), ..Member::default() };
        let r = self.beat(&mut m);
        assert_eq!(r.error_code, 0, "{r:?}");
        m
    }

    fn owned_count(m: &Member) -> usize {
        m.owned.values().map(BTreeSet::len).sum()
    }

    fn replay(&self) -> GroupCoordinator {
        let mut fresh = GroupCoordinator::new(0, GroupConfig::default(), PlantedBugs::default());
        for r in &self.log {
            let (k, v) = r.encode();
            fresh.apply(Record::decode(&k, v.as_deref()).unwrap(), self.clock);
        }
        fresh
    }
}

fn disjoint(members: &[&Member]) -> bool {
    let mut seen = BTreeSet::new();
    members.iter().all(|m| m.owned.iter().all(|(t, ps)| ps.iter().all(|p| seen.insert((*t, *p)))))
}

#[test]
fn a_member_joins_and_gets_every_partition() {
    let mut h = H::new(6);
    let m = h.join("a");
    assert!(m.epoch > 0);
    assert_eq!(H::owned_count(&m), 6);
    let g = h.c.consumer_group(G).unwrap();
    assert_eq!(g.state().name(), "Stable");
    assert_eq!(g.assignor, "uniform");
}

#[test]
fn partitions_move_only_after_the_old_owner_revokes_them() {
    let mut h = H::new(6);
    let mut a = h.join("a");
    let mut b = h.join("b");
    // b joined: the target gives it three, but a still owns them.
    assert_eq!(H::owned_count(&b), 0);
    assert!(disjoint(&[&a, &b]));
    // a's heartbeat: it is told to keep three (the others are revoked).
    h.beat(&mut a);
    assert_eq!(H::owned_count(&a), 3);
    let ga = &h.c.consumer_group(G).unwrap().members["a"];
    assert_eq!(ga.pending_revocation.values().map(BTreeSet::len).sum::<usize>(), 3, "revocation not yet acknowledged");
    // b still gets nothing: a has not acknowledged.
    h.beat(&mut b);
    assert_eq!(H::owned_count(&b), 0);
    // a acknowledges (its owned partitions no longer list them), then b gets them.
    h.beat(&mut a);
    h.beat(&mut b);
    assert_eq!(H::owned_count(&b), 3);
    assert!(disjoint(&[&a, &b]));
    assert_eq!(h.c.consumer_group(G).unwrap().state().name(), "Stable");
    assert_eq!(a.epoch, b.epoch);
}

#[test]
fn a_stale_epoch_is_fenced_and_an_unknown_member_refused() {
    let mut h = H::new(4);
    let mut a = h.join("a");
    let mut wrong = a.clone();
    wrong.epoch += 5;
    assert_eq!(h.send(&H::req(&wrong, None)).error_code, ResponseError::FencedMemberEpoch.code());
    let ghost = Member { id: "ghost".into(), epoch: 3, owned: Assignment::new() };
    assert_eq!(h.send(&H::req(&ghost, None)).error_code, ResponseError::UnknownMemberId.code());
    // The previous epoch is tolerated when it owns no more than it has (a lost answer).
    let _b = h.join("b");
    h.beat(&mut a);
    h.beat(&mut a);
    let g = &h.c.consumer_group(G).unwrap().members["a"];
    let mut lost = a.clone();
    lost.epoch = g.previous_member_epoch;
    assert_eq!(h.send(&H::req(&lost, None)).error_code, 0);
}

#[test]
fn a_silent_member_is_removed_after_the_session_timeout() {
    let mut h = H::new(6);
    let mut a = h.join("a");
    let mut b = h.join("b");
    for _ in 0..3 {
        h.beat(&mut a);
        h.beat(&mut b);
    }
    assert_eq!(H::owned_count(&a) + H::owned_count(&b), 6);
    for _ in 0..10 {
        h.advance(5_000);
        h.beat(&mut a);
    }
    assert!(!h.c.consumer_group(G).unwrap().members.contains_key("b"));
    assert_eq!(H::owned_count(&a), 6);
    assert_eq!(h.beat(&mut b).error_code, ResponseError::UnknownMemberId.code());
}

#[test]
fn a_leaving_member_frees_its_partitions_at_once() {
    let mut h = H::new(6);
    let mut a = h.join("a");
    let mut b = h.join("b");
    for _ in 0..3 {
        h.beat(&mut a);
        h.beat(&mut b);
    }
    let mut leave = b.clone();
    leave.epoch = -1;
    let r = h.send(&H::req(&leave, None));
    assert_eq!((r.error_code, r.member_epoch), (0, -1));
    h.beat(&mut a);
    assert_eq!(H::owned_count(&a), 6);
    // The last member leaves: the group is empty, and, with no offsets, forgotten.
    let mut leave = a.clone();
    leave.epoch = -1;
    h.send(&H::req(&leave, None));
    assert_eq!(h.c.consumer_group(G).unwrap().state().name(), "Empty");
    h.advance(1);
    assert!(h.c.consumer_group(G).is_err());
}

#[test]
fn a_static_member_comes_back_to_its_partitions() {
    let mut h = H::new(4);
    let mut a = Member { id: "a1".into(), ..Member::default() };
    h.send(&H::req(&a, Some("inst")));
    a.epoch = h.c.consumer_group(G).unwrap().members["a1"].member_epoch;
    let before = h.c.consumer_group(G).unwrap().members["a1"].assigned.clone();
    let mut leave = a.clone();
    leave.epoch = -2;
    assert_eq!(h.send(&H::req(&leave, Some("inst"))).member_epoch, -2);
    // Another process with the same instance id while the first still holds it.
    let other = Member { id: "a2".into(), ..Member::default() };
    let r = h.send(&H::req(&other, Some("inst")));
    assert_eq!(r.error_code, 0, "{r:?}");
    let g = h.c.consumer_group(G).unwrap();
    assert!(!g.members.contains_key("a1"));
    assert_eq!(g.members["a2"].assigned, before);
    // A third one while a2 is active: refused.
    let third = Member { id: "a3".into(), ..Member::default() };
    assert_eq!(h.send(&H::req(&third, Some("inst"))).error_code, ResponseError::UnreleasedInstanceId.code());
    // A reload knows a2 as the instance's member, with a1's partitions.
    let reloaded = h.replay();
    let g = reloaded.consumer_group(G).unwrap();
    assert_eq!(g.static_members["inst"], "a2");
    assert!(!g.members.contains_key("a1"));
    assert_eq!(g.members["a2"].assigned, before);
}

#[test]
fn offsets_commit_with_the_member_epoch() {
    let mut h = H::new(2);
    let a = h.join("a");
    assert_eq!(h.c.admit_commit(G, a.epoch, "a", None, 9, h.clock), Ok(()));
    assert_eq!(h.c.admit_commit(G, a.epoch - 1, "a", None, 9, h.clock), Err(ResponseError::StaleMemberEpoch));
    assert_eq!(h.c.admit_commit(G, a.epoch, "nobody", None, 9, h.clock), Err(ResponseError::UnknownMemberId));
    assert_eq!(h.c.admit_commit(G, -1, "", None, 9, h.clock), Err(ResponseError::UnknownMemberId));
    assert_eq!(h.c.admit_fetch(G, Some("a"), a.epoch), Ok(()));
    assert_eq!(h.c.admit_fetch(G, Some("a"), a.epoch + 1), Err(ResponseError::StaleMemberEpoch));
    assert_eq!(h.c.admit_fetch(G, None, -1), Ok(()));
}

#[test]
fn classic_and_consumer_groups_do_not_mix_while_in_use() {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::JoinGroupRequest;
    let mut h = H::new(2);
    let _a = h.join("a");
    let mut j = JoinGroupRequest::default();
    j.group_id = GroupId(sb(G));
    j.session_timeout_ms = 10_000;
    j.rebalance_timeout_ms = 10_000;
    j.protocol_type = sb("consumer");
    j.protocols = vec![JoinGroupRequestProtocol::default().with_name(sb("range"))];
    let mut fx = Effects::default();
    let answer = h.c.join(&j, 9, Client { client_id: "c", client_host: "/h" }, h.clock, &mut fx);
    let super::coordinator::Answer::Now(r) = answer else { panic!("parked") };
    assert_eq!(r.error_code, ResponseError::InconsistentGroupProtocol.code());
    // A classic group with members refuses consumer members.
    let mut h2 = H::new(2);
    let mut j2 = j.clone();
    j2.group_id = GroupId(sb("classic"));
    let mut fx = Effects::default();
    h2.c.join(&j2, 3, Client { client_id: "c", client_host: "/h" }, h2.clock, &mut fx);
    let mut req = H::req(&Member { id: "x".into(), ..Member::default() }, None);
    req.group_id = GroupId(sb("classic"));
    assert_eq!(h2.send(&req).error_code, ResponseError::GroupIdNotFound.code());
}

#[test]
fn a_restarted_coordinator_rebuilds_the_group_from_its_records() {
    let mut h = H::new(6);
    let mut a = h.join("a");
    let mut b = h.join("b");
    h.beat(&mut a);
    let mid = h.replay();
    let g = mid.consumer_group(G).unwrap();
    let live = h.c.consumer_group(G).unwrap();
    assert_eq!((g.epoch, g.assignment_epoch), (live.epoch, live.assignment_epoch));
    for (id, m) in &live.members {
        let r = &g.members[id];
        assert_eq!(
            (r.member_epoch, &r.assigned, &r.pending_revocation),
            (m.member_epoch, &m.assigned, &m.pending_revocation)
        );
        assert_eq!(g.target.get(id), live.target.get(id));
    }
    // The rebuilt coordinator carries on where the old one stopped.
    h.c = mid;
    h.beat(&mut a);
    h.beat(&mut b);
    h.beat(&mut b);
    assert_eq!(H::owned_count(&a) + H::owned_count(&b), 6);
    assert!(disjoint(&[&a, &b]));
    assert!(a.epoch > 0 && b.epoch > 0);
}

#[test]
fn a_bad_regex_and_unknown_assignor_are_refused() {
    let mut h = H::new(2);
    let mut req = H::req(&Member { id: "a".into(), ..Member::default() }, None);
    req.subscribed_topic_names = None;
    req.subscribed_topic_regex = Some(sb("ev(ents"));
    assert_eq!(h.send(&req).error_code, ResponseError::InvalidRegularExpression.code());
    req.subscribed_topic_regex = Some(sb("ev.*"));
    req.server_assignor = Some(sb("sticky"));
    assert_eq!(h.send(&req).error_code, ResponseError::UnsupportedAssignor.code());
    req.server_assignor = Some(sb("range"));
    let r = h.send(&req);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.assignment.unwrap().topic_partitions[0].partitions, vec![0, 1]);
    assert_eq!(h.c.consumer_group(G).unwrap().assignor, "range");
}

#[derive(Debug, Clone)]
enum Op {
    Beat(usize),
    Leave(usize),
    Rejoin(usize),
    Pass(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..4usize).prop_map(Op::Beat),
        1 => (0..4usize).prop_map(Op::Leave),
        1 => (0..4usize).prop_map(Op::Rejoin),
        1 => (1..3_000u64).prop_map(Op::Pass),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the order of heartbeats, leaves and rejoins, no partition is
    /// ever owned by two members (on the coordinator, and on the clients
    /// acting on its answers); and once everyone heartbeats a few rounds,
    /// every partition is owned.
    #[test]
    fn no_partition_is_ever_owned_by_two_members(ops in proptest::collection::vec(op(), 1..120), partitions in 1..9i32) {
        let mut h = H::new(partitions);
        let mut members: Vec<Option<Member>> = (0..4).map(|i| Some(h.join(&format!("m{i}")))).collect();
        for op in ops {
            match op {
                Op::Beat(i) => if let Some(m) = members[i].as_mut() { h.beat(m); },
                Op::Leave(i) => if let Some(m) = members[i].take() {
                    let mut leave = m.clone();
                    leave.epoch = -1;
                    h.send(&H::req(&leave, None));
                },
                Op::Rejoin(i) => if members[i].is_none() { members[i] = Some(h.join(&format!("m{i}-again"))); },
                Op::Pass(ms) => {
                    h.advance(ms);
                    // A client whose session ended drops its partitions, as
                    // its own session timer makes it do.
                    let g = h.c.consumer_group(G).ok();
                    for m in members.iter_mut().flatten() {
                        if !g.is_some_and(|g| g.members.contains_key(&m.id)) {
                            m.owned.clear();
                            m.epoch = 0;
                        }
                    }
                }
            }
            let live: Vec<&Member> = members.iter().flatten().collect();
            prop_assert!(disjoint(&live), "clients overlap: {live:?}");
            let Ok(g) = h.c.consumer_group(G) else { continue };
            let mut seen = BTreeSet::new();
            for m in g.members.values() {
                for (t, ps) in m.assigned.iter().chain(m.pending_revocation.iter()) {
                    for p in ps {
                        prop_assert!(seen.insert((*t, *p)), "partition {p} owned twice on the coordinator");
                    }
                }
            }
        }
        if members.iter().all(Option::is_none) {
            return Ok(());
        }
        for _ in 0..6 {
            for m in members.iter_mut().flatten() {
                h.beat(m);
            }
        }
        let live: Vec<&Member> = members.iter().flatten().collect();
        let total: usize = live.iter().map(|m| H::owned_count(m)).sum();
        prop_assert_eq!(total, partitions as usize);
        prop_assert!(disjoint(&live));
        prop_assert_eq!(h.c.consumer_group(G).unwrap().state().name(), "Stable");
    }
}
