//! The runner: builds one simulated world from a scenario and a seed, drives
//! it step by step through the fault window, the heal, the settle period and
//! the final read, then runs the checkers.
//!
//! A scenario with a `[swarm]` table is first resolved: the seed draws its
//! configuration, which the result carries for printing.
//!
//! A scenario with `cluster.controllers` builds a KRaft cluster: every
//! server host runs `faultline_broker::server::run` with its `node_id`,
//! `process_roles` and `controller_quorum_voters` (host names as turmoil
//! addresses, port 9092), clients bootstrap from every broker host, and
//! the servers' observations feed the quorum checkers and the election
//! bound ([`ELECTION_BOUND`]).
//!
//! Phases, in simulated time:
//! 1. `[0, duration)`: workload and faults (the nemesis plan).
//! 2. at `duration`: heal everything — repair and release links, restart
//!    crashed hosts, clear disk faults and clock skew — and the reader
//!    starts probing with sends until one is acknowledged.
//! 3. `[duration, duration + settle)`: quiet but for the probes.
//! 4. then the reader asks the healed broker for every partition's log end
//!    offset and reads each from its beginning to that end, bounded by
//!    [`FINAL_READ_BUDGET`].
//!
//! A run passes when the checkers find nothing invalid, the final read
//! completed, no acknowledged data stayed corrupt ([`CORRUPT_READ`]) where
//! the configuration promises it, and the cluster was live ([`Liveness`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use faultline_broker::config::BrokerConfig;
use serde::Serialize;

use crate::checker::{self, Report};
use crate::disk::DiskFaults;
use crate::history::{History, Op, OpKind, Outcome, TopicPartition};
use crate::nemesis::{self, Fault, HostChange, Injector, Roles, Strike};
use crate::recorder::{Recorder, Unreadable};
use crate::scenario::Scenario;
use crate::seam::{NodeState, SimIo};
use crate::seed;
use crate::trace::{EventKind, Trace};
use crate::workload::{self, ClientCtx};

/// The wall clock every simulated node starts from: 2024-01-01T00:00:00Z.
pub const EPOCH_MS: i64 = 1_704_067_200_000;
/// How long the final read may take before the run gives up on it.
pub const FINAL_READ_BUDGET: Duration = Duration::from_secs(20);
/// Simulated time per step.
pub const TICK: Duration = Duration::from_millis(1);
const BROKER_PORT: u16 = 9092;
/// `broker.heartbeat.interval.ms` and `broker.session.timeout.ms` in a
/// simulated cluster: a tenth of Kafka's defaults, so that fencing and
/// unfencing happen within a run of a few seconds.
const SIM_HEARTBEAT_MS: u64 = 200;
const SIM_SESSION_TIMEOUT_MS: u64 = 900;
/// Replication in a simulated cluster, scaled like the sessions: a follower
/// that has not caught up for `replica.lag.time.max.ms` leaves the ISR
/// (Kafka: 30 s), followers long-poll for `replica.fetch.wait.max.ms`
/// (Kafka: 500 ms) and pause `replica.fetch.backoff.ms` after a failure
/// (Kafka: 1 s).
const SIM_REPLICA_LAG_MS: u64 = 1_000;
const SIM_REPLICA_FETCH_WAIT_MS: u64 = 100;
const SIM_REPLICA_FETCH_BACKOFF_MS: u64 = 50;
/// A replica fetch lost on the simulated network (a message dropped on a
/// live connection, which real TCP would resend) is given up after this
/// long beyond its wait: well inside the replica lag bound.
const SIM_REPLICA_SOCKET_TIMEOUT_MS: u64 = 400;
/// Where each broker keeps its log on its simulated disk.
pub const DATA_DIR: &str = "/var/lib/faultline";

/// The run-level finding for persistent corruption: an offset the final
/// read, after the heal, failed to decode on every one of its attempts
/// ([`crate::workload::PERSISTENT_CORRUPT_ATTEMPTS`] fetches over at least
/// [`crate::workload::PERSISTENT_CORRUPT_SPAN`]). The log itself holds a
/// corrupt batch, so whatever was acknowledged there and after it can never
/// be read. The checkers never see corrupt data as values — the client's
/// CRC check refuses it — so the runner reports it beside them.
///
/// Corrupt fetches during the run are not this finding: the simulated
/// disk's read corruption flips bits in what one read returns, the client's
/// CRC check refuses it and the next fetch reads the data intact, which is
/// the system working (see [`RunResult::corrupt_polls`]).
pub const CORRUPT_READ: &str = "corrupt-read";

/// The run-level finding for idempotent producers: the broker refused a
/// partition's oldest unfinished batch as out of sequence
/// ([`faultline_broker::client::producer::Producer::sequence_refusals`]),
/// so the producer had to give up its id. A broker that keeps its log and
/// its producer state should never do that to a correct producer; such a
/// bug loses no record and duplicates none — every send still succeeds
/// after the reset — so no history checker can see it.
///
/// Fatal wherever idempotence is on and the medium cannot corrupt fsynced
/// data ([`Scenario::medium_may_corrupt`]): acknowledged batches are never
/// lost there (`lost-write` is fatal too), so the producer state the broker
/// derives from its log always holds the producer's last acknowledged
/// batch. Where the medium corrupts, a correct broker truncates at the
/// damage and may forget acknowledged batches; the finding is then only
/// reported.
pub const SEQUENCE_REFUSED: &str = "sequence-refused";

/// Liveness: after the heal, a write and a read must succeed within the
/// scenario's bound; while no fault is in force (nor was within
/// [`HEALTHY_GRACE`] of ending), the cluster must take at least
/// [`MIN_HEALTHY_ACK_RATIO`] of the sends (acknowledge them, or with acks=0
/// let the producer hand them over); and the producer must answer every send
/// by its `delivery.timeout.ms`, faults or not (no [`workload::OVERDUE_SEND`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Liveness {
    /// The bound, from the heal.
    #[serde(serialize_with = "ser_ms")]
    pub bound: Duration,
    /// From the heal to the first acknowledged send invoked after it.
    pub write_after: Option<Duration>,
    /// From the heal to the first successful poll invoked after it.
    pub read_after: Option<Duration>,
    /// Sends invoked while healthy, and how many of them were acknowledged
    /// (with acks=0: handed to the broker).
    pub healthy_sends: usize,
    pub healthy_acked: usize,
    /// Sends the producer left unanswered past their delivery timeout.
    pub overdue_sends: usize,
}

