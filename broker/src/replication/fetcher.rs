//! The follower's side of replication (Kafka's `ReplicaFetcherThread`): one
//! task per broker that, for every leader it follows partitions of, keeps
//! one replica Fetch outstanding — all those partitions in one request, each
//! at its log end with the epoch of its last batch — and applies the answer:
//! copied batches appended verbatim (fsynced first under the strict
//! policy), the leader's high watermark taken, a diverging epoch answered by
//! truncating (KIP-320; never to the follower's own high watermark, which is
//! the pre-KIP-101 data-loss bug).
//!
//! Which partitions it follows, and from whom, is read from the hosted
//! partitions' roles, which the metadata image sets ([`crate::cluster::hosting`]);
//! it looks again whenever an image is published or an answer arrives.
//! Requests go through their own [`Peers`] (one connection per leader), so a
//! leader's long poll never holds up the metadata quorum's traffic.
//!
//! Also here: how a leader asks the controller for an ISR change
//! ([`ask_isr_change`]), fire-and-forget: the change takes effect when the
//! metadata image shows it, and is asked again if it never does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_request::{BrokerState, PartitionData as AlterPartitionData, TopicData};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{AlterPartitionRequest, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::PendingIsr;
use crate::cluster::peers::{PeerEvent, PeerRequest, PeerResponse, Peers, Timeouts};
use crate::cluster::ClusterLink;
use crate::io::{self, DiskScope};
use crate::record_batch::ValidatedBatches;
use crate::server::node::{Clock, Node, Wake};
use crate::server::partition::{FollowerPosition, Partition};
use crate::server::shell::Shell;

/// Client id of replica fetches (the leader tells them from consumers by
/// the request's replica id, not by this).
const CLIENT_ID_PREFIX: &str = "faultline-replica-";
/// How often the task looks for new partitions to follow when nothing else
/// wakes it (images are also announced, this is the backstop).
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Ask the controller (through the driver) to change `p`'s ISR, as its
/// leader. Nobody waits for the answer: the metadata image carries it.
pub fn ask_isr_change(link: &ClusterLink, topic_id: Uuid, p: &Arc<Partition>, change: PendingIsr) {
    let me = link.node_id;
    let broker_epoch = link.image().broker(me).map_or(-1, |b| b.epoch);
    let mut part = AlterPartitionData::default();
    part.partition_index = p.index;
    part.leader_epoch = p.leader_epoch();
    part.partition_epoch = change.partition_epoch;
    // Peers speak AlterPartition v3, which carries the ISR with epochs only.
    part.new_isr_with_epochs = change
        .isr
        .iter()
        .map(|r| {
            let mut b = BrokerState::default();
            b.broker_id = BrokerId(*r);
            b.broker_epoch = -1;
            b
        })
        .collect();
    let mut topic = TopicData::default();
    topic.topic_id = topic_id;
    topic.partitions.push(part);
    let mut req = AlterPartitionRequest::default();
    req.broker_id = BrokerId(me);
    req.broker_epoch = broker_epoch;
    req.topics.push(topic);
    tracing::info!(topic = %p.topic, partition = p.index, isr = ?change.isr, "asking the controller for an ISR change");
    let p = p.clone();
    link.submit_then(PeerRequest::AlterPartition(req), move |answer| {
        let PeerResponse::AlterPartition(r) = answer else { return };
        let code = r.topics.first().and_then(|t| t.partitions.first()).map_or(r.error_code, |p| p.error_code);
        // Only these say both that the change was not applied and that the
        // partition epoch it was based on is current; after any other
        // error the controller may have applied it (a retry of a change
        // already committed is refused as stale), so it stays in flight
        // until the image shows the outcome.
        if code == ResponseError::IneligibleReplica.code() || code == ResponseError::OperationNotAttempted.code() {
            tracing::info!(topic = %p.topic, partition = p.index, isr = ?change.isr, code, "ISR change refused");
            p.isr_change_refused(&change);
        }
    });
}

