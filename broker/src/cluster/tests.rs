//! Several [`MetadataNode`]s over an in-memory network, with no sockets and
//! no clock: a quorum elects a leader, its controller activates, brokers
//! register and are unfenced, a topic is created and published to the
//! brokers that host it, and a controller failover keeps every committed
//! record.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::metadata_node::{Event, Input, MetadataNode, MetadataNodeConfig, Output};
use super::peers::{PeerRequest, PeerResponse};
use crate::config::BrokerConfig;
use crate::controller::broker_lifecycle::{BrokerState, LifecycleConfig};
use crate::controller::image::MetadataImage;
use crate::controller::quorum_controller::ControllerConfig;
use crate::controller::records::Endpoint;
use crate::quorum::{MemoryLog, QuorumBugs, QuorumConfig, QuorumState};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A message in flight.
enum Msg {
    Request { from: i32, to: i32, request_id: u64, request: PeerRequest },
    Response { from: i32, to: i32, request_id: u64, response: PeerResponse },
}

struct Net {
    now: i64,
    nodes: BTreeMap<i32, MetadataNode<MemoryLog>>,
    /// Per node: token -> (asking node, its request id), or a client call.
    tokens: BTreeMap<(i32, u64), Option<(i32, u64)>>,
    client_answers: BTreeMap<(i32, u64), PeerResponse>,
    next_token: u64,
    queue: VecDeque<Msg>,
    down: Vec<i32>,
    events: Vec<(i32, Event)>,
    persisted: BTreeMap<i32, QuorumState>,
    voters: Vec<i32>,
    brokers: Vec<i32>,
    /// Cut off from every other node, but running and taking client calls.
    isolated: Vec<i32>,
    bugs: QuorumBugs,
    /// Drop this share of messages (per mille), drawn from `rng`.
    drop_per_mille: u64,
    rng: ChaCha8Rng,
    /// Per node: how many times it restarted.
    runs: BTreeMap<i32, u64>,
    /// Every image published, by node, in order.
    published: Vec<(i32, Arc<MetadataImage>)>,
    /// Planted in nodes started by [`Net::restart`].
    publish_before_registered: bool,
}

/// `run` numbers the process's starts: each draws a new incarnation id.
fn config(node_id: i32, voters: &[i32], broker: bool, bugs: QuorumBugs, run: u64) -> MetadataNodeConfig {
    let broker_config = BrokerConfig { node_id, ..BrokerConfig::default() };
    let is_voter = voters.contains(&node_id);
    MetadataNodeConfig {
        node_id,
        quorum: QuorumConfig { bugs, ..QuorumConfig::new(node_id, voters.iter().copied()) },
        controller: is_voter.then(|| ControllerConfig::from_broker_config(&broker_config)),
        lifecycle: broker.then(|| LifecycleConfig {
            node_id,
            cluster_id: "faultline".into(),
            incarnation_id: Uuid::from_u64_pair(run, node_id as u64),
            listeners: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: format!("node-{node_id}"),
                port: 9092,
                security_protocol: 0,
            }],
            rack: None,
            heartbeat_interval_ms: 500,
            request_timeout_ms: 2000,
            retry_backoff_ms: 100,
        }),
        snapshot_interval_records: 50,
        max_pending: 64,
        publish_before_registered: false,
    }
}

impl Net {
    fn new(voters: &[i32], brokers: &[i32], seed: u64) -> Net {
        Net::with_bugs(voters, brokers, seed, QuorumBugs::default())
    }

    fn with_bugs(voters: &[i32], brokers: &[i32], seed: u64, bugs: QuorumBugs) -> Net {
        let mut ids: Vec<i32> = voters.iter().chain(brokers).copied().collect();
        ids.sort();
        ids.dedup();
        let nodes = ids
            .iter()
            .map(|&id| {
                let c = config(id, voters, brokers.contains(&id), bugs, 0);
                (id, MetadataNode::new(c, None, MemoryLog::new(), seed ^ id as u64, 0))
            })
            .collect();
        Net {
            now: 0,
            nodes,
            tokens: BTreeMap::new(),
            client_answers: BTreeMap::new(),
            next_token: 0,
            queue: VecDeque::new(),
            down: Vec::new(),
            events: Vec::new(),
            persisted: BTreeMap::new(),
            voters: voters.to_vec(),
            brokers: brokers.to_vec(),
            isolated: Vec::new(),
            bugs,
            drop_per_mille: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            runs: BTreeMap::new(),
            published: Vec::new(),
            publish_before_registered: false,
        }
    }

