//! The nemesis: plans a run's faults from the seed and applies them to the
//! simulated world.
//!
//! [`plan`] turns a scenario's nemeses into a timeline of [`Strike`]s, each a
//! [`Fault`] with a start and an end inside the fault window. [`Injector`]
//! applies and heals them. Faults may overlap, so the injector counts how
//! many strikes want each link cut or held and each host down, and changes
//! the world only when a count moves between zero and one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::disk::DiskFaults;
use crate::history::TopicPartition;
use crate::scenario::{Nemesis, NemesisKind, Network};
use crate::seam::{ClockSkew, NodeState};

/// Who is who in the simulated world.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    /// Hosts clients bootstrap from.
    pub brokers: Vec<String>,
    /// Workload hosts (producers and consumers); the final reader is never
    /// a target.
    pub clients: Vec<String>,
    /// Controller-only hosts (separate roles); empty otherwise.
    pub controllers: Vec<String>,
    /// Voters of the metadata quorum (empty for a single broker).
    pub voters: Vec<String>,
    /// Every partition of the data topics, which partition-leader faults
    /// choose from.
    pub partitions: Vec<TopicPartition>,
    /// The `__consumer_offsets` partition coordinating the workload's group
    /// (with consumer groups in a cluster), which coordinator faults aim at.
    pub coordinator: Option<TopicPartition>,
}

impl Roles {
    fn all(&self) -> Vec<String> {
        self.servers().into_iter().chain(self.clients.iter().cloned()).collect()
    }

    /// Every server host: brokers, then controller-only hosts.
    pub fn servers(&self) -> Vec<String> {
        self.brokers.iter().chain(&self.controllers).cloned().collect()
    }
}

/// One fault, with its target chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// Cut every link between the two groups, both ways.
    Partition {
        a: Vec<String>,
        b: Vec<String>,
    },
    /// Drop everything `from` sends to `to`.
    PartitionOneway {
        from: String,
        to: String,
    },
    LinkDrop {
        a: String,
        b: String,
        rate: f64,
    },
    LinkDelay {
        a: String,
        b: String,
        latency_ms: u64,
    },
    /// Crash a broker (power loss); restart it at the end.
    Crash {
        host: String,
    },
    /// Kill a broker's process (its page cache survives); restart it at the end.
    ProcessCrash {
        host: String,
    },
    /// Crash a broker and flip one bit of one of its segment files while it
    /// is down; restart it at the end.
    CrashCorrupt {
        host: String,
    },
    /// Crash a client host; restart it (as a new session) at the end.
    CrashClient {
        host: String,
    },
    /// Hold every link of the host.
    Pause {
        host: String,
    },
    Disk {
        host: String,
        faults: DiskFaults,
    },
    ClockJump {
        host: String,
        ms: i64,
    },
    ClockDrift {
        host: String,
        ppm: i64,
    },
    /// Cut whichever voter leads the metadata quorum when the strike starts
    /// off from the other voters; the runner resolves it to a
    /// [`Fault::Partition`] then.
    IsolateLeader,
    /// Crash whichever voter leads the metadata quorum when the strike
    /// starts; the runner resolves it to a [`Fault::Crash`] then.
    CrashLeader,
    /// Crash the first voter reported granting a vote during the strike, as
    /// the grant leaves; the runner resolves it to a [`Fault::Crash`] then,
    /// ending at the strike's end. No vote, no crash.
    CrashAfterVote,
    /// Crash the first voter reported taking the lead of a new epoch during
    /// the strike, before its epoch's first entry can reach the others;
    /// resolved like [`Fault::CrashAfterVote`].
    CrashNewLeader,
    /// Crash whichever broker leads `topic`-`partition` when the strike
    /// starts (the highest leader epoch any broker reported leading it at);
    /// the runner resolves it to a [`Fault::Crash`] then.
    CrashPartitionLeader {
        topic: String,
        partition: i32,
    },
    /// Cut whichever broker leads `topic`-`partition` when the strike starts
    /// off from every other server, clients still reaching it; the runner
    /// resolves it to a [`Fault::Partition`] then.
    IsolatePartitionLeader {
        topic: String,
        partition: i32,
    },
    /// Every one of `hosts` loses power at once; all restart at the end.
    PowerLossAll {
        hosts: Vec<String>,
    },
}