/// Below this many healthy sends the ratio says nothing.
pub const MIN_HEALTHY_SENDS: usize = 20;
/// The share of healthy sends a live cluster acknowledges.
pub const MIN_HEALTHY_ACK_RATIO: f64 = 0.5;
/// After a fault ends, this long still counts as unhealthy: clients
/// reconnect, brokers recover their logs.
pub const HEALTHY_GRACE: Duration = Duration::from_millis(1500);
/// In a cluster, one broker session more: a broker that restarted or was
/// cut off is fenced, must wait out its old session before it can register
/// again (DUPLICATE_BROKER_REGISTRATION), and rejoin the ISR before
/// acks=all writes complete.
pub const CLUSTER_HEALTHY_GRACE: Duration = Duration::from_millis(1500 + SIM_SESSION_TIMEOUT_MS);

impl Liveness {
    pub fn passed(&self) -> bool {
        let within = |d: Option<Duration>| d.is_some_and(|d| d <= self.bound);
        within(self.write_after) && within(self.read_after) && self.ratio_ok() && self.overdue_sends == 0
    }

    fn ratio_ok(&self) -> bool {
        self.healthy_sends < MIN_HEALTHY_SENDS
            || self.healthy_acked as f64 >= MIN_HEALTHY_ACK_RATIO * self.healthy_sends as f64
    }

    /// One line for the verdict output.
    pub fn summary(&self) -> String {
        let ms = |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("{} ms", d.as_millis()));
        format!(
            "liveness {}: after the heal a write in {}, a read in {} (bound {} ms); {}/{} healthy sends acknowledged (need {:.0}%); {} sends unanswered past their delivery timeout (need 0)",
            if self.passed() { "ok" } else { "FAILED" },
            ms(self.write_after),
            ms(self.read_after),
            self.bound.as_millis(),
            self.healthy_acked,
            self.healthy_sends,
            MIN_HEALTHY_ACK_RATIO * 100.0,
            self.overdue_sends
        )
    }
}

/// After the heal, a cluster with a metadata quorum must elect a leader
/// within this much simulated time (see
/// [`crate::checker::leader_elected_after`]).
pub const ELECTION_BOUND: Duration = Duration::from_secs(10);

/// The quorum's liveness after the heal.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Election {
    #[serde(serialize_with = "ser_ms")]
    pub bound: Duration,
    /// From the heal until a majority of voters, the leader among them,
    /// named one leader in one epoch; `None`: never.
    pub after: Option<Duration>,
    /// Leaders the quorum went through: distinct (epoch, leader) reports.
    pub elections: usize,
}

impl Election {
    pub fn passed(&self) -> bool {
        self.after.is_some_and(|d| d <= self.bound)
    }

    /// One line for the verdict output.
    pub fn summary(&self) -> String {
        format!(
            "quorum {}: a leader {} after the heal (bound {} ms); {} epochs with a leader in the run",
            if self.passed() { "ok" } else { "FAILED" },
            self.after.map_or("never agreed on".to_string(), |d| format!("agreed on {} ms", d.as_millis())),
            self.bound.as_millis(),
            self.elections
        )
    }
}

/// Knobs that change what a run keeps, never what it does.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Keep the trace's text lines (for `--trace`).
    pub keep_trace: bool,
}

/// One line of the fault timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    #[serde(serialize_with = "ser_ms")]
    pub at: Duration,
    pub what: String,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Everything one run produced.
pub struct RunResult {
    pub seed: u64,
    pub scenario: String,
    /// What the seed drew from the scenario's swarm ranges, if it has any.
    pub draw: Option<crate::swarm::Draw>,
    pub liveness: Liveness,
    /// With a metadata quorum: how soon after the heal it had a leader.
    pub election: Option<Election>,
    /// Whether the resolved configuration promises that what the broker
    /// serves stays readable (it does unless the medium may rot while the
    /// broker runs).
    pub promises_readable: bool,
    /// Operations in the history.
    pub ops: usize,
    /// Fault strikes injected.
    pub faults: usize,
    pub report: Report,
    /// Whether the final read reached the end of every partition.
    pub final_read_complete: bool,
    /// Polls that failed because fetched data did not pass the client's CRC
    /// check, and were retried. Informational: a passing fault is refused
    /// and read again; only [`RunResult::unreadable`] fails a run.
    pub corrupt_polls: usize,
    /// Offsets whose data stayed corrupt through the final read's whole
    /// retry budget: the [`CORRUPT_READ`] finding.
    pub unreadable: Vec<Unreadable>,
    /// Idempotent producers' oldest batches refused as out of sequence:
    /// the [`SEQUENCE_REFUSED`] finding.
    pub sequence_refusals: u64,
    /// Whether the resolved configuration makes [`SEQUENCE_REFUSED`] fatal:
    /// idempotence on and a medium that cannot corrupt fsynced data.
    pub promises_in_sequence: bool,
    /// Protocol probes the broker answered wrongly: the
    /// [`crate::probes::PROTOCOL_PROBE`] finding, always fatal.
    pub probe_failures: Vec<String>,
    pub trace_hash: u64,
    pub trace: Trace,
    pub history: History,
    pub timeline: Vec<TimelineEntry>,
    /// When the broker coordinating the workload's group was crashed: a
    /// `crash-coordinator` strike, or any crash of the only broker.
    pub coordinator_crashes: Vec<Duration>,
    /// Every simulated host in the order it was registered (brokers,
    /// producers, consumers, the reader): turmoil numbers their addresses
    /// 192.168.0.1 onwards in this order, which is how a trace's "from
    /// 192.168.0.5:49152" names its sender.
    pub hosts: Vec<String>,
    /// Simulated time the run took.
    pub sim_time: Duration,
    /// Panics in any simulated task (a failed invariant assertion is one),
    /// as "node task: message". Any panic fails the run.
    pub panics: Vec<String>,
}

