//! The async shell around the [`Node`] core: it owns everything that waits —
//! the accept loop, one task per connection, parked requests, and the
//! policy timer — and drives the core through the seam. It makes no Kafka
//! decision of its own.
//!
//! Every call into the core runs inside [`on_disk`], so the disk latency it
//! causes is paid by the request that caused it, and in real mode a slow disk
//! call holds up only that request. A connection answers its requests
//! strictly in order, one at a time, as Kafka does; while a request is
//! parked the connection keeps reading, so a client that hangs up ends its
//! long poll at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};

use super::node::{Clock, Node, Output, Parked, Step, Wake, WakeKey};
use crate::io::{self, on_disk, DiskScope, Env, Listener, Stream};
use crate::wire::{write_frame, FrameReader};

/// State shared by every task of one broker.
pub(crate) struct Shell {
    pub env: Env,
    pub node: Arc<Node>,
    waiters: Waiters,
    /// `queued.max.request.bytes`, shared by every connection's reader.
    request_budget: Arc<Semaphore>,
    connections: Connections,
    /// Becomes true when the broker is asked to stop.
    stop: watch::Sender<bool>,
}

impl Shell {
    pub fn new(env: Env, node: Arc<Node>) -> Shell {
        let budget = node.config.queued_max_request_bytes.min(Semaphore::MAX_PERMITS);
        Shell {
            env,
            node,
            waiters: Waiters::default(),
            request_budget: Arc::new(Semaphore::new(budget)),
            connections: Connections::default(),
            stop: watch::channel(false).0,
        }
    }

    pub fn clock(&self) -> Clock {
        Clock { now_ms: self.env.now_ms(), elapsed: self.env.elapsed() }
    }

    pub fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Resolves once the broker is asked to stop.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Run a core call on the disk path, then wake what it moved.
    pub(crate) async fn core<T: Send>(&self, f: impl FnOnce(&Node, &DiskScope, Clock) -> (T, Vec<Wake>) + Send) -> T {
        let clock = self.clock();
        let node = &*self.node;
        let (out, wake) = on_disk(&self.env, |disk| f(node, disk, clock)).await;
        if self.env.buggify("shell.slow-disk") {
            // A disk call that completes late: whatever it woke waits too.
            self.env.sleep(Duration::from_millis(1 + self.env.random_u64() % 20)).await;
        }
        for w in &wake {
            self.waiters.wake(&w.key());
        }
        out
    }

    async fn step(&self, f: impl FnOnce(&Node, &DiskScope, Clock) -> Output + Send) -> Step {
        self.core(|node, disk, clock| {
            let out = f(node, disk, clock);
            (out.step, out.wake)
        })
        .await
    }
}

/// Parked requests, woken when what they watch moves: a partition's high
/// watermark or a consumer group's signal. Entries die with their last waiter.
#[derive(Default)]
struct Waiters {
    map: Mutex<BTreeMap<WakeKey, Weak<Notify>>>,
}

impl Waiters {
    fn subscribe(&self, key: WakeKey) -> Arc<Notify> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get(&key).and_then(Weak::upgrade) {
            return n;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let n = Arc::new(Notify::new());
        map.insert(key, Arc::downgrade(&n));
        n
    }

    fn wake(&self, key: &WakeKey) {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get(key).and_then(Weak::upgrade) {
            n.notify_waiters();
        }
    }
}

/// Open connections, in all and per peer address (`max.connections`,
/// `max.connections.per.ip`).
#[derive(Default)]
struct Connections {
    by_ip: Mutex<BTreeMap<String, usize>>,
}

/// A counted connection; uncounted when dropped.
struct ConnectionSlot<'a> {
    connections: &'a Connections,
    ip: String,
}

impl Connections {
    fn admit(&self, peer: &str, max_total: usize, max_per_ip: usize) -> Result<ConnectionSlot<'_>, String> {
        let ip = peer.rsplit_once(':').map_or(peer, |(ip, _)| ip).to_string();
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = by_ip.values().sum();
        if total >= max_total {
            return Err(format!("max_connections ({max_total}) reached"));
        }
        let mine = by_ip.entry(ip.clone()).or_default();
        if *mine >= max_per_ip {
            return Err(format!("max_connections_per_ip ({max_per_ip}) reached for {ip}"));
        }
        *mine += 1;
        Ok(ConnectionSlot { connections: self, ip })
    }
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        let mut by_ip = self.connections.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

pub(crate) async fn accept_loop(shell: Arc<Shell>, listener: Box<dyn Listener>) {
    let stopping = shell.stopping();
    tokio::pin!(stopping);
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stopping => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                next_id += 1;
                let id = next_id;
                tracing::debug!(conn = id, %peer, "connection accepted");
                let s = shell.clone();
                io::spawn(&shell.env, "broker-connection", async move { serve(s, stream, peer, id).await });
            }
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                shell.env.sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!("accept loop stopped");
}

