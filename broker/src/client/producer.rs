//! The producer: `send` queues a record and returns a future for its fate; a
//! background sender task partitions records, batches them per partition,
//! sends Produce requests to partition leaders and completes the futures.
//!
//! Every failure says whether the record is DEFINITELY not in the log (the
//! broker refused it, or it was never sent) or INDETERMINATE (it was sent and
//! the answer was lost: it may be there). Histories depend on the difference.
//!
//! Up to `max.in.flight.requests.per.connection` Produce requests may be out
//! to one broker, and as many batches of one partition. Without idempotence
//! a retry may then land behind a later batch, or twice, as in Kafka. With
//! `enable.idempotence` the producer takes an id from InitProducerId and
//! numbers each partition's records; the broker appends a batch only if it
//! is the next in sequence and answers a retry of a stored batch with its
//! original offsets, so retries neither duplicate nor reorder. A batch
//! refused as out of order while an earlier batch of its partition is still
//! unresolved is retried behind it. A partition's first batch under a
//! producer id goes alone: the broker accepts an unknown producer's batch at
//! any sequence (as Kafka does, since the producer's state may have left the
//! log), so a second batch that overtook the first on the way (a request
//! that left late, or went on another connection) would be stored as the
//! producer's first and the true first refused. A batch that finally fails leaves a gap
//! in its partition's sequence; the producer then waits for every request
//! to return, fails the queued batches that may already be in the log, and
//! starts over with a new producer id (Kafka bumps the epoch; our broker
//! answers a non-transactional producer with a new id either way).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{mpsc, oneshot};

use super::accumulator::{Accumulator, ProducerBatch};
pub use super::batch::Compression;
use super::batch::{self, OutRecord, ProducerFields};
use super::cluster::{Cluster, ClusterConfig};
use super::partitioner::{partition_for_key, StickyPartitioner};
use super::{ClientError, Header, TopicPartition};
use crate::io::{self, Env};

/// The broker remembers this many batches per producer and partition, so a
/// retry is recognised only if no more than this many were in flight.
pub const MAX_IDEMPOTENT_IN_FLIGHT: usize = 5;

/// Producer settings, with Kafka's names and defaults.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub bootstrap_servers: Vec<String>,
    pub client_id: String,
    /// `acks`: 0 (no response), 1 (leader), -1 (all in-sync replicas).
    pub acks: i16,
    pub linger_ms: u64,
    pub batch_size: usize,
    /// `retries`: how many times a failed batch is resent (0: never).
    pub retries: i32,
    pub retry_backoff_ms: u64,
    pub request_timeout_ms: u64,
    /// `delivery.timeout.ms`: upper bound on the time from `send` to success
    /// or failure, retries included.
    pub delivery_timeout_ms: u64,
    pub compression_type: Compression,
    /// `max.request.size`: largest record, and largest Produce request.
    pub max_request_size: usize,
    /// `max.in.flight.requests.per.connection`: Produce requests out to one
    /// broker at once, and batches of one partition in flight at once.
    pub max_in_flight_requests_per_connection: usize,
    /// `enable.idempotence`: producer id and sequence numbers, so retries
    /// neither duplicate nor reorder. Needs acks=-1 and at most 5 in flight.
    /// Kafka's default is true; here it is off unless asked for.
    pub enable_idempotence: bool,
    /// A planted bug for the simulator (see `PlantedBugs::renumber_retries`);
    /// always off outside it.
    #[doc(hidden)]
    pub planted_bug_renumber_retries: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            bootstrap_servers: vec!["127.0.0.1:9092".into()],
            client_id: "faultline-producer".into(),
            acks: -1,
            linger_ms: 5,
            batch_size: 16384,
            retries: i32::MAX,
            retry_backoff_ms: 100,
            request_timeout_ms: 30_000,
            delivery_timeout_ms: 120_000,
            compression_type: Compression::None,
            max_request_size: 1_048_576,
            max_in_flight_requests_per_connection: 5,
            enable_idempotence: false,
            planted_bug_renumber_retries: false,
        }
    }
}

impl ProducerConfig {
    /// Defaults with the given bootstrap servers.
    pub fn new(bootstrap_servers: Vec<String>) -> Self {
        ProducerConfig { bootstrap_servers, ..ProducerConfig::default() }
    }