impl Fault {
    /// Whether the runner must resolve this fault to a concrete one against
    /// the leader of the moment before it can be applied.
    pub fn aims_at_a_leader(&self) -> bool {
        matches!(
            self,
            Fault::IsolateLeader
                | Fault::CrashLeader
                | Fault::CrashAfterVote
                | Fault::CrashNewLeader
                | Fault::CrashPartitionLeader { .. }
                | Fault::IsolatePartitionLeader { .. }
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition { a, b } => write!(f, "partition [{}] | [{}]", a.join(" "), b.join(" ")),
            Fault::PartitionOneway { from, to } => write!(f, "partition-oneway {from} -> {to}"),
            Fault::LinkDrop { a, b, rate } => write!(f, "link-drop {a} <-> {b} rate {rate}"),
            Fault::LinkDelay { a, b, latency_ms } => write!(f, "link-delay {a} <-> {b} {latency_ms} ms"),
            Fault::Crash { host } => write!(f, "crash-restart {host}"),
            Fault::ProcessCrash { host } => write!(f, "process-crash {host}"),
            Fault::CrashCorrupt { host } => write!(f, "crash-corrupt {host}"),
            Fault::CrashClient { host } => write!(f, "crash-client {host}"),
            Fault::Pause { host } => write!(f, "pause {host}"),
            Fault::Disk { host, faults } => write!(f, "disk-faults {host} {}", describe_disk(faults)),
            Fault::ClockJump { host, ms } => write!(f, "clock-jump {host} {ms:+} ms"),
            Fault::ClockDrift { host, ppm } => write!(f, "clock-drift {host} {ppm:+} ppm"),
            Fault::IsolateLeader => write!(f, "isolate-leader"),
            Fault::CrashLeader => write!(f, "crash-leader"),
            Fault::CrashAfterVote => write!(f, "crash-after-vote"),
            Fault::CrashNewLeader => write!(f, "crash-new-leader"),
            Fault::CrashPartitionLeader { topic, partition } => {
                write!(f, "crash-partition-leader {topic}-{partition}")
            }
            Fault::IsolatePartitionLeader { topic, partition } => {
                write!(f, "isolate-partition-leader {topic}-{partition}")
            }
            Fault::PowerLossAll { hosts } => write!(f, "power-loss-all [{}]", hosts.join(" ")),
        }
    }
}

fn describe_disk(d: &DiskFaults) -> String {
    let mut parts = Vec::new();
    for (name, p) in [
        ("read_corruption", d.read_corruption),
        ("bit_rot", d.bit_rot),
        ("write_error", d.write_error),
        ("sync_error", d.sync_error),
        ("torn_write", d.torn_write),
        ("lost_write", d.lost_write),
        ("misdirected_write", d.misdirected_write),
    ] {
        if p > 0.0 {
            parts.push(format!("{name}={p}"));
        }
    }
    if d.sync_error_drops_pages {
        parts.push("sync_error_drops_pages".into());
    }
    if d.dir_entries_need_sync {
        parts.push("dir_entries_need_sync".into());
    }
    if d.capacity_bytes > 0 {
        parts.push(format!("capacity={}B", d.capacity_bytes));
    }
    if d.latency_max_us > 0 || d.sync_latency_max_us > 0 {
        parts.push(format!("latency<={}us sync<={}us", d.latency_max_us, d.sync_latency_max_us));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}

/// A fault and when it is active.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Strike {
    #[serde(serialize_with = "ser_ms")]
    pub start: Duration,
    #[serde(serialize_with = "ser_ms")]
    pub end: Duration,
    pub fault: Fault,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Uniform in [0.5 x, 1.5 x].
fn jitter(rng: &mut ChaCha8Rng, secs: f64) -> Duration {
    Duration::from_secs_f64(secs * rng.random_range(0.5..1.5))
}

fn pick<'a>(rng: &mut ChaCha8Rng, xs: &'a [String]) -> Option<&'a String> {
    if xs.is_empty() {
        None
    } else {
        Some(&xs[rng.random_range(0..xs.len())])
    }
}

