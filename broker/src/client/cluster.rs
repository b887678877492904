//! What a client knows about the cluster: the bootstrap list, one connection
//! per broker, and the metadata cache (brokers, topics, partition leaders).
//!
//! The cache is refreshed on demand: callers invalidate a topic when a broker
//! says NOT_LEADER_OR_FOLLOWER / UNKNOWN_TOPIC_OR_PARTITION or a connection
//! fails, and the next lookup fetches fresh Metadata.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};

use super::connection::Connection;
use super::{ClientError, TopicPartition};
use crate::io::Env;

/// Settings every client shares.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: Vec<String>,
    /// `client.id`.
    pub client_id: String,
    /// `request.timeout.ms`.
    pub request_timeout: Duration,
}

/// One partition as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: i32,
    /// Error code for this partition (0 if none).
    pub error_code: i16,
    /// Leader broker id, or -1 if there is none.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
}

/// One topic as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    /// Error code for this topic (0 if none).
    pub error_code: i16,
    pub is_internal: bool,
    pub partitions: BTreeMap<i32, PartitionMetadata>,
}

impl TopicMetadata {
    pub fn num_partitions(&self) -> i32 {
        self.partitions.len() as i32
    }

    /// Partitions with a known leader, in order.
    pub fn available_partitions(&self) -> Vec<i32> {
        self.partitions.values().filter(|p| p.leader >= 0).map(|p| p.partition).collect()
    }
}

#[derive(Default)]
struct State {
    connections: BTreeMap<String, Arc<Connection>>,
    brokers: BTreeMap<i32, String>,
    controller_id: i32,
    topics: BTreeMap<String, TopicMetadata>,
    /// The highest leader epoch seen per partition (by topic id, so a
    /// recreated topic starts afresh), kept across invalidations (KIP-320).
    last_seen_epochs: BTreeMap<(uuid::Uuid, i32), i32>,
    /// Where the next "any broker" search starts, so that a dead broker does
    /// not stay first in line forever.
    rotation: usize,
}

/// Connections and metadata, shared by the parts of one client.
pub struct Cluster {
    env: Env,
    config: ClusterConfig,
    state: Mutex<State>,
}

impl Cluster {
    pub fn new(env: Env, config: ClusterConfig) -> Result<Arc<Cluster>, ClientError> {
        if config.bootstrap_servers.is_empty() {
            return Err(ClientError::InvalidArgument("bootstrap.servers is empty".into()));
        }
        if config.request_timeout.is_zero() {
            return Err(ClientError::InvalidArgument("request.timeout.ms must be positive".into()));
        }
        Ok(Arc::new(Cluster { env, config, state: Mutex::new(State { controller_id: -1, ..State::default() }) }))
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("cluster state lock")
    }

    /// The open connection to `addr`, or a new one.
    pub async fn connection(&self, addr: &str) -> Result<Arc<Connection>, ClientError> {
        if let Some(c) = self.state().connections.get(addr) {
            if c.is_usable() {
                return Ok(c.clone());
            }
        }
        let conn = Connection::connect(&self.env, addr, &self.config.client_id, self.config.request_timeout).await?;
        let mut st = self.state();
        // Another task may have connected meanwhile; keep the first usable one.
        match st.connections.get(addr) {
            Some(c) if c.is_usable() => Ok(c.clone()),
            _ => {
                st.connections.insert(addr.to_string(), conn.clone());
                Ok(conn)
            }
        }
    }

    /// The connection to broker `node_id`, which metadata must know.
    pub async fn connection_to_node(&self, node_id: i32) -> Result<Arc<Connection>, ClientError> {
        let addr = self.state().brokers.get(&node_id).cloned();
        match addr {
            Some(addr) => self.connection(&addr).await,
            None => Err(ClientError::NoBroker(format!("broker {node_id} is not in metadata"))),
        }
    }

