//! Partition assignors a consumer group's leader runs, as Kafka's Java
//! client has them (`range`, `roundrobin`, `cooperative-sticky`), and the
//! consumer protocol's subscription and assignment encodings
//! (`ConsumerProtocolSubscription` / `ConsumerProtocolAssignment`, each
//! prefixed with its version). Pure functions: members and partition counts
//! in, an assignment out.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{consumer_protocol_assignment, consumer_protocol_subscription};
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{ClientError, TopicPartition};

/// `partition.assignment.strategy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    Range,
    RoundRobin,
    /// Sticky, and cooperative (KIP-429): a partition moving to another
    /// member is first only revoked, and assigned in the rebalance that follows.
    CooperativeSticky,
}

impl Assignor {
    /// The protocol name in JoinGroup.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    pub fn from_name(name: &str) -> Result<Assignor, ClientError> {
        match name {
            "range" => Ok(Assignor::Range),
            "roundrobin" => Ok(Assignor::RoundRobin),
            "cooperative-sticky" => Ok(Assignor::CooperativeSticky),
            other => Err(ClientError::InvalidArgument(format!(
                "partition.assignment.strategy {other:?} is not range, roundrobin or cooperative-sticky"
            ))),
        }
    }

    pub fn is_cooperative(self) -> bool {
        self == Assignor::CooperativeSticky
    }
}

/// One member as the leader sees it in JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSubscription {
    pub member_id: String,
    pub topics: Vec<String>,
    /// What the member holds now (cooperative protocol).
    pub owned: Vec<TopicPartition>,
}

const SUBSCRIPTION_VERSION: i16 = 1;
const ASSIGNMENT_VERSION: i16 = 1;

/// A JoinGroup protocol's metadata: the topics and the partitions owned.
pub fn encode_subscription(topics: &[String], owned: &[TopicPartition]) -> Bytes {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in owned {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let sub = ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| StrBytes::from_string(t.clone())).collect())
        .with_owned_partitions(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    consumer_protocol_subscription::TopicPartition::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let mut buf = BytesMut::new();
    buf.put_i16(SUBSCRIPTION_VERSION);
    sub.encode(&mut buf, SUBSCRIPTION_VERSION).expect("a subscription encodes");
    buf.freeze()
}

/// Read a member's subscription; newer versions are read as the newest we know.
pub fn decode_subscription(member_id: &str, mut metadata: Bytes) -> Result<MemberSubscription, ClientError> {
    let bad = |e: String| ClientError::Protocol(format!("member {member_id}'s subscription: {e}"));
    if metadata.remaining() < 2 {
        return Err(bad("too short".into()));
    }
    let version = metadata.get_i16().clamp(0, 3);
    let sub = ConsumerProtocolSubscription::decode(&mut metadata, version).map_err(|e| bad(e.to_string()))?;
    let owned = sub
        .owned_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| TopicPartition::new(t.topic.0.to_string(), *p)))
        .collect();
    Ok(MemberSubscription {
        member_id: member_id.to_string(),
        topics: sub.topics.iter().map(|t| t.to_string()).collect(),
        owned,
    })
}

pub fn encode_assignment(partitions: &[TopicPartition]) -> Bytes {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        by_topic
            .into_iter()
            .map(|(t, ps)| {
                consumer_protocol_assignment::TopicPartition::default()
                    .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                    .with_partitions(ps)
            })
            .collect(),
    );
    let mut buf = BytesMut::new();
    buf.put_i16(ASSIGNMENT_VERSION);
    a.encode(&mut buf, ASSIGNMENT_VERSION).expect("an assignment encodes");
    buf.freeze()
}

/// An empty assignment (a member given nothing) is no bytes at all.
pub fn decode_assignment(mut data: Bytes) -> Result<Vec<TopicPartition>, ClientError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    if data.remaining() < 2 {
        return Err(ClientError::Protocol("assignment too short".into()));
    }
    let version = data.get_i16().clamp(0, 3);
    let a = ConsumerProtocolAssignment::decode(&mut data, version)
        .map_err(|e| ClientError::Protocol(format!("assignment: {e}")))?;
    Ok(a.assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| TopicPartition::new(t.topic.0.to_string(), *p)))
        .collect())
}