    /// Power loss and restart of `id`: what was not flushed is gone; the
    /// quorum state survives (it is written durably before it is acted on).
    /// The new process draws a new incarnation id.
    fn restart(&mut self, id: i32, seed: u64) {
        let node = self.nodes.remove(&id).unwrap();
        let mut log = node.into_log();
        log.crash();
        let run = self.runs.entry(id).or_default();
        *run += 1;
        let mut c = config(id, &self.voters, self.brokers.contains(&id), self.bugs, *run);
        c.publish_before_registered = self.publish_before_registered;
        let persisted = self.persisted.get(&id).copied();
        self.nodes.insert(id, MetadataNode::new(c, persisted, log, seed, self.now));
        self.tokens.retain(|(n, _), _| *n != id);
        self.down.retain(|d| *d != id);
    }

    fn feed(&mut self, id: i32, input: Input) {
        if self.down.contains(&id) {
            return;
        }
        let outputs = self.nodes.get_mut(&id).unwrap().handle(self.now, input);
        for o in outputs {
            match o {
                Output::PersistQuorumState(q) => {
                    self.persisted.insert(id, q);
                }
                Output::Publish { image, .. } => self.published.push((id, image)),
                Output::Send { to, request_id, request } => {
                    self.queue.push_back(Msg::Request { from: id, to, request_id, request })
                }
                Output::Respond { token, response } => match self.tokens.remove(&(id, token)) {
                    Some(Some((from, request_id))) => {
                        self.queue.push_back(Msg::Response { from: id, to: from, request_id, response })
                    }
                    Some(None) => {
                        self.client_answers.insert((id, token), response);
                    }
                    None => panic!("node {id} answered unknown token {token}"),
                },
                Output::Event(e) => self.events.push((id, e)),
            }
        }
    }

    fn deliver(&mut self, msg: Msg) {
        let (a, b) = match &msg {
            Msg::Request { from, to, .. } | Msg::Response { from, to, .. } => (*from, *to),
        };
        let cut = self.isolated.contains(&a) != self.isolated.contains(&b);
        let lost = cut || (self.drop_per_mille > 0 && self.rng.random_range(0..1000) < self.drop_per_mille);
        match msg {
            Msg::Request { from, to, request_id, .. } if lost => {
                let _ = to;
                self.feed(from, Input::SendFailed { to, request_id })
            }
            Msg::Response { from, to, request_id, .. } if lost => {
                self.feed(to, Input::SendFailed { to: from, request_id })
            }
            Msg::Request { from, to, request_id, request } => {
                if self.down.contains(&to) || !self.nodes.contains_key(&to) {
                    return self.feed(from, Input::SendFailed { to, request_id });
                }
                self.next_token += 1;
                let token = self.next_token;
                self.tokens.insert((to, token), Some((from, request_id)));
                self.feed(to, Input::Request { token, request, from_peer: true });
            }
            Msg::Response { from, to, request_id, response } => {
                if self.down.contains(&from) {
                    return self.feed(to, Input::SendFailed { to: from, request_id });
                }
                self.feed(to, Input::Response { from, request_id, response })
            }
        }
    }

    /// A client request to node `id`; returns the token its answer will carry.
    fn client(&mut self, id: i32, request: PeerRequest) -> u64 {
        self.next_token += 1;
        let token = self.next_token;
        self.tokens.insert((id, token), None);
        self.feed(id, Input::Request { token, request, from_peer: false });
        token
    }

