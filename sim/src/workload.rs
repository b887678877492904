//! The workload: Faultline's own Rust clients, run on turmoil hosts,
//! recording every operation into the history.
//!
//! - producers send unique values (`p{process}-{slot}.{n}`), keyed or
//!   keyless, from `concurrency` slots at once, each slot one send in flight
//!   at the scenario's rate; the producer client batches them (linger,
//!   batch size), sends several partitions per Produce request, keeps up to
//!   `max_in_flight` requests out, retries, and may be idempotent. A send
//!   with acks 0 is recorded `info` with its partition but no offset: the
//!   broker never says whether it took it;
//! - consumers assign every partition and poll with the scenario's fetch
//!   size, now and then seeking one partition back to a random offset (often
//!   inside a batch), recorded as an `assign` so order checks start afresh,
//!   and now and then asking for every partition's end offset, recorded as
//!   `end_offsets` for the linearizability checker;
//! - with consumer groups, consumers instead subscribe as members of one
//!   group and commit after each poll (sometimes stalling past their session
//!   timeout first, sometimes leaving and rejoining), through the settle
//!   period; each completed rebalance is recorded as the member's
//!   `generation` and an `assign`, and the reader reads the group's committed
//!   offsets back after the final read;
//! - the reader creates the topics before anything else, then (one broker)
//!   sends the protocol probes a broker must refuse ([`crate::probes`]); at the heal it
//!   probes the cluster with a send until one is acknowledged (liveness),
//!   and after the settle period reads every partition from its log start to
//!   its end, paging in fetches of `final_fetch_max_bytes` (the final read
//!   the checkers rely on).
//!
//! Fetched data that fails the client's CRC check is a failed poll, and the
//! client polls the same offset again: a bit flipped on one read of the disk
//! is gone on the next, which is the check doing its job. Only the final
//! read judges corruption: an offset that never decodes through its whole
//! retry budget, after the heal, is corruption stored in the log
//! ([`Unreadable`]).
//!
//! Each host's session is a fresh process id; a host that crashes comes back
//! as a new session, as a crashed client would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use faultline_broker::client::{
    Admin, AdminConfig, Assignor, AutoOffsetReset, ClientError, Consumer, ConsumerConfig, ConsumerRecord,
    GroupSettings, NewTopic, ProduceError, Producer, ProducerConfig, ProducerRecord, RebalanceListener,
    TopicPartition as ClientTp,
};
use faultline_broker::io::{self, Env};
use kafka_protocol::error::ResponseError;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::history::{EndOffset, OpKind, Outcome, Polled, TopicPartition};
use crate::recorder::{FinalRead, Recorder, Unreadable};
use crate::scenario::{Topic, Workload};
use crate::seam::{sim_now, NodeState, SimIo};
use crate::seed;
use crate::trace::Trace;

/// Everything a workload host needs; cloned into each host closure.
#[derive(Clone)]
pub struct ClientCtx {
    pub node: Arc<NodeState>,
    pub trace: Trace,
    pub recorder: Recorder,
    pub epoch_ms: i64,
    pub seed: u64,
    pub bootstrap: Vec<String>,
    pub topics: Vec<Topic>,
    pub workload: Workload,
    /// When producers and consumers stop.
    pub end: Duration,
    /// When the final read starts, and when it must give up.
    pub final_start: Duration,
    pub final_deadline: Duration,
    /// After the heal, a send must be acknowledged by then (the liveness
    /// bound); the reader keeps probing until it is.
    pub liveness_deadline: Duration,
    /// Planted bugs, for the switches that live in the clients.
    pub bugs: faultline_broker::config::PlantedBugs,
    /// Consumers are members of one group (`cluster.consumer_groups`).
    pub consumer_groups: bool,
    /// The servers form a metadata quorum (`cluster.controllers`): the
    /// reader also asks every broker for Metadata at the end.
    pub quorum: bool,
}

/// The group every consumer host joins.
pub const GROUP_ID: &str = "sim-group";

impl ClientCtx {
    fn env(&self) -> Env {
        SimIo::new(self.node.clone(), self.trace.clone(), self.epoch_ms)
    }

    fn name(&self) -> &str {
        &self.node.name
    }

