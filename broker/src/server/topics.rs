//! The topics this broker hosts: creation, deletion, lookup, and their
//! persistence across restarts.
//!
//! On disk, partition logs live in `<data_dir>/<topic>-<partition>/` as in
//! Kafka, and each topic's metadata in `<data_dir>/topics/<topic>.json`,
//! written atomically. The metadata file is the commit point: a topic exists
//! exactly when its file does. Creation makes the partition directories first
//! and the file last; deletion removes the file first. Partition directories
//! without a topic file are leftovers of an interrupted create or delete and
//! are removed on start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::partition::Partition;
use super::topic_config::apply_overrides;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{BrokerConfig, LogConfig};
use crate::io::{DiskScope, Fs, OpenOptions};
use crate::storage::PartitionLog;

/// Kafka's limit on topic name length.
const MAX_NAME_LEN: usize = 249;
/// A ceiling on partitions per topic, so one request cannot ask the broker to
/// create millions of directories.
pub const MAX_PARTITIONS: i32 = 10_000;
const TOPICS_DIR: &str = "topics";

/// A topic as stored in its metadata file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicMeta {
    name: String,
    topic_id: String,
    partitions: i32,
    replication_factor: i16,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// A hosted topic.
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub replication_factor: i16,
    /// Configs set on the topic itself, by Kafka name.
    pub overrides: BTreeMap<String, String>,
    /// The broker defaults with `overrides` applied.
    pub config: LogConfig,
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index).ok().and_then(|i| self.partitions.get(i))
    }
}

/// A request to create a topic; -1 means "the broker default", as in CreateTopics.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    pub name: String,
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

impl TopicSpec {
    /// A topic with every setting defaulted (auto-creation).
    pub fn defaults(name: &str) -> TopicSpec {
        TopicSpec { name: name.to_string(), num_partitions: -1, replication_factor: -1, configs: BTreeMap::new() }
    }
}

/// A topic operation refused, with the Kafka error and a message for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicError {
    pub code: ResponseError,
    pub message: String,
}

impl TopicError {
    pub(crate) fn new(code: ResponseError, message: impl Into<String>) -> TopicError {
        TopicError { code, message: message.into() }
    }
}

/// A spec checked against the broker's rules, ready to create.
struct Validated {
    partitions: i32,
    config: LogConfig,
}

/// Kafka's topic name rules: 1 to 249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be {name:?}"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("topic name is {} characters; the limit is {MAX_NAME_LEN}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic name {name:?} contains {c:?}; legal characters are [a-zA-Z0-9._-]"));
    }
    Ok(())
}

/// The checks every topic creation makes, on a single node or at the
/// controller: Kafka's name rules, no topic of that name or of a colliding
/// one among `existing`, and 1 to [`MAX_PARTITIONS`] partitions. Returns the
/// partition count and replication factor with -1 resolved to the defaults
/// (`num.partitions`, `default.replication.factor`); the replication factor
/// and the configs are the caller's to check.
pub fn check_new_topic<'a>(
    existing: impl IntoIterator<Item = &'a str>,
    spec: &TopicSpec,
    defaults: &BrokerConfig,
) -> Result<(i32, i16), TopicError> {
    validate_topic_name(&spec.name).map_err(|m| TopicError::new(ResponseError::InvalidTopicException, m))?;
    // Kafka refuses names that differ only in '.' versus '_': they collide in
    // metric names. Existing names never collide with each other, so the
    // first match is the only one.
    let collides = |n: &str| {
        n.len() == spec.name.len()
            && n.bytes()
                .zip(spec.name.bytes())
                .all(|(a, b)| a == b || (matches!(a, b'.' | b'_') && matches!(b, b'.' | b'_')))
    };
    if let Some(other) = existing.into_iter().find(|k| collides(k)) {
        if other == spec.name {
            return Err(TopicError::new(
                ResponseError::TopicAlreadyExists,
                format!("topic {:?} already exists", spec.name),
            ));
        }
        return Err(TopicError::new(
            ResponseError::InvalidTopicException,
            format!("topic {:?} collides with existing topic {other:?} ('.' and '_' are equivalent)", spec.name),
        ));
    }
    let partitions = if spec.num_partitions == -1 { defaults.num_partitions } else { spec.num_partitions };
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(TopicError::new(
            ResponseError::InvalidPartitions,
            format!("number of partitions must be between 1 and {MAX_PARTITIONS}, not {partitions}"),
        ));
    }
    let rf = if spec.replication_factor == -1 { defaults.default_replication_factor } else { spec.replication_factor };
    Ok((partitions, rf))
}