impl RunResult {
    /// True if the checkers found nothing that makes the run invalid, no
    /// acknowledged data stayed corrupt, and the final read completed (so
    /// the checkers saw everything).
    pub fn passed(&self) -> bool {
        // Where the medium rots, a correct broker may lose data for good;
        // the final read then cannot be held to reaching the log end. (The
        // broker also answers fetches at a rotted batch below the log end
        // with no records and no error, so the read stalls rather than
        // failing its CRC check; that is reported, not forgiven, elsewhere.)
        let read_all = self.final_read_complete || !self.promises_readable;
        self.report.valid
            && read_all
            && self.corrupt_ok()
            && self.sequence_ok()
            && self.probe_failures.is_empty()
            && self.liveness.passed()
            && self.election.as_ref().is_none_or(Election::passed)
            && self.panics.is_empty()
    }

    fn corrupt_ok(&self) -> bool {
        self.unreadable.is_empty() || !self.promises_readable
    }

    fn sequence_ok(&self) -> bool {
        self.sequence_refusals == 0 || !self.promises_in_sequence
    }

    /// A one-word verdict.
    pub fn verdict(&self) -> String {
        if let Some(first) = self.panics.first() {
            return format!("PANIC ({first})");
        }
        let mut kinds: Vec<&str> = self.report.invalid_kinds.iter().map(|k| k.as_str()).collect();
        if !self.corrupt_ok() {
            kinds.push(CORRUPT_READ);
        }
        if !self.sequence_ok() {
            kinds.push(SEQUENCE_REFUSED);
        }
        if !self.probe_failures.is_empty() {
            kinds.push(crate::probes::PROTOCOL_PROBE);
        }
        if !kinds.is_empty() {
            format!("INVALID ({})", kinds.join(", "))
        } else if !self.final_read_complete && self.promises_readable {
            "INCOMPLETE (final read did not finish)".into()
        } else if !self.liveness.passed() {
            "NOT LIVE".into()
        } else if !self.election.as_ref().is_none_or(Election::passed) {
            "NOT LIVE (no quorum leader agreed on in time after the heal)".into()
        } else if !self.final_read_complete {
            "valid (final read stopped short; forgiven: the medium rots under the broker)".into()
        } else {
            "valid".into()
        }
    }

    /// What the runner itself found, beside the checkers' report: the
    /// corrupt-read finding with each unreadable offset, how the final read
    /// ended, and the transient corruption the clients refused. Empty when
    /// there is nothing to say.
    pub fn findings(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let secs = |d: Duration| format!("{:.3} s", d.as_secs_f64());
        if let Some(e) = &self.election {
            let _ = writeln!(out, "\n{}", e.summary());
        }
        if !self.history.replicas.is_empty() {
            let partitions: std::collections::BTreeSet<&TopicPartition> =
                self.history.replicas.iter().map(|r| &r.partition).collect();
            let batches: usize = self.history.replicas.iter().map(|r| r.batches.len()).sum();
            let _ = writeln!(
                out,
                "replicas: {} copies of {} partitions read from the brokers' disks ({batches} batches), in-sync \
                 copies compared below the committed offsets",
                self.history.replicas.len(),
                partitions.len()
            );
        }
        if !self.panics.is_empty() {
            let _ = writeln!(out, "\npanic: {} task(s) panicked; the run stopped at the first", self.panics.len());
            for p in &self.panics {
                let _ = writeln!(out, "  {p}");
            }
        }
        if !self.unreadable.is_empty() {
            let _ = writeln!(
                out,
                "\n{CORRUPT_READ}: {} — acknowledged data stayed corrupt after the heal: the log holds a batch \
                 that fails its CRC check on every read, so it and everything after it in its partition is \
                 unreadable",
                self.unreadable.len()
            );
            for u in &self.unreadable {
                let p = format!("{}-{}", u.partition.topic, u.partition.partition);
                let _ = writeln!(
                    out,
                    "  {p}@{}: all {} final-read fetches from {} to {} failed the CRC check; first seen corrupt at {}",
                    u.offset,
                    u.attempts,
                    secs(u.first_attempt),
                    secs(u.last_attempt),
                    secs(u.first_seen),
                );
                if let Some(op) = self.acknowledged_at(&u.partition, u.offset) {
                    let what = match &op.kind {
                        OpKind::Send { value, .. } => format!("{value:?}"),
                        _ => "a value".into(),
                    };
                    let _ = writeln!(
                        out,
                        "    {what} was acknowledged there by #{} at {}",
                        op.index,
                        secs(Duration::from_nanos(op.complete_ns))
                    );
                }
                let _ = writeln!(out, "    last error: {}", u.error);
            }
        } else if !self.final_read_complete && self.panics.is_empty() {
            let why = self
                .history
                .ops
                .iter()
                .rev()
                .find(|op| op.final_read && matches!(op.kind, OpKind::Assign { .. }))
                .map(|op| match &op.outcome {
                    Outcome::Info { error } | Outcome::Fail { error } => error.clone(),
                    Outcome::Ok => "it ended ok".into(),
                })
                .unwrap_or_else(|| "it never ended within the simulation's time limit".into());
            let _ = writeln!(out, "\nfinal read incomplete: {why}");
        }
        if self.sequence_refusals > 0 {
            let how = if self.promises_in_sequence {
                "fatal"
            } else {
                "informational: the medium may corrupt fsynced data, so a correct broker may forget acknowledged batches"
            };
            let _ = writeln!(
                out,
                "\n{SEQUENCE_REFUSED} ({how}): the broker refused an idempotent producer's oldest unfinished batch as \
                 out of sequence {} time(s)",
                self.sequence_refusals
            );
        }
        if !self.probe_failures.is_empty() {
            let _ = writeln!(out, "\n{}: the broker answered as Kafka does not:", crate::probes::PROTOCOL_PROBE);
            for w in &self.probe_failures {
                let _ = writeln!(out, "  {w}");
            }
        }
        if self.corrupt_polls > 0 {
            let _ = writeln!(
                out,
                "\n{} poll(s) in all failed the client's CRC check and were retried; corruption that one re-fetch \
                 clears is not a finding, only what outlasts the final read's retries is",
                self.corrupt_polls
            );
        }
        out
    }

