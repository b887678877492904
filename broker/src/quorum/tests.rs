//! Unit tests of the quorum core's message handlers, and the harness sweeps.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    begin_quorum_epoch_request as bqe, end_quorum_epoch_request as eqe, fetch_request as fr,
    fetch_snapshot_request as fsr, vote_request as vr, vote_response as vresp, BeginQuorumEpochRequest,
    EndQuorumEpochRequest, FetchRequest, FetchResponse, FetchSnapshotRequest, TopicName, VoteRequest, VoteResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::harness::{self, SimConfig};
use super::log::{data_batch, decode_batches};
use super::*;

const T: i64 = 1_000_000;

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str(METADATA_TOPIC))
}

fn node(id: i32, voters: &[i32]) -> Raft<MemoryLog> {
    Raft::new(QuorumConfig::new(id, voters.iter().copied()), None, MemoryLog::new(), id as u64, T)
}

fn vote_req(candidate: i32, epoch: i32, last_epoch: i32, last_offset: i64, pre_vote: bool) -> Request {
    let mut p = vr::PartitionData::default();
    p.replica_id = candidate.into();
    p.replica_epoch = epoch;
    p.last_offset_epoch = last_epoch;
    p.last_offset = last_offset;
    p.pre_vote = pre_vote;
    let mut t = vr::TopicData::default();
    t.topic_name = topic();
    t.partitions = vec![p];
    Request::Vote(VoteRequest::default().with_topics(vec![t]))
}

fn vote_resp(epoch: i32, granted: bool) -> Response {
    let mut p = vresp::PartitionData::default();
    p.leader_id = (-1).into();
    p.leader_epoch = epoch;
    p.vote_granted = granted;
    let mut t = vresp::TopicData::default();
    t.topic_name = topic();
    t.partitions = vec![p];
    Response::Vote(VoteResponse::default().with_topics(vec![t]))
}

fn begin_req(leader: i32, epoch: i32) -> Request {
    let mut p = bqe::PartitionData::default();
    p.leader_id = leader.into();
    p.leader_epoch = epoch;
    let mut t = bqe::TopicData::default();
    t.topic_name = topic();
    t.partitions = vec![p];
    Request::BeginQuorumEpoch(BeginQuorumEpochRequest::default().with_topics(vec![t]))
}

fn end_req(leader: i32, epoch: i32, successors: &[i32]) -> Request {
    let mut p = eqe::PartitionData::default();
    p.leader_id = leader.into();
    p.leader_epoch = epoch;
    p.preferred_successors = successors.to_vec();
    let mut t = eqe::TopicData::default();
    t.topic_name = topic();
    t.partitions = vec![p];
    Request::EndQuorumEpoch(EndQuorumEpochRequest::default().with_topics(vec![t]))
}

fn fetch_req(replica: i32, epoch: i32, offset: i64, last_epoch: i32, max_wait_ms: i32) -> Request {
    let mut p = fr::FetchPartition::default();
    p.current_leader_epoch = epoch;
    p.fetch_offset = offset;
    p.last_fetched_epoch = last_epoch;
    p.partition_max_bytes = 1 << 20;
    let mut t = fr::FetchTopic::default();
    t.topic = topic();
    t.topic_id = METADATA_TOPIC_ID;
    t.partitions = vec![p];
    let mut r = FetchRequest::default().with_topics(vec![t]).with_max_wait_ms(max_wait_ms).with_max_bytes(1 << 20);
    r.replica_state.replica_id = replica.into();
    Request::Fetch(r)
}

fn fetch_snapshot_req(replica: i32, epoch: i32, id: SnapshotId, position: i64, max_bytes: i32) -> Request {
    let mut p = fsr::PartitionSnapshot::default();
    p.current_leader_epoch = epoch;
    p.snapshot_id.end_offset = id.end_offset;
    p.snapshot_id.epoch = id.epoch;
    p.position = position;
    let mut t = fsr::TopicSnapshot::default();
    t.name = topic();
    t.partitions = vec![p];
    let mut r = FetchSnapshotRequest::default().with_topics(vec![t]).with_max_bytes(max_bytes);
    r.replica_id = replica.into();
    Request::FetchSnapshot(r)
}

/// The one answer among `out`.
fn answer(out: &[Output]) -> Response {
    let mut answers = out.iter().filter_map(|o| match o {
        Output::Respond { response, .. } => Some(response.clone()),
        _ => None,
    });
    let a = answers.next().expect("an answer");
    assert!(answers.next().is_none(), "one answer");
    a
}