    fn partitions(&self) -> Vec<ClientTp> {
        self.topics.iter().flat_map(|t| (0..t.partitions).map(|p| ClientTp::new(t.name.clone(), p))).collect()
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.workload.request_timeout_ms)
    }

    /// Wait (in simulated time) until the reader has created the topics;
    /// false if the workload window closed first.
    async fn await_topics(&self, env: &Env) -> bool {
        while !self.recorder.topics_ready() {
            if sim_now() >= self.end {
                return false;
            }
            env.sleep(Duration::from_millis(10)).await;
        }
        sim_now() < self.end
    }

    /// The world and a new session for a producer or consumer host, once the
    /// topics exist; `None` if the workload window closed first.
    async fn begin_session(&self) -> Option<(Env, u64)> {
        if sim_now() >= self.end {
            return None;
        }
        let env = self.env();
        if !self.await_topics(&env).await {
            return None;
        }
        let process = self.recorder.new_session(self.name());
        Some((env, process))
    }

    fn rng(&self, process: u64) -> ChaCha8Rng {
        seed::rng(self.seed, &format!("workload/{}/{process}", self.name()))
    }

    fn slot_rng(&self, process: u64, slot: u32) -> ChaCha8Rng {
        seed::rng(self.seed, &format!("workload/{}/{process}/{slot}", self.name()))
    }
}

fn outcome_of(e: &ClientError) -> Outcome {
    if e.maybe_applied() {
        Outcome::Info { error: e.to_string() }
    } else {
        Outcome::Fail { error: e.to_string() }
    }
}

/// The producer settings a scenario's workload asks for.
fn producer_config(ctx: &ClientCtx, w: &Workload) -> ProducerConfig {
    let mut config = ProducerConfig::new(ctx.bootstrap.clone());
    config.client_id = ctx.name().to_string();
    config.acks = w.acks;
    config.retries = w.retries as i32;
    config.linger_ms = w.linger_ms;
    config.batch_size = w.batch_size;
    config.max_in_flight_requests_per_connection = w.max_in_flight;
    config.enable_idempotence = w.idempotence;
    config.compression_type = w.compression.parse().unwrap_or_default();
    config.request_timeout_ms = w.request_timeout_ms;
    config.retry_backoff_ms = 50;
    config.delivery_timeout_ms = w.request_timeout_ms * (u64::from(w.retries) + 1) + 1000 + w.linger_ms;
    config.planted_bug_renumber_retries = ctx.bugs.renumber_retries;
    config
}

/// The key numbered `i`: 2 to 12 bytes long, so that murmur2's word loop
/// and each of its three tail cases all run.
fn key_name(i: u32) -> String {
    format!("k{i}{}", "-".repeat((i % 11) as usize))
}

/// Printable filler for a value, different for every value, so that
/// compression cannot squeeze it to nothing and a torn write that keeps the
/// length still changes what the CRC covers.
fn padding(value: &str, len: usize) -> String {
    let mut x = crate::trace::fnv1a(value.as_bytes()) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly one letter, so codecs find something to do.
            if x.is_multiple_of(4) {
                (b'a' + (x >> 8) as u8 % 26) as char
            } else {
                'x'
            }
        })
        .collect()
}

/// One send, recorded from invoke to outcome in slot `slot` of the host.
#[allow(clippy::too_many_arguments)]
async fn recorded_send(
    ctx: &ClientCtx,
    env: &Env,
    producer: &Producer,
    process: u64,
    slot: u32,
    topic: &str,
    key: Option<String>,
    value: String,
    patience: Duration,
) -> bool {
    let kind = |partition, offset| OpKind::Send {
        topic: topic.to_string(),
        key: key.clone(),
        value: value.clone(),
        partition,
        offset,
    };
    ctx.recorder.invoke_in(ctx.name(), slot, process, sim_now(), kind(None, None));
    let mut record = ProducerRecord::new(topic.to_string(), value.clone().into_bytes());
    if let Some(k) = &key {
        record = record.with_key(k.clone().into_bytes());
    }
    let result = io::timeout(env, patience, producer.send(record)).await;
    let (done, outcome) = match result {
        Some(Ok(meta)) if meta.offset.is_none() => {
            (Some(kind(Some(meta.partition), None)), Outcome::Info { error: ACKS0_HANDED_OVER.into() })
        }
        Some(Ok(meta)) => (Some(kind(Some(meta.partition), meta.offset)), Outcome::Ok),
        Some(Err(ProduceError::Definite(e))) => (None, Outcome::Fail { error: e.to_string() }),
        Some(Err(ProduceError::Indeterminate(e))) => (None, Outcome::Info { error: e.to_string() }),
        None => (None, Outcome::Info { error: OVERDUE_SEND.into() }),
    };
    let ok = outcome == Outcome::Ok;
    ctx.recorder.complete_in(ctx.name(), slot, sim_now(), done, outcome, false);
    ok
}

/// The outcome of a send whose producer said nothing by `delivery.timeout.ms`
/// plus a second: the producer broke its contract to answer every send by
/// then (with an error if need be). Liveness counts these.
pub const OVERDUE_SEND: &str = "no outcome before the delivery deadline";
/// The outcome of an acks=0 send the producer handed to the broker: nothing
/// more is known, but the client did its part.
pub const ACKS0_HANDED_OVER: &str = "acks=0: the broker never says whether it took the record";

