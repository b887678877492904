//! The I/O seam: the only door between Faultline's logic and the world.
//!
//! Everything a node does that touches the outside — sockets, files, the clock,
//! sleeping, spawning tasks and randomness — goes through [`Io`] (and the [`Fs`]
//! and [`File`] traits it hands out). Two worlds implement it: [`real::RealIo`]
//! (tokio sockets, std files, the OS clock) for `faultline serve`, and the
//! simulator's turmoil-backed implementation in `faultline-sim`. Both live in the
//! same binary; the choice is a value, not a `cfg`.
//!
//! Rules for code above the seam: no `tokio::net`, `tokio::fs`, `tokio::time`,
//! `tokio::spawn`, `std::fs`, `Instant::now`, `SystemTime::now` or `thread_rng`.
//! The async traits of `tokio::io` and the primitives of `tokio::sync` are fine:
//! they do no I/O and read no clock. Every `tokio::select!` must be `biased;` so
//! that branch order never comes from tokio's unseeded RNG.

pub mod real;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

/// A boxed future, as the seam hands tasks to the runtime.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A byte stream: a TCP connection in either world.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A bound listening socket.
#[async_trait]
pub trait Listener: Send + Sync {
    /// Wait for the next connection; returns the stream and the peer address.
    async fn accept(&self) -> io::Result<(Box<dyn Stream>, String)>;
    /// The address actually bound (useful with port 0).
    fn local_addr(&self) -> io::Result<std::net::SocketAddr>;
}

/// The node's whole view of the outside world.
#[async_trait]
pub trait Io: Send + Sync + 'static {
    /// Bind a listener on `addr` ("host:port").
    async fn listen(&self, addr: &str) -> io::Result<Box<dyn Listener>>;
    /// Open a stream to `addr` ("host:port").
    async fn connect(&self, addr: &str) -> io::Result<Box<dyn Stream>>;
    /// The file system this node owns.
    fn fs(&self) -> Arc<dyn Fs>;
    /// Wall-clock time in milliseconds since the Unix epoch, as this node sees
    /// it (the simulator can make it jump or drift). Used for record
    /// timestamps and time-based segment rolls; never for measuring intervals.
    fn now_ms(&self) -> i64;
    /// Monotonic time since the node started; for timeouts and intervals.
    fn elapsed(&self) -> Duration;
    /// Sleep for `d` of this world's time.
    async fn sleep(&self, d: Duration);
    /// Run a task concurrently on this node. Tasks die with the node.
    fn spawn(&self, name: &str, task: BoxFuture);
    /// A random u64 from this node's seeded stream.
    fn random_u64(&self) -> u64;
    /// Buggify (as FoundationDB calls it): should the code at `site` take its
    /// rare path now — a spurious wake-up, a short read, a slow disk call?
    /// The simulator answers from the seed when a scenario asks for it, so
    /// rare paths run often and replay; real mode always answers no.
    fn buggify(&self, _site: &'static str) -> bool {
        false
    }
    /// Report something a node did that the simulator's checkers judge
    /// (quorum leaders, applied metadata). Real mode ignores it.
    fn observe(&self, _event: &Observation) {}
    /// Pay the latency the simulated disk charged since the last call. Real
    /// mode has nothing to pay. Callers above the seam use [`on_disk`], which
    /// pays for exactly the work it ran.
    async fn pay_disk_latency(&self) {}
    /// Run synchronous storage work, then pay its disk latency. Real mode runs
    /// it where a slow call (an fsync on a slow disk, creating thousands of
    /// partitions) cannot hold up tasks that need no disk; the simulator runs
    /// it inline, on its one thread, and charges the simulated latency.
    async fn run_disk_work<'a>(&'a self, work: Box<dyn FnOnce() + Send + 'a>) {
        work();
        self.pay_disk_latency().await;
    }
}

/// Proof that the code holding it runs inside [`on_disk`], so the disk
/// latency it causes is paid by the operation that caused it. Methods that
/// touch storage take a `&DiskScope`; the compiler then refuses a call from
/// anywhere that would not pay.
pub struct DiskScope(());

