//! The group APIs — FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups,
//! DeleteGroups, OffsetDelete, and KIP-848's ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe — over the pure [`GroupCoordinator`]s of
//! `server::group`: find the group's `__consumer_offsets` partition
//! (creating the topic on first use), run the coordinator under its lock,
//! append the records it asks for to that partition, and wake members parked
//! on the groups it names.
//!
//! A JoinGroup or SyncGroup that must wait for the rebalance parks on its
//! group's signal with the coordinator's ticket. An OffsetCommit,
//! DeleteGroups, OffsetDelete or ConsumerGroupHeartbeat is answered only
//! once its records (for a heartbeat: every record of the partition so far,
//! since its answer may rest on others' records) are below the partition's
//! high watermark (with replicas: on every in-sync replica), as a produce
//! with acks=-1 is; what they change is served from the moment the records
//! are appended. Such an answer waits in the leader epoch its records were
//! appended in: if the partition's leadership moves meanwhile it fails with
//! NOT_COORDINATOR (the records may or may not survive; the client asks the
//! new coordinator), never with a success the new leader may not know.
//!
//! Every API reaches a coordinator through `Groups::lock().serving(..)`,
//! which checks that this node leads the partition and has loaded it for
//! the current leader epoch (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, Request};
use crate::client::batch::{encode, Compression, OutRecord};
use crate::record_batch::ValidatedBatches;
use crate::server::group::records::OffsetValue;
use crate::server::group::{
    partition_for, Answer, Client, Effects, GroupCoordinator, Record, Ticket, TopicMeta, TopicsView, OFFSETS_TOPIC,
};
use crate::server::node::{Cx, Parked, Step, Waiting as Parkable, Wake};
use crate::server::partition::{Partition, Role};
use crate::server::topics::{Topic, TopicSpec};

const NO_TRANSACTIONS: &str = "transactions are not supported by this broker yet";
/// Records per batch the coordinator appends (a DeleteGroups of a large group
/// writes many tombstones).
const RECORDS_PER_BATCH: usize = 500;
/// How long past its rebalance timeout a parked JoinGroup or SyncGroup waits
/// before it gives up with REBALANCE_IN_PROGRESS (the client then rejoins);
/// the coordinator normally answers well before.
const PARK_SLACK: Duration = Duration::from_secs(5);

/// A group request waiting for the coordinator or the disk.
pub(crate) enum Waiting {
    Join {
        request: Request,
        ticket: Ticket,
    },
    Sync {
        request: Request,
        ticket: Ticket,
    },
    /// An answer given once every (partition, offset) listed is durable.
    Durable {
        request: Request,
        answer: Durable,
        pending: Vec<Pending>,
    },
}

/// Records an answer waits for: the last offset written to a partition, in
/// the leader epoch they were written in.
#[derive(Clone)]
pub(crate) struct Pending {
    partition: Arc<Partition>,
    last: i64,
    leader_epoch: i32,
}

/// An answer waiting for its records to be durable.
pub(crate) enum Durable {
    Commit(OffsetCommitResponse),
    Heartbeat(ConsumerGroupHeartbeatResponse),
    DeleteGroups(DeleteGroupsResponse),
    OffsetDelete(OffsetDeleteResponse),
}

impl Durable {
    /// The records could not be made durable: every part answered as a
    /// success gets `e` instead.
    fn fail(&mut self, e: ResponseError) {
        let set = |code: &mut i16| {
            if *code == 0 {
                *code = e.code();
            }
        };
        match self {
            Durable::Commit(r) => {
                r.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()).for_each(|p| set(&mut p.error_code))
            }
            Durable::Heartbeat(r) => {
                set(&mut r.error_code);
                r.assignment = None;
            }
            Durable::DeleteGroups(r) => r.results.iter_mut().for_each(|g| set(&mut g.error_code)),
            Durable::OffsetDelete(r) => {
                r.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()).for_each(|p| set(&mut p.error_code))
            }
        }
    }

    fn respond(&self, request: Request) -> Step {
        match self {
            Durable::Commit(r) => request.respond(r),
            Durable::Heartbeat(r) => request.respond(r),
            Durable::DeleteGroups(r) => request.respond(r),
            Durable::OffsetDelete(r) => request.respond(r),
        }
    }
}

/// Answer `answer` once every pending (partition, last offset) is durable,
/// or with REQUEST_TIMED_OUT after `offsets.commit.timeout.ms`.
fn when_durable(cx: &mut Cx, request: Request, answer: Durable, pending: Vec<Pending>) -> Step {
    let deadline = cx.clock.elapsed + Duration::from_millis(cx.node.config.groups.offsets_commit_timeout_ms);
    resume(cx, Waiting::Durable { request, answer, pending }, deadline)
}