/// Plan every strike of the run, ordered by start time. Strikes of one
/// nemesis never overlap each other; strikes of different nemeses may.
pub fn plan(nemeses: &[Nemesis], roles: &Roles, window: Duration, rng: &mut ChaCha8Rng) -> Vec<Strike> {
    let mut strikes = Vec::new();
    for n in nemeses {
        if n.kind == NemesisKind::RollingRestart {
            strikes.extend(rolling(n, roles, window, rng));
            continue;
        }
        let mut t = jitter(rng, n.interval_s);
        while t < window {
            if rng.random_bool(n.probability) {
                if let Some(fault) = target(&n.kind, roles, rng) {
                    let end = (t + jitter(rng, n.duration_s)).min(window);
                    strikes.push(Strike { start: t, end, fault });
                    t = end;
                }
            }
            t += jitter(rng, n.interval_s);
        }
    }
    // Stable: equal starts keep scenario order.
    strikes.sort_by_key(|s| s.start);
    strikes
}

/// A rolling restart: every server in turn (in a seeded order) has its
/// process killed for `duration_s`, the next going down `interval_s` after
/// the previous came back; rounds repeat while the window lasts.
fn rolling(n: &Nemesis, roles: &Roles, window: Duration, rng: &mut ChaCha8Rng) -> Vec<Strike> {
    let mut servers = roles.servers();
    let mut strikes = Vec::new();
    let mut t = jitter(rng, n.interval_s);
    while t < window && !servers.is_empty() {
        servers.shuffle(rng);
        for host in &servers {
            if t >= window {
                break;
            }
            let end = (t + jitter(rng, n.duration_s)).min(window);
            if rng.random_bool(n.probability) {
                strikes.push(Strike { start: t, end, fault: Fault::ProcessCrash { host: host.clone() } });
            }
            t = end + jitter(rng, n.interval_s);
        }
    }
    strikes
}

/// Choose the target of one strike; `None` if the world has no fitting one.
fn target(kind: &NemesisKind, roles: &Roles, rng: &mut ChaCha8Rng) -> Option<Fault> {
    let client_link = |rng: &mut ChaCha8Rng| -> Option<(String, String)> {
        Some((pick(rng, &roles.clients)?.clone(), pick(rng, &roles.brokers)?.clone()))
    };
    Some(match kind {
        NemesisKind::PartitionRandomHalves => {
            let mut all = roles.all();
            if all.len() < 2 {
                return None;
            }
            all.shuffle(rng);
            let cut = all.len() / 2;
            let mut b = all.split_off(cut);
            all.sort();
            b.sort();
            Fault::Partition { a: all, b }
        }
        NemesisKind::IsolateOne => {
            let host = pick(rng, &roles.servers())?.clone();
            let rest: Vec<String> = roles.all().into_iter().filter(|h| *h != host).collect();
            if rest.is_empty() {
                return None;
            }
            Fault::Partition { a: vec![host], b: rest }
        }
        NemesisKind::PartitionOneway => {
            let (c, b) = client_link(rng)?;
            if rng.random_bool(0.5) {
                Fault::PartitionOneway { from: c, to: b }
            } else {
                Fault::PartitionOneway { from: b, to: c }
            }
        }
        NemesisKind::LinkDrop { rate } => {
            let (a, b) = client_link(rng)?;
            Fault::LinkDrop { a, b, rate: *rate }
        }
        NemesisKind::LinkDelay { latency_ms } => {
            let (a, b) = client_link(rng)?;
            Fault::LinkDelay { a, b, latency_ms: *latency_ms }
        }
        NemesisKind::CrashRestart => Fault::Crash { host: pick(rng, &roles.servers())?.clone() },
        NemesisKind::ProcessCrash => Fault::ProcessCrash { host: pick(rng, &roles.servers())?.clone() },
        NemesisKind::CrashCorrupt => Fault::CrashCorrupt { host: pick(rng, &roles.servers())?.clone() },
        NemesisKind::CrashClient => Fault::CrashClient { host: pick(rng, &roles.clients)?.clone() },
        NemesisKind::Pause => Fault::Pause { host: pick(rng, &roles.servers())?.clone() },
        NemesisKind::DiskFaults { faults } => {
            Fault::Disk { host: pick(rng, &roles.servers())?.clone(), faults: faults.clone() }
        }
        NemesisKind::IsolateLeader if roles.voters.len() >= 2 => Fault::IsolateLeader,
        NemesisKind::CrashLeader if !roles.voters.is_empty() => Fault::CrashLeader,
        NemesisKind::CrashAfterVote if roles.voters.len() >= 2 => Fault::CrashAfterVote,
        NemesisKind::CrashNewLeader if roles.voters.len() >= 2 => Fault::CrashNewLeader,
        NemesisKind::IsolateLeader
        | NemesisKind::CrashLeader
        | NemesisKind::CrashAfterVote
        | NemesisKind::CrashNewLeader => return None,
        NemesisKind::QuorumLinkDrop { rate } => {
            let (a, b) = voter_link(rng, &roles.voters)?;
            Fault::LinkDrop { a, b, rate: *rate }
        }
        NemesisKind::QuorumLinkDelay { latency_ms } => {
            let (a, b) = voter_link(rng, &roles.voters)?;
            Fault::LinkDelay { a, b, latency_ms: *latency_ms }
        }
        NemesisKind::RollingRestart => return None,
        NemesisKind::CrashPartitionLeader => {
            let tp = pick_partition(rng, &roles.partitions)?;
            Fault::CrashPartitionLeader { topic: tp.topic.clone(), partition: tp.partition }
        }
        NemesisKind::IsolatePartitionLeader if roles.servers().len() >= 2 => {
            let tp = pick_partition(rng, &roles.partitions)?;
            Fault::IsolatePartitionLeader { topic: tp.topic.clone(), partition: tp.partition }
        }
        NemesisKind::IsolatePartitionLeader => return None,
        NemesisKind::CrashCoordinator => {
            let tp = roles.coordinator.as_ref()?;
            Fault::CrashPartitionLeader { topic: tp.topic.clone(), partition: tp.partition }
        }
        NemesisKind::IsolateCoordinator if roles.servers().len() >= 2 => {
            let tp = roles.coordinator.as_ref()?;
            Fault::IsolatePartitionLeader { topic: tp.topic.clone(), partition: tp.partition }
        }
        NemesisKind::IsolateCoordinator => return None,
        NemesisKind::PowerLossAll => {
            let hosts = roles.servers();
            if hosts.is_empty() {
                return None;
            }
            Fault::PowerLossAll { hosts }
        }
        NemesisKind::ClockJump { max_ms } => {
            let host = pick(rng, &roles.all())?.clone();
            Fault::ClockJump { host, ms: rng.random_range(-*max_ms..=*max_ms) }
        }
        NemesisKind::ClockDrift { max_ppm } => {
            let host = pick(rng, &roles.all())?.clone();
            Fault::ClockDrift { host, ppm: rng.random_range(-*max_ppm..=*max_ppm) }
        }
    })
}

