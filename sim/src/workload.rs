//! The workload: Faultline's own Rust clients, run on turmoil hosts,
//! recording every operation into the history.
//!
//! - producers send unique values (`p{process}-{n}`) with keys, one at a
//!   time, at the scenario's rate;
//! - consumers assign every partition and poll;
//! - the reader creates the topics before anything else, and after the
//!   faults are healed reads every partition from its log start to its end
//!   (the final read the checkers rely on).
//!
//! Each host's session is a fresh process id; a host that crashes comes back
//! as a new session, as a crashed client would.

use std::sync::Arc;
use std::time::Duration;

use faultline_broker::client::{
    Admin, AdminConfig, AutoOffsetReset, ClientError, Consumer, ConsumerConfig, ConsumerRecord, NewTopic, ProduceError,
    Producer, ProducerConfig, ProducerRecord, TopicPartition as ClientTp,
};
use faultline_broker::io::{self, Env};
use kafka_protocol::error::ResponseError;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::history::{OpKind, Outcome, Polled, TopicPartition};
use crate::recorder::Recorder;
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
}

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

    fn rng(&self, process: u64) -> ChaCha8Rng {
        seed::rng(self.seed, &format!("workload/{}/{process}", self.name()))
    }
}

fn outcome_of(e: &ClientError) -> Outcome {
    if e.maybe_applied() {
        Outcome::Info { error: e.to_string() }
    } else {
        Outcome::Fail { error: e.to_string() }
    }
}

/// A producer host: one session, sending until the workload window closes.
pub async fn producer(ctx: ClientCtx) {
    if sim_now() >= ctx.end {
        return;
    }
    let env = ctx.env();
    if !ctx.await_topics(&env).await {
        return;
    }
    let process = ctx.recorder.new_session(ctx.name());
    let mut rng = ctx.rng(process);
    let w = &ctx.workload;
    let mut config = ProducerConfig::new(ctx.bootstrap.clone());
    config.client_id = ctx.name().to_string();
    config.acks = w.acks;
    config.retries = w.retries as i32;
    config.linger_ms = 0;
    config.request_timeout_ms = w.request_timeout_ms;
    config.retry_backoff_ms = 50;
    config.delivery_timeout_ms = w.request_timeout_ms * (u64::from(w.retries) + 1) + 1000;
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
    let padding: String = "x".repeat(w.value_size);
    let mut n = 0u64;
    while sim_now() < ctx.end {
        let topic = &ctx.topics[rng.random_range(0..ctx.topics.len())].name;
        let key = format!("k{}", rng.random_range(0..w.keys));
        let value = format!("p{process}-{n}{padding}");
        n += 1;
        let kind = |partition, offset| OpKind::Send {
            topic: topic.clone(),
            key: Some(key.clone()),
            value: value.clone(),
            partition,
            offset,
        };
        ctx.recorder.invoke(ctx.name(), process, sim_now(), kind(None, None));
        let record = ProducerRecord::new(topic.clone(), value.clone().into_bytes()).with_key(key.clone().into_bytes());
        let result = io::timeout(&env, patience, producer.send(record)).await;
        let (done, outcome) = match result {
            Some(Ok(meta)) => (Some(kind(Some(meta.partition), meta.offset)), Outcome::Ok),
            Some(Err(ProduceError::Definite(e))) => (None, Outcome::Fail { error: e.to_string() }),
            Some(Err(ProduceError::Indeterminate(e))) => (None, Outcome::Info { error: e.to_string() }),
            None => (None, Outcome::Info { error: "no outcome before the delivery deadline".into() }),
        };
        ctx.recorder.complete(ctx.name(), sim_now(), done, outcome, false);
        let gap = rng.random_range(0.5..1.5) / w.rate;
        env.sleep(Duration::from_secs_f64(gap)).await;
    }
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

fn consumer_config(ctx: &ClientCtx) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(ctx.bootstrap.clone());
    c.client_id = ctx.name().to_string();
    c.auto_offset_reset = AutoOffsetReset::Earliest;
    c.fetch_max_wait_ms = 100;
    c.request_timeout_ms = ctx.workload.request_timeout_ms;
    c.retry_backoff_ms = 50;
    c
}