fn vote_granted(r: &Response) -> bool {
    let Response::Vote(v) = r else { panic!("not a vote answer: {r:?}") };
    v.topics[0].partitions[0].vote_granted
}

fn fetch_part(r: &Response) -> kafka_protocol::messages::fetch_response::PartitionData {
    let Response::Fetch(FetchResponse { responses, .. }) = r else { panic!("not a fetch answer: {r:?}") };
    responses[0].partitions[0].clone()
}

fn sends(out: &[Output]) -> Vec<(i32, u64, Request)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to, request_id, request } => Some((*to, *request_id, request.clone())),
            _ => None,
        })
        .collect()
}

fn committed(out: &[Output]) -> Vec<LogBatch> {
    out.iter()
        .flat_map(|o| match o {
            Output::Committed { batches, .. } => batches.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// Make `raft` win an election some time after `now`, every vote granted.
fn elect(raft: &mut Raft<MemoryLog>, now: i64) {
    let mut t = now + 2_000;
    for _ in 0..20 {
        let mut pending = sends(&raft.handle(t, Input::Tick));
        while let Some((to, request_id, request)) = pending.pop() {
            if let Request::Vote(v) = request {
                let p = &v.topics[0].partitions[0];
                let epoch = if p.pre_vote { p.replica_epoch - 1 } else { p.replica_epoch };
                let out = raft.handle(t, Input::Response { from: to, request_id, response: vote_resp(epoch, true) });
                pending.extend(sends(&out));
            }
        }
        if raft.is_leader() {
            return;
        }
        t = raft.next_deadline().unwrap_or(t + 100).max(t + 1);
    }
    panic!("not elected: {:?}", raft.role());
}

fn seeds(default: u64) -> u64 {
    std::env::var("QUORUM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

#[test]
fn harness_clean_sweep() {
    let n = seeds(300);
    let (failed, passed) = harness::sweep(0..n, &SimConfig::default());
    if let Some((seed, o)) = failed {
        panic!("seed {seed} failed: {o:?}");
    }
    let mut times: Vec<i64> = passed.iter().filter_map(|o| o.heal_to_leader_ms).collect();
    times.sort_unstable();
    let pct = |p: usize| times[(times.len() - 1) * p / 100];
    let committed: i64 = passed.iter().map(|o| o.committed).sum();
    let loads: usize = passed.iter().map(|o| o.snapshot_loads).sum();
    println!(
        "{n} seeds passed; heal to stable leader ms: p50 {} p99 {} max {}; {committed} offsets committed; {loads} snapshot downloads",
        pct(50),
        pct(99),
        pct(100)
    );
}

/// Sweep with one planted bug until the harness catches it; the bound is
/// part of the claim that the harness can.
fn catches(bugs: QuorumBugs, bound: u64) -> u64 {
    let sim = SimConfig { bugs, ..SimConfig::default() };
    let (failed, _) = harness::sweep(0..bound, &sim);
    let (seed, o) = failed.unwrap_or_else(|| panic!("{bugs:?} not caught in {bound} seeds"));
    println!("{bugs:?} caught at seed {seed}: {}", o.failure.unwrap_or_default());
    seed
}

#[test]
fn harness_catches_vote_before_persist() {
    catches(QuorumBugs { vote_before_persist: true, ..QuorumBugs::default() }, 3000);
}

#[test]
fn harness_catches_commit_of_previous_epoch() {
    catches(QuorumBugs { commit_previous_epoch: true, ..QuorumBugs::default() }, 10_000);
}

#[test]
fn harness_catches_kept_divergent_suffix() {
    catches(QuorumBugs { keep_divergent_suffix: true, ..QuorumBugs::default() }, 3000);
}

/// How often each planted bug is caught, for the record:
/// `QUORUM_SEEDS=3000 cargo test --release -p faultline-broker --lib quorum::tests::planted_bug_catch_rates -- --ignored --nocapture`
#[test]
#[ignore]
fn planted_bug_catch_rates() {
    let n = seeds(1000);
    for bugs in [
        QuorumBugs { vote_before_persist: true, ..QuorumBugs::default() },
        QuorumBugs { commit_previous_epoch: true, ..QuorumBugs::default() },
        QuorumBugs { keep_divergent_suffix: true, ..QuorumBugs::default() },
    ] {
        let only = std::env::var("QUORUM_BUG").unwrap_or_default();
        if !format!("{bugs:?}").contains(&format!("{only}: true")) {
            continue;
        }
        let sim = SimConfig { bugs, ..SimConfig::default() };
        let failing: Vec<u64> = (0..n).filter(|&s| harness::run(s, &sim).failure.is_some()).collect();
        println!(
            "{bugs:?}: caught in {} of {n} seeds; first {:?}",
            failing.len(),
            failing.iter().take(5).collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_vote_is_persisted_before_it_is_granted_and_given_once_per_epoch() {
    let mut n = node(1, &[0, 1, 2]);
    let out = n.handle(T, Input::Request { token: 7, request: vote_req(0, 1, 0, 0, false) });
    let persist = out.iter().position(|o| matches!(o, Output::PersistQuorumState(q) if q.voted_for == Some(0)));
    let respond = out.iter().position(|o| matches!(o, Output::Respond { token: 7, .. }));
    assert!(persist.expect("persisted") < respond.expect("answered"), "{out:?}");
    assert!(vote_granted(&answer(&out)));
    assert_eq!(n.quorum_state(), QuorumState { epoch: 1, voted_for: Some(0), leader_id: None });
    // Another candidate of the same epoch is refused; the same one again is not.
    let out = n.handle(T, Input::Request { token: 8, request: vote_req(2, 1, 0, 0, false) });
    assert!(!vote_granted(&answer(&out)));
    let out = n.handle(T, Input::Request { token: 9, request: vote_req(0, 1, 0, 0, false) });
    assert!(vote_granted(&answer(&out)));
    // The planted bug answers first.
    let mut bugged = node(1, &[0, 1, 2]);
    let mut cfg = bugged.config().clone();
    cfg.bugs.vote_before_persist = true;
    bugged = Raft::new(cfg, None, MemoryLog::new(), 1, T);
    let out = bugged.handle(T, Input::Request { token: 1, request: vote_req(0, 1, 0, 0, false) });
    let persist = out.iter().position(|o| matches!(o, Output::PersistQuorumState(q) if q.voted_for == Some(0)));
    let respond = out.iter().position(|o| matches!(o, Output::Respond { .. }));
    assert!(respond.unwrap() < persist.unwrap());
}

#[test]
fn stale_epochs_and_less_complete_logs_get_no_vote() {
    let mut n = node(1, &[0, 1, 2]);
    let first = n.handle(T, Input::Request { token: 1, request: begin_req(0, 3) });
    let batch = data_batch(&[Bytes::from_static(b"a")], T).unwrap();
    let mut leader_log = MemoryLog::new();
    leader_log.append_as_leader(&batch, 3).unwrap();
    // Give node 1 one entry of epoch 3 by fetching it.
    let mut r = FetchResponse::default();
    let mut p = kafka_protocol::messages::fetch_response::PartitionData::default();
    p.current_leader.leader_id = 0.into();
    p.current_leader.leader_epoch = 3;
    p.high_watermark = 0;
    p.records = Some(leader_log.read(0, 1 << 20).unwrap());
    let mut t = kafka_protocol::messages::fetch_response::FetchableTopicResponse::default();
    t.partitions = vec![p];
    r.responses = vec![t];
    let (_, id, _) = sends(&first).into_iter().next().expect("a fetch");
    n.handle(T + 1, Input::Response { from: 0, request_id: id, response: Response::Fetch(r) });
    assert_eq!(n.log().end_offset(), 1);
    // Epoch 2 is older than 3.
    let out = n.handle(T + 10_000, Input::Request { token: 2, request: vote_req(2, 2, 2, 9, false) });
    assert!(!vote_granted(&answer(&out)));
    // Epoch 4 but a log that ends in epoch 2, or at offset 0 of epoch 3.
    for (last_epoch, last_offset) in [(2, 50), (3, 0)] {
        let mut m = node(1, &[0, 1, 2]);
        std::mem::swap(&mut m, &mut n);
        let out =
            m.handle(T + 10_000, Input::Request { token: 3, request: vote_req(2, 4, last_epoch, last_offset, false) });
        assert!(!vote_granted(&answer(&out)), "granted to a log ending at {last_offset} in epoch {last_epoch}");
        std::mem::swap(&mut m, &mut n);
    }
    let out = n.handle(T + 10_000, Input::Request { token: 4, request: vote_req(2, 4, 3, 1, false) });
    assert!(vote_granted(&answer(&out)));
}

#[test]
fn pre_votes_change_nothing_and_are_refused_while_the_leader_is_alive() {
    let mut n = node(1, &[0, 1, 2]);
    n.handle(T, Input::Request { token: 1, request: begin_req(0, 2) });
    let before = n.quorum_state();
    // Not yet heard from the leader through a fetch, but BeginQuorumEpoch counts.
    let out = n.handle(T + 10, Input::Request { token: 2, request: vote_req(2, 3, 0, 0, true) });
    assert!(!vote_granted(&answer(&out)), "pre-vote granted with a live leader");
    assert!(!out.iter().any(|o| matches!(o, Output::PersistQuorumState(_))));
    // Once the fetch timeout passed without the leader, the pre-vote is granted, still without any state change.
    let out = n.handle(T + 2_500, Input::Request { token: 3, request: vote_req(2, 3, 0, 0, true) });
    assert!(vote_granted(&answer(&out)));
    assert_eq!(n.quorum_state().epoch, before.epoch);
    assert!(!out.iter().any(|o| matches!(o, Output::PersistQuorumState(q) if q.epoch > before.epoch)));
}

#[test]
fn a_prospective_voter_does_not_bump_its_epoch_until_a_majority_grants_the_pre_vote() {
    let mut n = node(0, &[0, 1, 2]);
    let out = n.handle(T + 2_000, Input::Tick);
    assert_eq!(n.role(), RoleName::Prospective);
    assert_eq!(n.epoch(), 0);
    let pre: Vec<_> = sends(&out);
    assert_eq!(pre.len(), 2);
    assert!(pre.iter().all(|(_, _, r)| matches!(r, Request::Vote(v) if v.topics[0].partitions[0].pre_vote)));
    // Both refuse: it stays at epoch 0 and backs off.
    for (to, id, _) in &pre {
        n.handle(T + 2_001, Input::Response { from: *to, request_id: *id, response: vote_resp(0, false) });
    }
    assert_eq!(n.epoch(), 0);
    elect(&mut n, T + 10_000);
    assert_eq!(n.epoch(), 1);
}

#[test]
fn a_single_voter_elects_itself_writes_leader_change_and_commits() {
    let mut n = node(0, &[0]);
    let out = n.handle(T + 2_000, Input::Tick);
    assert!(n.is_leader());
    assert_eq!(n.epoch(), 1);
    assert!(out.iter().any(|o| matches!(o, Output::LeaderChange { epoch: 1, leader_id: Some(0) })));
    let c = committed(&out);
    assert_eq!(c.len(), 1);
    assert!(c[0].control && c[0].base_offset == 0 && c[0].epoch == 1);
    let out = n.handle(T + 2_001, Input::Propose { records: vec![Bytes::from_static(b"x"), Bytes::from_static(b"y")] });
    assert!(matches!(out[0], Output::Proposed(Ok(Proposal { epoch: 1, base_offset: 1, last_offset: 2 }))), "{out:?}");
    let c = committed(&out);
    assert_eq!(c[0].records, vec![Bytes::from_static(b"x"), Bytes::from_static(b"y")]);
    assert_eq!(n.high_watermark(), 3);
    // Proposals elsewhere are refused with the leader.
    let mut f = node(1, &[0, 1, 2]);
    f.handle(T, Input::Request { token: 1, request: begin_req(0, 1) });
    let out = f.handle(T, Input::Propose { records: vec![Bytes::from_static(b"x")] });
    assert_eq!(out.last(), Some(&Output::Proposed(Err(ProposeError::NotLeader { leader_id: Some(0), epoch: 1 }))));
    let out = n.handle(T + 2_002, Input::Propose { records: vec![Bytes::from(vec![0u8; 9 << 20])] });
    assert!(matches!(out[0], Output::Proposed(Err(ProposeError::TooLarge { .. }))));
}

#[test]
fn begin_quorum_epoch_makes_a_follower_and_older_epochs_are_fenced() {
    let mut n = node(1, &[0, 1, 2]);
    let out = n.handle(T, Input::Request { token: 1, request: begin_req(0, 5) });
    assert!(matches!(out[0], Output::PersistQuorumState(QuorumState { epoch: 5, leader_id: Some(0), .. })));
    assert_eq!(n.role(), RoleName::Follower);
    let Response::BeginQuorumEpoch(r) = answer(&out) else { panic!() };
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    // It fetches from the leader at once.
    assert!(sends(&out).iter().any(|(to, _, r)| *to == 0 && matches!(r, Request::Fetch(_))));
    let out = n.handle(T, Input::Request { token: 2, request: begin_req(2, 4) });
    let Response::BeginQuorumEpoch(r) = answer(&out) else { panic!() };
    assert_eq!(r.topics[0].partitions[0].error_code, ResponseError::FencedLeaderEpoch.code());
    assert_eq!(r.topics[0].partitions[0].leader_epoch, 5);
    assert_eq!(n.leader_id(), Some(0));
}

#[test]
fn end_quorum_epoch_lets_the_first_successor_stand_at_once() {
    let mut n = node(1, &[0, 1, 2]);
    n.handle(T, Input::Request { token: 1, request: begin_req(0, 5) });
    let out = n.handle(T + 5, Input::Request { token: 2, request: end_req(0, 5, &[1, 2]) });
    let Response::EndQuorumEpoch(r) = answer(&out) else { panic!() };
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    // Position 0: a pre-vote round right away, in the same epoch.
    assert_eq!(n.role(), RoleName::Prospective);
    assert_eq!(n.epoch(), 5);
    let out = n.handle(T + 6, Input::Request { token: 3, request: end_req(0, 4, &[]) });
    let Response::EndQuorumEpoch(r) = answer(&out) else { panic!() };
    assert_eq!(r.topics[0].partitions[0].error_code, ResponseError::FencedLeaderEpoch.code());
}

#[test]
fn fetch_is_fenced_by_epoch_and_refused_by_non_leaders() {
    let mut l = node(0, &[0, 1, 2]);
    elect(&mut l, T);
    let e = l.epoch();
    let now = T + 2_000;
    for (epoch, code) in [(e - 1, ResponseError::FencedLeaderEpoch), (e + 1, ResponseError::UnknownLeaderEpoch)] {
        let p = fetch_part(&answer(&l.handle(now, Input::Request { token: 1, request: fetch_req(1, epoch, 0, 0, 0) })));
        assert_eq!(p.error_code, code.code());
        assert_eq!((p.current_leader.leader_id.0, p.current_leader.leader_epoch), (0, e));
    }
    let mut f = node(1, &[0, 1, 2]);
    f.handle(T, Input::Request { token: 1, request: begin_req(0, e) });
    let p = fetch_part(&answer(&f.handle(now, Input::Request { token: 2, request: fetch_req(2, e, 0, 0, 0) })));
    assert_eq!(p.error_code, ResponseError::NotLeaderOrFollower.code());
    assert_eq!(p.current_leader.leader_epoch, e);
}

#[test]
fn the_high_watermark_needs_a_majority_and_an_entry_of_the_leaders_epoch() {
    for bug in [false, true] {
        // Node 0 holds two entries of epoch 1 that nobody else has, then
        // wins epoch 2: its LeaderChange lands at offset 2.
        let mut cfg = QuorumConfig::new(0, [0, 1, 2]);
        cfg.bugs.commit_previous_epoch = bug;
        let mut log = MemoryLog::new();
        log.append_as_leader(&data_batch(&[Bytes::from_static(b"old")], T).unwrap(), 1).unwrap();
        log.append_as_leader(&data_batch(&[Bytes::from_static(b"old2")], T).unwrap(), 1).unwrap();
        log.flush().unwrap();
        let persisted = QuorumState { epoch: 1, voted_for: Some(0), leader_id: Some(0) };
        let mut l = Raft::new(cfg, Some(persisted), log, 0, T);
        elect(&mut l, T);
        assert_eq!(l.epoch(), 2);
        let now = T + 2_100;
        // Follower 1 has fetched the old entries but not the LeaderChange.
        l.handle(now, Input::Request { token: 1, request: fetch_req(1, 2, 0, 0, 0) });
        l.handle(now, Input::Request { token: 2, request: fetch_req(1, 2, 2, 1, 0) });
        assert_eq!(l.high_watermark(), if bug { 2 } else { 0 }, "bug {bug}");
        // Once it holds the LeaderChange, all three are committed.
        let out = l.handle(now, Input::Request { token: 3, request: fetch_req(1, 2, 3, 2, 0) });
        assert_eq!(l.high_watermark(), 3);
        if !bug {
            let c = committed(&out);
            assert_eq!(c.iter().map(|b| b.base_offset).collect::<Vec<_>>(), vec![0, 1, 2]);
        }
    }
}

#[test]
fn a_leader_answers_a_diverging_epoch_and_the_follower_truncates() {
    // The leader's log: epoch 1 at 0..2, epoch 3 from 2.
    let mut cfg = QuorumConfig::new(0, [0, 1, 2]);
    cfg.election_timeout_ms = 1000;
    let mut log = MemoryLog::new();
    for e in [1, 1, 3] {
        log.append_as_leader(&data_batch(&[Bytes::from(format!("e{e}"))], T).unwrap(), e).unwrap();
    }
    log.flush().unwrap();
    let mut l = Raft::new(cfg, Some(QuorumState { epoch: 3, voted_for: Some(0), leader_id: Some(0) }), log, 0, T);
    elect(&mut l, T);
    let e = l.epoch();
    // Follower 1 has epoch 1 at 0..1 and a divergent epoch 2 at 1..3.
    let mut flog = MemoryLog::new();
    for ep in [1, 2, 2] {
        flog.append_as_leader(&data_batch(&[Bytes::from(format!("f{ep}"))], T).unwrap(), ep).unwrap();
    }
    flog.flush().unwrap();
    let mut f = Raft::new(QuorumConfig::new(1, [0, 1, 2]), None, flog, 1, T);
    let out = f.handle(T + 2_100, Input::Request { token: 1, request: begin_req(0, e) });
    let (_, id, req) = sends(&out).into_iter().find(|(_, _, r)| matches!(r, Request::Fetch(_))).expect("a fetch");
    let Request::Fetch(fetch) = &req else { unreachable!() };
    assert_eq!((fetch.topics[0].partitions[0].fetch_offset, fetch.topics[0].partitions[0].last_fetched_epoch), (3, 2));
    let resp = answer(&l.handle(T + 2_100, Input::Request { token: 9, request: req.clone() }));
    let p = fetch_part(&resp);
    assert_eq!((p.diverging_epoch.epoch, p.diverging_epoch.end_offset), (1, 2));
    let out = f.handle(T + 2_101, Input::Response { from: 0, request_id: id, response: resp });
    // Its epoch 1 ends at 1, before the leader's: it truncates to 1.
    assert_eq!(f.log().end_offset(), 1);
    let (_, id, req) = sends(&out).into_iter().next().expect("the next fetch");
    let resp = answer(&l.handle(T + 2_102, Input::Request { token: 10, request: req }));
    assert_eq!(fetch_part(&resp).diverging_epoch.end_offset, -1);
    f.handle(T + 2_103, Input::Response { from: 0, request_id: id, response: resp });
    assert_eq!(f.log().end_offset(), l.log().end_offset());
    assert_eq!(f.log().end_offset_for_epoch(3), l.log().end_offset_for_epoch(3));
}

#[test]
fn a_leader_that_no_majority_fetches_from_resigns() {
    let mut l = node(0, &[0, 1, 2]);
    elect(&mut l, T);
    let start = T + 2_000;
    // Voter 1 keeps fetching: the leader stays.
    for k in 1..5 {
        l.handle(start + k * 1_000, Input::Request { token: k as u64, request: fetch_req(1, l.epoch(), 0, 0, 0) });
        assert!(l.is_leader());
    }
    // Then silence for the fetch timeout.
    let out = l.handle(start + 4_000 + 2_001, Input::Tick);
    assert_eq!(l.role(), RoleName::Resigned);
    assert!(sends(&out).iter().any(|(_, _, r)| matches!(r, Request::EndQuorumEpoch(_))));
    assert!(matches!(
        l.handle(start + 6_002, Input::Propose { records: vec![Bytes::from_static(b"x")] })[0],
        Output::Proposed(Err(ProposeError::NotLeader { .. }))
    ));
}

#[test]
fn a_fetch_with_nothing_new_is_held_until_a_proposal() {
    let mut l = node(0, &[0, 1, 2]);
    elect(&mut l, T);
    let e = l.epoch();
    let now = T + 10_000;
    // The first fetch at the log end commits the LeaderChange: answered at
    // once, with the new high watermark.
    let out = l.handle(now, Input::Request { token: 0, request: fetch_req(1, e, 1, e, 500) });
    assert_eq!(fetch_part(&answer(&out)).high_watermark, 1);
    let out = l.handle(now, Input::Request { token: 1, request: fetch_req(1, e, 1, e, 500) });
    assert!(!out.iter().any(|o| matches!(o, Output::Respond { .. })), "held: {out:?}");
    assert_eq!(l.next_deadline(), Some(now + 500).min(l.next_deadline()));
    let out = l.handle(now + 10, Input::Propose { records: vec![Bytes::from_static(b"x")] });
    let p = fetch_part(&answer(&out));
    let b = decode_batches(p.records.as_ref().unwrap(), 0).unwrap();
    assert_eq!(b[0].records, vec![Bytes::from_static(b"x")]);
    // Fetching past it commits it (answered at once); the next one, with
    // nothing new, is held and times out empty.
    let out = l.handle(now + 20, Input::Request { token: 2, request: fetch_req(1, e, 2, e, 500) });
    assert_eq!(fetch_part(&answer(&out)).high_watermark, 2);
    let out = l.handle(now + 20, Input::Request { token: 3, request: fetch_req(1, e, 2, e, 500) });
    assert!(!out.iter().any(|o| matches!(o, Output::Respond { .. })));
    let out = l.handle(now + 520, Input::Tick);
    assert_eq!(fetch_part(&answer(&out)).records, Some(Bytes::new()));
}

#[test]
fn a_follower_below_the_log_start_downloads_the_snapshot_in_chunks() {
    let mut l = node(0, &[0]);
    l.handle(T + 2_000, Input::Tick);
    for k in 0..5 {
        l.handle(T + 2_001, Input::Propose { records: vec![Bytes::from(format!("r{k}"))] });
    }
    assert_eq!(l.delivered_offset(), 6);
    let state = Bytes::from(vec![7u8; 1000]);
    let out = l.handle(T + 2_002, Input::Snapshot { end_offset: 4, bytes: state.clone() });
    let id = SnapshotId { end_offset: 4, epoch: 1 };
    assert_eq!(out[0], Output::SnapshotTaken(Ok(id)));
    assert_eq!(l.log().log_start_offset(), 4);
    // An observer at offset 0 is told to fetch the snapshot.
    let p = fetch_part(&answer(&l.handle(T + 2_003, Input::Request { token: 1, request: fetch_req(9, 1, 0, 0, 0) })));
    assert_eq!((p.snapshot_id.end_offset, p.snapshot_id.epoch), (4, 1));
    let mut got = Vec::new();
    while got.len() < state.len() {
        let req = fetch_snapshot_req(9, 1, id, got.len() as i64, 300);
        let Response::FetchSnapshot(r) = answer(&l.handle(T + 2_004, Input::Request { token: 2, request: req })) else {
            panic!()
        };
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(p.size, 1000);
        assert!(p.unaligned_records.len() <= 300);
        got.extend_from_slice(&p.unaligned_records);
    }
    assert_eq!(got, state.to_vec());
    // A wrong snapshot or position is refused.
    let req = fetch_snapshot_req(9, 1, SnapshotId { end_offset: 3, epoch: 1 }, 0, 300);
    let Response::FetchSnapshot(r) = answer(&l.handle(T + 2_005, Input::Request { token: 3, request: req })) else {
        panic!()
    };
    assert_eq!(r.topics[0].partitions[0].error_code, ResponseError::SnapshotNotFound.code());
    let req = fetch_snapshot_req(9, 1, id, 1001, 300);
    let Response::FetchSnapshot(r) = answer(&l.handle(T + 2_005, Input::Request { token: 4, request: req })) else {
        panic!()
    };
    assert_eq!(r.topics[0].partitions[0].error_code, ResponseError::PositionOutOfRange.code());
    // A snapshot past what was delivered is refused.
    let out = l.handle(T + 2_006, Input::Snapshot { end_offset: 7, bytes: Bytes::new() });
    assert!(matches!(out[0], Output::SnapshotTaken(Err(_))));
}

#[test]
fn an_observer_follows_the_leader_through_a_snapshot() {
    // End to end between two cores: leader 0 (sole voter) and observer 5.
    let mut l = node(0, &[0]);
    l.handle(T + 2_000, Input::Tick);
    for k in 0..10 {
        l.handle(T + 2_001, Input::Propose { records: vec![Bytes::from(format!("r{k}"))] });
    }
    l.handle(T + 2_002, Input::Snapshot { end_offset: 8, bytes: Bytes::from_static(b"state through 8") });
    let mut o = Raft::new(QuorumConfig::new(5, [0]), None, MemoryLog::new(), 5, T);
    let mut loaded = None;
    let mut applied = Vec::new();
    let mut out = o.handle(T + 2_003, Input::Tick);
    for _ in 0..50 {
        let Some((to, id, req)) = sends(&out).into_iter().next() else { break };
        assert_eq!(to, 0);
        let resp = answer(&l.handle(T + 2_004, Input::Request { token: 1, request: req }));
        out = o.handle(T + 2_004, Input::Response { from: 0, request_id: id, response: resp });
        for x in &out {
            match x {
                Output::LoadSnapshot { id, bytes } => loaded = Some((*id, bytes.clone())),
                Output::Committed { batches, .. } => applied.extend(batches.iter().map(|b| b.base_offset)),
                _ => {}
            }
        }
        if o.delivered_offset() == l.log().end_offset() {
            break;
        }
    }
    assert_eq!(loaded, Some((SnapshotId { end_offset: 8, epoch: 1 }, Bytes::from_static(b"state through 8"))));
    assert_eq!(applied, vec![8, 9, 10]);
    assert_eq!(o.leader_id(), Some(0));
    assert!(!o.config().is_voter());
}

#[test]
fn describe_quorum_reports_voters_and_observers() {
    let mut l = node(0, &[0, 1, 2]);
    elect(&mut l, T);
    let e = l.epoch();
    l.handle(T + 2_100, Input::Request { token: 1, request: fetch_req(1, e, 1, e, 0) });
    l.handle(T + 2_200, Input::Request { token: 2, request: fetch_req(7, e, 0, 0, 0) });
    let out =
        l.handle(T + 2_300, Input::Request { token: 3, request: Request::DescribeQuorum(describe_quorum_request()) });
    let Response::DescribeQuorum(r) = answer(&out) else { panic!() };
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.leader_id.0, p.leader_epoch), (0, 0, e));
    assert_eq!(p.high_watermark, 1);
    let voters: Vec<(i32, i64, i64)> =
        p.current_voters.iter().map(|v| (v.replica_id.0, v.log_end_offset, v.last_fetch_timestamp)).collect();
    assert_eq!(voters, vec![(0, 1, T + 2_300), (1, 1, T + 2_100), (2, -1, -1)]);
    assert_eq!(p.observers.len(), 1);
    assert_eq!((p.observers[0].replica_id.0, p.observers[0].log_end_offset), (7, 0));
    // A follower refuses.
    let mut f = node(1, &[0, 1, 2]);
    let out = f.handle(T, Input::Request { token: 1, request: Request::DescribeQuorum(describe_quorum_request()) });
    let Response::DescribeQuorum(r) = answer(&out) else { panic!() };
    assert_eq!(r.topics[0].partitions[0].error_code, ResponseError::NotLeaderOrFollower.code());
}

#[test]
fn malformed_requests_get_errors_not_panics() {
    let mut n = node(0, &[0, 1, 2]);
    let empty = [
        Request::Vote(VoteRequest::default()),
        Request::BeginQuorumEpoch(BeginQuorumEpochRequest::default()),
        Request::EndQuorumEpoch(EndQuorumEpochRequest::default()),
        Request::Fetch(FetchRequest::default()),
        Request::FetchSnapshot(FetchSnapshotRequest::default()),
        Request::DescribeQuorum(Default::default()),
    ];
    for (k, request) in empty.into_iter().enumerate() {
        let out = n.handle(T, Input::Request { token: k as u64, request });
        let code = match answer(&out) {
            Response::Vote(r) => r.error_code,
            Response::BeginQuorumEpoch(r) => r.error_code,
            Response::EndQuorumEpoch(r) => r.error_code,
            Response::Fetch(r) => r.error_code,
            Response::FetchSnapshot(r) => r.error_code,
            Response::DescribeQuorum(r) => r.error_code,
        };
        assert_eq!(code, ResponseError::InvalidRequest.code());
    }
    // A vote from outside the voter set, a negative fetch offset.
    let out = n.handle(T, Input::Request { token: 10, request: vote_req(9, 1, 0, 0, false) });
    let Response::Vote(r) = answer(&out) else { panic!() };
    assert_eq!(r.topics[0].partitions[0].error_code, ResponseError::InconsistentVoterSet.code());
    elect(&mut n, T);
    let p = fetch_part(&answer(
        &n.handle(T + 2_100, Input::Request { token: 11, request: fetch_req(1, n.epoch(), -5, 0, 0) }),
    ));
    assert_eq!(p.error_code, ResponseError::InvalidRequest.code());
}

#[test]
fn a_restarted_leader_resigns_and_a_restarted_voter_keeps_its_vote() {
    let q = QuorumState { epoch: 4, voted_for: Some(0), leader_id: Some(0) };
    let mut l = Raft::new(QuorumConfig::new(0, [0, 1, 2]), Some(q), MemoryLog::new(), 0, T);
    assert_eq!(l.role(), RoleName::Resigned);
    assert!(sends(&l.handle(T, Input::Tick)).iter().any(|(_, _, r)| matches!(r, Request::EndQuorumEpoch(_))));
    let q = QuorumState { epoch: 4, voted_for: Some(2), leader_id: None };
    let mut v = Raft::new(QuorumConfig::new(1, [0, 1, 2]), Some(q), MemoryLog::new(), 1, T);
    let out = v.handle(T, Input::Request { token: 1, request: vote_req(0, 4, 0, 0, false) });
    assert!(!vote_granted(&answer(&out)));
}
