//! The simulator's side of the I/O seam: [`SimIo`] implements the broker's
//! [`Io`] on turmoil's simulated network, its paused tokio clock and a
//! per-host [`SimDisk`].
//!
//! This is the only module of the simulator allowed to use `tokio::time` and
//! `tokio::task::spawn_local`: inside a turmoil host they run on simulated
//! time, single-threaded, in a deterministic order.
//!
//! Whatever must survive a host crash (the disk, the RNG stream, the clock
//! skew) lives in a [`NodeState`] the runner keeps; a `SimIo` is rebuilt each
//! time turmoil (re)starts the host's software.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use faultline_broker::io::{BoxFuture, Env, Fs, Io, Listener, Stream};
use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::disk::SimDisk;
use crate::seed;
use crate::trace::{fnv1a, EventKind, Trace};

/// Simulated time since the simulation began, as seen by the running host.
/// Zero outside a host (the runner uses `Sim::elapsed` there).
pub fn sim_now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// How far a node's wall clock is from the true simulated time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClockSkew {
    /// A fixed jump, in milliseconds (may be negative: the clock went back).
    pub offset_ms: i64,
    /// Drift in parts per million, accumulating since `drift_since`.
    pub drift_ppm: i64,
    pub drift_since: Duration,
}

impl ClockSkew {
    /// The total error at simulated time `now`.
    pub fn error_ms(&self, now: Duration) -> i64 {
        let drifting = now.saturating_sub(self.drift_since).as_millis() as i64;
        self.offset_ms + drifting * self.drift_ppm / 1_000_000
    }
}

/// What a simulated host keeps across crashes and restarts.
pub struct NodeState {
    pub name: Arc<str>,
    pub disk: SimDisk,
    rng: Mutex<ChaCha8Rng>,
    clock: Mutex<ClockSkew>,
    /// How often a buggify site fires on this node (0: never), and the
    /// stream it draws from (its own, so turning buggify on changes no other
    /// draw).
    buggify: Mutex<(f64, ChaCha8Rng)>,
    /// Starts of the host's software so far (see [`NodeState::start`]).
    incarnation: std::sync::atomic::AtomicU64,
}

impl NodeState {
    /// State for host `name`, its RNG and disk derived from the run seed.
    pub fn new(run_seed: u64, name: &str) -> Arc<NodeState> {
        Arc::new(NodeState {
            name: name.into(),
            disk: SimDisk::perfect(seed::derive(run_seed, &format!("disk/{name}"))),
            rng: Mutex::new(seed::rng(run_seed, &format!("node/{name}"))),
            clock: Mutex::new(ClockSkew::default()),
            buggify: Mutex::new((0.0, seed::rng(run_seed, &format!("buggify/{name}")))),
            incarnation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Make buggify sites on this node fire with `probability` each time
    /// they are reached.
    pub fn set_buggify(&self, probability: f64) {
        self.buggify.lock().expect("buggify lock").0 = probability;
    }

    /// The host's software is starting again: begin a new incarnation,
    /// record it, and return its number (1 for the first start).
    pub fn start(&self, trace: &Trace) -> u64 {
        let n = self.incarnation.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        trace.observe(sim_now().as_nanos() as u64, &self.name, n, crate::history::ObservedEvent::Started);
        n
    }

    /// The current incarnation (0 before the first start).
    pub fn incarnation(&self) -> u64 {
        self.incarnation.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn skew(&self) -> ClockSkew {
        *self.clock.lock().expect("clock lock")
    }

    pub fn set_skew(&self, skew: ClockSkew) {
        *self.clock.lock().expect("clock lock") = skew;
    }
}

/// The seam inside one simulated host.
pub struct SimIo {
    node: Arc<NodeState>,
    trace: Trace,
    epoch_ms: i64,
}

impl SimIo {
    /// Build the environment for a host whose software is (re)starting now.
    /// It returns the shared handle every broker component takes, not the
    /// bare value.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(node: Arc<NodeState>, trace: Trace, epoch_ms: i64) -> Env {
        Arc::new(SimIo { node, trace, epoch_ms })
    }
}

struct SimListener {
    inner: turmoil::net::TcpListener,
    node: Arc<str>,
    trace: Trace,
}

#[async_trait]
impl Listener for SimListener {
    async fn accept(&self) -> io::Result<(Box<dyn Stream>, String)> {
        let (s, peer) = self.inner.accept().await?;
        let peer = peer.to_string();
        Ok((Box::new(TracedStream::new(s, self.node.clone(), peer.clone(), self.trace.clone())), peer))
    }
    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// The port of "host:port"; turmoil listeners bind the unspecified address,
/// so the host part only has to be well formed.
fn port_of(addr: &str) -> io::Result<u16> {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("bad listen address {addr:?}: want host:port"))
    })
}

#[async_trait]
impl Io for SimIo {
    async fn listen(&self, addr: &str) -> io::Result<Box<dyn Listener>> {
        let inner = turmoil::net::TcpListener::bind(("0.0.0.0", port_of(addr)?)).await?;
        Ok(Box::new(SimListener { inner, node: self.node.name.clone(), trace: self.trace.clone() }))
    }