    /// The acknowledged send that landed at `offset` of `partition`.
    fn acknowledged_at(&self, partition: &TopicPartition, offset: i64) -> Option<&Op> {
        self.history.ops.iter().find(|op| {
            op.outcome == Outcome::Ok
                && matches!(&op.kind, OpKind::Send { topic, partition: Some(p), offset: Some(o), .. }
                    if topic == &partition.topic && *p == partition.partition && *o == offset)
        })
    }
}

/// Run `scenario` under `seed`.
/// The group coordinator's settings in a simulated run: timeouts short
/// enough for rebalances to happen many times in a few seconds.
fn sim_groups() -> faultline_broker::config::GroupConfig {
    faultline_broker::config::GroupConfig {
        offsets_topic_num_partitions: 3,
        group_min_session_timeout_ms: 100,
        group_initial_rebalance_delay_ms: 100,
        offsets_commit_timeout_ms: 2_000,
        ..faultline_broker::config::GroupConfig::default()
    }
}

pub fn run_scenario(scenario: &Scenario, seed: u64, opts: &RunOptions) -> anyhow::Result<RunResult> {
    scenario.validate()?;
    let (resolved, draw) = scenario.resolve(seed);
    let scenario = &resolved;
    scenario.validate()?;
    let check = scenario.check_options()?;
    let window = Duration::from_secs_f64(scenario.duration_s);
    let final_start = window + Duration::from_secs_f64(scenario.settle_s);
    let liveness_deadline = window + Duration::from_secs_f64(scenario.liveness_s);
    let final_deadline = final_start.max(liveness_deadline) + FINAL_READ_BUDGET;
    let hard_limit = final_deadline + Duration::from_secs(5);

    let trace = Trace::new(opts.keep_trace);
    let recorder = Recorder::new(trace.clone());
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(seed::derive(seed, "turmoil"))
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS as u64))
        .tick_duration(TICK)
        .simulation_duration(hard_limit + Duration::from_secs(60))
        .min_message_latency(Duration::from_millis(scenario.network.min_latency_ms))
        .max_message_latency(Duration::from_millis(scenario.network.max_latency_ms))
        .tcp_capacity(4096);
    if scenario.network.random_order {
        builder.enable_random_order();
    }
    let mut sim = builder.build();

    let servers = scenario.cluster.servers();
    let roles = Roles {
        brokers: servers.iter().filter(|s| s.broker).map(|s| s.host.clone()).collect(),
        clients: (0..scenario.workload.producers)
            .map(|i| format!("producer-{i}"))
            .chain((0..scenario.workload.consumers).map(|i| format!("consumer-{i}")))
            .collect(),
        controllers: servers.iter().filter(|s| !s.broker).map(|s| s.host.clone()).collect(),
        voters: servers.iter().filter(|s| s.controller).map(|s| s.host.clone()).collect(),
        partitions: scenario
            .cluster
            .topics
            .iter()
            .flat_map(|t| (0..t.partitions).map(|p| TopicPartition { topic: t.name.clone(), partition: p }))
            .collect(),
        coordinator: (scenario.cluster.consumer_groups && scenario.cluster.has_quorum()).then(|| {
            use faultline_broker::server::group::{partition_for, OFFSETS_TOPIC};
            let partitions = sim_groups().offsets_topic_num_partitions;
            TopicPartition {
                topic: OFFSETS_TOPIC.to_string(),
                partition: partition_for(workload::GROUP_ID, partitions),
            }
        }),
    };
    let node_ids: BTreeMap<String, i32> = servers.iter().map(|s| (s.host.clone(), s.node_id)).collect();
    let voter_list = servers
        .iter()
        .filter(|s| s.controller)
        .map(|s| format!("{}@{}:{BROKER_PORT}", s.node_id, s.host))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: BTreeMap<String, Arc<NodeState>> = BTreeMap::new();
    let bootstrap: Vec<String> = roles.brokers.iter().map(|b| format!("{b}:{BROKER_PORT}")).collect();

    for server in &servers {
        let name = &server.host;
        let node = NodeState::new(seed, name);
        node.set_buggify(scenario.faults.buggify);
        // The data directory is provisioned, durable before the broker
        // first starts, as an operator would leave it.
        use faultline_broker::io::Fs;
        node.disk.create_dir_all(std::path::Path::new(DATA_DIR))?;
        node.disk.drain_events();
        node.disk.set_faults(scenario.faults.disk.clone());
        nodes.insert(name.clone(), node.clone());
        let roles_text = match (server.broker, server.controller) {
            (true, true) => "broker,controller",
            (false, true) => "controller",
            _ => "broker",
        };
        let config = BrokerConfig {
            node_id: server.node_id,
            process_roles: scenario.cluster.has_quorum().then(|| roles_text.to_string()),
            controller_quorum_voters: scenario.cluster.has_quorum().then(|| voter_list.clone()),
            broker_heartbeat_interval_ms: SIM_HEARTBEAT_MS,
            broker_session_timeout_ms: SIM_SESSION_TIMEOUT_MS,
            controller_quorum_pre_vote: scenario.cluster.pre_vote,
            listen: format!("0.0.0.0:{BROKER_PORT}"),
            advertised_listener: Some(format!("{name}:{BROKER_PORT}")),
            data_dir: DATA_DIR.into(),
            auto_create_topics_enable: false,
            log: scenario.cluster.log.clone(),
            bugs: scenario.cluster.bugs,
            groups: sim_groups(),
            replica_lag_time_max_ms: SIM_REPLICA_LAG_MS,
            replica_fetch_wait_max_ms: SIM_REPLICA_FETCH_WAIT_MS,
            replica_fetch_backoff_ms: SIM_REPLICA_FETCH_BACKOFF_MS,
            replica_socket_timeout_ms: SIM_REPLICA_SOCKET_TIMEOUT_MS,
            ..BrokerConfig::default()
        };
        let trace = trace.clone();
        sim.host(name.as_str(), move || {
            let env = SimIo::new(node.clone(), trace.clone(), EPOCH_MS);
            let config = config.clone();
            let trace = trace.clone();
            let name = node.name.clone();
            let node = node.clone();
            async move {
                use futures::FutureExt;
                let at = crate::seam::sim_now().as_nanos() as u64;
                trace.record(at, &name, EventKind::Node, format_args!("broker starting"));
                node.start(&trace);
                let run = std::panic::AssertUnwindSafe(faultline_broker::server::run(env, config)).catch_unwind();
                let at = || crate::seam::sim_now().as_nanos() as u64;
                match run.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        trace.record(at(), &name, EventKind::Node, format_args!("broker stopped: {e:#}"));
                        tracing::warn!(error = %format!("{e:#}"), "broker stopped");
                    }
                    Err(payload) => {
                        let message = crate::seam::panic_message(&*payload);
                        trace.record_panic(at(), &name, "broker", &message);
                    }
                }
                Ok(())
            }
        });
    }

    let ctx_for = |name: &str, nodes: &mut BTreeMap<String, Arc<NodeState>>| {
        let node = NodeState::new(seed, name);
        node.set_buggify(scenario.faults.buggify);
        nodes.insert(name.to_string(), node.clone());
        ClientCtx {
            node,
            trace: trace.clone(),
            recorder: recorder.clone(),
            epoch_ms: EPOCH_MS,
            seed,
            bootstrap: bootstrap.clone(),
            topics: scenario.cluster.topics.clone(),
            workload: scenario.workload.clone(),
            end: window,
            final_start,
            final_deadline,
            liveness_deadline,
            bugs: scenario.cluster.bugs,
            consumer_groups: scenario.cluster.consumer_groups,
            quorum: scenario.cluster.has_quorum(),
        }
    };
    for name in &roles.clients {
        let ctx = ctx_for(name, &mut nodes);
        let is_producer = name.starts_with("producer-");
        sim.host(name.as_str(), move || {
            let ctx = ctx.clone();
            async move {
                if is_producer {
                    workload::producer(ctx).await
                } else {
                    workload::consumer(ctx).await
                }
                Ok(())
            }
        });
    }
    let reader_ctx = ctx_for("reader", &mut nodes);
    sim.host("reader", move || {
        let ctx = reader_ctx.clone();
        async move {
            workload::reader(ctx).await;
            Ok(())
        }
    });

    let strikes = nemesis::plan(&scenario.faults.nemeses, &roles, window, &mut seed::rng(seed, "nemesis"));
    let mut injector =
        Injector::new(scenario.network.clone(), scenario.faults.disk.clone(), seed::rng(seed, "injector"));
    let mut timeline = Vec::new();
    let mut coordinator_crashes = Vec::new();
    // (time, is_start, strike): ends sort before starts at the same instant
    // so that back-to-back strikes of one nemesis do not overlap.
    let mut agenda: Vec<(Duration, bool, usize)> =
        strikes.iter().enumerate().flat_map(|(i, s)| [(s.start, true, i), (s.end, false, i)]).collect();
    agenda.sort_by_key(|(t, start, i)| (*t, *start, *i));
    let mut next = 0;
    let mut healed = false;
    let mut aim = Aim {
        node_ids: &node_ids,
        voters: &roles.voters,
        brokers: &roles.brokers,
        servers: roles.servers(),
        resolved: BTreeMap::new(),
        armed: Vec::new(),
        seen: 0,
        rng: seed::rng(seed, "aim"),
    };

    let final_read = loop {
        let now = sim.elapsed();
        while next < agenda.len() && agenda[next].0 <= now {
            let (_, up, i) = agenda[next];
            next += 1;
            match aim.resolve(i, &strikes[i], up, &trace) {
                Some(strike) => {
                    if up && crashes_coordinator(&strikes[i].fault, &strike.fault, &roles) {
                        coordinator_crashes.push(now);
                    }
                    if up && strikes[i].fault.aims_at_a_leader() {
                        // The concrete fault names a host; say whom it was aimed at.
                        let what = format!("aim {} at {}", strikes[i].fault, strike.fault);
                        trace.record(now.as_nanos() as u64, "nemesis", EventKind::Fault, format_args!("{what}"));
                        timeline.push(TimelineEntry { at: now, what });
                    }
                    apply(&mut sim, &mut injector, &nodes, &strike, up, now, &trace, &recorder, &mut timeline)
                }
                None => {
                    let what = format!("{} {}", if up { "arm" } else { "disarm" }, strikes[i].fault);
                    trace.record(now.as_nanos() as u64, "nemesis", EventKind::Fault, format_args!("{what}"));
                }
            }
        }
        if !healed && now >= window {
            healed = true;
            recorder.set_healed(now);
            heal(
                &mut sim,
                &mut injector,
                &nodes,
                &roles,
                &agenda[next..],
                &strikes,
                &mut aim,
                now,
                &trace,
                &recorder,
                &mut timeline,
            );
            next = agenda.len();
        }
        if healed && now.as_millis() % 100 == 0 {
            // A broker whose start-up began under a fault can fail after the
            // heal; like a process supervisor, bring it back (checked every
            // 100 ms, so one that can never start does not spin).
            restart_stopped_brokers(&mut sim, &roles, now, &trace, &mut timeline);
        }
        sim.step().map_err(|e| anyhow::anyhow!("simulation failed at {:?}: {e}", sim.elapsed()))?;
        let after = sim.elapsed();
        for (name, node) in &nodes {
            for ev in node.disk.drain_events() {
                trace.record(after.as_nanos() as u64, name, EventKind::Disk, format_args!("{ev}"));
            }
        }
        if let Some(strike) = aim.fire_on_observation(&trace, &injector.down_hosts()) {
            apply(&mut sim, &mut injector, &nodes, &strike, true, after, &trace, &recorder, &mut timeline);
        }
        if let Some(outcome) = recorder.final_read_done() {
            break outcome;
        }
        if trace.has_panicked() {
            break Default::default();
        }
        if after >= hard_limit {
            break Default::default();
        }
    };
    let sim_time = sim.elapsed();
    drop(sim);

    let corrupt_polls = recorder.corrupt_polls();
    let sequence_refusals = recorder.sequence_refusals();
    let probe_failures = recorder.probe_failures();
    let (healed_at, wrote, read) = recorder.liveness();
    let mut history = recorder.finish(sim_time);
    history.observations = trace.observations();
    if scenario.cluster.has_quorum() {
        history.replicas = replica_logs(&nodes, &roles.brokers, &node_ids, &roles.partitions);
    }
    let report = checker::check(&history, &check);
    let election = scenario.cluster.has_quorum().then(|| {
        let voters: BTreeMap<String, i32> =
            roles.voters.iter().map(|h| (h.clone(), node_ids.get(h).copied().unwrap_or(-1))).collect();
        let elections: std::collections::BTreeSet<(i32, i32)> = history
            .observations
            .iter()
            .filter_map(|o| match o.event {
                crate::history::ObservedEvent::QuorumLeader { epoch, leader: Some(l), .. } => Some((epoch, l)),
                _ => None,
            })
            .collect();
        Election {
            bound: ELECTION_BOUND,
            after: healed_at.and_then(|h| checker::leader_elected_after(&history, &voters, h)),
            elections: elections.len(),
        }
    });
    let panics = trace.panics();
    let since = |t: Option<Duration>| Some(t?.saturating_sub(healed_at?));
    let grace = if scenario.cluster.has_quorum() { CLUSTER_HEALTHY_GRACE } else { HEALTHY_GRACE };
    let (healthy_sends, healthy_acked) = healthy_acks(&history, &strikes, window, grace);
    let overdue_sends = history.ops.iter().filter(|op| is_send_with(op, workload::OVERDUE_SEND)).count();
    let liveness = Liveness {
        bound: Duration::from_secs_f64(scenario.liveness_s),
        write_after: since(wrote),
        read_after: since(read),
        healthy_sends,
        healthy_acked,
        overdue_sends,
    };
    Ok(RunResult {
        seed,
        scenario: scenario.name.clone(),
        draw,
        liveness,
        election,
        promises_readable: !scenario.medium_may_rot_live(),
        ops: history.ops.len(),
        faults: strikes.len(),
        report,
        final_read_complete: final_read.complete,
        corrupt_polls,
        unreadable: final_read.unreadable,
        sequence_refusals,
        probe_failures,
        promises_in_sequence: scenario.workload.idempotence && !scenario.medium_may_corrupt(),
        trace_hash: trace.hash(),
        trace,
        history,
        timeline,
        coordinator_crashes,
        hosts: roles.servers().into_iter().chain(roles.clients.iter().cloned()).chain(["reader".to_string()]).collect(),
        sim_time,
        panics,
    })
}