/// A producer host: one session whose `concurrency` slots each send until
/// the workload window closes, sharing one producer client.
pub async fn producer(ctx: ClientCtx) {
    let Some((env, process)) = ctx.begin_session().await else { return };
    let w = &ctx.workload;
    let config = producer_config(&ctx, w);
    // A hung delivery must still end the operation: give the producer its
    // own deadline plus a margin before calling the outcome unknown.
    let patience = Duration::from_millis(config.delivery_timeout_ms + 1000);
    let producer = match Producer::new(env.clone(), config) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot create producer");
            return;
        }
    };
    let slots = (0..w.concurrency).map(|slot| {
        let (ctx, env, producer) = (&ctx, &env, &producer);
        async move {
            let mut rng = if slot == 0 { ctx.rng(process) } else { ctx.slot_rng(process, slot) };
            let mut n = 0u64;
            while sim_now() < ctx.end {
                let topic = &ctx.topics[rng.random_range(0..ctx.topics.len())].name;
                let key = key_name(rng.random_range(0..w.keys));
                let key = (w.keyed >= 1.0 || rng.random_bool(w.keyed)).then_some(key);
                let id = format!("p{process}-{slot}.{n}");
                let value = if w.value_size > 0 { format!("{id}:{}", padding(&id, w.value_size)) } else { id };
                n += 1;
                recorded_send(ctx, env, producer, process, slot, topic, key, value, patience).await;
                ctx.recorder.note_sequence_refusals(process, producer.sequence_refusals());
                let gap = rng.random_range(0.5..1.5) / w.rate;
                env.sleep(Duration::from_secs_f64(gap)).await;
            }
        }
    });
    futures::future::join_all(slots).await;
}

fn polled(records: &[ConsumerRecord]) -> Vec<Polled> {
    records
        .iter()
        .map(|r| Polled {
            partition: TopicPartition { topic: r.topic.clone(), partition: r.partition },
            offset: r.offset,
            value: r.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default(),
        })
        .collect()
}

fn consumer_config(ctx: &ClientCtx, fetch_max_bytes: i32) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(ctx.bootstrap.clone());
    c.client_id = ctx.name().to_string();
    c.auto_offset_reset = AutoOffsetReset::Earliest;
    c.fetch_max_wait_ms = 100;
    c.fetch_max_bytes = fetch_max_bytes;
    c.max_partition_fetch_bytes = fetch_max_bytes;
    c.request_timeout_ms = ctx.workload.request_timeout_ms;
    c.retry_backoff_ms = 50;
    c
}

fn history_tp(tp: &ClientTp) -> TopicPartition {
    TopicPartition { topic: tp.topic.clone(), partition: tp.partition }
}

/// How one recorded poll went.
enum PollResult {
    /// It returned (perhaps no records).
    Read,
    /// It failed; nothing was read.
    Failed,
    /// It failed because the data fetched from `partition` at `offset` did
    /// not pass the CRC check; nothing was read and the position is still
    /// `offset`.
    Corrupt { partition: ClientTp, offset: i64, error: String },
}

/// One recorded poll.
async fn recorded_poll(
    ctx: &ClientCtx,
    env: &Env,
    consumer: &mut Consumer,
    process: u64,
    final_read: bool,
) -> PollResult {
    let wait = Duration::from_millis(200);
    ctx.recorder.invoke(ctx.name(), process, sim_now(), OpKind::Poll { records: Vec::new() });
    // A group member's poll may wait out a rebalance first.
    let rebalance = if ctx.consumer_groups { group_rebalance_timeout(ctx) } else { Duration::ZERO };
    let res = io::timeout(env, wait + ctx.request_timeout() * 2 + rebalance, consumer.poll(wait)).await;
    let (result, kind, outcome) = match res {
        Some(Ok(records)) => (PollResult::Read, Some(OpKind::Poll { records: polled(&records) }), Outcome::Ok),
        // The client's CRC check refused what was fetched, so nothing was
        // read and the poll definitely failed. Whether the corruption was a
        // passing fault or is stored in the log only re-fetching can tell.
        Some(Err(e)) => match &e {
            ClientError::CorruptRecord { partition, offset, .. } => {
                ctx.recorder.note_corrupt_poll(history_tp(partition), *offset, sim_now());
                let error = format!("{}{e}", crate::recorder::CORRUPT_POLL);
                let result =
                    PollResult::Corrupt { partition: partition.clone(), offset: *offset, error: e.to_string() };
                (result, None, Outcome::Fail { error })
            }
            _ => (PollResult::Failed, None, outcome_of(&e)),
        },
        None => (PollResult::Failed, None, Outcome::Info { error: "poll did not return".into() }),
    };
    ctx.recorder.complete(ctx.name(), sim_now(), kind, outcome, final_read);
    result
}

