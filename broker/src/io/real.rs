//! Real mode: the seam implemented with tokio sockets, std files and the OS
//! clock. This is the only module of the broker allowed to touch them.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{BoxFuture, Env, File, Fs, Io, Listener, OpenOptions, Stream};

/// The real world: tokio for the network and timers, std for files.
pub struct RealIo {
    started: Instant,
    rng: AtomicU64,
    fs: Arc<RealFs>,
}

impl RealIo {
    /// A real-mode environment. Randomness is seeded from the OS clock here;
    /// real mode makes no determinism promise.
    pub fn new() -> Env {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        Arc::new(RealIo { started: Instant::now(), rng: AtomicU64::new(seed | 1), fs: Arc::new(RealFs) })
    }
}

struct RealListener(tokio::net::TcpListener);

#[async_trait]
impl Listener for RealListener {
    async fn accept(&self) -> io::Result<(Box<dyn Stream>, String)> {
        let (s, peer) = self.0.accept().await?;
        s.set_nodelay(true)?;
        Ok((Box::new(s), peer.to_string()))
    }
    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.0.local_addr()
    }
}

#[async_trait]
impl Io for RealIo {
    async fn listen(&self, addr: &str) -> io::Result<Box<dyn Listener>> {
        Ok(Box::new(RealListener(tokio::net::TcpListener::bind(addr).await?)))
    }
    async fn connect(&self, addr: &str) -> io::Result<Box<dyn Stream>> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Box::new(s))
    }
    fn fs(&self) -> Arc<dyn Fs> {
        self.fs.clone()
    }
    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }
    fn spawn(&self, _name: &str, task: BoxFuture) {
        tokio::spawn(task);
    }
    async fn run_disk_work<'a>(&'a self, work: Box<dyn FnOnce() + Send + 'a>) {
        // On the multi-threaded runtime `faultline serve` uses, hand this
        // worker's other tasks to another thread while the disk call blocks:
        // otherwise a task parked in this worker's LIFO slot (a connection
        // that only wants ApiVersions) waits for the whole disk call.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
            _ => work(),
        }
    }
    fn random_u64(&self) -> u64 {
        // splitmix64 over an atomic counter: cheap and good enough for jitter.
        let mut z = self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// std::fs behind the [`Fs`] trait.
pub struct RealFs;

struct RealFile(std::fs::File);

impl Fs for RealFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<io::Result<Vec<_>>>()?;
        out.sort();
        Ok(out)
    }
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<Box<dyn File>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(opts.create && !opts.create_new)
            .create_new(opts.create_new)
            .truncate(opts.truncate)
            .open(path)?;
        Ok(Box::new(RealFile(f)))
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }
}

impl File for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(&self.0, buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buf, offset)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}
