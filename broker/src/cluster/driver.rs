//! The async driver of a node's [`MetadataNode`]: one task that owns it,
//! feeds it calls from request handlers ([`ClusterLink`]), answers from
//! peers ([`Peers`]) and ticks at its deadlines, and performs its outputs:
//! the quorum state made durable before anything after it, requests sent,
//! answers returned, published images turned into hosted partitions, and
//! observations reported through the seam.
//!
//! The machine runs on monotonic time (Kafka's timers do too): a wall clock
//! that jumps moves no election or session deadline.
//!
//! Each call into the machine runs on the disk path (its log fsyncs there),
//! through the shell, so whatever a published image moves wakes the
//! requests parked on it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::hosting;
use super::link::{Call, ClusterLink, Reply, LISTENER};
use super::metadata_node::{Event, Input, MetadataNode, MetadataNodeConfig, Output};
use super::peers::{PeerEvent, PeerRequest, Peers, Timeouts};
use crate::config::ClusterMode;
use crate::controller::broker_lifecycle::LifecycleConfig;
use crate::controller::quorum_controller::{ControllerConfig, DEFAULT_CLUSTER_ID};
use crate::controller::records::Endpoint;
use crate::io::{self, Observation};
use crate::quorum::{DiskLog, QuorumConfig, QuorumStateFile};
use crate::server::handlers::cluster::PEER_CLIENT_ID_PREFIX;
use crate::server::shell::Shell;

/// Directory of the metadata log under the data directory (Kafka's name).
pub const METADATA_LOG_DIR: &str = "__cluster_metadata-0";
/// How long a request to another node that is not the quorum's own may go
/// unanswered (the quorum's wait `controller.quorum.request.timeout.ms`).
const PEER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Committed metadata records between two snapshots.
const SNAPSHOT_INTERVAL_RECORDS: i64 = 20_000;
/// Controller answers waiting for their commit plus forwarded requests.
const MAX_PENDING: usize = 1024;

/// Open the metadata log and quorum state, join the node to the cluster and
/// start the driver task.
pub(crate) async fn start(shell: Arc<Shell>, mode: ClusterMode) -> anyhow::Result<()> {
    let env = shell.env.clone();
    let node = shell.node.clone();
    let config = node.config.clone();
    let node_id = config.node_id;
    let dir = config.data_dir.join(METADATA_LOG_DIR);
    let fs = env.fs();
    let now_ms = env.now_ms();
    let state_file = QuorumStateFile::new(&dir);
    let voters: Vec<i32> = mode.voters.iter().map(|v| v.id).collect();
    let quorum = QuorumConfig {
        bugs: config.bugs.quorum(),
        pre_vote: config.controller_quorum_pre_vote,
        ..QuorumConfig::new(node_id, voters.iter().copied())
    };
    // A heartbeat lost on the way must be sent again before the broker's
    // session runs out, or one dropped message fences it (and, under
    // min.insync.replicas, stalls every partition it holds); so requests
    // on the control lane wait at most half a session.
    let control_timeout = PEER_REQUEST_TIMEOUT.min(Duration::from_millis(config.broker_session_timeout_ms / 2));
    let peer_timeouts =
        Timeouts { quorum: Duration::from_millis(quorum.request_timeout_ms as u64), request: control_timeout };
    let log_config = config.log.clone();
    let max_snapshot = quorum.max_snapshot_bytes as usize;
    let (log, persisted) = io::on_disk(&env, |_disk| -> anyhow::Result<_> {
        fs.create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let log = DiskLog::open(fs.clone(), &dir, log_config, max_snapshot, now_ms)
            .map_err(|e| anyhow::anyhow!("metadata log: {e}"))?;
        let persisted = state_file.load(&*fs).context("quorum state")?;
        Ok((log, persisted))
    })
    .await?;

    let controller = mode.roles.controller.then(|| ControllerConfig::from_broker_config(&config));
    let lifecycle = mode.roles.broker.then(|| LifecycleConfig {
        node_id,
        cluster_id: DEFAULT_CLUSTER_ID.into(),
        incarnation_id: Uuid::from_u64_pair(env.random_u64(), env.random_u64()),
        listeners: vec![Endpoint {
            name: LISTENER.into(),
            host: node.advertised_host.clone(),
            port: node.advertised_port as u16,
            security_protocol: 0,
        }],
        rack: None,
        heartbeat_interval_ms: config.broker_heartbeat_interval_ms as i64,
        request_timeout_ms: control_timeout.as_millis() as i64,
        retry_backoff_ms: 100,
    });
    let machine_config = MetadataNodeConfig {
        node_id,
        quorum,
        controller,
        lifecycle,
        snapshot_interval_records: SNAPSHOT_INTERVAL_RECORDS,
        max_pending: MAX_PENDING,
        publish_before_registered: config.bugs.publish_before_registered,
    };
    let machine = MetadataNode::new(machine_config, persisted, log, env.random_u64(), monotonic_ms(&env));

    // What the disk holds was led before the restart; the image decides
    // what is led now. Until it is published, nothing is served.
    for topic in node.topics.all() {
        for p in &topic.partitions {
            p.restart_as_follower();
        }
    }
    let (link, calls) = ClusterLink::new(node_id);
    node.join_cluster(link.clone());
    let (events_tx, events) = mpsc::unbounded_channel();
    let peers = Peers::new(env.clone(), format!("{PEER_CLIENT_ID_PREFIX}{node_id}"), peer_timeouts, events_tx);
    for v in &mode.voters {
        if v.id != node_id {
            peers.set_address(v.id, format!("{}:{}", v.host, v.port));
        }
    }
    tracing::info!(node_id, roles = ?mode.roles, voters = ?voters, "joining the cluster");
    let driver = Driver { shell, link, peers, machine, state_file, replies: BTreeMap::new(), next_token: 0 };
    if mode.roles.broker {
        crate::replication::fetcher::start(driver.shell.clone(), driver.link.clone());
    }
    io::spawn(&env, "cluster-driver", driver.run(calls, events));
    Ok(())
}