/// Assign the partitions of the subscribed topics (`partitions`: count per
/// topic; topics missing from it are skipped) to `members`.
pub fn assign(
    assignor: Assignor,
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out: BTreeMap<String, Vec<TopicPartition>> =
        members.iter().map(|m| (m.member_id.clone(), Vec::new())).collect();
    match assignor {
        Assignor::Range => range(members, partitions, &mut out),
        Assignor::RoundRobin => round_robin(members, partitions, &mut out),
        Assignor::CooperativeSticky => cooperative_sticky(members, partitions, &mut out),
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn subscribers<'a>(members: &'a [MemberSubscription], topic: &str) -> Vec<&'a str> {
    let mut m: Vec<&str> =
        members.iter().filter(|m| m.topics.iter().any(|t| t == topic)).map(|m| m.member_id.as_str()).collect();
    m.sort();
    m
}

fn range(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
    out: &mut BTreeMap<String, Vec<TopicPartition>>,
) {
    for (topic, &count) in partitions {
        let subs = subscribers(members, topic);
        if subs.is_empty() {
            continue;
        }
        let (per, extra) = (count as usize / subs.len(), count as usize % subs.len());
        let mut next = 0;
        for (i, m) in subs.iter().enumerate() {
            let n = per + usize::from(i < extra);
            for p in next..next + n {
                out.get_mut(*m).expect("member").push(TopicPartition::new(topic.clone(), p as i32));
            }
            next += n;
        }
    }
}

fn round_robin(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
    out: &mut BTreeMap<String, Vec<TopicPartition>>,
) {
    let mut ids: Vec<&MemberSubscription> = members.iter().collect();
    ids.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    if ids.is_empty() {
        return;
    }
    let mut turn = 0;
    for (topic, &count) in partitions {
        for p in 0..count {
            // The next member in the circle that subscribes to the topic.
            for _ in 0..ids.len() {
                let m = ids[turn % ids.len()];
                turn += 1;
                if m.topics.iter().any(|t| t == topic) {
                    out.get_mut(&m.member_id).expect("member").push(TopicPartition::new(topic.clone(), p));
                    break;
                }
            }
        }
    }
}