/// `__consumer_offsets`, created with `offsets.topic.num.partitions` the
/// first time a group needs it.
fn offsets_topic(cx: &mut Cx) -> Result<Arc<Topic>, ResponseError> {
    if let Some(t) = cx.node.topics.get(OFFSETS_TOPIC) {
        return Ok(t);
    }
    if cx.node.cluster().is_some() {
        // The controller creates it (FindCoordinator asks); a broker that
        // does not host it coordinates nothing.
        return Err(ResponseError::NotCoordinator);
    }
    let spec = TopicSpec {
        name: OFFSETS_TOPIC.to_string(),
        num_partitions: cx.node.config.groups.offsets_topic_num_partitions,
        replication_factor: -1,
        configs: BTreeMap::new(),
    };
    match cx.node.topics.create(cx.disk, &spec, cx.clock.now_ms) {
        Ok(t) => {
            tracing::info!(partitions = t.partitions.len(), "created {OFFSETS_TOPIC}");
            Ok(t)
        }
        Err(e) => cx.node.topics.get(OFFSETS_TOPIC).ok_or_else(|| {
            tracing::error!(error = %e.message, "cannot create {OFFSETS_TOPIC}");
            ResponseError::CoordinatorNotAvailable
        }),
    }
}

/// This broker as a coordinator: id, host, port.
fn local_endpoint(cx: &Cx) -> (i32, String, i32) {
    (cx.node.config.node_id, cx.node.advertised_host.clone(), cx.node.advertised_port)
}

/// Cluster mode: the leader of the group's `__consumer_offsets` partition in
/// the metadata image. The first lookup asks the controller to create the
/// topic; until it exists, and while the partition has no live leader, the
/// answer is COORDINATOR_NOT_AVAILABLE and the client asks again.
fn cluster_coordinator(cx: &Cx, group: &str) -> Result<(i32, String, i32), ResponseError> {
    use crate::cluster::link::LISTENER;
    use crate::cluster::peers::PeerRequest;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::CreateTopicsRequest;
    let link = cx.node.cluster().expect("cluster mode");
    let image = link.image();
    let Some(t) = image.topic_by_name(OFFSETS_TOPIC) else {
        let topic = CreatableTopic::default()
            .with_name(super::topic_name(OFFSETS_TOPIC))
            .with_num_partitions(cx.node.config.groups.offsets_topic_num_partitions)
            .with_replication_factor(-1);
        link.submit(PeerRequest::CreateTopics(CreateTopicsRequest::default().with_topics(vec![topic])));
        return Err(ResponseError::CoordinatorNotAvailable);
    };
    let index = partition_for(group, t.partitions.len() as i32);
    let leader = t.partitions.get(index as usize).map_or(-1, |p| p.leader);
    let broker = image.broker(leader).filter(|b| !b.fenced).ok_or(ResponseError::CoordinatorNotAvailable)?;
    let e = broker.endpoint(LISTENER).ok_or(ResponseError::CoordinatorNotAvailable)?;
    Ok((leader, e.host.clone(), e.port as i32))
}

/// The `__consumer_offsets` partition coordinating `group`, if this node
/// leads it and its coordinator is loaded (or can be now).
fn locate(cx: &mut Cx, group: &str) -> Result<Arc<Partition>, ResponseError> {
    let topic = offsets_topic(cx)?;
    let index = partition_for(group, topic.partitions.len() as i32);
    let p = topic.partition(index).ok_or(ResponseError::CoordinatorNotAvailable)?;
    if p.role() != Role::Leader {
        return Err(ResponseError::NotCoordinator);
    }
    cx.node.groups.lock().serving(cx.disk, p, cx.clock)?;
    Ok(p.clone())
}

/// Run `f` on the coordinator of `p` and carry out its effects: records
/// appended (under the coordinator's lock, so the log's order is the
/// coordinator's), parked members woken. Err: `p` is not (or no longer)
/// this node's to coordinate.
fn run<T>(
    cx: &mut Cx,
    p: &Arc<Partition>,
    f: impl FnOnce(&mut GroupCoordinator, &mut Effects) -> T,
) -> Result<T, ResponseError> {
    Ok(run_written(cx, p, f)?.0)
}

/// [`run`], also saying what it wrote (None: nothing), or why its records
/// could not be written.
fn run_written<T>(
    cx: &mut Cx,
    p: &Arc<Partition>,
    f: impl FnOnce(&mut GroupCoordinator, &mut Effects) -> T,
) -> Result<(T, Result<Option<Pending>, ResponseError>), ResponseError> {
    let (node, clock) = (cx.node, cx.clock);
    let mut fx = Effects::default();
    let out = {
        let mut locked = node.groups.lock();
        let (c, epoch) = locked.serving(cx.disk, p, clock)?;
        let out = f(c, &mut fx);
        let written = write(cx, p, epoch, c, &mut fx, clock);
        (out, written)
    };
    wake(cx, &fx);
    Ok(out)
}

/// Append the effects' records; answers held for them wait for their last
/// offset to be durable, or fail if they could not be written. Returns
/// the last offset written.
fn write(
    cx: &mut Cx,
    p: &Arc<Partition>,
    epoch: i32,
    c: &mut GroupCoordinator,
    fx: &mut Effects,
    clock: crate::server::node::Clock,
) -> Result<Option<Pending>, ResponseError> {
    let written = append(cx, p, epoch, std::mem::take(&mut fx.records));
    for group in std::mem::take(&mut fx.hold) {
        match &written {
            Ok(Some(w)) => c.hold_until(&group, w.last),
            _ => c.fail_held(&group, clock, fx),
        }
    }
    if let Err(e) = written {
        tracing::error!(partition = p.index, error = ?e, "cannot write group metadata");
        // fail_held may have asked for more records (a rebalance): best effort.
        let _ = append(cx, p, epoch, std::mem::take(&mut fx.records));
    }
    written
}