    async fn connect(&self, addr: &str) -> io::Result<Box<dyn Stream>> {
        let s = turmoil::net::TcpStream::connect(addr).await?;
        Ok(Box::new(TracedStream::new(s, self.node.name.clone(), addr.to_string(), self.trace.clone())))
    }

    fn fs(&self) -> Arc<dyn Fs> {
        Arc::new(self.node.disk.clone())
    }

    fn now_ms(&self) -> i64 {
        let now = sim_now();
        self.epoch_ms + now.as_millis() as i64 + self.node.skew().error_ms(now)
    }

    /// Simulated time since the simulation began: monotonic, which is all
    /// the seam promises. Not "since this host started": turmoil's host clock
    /// read while a restarted host's software is being built still carries
    /// the previous runtime's instant, and that reading would leak real time
    /// into every later deadline of the host.
    fn elapsed(&self) -> Duration {
        sim_now()
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }

    /// Tasks run on the host's local set. A panic inside one would end only
    /// that task, silently; it is caught here and recorded, and the runner
    /// fails the run with it (assertions on invariants are panics).
    fn spawn(&self, name: &str, task: BoxFuture) {
        use futures::FutureExt;
        let (trace, node, name) = (self.trace.clone(), self.node.name.clone(), name.to_string());
        tokio::task::spawn_local(async move {
            if let Err(payload) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
                let message = panic_message(&*payload);
                trace.record_panic(sim_now().as_nanos() as u64, &node, &name, &message);
            }
        });
    }

    fn random_u64(&self) -> u64 {
        self.node.rng.lock().expect("rng lock").next_u64()
    }

    /// Every report goes to the trace (so the hash covers it) and to the
    /// run's observations, which the quorum checkers judge and the runner
    /// aims leader faults with.
    fn observe(&self, event: &faultline_broker::io::Observation) {
        let at = sim_now().as_nanos() as u64;
        self.trace.observe(at, &self.node.name, self.node.incarnation(), event.into());
    }

    fn buggify(&self, site: &'static str) -> bool {
        use rand::Rng;
        let fired = {
            let mut b = self.node.buggify.lock().expect("buggify lock");
            let p = b.0;
            p > 0.0 && b.1.random_bool(p)
        };
        if fired {
            let at = sim_now().as_nanos() as u64;
            self.trace.record(at, &self.node.name, EventKind::Node, format_args!("buggify {site}"));
        }
        fired
    }

    async fn pay_disk_latency(&self) {
        let d = self.node.disk.take_latency();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

/// The text of a panic payload (`panic!` with a literal or a format).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-text payload".to_string())
}

/// A turmoil stream that reports every chunk it delivers to the trace.
struct TracedStream {
    inner: turmoil::net::TcpStream,
    node: Arc<str>,
    peer: String,
    trace: Trace,
}

impl TracedStream {
    fn new(inner: turmoil::net::TcpStream, node: Arc<str>, peer: String, trace: Trace) -> Self {
        TracedStream { inner, node, peer, trace }
    }
}

impl AsyncRead for TracedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(r) = &res {
            let at = sim_now().as_nanos() as u64;
            match r {
                Ok(()) => {
                    let got = &buf.filled()[before..];
                    if got.is_empty() {
                        self.trace.record(at, &self.node, EventKind::Net, format_args!("eof from {}", self.peer));
                    } else {
                        let digest = fnv1a(got);
                        self.trace.record(
                            at,
                            &self.node,
                            EventKind::Net,
                            format_args!("recv {} bytes {digest:016x} from {}", got.len(), self.peer),
                        );
                    }
                }
                Err(e) => self.trace.record(
                    at,
                    &self.node,
                    EventKind::Net,
                    format_args!("error from {}: {:?}", self.peer, e.kind()),
                ),
            }
        }
        res
    }
}

impl AsyncWrite for TracedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_combines_jump_and_drift() {
        let s = ClockSkew { offset_ms: -500, drift_ppm: 1000, drift_since: Duration::from_secs(1) };
        assert_eq!(s.error_ms(Duration::from_secs(1)), -500);
        // 1000 ppm over 10 s is 10 ms.
        assert_eq!(s.error_ms(Duration::from_secs(11)), -490);
    }

    #[test]
    fn listen_address_needs_a_port() {
        assert_eq!(port_of("broker-0:9092").unwrap(), 9092);
        assert!(port_of("broker-0").is_err());
    }
}

/// Wall-clock time spent running simulations, for progress and speed
/// reports. Lives here because it reads the host's real clock; it measures
/// the simulator from outside and never feeds a simulation.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch(std::time::Instant::now())
    }

    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}