    /// A connection to any broker: known brokers first, then the bootstrap list.
    pub async fn any_connection(&self) -> Result<Arc<Connection>, ClientError> {
        let candidates = {
            let mut st = self.state();
            let mut c: Vec<String> = st.brokers.values().cloned().collect();
            for b in &self.config.bootstrap_servers {
                if !c.contains(b) {
                    c.push(b.clone());
                }
            }
            let start = st.rotation % c.len();
            c.rotate_left(start);
            st.rotation = st.rotation.wrapping_add(1);
            c
        };
        let mut last = None;
        for addr in &candidates {
            match self.connection(addr).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(ClientError::NoBroker(match last {
            Some(e) => format!("no broker reachable: {e}"),
            None => "no brokers known".into(),
        }))
    }

    /// Send a request built for the negotiated version to `conn`.
    pub async fn send<R: Request>(
        &self,
        conn: &Connection,
        build: impl FnOnce(i16) -> R,
    ) -> Result<R::Response, ClientError> {
        let version = conn.version::<R>()?;
        conn.request(&build(version), version, self.config.request_timeout).await
    }

    /// Send a request to any broker.
    pub async fn send_any<R: Request>(&self, build: impl FnOnce(i16) -> R) -> Result<R::Response, ClientError> {
        let conn = self.any_connection().await?;
        self.send(&conn, build).await
    }

    /// Send a request to the controller (any broker if none is known).
    pub async fn send_controller<R: Request>(&self, build: impl FnOnce(i16) -> R) -> Result<R::Response, ClientError> {
        let controller = self.state().controller_id;
        let conn = if controller >= 0 {
            match self.connection_to_node(controller).await {
                Ok(c) => c,
                Err(_) => self.any_connection().await?,
            }
        } else {
            self.any_connection().await?
        };
        self.send(&conn, build).await
    }

    /// Fetch Metadata for `topics` (`None`: all topics) and update the cache.
    /// Returns what the broker said about each topic, errors included.
    pub async fn refresh(
        &self,
        topics: Option<&[String]>,
        allow_auto_create: bool,
    ) -> Result<BTreeMap<String, TopicMetadata>, ClientError> {
        let resp = self
            .send_any(|version| {
                let mut req = MetadataRequest::default().with_topics(topics.map(|ts| {
                    ts.iter()
                        .map(|t| {
                            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                        })
                        .collect()
                }));
                // The flag exists from v4 on; older versions always auto-create.
                if version >= 4 {
                    req.allow_auto_topic_creation = allow_auto_create;
                }
                req
            })
            .await?;
        let mut out = BTreeMap::new();
        let mut st = self.state();
        st.brokers = resp.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port))).collect();
        st.controller_id = resp.controller_id.0;
        for t in resp.topics {
            let Some(name) = t.name.map(|n| n.0.to_string()) else { continue };
            let mut partitions = BTreeMap::new();
            for p in &t.partitions {
                let mut pm = PartitionMetadata {
                    partition: p.partition_index,
                    error_code: p.error_code,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                };
                // KIP-320: a broker that has not caught up with the
                // cluster's metadata may name a deposed leader. Metadata
                // older than an epoch already seen is not taken: the cached
                // leader stays, or the leader is unknown at the epoch seen,
                // so a fetch carries that epoch and a stale leader refuses it.
                let key = (t.topic_id, p.partition_index);
                let seen = if t.topic_id.is_nil() { -1 } else { st.last_seen_epochs.get(&key).copied().unwrap_or(-1) };
                if p.leader_epoch >= 0 && p.leader_epoch < seen {
                    tracing::debug!(topic = %name, partition = p.partition_index, epoch = p.leader_epoch, seen, "stale partition metadata ignored");
                    let cached = st.topics.get(&name).and_then(|c| c.partitions.get(&p.partition_index));
                    pm = match cached.filter(|c| c.leader_epoch >= seen) {
                        Some(c) => c.clone(),
                        None => PartitionMetadata { leader: -1, leader_epoch: seen, ..pm },
                    };
                } else if !t.topic_id.is_nil() && p.leader_epoch > seen {
                    st.last_seen_epochs.insert(key, p.leader_epoch);
                }
                partitions.insert(p.partition_index, pm);
            }
            let meta =
                TopicMetadata { name: name.clone(), error_code: t.error_code, is_internal: t.is_internal, partitions };
            if meta.error_code == 0 && !meta.partitions.is_empty() {
                st.topics.insert(name.clone(), meta.clone());
            } else {
                st.topics.remove(&name);
            }
            out.insert(name, meta);
        }
        Ok(out)
    }

    /// Cached metadata for `topic`, if any.
    pub fn cached_topic(&self, topic: &str) -> Option<TopicMetadata> {
        self.state().topics.get(topic).cloned()
    }

    /// Metadata for `topic`, fetching it if not cached. A topic the broker
    /// does not know is an error carrying the broker's code.
    pub async fn topic(&self, topic: &str, allow_auto_create: bool) -> Result<TopicMetadata, ClientError> {
        if let Some(t) = self.cached_topic(topic) {
            return Ok(t);
        }
        let mut got = self.refresh(Some(&[topic.to_string()]), allow_auto_create).await?;
        match got.remove(topic) {
            Some(t) if t.error_code != 0 => {
                Err(ClientError::broker(format!("metadata for topic {topic}"), t.error_code, None))
            }
            Some(t) if t.partitions.is_empty() => Err(ClientError::broker(
                format!("metadata for topic {topic}"),
                ResponseError::LeaderNotAvailable.code(),
                None,
            )),
            Some(t) => Ok(t),
            None => Err(ClientError::Protocol(format!("metadata response does not mention topic {topic}"))),
        }
    }

    /// The leader of `tp` by cached metadata (-1 or absent: unknown).
    pub fn cached_leader(&self, tp: &TopicPartition) -> Option<i32> {
        let st = self.state();
        st.topics.get(&tp.topic)?.partitions.get(&tp.partition).map(|p| p.leader).filter(|l| *l >= 0)
    }

    /// The leader epoch of `tp` by cached metadata, or -1 (unknown: the
    /// broker then does not check it).
    pub fn cached_leader_epoch(&self, tp: &TopicPartition) -> i32 {
        let st = self.state();
        st.topics.get(&tp.topic).and_then(|t| t.partitions.get(&tp.partition)).map_or(-1, |p| p.leader_epoch)
    }

    /// The leader of `tp`, refreshing metadata if it is not known.
    pub async fn leader(&self, tp: &TopicPartition, allow_auto_create: bool) -> Result<i32, ClientError> {
        if let Some(l) = self.cached_leader(tp) {
            return Ok(l);
        }
        self.invalidate(&tp.topic);
        let meta = self.topic(&tp.topic, allow_auto_create).await?;
        match meta.partitions.get(&tp.partition) {
            None => {
                Err(ClientError::broker(format!("partition {tp}"), ResponseError::UnknownTopicOrPartition.code(), None))
            }
            Some(p) if p.leader < 0 => {
                Err(ClientError::broker(format!("partition {tp}"), ResponseError::LeaderNotAvailable.code(), None))
            }
            Some(p) => Ok(p.leader),
        }
    }

    /// Forget `topic`'s metadata so the next lookup fetches it again.
    pub fn invalidate(&self, topic: &str) {
        self.state().topics.remove(topic);
    }
}