/// Why a connection task ended early.
enum Ended {
    Stopping,
    HungUp,
}

async fn serve(shell: Arc<Shell>, mut stream: Box<dyn Stream>, peer: String, id: u64) {
    let config = &shell.node.config;
    let _slot = match shell.connections.admit(&peer, config.max_connections, config.max_connections_per_ip) {
        Ok(slot) => slot,
        Err(why) => {
            tracing::warn!(conn = id, %peer, %why, "refusing connection");
            return;
        }
    };
    let stopping = shell.stopping();
    tokio::pin!(stopping);
    let idle = Duration::from_millis(config.connections_max_idle_ms);
    let mut reader = FrameReader::with_budget(config.socket_request_max_bytes, shell.request_budget.clone());
    if shell.env.buggify("shell.short-reads") {
        // Frames arrive a few bytes at a time on this connection.
        reader.set_read_limit(7);
    }
    loop {
        // Idle time counts from the last answered request, so a peer that
        // trickles a frame in byte by byte is closed like a silent one.
        let frame = tokio::select! {
            biased;
            _ = &mut stopping => return,
            f = reader.next(&mut stream) => f,
            _ = shell.env.sleep(idle) => {
                tracing::info!(conn = id, %peer, idle_ms = config.connections_max_idle_ms, buffered = reader.buffered(), "closing idle connection");
                return;
            }
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => {
                tracing::debug!(conn = id, %peer, "connection closed by client");
                return;
            }
            Err(e) => {
                tracing::warn!(conn = id, %peer, error = %e, "closing connection: bad frame");
                return;
            }
        };
        let mut step = shell.step(|node, disk, clock| node.handle(disk, clock, frame)).await;
        loop {
            match step {
                Step::Reply(out) => {
                    if let Err(e) = write_frame(&mut stream, &out).await {
                        tracing::debug!(conn = id, %peer, error = %e, "connection lost while writing a response");
                        return;
                    }
                    break;
                }
                Step::Silent => break,
                Step::Close(reason) => {
                    tracing::warn!(conn = id, %peer, %reason, "closing connection");
                    return;
                }
                Step::Await(answer) => {
                    step = tokio::select! {
                        biased;
                        _ = &mut stopping => return,
                        s = answer => s,
                    };
                }
                Step::Park(parked) => match wait(&shell, &parked, &mut reader, &mut stream, &mut stopping).await {
                    Ok(()) => step = shell.step(|node, disk, clock| node.resume(disk, clock, parked)).await,
                    Err(Ended::Stopping) => return,
                    Err(Ended::HungUp) => {
                        tracing::debug!(conn = id, %peer, "client hung up while its request waited");
                        return;
                    }
                },
            }
        }
    }
}

/// Wait until something watched moves or the parked request's deadline
/// passes; fail if the broker stops or the client hangs up first.
async fn wait(
    shell: &Shell,
    parked: &Parked,
    reader: &mut FrameReader,
    stream: &mut Box<dyn Stream>,
    stopping: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> Result<(), Ended> {
    let notifies: Vec<Arc<Notify>> = parked.watched().map(|w| shell.waiters.subscribe(w.key())).collect();
    let mut notified: Vec<_> = notifies.iter().map(|n| Box::pin(n.notified())).collect();
    for n in &mut notified {
        n.as_mut().enable();
    }
    // Registered before this check, so a move after it is not missed. A
    // buggified wake-up resumes the request with nothing changed: it must
    // park again, not answer early.
    if parked.stale() || shell.env.buggify("shell.spurious-wakeup") {
        return Ok(());
    }
    let now = shell.env.elapsed();
    let left = parked.deadline().saturating_sub(now);
    let any_moved = async move {
        if notified.is_empty() {
            std::future::pending::<()>().await;
        }
        futures::future::select_all(notified).await;
    };
    tokio::select! {
        biased;
        _ = stopping => Err(Ended::Stopping),
        _ = reader.closed(stream) => Err(Ended::HungUp),
        _ = any_moved => Ok(()),
        _ = shell.env.sleep(left) => Ok(()),
    }
}

/// The policy timer: `flush.ms`, `segment.ms` and the group coordinators'
/// timeouts, applied by the core, which says when it is next due.
pub(crate) fn spawn_ticker(shell: Arc<Shell>) {
    let env = shell.env.clone();
    io::spawn(&env, "broker-ticker", async move {
        let stopping = shell.stopping();
        tokio::pin!(stopping);
        let mut pause = shell.node.tick_interval();
        loop {
            tokio::select! {
                biased;
                _ = &mut stopping => return,
                _ = shell.env.sleep(pause) => {}
            }
            assert!(!shell.node.config.bugs.panic_in_background_task, "planted panic in the broker's policy task");
            pause = shell
                .core(|node, disk, clock| {
                    let (wake, next) = node.tick(disk, clock);
                    (next, wake)
                })
                .await;
        }
    });
}