/// The registry of hosted topics.
pub struct Topics {
    fs: Arc<dyn Fs>,
    /// Draws topic ids; seeded by the node so a simulated run replays.
    rng: Mutex<ChaCha8Rng>,
    config: BrokerConfig,
    map: Mutex<BTreeMap<String, Arc<Topic>>>,
}

impl Topics {
    /// Load every topic under the data directory, recovering each partition log.
    pub fn open(fs: Arc<dyn Fs>, config: BrokerConfig, now_ms: i64, seed: u64) -> anyhow::Result<Topics> {
        let rng = Mutex::new(ChaCha8Rng::seed_from_u64(seed));
        let topics = Topics { fs, rng, config, map: Mutex::new(BTreeMap::new()) };
        let data_dir = topics.config.data_dir.clone();
        topics.fs.create_dir_all(&topics.meta_dir())?;
        topics.fs.sync_dir(&data_dir)?;
        let mut map = BTreeMap::new();
        for path in topics.fs.list_dir(&topics.meta_dir())? {
            let file = file_name(&path);
            if file.ends_with(".tmp") {
                tracing::info!(path = %path.display(), "removing a topic file left by an interrupted write");
                topics.fs.remove_file(&path)?;
                continue;
            }
            let topic = topics
                .load_topic(&path, now_ms)
                .map_err(|e| anyhow::anyhow!("cannot load topic from {}: {e:#}", path.display()))?;
            map.insert(topic.name.clone(), Arc::new(topic));
        }
        topics.remove_orphans(&map)?;
        tracing::info!(topics = map.len(), "topics loaded");
        *topics.lock() = map;
        Ok(topics)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.lock().get(name).cloned()
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.lock().values().find(|t| t.id == id).cloned()
    }

