//! Our consumer in a group against a real broker over loopback TCP: members
//! split a topic and take it back when one leaves, a new member resumes at
//! the committed offsets, cooperative-sticky moves only what it must, and a
//! pattern subscription follows the topics it matches.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_broker::client::{
    Admin, AdminConfig, Assignor, AutoOffsetReset, Consumer, ConsumerConfig, GroupSettings, NewTopic, Producer,
    ProducerConfig, ProducerRecord, RebalanceListener, TopicPartition,
};
use faultline_broker::config::BrokerConfig;
use faultline_broker::io::real::RealIo;
use faultline_broker::io::Env;
use faultline_broker::server::{self, RunningBroker};

struct TestBroker {
    env: Env,
    bootstrap: Vec<String>,
    _broker: RunningBroker,
    _dir: tempfile::TempDir,
}

async fn start_broker() -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let env = RealIo::new();
    let mut config =
        BrokerConfig { listen: "127.0.0.1:0".into(), data_dir: dir.path().to_path_buf(), ..BrokerConfig::default() };
    config.groups.offsets_topic_num_partitions = 3;
    config.groups.group_initial_rebalance_delay_ms = 0;
    let broker = server::start(env.clone(), config).await.unwrap();
    let bootstrap = vec![broker.local_addr().to_string()];
    TestBroker { env, bootstrap, _broker: broker, _dir: dir }
}

impl TestBroker {
    async fn topic(&self, name: &str, partitions: i32, records_per_partition: usize) {
        let admin = Admin::new(self.env.clone(), AdminConfig::new(self.bootstrap.clone())).unwrap();
        admin.create_topics(&[NewTopic::new(name, partitions, 1)]).await.unwrap();
        self.produce(name, partitions, records_per_partition).await;
    }

    async fn produce(&self, name: &str, partitions: i32, records_per_partition: usize) {
        let mut c = ProducerConfig::new(self.bootstrap.clone());
        c.request_timeout_ms = 5_000;
        let producer = Producer::new(self.env.clone(), c).unwrap();
        let mut futures = Vec::new();
        for p in 0..partitions {
            for i in 0..records_per_partition {
                futures.push(producer.send(ProducerRecord::new(name, format!("{p}-{i}")).with_partition(p)));
            }
        }
        for f in futures {
            f.await.unwrap();
        }
    }

    fn subscriber(&self, group: &str, assignor: Assignor, topic: &str) -> Consumer {
        let mut c = self.consumer(group, assignor);
        c.subscribe(vec![topic.to_string()]).unwrap();
        c
    }

    fn consumer(&self, group: &str, assignor: Assignor) -> Consumer {
        let mut c = ConsumerConfig::new(self.bootstrap.clone());
        c.auto_offset_reset = AutoOffsetReset::Earliest;
        c.fetch_max_wait_ms = 100;
        c.request_timeout_ms = 5_000;
        c.enable_auto_commit = false;
        let mut g = GroupSettings::new(group);
        g.session_timeout_ms = 6_000;
        g.heartbeat_interval_ms = 300;
        g.max_poll_interval_ms = 20_000;
        g.assignors = vec![assignor];
        c.group = Some(g);
        Consumer::new(self.env.clone(), c).unwrap()
    }
}

/// What a member saw: its assignment now, every record, every revocation.
#[derive(Default)]
struct Seen {
    assigned: BTreeSet<TopicPartition>,
    records: BTreeSet<(TopicPartition, i64)>,
    revoked: Vec<Vec<TopicPartition>>,
}

struct Recorder(Arc<Mutex<Seen>>);

impl RebalanceListener for Recorder {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        let mut s = self.0.lock().unwrap();
        s.revoked.push(partitions.to_vec());
        for tp in partitions {
            s.assigned.remove(tp);
        }
    }
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        self.0.lock().unwrap().assigned.extend(partitions.iter().cloned());
    }
}

/// A member polling in its own task (a member waits in JoinGroup for the
/// others, so members cannot share one task) until told to stop; then it
/// commits and leaves.
fn member(mut consumer: Consumer, stop: Arc<Mutex<bool>>) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<Consumer>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    consumer.set_rebalance_listener(Box::new(Recorder(seen.clone()))).unwrap();
    let s = seen.clone();
    let task = tokio::spawn(async move {
        while !*stop.lock().unwrap() {
            let records = consumer.poll(Duration::from_millis(100)).await.unwrap();
            if !records.is_empty() {
                consumer.commit_sync().await.unwrap_or_else(|e| eprintln!("commit failed: {e}"));
            }
            let mut seen = s.lock().unwrap();
            for r in records {
                seen.records.insert((TopicPartition::new(r.topic, r.partition), r.offset));
            }
        }
        consumer.unsubscribe().await;
        consumer
    });
    (seen, task)
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

fn owned(s: &Arc<Mutex<Seen>>) -> BTreeSet<TopicPartition> {
    s.lock().unwrap().assigned.clone()
}