fn pick_partition<'a>(rng: &mut ChaCha8Rng, xs: &'a [TopicPartition]) -> Option<&'a TopicPartition> {
    if xs.is_empty() {
        None
    } else {
        Some(&xs[rng.random_range(0..xs.len())])
    }
}

/// Two distinct voters, in a seeded order.
fn voter_link(rng: &mut ChaCha8Rng, voters: &[String]) -> Option<(String, String)> {
    if voters.len() < 2 {
        return None;
    }
    let mut v = voters.to_vec();
    v.shuffle(rng);
    Some((v[0].clone(), v[1].clone()))
}

/// The stronger of two disk fault settings, field by field.
pub fn overlay(base: &DiskFaults, strike: &DiskFaults) -> DiskFaults {
    DiskFaults {
        read_corruption: base.read_corruption.max(strike.read_corruption),
        bit_rot: base.bit_rot.max(strike.bit_rot),
        write_error: base.write_error.max(strike.write_error),
        sync_error: base.sync_error.max(strike.sync_error),
        torn_write: base.torn_write.max(strike.torn_write),
        torn_write_holes: base.torn_write_holes.max(strike.torn_write_holes),
        lost_write: base.lost_write.max(strike.lost_write),
        misdirected_write: base.misdirected_write.max(strike.misdirected_write),
        sync_error_drops_pages: base.sync_error_drops_pages || strike.sync_error_drops_pages,
        dir_entries_need_sync: base.dir_entries_need_sync || strike.dir_entries_need_sync,
        capacity_bytes: match (base.capacity_bytes, strike.capacity_bytes) {
            (0, c) | (c, 0) => c,
            (a, b) => a.min(b),
        },
        latency_min_us: base.latency_min_us.max(strike.latency_min_us),
        latency_max_us: base.latency_max_us.max(strike.latency_max_us),
        sync_latency_min_us: base.sync_latency_min_us.max(strike.sync_latency_min_us),
        sync_latency_max_us: base.sync_latency_max_us.max(strike.sync_latency_max_us),
    }
}