    /// Run for `ms` of simulated time: deliver every message (each takes
    /// 1 ms), ticking nodes at their deadlines.
    fn run(&mut self, ms: i64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 1;
            let n = self.queue.len();
            for _ in 0..n {
                let m = self.queue.pop_front().unwrap();
                self.deliver(m);
            }
            let due: Vec<i32> =
                self.nodes.iter().filter(|(_, n)| n.next_deadline() <= self.now).map(|(id, _)| *id).collect();
            for id in due {
                self.feed(id, Input::Tick);
            }
        }
    }

    /// The leader of the newest epoch. (A leader cut off from the others
    /// may still think it leads an older epoch until it resigns.)
    fn leader(&self) -> Option<i32> {
        self.nodes
            .iter()
            .filter(|(id, n)| !self.down.contains(id) && n.raft().is_leader())
            .max_by_key(|(_, n)| n.raft().epoch())
            .map(|(id, _)| *id)
    }
}

fn create_topic(name: &str, partitions: i32) -> PeerRequest {
    PeerRequest::CreateTopics(CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.into())))
            .with_num_partitions(partitions)
            .with_replication_factor(1),
    ]))
}

#[test]
fn a_quorum_elects_activates_and_registers_brokers() {
    let mut net = Net::new(&[1, 2, 3], &[1, 2, 3, 4], 11);
    net.run(6000);
    let leader = net.leader().expect("a leader within 6 s");
    let ctl = net.nodes[&leader].controller().unwrap();
    assert!(ctl.is_active(), "the leader's controller is active");
    assert!(net.events.iter().any(|(id, e)| *id == leader && matches!(e, Event::ControllerActivated { .. })));
    for (id, n) in &net.nodes {
        let l = n.lifecycle().unwrap();
        assert_eq!(l.state(), BrokerState::Running, "broker {id} registered and unfenced");
        assert!(n.image().broker(*id).is_some_and(|b| !b.fenced), "broker {id} unfenced in its own image");
    }
}

#[test]
fn create_topics_is_forwarded_committed_and_seen_everywhere() {
    let mut net = Net::new(&[1, 2, 3], &[1, 2, 3, 4], 5);
    net.run(6000);
    let leader = net.leader().unwrap();
    // Ask a node that is not the leader: it forwards.
    let asked = *net.nodes.keys().find(|id| **id != leader).unwrap();
    let token = net.client(asked, create_topic("orders", 6));
    net.run(1000);
    let answer = net.client_answers.remove(&(asked, token)).expect("answered");
    let PeerResponse::CreateTopics(r) = answer else { panic!("{answer:?}") };
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
    for (id, n) in &net.nodes {
        let t = n.image().topic_by_name("orders").unwrap_or_else(|| panic!("node {id} sees the topic"));
        assert_eq!(t.partitions.len(), 6);
    }
    // Leaders spread over the four brokers.
    let t = net.nodes[&1].image().topic_by_name("orders").unwrap().clone();
    let mut leaders: Vec<i32> = t.partitions.iter().map(|p| p.leader).collect();
    leaders.sort();
    leaders.dedup();
    assert_eq!(leaders, vec![1, 2, 3, 4]);
}