/// Release SyncGroup answers whose generation's record is now durable.
fn release(p: &Partition, c: &mut GroupCoordinator, clock: crate::server::node::Clock, fx: &mut Effects) {
    if let Ok(o) = p.offsets() {
        c.release_durable(o.high_watermark, clock, fx);
    }
}

fn wake(cx: &mut Cx, fx: &Effects) {
    for s in cx.node.groups.notify(&fx.woken) {
        cx.woke(Wake::Group(s));
    }
}

/// Append records to the coordinator's partition as its leader in `epoch`,
/// the epoch the coordinator was loaded for. Returns the last offset
/// written. NOT_COORDINATOR if the partition is no longer led in `epoch`.
fn append(cx: &mut Cx, p: &Arc<Partition>, epoch: i32, records: Vec<Record>) -> Result<Option<Pending>, ResponseError> {
    let mut last = None;
    for chunk in records.chunks(RECORDS_PER_BATCH) {
        let out: Vec<OutRecord> = chunk
            .iter()
            .map(|r| {
                let (key, value) = r.encode();
                OutRecord { key: Some(key), value, headers: Vec::new(), timestamp: cx.clock.now_ms }
            })
            .collect();
        let bytes = encode(&out, Compression::None).map_err(|_| ResponseError::UnknownServerError)?;
        let batches = ValidatedBatches::new(bytes).map_err(|_| ResponseError::UnknownServerError)?;
        if p.role() != Role::Leader || p.leader_epoch() != epoch {
            return Err(ResponseError::NotCoordinator);
        }
        let (info, advanced) = p.append(cx.disk, &batches, cx.clock.now_ms).map_err(|e| {
            tracing::error!(partition = p.index, error = %e, "append to {OFFSETS_TOPIC} failed");
            match e {
                crate::server::partition::PartitionError::NotLeader => ResponseError::NotCoordinator,
                _ => ResponseError::CoordinatorNotAvailable,
            }
        })?;
        cx.advanced(p, advanced);
        if p.leader_epoch() != epoch {
            // Lost and taken again between the look and the append: what
            // was written is not this coordinator's epoch's to vouch for.
            return Err(ResponseError::NotCoordinator);
        }
        last = Some(Pending { partition: p.clone(), last: info.last_offset, leader_epoch: epoch });
    }
    Ok(last)
}