    /// Every topic, by name.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        self.lock().values().cloned().collect()
    }

    /// Check `spec` as [`Self::create`] would, without creating anything.
    /// Returns (partitions, replication factor, effective config).
    pub fn validate(&self, spec: &TopicSpec) -> Result<(i32, i16, LogConfig), TopicError> {
        let v = self.check(&self.lock(), spec)?;
        Ok((v.partitions, 1, v.config))
    }

    /// Create a topic and its partition logs, durably.
    pub fn create(&self, _disk: &DiskScope, spec: &TopicSpec, now_ms: i64) -> Result<Arc<Topic>, TopicError> {
        let mut map = self.lock();
        let v = self.check(&map, spec)?;
        let id = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            Uuid::from_u64_pair(rng.random(), rng.random())
        };
        let meta = TopicMeta {
            name: spec.name.clone(),
            topic_id: id.to_string(),
            partitions: v.partitions,
            replication_factor: 1,
            configs: spec.configs.clone(),
        };
        let topic = self.materialize(&meta, v.config, true, now_ms).map_err(|e| {
            tracing::error!(topic = %spec.name, error = %format!("{e:#}"), "topic creation failed");
            self.remove_partition_dirs(&spec.name, v.partitions);
            TopicError::new(ResponseError::KafkaStorageError, format!("cannot create topic: {e}"))
        })?;
        let topic = Arc::new(topic);
        map.insert(topic.name.clone(), topic.clone());
        tracing::info!(topic = %topic.name, partitions = v.partitions, id = %topic.id, "topic created");
        Ok(topic)
    }

    /// In cluster mode: host `name` as the metadata image describes it (its
    /// id, partition count and configs), creating its logs if this broker
    /// does not have them. A local topic of that name with another id is a
    /// deleted-and-recreated topic the broker missed: its data goes first.
    /// Every partition is materialized, led or not; the caller sets each
    /// one's role from the image.
    pub fn ensure(
        &self,
        disk: &DiskScope,
        name: &str,
        id: Uuid,
        partitions: i32,
        configs: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Arc<Topic>, TopicError> {
        if let Some(t) = self.get(name) {
            if t.id == id && t.partitions.len() == partitions as usize {
                return Ok(t);
            }
            tracing::info!(topic = name, local = %t.id, image = %id, "replacing a local topic the image no longer has");
            self.delete(disk, name)?;
        }
        let mut map = self.lock();
        invariant!((1..=MAX_PARTITIONS).contains(&partitions), "the image holds a topic of {partitions} partitions");
        let config =
            apply_overrides(&self.config.log, configs).map_err(|m| TopicError::new(ResponseError::InvalidConfig, m))?;
        let meta = TopicMeta {
            name: name.to_string(),
            topic_id: id.to_string(),
            partitions,
            replication_factor: 1,
            configs: configs.clone(),
        };
        let topic = self.materialize(&meta, config, true, now_ms).map_err(|e| {
            tracing::error!(topic = name, error = %format!("{e:#}"), "hosting a topic from the metadata image failed");
            self.remove_partition_dirs(name, partitions);
            TopicError::new(ResponseError::KafkaStorageError, format!("cannot create topic: {e}"))
        })?;
        let topic = Arc::new(topic);
        map.insert(topic.name.clone(), topic.clone());
        tracing::info!(topic = name, partitions, %id, "topic hosted from the metadata image");
        Ok(topic)
    }

    /// Delete a topic: it stops serving at once; its data is removed.
    pub fn delete(&self, _disk: &DiskScope, name: &str) -> Result<Arc<Topic>, TopicError> {
        let mut map = self.lock();
        let Some(topic) = map.get(name).cloned() else {
            return Err(TopicError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic {name:?} does not exist"),
            ));
        };
        let meta_path = self.meta_path(name);
        let committed = self.fs.remove_file(&meta_path).and_then(|_| self.fs.sync_dir(&self.meta_dir()));
        if let Err(e) = committed {
            tracing::error!(topic = name, error = %e, "topic deletion failed");
            return Err(TopicError::new(ResponseError::KafkaStorageError, format!("cannot delete topic: {e}")));
        }
        map.remove(name);
        for p in &topic.partitions {
            p.mark_deleted();
        }
        self.remove_partition_dirs(name, topic.partitions.len() as i32);
        tracing::info!(topic = name, "topic deleted");
        Ok(topic)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, map: &BTreeMap<String, Arc<Topic>>, spec: &TopicSpec) -> Result<Validated, TopicError> {
        let (partitions, rf) = check_new_topic(map.keys().map(String::as_str), spec, &self.config)?;
        let hosted: usize = map.values().map(|t| t.partitions.len()).sum();
        if hosted + partitions as usize > self.config.max_partitions {
            return Err(TopicError::new(
                ResponseError::PolicyViolation,
                format!(
                    "{partitions} more partitions would exceed this broker's max_partitions ({}, {hosted} hosted)",
                    self.config.max_partitions
                ),
            ));
        }
        if rf != 1 {
            return Err(TopicError::new(
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {rf} is not possible: a single broker holds one replica of each partition (run a cluster, `process_roles`, for more)"),
            ));
        }
        let config = apply_overrides(&self.config.log, &spec.configs)
            .map_err(|m| TopicError::new(ResponseError::InvalidConfig, m))?;
        Ok(Validated { partitions, config })
    }

    /// Open (creating if `fresh`) every partition log of `meta`; when fresh,
    /// write the metadata file last, as the commit point.
    fn materialize(&self, meta: &TopicMeta, config: LogConfig, fresh: bool, now_ms: i64) -> anyhow::Result<Topic> {
        let id = Uuid::parse_str(&meta.topic_id)?;
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for index in 0..meta.partitions {
            let dir = self.partition_dir(&meta.name, index);
            if fresh && self.fs.exists(&dir) {
                self.fs.remove_dir_all(&dir)?;
            }
            self.fs.create_dir_all(&dir)?;
            let (log, report) = PartitionLog::open(self.fs.clone(), dir, config.clone(), self.config.bugs, now_ms)?;
            if report.truncated_bytes > 0 || report.indexes_rebuilt > 0 {
                tracing::warn!(topic = %meta.name, partition = index, ?report, "partition log recovered");
            }
            partitions.push(Arc::new(Partition::new(meta.name.clone(), index, log, self.config.bugs)));
        }
        if fresh {
            self.fs.sync_dir(&self.config.data_dir)?;
            let json = serde_json::to_vec_pretty(meta)?;
            write_atomically(&*self.fs, &self.meta_path(&meta.name), &json)?;
        }
        Ok(Topic {
            name: meta.name.clone(),
            id,
            replication_factor: meta.replication_factor,
            overrides: meta.configs.clone(),
            config,
            partitions,
        })
    }

    fn load_topic(&self, path: &Path, now_ms: i64) -> anyhow::Result<Topic> {
        let file = self.fs.open(path, OpenOptions::EXISTING)?;
        let mut buf = vec![0u8; file.len()? as usize];
        file.read_exact_at(&mut buf, 0)?;
        let meta: TopicMeta = serde_json::from_slice(&buf)?;
        validate_topic_name(&meta.name).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            file_name(path) == format!("{}.json", meta.name),
            "file name does not match topic {:?}",
            meta.name
        );
        anyhow::ensure!((1..=MAX_PARTITIONS).contains(&meta.partitions), "bad partition count {}", meta.partitions);
        let config = apply_overrides(&self.config.log, &meta.configs).map_err(anyhow::Error::msg)?;
        self.materialize(&meta, config, false, now_ms)
    }

    fn remove_orphans(&self, topics: &BTreeMap<String, Arc<Topic>>) -> anyhow::Result<()> {
        let mut removed = false;
        for path in self.fs.list_dir(&self.config.data_dir)? {
            if !self.fs.is_dir(&path) || path == self.meta_dir() {
                continue;
            }
            let name = file_name(&path);
            // The metadata log is named like a partition directory but
            // belongs to the quorum, not to any topic.
            if name == crate::cluster::driver::METADATA_LOG_DIR {
                continue;
            }
            let Some((topic, index)) = parse_partition_dir(&name) else {
                tracing::warn!(path = %path.display(), "ignoring an unrecognised directory in the data directory");
                continue;
            };
            let hosted = topics.get(topic).is_some_and(|t| t.partition(index).is_some());
            if !hosted {
                tracing::warn!(path = %path.display(), "removing a partition directory that belongs to no topic");
                self.fs.remove_dir_all(&path)?;
                removed = true;
            }
        }
        if removed {
            self.fs.sync_dir(&self.config.data_dir)?;
        }
        Ok(())
    }

    fn remove_partition_dirs(&self, name: &str, partitions: i32) {
        for index in 0..partitions {
            let dir = self.partition_dir(name, index);
            if self.fs.exists(&dir) {
                if let Err(e) = self.fs.remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove partition directory; it is removed on restart");
                }
            }
        }
        if let Err(e) = self.fs.sync_dir(&self.config.data_dir) {
            tracing::warn!(error = %e, "cannot sync the data directory");
        }
    }

    fn meta_dir(&self) -> PathBuf {
        self.config.data_dir.join(TOPICS_DIR)
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.meta_dir().join(format!("{name}.json"))
    }

    fn partition_dir(&self, name: &str, index: i32) -> PathBuf {
        self.config.data_dir.join(format!("{name}-{index}"))
    }
}

pub use crate::io::write_atomically;

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Split `<topic>-<partition>` as Kafka names partition directories.
fn parse_partition_dir(name: &str) -> Option<(&str, i32)> {
    let (topic, index) = name.rsplit_once('-')?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    validate_topic_name(topic).ok()?;
    Some((topic, index.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka() {
        for ok in ["a", "orders", "a.b_c-d", "A9", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "ü", &"x".repeat(250), "a\0"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partition_dirs_parse() {
        assert_eq!(parse_partition_dir("orders-0"), Some(("orders", 0)));
        assert_eq!(parse_partition_dir("my-topic-12"), Some(("my-topic", 12)));
        assert_eq!(parse_partition_dir("topics"), None);
        assert_eq!(parse_partition_dir("x-"), None);
        assert_eq!(parse_partition_dir("-3"), None);
        assert_eq!(parse_partition_dir("x-99999999999"), None);
    }
}
