//! A node opened on a disk with no free space at all: it must start, serve
//! reads and refuse writes with KAFKA_STORAGE_ERROR, and take writes again
//! once space returns.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::node::{Clock, Node, Step};
use crate::config::BrokerConfig;
use crate::fuzz_targets::{header_bytes, sample_batches, MemFs};
use crate::io::{DiskScope, File, Fs, OpenOptions};

/// A disk that refuses to grow any file or create any new one while full.
struct Disk {
    inner: MemFs,
    full: Arc<AtomicBool>,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

struct DiskFile(Box<dyn File>, Arc<AtomicBool>);

impl File for DiskFile {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.1.load(Ordering::SeqCst) && offset + buf.len() as u64 > self.0.len()? {
            return Err(enospc());
        }
        self.0.write_at(buf, offset)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        if self.1.load(Ordering::SeqCst) && len > self.0.len()? {
            return Err(enospc());
        }
        self.0.set_len(len)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync()
    }
}

impl Fs for Disk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) && !self.inner.is_dir(path) {
            return Err(enospc());
        }
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list_dir(path)
    }
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<Box<dyn File>> {
        if self.full.load(Ordering::SeqCst) && !self.inner.exists(path) && (opts.create || opts.create_new) {
            return Err(enospc());
        }
        Ok(Box::new(DiskFile(self.inner.open(path, opts)?, self.full.clone())))
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.inner.is_dir(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
}

const NOW: i64 = 1_700_000_000_000;

fn clock() -> Clock {
    Clock { now_ms: NOW, elapsed: Duration::ZERO }
}

fn call<T: Encodable>(node: &Node, key: ApiKey, version: i16, body: &T) -> Bytes {
    let mut frame = header_bytes(key, version);
    body.encode(&mut frame, version).unwrap();
    match node.handle(&DiskScope::unmetered(), clock(), frame.freeze()).step {
        Step::Reply(b) => b,
        _ => panic!("{key:?} was not answered at once"),
    }
}

fn produce(node: &Node) -> i16 {
    let req =
        ProduceRequest::default().with_acks(1).with_timeout_ms(1000).with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(sample_batches()))])]);
    let reply = call(node, ApiKey::Produce, 9, &req);
    let (_, resp): (_, ProduceResponse) = crate::wire::decode_response(reply.slice(4..), ApiKey::Produce, 9).unwrap();
    resp.responses[0].partition_responses[0].error_code
}

fn fetched_records(node: &Node) -> usize {
    let req =
        FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20)])]);
    let reply = call(node, ApiKey::Fetch, 12, &req);
    let (_, resp): (_, FetchResponse) = crate::wire::decode_response(reply.slice(4..), ApiKey::Fetch, 12).unwrap();
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    crate::client::batch::decode(p.records.clone().unwrap_or_default(), "t", 0, 0).unwrap().records.len()
}

#[test]
fn a_node_starts_on_a_full_disk_serves_reads_refuses_writes_and_recovers() {
    let full = Arc::new(AtomicBool::new(false));
    let fs: Arc<dyn Fs> = Arc::new(Disk { inner: MemFs::default(), full: full.clone() });
    let config = BrokerConfig { data_dir: "/data".into(), ..BrokerConfig::default() };
    let open = || Node::open(&DiskScope::unmetered(), fs.clone(), config.clone(), ("n".into(), 9092), NOW, 1);
    let node = open().unwrap();
    let mut t = CreatableTopic::default();
    t.name = TopicName(StrBytes::from_static_str("t"));
    t.num_partitions = 1;
    t.replication_factor = 1;
    call(&node, ApiKey::CreateTopics, 5, &CreateTopicsRequest::default().with_topics(vec![t]));
    assert_eq!(produce(&node), 0);
    assert_eq!(fetched_records(&node), 5);
    drop(node);

    // Restart with not one byte free.
    full.store(true, Ordering::SeqCst);
    let node = open().expect("a full disk must not stop the broker from starting");
    assert_eq!(fetched_records(&node), 5, "reads work on a full disk");
    assert_eq!(produce(&node), kafka_protocol::error::ResponseError::KafkaStorageError.code());
    assert_eq!(fetched_records(&node), 5, "a refused write leaves the log as it was");

    // Space returns: writes work again, without a restart.
    full.store(false, Ordering::SeqCst);
    assert_eq!(produce(&node), 0);
    assert_eq!(fetched_records(&node), 10);
}