/// The coordinators' timeouts, run by the node's tick. Returns when the next is due.
pub(crate) fn tick(cx: &mut Cx) -> Option<Duration> {
    let node = cx.node;
    let Some(topic) = node.topics.get(OFFSETS_TOPIC) else { return None };
    let mut next: Option<Duration> = None;
    let mut all = Effects::default();
    {
        let mut locked = node.groups.lock();
        // A coordinator whose partition this node no longer leads in the
        // epoch it was loaded for writes nothing more (hosting drops it too).
        all.woken.extend(locked.retain(|index, epoch| {
            topic.partition(index).is_some_and(|p| p.role() == Role::Leader && p.leader_epoch() == epoch)
        }));
        for (c, epoch) in locked.all_mut() {
            let mut fx = Effects::default();
            let clock = cx.clock;
            if let Some(p) = topic.partition(c.partition()) {
                release(p, c, clock, &mut fx);
                c.tick(clock, &mut fx);
                let _ = write(cx, p, epoch, c, &mut fx, clock);
            }
            all.woken.extend(fx.woken);
            if let Some(t) = c.next_deadline() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
    }
    wake(cx, &all);
    next
}

pub(crate) fn resume(cx: &mut Cx, w: Waiting, deadline: Duration) -> Step {
    match w {
        Waiting::Join { request, ticket } => resume_ticket(cx, request, ticket, deadline, true),
        Waiting::Sync { request, ticket } => resume_ticket(cx, request, ticket, deadline, false),
        Waiting::Durable { request, mut answer, mut pending } => {
            // Seen before looking, so a move after the look is never missed.
            let watch: Vec<_> = pending.iter().map(|w| Wake::HighWatermark(w.partition.clone()).seen()).collect();
            let mut error = None;
            pending.retain(|w| {
                let p = &w.partition;
                // Leadership checked before the high watermark: a deposed
                // leader follows another log, whose high watermark says
                // nothing about the records this one appended.
                if p.role() != Role::Leader || p.leader_epoch() != w.leader_epoch {
                    error = Some(ResponseError::NotCoordinator);
                    return false;
                }
                match p.offsets() {
                    Ok(o) => o.high_watermark <= w.last,
                    Err(e) => {
                        error = Some(e.code());
                        false
                    }
                }
            });
            if error.is_none() && !pending.is_empty() {
                if cx.clock.elapsed < deadline {
                    let w = Waiting::Durable { request, answer, pending };
                    return Step::Park(Parked { request: Parkable::Group(w), deadline, watch });
                }
                error = Some(ResponseError::RequestTimedOut);
            }
            if let Some(e) = error {
                tracing::warn!(error = ?e, api = ?request.key, "group records not acknowledged");
                answer.fail(e);
            }
            answer.respond(request)
        }
    }
}

fn resume_ticket(cx: &mut Cx, request: Request, ticket: Ticket, deadline: Duration, join: bool) -> Step {
    let p = match locate(cx, &ticket.group) {
        Ok(p) => p,
        Err(e) => return ticket_error(request, join, e),
    };
    // Seen before looking: a move after the look is never missed. A sync
    // also waits for its generation's record to be durable.
    let mut watch = vec![Wake::Group(cx.node.groups.signal(&ticket.group)).seen()];
    if !join {
        watch.push(Wake::HighWatermark(p.clone()).seen());
    }
    let node = cx.node;
    let mut fx = Effects::default();
    let step = {
        let mut locked = node.groups.lock();
        let c = match locked.serving(cx.disk, &p, cx.clock) {
            Ok((c, _)) => c,
            Err(e) => return ticket_error(request, join, e),
        };
        let taken = if join {
            c.take_join(&ticket).map(|r| request.respond(&r))
        } else {
            release(&p, c, cx.clock, &mut fx);
            c.take_sync(&ticket).map(|r| request.respond(&r))
        };
        match taken {
            Some(step) => step,
            None if cx.clock.elapsed >= deadline || !c.ticket_alive(&ticket) => {
                c.abandon(&ticket);
                ticket_error(request, join, ResponseError::RebalanceInProgress)
            }
            None => {
                let w = if join { Waiting::Join { request, ticket } } else { Waiting::Sync { request, ticket } };
                Step::Park(Parked { request: Parkable::Group(w), deadline, watch })
            }
        }
    };
    // Released answers of other members: wake them.
    wake(cx, &fx);
    step
}

fn ticket_error(request: Request, join: bool, e: ResponseError) -> Step {
    if join {
        let mut r = JoinGroupResponse::default();
        r.error_code = e.code();
        r.generation_id = -1;
        request.respond(&r)
    } else {
        request.respond(&SyncGroupResponse::default().with_error_code(e.code()))
    }
}

fn park(cx: &mut Cx, request: Request, ticket: Ticket, join: bool, wait: Duration) -> Step {
    let deadline = cx.clock.elapsed + wait + PARK_SLACK;
    resume_ticket(cx, request, ticket, deadline, join)
}

// ------------------------------------------------------------ the APIs

pub fn find_coordinator(cx: &mut Cx, req: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if version >= 4 { req.coordinator_keys.clone() } else { vec![req.key.clone()] };
    let answers: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let mut c = Coordinator::default();
            c.node_id = (-1).into();
            c.host = str_bytes("");
            c.port = -1;
            let found = match req.key_type {
                0 if cx.node.cluster().is_some() => cluster_coordinator(cx, key.as_str()).map_err(|e| (e, None)),
                0 => locate(cx, key.as_str()).map(|_| local_endpoint(cx)).map_err(|e| (e, None)),
                1 => Err((ResponseError::InvalidRequest, Some(NO_TRANSACTIONS.to_string()))),
                other => Err((ResponseError::InvalidRequest, Some(format!("unknown coordinator key type {other}")))),
            };
            match found {
                Ok((node_id, host, port)) => {
                    c.node_id = node_id.into();
                    c.host = str_bytes(host);
                    c.port = port;
                }
                Err((e, message)) => {
                    tracing::info!(key = %key, key_type = req.key_type, error = ?e, "FindCoordinator refused");
                    c.error_code = e.code();
                    c.error_message = message.map(str_bytes);
                }
            }
            c.key = key;
            c
        })
        .collect();
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        resp.coordinators = answers;
    } else if let Some(c) = answers.into_iter().next() {
        resp.error_code = c.error_code;
        resp.error_message = c.error_message;
        resp.node_id = c.node_id;
        resp.host = c.host;
        resp.port = c.port;
    }
    resp
}

pub fn join_group(cx: &mut Cx, req: JoinGroupRequest, request: Request, client_id: &str) -> Step {
    let p = match locate(cx, &req.group_id.0) {
        Ok(p) => p,
        Err(e) => return ticket_error(request, true, e),
    };
    let wait = Duration::from_millis(req.rebalance_timeout_ms.max(req.session_timeout_ms).max(0) as u64);
    let client = Client { client_id, client_host: "/unknown" };
    let (clock, version) = (cx.clock, request.version);
    match run(cx, &p, |c, fx| c.join(&req, version, client, clock, fx)) {
        Ok(Answer::Now(r)) => request.respond(&r),
        Ok(Answer::Wait(ticket)) => park(cx, request, ticket, true, wait),
        Err(e) => ticket_error(request, true, e),
    }
}