/// The machine's time: monotonic milliseconds since the node started, so
/// election timeouts and broker sessions do not jump with the wall clock.
fn monotonic_ms(env: &crate::io::Env) -> i64 {
    env.elapsed().as_millis() as i64
}

struct Driver {
    shell: Arc<Shell>,
    link: Arc<ClusterLink>,
    peers: Peers,
    machine: MetadataNode<DiskLog>,
    state_file: QuorumStateFile,
    /// Who waits for the answer to each request handed to the machine.
    replies: BTreeMap<u64, Option<Reply>>,
    next_token: u64,
}

impl Driver {
    async fn run(mut self, mut calls: mpsc::UnboundedReceiver<Call>, mut events: mpsc::UnboundedReceiver<PeerEvent>) {
        let env = self.shell.env.clone();
        let stopping = self.shell.stopping();
        tokio::pin!(stopping);
        loop {
            let now = monotonic_ms(&env);
            let wait = Duration::from_millis(self.machine.next_deadline().saturating_sub(now).max(0) as u64);
            let input = tokio::select! {
                biased;
                _ = &mut stopping => break,
                Some(call) = calls.recv() => {
                    self.next_token += 1;
                    let token = self.next_token;
                    if self.replies.len() >= MAX_PENDING {
                        // Drop entries whose caller gave up (connection
                        // closed) or never waited (auto-creation).
                        self.replies.retain(|_, reply| reply.as_ref().is_some_and(|r| !r.is_closed()));
                    }
                    self.replies.insert(token, call.reply);
                    Input::Request { token, request: call.request, from_peer: call.from_peer }
                }
                _ = self.link.shutdown_asked() => Input::ControlledShutdown,
                Some(ev) = events.recv() => match ev {
                    PeerEvent::Response { from, request_id, response } => Input::Response { from, request_id, response },
                    PeerEvent::Failed { to, request_id, .. } => Input::SendFailed { to, request_id },
                },
                _ = env.sleep(wait) => Input::Tick,
            };
            if let Err(e) = self.step(input).await {
                // The quorum state could not be made durable: acting on it
                // could vote twice in one epoch. Stop the node, as Kafka
                // halts on a metadata log failure.
                tracing::error!(error = %format!("{e:#}"), "metadata storage failed; stopping the node");
                self.shell.request_stop();
                break;
            }
            // Ready once leadership has moved away, or at once when no
            // controller is known to move it (every node stopping together,
            // the quorum already gone): waiting could not help.
            if self.link.shutdown_pending() && (self.machine.shutdown_ready() || self.link.controller_id() < 0) {
                // A quorum leader hands its leadership over too, so the next
                // election need not wait for a timeout, and the node may stop.
                tracing::info!(node_id = self.link.node_id, "controlled shutdown: ready to stop");
                if let Err(e) = self.step(Input::Resign).await {
                    tracing::warn!(error = %format!("{e:#}"), "resigning the quorum leadership failed");
                }
                self.link.shutdown_complete();
            }
        }
        self.peers.stop();
        tracing::debug!("cluster driver stopped");
    }