/// One recorded poll. Returns false if the poll failed.
async fn recorded_poll(ctx: &ClientCtx, env: &Env, consumer: &mut Consumer, process: u64, final_read: bool) -> bool {
    let wait = Duration::from_millis(200);
    ctx.recorder.invoke(ctx.name(), process, sim_now(), OpKind::Poll { records: Vec::new() });
    let res = io::timeout(env, wait + ctx.request_timeout() * 2, consumer.poll(wait)).await;
    let (ok, kind, outcome) = match res {
        Some(Ok(records)) => (true, Some(OpKind::Poll { records: polled(&records) }), Outcome::Ok),
        // The broker answered with bytes that do not decode: corrupt data
        // was served. Nothing was read, so the poll failed.
        Some(Err(e @ ClientError::Protocol(_))) => {
            ctx.recorder.note_corrupt_read();
            (false, None, Outcome::Fail { error: format!("corrupt data: {e}") })
        }
        Some(Err(e)) => (false, None, outcome_of(&e)),
        None => (false, None, Outcome::Info { error: "poll did not return".into() }),
    };
    ctx.recorder.complete(ctx.name(), sim_now(), kind, outcome, final_read);
    ok
}

/// A consumer host: assigns every partition and polls until the workload
/// window closes.
pub async fn consumer(ctx: ClientCtx) {
    if sim_now() >= ctx.end {
        return;
    }
    let env = ctx.env();
    if !ctx.await_topics(&env).await {
        return;
    }
    let process = ctx.recorder.new_session(ctx.name());
    let Ok(mut consumer) = Consumer::new(env.clone(), consumer_config(&ctx)) else {
        tracing::error!("cannot create consumer");
        return;
    };
    let tps = ctx.partitions();
    consumer.assign(tps.clone());
    let assigned = tps.iter().map(|tp| TopicPartition { topic: tp.topic.clone(), partition: tp.partition }).collect();
    ctx.recorder.instant(ctx.name(), process, sim_now(), OpKind::Assign { partitions: assigned }, Outcome::Ok, false);
    while sim_now() < ctx.end {
        if !recorded_poll(&ctx, &env, &mut consumer, process, false).await {
            env.sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The reader host: creates the topics, then waits for the final phase and
/// reads everything.
pub async fn reader(ctx: ClientCtx) {
    let env = ctx.env();
    create_topics(&ctx, &env).await;
    let now = sim_now();
    if now < ctx.final_start {
        env.sleep(ctx.final_start - now).await;
    }
    let complete = final_read(&ctx, &env).await;
    ctx.recorder.set_final_read_done(complete);
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
    let topics: Vec<NewTopic> =
        ctx.topics.iter().map(|t| NewTopic::new(t.name.clone(), t.partitions, t.replication_factor)).collect();
    for t in topics {
        while sim_now() < ctx.end {
            match admin.create_topics(std::slice::from_ref(&t)).await {
                Ok(()) => break,
                Err(e) if e.broker_error() == Some(ResponseError::TopicAlreadyExists) => break,
                Err(e) => {
                    tracing::debug!(topic = %t.name, error = %e, "create topic failed; retrying");
                    env.sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    ctx.recorder.set_topics_ready();
}

/// Read every partition from its log start to the end offset it has when
/// the read begins. True if every partition was read to its end.
async fn final_read(ctx: &ClientCtx, env: &Env) -> bool {
    let process = ctx.recorder.new_session(ctx.name());
    let Ok(mut consumer) = Consumer::new(env.clone(), consumer_config(ctx)) else {
        return false;
    };
    let tps = ctx.partitions();
    consumer.assign(tps.clone());
    let assigned = tps.iter().map(|tp| TopicPartition { topic: tp.topic.clone(), partition: tp.partition }).collect();
    ctx.recorder.instant(ctx.name(), process, sim_now(), OpKind::Assign { partitions: assigned }, Outcome::Ok, true);
    let ends = loop {
        if sim_now() >= ctx.final_deadline {
            return false;
        }
        match consumer.end_offsets(&tps).await {
            Ok(ends) => break ends,
            Err(e) => {
                tracing::debug!(error = %e, "final read: end offsets failed; retrying");
                env.sleep(Duration::from_millis(100)).await;
            }
        }
    };
    loop {
        let mut remaining = Vec::new();
        for tp in &tps {
            let end = ends.get(tp).copied().unwrap_or(0);
            match consumer.position(tp).await {
                Ok(p) if p >= end => {}
                _ => remaining.push(tp.clone()),
            }
        }
        if remaining.is_empty() {
            return true;
        }
        if sim_now() >= ctx.final_deadline {
            return false;
        }
        consumer.assign(remaining);
        if !recorded_poll(ctx, env, &mut consumer, process, true).await {
            env.sleep(Duration::from_millis(100)).await;
        }
    }
}