fn cooperative_sticky(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
    out: &mut BTreeMap<String, Vec<TopicPartition>>,
) {
    let exists = |tp: &TopicPartition| partitions.get(&tp.topic).is_some_and(|&n| tp.partition < n);
    let subscribed = |m: &MemberSubscription, t: &str| m.topics.iter().any(|x| x == t);
    let mut sorted: Vec<&MemberSubscription> = members.iter().collect();
    sorted.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    // Who owned what before: the first claim wins a partition claimed twice.
    let mut previous: BTreeMap<TopicPartition, &str> = BTreeMap::new();
    for m in &sorted {
        for tp in &m.owned {
            if exists(tp) && subscribed(m, &tp.topic) {
                previous.entry(tp.clone()).or_insert(&m.member_id);
            }
        }
    }
    let all: Vec<TopicPartition> = partitions
        .iter()
        .flat_map(|(t, &n)| (0..n).map(move |p| TopicPartition::new(t.clone(), p)))
        .filter(|tp| sorted.iter().any(|m| subscribed(m, &tp.topic)))
        .collect();
    let total = all.len();
    let n = sorted.len().max(1);
    let quota = |rank: usize| total / n + usize::from(rank < total % n);
    // Keep what each member owned, up to its quota (members with the most
    // owned partitions get the larger quotas, so fewer partitions move).
    let mut by_owned: Vec<&MemberSubscription> = sorted.clone();
    by_owned.sort_by_key(|m| std::cmp::Reverse(previous.values().filter(|o| **o == m.member_id).count()));
    let mut taken: BTreeSet<TopicPartition> = BTreeSet::new();
    let mut quotas: BTreeMap<&str, usize> = BTreeMap::new();
    for (rank, m) in by_owned.iter().enumerate() {
        let q = quota(rank);
        quotas.insert(&m.member_id, q);
        let mine = out.get_mut(&m.member_id).expect("member");
        for (tp, owner) in &previous {
            if *owner == m.member_id && mine.len() < q {
                mine.push(tp.clone());
                taken.insert(tp.clone());
            }
        }
    }
    // The rest go to the member furthest below its quota that subscribes.
    for tp in all.iter().filter(|tp| !taken.contains(*tp)) {
        let best = sorted
            .iter()
            .filter(|m| subscribed(m, &tp.topic))
            .min_by_key(|m| {
                let have = out[&m.member_id].len();
                (have >= quotas[m.member_id.as_str()], have, m.member_id.clone())
            })
            .map(|m| m.member_id.clone());
        if let Some(id) = best {
            out.get_mut(&id).expect("member").push(tp.clone());
        }
    }
    // Cooperative: a partition changing owner is only revoked this round.
    for (id, parts) in out.iter_mut() {
        parts.retain(|tp| previous.get(tp).is_none_or(|owner| owner == id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str], owned: &[(&str, i32)]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: owned.iter().map(|(t, p)| TopicPartition::new(*t, *p)).collect(),
        }
    }

    fn parts(v: &[(&str, i32)]) -> BTreeMap<String, i32> {
        v.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn names(a: &BTreeMap<String, Vec<TopicPartition>>, id: &str) -> Vec<String> {
        a[id].iter().map(|tp| tp.to_string()).collect()
    }

    #[test]
    fn range_gives_each_topic_in_contiguous_runs() {
        let ms = [member("a", &["t", "u"], &[]), member("b", &["t", "u"], &[])];
        let a = assign(Assignor::Range, &ms, &parts(&[("t", 3), ("u", 2)]));
        assert_eq!(names(&a, "a"), ["t-0", "t-1", "u-0"]);
        assert_eq!(names(&a, "b"), ["t-2", "u-1"]);
    }

    #[test]
    fn round_robin_deals_partitions_in_turn() {
        let ms = [member("a", &["t"], &[]), member("b", &["t"], &[])];
        let a = assign(Assignor::RoundRobin, &ms, &parts(&[("t", 5)]));
        assert_eq!(names(&a, "a"), ["t-0", "t-2", "t-4"]);
        assert_eq!(names(&a, "b"), ["t-1", "t-3"]);
    }

    #[test]
    fn cooperative_sticky_keeps_owners_and_withholds_moves() {
        // `a` held everything; `b` joins: `a` keeps three, the other three are
        // only revoked now and go to `b` in the next round.
        let owned: Vec<(&str, i32)> = (0..6).map(|p| ("t", p)).collect();
        let ms = [member("a", &["t"], &owned), member("b", &["t"], &[])];
        let first = assign(Assignor::CooperativeSticky, &ms, &parts(&[("t", 6)]));
        assert_eq!(first["a"].len(), 3);
        assert!(first["b"].is_empty(), "moves wait for the revocation");
        let ms = [
            member("a", &["t"], &first["a"].iter().map(|tp| ("t", tp.partition)).collect::<Vec<_>>()),
            member("b", &["t"], &[]),
        ];
        let second = assign(Assignor::CooperativeSticky, &ms, &parts(&[("t", 6)]));
        assert_eq!(second["a"], first["a"], "sticky");
        assert_eq!(second["b"].len(), 3);
    }

    #[test]
    fn every_assignor_covers_every_partition_once() {
        let ms = [member("a", &["t", "u"], &[]), member("b", &["t"], &[]), member("c", &["u"], &[])];
        let p = parts(&[("t", 7), ("u", 4)]);
        for assignor in [Assignor::Range, Assignor::RoundRobin, Assignor::CooperativeSticky] {
            let a = assign(assignor, &ms, &p);
            let mut seen: Vec<TopicPartition> = a.values().flatten().cloned().collect();
            seen.sort();
            let before = seen.len();
            seen.dedup();
            assert_eq!(before, seen.len(), "{assignor:?}: a partition given twice");
            assert_eq!(seen.len(), 11, "{assignor:?}");
            assert!(a["b"].iter().all(|tp| tp.topic == "t") && a["c"].iter().all(|tp| tp.topic == "u"));
        }
    }

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let owned = vec![TopicPartition::new("t", 1)];
        let s = decode_subscription("m", encode_subscription(&["t".into()], &owned)).unwrap();
        assert_eq!((s.topics, s.owned), (vec!["t".to_string()], owned.clone()));
        assert_eq!(decode_assignment(encode_assignment(&owned)).unwrap(), owned);
        assert!(decode_assignment(Bytes::new()).unwrap().is_empty());
        assert!(decode_subscription("m", Bytes::from_static(b"\x00")).is_err());
    }
}
