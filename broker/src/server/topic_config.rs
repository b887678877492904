//! Topic-level configs by their Kafka names: applying a topic's overrides to
//! the broker's log defaults, and listing a topic's effective config.

use std::collections::BTreeMap;

use crate::config::{LogConfig, MIN_SEGMENT_BYTES};

/// Kafka's `ConfigType` codes as DescribeConfigs reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
}

/// One config of a topic as it is in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: &'static str,
    pub value: String,
    pub config_type: ConfigType,
    /// Set on the topic itself rather than inherited from the broker.
    pub is_override: bool,
}

/// The topic configs this broker understands, in the order they are listed.
pub const TOPIC_CONFIG_NAMES: &[&str] = &[
    "durability.policy",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "max.message.bytes",
    "message.timestamp.type",
    "min.insync.replicas",
    "segment.bytes",
    "segment.ms",
    "unclean.leader.election.enable",
];

/// The effective log config of a topic: `base` with `overrides` applied. The
/// error names the offending config, for an INVALID_CONFIG response.
pub fn apply_overrides(base: &LogConfig, overrides: &BTreeMap<String, String>) -> Result<LogConfig, String> {
    let mut c = base.clone();
    for (name, value) in overrides {
        match name.as_str() {
            "durability.policy" => {
                c.durability_policy = crate::replication::DurabilityPolicy::parse(value)
                    .ok_or_else(|| format!("{name} must be strict or kafka, not {value:?}"))?
            }
            "flush.messages" => c.flush_messages = positive(name, value)?,
            "flush.ms" => c.flush_ms = positive(name, value)?,
            "index.interval.bytes" => c.index_interval_bytes = positive(name, value)?,
            "max.message.bytes" => c.max_message_bytes = positive(name, value)?,
            "message.timestamp.type" => match value.as_str() {
                "CreateTime" | "LogAppendTime" => c.message_timestamp_type = value.clone(),
                _ => return Err(format!("{name} must be CreateTime or LogAppendTime, not {value:?}")),
            },
            "min.insync.replicas" => c.min_insync_replicas = positive(name, value)?,
            "segment.bytes" => {
                c.segment_bytes = positive(name, value)?;
                if c.segment_bytes < MIN_SEGMENT_BYTES {
                    return Err(format!("{name} must be at least {MIN_SEGMENT_BYTES} (1 MiB), not {value:?}"));
                }
            }
            "segment.ms" => c.segment_ms = positive(name, value)?,
            "unclean.leader.election.enable" => c.unclean_leader_election_enable = boolean(name, value)?,
            _ => {
                return Err(format!("unknown topic config {name:?}; supported: {}", TOPIC_CONFIG_NAMES.join(", ")));
            }
        }
    }
    Ok(c)
}

/// Every config of a topic whose effective config is `effective`.
pub fn describe(effective: &LogConfig, overrides: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
    let entry = |name: &'static str, value: String, config_type| ConfigEntry {
        name,
        value,
        config_type,
        is_override: overrides.contains_key(name),
    };
    let out = vec![
        entry("durability.policy", effective.durability_policy.name().to_string(), ConfigType::String),
        entry("flush.messages", effective.flush_messages.to_string(), ConfigType::Long),
        entry("flush.ms", effective.flush_ms.to_string(), ConfigType::Long),
        entry("index.interval.bytes", effective.index_interval_bytes.to_string(), ConfigType::Int),
        entry("max.message.bytes", effective.max_message_bytes.to_string(), ConfigType::Int),
        entry("message.timestamp.type", effective.message_timestamp_type.clone(), ConfigType::String),
        entry("min.insync.replicas", effective.min_insync_replicas.to_string(), ConfigType::Int),
        entry("segment.bytes", effective.segment_bytes.to_string(), ConfigType::Int),
        entry("segment.ms", effective.segment_ms.to_string(), ConfigType::Long),
        entry(
            "unclean.leader.election.enable",
            effective.unclean_leader_election_enable.to_string(),
            ConfigType::Boolean,
        ),
    ];
    assert!(out.iter().map(|e| e.name).eq(TOPIC_CONFIG_NAMES.iter().copied()));
    out
}

/// Kafka's `ConfigSource` codes.
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// Where a value comes from: the topic, the broker's configuration, or Kafka's default.
pub fn config_source(e: &ConfigEntry) -> i8 {
    if e.is_override {
        return SOURCE_DYNAMIC_TOPIC;
    }
    let kafka_default = describe(&LogConfig::default(), &BTreeMap::new());
    let same = kafka_default.iter().any(|d| d.name == e.name && d.value == e.value);
    if same {
        SOURCE_DEFAULT
    } else {
        SOURCE_STATIC_BROKER
    }
}

/// A created topic's configs as CreateTopics reports them.
pub fn creatable_configs(
    effective: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<kafka_protocol::messages::create_topics_response::CreatableTopicConfigs> {
    describe(effective, overrides)
        .into_iter()
        .map(|e| {
            let mut c = kafka_protocol::messages::create_topics_response::CreatableTopicConfigs::default();
            c.config_source = config_source(&e);
            c.name = kafka_protocol::protocol::StrBytes::from_static_str(e.name);
            c.value = Some(kafka_protocol::protocol::StrBytes::from_string(e.value));
            c
        })
        .collect()
}

/// Kafka's boolean parsing: "true" or "false", any case.
fn boolean(name: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{name} must be true or false, not {value:?}")),
    }
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(name: &str, value: &str) -> Result<T, String> {
    match value.trim().parse::<T>() {
        Ok(v) if v > T::default() => Ok(v),
        _ => Err(format!("{name} must be a positive integer, not {value:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn overrides_apply_and_show_as_overrides() {
        let o = map(&[("segment.bytes", "1048576"), ("message.timestamp.type", "LogAppendTime")]);
        let c = apply_overrides(&LogConfig::default(), &o).unwrap();
        assert_eq!(c.segment_bytes, 1 << 20);
        assert_eq!(c.message_timestamp_type, "LogAppendTime");
        let d = describe(&c, &o);
        let seg = d.iter().find(|e| e.name == "segment.bytes").unwrap();
        assert!(seg.is_override && seg.value == "1048576");
        assert!(!d.iter().find(|e| e.name == "flush.ms").unwrap().is_override);
    }

    #[test]
    fn unclean_leader_election_is_a_topic_boolean() {
        let d = describe(&LogConfig::default(), &BTreeMap::new());
        let e = d.iter().find(|e| e.name == "unclean.leader.election.enable").unwrap();
        assert_eq!((e.value.as_str(), e.config_type, config_source(e)), ("false", ConfigType::Boolean, SOURCE_DEFAULT));
        let o = map(&[("unclean.leader.election.enable", "TRUE")]);
        let c = apply_overrides(&LogConfig::default(), &o).unwrap();
        assert!(c.unclean_leader_election_enable);
        assert!(describe(&c, &o).iter().any(|e| e.name == "unclean.leader.election.enable" && e.is_override));
    }

    #[test]
    fn bad_configs_are_named() {
        for (k, v) in [
            ("segment.bytes", "-1"),
            ("segment.bytes", "x"),
            ("segment.bytes", "1048575"),
            ("segment.bytes", "100"),
            ("internal.segment.bytes", "100"),
            ("flush.ms", "0"),
            ("message.timestamp.type", "Now"),
            ("retention.ms", "1"),
            ("unclean.leader.election.enable", "yes"),
        ] {
            let err = apply_overrides(&LogConfig::default(), &map(&[(k, v)])).unwrap_err();
            assert!(err.contains(k), "{err}");
        }
    }
}