/// One recorded ListOffsets (latest) of every partition.
async fn recorded_end_offsets(ctx: &ClientCtx, env: &Env, consumer: &Consumer, process: u64, tps: &[ClientTp]) {
    ctx.recorder.invoke(ctx.name(), process, sim_now(), OpKind::EndOffsets { ends: Vec::new() });
    let res = io::timeout(env, ctx.request_timeout() * 2, consumer.end_offsets(tps)).await;
    let (kind, outcome) = match res {
        Some(Ok(ends)) => {
            let ends =
                ends.iter().map(|(tp, offset)| EndOffset { partition: history_tp(tp), offset: *offset }).collect();
            (Some(OpKind::EndOffsets { ends }), Outcome::Ok)
        }
        // Nothing changes state: a lost answer is as good as a failure.
        Some(Err(e)) => (None, Outcome::Fail { error: e.to_string() }),
        None => (None, Outcome::Fail { error: "ListOffsets did not return".into() }),
    };
    ctx.recorder.complete(ctx.name(), sim_now(), kind, outcome, false);
}

/// A consumer host: assigns every partition and polls until the workload
/// window closes (or, with consumer groups, is a member of the group), and
/// now and then asks for the end offsets.
pub async fn consumer(ctx: ClientCtx) {
    if ctx.consumer_groups {
        return group_consumer(ctx).await;
    }
    let Some((env, process)) = ctx.begin_session().await else { return };
    let Ok(mut consumer) = Consumer::new(env.clone(), consumer_config(&ctx, ctx.workload.fetch_max_bytes)) else {
        tracing::error!("cannot create consumer");
        return;
    };
    let tps = ctx.partitions();
    consumer.assign(tps.clone());
    let assigned: Vec<TopicPartition> = tps.iter().map(history_tp).collect();
    let assign = OpKind::Assign { partitions: assigned.clone() };
    ctx.recorder.instant(ctx.name(), process, sim_now(), assign, Outcome::Ok, false);
    let mut rng = ctx.rng(process);
    // Its own stream, so that asking for end offsets moves no other draw.
    let mut end_rng = seed::rng(ctx.seed, &format!("workload/{}/{process}/end-offsets", ctx.name()));
    let seek_p = ctx.workload.seek_probability;
    let end_p = ctx.workload.end_offsets_probability;
    while sim_now() < ctx.end {
        if end_p > 0.0 && end_rng.random_bool(end_p) {
            recorded_end_offsets(&ctx, &env, &consumer, process, &tps).await;
        }
        if seek_p > 0.0 && rng.random_bool(seek_p) {
            // Back to a random offset at or below the position, so the
            // fetch often starts inside a stored batch. The seek is an
            // assign in the history: order checks start afresh after it.
            let tp = &tps[rng.random_range(0..tps.len())];
            let pick = rng.random::<u64>();
            if let Some(Ok(pos)) = io::timeout(&env, ctx.request_timeout() * 2, consumer.position(tp)).await {
                let to = (pick % (pos as u64 + 1)) as i64;
                if consumer.seek(tp, to).is_ok() {
                    let assign = OpKind::Assign { partitions: assigned.clone() };
                    ctx.recorder.instant(ctx.name(), process, sim_now(), assign, Outcome::Ok, false);
                }
            }
        }
        match recorded_poll(&ctx, &env, &mut consumer, process, false).await {
            PollResult::Read => {}
            // A corrupt fetch is retried like any failed one: the position
            // did not move, so the next poll asks for the same data again.
            PollResult::Failed | PollResult::Corrupt { .. } => env.sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A member's `max.poll.interval.ms` (its rebalance timeout).
fn group_rebalance_timeout(ctx: &ClientCtx) -> Duration {
    Duration::from_millis(ctx.workload.group_session_timeout_ms.max(0) as u64 * 3)
}

fn group_consumer_config(ctx: &ClientCtx) -> ConsumerConfig {
    let w = &ctx.workload;
    let mut c = consumer_config(ctx, w.fetch_max_bytes);
    let mut g = GroupSettings::new(GROUP_ID);
    g.session_timeout_ms = w.group_session_timeout_ms;
    g.heartbeat_interval_ms = w.group_heartbeat_interval_ms;
    g.max_poll_interval_ms = group_rebalance_timeout(ctx).as_millis() as i32;
    g.assignors = vec![Assignor::from_name(&w.group_assignor).unwrap_or(Assignor::Range)];
    c.group = Some(g);
    c.enable_auto_commit = false;
    c
}

/// Records each completed rebalance: the member's generation and what it
/// owns, and an `assign` so that order checks start afresh (the member
/// resumes each partition at the committed offset).
struct RebalanceRecorder {
    recorder: Recorder,
    node: String,
    process: u64,
}

impl RebalanceListener for RebalanceRecorder {
    fn on_generation(&mut self, member_id: &str, generation: i32, owned: &[ClientTp]) {
        let now = sim_now();
        let partitions: Vec<TopicPartition> = owned.iter().map(history_tp).collect();
        let kind = OpKind::Generation { member: member_id.to_string(), generation, partitions: partitions.clone() };
        self.recorder.span(&self.node, self.process, now, now, kind, Outcome::Ok, false);
        self.recorder.span(&self.node, self.process, now, now, OpKind::Assign { partitions }, Outcome::Ok, false);
    }
}

/// A group member host: sessions of subscribe, poll, commit until the final
/// read starts (through the settle period, so the group drains what was
/// produced). Each session ends by leaving the group, now and then early.
async fn group_consumer(ctx: ClientCtx) {
    let env = ctx.env();
    if !ctx.await_topics(&env).await {
        return;
    }
    let topics: Vec<String> = ctx.topics.iter().map(|t| t.name.clone()).collect();
    let w = ctx.workload.clone();
    while sim_now() < ctx.final_start {
        let process = ctx.recorder.new_session(ctx.name());
        let mut rng = ctx.rng(process);
        let Ok(mut consumer) = Consumer::new(env.clone(), group_consumer_config(&ctx)) else {
            tracing::error!("cannot create group consumer");
            return;
        };
        let listener = RebalanceRecorder { recorder: ctx.recorder.clone(), node: ctx.name().to_string(), process };
        if consumer.set_rebalance_listener(Box::new(listener)).is_err() || consumer.subscribe(topics.clone()).is_err() {
            return;
        }
        let mut committed = BTreeMap::new();
        while sim_now() < ctx.final_start {
            match recorded_poll(&ctx, &env, &mut consumer, process, false).await {
                PollResult::Read => {}
                PollResult::Failed | PollResult::Corrupt { .. } => env.sleep(Duration::from_millis(50)).await,
            }
            let offsets = consumer.consumed_offsets();
            if offsets != committed && !offsets.is_empty() {
                if w.group_stall_probability > 0.0 && rng.random_bool(w.group_stall_probability) {
                    // Processing outlives the session: the commit that follows is stale.
                    env.sleep(Duration::from_millis(w.group_stall_ms)).await;
                }
                if recorded_commit(&ctx, &env, &mut consumer, process, &offsets).await {
                    committed = offsets;
                }
            }
            if w.group_leave_probability > 0.0 && rng.random_bool(w.group_leave_probability) {
                break;
            }
        }
        let _ = io::timeout(&env, ctx.request_timeout() * 2, consumer.unsubscribe()).await;
        env.sleep(Duration::from_millis(rng.random_range(0..200))).await;
    }
}

/// One recorded commit of `offsets` with the member's generation. True if acknowledged.
async fn recorded_commit(
    ctx: &ClientCtx,
    env: &Env,
    consumer: &mut Consumer,
    process: u64,
    offsets: &BTreeMap<ClientTp, i64>,
) -> bool {
    let generation = consumer.group_generation().map(|(_, g)| g);
    let kind =
        OpKind::Commit { offsets: offsets.iter().map(|(tp, o)| (history_tp(tp).key(), *o)).collect(), generation };
    ctx.recorder.invoke(ctx.name(), process, sim_now(), kind);
    let outcome = match io::timeout(env, ctx.request_timeout() * 3, consumer.commit_offsets(offsets)).await {
        Some(Ok(())) => Outcome::Ok,
        Some(Err(e)) => outcome_of(&e),
        None => Outcome::Info { error: "commit did not return".into() },
    };
    let ok = outcome == Outcome::Ok;
    ctx.recorder.complete(ctx.name(), sim_now(), None, outcome, false);
    ok
}

/// After the final read: the group's committed offsets of every partition,
/// as the coordinator (restarted or not) serves them.
async fn read_committed(ctx: &ClientCtx, env: &Env) {
    let process = ctx.recorder.new_session(ctx.name());
    let Ok(mut consumer) = Consumer::new(env.clone(), group_consumer_config(ctx)) else { return };
    let tps = ctx.partitions();
    while sim_now() < ctx.final_deadline {
        ctx.recorder.invoke(ctx.name(), process, sim_now(), OpKind::Committed { offsets: BTreeMap::new() });
        match io::timeout(env, ctx.request_timeout() * 3, consumer.committed(&tps)).await {
            Some(Ok(got)) => {
                let offsets = got.iter().map(|(tp, o)| (history_tp(tp).key(), *o)).collect();
                ctx.recorder.complete(ctx.name(), sim_now(), Some(OpKind::Committed { offsets }), Outcome::Ok, false);
                return;
            }
            Some(Err(e)) => ctx.recorder.complete(ctx.name(), sim_now(), None, outcome_of(&e), false),
            None => {
                ctx.recorder.complete(ctx.name(), sim_now(), None, Outcome::Info { error: "no answer".into() }, false)
            }
        }
        env.sleep(FINAL_RETRY_BACKOFF).await;
    }
}

/// The reader host: creates the topics, probes the healed cluster with
/// sends until one is acknowledged, then waits for the final phase and
/// reads everything.
pub async fn reader(ctx: ClientCtx) {
    let env = ctx.env();
    create_topics(&ctx, &env).await;
    if !ctx.quorum {
        let timeout = Duration::from_millis(ctx.workload.request_timeout_ms);
        ctx.recorder.note_probe_failures(crate::probes::run(&env, ctx.bootstrap.clone(), timeout).await);
    }
    let now = sim_now();
    if now < ctx.end {
        env.sleep(ctx.end - now).await;
    }
    probe(&ctx, &env).await;
    let now = sim_now();
    if now < ctx.final_start {
        env.sleep(ctx.final_start - now).await;
    }
    let outcome = final_read(&ctx, &env).await;
    if ctx.consumer_groups {
        read_committed(&ctx, &env).await;
    }
    if ctx.quorum {
        final_metadata(&ctx, &env).await;
    }
    ctx.recorder.set_final_read_done(outcome);
}

/// After the heal: send one value at a time with acks -1 until one is
/// acknowledged or the liveness bound passes. Each attempt is a recorded
/// send like any other, so the final read must find the one that landed.
async fn probe(ctx: &ClientCtx, env: &Env) {
    let process = ctx.recorder.new_session(ctx.name());
    let mut w = ctx.workload.clone();
    w.acks = -1;
    w.retries = 0;
    w.idempotence = false;
    w.linger_ms = 0;
    w.max_in_flight = 1;
    let config = producer_config(ctx, &w);
    let patience = Duration::from_millis(config.delivery_timeout_ms + 1000);
    let Ok(producer) = Producer::new(env.clone(), config) else { return };
    let mut n = 0;
    while sim_now() < ctx.liveness_deadline {
        let topic = &ctx.topics[n % ctx.topics.len()].name;
        let value = format!("probe{process}-{n}");
        n += 1;
        if recorded_send(ctx, env, &producer, process, 0, topic, None, value, patience).await {
            return;
        }
        env.sleep(Duration::from_millis(50)).await;
    }
}

async fn create_topics(ctx: &ClientCtx, env: &Env) {
    let mut config = AdminConfig::new(ctx.bootstrap.clone());
    config.client_id = ctx.name().to_string();
    config.request_timeout_ms = ctx.workload.request_timeout_ms;
    let admin = match Admin::new(env.clone(), config) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot create admin client");
            return;
        }
    };
    let topics: Vec<NewTopic> = ctx
        .topics
        .iter()
        .map(|t| {
            let mut n = NewTopic::new(t.name.clone(), t.partitions, t.replication_factor);
            n.configs = t.configs.clone();
            n
        })
        .collect();
    // Each attempt is a recorded operation, so the quorum checker can hold
    // every acknowledged one to the Metadata answers after the heal. A
    // cluster still electing its controller answers NOT_CONTROLLER (or
    // nothing) meanwhile: retry until it takes the topic — past the fault
    // window if need be (faults may have kept every attempt from committing),
    // up to the liveness bound after the heal.
    let process = ctx.recorder.new_session(ctx.name());
    for t in topics {
        while sim_now() < ctx.liveness_deadline {
            let invoke = sim_now();
            let result = admin.create_topics(std::slice::from_ref(&t)).await;
            let outcome = match &result {
                Ok(()) => Outcome::Ok,
                Err(e) if e.broker_error() == Some(ResponseError::TopicAlreadyExists) => Outcome::Ok,
                Err(e) => outcome_of(e),
            };
            let done = outcome == Outcome::Ok;
            let kind = OpKind::CreateTopic { topic: t.name.clone(), partitions: t.num_partitions };
            ctx.recorder.span(ctx.name(), process, invoke, sim_now(), kind, outcome, false);
            if done {
                break;
            }
            if let Err(e) = result {
                tracing::debug!(topic = %t.name, error = %e, "create topic failed; retrying");
            }
            env.sleep(Duration::from_millis(50)).await;
        }
    }
    ctx.recorder.set_topics_ready();
}

/// How long the final Metadata check waits for one broker to list every
/// topic before recording what it lists.
const METADATA_PATIENCE: Duration = Duration::from_secs(5);

/// After the final read, with a metadata quorum: ask every broker for
/// Metadata (all topics) and record what each listed, so the quorum
/// checker can hold every acknowledged CreateTopics to it. Retried per
/// broker until it answers or the final read's budget runs out.
async fn final_metadata(ctx: &ClientCtx, env: &Env) {
    use faultline_broker::client::cluster::{Cluster, ClusterConfig};
    use kafka_protocol::messages::MetadataRequest;
    let process = ctx.recorder.new_session(ctx.name());
    let config = ClusterConfig {
        bootstrap_servers: ctx.bootstrap.clone(),
        client_id: ctx.name().to_string(),
        request_timeout: ctx.request_timeout(),
    };
    let Ok(cluster) = Cluster::new(env.clone(), config) else { return };
    for addr in &ctx.bootstrap {
        let broker = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h).to_string();
        let invoke = sim_now();
        let mut last_error = String::from("no attempt within the final read's budget");
        let mut listed = None;
        let mut isr = BTreeMap::new();
        while sim_now() < ctx.final_deadline {
            let answer = match cluster.connection(addr).await {
                Ok(conn) => cluster.send(&conn, |_| MetadataRequest::default().with_topics(None)).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(resp) => {
                    let topics: Vec<String> = resp
                        .topics
                        .iter()
                        .filter(|t| t.error_code == 0)
                        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                        .collect();
                    let complete = ctx.topics.iter().all(|t| topics.contains(&t.name));
                    listed = Some(topics);
                    // The in-sync replicas, which the replica checker holds
                    // to every committed offset.
                    isr = resp
                        .topics
                        .iter()
                        .filter(|t| t.error_code == 0)
                        .filter_map(|t| Some((t.name.as_ref()?.0.to_string(), &t.partitions)))
                        .flat_map(|(name, ps)| {
                            ps.iter().map(move |p| {
                                (format!("{name}-{}", p.partition_index), p.isr_nodes.iter().map(|b| b.0).collect())
                            })
                        })
                        .collect();
                    // Metadata reaches a broker by its fetching the log: a
                    // broker still catching up may lag for a moment, which
                    // is not a lost topic. Ask again until it lists every
                    // topic or its patience runs out.
                    if complete || sim_now() >= invoke + METADATA_PATIENCE {
                        break;
                    }
                    env.sleep(FINAL_RETRY_BACKOFF).await;
                }
                Err(e) => {
                    last_error = e.to_string();
                    env.sleep(FINAL_RETRY_BACKOFF).await;
                }
            }
        }
        let (topics, outcome) = match listed {
            Some(t) => (t, Outcome::Ok),
            None => (Vec::new(), Outcome::Info { error: last_error }),
        };
        let kind = OpKind::Metadata { broker, topics, isr };
        ctx.recorder.span(ctx.name(), process, invoke, sim_now(), kind, outcome, true);
    }
}