#[test]
fn alter_partition_from_a_leader_is_forwarded_and_committed_everywhere() {
    use kafka_protocol::messages::alter_partition_request::{BrokerState, PartitionData, TopicData};
    use kafka_protocol::messages::{AlterPartitionRequest, BrokerId};
    let mut net = Net::new(&[1, 2, 3], &[1, 2, 3, 4], 8);
    net.run(6000);
    let quorum_leader = net.leader().unwrap();
    let token = net.client(
        quorum_leader,
        PeerRequest::CreateTopics(CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("r3")))
            .with_num_partitions(4)
            .with_replication_factor(3)])),
    );
    net.run(1000);
    let Some(PeerResponse::CreateTopics(r)) = net.client_answers.remove(&(quorum_leader, token)) else { panic!() };
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
    // A partition led by a broker other than the quorum leader, which asks
    // its own node: the node forwards to the active controller.
    let image = net.nodes[&quorum_leader].image().clone();
    let t = image.topic_by_name("r3").unwrap();
    let (index, p) = t.partitions.iter().enumerate().find(|(_, p)| p.leader != quorum_leader).unwrap();
    let leader = p.leader;
    let shrunk = vec![leader, p.isr.iter().copied().find(|r| *r != leader).unwrap()];
    let req = AlterPartitionRequest::default()
        .with_broker_id(BrokerId(leader))
        .with_broker_epoch(image.broker(leader).unwrap().epoch)
        .with_topics(vec![TopicData::default().with_topic_id(t.id).with_partitions(vec![PartitionData::default()
            .with_partition_index(index as i32)
            .with_leader_epoch(p.leader_epoch)
            .with_partition_epoch(p.partition_epoch)
            .with_new_isr_with_epochs(
                shrunk
                    .iter()
                    .map(|b| BrokerState::default().with_broker_id(BrokerId(*b)).with_broker_epoch(-1))
                    .collect(),
            )])]);
    let token = net.client(leader, PeerRequest::AlterPartition(req));
    net.run(1000);
    let answer = net.client_answers.remove(&(leader, token)).expect("answered");
    let PeerResponse::AlterPartition(r) = answer else { panic!("{answer:?}") };
    assert_eq!(r.error_code, 0, "{r:?}");
    let answered = &r.topics[0].partitions[0];
    assert_eq!(answered.error_code, 0, "{r:?}");
    assert_eq!(answered.partition_epoch, p.partition_epoch + 1);
    for (id, n) in &net.nodes {
        let now = n.image().partition(t.id, index as i32).unwrap();
        assert_eq!((now.isr.clone(), now.partition_epoch), (shrunk.clone(), p.partition_epoch + 1), "node {id}");
    }
}

#[test]
fn producer_id_blocks_asked_of_any_node_are_disjoint() {
    use kafka_protocol::messages::{AllocateProducerIdsRequest, BrokerId};
    let mut net = Net::new(&[1, 2, 3], &[1, 2, 3, 4], 21);
    net.run(6000);
    let mut starts = Vec::new();
    for id in [4, 2, 4, 1] {
        let epoch = net.nodes[&id].image().broker(id).unwrap().epoch;
        let ask = AllocateProducerIdsRequest::default().with_broker_id(BrokerId(id)).with_broker_epoch(epoch);
        let token = net.client(id, PeerRequest::AllocateProducerIds(ask));
        net.run(500);
        let Some(PeerResponse::AllocateProducerIds(r)) = net.client_answers.remove(&(id, token)) else { panic!() };
        assert_eq!((r.error_code, r.producer_id_len), (0, 1000), "{r:?}");
        starts.push(r.producer_id_start.0);
    }
    assert_eq!(starts, [0, 1000, 2000, 3000]);
    // Followers learn the last commit on their next fetch.
    net.run(1000);
    assert!(net.nodes.values().all(|n| n.image().next_producer_id() == 4000));
}

#[test]
fn a_controller_failover_keeps_committed_records_and_fences_the_dead_broker() {
    let mut net = Net::new(&[1, 2, 3], &[1, 2, 3], 9);
    net.run(6000);
    let first = net.leader().unwrap();
    let token = net.client(first, create_topic("t", 3));
    net.run(500);
    assert!(net.client_answers.contains_key(&(first, token)));
    net.down.push(first);
    net.run(15_000);
    let second = net.leader().expect("a new leader");
    assert_ne!(first, second);
    let image = net.nodes[&second].image();
    assert!(image.topic_by_name("t").is_some(), "the committed topic survives the failover");
    assert!(image.broker(first).unwrap().fenced, "the dead broker is fenced after its session lapses");
    for p in &image.topic_by_name("t").unwrap().partitions {
        assert_ne!(p.leader, first, "no partition is led by the fenced broker");
    }
    // Every live node applied the same records in the same order.
    let applied = |id: i32| -> Vec<(i64, u64)> {
        net.events
            .iter()
            .filter(|(n, _)| *n == id)
            .filter_map(|(_, e)| match e {
                Event::Applied { offset, digest } => Some((*offset, *digest)),
                _ => None,
            })
            .collect()
    };
    let a = applied(second);
    for id in [1, 2, 3] {
        let b = applied(id);
        let n = a.len().min(b.len());
        assert_eq!(a[..n], b[..n], "node {id}'s applied records are a prefix of node {second}'s");
    }
    // DescribeQuorum asked of a follower is answered by the leader.
    let follower = *[1, 2, 3].iter().find(|id| **id != first && **id != second).unwrap();
    let token = net.client(follower, PeerRequest::DescribeQuorum(crate::quorum::describe_quorum_request()));
    net.run(200);
    let Some(PeerResponse::DescribeQuorum(r)) = net.client_answers.remove(&(follower, token)) else {
        panic!("no DescribeQuorum answer")
    };
    assert_eq!(r.error_code, 0, "{r:?}");
}