pub fn sync_group(cx: &mut Cx, req: SyncGroupRequest, request: Request) -> Step {
    let p = match locate(cx, &req.group_id.0) {
        Ok(p) => p,
        Err(e) => return ticket_error(request, false, e),
    };
    let clock = cx.clock;
    let wait = Duration::from_millis(cx.node.config.groups.group_max_session_timeout_ms.max(0) as u64);
    match run(cx, &p, |c, fx| c.sync(&req, clock, fx)) {
        Ok(Answer::Now(r)) => request.respond(&r),
        Ok(Answer::Wait(ticket)) => park(cx, request, ticket, false, wait),
        Err(e) => ticket_error(request, false, e),
    }
}

pub fn heartbeat(cx: &mut Cx, req: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
    let error = match locate(cx, &req.group_id.0) {
        Ok(p) => {
            let clock = cx.clock;
            let instance = req.group_instance_id.as_deref();
            run(cx, &p, |c, _| c.heartbeat(&req.group_id.0, &req.member_id, instance, req.generation_id, clock))
                .and_then(|r| r)
        }
        Err(e) => Err(e),
    };
    HeartbeatResponse::default().with_error_code(code(error))
}

pub fn leave_group(cx: &mut Cx, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|i| i.to_string())))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let mut resp = LeaveGroupResponse::default();
    let clock = cx.clock;
    let results = match locate(cx, &req.group_id.0)
        .and_then(|p| run(cx, &p, |c, fx| c.leave(&req.group_id.0, &members, clock, fx)))
    {
        Ok(results) => results,
        Err(e) => {
            resp.error_code = e.code();
            return resp;
        }
    };
    if version >= 3 {
        resp.members = members
            .into_iter()
            .zip(&results)
            .map(|((id, instance), e)| {
                let mut m = MemberResponse::default();
                m.member_id = str_bytes(id);
                m.group_instance_id = instance.map(str_bytes);
                m.error_code = code(*e);
                m
            })
            .collect();
    } else {
        resp.error_code = results.first().map_or(0, |e| code(*e));
    }
    resp
}

pub fn offset_commit(cx: &mut Cx, req: OffsetCommitRequest, request: Request) -> Step {
    let group = req.group_id.0.to_string();
    let mut resp = OffsetCommitResponse::default();
    let mut slots = Vec::new();
    for t in &req.topics {
        let mut rt = OffsetCommitResponseTopic::default();
        rt.name = t.name.clone();
        for p in &t.partitions {
            let mut rp = OffsetCommitResponsePartition::default();
            rp.partition_index = p.partition_index;
            rt.partitions.push(rp);
        }
        resp.topics.push(rt);
    }
    let fail_all = |resp: &mut OffsetCommitResponse, e: ResponseError| {
        for t in &mut resp.topics {
            for p in &mut t.partitions {
                p.error_code = e.code();
            }
        }
    };
    let p = match locate(cx, &group) {
        Ok(p) => p,
        Err(e) => {
            fail_all(&mut resp, e);
            return request.respond(&resp);
        }
    };
    let (clock, node) = (cx.clock, cx.node);
    let max_metadata = node.config.groups.offset_metadata_max_bytes;
    let mut locked = node.groups.lock();
    let (c, epoch) = match locked.serving(cx.disk, &p, clock) {
        Ok(c) => c,
        Err(e) => {
            drop(locked);
            fail_all(&mut resp, e);
            return request.respond(&resp);
        }
    };
    let instance = req.group_instance_id.as_deref();
    let (generation, version) = (req.generation_id_or_member_epoch, request.version);
    if let Err(e) = c.admit_commit(&group, generation, &req.member_id, instance, version, clock) {
        drop(locked);
        tracing::debug!(group = %group, generation = req.generation_id_or_member_epoch, member = %req.member_id, error = ?e, "offset commit refused");
        fail_all(&mut resp, e);
        return request.respond(&resp);
    }
    let mut records = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let topic = node.topics.get(&t.name);
        for (pi, rp) in t.partitions.iter().enumerate() {
            let metadata = rp.committed_metadata.as_deref().unwrap_or("");
            let error = if topic.as_ref().and_then(|tp| tp.partition(rp.partition_index)).is_none() {
                Err(ResponseError::UnknownTopicOrPartition)
            } else if metadata.len() > max_metadata {
                Err(ResponseError::OffsetMetadataTooLarge)
            } else if !c.has_room_for(&group, &t.name, rp.partition_index) {
                Err(ResponseError::PolicyViolation)
            } else {
                let value = OffsetValue {
                    offset: rp.committed_offset,
                    leader_epoch: rp.committed_leader_epoch,
                    metadata: metadata.to_string(),
                    commit_timestamp: clock.now_ms,
                };
                records.push(Record::Offset {
                    group: group.clone(),
                    topic: t.name.to_string(),
                    partition: rp.partition_index,
                    value: Some(value),
                });
                slots.push((ti, pi));
                Ok(())
            };
            resp.topics[ti].partitions[pi].error_code = code(error);
        }
    }
    let written = match append(cx, &p, epoch, records.clone()) {
        Ok(written) => written,
        Err(e) => {
            drop(locked);
            for (ti, pi) in slots {
                resp.topics[ti].partitions[pi].error_code = e.code();
            }
            return request.respond(&resp);
        }
    };
    for r in records {
        c.apply(r, clock);
    }
    drop(locked);
    let Some(written) = written else { return request.respond(&resp) };
    when_durable(cx, request, Durable::Commit(resp), vec![written])
}