/// Consecutive failed fetches of one offset, all failing the CRC check,
/// after which the final read calls that offset's corruption persistent...
pub const PERSISTENT_CORRUPT_ATTEMPTS: u32 = 20;
/// ...provided they also span at least this much simulated time, so that a
/// burst of transient faults is never mistaken for stored corruption.
pub const PERSISTENT_CORRUPT_SPAN: Duration = Duration::from_secs(2);
/// Pause after a failed final-read poll.
const FINAL_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Corrupt fetches of one partition at one offset, back to back.
struct Streak {
    offset: i64,
    attempts: u32,
    first: Duration,
    last: Duration,
    error: String,
}

/// The final read. Its `Assign` of every partition is recorded when the
/// read ends, spanning it: `ok` only if every partition was read from its
/// beginning up to the log end offset the healed broker reported, `info`
/// otherwise — the promise the checkers rely on.
async fn final_read(ctx: &ClientCtx, env: &Env) -> FinalRead {
    let process = ctx.recorder.new_session(ctx.name());
    let start = sim_now();
    let tps = ctx.partitions();
    let (outcome, why_not) = match read_to_end(ctx, env, process, &tps).await {
        Ok(unreadable) if unreadable.is_empty() => (FinalRead { complete: true, unreadable }, None),
        Ok(unreadable) => {
            let why = unreadable
                .iter()
                .map(|u| format!("{}@{} never passed its CRC check", partition_name(&u.partition), u.offset))
                .collect::<Vec<_>>()
                .join("; ");
            (FinalRead { complete: false, unreadable }, Some(why))
        }
        Err(why) => (FinalRead::default(), Some(why)),
    };
    let result = match why_not {
        None => Outcome::Ok,
        Some(error) => Outcome::Info { error },
    };
    let assigned = tps.iter().map(history_tp).collect();
    ctx.recorder.span(ctx.name(), process, start, sim_now(), OpKind::Assign { partitions: assigned }, result, true);
    outcome
}

