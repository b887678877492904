//! Three real `faultline serve` processes on loopback, started by `faultline
//! cluster --nodes 3`: kcat lists three brokers, a topic of six partitions
//! spreads its leaders over them, and after the active controller is
//! SIGKILLed a new one is elected, DescribeQuorum names it and CreateTopics
//! works again.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faultline_broker::client::admin::{Admin, AdminConfig, NewTopic};
use faultline_broker::client::connection::Connection;
use faultline_broker::io::real::RealIo;
use faultline_broker::io::Env;
use faultline_broker::quorum::describe_quorum_request;
use kafka_protocol::messages::{DescribeQuorumRequest, MetadataRequest};

/// One node as `faultline cluster` printed it.
#[derive(Debug, Clone)]
struct Node {
    pid: i32,
    addr: String,
}

/// Kills the cluster (and so its nodes) when the test ends, pass or fail.
struct ClusterProcess(std::process::Child);

impl Drop for ClusterProcess {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn start_cluster(dir: &std::path::Path) -> (ClusterProcess, BTreeMap<i32, Node>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["cluster", "--nodes", "3", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start faultline cluster");
    let stdout = child.stdout.take().unwrap();
    let guard = ClusterProcess(child);
    let mut nodes = BTreeMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read cluster output");
        println!("{line}");
        if line.starts_with("bootstrap ") {
            break;
        }
        // node 1 roles broker,controller pid 123 address 127.0.0.1:1234 log ...
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], "node", "unexpected line {line:?}");
        let id: i32 = words[1].parse().unwrap();
        let pid: i32 = words[5].parse().unwrap();
        nodes.insert(id, Node { pid, addr: words[7].to_string() });
    }
    assert_eq!(nodes.len(), 3, "three nodes printed");
    (guard, nodes)
}

async fn until<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn connect(env: &Env, addr: &str) -> Option<std::sync::Arc<Connection>> {
    Connection::connect(env, addr, "cluster-test", Duration::from_secs(5)).await.ok()
}

/// The quorum leader as node `addr` reports it through DescribeQuorum.
async fn quorum_leader(env: &Env, addr: &str) -> Option<i32> {
    let conn = connect(env, addr).await?;
    let version = conn.version::<DescribeQuorumRequest>().ok()?;
    let resp = conn.request(&describe_quorum_request(), version, Duration::from_secs(5)).await.ok()?;
    if resp.error_code != 0 {
        return None;
    }
    let leader = resp.topics.first()?.partitions.first()?.leader_id.0;
    (leader >= 0).then_some(leader)
}

/// Broker ids in node `addr`'s Metadata, and the leader of each partition of `topic`.
async fn metadata(env: &Env, addr: &str, topic: Option<&str>) -> Option<(BTreeSet<i32>, Vec<i32>)> {
    let conn = connect(env, addr).await?;
    let version = conn.version::<MetadataRequest>().ok()?;
    let req = MetadataRequest::default().with_topics(topic.map(|t| {
        vec![kafka_protocol::messages::metadata_request::MetadataRequestTopic::default().with_name(Some(
            kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(t.into())),
        ))]
    }));
    let resp = conn.request(&req, version, Duration::from_secs(5)).await.ok()?;
    let brokers = resp.brokers.iter().map(|b| b.node_id.0).collect();
    let leaders = resp.topics.first().map(|t| t.partitions.iter().map(|p| p.leader_id.0).collect()).unwrap_or_default();
    Some((brokers, leaders))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_elect_spread_and_survive_their_controller() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, nodes) = start_cluster(dir.path());
    let env = RealIo::new();
    let first = nodes[&1].addr.clone();

    let brokers = until("three brokers registered", Duration::from_secs(60), async || {
        let (brokers, _) = metadata(&env, &first, None).await?;
        (brokers.len() == 3).then_some(brokers)
    })
    .await;
    assert_eq!(brokers, BTreeSet::from([1, 2, 3]));

    let kcat =
        Command::new("kcat").args(["-L", "-b", &first]).output().expect("kcat is installed (.ci/run installs it)");
    let listing = String::from_utf8_lossy(&kcat.stdout);
    assert!(listing.contains("3 brokers:"), "kcat -L lists three brokers:\n{listing}");

    let all: Vec<String> = nodes.values().map(|n| n.addr.clone()).collect();
    let admin = Admin::new(env.clone(), AdminConfig::new(all.clone())).unwrap();
    admin.create_topics(&[NewTopic::new("spread", 6, 1)]).await.expect("create a topic of six partitions");
    let leaders = until("six partitions with leaders", Duration::from_secs(30), async || {
        let (_, leaders) = metadata(&env, &first, Some("spread")).await?;
        (leaders.len() == 6 && leaders.iter().all(|l| *l > 0)).then_some(leaders)
    })
    .await;
    assert_eq!(leaders.iter().copied().collect::<BTreeSet<_>>(), BTreeSet::from([1, 2, 3]), "leaders {leaders:?}");

    let controller =
        until("a quorum leader", Duration::from_secs(30), async || quorum_leader(&env, &first).await).await;
    println!("active controller: node {controller}");
    // SAFETY: signalling a child of our child.
    unsafe { libc::kill(nodes[&controller].pid, libc::SIGKILL) };
    let killed_at = Instant::now();
    let survivor = nodes.iter().find(|(id, _)| **id != controller).map(|(_, n)| n.addr.clone()).unwrap();
    let next = until("a new quorum leader", Duration::from_secs(60), async || {
        quorum_leader(&env, &survivor).await.filter(|l| *l != controller)
    })
    .await;
    println!("new controller: node {next}, elected {} ms after SIGKILL", killed_at.elapsed().as_millis());

    let survivors: Vec<String> =
        nodes.iter().filter(|(id, _)| **id != controller).map(|(_, n)| n.addr.clone()).collect();
    let admin = Admin::new(env.clone(), AdminConfig::new(survivors)).unwrap();
    admin.create_topics(&[NewTopic::new("after-failover", 2, 1)]).await.expect("CreateTopics after the failover");
}
