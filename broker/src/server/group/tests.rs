//! The group coordinator driven call by call, with no socket, no disk and
//! time moved by hand: two-step joins, generations, timeouts, stale
//! members, static members, and a rebuild from the records it asked for.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{GroupId, JoinGroupRequest, JoinGroupResponse, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::coordinator::{Answer, Client, Effects, GroupCoordinator, GroupState, Ticket};
use super::records::{OffsetValue, Record};
use super::{java_string_hash, partition_for};
use crate::config::{GroupConfig, PlantedBugs};
use crate::server::node::Clock;

const G: &str = "orders";

struct H {
    c: GroupCoordinator,
    clock: Clock,
    /// Every record the coordinator asked to write, in order.
    log: Vec<Record>,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl H {
    fn new() -> H {
        H::with(GroupConfig { group_initial_rebalance_delay_ms: 0, ..GroupConfig::default() }, PlantedBugs::default())
    }

    fn with(config: GroupConfig, bugs: PlantedBugs) -> H {
        H {
            c: GroupCoordinator::new(3, config, bugs),
            clock: Clock { now_ms: 1_700_000_000_000, elapsed: Duration::from_secs(1) },
            log: Vec::new(),
        }
    }

    fn advance(&mut self, ms: u64) {
        self.clock.elapsed += Duration::from_millis(ms);
        self.clock.now_ms += ms as i64;
        let mut fx = Effects::default();
        self.c.tick(self.clock, &mut fx);
        self.log.extend(fx.records);
    }

    fn join_req(member: &str, instance: Option<&str>, protocols: &[&str]) -> JoinGroupRequest {
        let mut r = JoinGroupRequest::default();
        r.group_id = GroupId(sb(G));
        r.session_timeout_ms = 10_000;
        r.rebalance_timeout_ms = 30_000;
        r.member_id = sb(member);
        r.group_instance_id = instance.map(sb);
        r.protocol_type = sb("consumer");
        r.protocols = protocols
            .iter()
            .map(|p| {
                let mut jp = JoinGroupRequestProtocol::default();
                jp.name = sb(p);
                jp.metadata = Bytes::from(format!("meta-{p}"));
                jp
            })
            .collect();
        r
    }

    fn join_with(&mut self, req: &JoinGroupRequest, version: i16) -> Answer<JoinGroupResponse> {
        let mut fx = Effects::default();
        let a = self.c.join(req, version, Client { client_id: "c", client_host: "/h" }, self.clock, &mut fx);
        self.log.extend(fx.records);
        a
    }

    fn join(&mut self, member: &str, instance: Option<&str>) -> Answer<JoinGroupResponse> {
        self.join_with(&Self::join_req(member, instance, &["range", "roundrobin"]), 9)
    }

    /// KIP-394: the first join gets MEMBER_ID_REQUIRED and an id; the second parks.
    fn join_new(&mut self) -> (String, Answer<JoinGroupResponse>) {
        let Answer::Now(r) = self.join("", None) else { panic!("first join must be answered") };
        assert_eq!(r.error_code, ResponseError::MemberIdRequired.code());
        let id = r.member_id.to_string();
        assert!(!id.is_empty());
        let a = self.join(&id, None);
        (id, a)
    }

    fn take_join(&mut self, t: &Ticket) -> JoinGroupResponse {
        self.c.take_join(t).expect("join answer ready")
    }

    fn sync(&mut self, member: &str, generation: i32, assign: &[(&str, &str)]) -> Answer<SyncGroupResponse> {
        let mut r = SyncGroupRequest::default();
        r.group_id = GroupId(sb(G));
        r.member_id = sb(member);
        r.generation_id = generation;
        r.assignments = assign
            .iter()
            .map(|(m, a)| {
                let mut x = SyncGroupRequestAssignment::default();
                x.member_id = sb(m);
                x.assignment = Bytes::from(a.to_string());
                x
            })
            .collect();
        let mut fx = Effects::default();
        let a = self.c.sync(&r, self.clock, &mut fx);
        self.log.extend(fx.records);
        // The records are durable at once here.
        for g in fx.hold {
            self.c.hold_until(&g, 0);
        }
        self.c.release_durable(1, self.clock, &mut Effects::default());
        match a {
            Answer::Wait(t) => match self.c.take_sync(&t) {
                Some(r) => Answer::Now(r),
                None => Answer::Wait(t),
            },
            now => now,
        }
    }

    fn heartbeat(&mut self, member: &str, generation: i32) -> Result<(), ResponseError> {
        self.c.heartbeat(G, member, None, generation, self.clock)
    }

    fn state(&self) -> (GroupState, i32, usize) {
        let d = self.c.describe(G).expect("group exists");
        (d.state, d.generation, d.members.len())
    }

    fn commit(&mut self, generation: i32, member: &str, offset: i64) -> Result<(), ResponseError> {
        self.c.admit_commit(G, generation, member, None, 8, self.clock)?;
        let value =
            OffsetValue { offset, leader_epoch: -1, metadata: String::new(), commit_timestamp: self.clock.now_ms };
        let r = Record::Offset { group: G.into(), topic: "t".into(), partition: 0, value: Some(value) };
        self.log.push(r.clone());
        self.c.apply(r, self.clock);
        Ok(())
    }

    /// One member, joined and synced: (member id, generation).
    fn stable_one(&mut self) -> (String, i32) {
        let (a, ans) = self.join_new();
        let Answer::Now(r) = ans else { panic!("a lone member completes the join at once without an initial delay") };
        assert_eq!(r.error_code, 0);
        assert_eq!(r.leader.as_str(), a);
        let Answer::Now(s) = self.sync(&a, r.generation_id, &[(&a, "all")]) else { panic!("leader sync answers") };
        assert_eq!(s.assignment, Bytes::from_static(b"all"));
        (a, r.generation_id)
    }
}

#[test]
fn group_partition_is_java_hash_code() {
    // "orders".hashCode() in Java.
    assert_eq!(java_string_hash("orders"), -1008770331);
    assert_eq!(partition_for("orders", 50), 31);
    assert_eq!(partition_for("", 50), 0);
    for g in ["a", "group-1", "console-consumer-12345", "ÿ€"] {
        assert!((0..50).contains(&partition_for(g, 50)));
    }
}

#[test]
fn two_step_join_then_sync_makes_the_group_stable() {
    let mut h = H::new();
    let (a, gen) = h.stable_one();
    assert_eq!(gen, 1);
    assert_eq!(h.state(), (GroupState::Stable, 1, 1));
    assert_eq!(h.heartbeat(&a, 1), Ok(()));
    // The stable metadata was written for the group.
    assert!(
        matches!(h.log.last(), Some(Record::Group { value: Some(v), .. }) if v.generation == 1 && v.members.len() == 1)
    );
}

#[test]
fn a_second_member_bumps_the_generation_and_old_members_rejoin() {
    let mut h = H::new();
    let (a, gen1) = h.stable_one();
    let (b, ans) = h.join_new();
    let Answer::Wait(tb) = ans else { panic!("the newcomer waits for the others to rejoin") };
    assert_eq!(h.state().0, GroupState::PreparingRebalance);
    // The old member learns of the rebalance from its heartbeat, and its
    // commits of the old generation are still accepted until the join completes.
    assert_eq!(h.heartbeat(&a, gen1), Err(ResponseError::RebalanceInProgress));
    assert_eq!(h.commit(gen1, &a, 5), Ok(()));
    let Answer::Now(ra) = h.join(&a, None) else { panic!("the last member to rejoin completes the join") };
    let rb = h.take_join(&tb);
    assert_eq!(ra.generation_id, gen1 + 1);
    assert_eq!(rb.generation_id, gen1 + 1);
    assert_eq!(ra.leader, rb.leader);
    let leader = ra.leader.to_string();
    let (l, f, lr) = if leader == a { (a.clone(), b.clone(), ra) } else { (b.clone(), a.clone(), rb) };
    assert_eq!(lr.members.len(), 2, "the leader sees every member's metadata");
    assert_eq!(lr.protocol_name.as_deref(), Some("range"));
    // The follower's sync waits for the leader's.
    let Answer::Wait(tf) = h.sync(&f, gen1 + 1, &[]) else { panic!("follower sync waits") };
    assert_eq!(h.commit(gen1 + 1, &f, 6), Err(ResponseError::RebalanceInProgress));
    let Answer::Now(sl) = h.sync(&l, gen1 + 1, &[(&l, "p0-2"), (&f, "p3-5")]) else { panic!("leader sync answers") };
    assert_eq!(sl.assignment, Bytes::from_static(b"p0-2"));
    let sf = h.c.take_sync(&tf).expect("follower answered");
    assert_eq!((sf.error_code, sf.assignment), (0, Bytes::from_static(b"p3-5")));
    assert_eq!(h.state(), (GroupState::Stable, gen1 + 1, 2));
    // Anything from the old generation is now refused.
    assert_eq!(h.heartbeat(&a, gen1), Err(ResponseError::IllegalGeneration));
    assert_eq!(h.commit(gen1, &a, 7), Err(ResponseError::IllegalGeneration));
    assert_eq!(h.commit(gen1 + 1, "ghost", 7), Err(ResponseError::UnknownMemberId));
    assert_eq!(h.commit(gen1 + 1, &a, 7), Ok(()));
}

#[test]
fn a_silent_member_is_removed_at_its_session_timeout() {
    let mut h = H::new();
    let (a, _) = h.stable_one();
    let (b, ans) = h.join_new();
    let Answer::Wait(tb) = ans else { panic!() };
    let Answer::Now(_) = h.join(&a, None) else { panic!() };
    let rb = h.take_join(&tb);
    let gen = rb.generation_id;
    let leader = rb.leader.to_string();
    let assign: Vec<(&str, &str)> = vec![(a.as_str(), "x"), (b.as_str(), "y")];
    let Answer::Now(_) = h.sync(&leader, gen, &assign) else { panic!() };
    let other = if leader == a { b.clone() } else { a.clone() };
    let Answer::Now(_) = h.sync(&other, gen, &[]) else { panic!("stable: answered at once") };
    // Only `a` heartbeats.
    for _ in 0..4 {
        h.advance(3_000);
        let _ = h.heartbeat(&a, gen);
    }
    let d = h.c.describe(G).unwrap();
    assert_eq!(d.members.len(), 1, "b timed out");
    assert_eq!(d.state, GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat(&b, gen), Err(ResponseError::UnknownMemberId));
    let Answer::Now(r) = h.join(&a, None) else { panic!("sole member completes the rejoin") };
    assert_eq!(r.generation_id, gen + 1);
}

#[test]
fn a_member_that_never_rejoins_is_dropped_at_the_rebalance_timeout() {
    let mut h = H::new();
    let (a, _) = h.stable_one();
    let (_b, ans) = h.join_new();
    let Answer::Wait(tb) = ans else { panic!() };
    // `a` keeps heartbeating but never rejoins (a consumer stuck in poll).
    for _ in 0..11 {
        h.advance(3_000);
        let _ = h.heartbeat(&a, 1);
    }
    let rb = h.take_join(&tb);
    assert_eq!(rb.error_code, 0);
    assert_eq!(rb.generation_id, 2);
    assert_eq!(h.state(), (GroupState::CompletingRebalance, 2, 1));
    assert_eq!(h.heartbeat(&a, 1), Err(ResponseError::UnknownMemberId));
}

#[test]
fn leaving_empties_the_group_with_a_new_generation() {
    let mut h = H::new();
    let (a, gen) = h.stable_one();
    h.commit(gen, &a, 10).unwrap();
    let mut fx = Effects::default();
    let out = h.c.leave(G, &[(a.clone(), None), ("nobody".into(), None)], h.clock, &mut fx);
    assert_eq!(out, vec![Ok(()), Err(ResponseError::UnknownMemberId)]);
    assert_eq!(h.state(), (GroupState::Empty, gen + 1, 0));
    // An empty group takes simple (generation -1) commits, as a consumer using assign() makes.
    assert_eq!(h.commit(-1, "", 11), Ok(()));
    assert_eq!(h.c.committed(G, "t", 0).unwrap().offset, 11);
}

#[test]
fn the_initial_delay_gathers_members_before_the_first_rebalance() {
    let mut h = H::with(
        GroupConfig { group_initial_rebalance_delay_ms: 3_000, ..GroupConfig::default() },
        PlantedBugs::default(),
    );
    let (_a, ans) = h.join_new();
    let Answer::Wait(ta) = ans else { panic!("the first join waits out the delay") };
    h.advance(2_000);
    let (_b, ans) = h.join_new();
    let Answer::Wait(tb) = ans else { panic!() };
    h.advance(2_000);
    assert!(h.c.take_join(&ta).is_none(), "the newcomer extended the delay");
    h.advance(1_500);
    let (ra, rb) = (h.take_join(&ta), h.take_join(&tb));
    assert_eq!((ra.generation_id, rb.generation_id), (1, 1));
    assert_eq!(h.state(), (GroupState::CompletingRebalance, 1, 2));
}

#[test]
fn protocols_are_chosen_from_what_every_member_supports() {
    let mut h = H::new();
    let first = H::join_req("", None, &["cooperative-sticky", "range"]);
    let Answer::Now(r) = h.join_with(&first, 9) else { panic!() };
    let a = r.member_id.to_string();
    let Answer::Now(r) = h.join_with(&H::join_req(&a, None, &["cooperative-sticky", "range"]), 9) else { panic!() };
    assert_eq!(r.protocol_name.as_deref(), Some("cooperative-sticky"));
    // A member with nothing in common is refused; one sharing `range` moves the group to it.
    let odd = H::join_req("", None, &["roundrobin"]);
    let Answer::Now(r) = h.join_with(&odd, 9) else { panic!() };
    assert_eq!(r.error_code, ResponseError::InconsistentGroupProtocol.code());
    let mut other_type = H::join_req("", None, &["range"]);
    other_type.protocol_type = sb("connect");
    let Answer::Now(r) = h.join_with(&other_type, 9) else { panic!() };
    assert_eq!(r.error_code, ResponseError::InconsistentGroupProtocol.code());
    let Answer::Now(r) = h.join_with(&H::join_req("", None, &["range"]), 9) else { panic!() };
    let b = r.member_id.to_string();
    let Answer::Wait(tb) = h.join_with(&H::join_req(&b, None, &["range"]), 9) else { panic!() };
    let Answer::Now(ra) = h.join_with(&H::join_req(&a, None, &["cooperative-sticky", "range"]), 9) else { panic!() };
    assert_eq!(ra.protocol_name.as_deref(), Some("range"));
    assert_eq!(h.take_join(&tb).protocol_name.as_deref(), Some("range"));
}

#[test]
fn limits_are_enforced_with_kafka_errors() {
    let mut h = H::with(
        GroupConfig { group_initial_rebalance_delay_ms: 0, group_max_size: 1, ..GroupConfig::default() },
        PlantedBugs::default(),
    );
    let mut short = H::join_req("", None, &["range"]);
    short.session_timeout_ms = 5_999;
    let Answer::Now(r) = h.join_with(&short, 9) else { panic!() };
    assert_eq!(r.error_code, ResponseError::InvalidSessionTimeout.code());
    short.session_timeout_ms = 1_800_001;
    let Answer::Now(r) = h.join_with(&short, 9) else { panic!() };
    assert_eq!(r.error_code, ResponseError::InvalidSessionTimeout.code());
    let mut nameless = H::join_req("", None, &["range"]);
    nameless.group_id = GroupId(sb(""));
    let Answer::Now(r) = h.join_with(&nameless, 9) else { panic!() };
    assert_eq!(r.error_code, ResponseError::InvalidGroupId.code());
    h.stable_one();
    let Answer::Now(r) = h.join("", None) else { panic!() };
    assert_eq!(r.error_code, ResponseError::GroupMaxSizeReached.code());
    let Answer::Now(r) = h.join("made-up", None) else { panic!() };
    assert_eq!(r.error_code, ResponseError::UnknownMemberId.code());
}

#[test]
fn a_static_member_restarts_without_a_rebalance_and_fences_its_old_id() {
    let mut h = H::new();
    // Static members skip MEMBER_ID_REQUIRED.
    let Answer::Now(r) = h.join("", Some("worker-1")) else { panic!("a lone static member completes at once") };
    assert_eq!(r.error_code, 0);
    let old = r.member_id.to_string();
    let gen = r.generation_id;
    let Answer::Now(_) = h.sync(&old, gen, &[(&old, "mine")]) else { panic!() };
    // The process restarts: same instance id, no member id.
    let Answer::Now(r) = h.join("", Some("worker-1")) else { panic!("no rebalance for a returning static member") };
    assert_eq!(r.error_code, 0);
    assert_eq!(r.generation_id, gen, "the generation stands");
    assert!(r.skip_assignment, "the returning leader need not assign again");
    let new = r.member_id.to_string();
    assert_ne!(new, old);
    let Answer::Now(s) = h.sync(&new, gen, &[]) else { panic!() };
    assert_eq!(s.assignment, Bytes::from_static(b"mine"), "its assignment is kept");
    assert_eq!(h.c.heartbeat(G, &old, Some("worker-1"), gen, h.clock), Err(ResponseError::FencedInstanceId));
    assert_eq!(h.c.heartbeat(G, &new, Some("worker-1"), gen, h.clock), Ok(()));
    let mut fx = Effects::default();
    let out = h.c.leave(G, &[(old.clone(), Some("worker-1".into()))], h.clock, &mut fx);
    assert_eq!(out, vec![Err(ResponseError::FencedInstanceId)]);
    let out = h.c.leave(G, &[(String::new(), Some("worker-1".into()))], h.clock, &mut fx);
    assert_eq!(out, vec![Ok(())], "v3+ leaves by instance id alone");
    assert_eq!(h.state().0, GroupState::Empty);
}

#[test]
fn join_v3_has_no_member_id_round_trip() {
    let mut h = H::new();
    let Answer::Now(r) = h.join_with(&H::join_req("", None, &["range"]), 3) else { panic!() };
    assert_eq!(r.error_code, 0, "before v4 the first join enters the group");
    assert_eq!(r.generation_id, 1);
}

#[test]
fn rebuilt_from_its_records_the_coordinator_serves_the_same_offsets_and_members() {
    let mut h = H::new();
    let (a, gen) = h.stable_one();
    h.commit(gen, &a, 41).unwrap();
    h.commit(gen, &a, 42).unwrap();
    let mut fresh = GroupCoordinator::new(3, GroupConfig::default(), PlantedBugs::default());
    for r in h.log.clone() {
        fresh.apply(r, h.clock);
    }
    assert_eq!(fresh.committed(G, "t", 0).unwrap().offset, 42);
    let d = fresh.describe(G).unwrap();
    assert_eq!((d.state, d.generation, d.members.len()), (GroupState::Stable, gen, 1));
    // The loaded member carries on where it was; it expires if it never comes back.
    assert_eq!(fresh.heartbeat(G, &a, None, gen, h.clock), Ok(()));
    let later = Clock { elapsed: h.clock.elapsed + Duration::from_secs(11), ..h.clock };
    let mut fx = Effects::default();
    fresh.tick(later, &mut fx);
    assert_eq!(fresh.describe(G).unwrap().state, GroupState::Empty);
    // A deleted group's tombstones remove everything on reload.
    let tombstones = fresh.delete_group(G).unwrap();
    let mut reloaded = GroupCoordinator::new(3, GroupConfig::default(), PlantedBugs::default());
    for r in h.log.iter().cloned().chain(fx.records).chain(tombstones) {
        reloaded.apply(r, h.clock);
    }
    assert!(reloaded.describe(G).is_none());
    assert!(reloaded.committed(G, "t", 0).is_none());
}

#[test]
fn delete_refuses_a_group_with_members() {
    let mut h = H::new();
    h.stable_one();
    assert_eq!(h.c.delete_group(G).err(), Some(ResponseError::NonEmptyGroup));
    assert_eq!(h.c.delete_group("nope").err(), Some(ResponseError::GroupIdNotFound));
}

#[test]
fn planted_bug_generation_not_bumped() {
    let mut h = H::with(
        GroupConfig { group_initial_rebalance_delay_ms: 0, ..GroupConfig::default() },
        PlantedBugs { group_generation_not_bumped: true, ..PlantedBugs::default() },
    );
    let (a, gen) = h.stable_one();
    let (_b, ans) = h.join_new();
    let Answer::Wait(_) = ans else { panic!() };
    let Answer::Now(r) = h.join(&a, None) else { panic!() };
    assert_eq!(r.generation_id, gen, "the bug keeps the generation");
}

#[test]
fn planted_bug_stale_commit_accepted() {
    let mut h = H::with(
        GroupConfig { group_initial_rebalance_delay_ms: 0, ..GroupConfig::default() },
        PlantedBugs { group_stale_commit_accepted: true, ..PlantedBugs::default() },
    );
    let (a, gen) = h.stable_one();
    assert_eq!(h.commit(gen - 1, &a, 3), Ok(()), "the bug lets an old generation commit");
}

#[test]
fn names_too_long_for_the_records_are_refused() {
    let mut h = H::new();
    let long = "x".repeat(40_000);
    let mut req = H::join_req("", None, &["range"]);
    req.group_id = GroupId(sb(&long));
    let Answer::Now(r) = h.join_with(&req, 9) else { panic!() };
    assert_eq!(r.error_code, ResponseError::InvalidGroupId.code());
    let req = H::join_req("", Some(&long), &["range"]);
    let Answer::Now(r) = h.join_with(&req, 9) else { panic!() };
    assert_eq!(r.error_code, ResponseError::InvalidRequest.code());
    // A huge client id is clipped: the member id and the records stay writable.
    let mut fx = Effects::default();
    let req = H::join_req("", Some("i"), &["range"]);
    let Answer::Now(r) = h.c.join(&req, 9, Client { client_id: &long, client_host: "/h" }, h.clock, &mut fx) else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    assert!(r.member_id.len() < 1100);
    for rec in fx.records {
        rec.encode();
    }
}

#[test]
fn assignments_are_handed_out_only_once_the_generation_is_durable() {
    let mut h = H::new();
    let (a, ans) = h.join_new();
    let Answer::Now(r) = ans else { panic!() };
    let mut req = SyncGroupRequest::default();
    req.group_id = GroupId(sb(G));
    req.member_id = sb(&a);
    req.generation_id = r.generation_id;
    let mut x = SyncGroupRequestAssignment::default();
    x.member_id = sb(&a);
    x.assignment = Bytes::from_static(b"all");
    req.assignments = vec![x];
    let mut fx = Effects::default();
    let Answer::Wait(t) = h.c.sync(&req, h.clock, &mut fx) else { panic!("the leader waits for the record") };
    assert_eq!(fx.hold, vec![G.to_string()]);
    assert!(matches!(fx.records.as_slice(), [Record::Group { .. }]));
    h.c.hold_until(G, 41);
    h.c.release_durable(41, h.clock, &mut Effects::default());
    assert!(h.c.take_sync(&t).is_none(), "offset 41 is not below the high watermark 41");
    let mut fx = Effects::default();
    h.c.release_durable(42, h.clock, &mut fx);
    assert!(fx.woken.contains(G));
    assert_eq!(h.c.take_sync(&t).unwrap().assignment, Bytes::from_static(b"all"));
    // A record that could not be written fails the sync and rebalances.
    let mut fx = Effects::default();
    let (_b, _) = h.join_new();
    let Answer::Now(ra) = h.join(&a, None) else { panic!() };
    let mut req2 = req.clone();
    req2.generation_id = ra.generation_id;
    let Answer::Wait(t) = h.c.sync(&req2, h.clock, &mut fx) else { panic!() };
    h.c.fail_held(G, h.clock, &mut fx);
    assert_eq!(h.c.take_sync(&t).unwrap().error_code, ResponseError::RebalanceInProgress.code());
    assert_eq!(h.state().0, GroupState::PreparingRebalance);
}

#[test]
fn a_follower_syncing_after_the_leader_also_waits_for_durability() {
    let mut h = H::new();
    let (a, _) = h.stable_one();
    let (b, ans) = h.join_new();
    let Answer::Wait(tb) = ans else { panic!() };
    let Answer::Now(ra) = h.join(&a, None) else { panic!() };
    let _ = h.take_join(&tb);
    let gen = ra.generation_id;
    let leader = ra.leader.to_string();
    let follower = if leader == a { b.clone() } else { a.clone() };
    let sync = |member: &str, assign: Vec<SyncGroupRequestAssignment>| {
        let mut r = SyncGroupRequest::default();
        r.group_id = GroupId(sb(G));
        r.member_id = sb(member);
        r.generation_id = gen;
        r.assignments = assign;
        r
    };
    let mut x = SyncGroupRequestAssignment::default();
    x.member_id = sb(&follower);
    x.assignment = Bytes::from_static(b"f");
    let mut fx = Effects::default();
    let Answer::Wait(tl) = h.c.sync(&sync(&leader, vec![x]), h.clock, &mut fx) else { panic!() };
    // The group is Stable, but its record is not durable: the follower waits too.
    let Answer::Wait(tf) = h.c.sync(&sync(&follower, vec![]), h.clock, &mut fx) else {
        panic!("a follower must not learn a generation that a restart could hand out again")
    };
    h.c.hold_until(G, 9);
    h.c.release_durable(10, h.clock, &mut fx);
    assert!(h.c.take_sync(&tl).is_some());
    assert_eq!(h.c.take_sync(&tf).unwrap().assignment, Bytes::from_static(b"f"));
    // Once durable, syncs of the generation are answered at once.
    let Answer::Now(_) = h.c.sync(&sync(&follower, vec![]), h.clock, &mut fx) else { panic!() };
}