fn partition_name(tp: &TopicPartition) -> String {
    format!("{}-{}", tp.topic, tp.partition)
}

/// Ask the healed broker for each partition's log end offset, seek every
/// partition to its beginning and poll until each position reaches its end.
/// Returns the offsets given up on as persistently corrupt (the other
/// partitions were read to their ends), or why the read did not finish.
async fn read_to_end(ctx: &ClientCtx, env: &Env, process: u64, tps: &[ClientTp]) -> Result<Vec<Unreadable>, String> {
    let config = consumer_config(ctx, ctx.workload.final_fetch_max_bytes);
    let mut consumer = Consumer::new(env.clone(), config).map_err(|e| format!("no consumer: {e}"))?;
    consumer.assign(tps.to_vec());
    // Asked only now, after the heal and the settle period, so that the
    // ends cover what the producers' last sends (stopped at the end of the
    // window, bounded by their delivery timeout) got acknowledged.
    let ends = loop {
        if sim_now() >= ctx.final_deadline {
            return Err("the broker never answered ListOffsets (latest)".into());
        }
        match consumer.end_offsets(tps).await {
            Ok(ends) => break ends,
            Err(e) => {
                tracing::debug!(error = %e, "final read: end offsets failed; retrying");
                env.sleep(FINAL_RETRY_BACKOFF).await;
            }
        }
    };
    tracing::debug!(?ends, "final read: log end offsets");
    loop {
        if sim_now() >= ctx.final_deadline {
            return Err("the broker never answered ListOffsets (earliest)".into());
        }
        match consumer.seek_to_beginning(&[]).await {
            Ok(()) => break,
            Err(e) => {
                tracing::debug!(error = %e, "final read: seek to beginning failed; retrying");
                env.sleep(FINAL_RETRY_BACKOFF).await;
            }
        }
    }
    // Partitions still short of their end. Only these stay assigned, so a
    // partition read to its end is never fetched (or reset) again.
    let mut todo: BTreeMap<ClientTp, i64> =
        tps.iter().map(|tp| (tp.clone(), ends.get(tp).copied().unwrap_or(0))).collect();
    let mut streaks: BTreeMap<ClientTp, Streak> = BTreeMap::new();
    let mut unreadable = Vec::new();
    loop {
        let mut short = BTreeMap::new();
        for (tp, end) in &todo {
            match consumer.position(tp).await {
                Ok(p) if p >= *end => {}
                Ok(p) => {
                    short.insert(tp.clone(), p);
                }
                // Unknown and not yet re-resolved: still to read.
                Err(_) => {
                    short.insert(tp.clone(), -1);
                }
            }
        }
        todo.retain(|tp, _| short.contains_key(tp));
        // A streak is consecutive failures at one offset: moving on ends it.
        streaks.retain(|tp, s| short.get(tp) == Some(&s.offset));
        if todo.is_empty() {
            return Ok(unreadable);
        }
        if sim_now() >= ctx.final_deadline {
            let left: Vec<String> = todo
                .iter()
                .map(|(tp, end)| format!("{tp} at {} of {end}", short.get(tp).copied().unwrap_or(-1)))
                .collect();
            return Err(format!("read budget spent with partitions short of their end: {}", left.join(", ")));
        }
        let assignment: Vec<ClientTp> = todo.keys().cloned().collect();
        if consumer.assignment() != assignment {
            consumer.assign(assignment);
        }
        match recorded_poll(ctx, env, &mut consumer, process, true).await {
            PollResult::Read => {}
            PollResult::Failed => env.sleep(FINAL_RETRY_BACKOFF).await,
            PollResult::Corrupt { partition, offset, error } => {
                let now = sim_now();
                let s = streaks.entry(partition.clone()).or_insert_with(|| Streak {
                    offset,
                    attempts: 0,
                    first: now,
                    last: now,
                    error: String::new(),
                });
                if s.offset != offset {
                    *s = Streak { offset, attempts: 0, first: now, last: now, error: String::new() };
                }
                s.attempts += 1;
                s.last = now;
                s.error = error;
                if s.attempts >= PERSISTENT_CORRUPT_ATTEMPTS && s.last - s.first >= PERSISTENT_CORRUPT_SPAN {
                    let tp = history_tp(&partition);
                    let first_seen = ctx.recorder.first_corrupt(&tp, offset).unwrap_or(s.first);
                    tracing::warn!(partition = %partition, offset, attempts = s.attempts, "final read: data stays corrupt; giving up on the partition");
                    unreadable.push(Unreadable {
                        partition: tp,
                        offset,
                        attempts: s.attempts,
                        first_attempt: s.first,
                        last_attempt: s.last,
                        first_seen,
                        error: s.error.clone(),
                    });
                    // The rest of this partition cannot be reached past the
                    // corrupt batch; the others are still read to their end.
                    todo.remove(&partition);
                    streaks.remove(&partition);
                } else {
                    env.sleep(FINAL_RETRY_BACKOFF).await;
                }
            }
        }
    }
}