/// Start the node's replica fetcher task.
pub(crate) fn start(shell: Arc<Shell>, link: Arc<ClusterLink>) {
    let env = shell.env.clone();
    let node_id = link.node_id;
    let (events_tx, events) = mpsc::unbounded_channel();
    // A replica fetch may go unanswered for `replica.socket.timeout.ms`
    // beyond its `max_wait_ms` (the peers' Fetch timeout adds the wait).
    let timeout = Duration::from_millis(shell.node.config.replica_socket_timeout_ms.max(1));
    let timeouts = Timeouts { quorum: timeout, request: timeout };
    let peers = Peers::new(env.clone(), format!("{CLIENT_ID_PREFIX}{node_id}"), timeouts, events_tx);
    let task = Fetcher { shell, link, peers, in_flight: BTreeMap::new(), backoff_until: BTreeMap::new(), next_id: 0 };
    io::spawn(&env, "replica-fetcher", task.run(events));
}

struct Fetcher {
    shell: Arc<Shell>,
    link: Arc<ClusterLink>,
    peers: Peers,
    /// Per leader: the request id of the fetch outstanding to it.
    in_flight: BTreeMap<i32, u64>,
    /// Per leader: no fetch before this (monotonic) time, after a failure.
    backoff_until: BTreeMap<i32, Duration>,
    next_id: u64,
}

impl Fetcher {
    async fn run(mut self, mut events: mpsc::UnboundedReceiver<PeerEvent>) {
        let env = self.shell.env.clone();
        let stopping = self.shell.stopping();
        tokio::pin!(stopping);
        loop {
            self.send_fetches().await;
            let event = tokio::select! {
                biased;
                _ = &mut stopping => break,
                ev = events.recv() => ev,
                _ = self.link.changed() => None,
                _ = env.sleep(IDLE_POLL) => None,
            };
            match event {
                Some(PeerEvent::Response { from, request_id, response: PeerResponse::Fetch(resp) }) => {
                    if self.in_flight.get(&from) == Some(&request_id) {
                        self.in_flight.remove(&from);
                        self.apply(from, resp).await;
                    }
                }
                Some(PeerEvent::Response { from, request_id, .. })
                | Some(PeerEvent::Failed { to: from, request_id, .. }) => {
                    if self.in_flight.get(&from) == Some(&request_id) {
                        self.in_flight.remove(&from);
                        self.back_off(from);
                    }
                }
                None => {}
            }
        }
        self.peers.stop();
    }

    fn back_off(&mut self, leader: i32) {
        let env = &self.shell.env;
        let backoff = Duration::from_millis(self.shell.node.config.replica_fetch_backoff_ms);
        self.backoff_until.insert(leader, env.elapsed() + backoff);
    }

    /// Send a fetch to every leader that has none outstanding.
    async fn send_fetches(&mut self) {
        let positions = self.shell.core(|node, _disk, _clock| (followed(node), Vec::new())).await;
        let image = self.link.image();
        let now = self.shell.env.elapsed();
        let config = &self.shell.node.config;
        for (leader, parts) in positions {
            if self.in_flight.contains_key(&leader) || self.backoff_until.get(&leader).is_some_and(|t| now < *t) {
                continue;
            }
            let Some(endpoint) = image.broker(leader).and_then(|b| b.listeners.first()) else { continue };
            self.peers.set_address(leader, format!("{}:{}", endpoint.host, endpoint.port));
            let mut req = FetchRequest::default();
            req.replica_id = BrokerId(self.link.node_id);
            req.max_wait_ms = config.replica_fetch_wait_max_ms as i32;
            req.min_bytes = 1;
            req.max_bytes = config.fetch_max_bytes.min(i32::MAX as usize) as i32;
            req.session_epoch = -1;
            let mut topics: BTreeMap<String, FetchTopic> = BTreeMap::new();
            for (topic, index, pos) in parts {
                let ft = topics.entry(topic.clone()).or_insert_with(|| {
                    let mut t = FetchTopic::default();
                    t.topic = TopicName(StrBytes::from_string(topic));
                    t
                });
                let mut fp = FetchPartition::default();
                fp.partition = index;
                fp.current_leader_epoch = pos.leader_epoch;
                fp.fetch_offset = pos.fetch_offset;
                fp.last_fetched_epoch = pos.last_fetched_epoch;
                fp.log_start_offset = pos.log_start_offset;
                fp.partition_max_bytes = config.replica_fetch_max_bytes.min(i32::MAX as usize) as i32;
                ft.partitions.push(fp);
            }
            req.topics = topics.into_values().collect();
            self.next_id += 1;
            self.in_flight.insert(leader, self.next_id);
            self.peers.send(leader, self.next_id, PeerRequest::Fetch(req));
        }
    }