pub fn offset_fetch(cx: &mut Cx, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if version >= 8 {
        for g in &req.groups {
            let topics: Option<Vec<(String, Vec<i32>)>> = g
                .topics
                .as_ref()
                .map(|ts| ts.iter().map(|t| (t.name.to_string(), t.partition_indexes.clone())).collect());
            let member = (version >= 9).then(|| (g.member_id.as_deref(), g.member_epoch));
            let (error, found) = fetch_group(cx, &g.group_id.0, topics, member);
            let mut rg = OffsetFetchResponseGroup::default();
            rg.group_id = g.group_id.clone();
            rg.error_code = code(error);
            rg.topics = found
                .into_iter()
                .map(|(name, parts)| {
                    let mut rt = OffsetFetchResponseTopics::default();
                    rt.name = super::topic_name(&name);
                    rt.partitions = parts
                        .into_iter()
                        .map(|(index, v)| {
                            let mut rp = OffsetFetchResponsePartitions::default();
                            rp.partition_index = index;
                            (rp.committed_offset, rp.committed_leader_epoch, rp.metadata) = committed_fields(v);
                            rp
                        })
                        .collect();
                    rt
                })
                .collect();
            resp.groups.push(rg);
        }
        return resp;
    }
    let topics: Option<Vec<(String, Vec<i32>)>> =
        req.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.to_string(), t.partition_indexes.clone())).collect());
    let (error, found) = fetch_group(cx, &req.group_id.0, topics, None);
    resp.error_code = code(error);
    resp.topics = found
        .into_iter()
        .map(|(name, parts)| {
            let mut rt = OffsetFetchResponseTopic::default();
            rt.name = super::topic_name(&name);
            rt.partitions = parts
                .into_iter()
                .map(|(index, v)| {
                    let mut rp = OffsetFetchResponsePartition::default();
                    rp.partition_index = index;
                    (rp.committed_offset, rp.committed_leader_epoch, rp.metadata) = committed_fields(v);
                    // Before v2 there is no group-level error: each partition carries it.
                    if version < 2 {
                        rp.error_code = code(error);
                    }
                    rp
                })
                .collect();
            rt
        })
        .collect();
    resp
}

type Fetched = Vec<(String, Vec<(i32, Option<OffsetValue>)>)>;