    fn validate(&self) -> Result<(), ClientError> {
        let bad = |m: &str| Err(ClientError::InvalidArgument(m.into()));
        if ![0, 1, -1].contains(&self.acks) {
            return bad("acks must be 0, 1 or -1");
        }
        if self.retries < 0 {
            return bad("retries must not be negative");
        }
        if self.request_timeout_ms == 0 || self.delivery_timeout_ms == 0 {
            return bad("request.timeout.ms and delivery.timeout.ms must be positive");
        }
        if self.max_request_size == 0 || self.batch_size == 0 {
            return bad("batch.size and max.request.size must be positive");
        }
        if self.max_in_flight_requests_per_connection == 0 {
            return bad("max.in.flight.requests.per.connection must be positive");
        }
        if self.enable_idempotence && self.acks != -1 {
            return bad("enable.idempotence needs acks=-1 (all)");
        }
        if self.enable_idempotence && self.max_in_flight_requests_per_connection > MAX_IDEMPOTENT_IN_FLIGHT {
            return bad("enable.idempotence allows at most 5 in-flight requests per connection");
        }
        Ok(())
    }
}

/// A record to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: String,
    /// Explicit partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// CreateTime in ms; `None` stamps it with the producer's clock at `send`.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: vec![],
            timestamp: None,
        }
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: Option<Bytes>) -> Self {
        self.headers.push((name.into(), value));
        self
    }

    pub fn with_timestamp(mut self, ts: i64) -> Self {
        self.timestamp = Some(ts);
        self
    }
}

/// Where a record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: i32,
    /// The record's offset; `None` with acks=0, where the broker says nothing.
    pub offset: Option<i64>,
    /// CreateTime, or the broker's LogAppendTime if the topic uses it.
    pub timestamp: i64,
}

/// Why a record was not (known to be) written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    /// The record is not in the log: it was refused or never sent.
    #[error("record not written: {0}")]
    Definite(ClientError),
    /// The record may or may not be in the log.
    #[error("record may or may not have been written: {0}")]
    Indeterminate(ClientError),
}

impl ProduceError {
    pub fn is_definite(&self) -> bool {
        matches!(self, ProduceError::Definite(_))
    }

    pub fn error(&self) -> &ClientError {
        match self {
            ProduceError::Definite(e) | ProduceError::Indeterminate(e) => e,
        }
    }
}

type Delivery = Result<RecordMetadata, ProduceError>;

/// The eventual outcome of one `send`.
pub struct DeliveryFuture(DeliveryState);

enum DeliveryState {
    Ready(Option<Delivery>),
    Waiting(oneshot::Receiver<Delivery>),
}

impl Future for DeliveryFuture {
    type Output = Delivery;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Delivery> {
        match &mut self.0 {
            DeliveryState::Ready(r) => Poll::Ready(r.take().expect("DeliveryFuture polled after completion")),
            // The sender task vanished with the record (its host died): the
            // record may have been sent.
            DeliveryState::Waiting(rx) => {
                Pin::new(rx).poll(cx).map(|r| r.unwrap_or(Err(ProduceError::Indeterminate(ClientError::Closed))))
            }
        }
    }
}

enum Command {
    /// A record, its completion, and when `send` was called: the delivery
    /// timeout runs from then, not from when the sender task got to it.
    Send(ProducerRecord, oneshot::Sender<Delivery>, Duration),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// A Kafka producer.
pub struct Producer {
    inbox: mpsc::UnboundedSender<Command>,
    env: Env,
    max_request_size: usize,
    sequence_refusals: Arc<AtomicU64>,
}

impl Producer {
    /// Start a producer: its sender task runs until [`Producer::close`] or
    /// until the producer is dropped and everything queued is delivered.
    pub fn new(env: Env, config: ProducerConfig) -> Result<Producer, ClientError> {
        config.validate()?;
        let cluster = Cluster::new(
            env.clone(),
            ClusterConfig {
                bootstrap_servers: config.bootstrap_servers.clone(),
                client_id: config.client_id.clone(),
                request_timeout: Duration::from_millis(config.request_timeout_ms),
            },
        )?;
        let (tx, rx) = mpsc::unbounded_channel();
        let max_request_size = config.max_request_size;
        let (sender, outcomes) = Sender::new(env.clone(), cluster, config);
        let sequence_refusals = sender.sequence_refusals.clone();
        io::spawn(&env, "producer-sender", sender.run_loop(rx, outcomes));
        Ok(Producer { inbox: tx, env, max_request_size, sequence_refusals })
    }