/// Whether `op` is a send that ended `info` with exactly `error`.
fn is_send_with(op: &Op, error: &str) -> bool {
    matches!(op.kind, OpKind::Send { .. }) && matches!(&op.outcome, Outcome::Info { error: e } if e == error)
}

/// Sends that ran wholly while healthy — invoked inside the window, and no
/// strike in force from their invocation to their completion nor ended
/// within `grace` before it ([`HEALTHY_GRACE`], or [`CLUSTER_HEALTHY_GRACE`])
/// — and how many of them the cluster took: acknowledged, or with acks=0
/// handed over by the producer.
fn healthy_acks(history: &History, strikes: &[Strike], window: Duration, grace: Duration) -> (usize, usize) {
    let healthy = |invoke: Duration, complete: Duration| {
        invoke < window && strikes.iter().all(|s| complete < s.start || invoke > s.end + grace)
    };
    let mut sends = 0;
    let mut acked = 0;
    for op in &history.ops {
        if matches!(op.kind, OpKind::Send { .. })
            && !op.node.starts_with("reader")
            && healthy(Duration::from_nanos(op.invoke_ns), Duration::from_nanos(op.complete_ns))
        {
            sends += 1;
            acked += usize::from(op.outcome == Outcome::Ok || is_send_with(op, workload::ACKS0_HANDED_OVER));
        }
    }
    (sends, acked)
}