/// The committed offsets of the named partitions (all the group has if none
/// are named); an uncommitted partition is None. `member` is OffsetFetch
/// v9's (member id, member epoch): a consumer group member must be at
/// that epoch.
fn fetch_group(
    cx: &mut Cx,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    member: Option<(Option<&str>, i32)>,
) -> (Result<(), ResponseError>, Fetched) {
    let p = match locate(cx, group) {
        Ok(p) => p,
        Err(e) => {
            let echo =
                topics.unwrap_or_default().into_iter().map(|(t, ps)| (t, ps.into_iter().map(|i| (i, None)).collect()));
            return (Err(e), echo.collect());
        }
    };
    let mut locked = cx.node.groups.lock();
    let c = match locked.serving(cx.disk, &p, cx.clock) {
        Ok((c, _)) => c,
        Err(e) => return (Err(e), Vec::new()),
    };
    if let Some((member_id, epoch)) = member {
        if let Err(e) = c.admit_fetch(group, member_id, epoch) {
            return (Err(e), Vec::new());
        }
    }
    let found = match topics {
        Some(ts) => ts
            .into_iter()
            .map(|(t, ps)| {
                let parts = ps.into_iter().map(|i| (i, c.committed(group, &t, i).cloned())).collect();
                (t, parts)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<(i32, Option<OffsetValue>)>> = BTreeMap::new();
            for (t, i, v) in c.all_committed(group) {
                by_topic.entry(t.to_string()).or_default().push((i, Some(v.clone())));
            }
            by_topic.into_iter().collect()
        }
    };
    (Ok(()), found)
}

pub fn list_groups(cx: &mut Cx, req: ListGroupsRequest, _version: i16) -> ListGroupsResponse {
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let mut resp = ListGroupsResponse::default();
    let locked = cx.node.groups.lock();
    for c in locked.all() {
        for (id, protocol_type, state, group_type) in c.list() {
            if !states.is_empty() && !states.contains(&state.to_lowercase()) {
                continue;
            }
            if !types.is_empty() && !types.iter().any(|t| t == group_type) {
                continue;
            }
            let mut g = ListedGroup::default();
            g.group_id = GroupId(str_bytes(id));
            g.protocol_type = str_bytes(protocol_type);
            g.group_state = str_bytes(state);
            g.group_type = str_bytes(group_type);
            resp.groups.push(g);
        }
    }
    resp
}

pub fn describe_groups(cx: &mut Cx, req: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    for group in &req.groups {
        let mut d = DescribedGroup::default();
        d.group_id = group.clone();
        d.authorized_operations = i32::MIN;
        match locate(cx, group) {
            Err(e) => d.error_code = e.code(),
            Ok(p) => {
                let mut locked = cx.node.groups.lock();
                match locked.serving(cx.disk, &p, cx.clock).map(|(c, _)| c.describe(group)) {
                    Err(e) => d.error_code = e.code(),
                    Ok(None) => {
                        d.group_state = str_bytes("Dead");
                        if version >= 6 {
                            d.error_code = ResponseError::GroupIdNotFound.code();
                        }
                    }
                    Ok(Some(g)) => {
                        d.group_state = str_bytes(g.state_name);
                        d.protocol_type = str_bytes(g.protocol_type);
                        d.protocol_data = str_bytes(g.protocol);
                        d.members = g
                            .members
                            .into_iter()
                            .map(|m| {
                                let mut dm = DescribedGroupMember::default();
                                dm.member_id = str_bytes(m.member_id);
                                dm.group_instance_id = m.instance_id.map(str_bytes);
                                dm.client_id = str_bytes(m.client_id);
                                dm.client_host = str_bytes(m.client_host);
                                dm.member_metadata = m.metadata;
                                dm.member_assignment = m.assignment;
                                dm
                            })
                            .collect();
                    }
                }
            }
        }
        resp.groups.push(d);
    }
    resp
}

/// DeleteGroups: answered once every deleted group's tombstones are durable.
pub fn delete_groups(cx: &mut Cx, req: DeleteGroupsRequest, request: Request) -> Step {
    let mut resp = DeleteGroupsResponse::default();
    let mut pending: BTreeMap<i32, Pending> = BTreeMap::new();
    for group in &req.groups_names {
        let error = match locate(cx, group) {
            Err(e) => Err(e),
            Ok(p) => {
                let ran = run_written(cx, &p, |c, fx| {
                    let records = c.delete_group(group)?;
                    tracing::info!(group = %group.0, "group deleted");
                    fx.records.extend(records);
                    Ok(())
                });
                match ran {
                    Err(e) | Ok((Err(e), _)) | Ok((Ok(()), Err(e))) => Err(e),
                    Ok((Ok(()), Ok(written))) => {
                        if let Some(w) = written {
                            let slot = pending.entry(p.index).or_insert_with(|| w.clone());
                            slot.last = slot.last.max(w.last);
                        }
                        Ok(())
                    }
                }
            }
        };
        let mut r = DeletableGroupResult::default();
        r.group_id = group.clone();
        r.error_code = code(error);
        resp.results.push(r);
    }
    when_durable(cx, request, Durable::DeleteGroups(resp), pending.into_values().collect())
}

/// OffsetDelete: answered once its tombstones are durable.
pub fn offset_delete(cx: &mut Cx, req: OffsetDeleteRequest, request: Request) -> Step {
    let mut resp = OffsetDeleteResponse::default();
    let p = match locate(cx, &req.group_id.0) {
        Ok(p) => p,
        Err(e) => return request.respond(&resp.with_error_code(e.code())),
    };
    let asked: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), p.partition_index)))
        .collect();
    let clock = cx.clock;
    let node = cx.node;
    let mut locked = node.groups.lock();
    let (c, epoch) = match locked.serving(cx.disk, &p, clock) {
        Ok(c) => c,
        Err(e) => return request.respond(&resp.with_error_code(e.code())),
    };
    let results = match c.delete_offsets(&req.group_id.0, &asked) {
        Ok(r) => r,
        Err(e) => return request.respond(&resp.with_error_code(e.code())),
    };
    let tombstones: Vec<Record> = results.iter().filter_map(|(_, r)| r.clone()).collect();
    let written = append(cx, &p, epoch, tombstones.clone());
    if written.is_ok() {
        for r in tombstones {
            c.apply(r, clock);
        }
    }
    drop(locked);
    let mut results = results.into_iter();
    for t in &req.topics {
        let mut rt = OffsetDeleteResponseTopic::default();
        rt.name = t.name.clone();
        for rp in &t.partitions {
            let (mut e, _) = results.next().expect("one result per partition");
            if let (Ok(()), Err(w)) = (e, &written) {
                e = Err(*w);
            }
            rt.partitions.push(
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(rp.partition_index)
                    .with_error_code(code(e)),
            );
        }
        resp.topics.push(rt);
    }
    let pending = match written {
        Ok(Some(w)) => vec![w],
        _ => Vec::new(),
    };
    when_durable(cx, request, Durable::OffsetDelete(resp), pending)
}

/// The topics consumer groups may be assigned: every topic but the internal ones.
fn topics_view(cx: &Cx) -> TopicsView {
    cx.node
        .topics
        .all()
        .iter()
        .filter(|t| t.name != OFFSETS_TOPIC)
        .map(|t| (t.name.clone(), TopicMeta { id: t.id, partitions: t.partitions.len() as i32 }))
        .collect()
}