/// Flip one random bit of the newest non-empty segment file (`*.log`) of
/// a random partition directory on `disk`. The disk records the flip as a
/// fault event.
///
/// Only the newest segment: recovery rescans it at every start, so a
/// correct broker must notice the flip. Older segments lie below the
/// recovery point, which recovery trusts as Kafka's does; rot there is
/// bit rot's business (`disk-faults` with `bit_rot`), which the checkers
/// judge as damage one replica cannot repair.
fn flip_one_bit(disk: &crate::disk::SimDisk, rng: &mut ChaCha8Rng) {
    use faultline_broker::io::Fs;
    let mut logs = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(crate::runner::DATA_DIR)];
    while let Some(dir) = dirs.pop() {
        for p in disk.list_dir(&dir).unwrap_or_default() {
            if disk.is_dir(&p) {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "log") {
                if let Some(len) = disk.durable_contents(&p).map(|c| c.len() as u64).filter(|l| *l > 0) {
                    logs.push((p, len));
                }
            }
        }
    }
    logs.sort();
    // Segment names are zero-padded base offsets: the last per directory
    // is the newest.
    let mut newest: BTreeMap<std::path::PathBuf, (std::path::PathBuf, u64)> = BTreeMap::new();
    for (p, len) in logs {
        newest.insert(p.parent().map(|d| d.to_path_buf()).unwrap_or_default(), (p, len));
    }
    let logs: Vec<(std::path::PathBuf, u64)> = newest.into_values().collect();
    if logs.is_empty() {
        return;
    }
    let (path, len) = &logs[rng.random_range(0..logs.len())];
    let hit = disk.flip_bit(path, rng.random_range(0..*len), rng.random_range(0..8u8));
    assert!(hit, "flipped a bit beyond the end of {}", path.display());
}

/// What the injector did to a host's software, for the runner to follow up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostChange {
    None,
    Crashed(String),
    Restarted(String),
    /// Several hosts went down at once (power loss of them all).
    CrashedAll(Vec<String>),
}

/// Applies and heals faults, counting overlaps.
pub struct Injector {
    network: Network,
    base_disk: DiskFaults,
    /// Strikes wanting the directed link (from, to) dropped.
    cut: BTreeMap<(String, String), u32>,
    /// Strikes wanting the undirected link (low, high) held.
    held: BTreeMap<(String, String), u32>,
    /// Strikes wanting a host's software down.
    down: BTreeMap<String, u32>,
    /// Disk fault strikes active per host, in start order.
    disk: BTreeMap<String, Vec<DiskFaults>>,
    /// Chooses which bit a crash-corrupt strike flips.
    rng: ChaCha8Rng,
}