    /// Apply a leader's answer to every partition in it.
    async fn apply(&mut self, leader: i32, resp: FetchResponse) {
        let failed = self.shell.core(|node, disk, clock| apply_response(node, disk, clock, leader, &resp)).await;
        if failed || resp.error_code != 0 {
            self.back_off(leader);
        }
    }
}

/// Every partition this node follows a known leader of, grouped by leader.
fn followed(node: &Node) -> BTreeMap<i32, Vec<(String, i32, FollowerPosition)>> {
    let mut out: BTreeMap<i32, Vec<_>> = BTreeMap::new();
    for topic in node.topics.all() {
        for p in &topic.partitions {
            if let Some(pos) = p.follower_position() {
                out.entry(pos.leader_id).or_default().push((topic.name.clone(), p.index, pos));
            }
        }
    }
    out
}

/// Apply one leader's fetch answer. Returns whether a partition failed in a
/// way worth backing off for (the leader moved, or a storage error here).
fn apply_response(node: &Node, disk: &DiskScope, clock: Clock, leader: i32, resp: &FetchResponse) -> (bool, Vec<Wake>) {
    let mut wake = Vec::new();
    let mut failed = false;
    for tr in &resp.responses {
        let Some(topic) = node.topics.get(&tr.topic) else { continue };
        for pd in &tr.partitions {
            let Some(p) = topic.partition(pd.partition_index) else { continue };
            // The role may have changed while the fetch was out.
            if p.follower_position().is_none_or(|pos| pos.leader_id != leader) {
                continue;
            }
            match apply_partition(p, disk, clock, pd) {
                Ok(moved) => {
                    if moved {
                        wake.push(Wake::HighWatermark(p.clone()));
                    }
                }
                Err(why) => {
                    failed = true;
                    tracing::debug!(topic = %p.topic, partition = p.index, leader, %why, "replica fetch refused");
                }
            }
        }
    }
    (failed, wake)
}

fn apply_partition(
    p: &Arc<Partition>,
    disk: &DiskScope,
    clock: Clock,
    pd: &kafka_protocol::messages::fetch_response::PartitionData,
) -> Result<bool, String> {
    if pd.error_code != 0 {
        let e = ResponseError::try_from_code(pd.error_code);
        return Err(e.map_or(format!("error {}", pd.error_code), |e| format!("{e:?}")));
    }
    if pd.diverging_epoch.epoch >= 0 || pd.diverging_epoch.end_offset >= 0 {
        let (epoch, end) = (pd.diverging_epoch.epoch, pd.diverging_epoch.end_offset);
        let to = p.truncate_diverging(disk, epoch, end).map_err(|e| e.to_string())?;
        tracing::info!(topic = %p.topic, partition = p.index, epoch, end, to, "truncated a diverging log suffix");
        return Ok(true);
    }
    let records = pd.records.clone().unwrap_or_default();
    if !records.is_empty() {
        let batches = ValidatedBatches::new(records).map_err(|e| format!("bad batches: {e}"))?;
        if !batches.batches().is_empty() {
            p.append_replicated(disk, &batches, clock.now_ms).map_err(|e| e.to_string())?;
        }
    }
    p.follow_high_watermark(pd.high_watermark).map_err(|e| e.to_string())
}