#[allow(clippy::too_many_arguments)]
fn apply(
    sim: &mut turmoil::Sim<'_>,
    injector: &mut Injector,
    nodes: &BTreeMap<String, Arc<NodeState>>,
    strike: &Strike,
    up: bool,
    now: Duration,
    trace: &Trace,
    recorder: &Recorder,
    timeline: &mut Vec<TimelineEntry>,
) {
    let what = format!("{} {}", if up { "start" } else { "end" }, strike.fault);
    trace.record(now.as_nanos() as u64, "nemesis", EventKind::Fault, format_args!("{what}"));
    timeline.push(TimelineEntry { at: now, what });
    match injector.apply(sim, nodes, &strike.fault, up, now) {
        HostChange::Crashed(host) if !is_server(&host) => recorder.client_crashed(&host, now),
        HostChange::Crashed(host) => {
            let incarnation = nodes.get(&host).map_or(0, |n| n.incarnation());
            trace.observe(now.as_nanos() as u64, &host, incarnation, crate::history::ObservedEvent::Stopped);
        }
        HostChange::CrashedAll(hosts) => {
            for host in hosts {
                if is_server(&host) {
                    let incarnation = nodes.get(&host).map_or(0, |n| n.incarnation());
                    trace.observe(now.as_nanos() as u64, &host, incarnation, crate::history::ObservedEvent::Stopped);
                } else {
                    recorder.client_crashed(&host, now);
                }
            }
        }
        _ => {}
    }
}

/// Whether `host` is a server (broker or controller), not a client.
/// Whether `planned`, resolved to `concrete`, crashes the group
/// coordinator: it aims at the leader of a `__consumer_offsets` partition,
/// or crashes the only broker there is.
fn crashes_coordinator(planned: &Fault, concrete: &Fault, roles: &Roles) -> bool {
    use faultline_broker::server::group::OFFSETS_TOPIC;
    match (planned, concrete) {
        (Fault::CrashPartitionLeader { topic, .. }, _) => topic == OFFSETS_TOPIC,
        (_, Fault::Crash { host } | Fault::ProcessCrash { host } | Fault::CrashCorrupt { host }) => {
            is_server(host) && roles.brokers.len() == 1
        }
        (_, Fault::PowerLossAll { .. }) => roles.brokers.len() == 1,
        _ => false,
    }
}

fn is_server(host: &str) -> bool {
    host.starts_with("broker-") || host.starts_with("controller-")
}