    /// How many times the broker refused the oldest unfinished batch of a
    /// partition as out of sequence (OUT_OF_ORDER_SEQUENCE_NUMBER or
    /// UNKNOWN_PRODUCER_ID), which makes an idempotent producer give up
    /// its id. A refusal of a batch queued behind an earlier unfinished one
    /// is not counted: that is pipelining, and the batch simply goes again.
    /// A broker that kept its log and its producer state never refuses the
    /// oldest batch, so the simulator holds this to zero where the medium
    /// cannot lose fsynced data.
    pub fn sequence_refusals(&self) -> u64 {
        self.sequence_refusals.load(Ordering::Relaxed)
    }

    /// Queue `record`; the future resolves when the broker answers (or the
    /// record fails). Records of one partition are written in `send` order.
    pub fn send(&self, mut record: ProducerRecord) -> DeliveryFuture {
        let ready = |e: ClientError| DeliveryFuture(DeliveryState::Ready(Some(Err(ProduceError::Definite(e)))));
        let out = OutRecord {
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record.headers.clone(),
            timestamp: 0,
        };
        let size = out.size_estimate() + batch::BATCH_HEADER_BYTES;
        if size > self.max_request_size {
            return ready(ClientError::InvalidArgument(format!(
                "record of about {size} bytes is larger than max.request.size {}",
                self.max_request_size
            )));
        }
        if record.topic.is_empty() {
            return ready(ClientError::InvalidArgument("topic name is empty".into()));
        }
        if record.partition.is_some_and(|p| p < 0) {
            return ready(ClientError::InvalidArgument("partition must not be negative".into()));
        }
        record.timestamp.get_or_insert_with(|| self.env.now_ms());
        let (tx, rx) = oneshot::channel();
        if self.inbox.send(Command::Send(record, tx, self.env.elapsed())).is_err() {
            return ready(ClientError::Closed);
        }
        DeliveryFuture(DeliveryState::Waiting(rx))
    }