impl DiskScope {
    /// A scope for work outside any request path, where there is nobody to
    /// charge: opening the node at start-up, shutdown, and unit tests that
    /// drive the node core with no runtime at all.
    pub fn unmetered() -> DiskScope {
        DiskScope(())
    }
}

/// Run storage work `f` through the seam and pay its disk latency before
/// returning its result.
pub async fn on_disk<T: Send>(env: &Env, f: impl FnOnce(&DiskScope) -> T + Send) -> T {
    let mut out = None;
    let slot = &mut out;
    env.run_disk_work(Box::new(move || *slot = Some(f(&DiskScope(()))))).await;
    out.expect("disk work always runs")
}

/// What a node reports through [`Io::observe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// `node` learned that `leader` leads the metadata quorum in `epoch`
    /// (`None`: an election is under way).
    QuorumLeader { node: i32, epoch: i32, leader: Option<i32> },
    /// `node` applied the committed metadata record at `offset`, whose
    /// bytes hash to `digest` (control records such as LeaderChange too:
    /// nothing is applied, but the offset is observed).
    MetadataApplied { node: i32, offset: i64, digest: u64 },
    /// `node`'s controller became active in `epoch`.
    ControllerActivated { node: i32, epoch: i32, next_offset: i64 },
    /// Voter `node`'s vote for `candidate` in `epoch` is on its way.
    VoteGranted { node: i32, epoch: i32, candidate: i32 },
    /// Broker `node` now leads `topic`-`partition` at `leader_epoch`, as
    /// the published metadata image tells it (the simulator aims its
    /// partition-leader faults with these).
    PartitionLeader { node: i32, topic: String, partition: i32, leader_epoch: i32 },
}

/// Shared handle to the seam, passed to every component.
pub type Env = Arc<dyn Io>;

/// Run `fut` but give up after `d`: `None` on timeout.
pub async fn timeout<F: Future>(env: &Env, d: Duration, fut: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = fut => Some(out),
        _ = env.sleep(d) => None,
    }
}

/// Spawn a future built from an `async` block.
pub fn spawn<F: Future<Output = ()> + Send + 'static>(env: &Env, name: &str, fut: F) {
    env.spawn(name, Box::pin(fut));
}

/// How a file is opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Create the file if it does not exist.
    pub create: bool,
    /// Fail if the file already exists (with `create`).
    pub create_new: bool,
    /// Truncate to zero length on open.
    pub truncate: bool,
}

impl OpenOptions {
    /// Open an existing file; fail if absent.
    pub const EXISTING: OpenOptions = OpenOptions { create: false, create_new: false, truncate: false };
    /// Open, creating it if absent.
    pub const CREATE: OpenOptions = OpenOptions { create: true, create_new: false, truncate: false };
}

/// The file-system half of the seam. Synchronous on purpose: storage is a state
/// machine; the simulated disk charges latency that the node pays with
/// [`Io::pay_disk_latency`].
///
/// Durability contract (what the simulated disk enforces and the real disk
/// provides): data written to a file is durable only after [`File::sync`];
/// creating, renaming or removing a directory entry is durable only after
/// [`Fs::sync_dir`] on the parent.
pub trait Fs: Send + Sync {
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Entries of a directory (full paths), sorted by name.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<Box<dyn File>>;
    fn exists(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Make directory entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// An open file. Positioned reads and writes; no hidden cursor.
pub trait File: Send + Sync {
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Read up to `buf.len()` bytes at `offset`; returns bytes read (0 at EOF).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Read exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
            }
            done += n;
        }
        Ok(())
    }
    /// Write all of `buf` at `offset`, extending the file if needed.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// fsync: make everything written so far durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// Replace `path` with `data` so that a crash leaves the old or the new
/// contents, never a mix: write a temporary file next to it, fsync it, rename
/// it over, and fsync the directory. Recovery removes stray `.tmp` files.
pub fn write_atomically(fs: &dyn Fs, path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("path has no parent directory"))?;
    let name = path.file_name().ok_or_else(|| io::Error::other("path has no file name"))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = fs.open(&tmp, OpenOptions { create: true, create_new: false, truncate: true })?;
    f.write_at(data, 0)?;
    f.sync()?;
    drop(f);
    fs.rename(&tmp, path)?;
    fs.sync_dir(dir)
}