/// Aims the strikes whose target is the quorum leader: resolves each, when
/// it starts, to a concrete fault against the leader of that moment (the
/// last leader any server reported), and ends the same concrete fault.
/// A crash-after-vote or crash-new-leader strike is armed when it starts
/// and resolved when a voter reports what it waits for
/// ([`Aim::fire_on_observation`]).
struct Aim<'a> {
    node_ids: &'a BTreeMap<String, i32>,
    voters: &'a [String],
    /// Partition leaders are brokers; a zombie leader is cut off from every
    /// other server.
    brokers: &'a [String],
    servers: Vec<String>,
    resolved: BTreeMap<usize, Strike>,
    /// Crash-after-vote and crash-new-leader strikes waiting for their
    /// observation, in arming order.
    armed: Vec<(usize, Strike)>,
    /// Observations already looked at for them.
    seen: usize,
    /// Picks a voter when no leader has been reported yet.
    rng: rand_chacha::ChaCha8Rng,
}

impl Aim<'_> {
    /// The concrete fault to start or end for strike `i`; `None` when there
    /// is nothing to do (an armed strike starting, or ending unfired).
    fn resolve(&mut self, i: usize, strike: &Strike, up: bool, trace: &Trace) -> Option<Strike> {
        if !strike.fault.aims_at_a_leader() {
            return Some(strike.clone());
        }
        if matches!(strike.fault, Fault::CrashAfterVote | Fault::CrashNewLeader) {
            if up {
                if self.armed.is_empty() {
                    self.seen = trace.observation_count();
                }
                self.armed.push((i, strike.clone()));
            } else {
                self.armed.retain(|(j, _)| *j != i);
            }
            return if up { None } else { self.resolved.remove(&i) };
        }
        if !up {
            return Some(self.resolved.remove(&i).expect("a leader strike ends after it started"));
        }
        if let Fault::CrashPartitionLeader { topic, partition } | Fault::IsolatePartitionLeader { topic, partition } =
            &strike.fault
        {
            let host = self.partition_leader(topic, *partition, trace);
            let fault = match strike.fault {
                Fault::IsolatePartitionLeader { .. } => Fault::Partition {
                    a: vec![host.clone()],
                    b: self.servers.iter().filter(|s| **s != host).cloned().collect(),
                },
                _ => Fault::Crash { host },
            };
            let concrete = Strike { fault, ..strike.clone() };
            self.resolved.insert(i, concrete.clone());
            return Some(concrete);
        }
        let leader = trace.observations().iter().rev().find_map(|o| match o.event {
            crate::history::ObservedEvent::QuorumLeader { leader: Some(l), .. } => Some(l),
            _ => None,
        });
        let host = leader
            .and_then(|l| self.node_ids.iter().find(|(_, id)| **id == l).map(|(h, _)| h.clone()))
            .filter(|h| self.voters.contains(h))
            .unwrap_or_else(|| {
                use rand::Rng;
                self.voters[self.rng.random_range(0..self.voters.len())].clone()
            });
        let fault = match strike.fault {
            Fault::IsolateLeader => Fault::Partition {
                a: vec![host.clone()],
                b: self.voters.iter().filter(|v| **v != host).cloned().collect(),
            },
            _ => Fault::Crash { host },
        };
        let concrete = Strike { fault, ..strike.clone() };
        self.resolved.insert(i, concrete.clone());
        Some(concrete)
    }

    /// The broker that leads `topic`-`partition` now, as far as the
    /// reports tell: the one that reported leading it at the highest leader
    /// epoch (the latest such report on a tie). With no report yet, a
    /// broker picked by the seed.
    fn partition_leader(&mut self, topic: &str, partition: i32, trace: &Trace) -> String {
        let mut best: Option<(i32, i32)> = None;
        for o in trace.observations() {
            if let crate::history::ObservedEvent::PartitionLeader { node, topic: t, partition: p, leader_epoch } =
                &o.event
            {
                if t == topic && *p == partition && best.is_none_or(|(e, _)| *leader_epoch >= e) {
                    best = Some((*leader_epoch, *node));
                }
            }
        }
        best.and_then(|(_, node)| self.node_ids.iter().find(|(_, id)| **id == node).map(|(h, _)| h.clone()))
            .filter(|h| self.brokers.contains(h))
            .unwrap_or_else(|| {
                use rand::Rng;
                self.brokers[self.rng.random_range(0..self.brokers.len())].clone()
            })
    }

    /// If a strike is armed and a running voter reported what it waits for
    /// (a vote granted, or its own lead of a new epoch) since the last look,
    /// the crash of that voter, to start now.
    fn fire_on_observation(&mut self, trace: &Trace, down: &std::collections::BTreeSet<String>) -> Option<Strike> {
        if self.armed.is_empty() {
            return None;
        }
        let from = self.seen;
        let fresh = trace.observations_from(from);
        self.seen += fresh.len();
        for (k, o) in fresh.iter().enumerate() {
            let (node, fault) = match o.event {
                crate::history::ObservedEvent::VoteGranted { node, .. } => (node, Fault::CrashAfterVote),
                crate::history::ObservedEvent::QuorumLeader { node, leader: Some(l), .. } if l == node => {
                    (node, Fault::CrashNewLeader)
                }
                _ => continue,
            };
            let Some(host) = self
                .node_ids
                .iter()
                .find(|(h, id)| **id == node && self.voters.contains(h) && !down.contains(*h))
                .map(|(h, _)| h.clone())
            else {
                continue;
            };
            let Some(armed) = self.armed.iter().position(|(_, s)| s.fault == fault) else { continue };
            // What came after it waits for the next look.
            self.seen = from + k + 1;
            let (i, strike) = self.armed.remove(armed);
            let concrete = Strike { fault: Fault::Crash { host }, ..strike };
            self.resolved.insert(i, concrete.clone());
            return Some(concrete);
        }
        None
    }
}