    /// Wait until every record sent before this call has completed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inbox.send(Command::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Deliver everything queued, then stop the sender. Later sends fail.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inbox.send(Command::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// What completes a record: its sequence number (for flush) and its waiter.
type Completion = (u64, oneshot::Sender<Delivery>);
type Batch = ProducerBatch<Completion>;

/// A record waiting for its topic's metadata before it can be partitioned.
struct Unpartitioned {
    record: ProducerRecord,
    completion: Completion,
    enqueued: Duration,
}

/// The outcome of one Produce request, reported back to the sender loop.
struct RequestOutcome {
    leader: i32,
    batches: Vec<Batch>,
    result: Result<BTreeMap<TopicPartition, PartitionAnswer>, ClientError>,
}

struct PartitionAnswer {
    error_code: i16,
    error_message: Option<String>,
    base_offset: i64,
    log_append_time: i64,
}

/// The sender task's state.
struct Sender {
    env: Env,
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    acc: Accumulator<Completion>,
    sticky: StickyPartitioner,
    unpartitioned: VecDeque<Unpartitioned>,
    /// Topics whose metadata must be fetched before their next send.
    stale: BTreeSet<String>,
    /// When each topic's metadata was last fetched (for backoff).
    last_refresh: BTreeMap<String, Duration>,
    /// Sequence numbers of records not yet completed.
    incomplete: BTreeSet<u64>,
    next_seq: u64,
    /// Flush waiters: done when no record below their sequence is incomplete.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    closing: Option<oneshot::Sender<()>>,
    outcomes_tx: mpsc::UnboundedSender<RequestOutcome>,
    requests_in_flight: usize,
    /// Produce requests out to each broker.
    leader_in_flight: BTreeMap<i32, usize>,
    /// Per leader, resolved once the last Produce request spawned to it is
    /// written or has failed: the next waits for it, so a broker receives
    /// requests in the order the sender made them, as Kafka's one sender
    /// thread writes them. Without this, two request tasks could race to
    /// the socket and reorder batches with no retry involved.
    leader_written: BTreeMap<i32, oneshot::Receiver<()>>,
    /// Idempotence: the producer id and epoch, once InitProducerId gave them.
    producer: Option<(i64, i16)>,
    /// When InitProducerId was last tried (for backoff).
    last_init: Option<Duration>,
    /// Idempotence: each partition's next sequence number.
    next_sequence: BTreeMap<TopicPartition, i32>,
    /// Idempotence: ids of the batches of each partition that were numbered
    /// and are not finished (in flight or waiting to be retried).
    unresolved: BTreeMap<TopicPartition, BTreeSet<u64>>,
    /// Idempotence: partitions where the broker acknowledged a batch under
    /// the current producer id, so it knows the producer and checks its
    /// sequence. Until then a partition has one batch in flight at most.
    acknowledged: BTreeSet<TopicPartition>,
    /// Idempotence: a numbered batch finally failed, leaving a gap; the
    /// producer id must be replaced once no request is in flight.
    reset_pending: bool,
    /// Shared with [`Producer::sequence_refusals`].
    sequence_refusals: Arc<AtomicU64>,
}

impl Sender {
    fn new(
        env: Env,
        cluster: Arc<Cluster>,
        config: ProducerConfig,
    ) -> (Sender, mpsc::UnboundedReceiver<RequestOutcome>) {
        let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
        let acc = Accumulator::with_max_in_flight(
            config.batch_size,
            Duration::from_millis(config.linger_ms),
            config.max_in_flight_requests_per_connection,
        );
        let s = Sender {
            env,
            cluster,
            config,
            acc,
            sticky: StickyPartitioner::default(),
            unpartitioned: VecDeque::new(),
            stale: BTreeSet::new(),
            last_refresh: BTreeMap::new(),
            incomplete: BTreeSet::new(),
            next_seq: 0,
            flushes: Vec::new(),
            closing: None,
            outcomes_tx,
            requests_in_flight: 0,
            leader_in_flight: BTreeMap::new(),
            leader_written: BTreeMap::new(),
            producer: None,
            last_init: None,
            next_sequence: BTreeMap::new(),
            unresolved: BTreeMap::new(),
            acknowledged: BTreeSet::new(),
            reset_pending: false,
            sequence_refusals: Arc::new(AtomicU64::new(0)),
        };
        (s, outcomes_rx)
    }

    fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.config.delivery_timeout_ms)
    }

    fn backoff(&self) -> Duration {
        Duration::from_millis(self.config.retry_backoff_ms)
    }
}