/// ConsumerGroupHeartbeat (KIP-848). Its answer waits until everything the
/// coordinator's partition holds so far is durable: the assignment it
/// hands out may rest on records other members' heartbeats wrote.
pub fn consumer_group_heartbeat(
    cx: &mut Cx,
    req: ConsumerGroupHeartbeatRequest,
    request: Request,
    client_id: &str,
) -> Step {
    let p = match locate(cx, &req.group_id.0) {
        Ok(p) => p,
        Err(e) => {
            let mut r = ConsumerGroupHeartbeatResponse::default();
            r.error_code = e.code();
            r.member_epoch = -1;
            return request.respond(&r);
        }
    };
    let topics = topics_view(cx);
    let clock = cx.clock;
    let client = Client { client_id, client_host: "/unknown" };
    let ran = run_written(cx, &p, |c, fx| c.consumer_heartbeat(&req, client, &topics, clock, fx));
    let (mut resp, written) = match ran {
        Ok(ran) => ran,
        Err(e) => {
            let mut r = ConsumerGroupHeartbeatResponse::default();
            r.error_code = e.code();
            r.member_epoch = -1;
            return request.respond(&r);
        }
    };
    if let Err(e) = written {
        resp.error_code = e.code();
        resp.assignment = None;
        return request.respond(&resp);
    }
    let epoch = written.ok().flatten().map_or_else(|| p.leader_epoch(), |w| w.leader_epoch);
    let pending = match p.offsets() {
        Ok(o) if o.high_watermark < o.log_end_offset => {
            vec![Pending { partition: p, last: o.log_end_offset - 1, leader_epoch: epoch }]
        }
        _ => Vec::new(),
    };
    when_durable(cx, request, Durable::Heartbeat(resp), pending)
}

/// ConsumerGroupDescribe (KIP-848): a consumer group's epochs, assignor and
/// members with their current and target assignments.
pub fn consumer_group_describe(
    cx: &mut Cx,
    req: ConsumerGroupDescribeRequest,
    _version: i16,
) -> ConsumerGroupDescribeResponse {
    use kafka_protocol::messages::consumer_group_describe_response::{
        Assignment, DescribedGroup as Described, Member, TopicPartitions,
    };
    let topics = topics_view(cx);
    let names: BTreeMap<uuid::Uuid, &str> = topics.iter().map(|(n, t)| (t.id, n.as_str())).collect();
    let wire = |a: &crate::server::group::records::Assignment| {
        let mut w = Assignment::default();
        w.topic_partitions = a
            .iter()
            .map(|(id, ps)| {
                let mut tp = TopicPartitions::default();
                tp.topic_id = *id;
                tp.topic_name = super::topic_name(names.get(id).copied().unwrap_or(""));
                tp.partitions = ps.iter().copied().collect();
                tp
            })
            .collect();
        w
    };
    let mut resp = ConsumerGroupDescribeResponse::default();
    for group in &req.group_ids {
        let mut d = Described::default();
        d.group_id = group.clone();
        d.authorized_operations = i32::MIN;
        match locate(cx, group) {
            Err(e) => d.error_code = e.code(),
            Ok(p) => {
                let mut locked = cx.node.groups.lock();
                match locked.serving(cx.disk, &p, cx.clock).and_then(|(c, _)| c.consumer_group(group)) {
                    Err(e) => {
                        d.error_code = e.code();
                        d.error_message = Some(str_bytes(format!("group {} is not a consumer group", group.0)));
                        d.group_state = str_bytes("Dead");
                    }
                    Ok(c) => {
                        d.group_state = str_bytes(c.state().name());
                        d.group_epoch = c.epoch;
                        d.assignment_epoch = c.assignment_epoch;
                        d.assignor_name = str_bytes(c.assignor.clone());
                        d.members = c
                            .members
                            .values()
                            .map(|m| {
                                let mut dm = Member::default();
                                dm.member_id = str_bytes(m.id.clone());
                                dm.instance_id = m.meta.instance_id.clone().map(str_bytes);
                                dm.rack_id = m.meta.rack_id.clone().map(str_bytes);
                                dm.member_epoch = m.member_epoch;
                                dm.client_id = str_bytes(m.meta.client_id.clone());
                                dm.client_host = str_bytes(m.meta.client_host.clone());
                                dm.subscribed_topic_names =
                                    m.meta.subscribed_topic_names.iter().map(|t| super::topic_name(t)).collect();
                                dm.subscribed_topic_regex = m.meta.subscribed_topic_regex.clone().map(str_bytes);
                                dm.assignment = wire(&m.assigned);
                                dm.target_assignment = wire(c.target.get(&m.id).unwrap_or(&Default::default()));
                                // 1: a member of the consumer protocol (KIP-1099).
                                dm.member_type = 1;
                                dm
                            })
                            .collect();
                    }
                }
            }
        }
        resp.groups.push(d);
    }
    resp
}

fn code(r: Result<(), ResponseError>) -> i16 {
    r.err().map_or(0, |e| e.code())
}

/// (offset, leader epoch, metadata) as OffsetFetch reports them; -1 when nothing is committed.
fn committed_fields(v: Option<OffsetValue>) -> (i64, i32, Option<StrBytes>) {
    match v {
        Some(v) => (v.offset, v.leader_epoch, Some(str_bytes(v.metadata))),
        None => (-1, -1, Some(str_bytes(""))),
    }
}