/// Every broker's copy of every data partition, read from its simulated
/// disk as the run left it: the files' current contents, which is what a
/// clean stop would keep (the broker is up and its page cache is whole).
/// Segment files (`<data_dir>/<topic>-<partition>/<base>.log`) are parsed
/// batch by batch with the broker's own decoder, CRC checked; reading a
/// copy stops at the first batch that does not parse, which a correct
/// broker's recovery would cut at its next start. Read-only: nothing
/// touches the disk's state or its fault RNG.
fn replica_logs(
    nodes: &BTreeMap<String, Arc<NodeState>>,
    brokers: &[String],
    node_ids: &BTreeMap<String, i32>,
    partitions: &[TopicPartition],
) -> Vec<crate::history::ReplicaLog> {
    use faultline_broker::io::Fs;
    use faultline_broker::record_batch::Batches;
    let mut out = Vec::new();
    for host in brokers {
        let Some(node) = nodes.get(host) else { continue };
        let disk = &node.disk;
        for tp in partitions {
            let dir = std::path::Path::new(DATA_DIR).join(format!("{}-{}", tp.topic, tp.partition));
            if !disk.is_dir(&dir) {
                continue;
            }
            let mut segments: Vec<std::path::PathBuf> = disk
                .list_dir(&dir)
                .unwrap_or_default()
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .collect();
            // Zero-padded base offsets: name order is offset order.
            segments.sort();
            let mut log = crate::history::ReplicaLog {
                host: host.clone(),
                node: node_ids.get(host).copied().unwrap_or(-1),
                partition: tp.clone(),
                batches: Vec::new(),
                stopped: None,
            };
            'segments: for seg in &segments {
                let bytes = disk.contents(seg).unwrap_or_default();
                for b in Batches::new(&bytes, true) {
                    match b {
                        Ok((_, h, raw)) => log.batches.push(crate::history::ReplicaBatch {
                            base_offset: h.base_offset,
                            last_offset: h.last_offset(),
                            leader_epoch: h.partition_leader_epoch,
                            crc: h.crc,
                            size: raw.len() as u32,
                            digest: crate::trace::fnv1a(raw),
                        }),
                        Err(e) => {
                            let name = seg.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                            log.stopped = Some(format!("{name}: {e}"));
                            break 'segments;
                        }
                    }
                }
            }
            out.push(log);
        }
    }
    out
}

/// Restart every server whose software has stopped.
fn restart_stopped_brokers(
    sim: &mut turmoil::Sim<'_>,
    roles: &Roles,
    now: Duration,
    trace: &Trace,
    timeline: &mut Vec<TimelineEntry>,
) {
    for b in &roles.servers() {
        if !sim.is_host_running(b.as_str()) {
            sim.bounce(b.as_str());
            let what = format!("restart {b} (its software had stopped)");
            trace.record(now.as_nanos() as u64, "nemesis", EventKind::Fault, format_args!("{what}"));
            timeline.push(TimelineEntry { at: now, what });
        }
    }
}

/// End every strike still in force, restart whatever is down and return
/// every disk and clock to health.
#[allow(clippy::too_many_arguments)]
fn heal(
    sim: &mut turmoil::Sim<'_>,
    injector: &mut Injector,
    nodes: &BTreeMap<String, Arc<NodeState>>,
    roles: &Roles,
    pending: &[(Duration, bool, usize)],
    strikes: &[Strike],
    aim: &mut Aim<'_>,
    now: Duration,
    trace: &Trace,
    recorder: &Recorder,
    timeline: &mut Vec<TimelineEntry>,
) {
    for &(_, up, i) in pending {
        // Every strike ends inside the window, so only ends can remain.
        assert!(!up, "strike {i} starts after the fault window");
        if !up {
            if let Some(strike) = aim.resolve(i, &strikes[i], false, trace) {
                apply(sim, injector, nodes, &strike, false, now, trace, recorder, timeline);
            }
        }
    }
    assert!(injector.is_quiet(), "faults still in force after healing");
    for node in nodes.values() {
        node.disk.set_faults(DiskFaults::default());
        node.set_skew(Default::default());
    }
    restart_stopped_brokers(sim, roles, now, trace, timeline);
    timeline.push(TimelineEntry { at: now, what: "heal: all faults cleared".into() });
    trace.record(now.as_nanos() as u64, "nemesis", EventKind::Fault, format_args!("heal"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ObservedEvent;

    fn leads(trace: &Trace, node: i32, partition: i32, leader_epoch: i32) {
        let event = ObservedEvent::PartitionLeader { node, topic: "events".into(), partition, leader_epoch };
        trace.observe(0, &format!("broker-{node}"), 1, event);
    }

    #[test]
    fn partition_leader_strikes_aim_at_the_highest_epoch_reported() {
        let node_ids: BTreeMap<String, i32> = (0..3).map(|i| (format!("broker-{i}"), i)).collect();
        let hosts: Vec<String> = node_ids.keys().cloned().collect();
        let mut aim = Aim {
            node_ids: &node_ids,
            voters: &hosts,
            brokers: &hosts,
            servers: hosts.clone(),
            resolved: BTreeMap::new(),
            armed: Vec::new(),
            seen: 0,
            rng: seed::rng(1, "aim"),
        };
        let trace = Trace::new(false);
        leads(&trace, 0, 1, 0);
        leads(&trace, 2, 1, 2);
        // A late report of an older epoch does not win.
        leads(&trace, 1, 1, 1);
        leads(&trace, 1, 0, 5);
        let strike = |fault| Strike { start: Duration::ZERO, end: Duration::from_secs(1), fault };
        let crash = strike(Fault::CrashPartitionLeader { topic: "events".into(), partition: 1 });
        let got = aim.resolve(0, &crash, true, &trace).unwrap();
        assert_eq!(got.fault, Fault::Crash { host: "broker-2".into() });
        assert_eq!(aim.resolve(0, &crash, false, &trace).unwrap(), got, "the end heals what the start did");
        // The zombie: cut off from every other server, clients untouched.
        let isolate = strike(Fault::IsolatePartitionLeader { topic: "events".into(), partition: 0 });
        let got = aim.resolve(1, &isolate, true, &trace).unwrap();
        assert_eq!(
            got.fault,
            Fault::Partition { a: vec!["broker-1".into()], b: vec!["broker-0".into(), "broker-2".into()] }
        );
        // No report yet: a broker the seed picks.
        let unknown = strike(Fault::CrashPartitionLeader { topic: "events".into(), partition: 3 });
        let got = aim.resolve(2, &unknown, true, &trace).unwrap();
        assert!(matches!(&got.fault, Fault::Crash { host } if hosts.contains(host)));
    }
}