impl Sender {
    async fn run_loop(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Command>,
        mut outcomes: mpsc::UnboundedReceiver<RequestOutcome>,
    ) {
        let mut inbox_open = true;
        loop {
            self.partition_waiting().await;
            if self.config.enable_idempotence {
                self.ensure_producer_id().await;
            }
            let now = self.env.elapsed();
            self.expire(now);
            self.send_ready(now);
            self.finish_flushes();
            let idle = self.acc.is_empty() && self.unpartitioned.is_empty() && self.requests_in_flight == 0;
            if idle && (self.closing.is_some() || !inbox_open) {
                // Whatever arrived after close was never sent.
                inbox.close();
                while let Ok(cmd) = inbox.try_recv() {
                    match cmd {
                        Command::Send(_, tx, _) => {
                            let _ = tx.send(Err(ProduceError::Definite(ClientError::Closed)));
                        }
                        Command::Flush(tx) | Command::Close(tx) => {
                            let _ = tx.send(());
                        }
                    }
                }
                if let Some(done) = self.closing.take() {
                    let _ = done.send(());
                }
                return;
            }
            let wake = self.next_wakeup(now);
            tokio::select! {
                biased;
                Some(outcome) = outcomes.recv() => {
                    self.requests_in_flight -= 1;
                    self.handle_outcome(outcome);
                }
                cmd = inbox.recv(), if inbox_open && self.closing.is_none() => match cmd {
                    Some(cmd) => self.handle_command(cmd),
                    None => inbox_open = false,
                },
                _ = self.env.sleep(wake.saturating_sub(now)) => {}
            }
        }
    }

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Send(record, tx, enqueued) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.incomplete.insert(seq);
                self.unpartitioned.push_back(Unpartitioned { record, completion: (seq, tx), enqueued });
            }
            Command::Flush(tx) => self.flushes.push((self.next_seq, tx)),
            Command::Close(tx) => {
                self.flushes.push((self.next_seq, oneshot::channel().0));
                self.closing = Some(tx);
            }
        }
    }

    fn flushing(&self) -> bool {
        !self.flushes.is_empty() || self.closing.is_some()
    }

    fn next_wakeup(&self, now: Duration) -> Duration {
        // Records waiting for metadata poll at the retry backoff.
        let mut wake = now + Duration::from_secs(3600);
        let no_id = self.config.enable_idempotence && self.producer.is_none() && !self.acc.is_empty();
        if !self.unpartitioned.is_empty() || !self.stale.is_empty() || no_id {
            wake = wake.min(now + self.backoff().max(Duration::from_millis(1)));
        }
        if let Some(t) = self.acc.next_ready_time(now) {
            wake = wake.min(t);
        }
        // A batch that cannot go (no leader known, its partition muted)
        // still fails at its delivery timeout, even if nothing else happens.
        if let Some(oldest) = self.acc.oldest_created() {
            wake = wake.min((oldest + self.delivery_timeout()).max(now + Duration::from_millis(1)));
        }
        wake
    }

    fn complete(&mut self, (seq, tx): Completion, result: Delivery) {
        self.incomplete.remove(&seq);
        let _ = tx.send(result);
    }

    fn finish_flushes(&mut self) {
        let lowest = self.incomplete.first().copied().unwrap_or(u64::MAX);
        let (done, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.flushes).into_iter().partition(|(upto, _)| lowest >= *upto);
        self.flushes = waiting;
        for (_, tx) in done {
            let _ = tx.send(());
        }
    }

    /// Move records whose topic metadata is known into the accumulator, in
    /// send order; fetch metadata for the topics that need it.
    async fn partition_waiting(&mut self) {
        let now = self.env.elapsed();
        let mut wanted: BTreeSet<String> = self.stale.clone();
        wanted.extend(
            self.unpartitioned
                .iter()
                .filter(|u| self.cluster.cached_topic(&u.record.topic).is_none())
                .map(|u| u.record.topic.clone()),
        );
        let due: Vec<String> = wanted
            .into_iter()
            .filter(|t| self.last_refresh.get(t).is_none_or(|at| now >= *at + self.backoff()))
            .collect();
        if !due.is_empty() {
            for t in &due {
                self.last_refresh.insert(t.clone(), now);
            }
            // Errors leave the topics unknown; records wait and may expire.
            // The refresh may try broker after broker; it must not hold the
            // loop past the oldest record's delivery deadline.
            let oldest =
                self.unpartitioned.front().map(|u| u.enqueued).into_iter().chain(self.acc.oldest_created()).min();
            let limit = oldest.map_or(self.cluster.config().request_timeout, |o| {
                (o + self.delivery_timeout()).saturating_sub(now).max(Duration::from_millis(1))
            });
            let refreshed = crate::io::timeout(&self.env, limit, self.cluster.refresh(Some(&due), true)).await;
            if let Some(Ok(got)) = refreshed {
                for (t, meta) in got {
                    if meta.error_code == 0 && !meta.partitions.is_empty() {
                        self.stale.remove(&t);
                    }
                }
            }
        }
        let mut keep = VecDeque::new();
        while let Some(u) = self.unpartitioned.pop_front() {
            let Some(meta) = self.cluster.cached_topic(&u.record.topic) else {
                keep.push_back(u);
                continue;
            };
            let n = meta.num_partitions();
            let partition = match (u.record.partition, &u.record.key) {
                (Some(p), _) if p >= n => {
                    let err = ClientError::InvalidArgument(format!(
                        "topic {} has {n} partitions, not {}",
                        u.record.topic,
                        p + 1
                    ));
                    self.complete(u.completion, Err(ProduceError::Definite(err)));
                    continue;
                }
                (Some(p), _) => p,
                (None, Some(key)) => partition_for_key(key, n),
                (None, None) => {
                    self.sticky.partition(&u.record.topic, n, &meta.available_partitions(), self.env.random_u64())
                }
            };
            let tp = TopicPartition::new(u.record.topic.clone(), partition);
            let r = u.record;
            let out = OutRecord {
                key: r.key,
                value: r.value,
                headers: r.headers,
                timestamp: r.timestamp.expect("stamped at send"),
            };
            self.acc.append(&tp, out, u.completion, u.enqueued);
        }
        self.unpartitioned = keep;
    }

    /// Fail what has waited longer than `delivery.timeout.ms`.
    fn expire(&mut self, now: Duration) {
        let Some(deadline) = now.checked_sub(self.delivery_timeout()) else { return };
        for batch in self.acc.expire(deadline) {
            self.fail_batch(batch, ClientError::DeliveryTimeout(self.config.delivery_timeout_ms));
        }
        while self.unpartitioned.front().is_some_and(|u| u.enqueued <= deadline) {
            let u = self.unpartitioned.pop_front().expect("checked non-empty");
            let err =
                ClientError::NoBroker(format!("no metadata for topic {} within delivery.timeout.ms", u.record.topic));
            self.complete(u.completion, Err(ProduceError::Definite(err)));
        }
    }

    fn fail_batch(&mut self, batch: Batch, error: ClientError) {
        if self.config.enable_idempotence && self.resolve(&batch) {
            self.reset_pending = true;
        }
        let err = if batch.maybe_written { ProduceError::Indeterminate(error) } else { ProduceError::Definite(error) };
        for r in batch.records {
            self.complete(r.completion, Err(err.clone()));
        }
    }

    /// Forget a numbered batch that is finished; true if it was numbered.
    fn resolve(&mut self, batch: &Batch) -> bool {
        let Some(ids) = self.unresolved.get_mut(&batch.tp) else { return false };
        let was = ids.remove(&batch.id);
        if ids.is_empty() {
            self.unresolved.remove(&batch.tp);
        }
        was
    }

    /// Get a producer id from any broker, unless one is held or the last
    /// try was within the retry backoff. Without one nothing is sent.
    async fn ensure_producer_id(&mut self) {
        if self.reset_pending && self.requests_in_flight == 0 {
            self.reset_producer();
        }
        if self.producer.is_some() || self.acc.is_empty() {
            return;
        }
        let now = self.env.elapsed();
        if self.last_init.is_some_and(|at| now < at + self.backoff()) {
            return;
        }
        self.last_init = Some(now);
        let resp = self
            .cluster
            .send_any(|_| {
                InitProducerIdRequest::default()
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id((-1).into())
                    .with_producer_epoch(-1)
            })
            .await;
        match resp {
            Ok(r) if r.error_code == 0 && r.producer_id.0 >= 0 => {
                self.producer = Some((r.producer_id.0, r.producer_epoch));
            }
            Ok(r) => tracing::debug!(error_code = r.error_code, "InitProducerId refused; retrying"),
            Err(e) => tracing::debug!(error = %e, "InitProducerId failed; retrying"),
        }
    }

    /// Start over after a gap in a partition's sequence: every request has
    /// returned, so fail the queued batches that may already be in the log
    /// (resending them under a new id could store them twice) and renumber
    /// the rest under the new id.
    fn reset_producer(&mut self) {
        assert_eq!(self.requests_in_flight, 0);
        let doubtful = self.acc.take_queued(|b| b.encoded.is_some() && b.maybe_written);
        for batch in doubtful {
            let err = ClientError::Protocol("producer id replaced while the batch was unresolved".into());
            self.fail_batch(batch, err);
        }
        for batch in self.acc.queued_mut() {
            batch.encoded = None;
        }
        self.producer = None;
        self.next_sequence.clear();
        self.unresolved.clear();
        self.acknowledged.clear();
        self.reset_pending = false;
    }

    /// Drain ready batches, group them by leader and send one request per
    /// leader (split at `max.request.size`), keeping within the in-flight
    /// limit of each broker connection.
    fn send_ready(&mut self, now: Duration) {
        let idempotent = self.config.enable_idempotence;
        if idempotent && (self.producer.is_none() || self.reset_pending) {
            return;
        }
        let flushing = self.flushing();
        let limit = self.config.max_in_flight_requests_per_connection;
        let mut by_leader: BTreeMap<i32, Vec<Batch>> = BTreeMap::new();
        for tp in self.acc.ready(now, flushing) {
            if self.stale.contains(&tp.topic) {
                continue;
            }
            let Some(leader) = self.cluster.cached_leader(&tp) else {
                self.stale.insert(tp.topic.clone());
                continue;
            };
            if self.leader_in_flight.get(&leader).copied().unwrap_or(0) >= limit {
                continue;
            }
            if idempotent && !self.acknowledged.contains(&tp) && self.acc.in_flight(&tp) > 0 {
                continue;
            }
            let Some(mut batch) = self.acc.drain(&tp) else { continue };
            if self.config.planted_bug_renumber_retries && idempotent && batch.attempts > 1 {
                batch.encoded = None;
            }
            if batch.encoded.is_none() {
                let records: Vec<OutRecord> = batch.records.iter().map(|r| r.record.clone()).collect();
                let fields = match self.producer.filter(|_| idempotent) {
                    Some((id, epoch)) => {
                        let seq = self.next_sequence.entry(tp.clone()).or_insert(0);
                        let f = ProducerFields { id, epoch, base_sequence: *seq };
                        *seq = seq.wrapping_add(records.len() as i32) & i32::MAX;
                        let ids = self.unresolved.entry(tp.clone()).or_default();
                        // (Only the planted bug numbers a batch twice.)
                        ids.insert(batch.id);
                        f
                    }
                    None => ProducerFields::NONE,
                };
                let codec = self.config.compression_type;
                match batch::encode_v2(&records, fields, codec.codec()) {
                    Ok(b) => batch.encoded = Some(b),
                    Err(e) => {
                        self.acc.done(&tp);
                        self.fail_batch(batch, e);
                        continue;
                    }
                }
            }
            if let Some(meta) = self.cluster.cached_topic(&tp.topic) {
                let r = self.env.random_u64();
                self.sticky.on_batch_sent(
                    &tp.topic,
                    tp.partition,
                    meta.num_partitions(),
                    &meta.available_partitions(),
                    r,
                );
            }
            by_leader.entry(leader).or_default().push(batch);
        }
        for (leader, batches) in by_leader {
            let mut request: Vec<Batch> = Vec::new();
            let mut size = 0;
            for b in batches {
                let len = b.encoded.as_ref().map_or(0, |e| e.len());
                if !request.is_empty() && size + len > self.config.max_request_size {
                    self.spawn_request(leader, std::mem::take(&mut request));
                    size = 0;
                }
                size += len;
                request.push(b);
            }
            if !request.is_empty() {
                self.spawn_request(leader, request);
            }
        }
    }

    fn spawn_request(&mut self, leader: i32, batches: Vec<Batch>) {
        self.requests_in_flight += 1;
        *self.leader_in_flight.entry(leader).or_default() += 1;
        let cluster = self.cluster.clone();
        let acks = self.config.acks;
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        let tx = self.outcomes_tx.clone();
        let (written, next_may_write) = oneshot::channel();
        let before = self.leader_written.insert(leader, next_may_write);
        io::spawn(&self.env, "producer-request", async move {
            if let Some(before) = before {
                // Resolves when the earlier request is written or dropped.
                let _ = before.await;
            }
            let result = produce(&cluster, leader, acks, timeout, &batches, written).await;
            let _ = tx.send(RequestOutcome { leader, batches, result });
        });
    }

    fn handle_outcome(&mut self, outcome: RequestOutcome) {
        let now = self.env.elapsed();
        if let Some(n) = self.leader_in_flight.get_mut(&outcome.leader) {
            *n -= 1;
            if *n == 0 {
                self.leader_in_flight.remove(&outcome.leader);
            }
        }
        for mut batch in outcome.batches {
            let tp = batch.tp.clone();
            // Ok((base offset, log append time)) or the error.
            let answer = match &outcome.result {
                Err(e) => Err(e.clone()),
                Ok(answers) => match answers.get(&tp) {
                    Some(a) if a.error_code == 0 => Ok((a.base_offset, a.log_append_time)),
                    Some(a) => {
                        let e =
                            ClientError::broker(format!("produce to {tp}"), a.error_code, a.error_message.as_deref());
                        // These codes mean the leader appended the batch but
                        // could not confirm replication in time (or lost the
                        // lead meanwhile: the batch may survive or not).
                        let appended = matches!(
                            e.broker_error(),
                            Some(
                                ResponseError::RequestTimedOut
                                    | ResponseError::NotLeaderOrFollower
                                    | ResponseError::NotEnoughReplicasAfterAppend
                                    | ResponseError::UnknownServerError
                            )
                        );
                        batch.maybe_written |= appended;
                        Err(e)
                    }
                    None if self.config.acks == 0 => Ok((-1, -1)),
                    None => {
                        batch.maybe_written = true;
                        Err(ClientError::Protocol(format!("produce response has no answer for {tp}")))
                    }
                },
            };
            match answer {
                Ok((base, append_time)) => {
                    let acks0 = self.config.acks == 0;
                    self.acc.done(&tp);
                    if self.resolve(&batch) {
                        self.acknowledged.insert(tp.clone());
                    }
                    for (i, r) in batch.records.into_iter().enumerate() {
                        let meta = RecordMetadata {
                            topic: tp.topic.clone(),
                            partition: tp.partition,
                            offset: (!acks0).then_some(base + i as i64),
                            timestamp: if append_time >= 0 { append_time } else { r.record.timestamp },
                        };
                        self.complete(r.completion, Ok(meta));
                    }
                }
                Err(e) => {
                    batch.maybe_written |= e.maybe_applied();
                    if e.invalidates_metadata() {
                        self.cluster.invalidate(&tp.topic);
                        self.stale.insert(tp.topic.clone());
                    }
                    let within_retries = batch.attempts <= self.config.retries as u32;
                    let within_deadline = now < batch.created + self.delivery_timeout();
                    // Refused as out of order behind an earlier batch still
                    // unresolved: it goes again once that one is through.
                    let out_of_sequence = matches!(
                        e.broker_error(),
                        Some(ResponseError::OutOfOrderSequenceNumber | ResponseError::UnknownProducerId)
                    );
                    let behind = out_of_sequence
                        && self.unresolved.get(&tp).and_then(|ids| ids.first()).is_some_and(|first| *first < batch.id);
                    // With a batch already given up (`reset_pending`), the
                    // gap it left makes the refusal expected.
                    if out_of_sequence && !behind && !self.reset_pending {
                        self.sequence_refusals.fetch_add(1, Ordering::Relaxed);
                    }
                    if (e.is_retriable() || behind) && within_retries && within_deadline {
                        self.acc.requeue(batch, now + self.backoff());
                    } else {
                        self.acc.done(&tp);
                        self.fail_batch(batch, e);
                    }
                }
            }
        }
    }
}