fn undirected(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

fn bump(map: &mut BTreeMap<(String, String), u32>, key: (String, String), up: bool) {
    let n = map.entry(key.clone()).or_default();
    if up {
        *n += 1;
    } else {
        assert!(*n > 0, "healing a link fault that was never applied: {key:?}");
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl Injector {
    /// An injector for a world whose brokers' disks start with `base_disk`.
    pub fn new(network: Network, base_disk: DiskFaults, rng: ChaCha8Rng) -> Injector {
        Injector {
            network,
            base_disk,
            rng,
            cut: BTreeMap::new(),
            held: BTreeMap::new(),
            down: BTreeMap::new(),
            disk: BTreeMap::new(),
        }
    }

    /// Hosts whose software a strike holds down.
    pub fn down_hosts(&self) -> BTreeSet<String> {
        self.down.keys().cloned().collect()
    }

    /// Start (`up`) or end a fault. `now` is the simulated time.
    pub fn apply(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        nodes: &BTreeMap<String, Arc<NodeState>>,
        fault: &Fault,
        up: bool,
        now: Duration,
    ) -> HostChange {
        match fault {
            Fault::Partition { a, b } => {
                for x in a {
                    for y in b {
                        bump(&mut self.cut, (x.clone(), y.clone()), up);
                        bump(&mut self.cut, (y.clone(), x.clone()), up);
                        self.sync_link(sim, x, y);
                    }
                }
            }
            Fault::PartitionOneway { from, to } => {
                bump(&mut self.cut, (from.clone(), to.clone()), up);
                self.sync_link(sim, from, to);
            }
            Fault::Pause { host } => {
                let others: Vec<String> = nodes.keys().filter(|h| *h != host).cloned().collect();
                for o in &others {
                    bump(&mut self.held, undirected(host, o), up);
                    self.sync_link(sim, host, o);
                }
            }
            Fault::LinkDrop { a, b, rate } => {
                sim.set_link_fail_rate(a.as_str(), b.as_str(), if up { *rate } else { 0.0 });
                if !up {
                    self.sync_link(sim, a, b);
                }
            }
            Fault::LinkDelay { a, b, latency_ms } => {
                if up {
                    sim.set_link_latency(a.as_str(), b.as_str(), Duration::from_millis(*latency_ms));
                } else {
                    sim.set_link_latency(a.as_str(), b.as_str(), Duration::from_millis(self.network.min_latency_ms));
                    sim.set_link_max_message_latency(
                        a.as_str(),
                        b.as_str(),
                        Duration::from_millis(self.network.max_latency_ms),
                    );
                }
            }
            Fault::Crash { host }
            | Fault::ProcessCrash { host }
            | Fault::CrashClient { host }
            | Fault::CrashCorrupt { host } => return self.take_down(sim, nodes, host, fault, up),
            Fault::PowerLossAll { hosts } => {
                // One instant for all: every disk drops its unsynced writes
                // before any host comes back.
                let mut crashed = Vec::new();
                for host in hosts {
                    if let HostChange::Crashed(h) = self.take_down(sim, nodes, host, fault, up) {
                        crashed.push(h);
                    }
                }
                if !crashed.is_empty() {
                    return HostChange::CrashedAll(crashed);
                }
            }
            Fault::Disk { host, faults } => {
                let active = self.disk.entry(host.clone()).or_default();
                if up {
                    active.push(faults.clone());
                } else if let Some(i) = active.iter().position(|f| f == faults) {
                    active.remove(i);
                }
                let effective = active.iter().fold(self.base_disk.clone(), |acc, f| overlay(&acc, f));
                if let Some(node) = nodes.get(host) {
                    node.disk.set_faults(effective);
                }
            }
            Fault::ClockJump { host, ms } => {
                if let Some(node) = nodes.get(host) {
                    let mut s = node.skew();
                    s.offset_ms += if up { *ms } else { -*ms };
                    node.set_skew(s);
                }
            }
            Fault::IsolateLeader
            | Fault::CrashLeader
            | Fault::CrashAfterVote
            | Fault::CrashNewLeader
            | Fault::CrashPartitionLeader { .. }
            | Fault::IsolatePartitionLeader { .. } => {
                unreachable!("the runner resolves {fault} to a concrete fault before applying it")
            }
            Fault::ClockDrift { host, ppm } => {
                if let Some(node) = nodes.get(host) {
                    let s = node.skew();
                    // Fold the drift so far into the offset, so that changing
                    // the rate does not rewrite the past.
                    let offset_ms = s.error_ms(now);
                    let drift_ppm = s.drift_ppm + if up { *ppm } else { -*ppm };
                    node.set_skew(ClockSkew { offset_ms, drift_ppm, drift_since: now });
                }
            }
        }
        HostChange::None
    }

    /// Crash (`up`) or restart `host` for a strike of `fault`, counting
    /// overlapping strikes: the host goes down with the first and comes
    /// back with the last. Power loss unless `fault` is a process crash;
    /// a crash-corrupt strike also flips a bit while the host is down.
    fn take_down(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        nodes: &BTreeMap<String, Arc<NodeState>>,
        host: &String,
        fault: &Fault,
        up: bool,
    ) -> HostChange {
        let n = self.down.entry(host.clone()).or_default();
        if up {
            *n += 1;
            if *n == 1 {
                sim.crash(host.as_str());
                if let Some(node) = nodes.get(host) {
                    if matches!(fault, Fault::ProcessCrash { .. }) {
                        node.disk.process_crash();
                    } else {
                        node.disk.crash();
                    }
                    if matches!(fault, Fault::CrashCorrupt { .. }) {
                        flip_one_bit(&node.disk, &mut self.rng);
                    }
                }
                return HostChange::Crashed(host.clone());
            }
        } else {
            assert!(*n > 0, "restarting {host}, which no strike crashed");
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.down.remove(host);
                sim.bounce(host.as_str());
                return HostChange::Restarted(host.clone());
            }
        }
        HostChange::None
    }

    /// Make the link between `x` and `y` match the counts: held if a pause
    /// wants it, each direction dropped if a partition wants it.
    fn sync_link(&self, sim: &mut turmoil::Sim<'_>, x: &str, y: &str) {
        if self.held.contains_key(&undirected(x, y)) {
            sim.hold(x, y);
        } else {
            sim.release(x, y);
        }
        if self.cut.contains_key(&(x.to_string(), y.to_string())) {
            sim.partition_oneway(x, y);
        }
        if self.cut.contains_key(&(y.to_string(), x.to_string())) {
            sim.partition_oneway(y, x);
        }
    }

    /// Whether anything is still in force.
    pub fn is_quiet(&self) -> bool {
        self.cut.is_empty() && self.held.is_empty() && self.down.is_empty() && self.disk.values().all(Vec::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed;

    fn roles() -> Roles {
        Roles {
            brokers: vec!["broker-0".into()],
            clients: vec!["producer-0".into(), "consumer-0".into()],
            ..Roles::default()
        }
    }

    fn quorum_roles() -> Roles {
        Roles {
            brokers: vec!["broker-0".into(), "broker-1".into()],
            clients: vec!["producer-0".into()],
            controllers: vec!["controller-0".into(), "controller-1".into(), "controller-2".into()],
            voters: vec!["controller-0".into(), "controller-1".into(), "controller-2".into()],
            partitions: Vec::new(),
            coordinator: None,
        }
    }

    #[test]
    fn rolling_restart_takes_every_server_down_once_per_round() {
        let n = Nemesis { kind: NemesisKind::RollingRestart, interval_s: 1.0, duration_s: 0.5, probability: 1.0 };
        let s = plan(&[n], &quorum_roles(), Duration::from_secs(20), &mut seed::rng(5, "nemesis"));
        assert!(s.windows(2).all(|p| p[0].end < p[1].start), "one server at a time: {s:?}");
        let first: BTreeSet<String> = s
            .iter()
            .take(5)
            .map(|s| match &s.fault {
                Fault::ProcessCrash { host } => host.clone(),
                other => panic!("not a process crash: {other}"),
            })
            .collect();
        assert_eq!(first.len(), 5, "the first round restarts all five servers: {s:?}");
    }

    #[test]
    fn quorum_faults_aim_at_voters() {
        let ns = vec![
            nemesis(NemesisKind::QuorumLinkDrop { rate: 0.5 }),
            nemesis(NemesisKind::IsolateLeader),
            nemesis(NemesisKind::CrashLeader),
        ];
        let r = quorum_roles();
        let s = plan(&ns, &r, Duration::from_secs(10), &mut seed::rng(6, "nemesis"));
        assert!(s.iter().any(|s| s.fault == Fault::IsolateLeader));
        assert!(s.iter().any(|s| s.fault == Fault::CrashLeader));
        for st in &s {
            if let Fault::LinkDrop { a, b, .. } = &st.fault {
                assert!(a != b && r.voters.contains(a) && r.voters.contains(b));
            }
        }
        // Without a quorum there is no leader to aim at.
        assert!(plan(&ns[1..], &roles(), Duration::from_secs(10), &mut seed::rng(6, "nemesis")).is_empty());
    }

    fn replicated_roles() -> Roles {
        let brokers: Vec<String> = (0..3).map(|i| format!("broker-{i}")).collect();
        Roles {
            brokers: brokers.clone(),
            clients: vec!["producer-0".into(), "consumer-0".into()],
            controllers: Vec::new(),
            voters: brokers,
            partitions: (0..4).map(|p| TopicPartition { topic: "events".into(), partition: p }).collect(),
            coordinator: Some(TopicPartition { topic: "__consumer_offsets".into(), partition: 2 }),
        }
    }

    #[test]
    fn coordinator_faults_aim_at_the_groups_offsets_partition() {
        let ns = vec![nemesis(NemesisKind::CrashCoordinator), nemesis(NemesisKind::IsolateCoordinator)];
        let s = plan(&ns, &replicated_roles(), Duration::from_secs(10), &mut seed::rng(9, "nemesis"));
        assert!(!s.is_empty());
        for st in &s {
            match &st.fault {
                Fault::CrashPartitionLeader { topic, partition }
                | Fault::IsolatePartitionLeader { topic, partition } => {
                    assert_eq!((topic.as_str(), *partition), ("__consumer_offsets", 2))
                }
                other => panic!("not a coordinator fault: {other}"),
            }
        }
        let none = Roles { coordinator: None, ..replicated_roles() };
        assert!(plan(&ns, &none, Duration::from_secs(10), &mut seed::rng(9, "nemesis")).is_empty());
    }

    #[test]
    fn partition_leader_faults_name_a_data_partition() {
        let ns = vec![nemesis(NemesisKind::CrashPartitionLeader), nemesis(NemesisKind::IsolatePartitionLeader)];
        let r = replicated_roles();
        let s = plan(&ns, &r, Duration::from_secs(10), &mut seed::rng(7, "nemesis"));
        let mut chosen = BTreeSet::new();
        for st in &s {
            match &st.fault {
                Fault::CrashPartitionLeader { topic, partition }
                | Fault::IsolatePartitionLeader { topic, partition } => {
                    assert!(r.partitions.contains(&TopicPartition { topic: topic.clone(), partition: *partition }));
                    chosen.insert(*partition);
                    assert!(st.fault.aims_at_a_leader());
                }
                other => panic!("unexpected fault {other}"),
            }
        }
        assert!(s.iter().any(|s| matches!(s.fault, Fault::CrashPartitionLeader { .. })));
        assert!(s.iter().any(|s| matches!(s.fault, Fault::IsolatePartitionLeader { .. })));
        assert!(chosen.len() > 1, "the seed spreads the strikes over partitions: {s:?}");
        // No data partitions, no target.
        let none = Roles { partitions: Vec::new(), ..r };
        assert!(plan(&ns, &none, Duration::from_secs(10), &mut seed::rng(7, "nemesis")).is_empty());
    }

    #[test]
    fn power_loss_all_takes_every_server_and_no_client() {
        let r = replicated_roles();
        let s = plan(&[nemesis(NemesisKind::PowerLossAll)], &r, Duration::from_secs(10), &mut seed::rng(8, "nemesis"));
        assert!(!s.is_empty());
        for st in &s {
            assert_eq!(st.fault, Fault::PowerLossAll { hosts: r.servers() });
            assert!(!st.fault.aims_at_a_leader());
        }
    }

    fn nemesis(kind: NemesisKind) -> Nemesis {
        Nemesis { kind, interval_s: 1.0, duration_s: 0.5, probability: 1.0 }
    }

    #[test]
    fn plans_are_a_function_of_the_seed() {
        let ns = vec![nemesis(NemesisKind::PartitionRandomHalves), nemesis(NemesisKind::CrashRestart)];
        let w = Duration::from_secs(10);
        let a = plan(&ns, &roles(), w, &mut seed::rng(1, "nemesis"));
        let b = plan(&ns, &roles(), w, &mut seed::rng(1, "nemesis"));
        let c = plan(&ns, &roles(), w, &mut seed::rng(2, "nemesis"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(!a.is_empty());
        for s in &a {
            assert!(s.start <= s.end && s.end <= w);
        }
        assert!(a.windows(2).all(|p| p[0].start <= p[1].start));
    }

    #[test]
    fn strikes_of_one_nemesis_do_not_overlap() {
        let ns = vec![nemesis(NemesisKind::CrashRestart)];
        let s = plan(&ns, &roles(), Duration::from_secs(30), &mut seed::rng(3, "nemesis"));
        assert!(s.windows(2).all(|p| p[0].end <= p[1].start));
    }

    #[test]
    fn no_target_no_strike() {
        let ns = vec![nemesis(NemesisKind::CrashClient)];
        let r = Roles { brokers: vec!["broker-0".into()], ..Roles::default() };
        assert!(plan(&ns, &r, Duration::from_secs(5), &mut seed::rng(4, "nemesis")).is_empty());
    }

    #[test]
    fn overlay_takes_the_worse_fault() {
        let base = DiskFaults { torn_write: 0.5, capacity_bytes: 0, ..DiskFaults::default() };
        let strike = DiskFaults { write_error: 0.1, capacity_bytes: 4096, ..DiskFaults::default() };
        let o = overlay(&base, &strike);
        assert_eq!((o.torn_write, o.write_error, o.capacity_bytes), (0.5, 0.1, 4096));
    }
}