/// Seeded chaos: lost messages, a leader cut off while clients still reach
/// it, nodes crashing (losing what they had not flushed) and restarting,
/// while clients keep creating topics. Checked: no two leaders claim one
/// epoch, every node applies the same record at the same offset, and every
/// acknowledged topic is in every image at the end.
fn chaos(seed: u64, bugs: QuorumBugs) -> Result<(), String> {
    let mut net = Net::with_bugs(&[1, 2, 3], &[1, 2, 3, 4], seed, bugs);
    net.drop_per_mille = 50;
    let mut acked = Vec::new();
    let mut asked = Vec::new();
    for round in 0..30 {
        if net.rng.random_range(0..4) == 0 {
            let victim = net.rng.random_range(1..=4);
            net.down.push(victim);
            let ms = net.rng.random_range(100..3000);
            net.run(ms);
            net.restart(victim, seed * 100 + round);
        }
        if net.rng.random_range(0..3) == 0 {
            if let Some(l) = net.leader() {
                net.isolated = vec![l];
            }
        }
        for k in 0..3 {
            let to = net.rng.random_range(1..=4);
            let name = format!("t{round}-{k}");
            let token = net.client(to, create_topic(&name, 2));
            asked.push((to, token, name));
            let ms = net.rng.random_range(1..200);
            net.run(ms);
        }
        if net.rng.random_range(0..2) == 0 {
            net.isolated.clear();
        }
    }
    net.drop_per_mille = 0;
    net.isolated.clear();
    net.run(20_000);
    for (to, token, name) in asked {
        if let Some(PeerResponse::CreateTopics(r)) = net.client_answers.get(&(to, token)) {
            if r.topics[0].error_code == 0 {
                acked.push(name);
            }
        }
    }
    let mut claims: BTreeMap<i32, i32> = BTreeMap::new();
    let mut records: BTreeMap<i64, u64> = BTreeMap::new();
    for (id, e) in &net.events {
        match e {
            Event::LeaderChange { epoch, leader: Some(l) } => {
                let first = *claims.entry(*epoch).or_insert(*l);
                if first != *l {
                    return Err(format!("epoch {epoch} has leaders {first} and {l} (seen by {id})"));
                }
            }
            Event::Applied { offset, digest } => {
                let first = *records.entry(*offset).or_insert(*digest);
                if first != *digest {
                    return Err(format!("node {id} applied another record at offset {offset}"));
                }
            }
            _ => {}
        }
    }
    if net.leader().is_none() {
        return Err("no leader after healing".into());
    }
    for name in &acked {
        for (id, n) in &net.nodes {
            if n.image().topic_by_name(name).is_none() {
                return Err(format!("acknowledged topic {name} missing on node {id}"));
            }
        }
    }
    Ok(())
}

#[test]
fn chaos_keeps_one_leader_per_epoch_and_one_history() {
    for seed in 0..16u64 {
        if let Err(e) = chaos(seed, QuorumBugs::default()) {
            panic!("seed {seed}: {e}");
        }
    }
}