/// Send one Produce request with `batches` to broker `leader`.
async fn produce(
    cluster: &Cluster,
    leader: i32,
    acks: i16,
    timeout: Duration,
    batches: &[Batch],
    written: oneshot::Sender<()>,
) -> Result<BTreeMap<TopicPartition, PartitionAnswer>, ClientError> {
    if cluster.env().buggify("producer.late-send") {
        // A request that leaves late, so later batches can overtake it in
        // the sender and retries meet answers out of order.
        cluster.env().sleep(Duration::from_millis(1 + cluster.env().random_u64() % 30)).await;
    }
    let conn = cluster.connection_to_node(leader).await?;
    let version = conn.version::<ProduceRequest>()?;
    let mut topics: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
    for b in batches {
        let data = PartitionProduceData::default().with_index(b.tp.partition).with_records(b.encoded.clone());
        topics.entry(&b.tp.topic).or_default().push(data);
    }
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
        .with_topic_data(
            topics
                .into_iter()
                .map(|(t, parts)| {
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partition_data(parts)
                })
                .collect(),
        );
    if acks == 0 {
        conn.send_oneway(&req, version, timeout).await?;
        return Ok(BTreeMap::new());
    }
    let resp = conn.request_then_release(&req, version, timeout, written).await?;
    let mut out = BTreeMap::new();
    for t in resp.responses {
        for p in t.partition_responses {
            out.insert(
                TopicPartition::new(t.name.0.to_string(), p.index),
                PartitionAnswer {
                    error_code: p.error_code,
                    error_message: p.error_message.map(|m| m.to_string()),
                    base_offset: p.base_offset,
                    log_append_time: p.log_append_time_ms,
                },
            );
        }
    }
    Ok(out)
}