async fn members_split_and_rejoin(assignor: Assignor) -> (Vec<Vec<TopicPartition>>, BTreeSet<TopicPartition>) {
    let b = start_broker().await;
    b.topic("shared", 6, 10).await;
    let group = format!("g-{}", assignor.name());
    let stop1 = Arc::new(Mutex::new(false));
    let (seen1, task1) = member(b.subscriber(&group, assignor, "shared"), stop1.clone());
    wait_until("member 1 holds all six partitions", || owned(&seen1).len() == 6).await;
    let stop2 = Arc::new(Mutex::new(false));
    let (seen2, task2) = member(b.subscriber(&group, assignor, "shared"), stop2.clone());
    wait_until("the two members split the partitions", || {
        let (a, b) = (owned(&seen1), owned(&seen2));
        a.len() == 3 && b.len() == 3 && a.is_disjoint(&b)
    })
    .await;
    wait_until("all 60 records consumed", || {
        seen1.lock().unwrap().records.union(&seen2.lock().unwrap().records).count() == 60
    })
    .await;
    *stop2.lock().unwrap() = true;
    task2.await.unwrap();
    wait_until("member 1 takes every partition back", || owned(&seen1).len() == 6).await;
    *stop1.lock().unwrap() = true;
    task1.await.unwrap();
    // A new member resumes at the committed offsets: it reads only what is new.
    b.produce("shared", 6, 2).await;
    let stop3 = Arc::new(Mutex::new(false));
    let (seen3, task3) = member(b.subscriber(&group, assignor, "shared"), stop3.clone());
    wait_until("the new records are read", || seen3.lock().unwrap().records.len() >= 12).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    *stop3.lock().unwrap() = true;
    let mut c3 = task3.await.unwrap();
    let records = seen3.lock().unwrap().records.clone();
    let offsets: BTreeSet<i64> = records.iter().map(|(_, o)| *o).collect();
    assert_eq!(records.len(), 12, "exactly the new records: {records:?}");
    assert_eq!(offsets, BTreeSet::from([10, 11]));
    let all: Vec<TopicPartition> = (0..6).map(|p| TopicPartition::new("shared", p)).collect();
    let committed = c3.committed(&all).await.unwrap();
    assert!(committed.values().all(|&o| o == 12), "{committed:?}");
    let revoked = seen1.lock().unwrap().revoked.clone();
    (revoked, owned(&seen1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_members_split_a_topic_and_resume_from_commits() {
    let (revoked, _) = members_split_and_rejoin(Assignor::Range).await;
    // Eager: member 1 gave up all six when member 2 joined.
    assert_eq!(revoked.first().map(Vec::len), Some(6), "{revoked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_moves_only_what_it_must() {
    let (revoked, _) = members_split_and_rejoin(Assignor::CooperativeSticky).await;
    // Cooperative: member 1 gave up only the three partitions that moved.
    assert_eq!(revoked.first().map(Vec::len), Some(3), "{revoked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_pattern_subscriptions() {
    let b = start_broker().await;
    b.topic("pat-a", 2, 3).await;
    b.topic("pat-b", 2, 3).await;
    b.topic("other", 2, 3).await;
    let mut c = b.consumer("g-pattern", Assignor::RoundRobin);
    c.subscribe_pattern("pat-.*").unwrap();
    let mut got = BTreeSet::new();
    for _ in 0..100 {
        for r in c.poll(Duration::from_millis(100)).await.unwrap() {
            got.insert((r.topic, r.partition, r.offset));
        }
        if got.len() >= 12 {
            break;
        }
    }
    assert_eq!(got.len(), 12);
    assert!(got.iter().all(|(t, _, _)| t.starts_with("pat-")));
    c.commit_sync().await.unwrap();
    let admin = Admin::new(b.env.clone(), AdminConfig::new(b.bootstrap.clone())).unwrap();
    let d = admin.describe_group("g-pattern").await.unwrap();
    assert_eq!((d.state.as_str(), d.protocol.as_str(), d.members.len()), ("Stable", "roundrobin", 1));
    assert_eq!(d.members[0].assignment.len(), 4);
    c.unsubscribe().await;
    // What `faultline groups` does: list, read offsets, reset, delete.
    let listed = admin.list_groups().await.unwrap();
    assert!(listed.iter().any(|g| g.group_id == "g-pattern" && g.state == "Empty"), "{listed:?}");
    let offsets = admin.group_offsets("g-pattern").await.unwrap();
    assert_eq!(offsets.len(), 4);
    assert!(offsets.values().all(|&o| o == 3));
    let reset: std::collections::BTreeMap<TopicPartition, i64> = offsets.keys().map(|tp| (tp.clone(), 1)).collect();
    admin.alter_group_offsets("g-pattern", &reset).await.unwrap();
    assert_eq!(admin.group_offsets("g-pattern").await.unwrap(), reset);
    admin.delete_group("g-pattern").await.unwrap();
    assert!(admin.group_offsets("g-pattern").await.unwrap().is_empty());
    assert!(admin.delete_group("g-pattern").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_async_reports_through_its_callback_in_order() {
    let b = start_broker().await;
    b.topic("async-commits", 2, 5).await;
    let mut c = b.consumer("g-async", Assignor::Range);
    c.subscribe(vec!["async-commits".to_string()]).unwrap();
    let mut got = 0;
    for _ in 0..100 {
        got += c.poll(Duration::from_millis(100)).await.unwrap().len();
        if got >= 10 {
            break;
        }
    }
    assert_eq!(got, 10);
    let outcomes: Arc<Mutex<Vec<(u32, bool)>>> = Arc::default();
    for n in 0..3u32 {
        let o = outcomes.clone();
        c.commit_async(Some(Box::new(move |r| o.lock().unwrap().push((n, r.is_ok()))))).await.unwrap();
    }
    for _ in 0..100 {
        if outcomes.lock().unwrap().len() == 3 {
            break;
        }
        c.poll(Duration::from_millis(50)).await.unwrap();
    }
    assert_eq!(*outcomes.lock().unwrap(), vec![(0, true), (1, true), (2, true)], "every callback, in order");
    let admin = Admin::new(b.env.clone(), AdminConfig::new(b.bootstrap.clone())).unwrap();
    let offsets = admin.group_offsets("g-async").await.unwrap();
    assert_eq!(offsets.len(), 2);
    assert!(offsets.values().all(|&o| o == 5), "{offsets:?}");
    c.unsubscribe().await;
}