#[test]
fn chaos_catches_a_follower_that_keeps_its_divergent_suffix() {
    let bugs = QuorumBugs { keep_divergent_suffix: true, ..QuorumBugs::default() };
    let first = (0..16u64).find(|s| chaos(*s, bugs).is_err());
    assert!(first.is_some(), "the planted bug went unnoticed over 16 seeds");
}

/// Three controllers and broker 4, with topic "orders" (8 partitions,
/// replication factor 3) created; returns the net and the quorum leader.
fn three_controllers_and_a_replicated_topic() -> (Net, i32) {
    let mut net = Net::new(&[1, 2, 3], &[1, 2, 3, 4], 9);
    net.run(6000);
    let leader = net.leader().unwrap();
    let mut topic = create_topic("orders", 8);
    if let PeerRequest::CreateTopics(r) = &mut topic {
        r.topics[0].replication_factor = 3;
    }
    let token = net.client(leader, topic);
    net.run(1000);
    assert!(net.client_answers.remove(&(leader, token)).is_some());
    (net, leader)
}

/// A controlled shutdown: the broker asks, the controller moves every
/// partition it leads to another replica, and only then may it stop.
#[test]
fn a_controlled_shutdown_moves_leadership_before_the_broker_stops() {
    let (mut net, leader) = three_controllers_and_a_replicated_topic();
    let leads = |net: &Net, b: i32| {
        let t = net.nodes[&leader].image().topic_by_name("orders").unwrap().clone();
        t.partitions.iter().filter(|p| p.leader == b).count()
    };
    assert!(leads(&net, 4) > 0, "broker 4 leads some partitions");
    assert!(!net.nodes[&4].shutdown_ready());
    net.feed(4, Input::ControlledShutdown);
    net.run(2000);
    assert!(net.nodes[&4].shutdown_ready(), "the controller let broker 4 go");
    assert_eq!(leads(&net, 4), 0, "its leadership moved first");
}

/// A broker that restarts while its previous run's session is still valid
/// publishes no image until the controller has registered the new run, in
/// the batch that moves the old run's leadership away. So it never leads a
/// partition again at the leader epoch its previous run held (two leaders
/// of one epoch, with different logs), nor serves an image long gone.
#[test]
fn a_restarted_broker_publishes_nothing_before_its_new_run_is_registered() {
    restart_publishes_only_its_own_run(false).unwrap();
    let planted = restart_publishes_only_its_own_run(true);
    assert!(planted.is_err(), "publish_before_registered went unnoticed");
}

/// Restart broker 4 while it leads partitions; an error says what the first
/// image it published afterwards got wrong.
fn restart_publishes_only_its_own_run(publish_before_registered: bool) -> Result<(), String> {
    let (mut net, leader) = three_controllers_and_a_replicated_topic();
    net.publish_before_registered = publish_before_registered;
    let led: Vec<(usize, i32)> = {
        let t = net.nodes[&leader].image().topic_by_name("orders").unwrap();
        t.partitions.iter().enumerate().filter(|(_, p)| p.leader == 4).map(|(i, p)| (i, p.leader_epoch)).collect()
    };
    assert!(!led.is_empty(), "broker 4 leads some partitions");
    let old_run = net.nodes[&4].image().broker(4).unwrap().incarnation_id;
    let before = net.published.len();
    net.restart(4, 99);
    net.run(15_000);
    let images: Vec<&Arc<MetadataImage>> =
        net.published[before..].iter().filter(|(n, _)| *n == 4).map(|(_, i)| i).collect();
    assert!(!images.is_empty(), "the restarted broker publishes once registered again");
    for image in images {
        let me = image.broker(4).expect("broker 4 is registered in every image it publishes");
        if me.incarnation_id == old_run {
            return Err("an image of the previous run was published".into());
        }
        let t = image.topic_by_name("orders").unwrap();
        for (i, epoch) in &led {
            let p = &t.partitions[*i];
            if p.leader == 4 && p.leader_epoch <= *epoch {
                return Err(format!("partition {i} led by 4 again at epoch {}", p.leader_epoch));
            }
        }
    }
    Ok(())
}