    /// Feed one input and carry out what it returns, strictly in order: an
    /// answer listed before a state write goes out before it, so a machine
    /// that answered too early is caught by a crash in between.
    async fn step(&mut self, input: Input) -> anyhow::Result<()> {
        let env = self.shell.env.clone();
        let machine = &mut self.machine;
        // The machine's own log writes and fsyncs happen inside `handle`.
        let outputs = self
            .shell
            .core(|_node, _disk, clock| (machine.handle(clock.elapsed.as_millis() as i64, input), Vec::new()))
            .await;
        let node_id = self.link.node_id;
        for o in outputs {
            match o {
                Output::PersistQuorumState(s) => {
                    if env.buggify("cluster.slow-quorum-state-write") {
                        // A write that waits behind other disk work: whatever
                        // was performed before it is out while it is not yet
                        // durable, and a crash can fall in between.
                        env.sleep(Duration::from_millis(1 + env.random_u64() % 20)).await;
                    }
                    let (fs, file) = (env.fs(), &self.state_file);
                    io::on_disk(&env, |_disk| file.store(&*fs, &s))
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot persist the quorum state: {e}"))?;
                }
                Output::Publish { image, changes, controller_id } => {
                    let link = &self.link;
                    self.shell
                        .core(|node, disk, clock| {
                            let wake = hosting::apply(node, disk, clock, &image, &changes, &env);
                            link.publish(Some(image.clone()), controller_id.unwrap_or(-1));
                            ((), wake)
                        })
                        .await;
                }
                Output::Send { to, request_id, mut request } => {
                    if let PeerRequest::Fetch(f) = &mut request {
                        if env.buggify("cluster.small-quorum-fetch") {
                            // Ask for one batch only (at least one is always
                            // served), as a leader reading one segment at a
                            // time answers: a fetch may bring part of what the
                            // leader holds.
                            f.max_bytes = 1;
                            for p in f.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                                p.partition_max_bytes = 1;
                            }
                        }
                    }
                    self.peers.send(to, request_id, request)
                }
                Output::Respond { token, response } => {
                    if let Some(Some(reply)) = self.replies.remove(&token) {
                        reply.send(response);
                    }
                }
                Output::Event(e) => {
                    let observed = match e {
                        Event::LeaderChange { epoch, leader } => {
                            tracing::info!(node_id, epoch, ?leader, "quorum leader");
                            self.link.publish(None, leader.unwrap_or(-1));
                            Observation::QuorumLeader { node: node_id, epoch, leader }
                        }
                        Event::Applied { offset, digest } => {
                            Observation::MetadataApplied { node: node_id, offset, digest }
                        }
                        Event::ControllerActivated { epoch, next_offset } => {
                            Observation::ControllerActivated { node: node_id, epoch, next_offset }
                        }
                        Event::VoteGranted { epoch, candidate } => {
                            tracing::debug!(node_id, epoch, candidate, "vote granted");
                            Observation::VoteGranted { node: node_id, epoch, candidate }
                        }
                    };
                    env.observe(&observed);
                }
            }
        }
        Ok(())
    }
}
