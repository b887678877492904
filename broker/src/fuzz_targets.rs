//! What each fuzz target feeds the broker, shared by the cargo-fuzz targets
//! in `fuzz/` and the in-tree replay test (`tests/fuzz_replay.rs`), so both
//! drive exactly the same entry points: a request frame through the node
//! core's dispatch, a record set through produce validation and the
//! consumer's decoder, arbitrary segment bytes through log recovery, and
//! metadata-log records and snapshots through their decoders and the image.
//! Each must return (any error is fine); a panic, an abort or an allocation
//! the input merely claimed is a finding.
//!
//! The disk is an in-memory [`MemFs`], so an input costs microseconds and
//! leaves nothing behind.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::config::{BrokerConfig, LogConfig, PlantedBugs};
use crate::io::{DiskScope, File, Fs, OpenOptions};
use crate::record_batch::{self, HEADER_SIZE, LOG_OVERHEAD};
use crate::server::node::{Clock, Node, Step};
use crate::storage::PartitionLog;

/// The bound every target decompresses within.
const LIMIT: usize = 1 << 20;
const NOW_MS: i64 = 1_700_000_000_000;

/// Request target. `data[0]` picks the API key (one of those advertised, or
/// with the top bit set, the rest of `data` is a whole raw frame), `data[1]`
/// the version (up to one past the highest), and the rest is the body after
/// a well-formed header. The node hosts topic `t` with two partitions, so
/// Produce, Fetch and ListOffsets reach storage. A parked request is resumed
/// past its deadline.
pub fn request(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let node = node_with_topic();
    let frame = if selector & 0x80 != 0 {
        Bytes::copy_from_slice(rest)
    } else {
        let Some((&v, body)) = rest.split_first() else { return };
        let (key, _, max) = crate::wire::ADVERTISED[selector as usize % crate::wire::ADVERTISED.len()];
        let version = (v as i16) % (max + 2);
        let mut buf = header_bytes(key, version);
        buf.put_slice(body);
        buf.freeze()
    };
    run(&node, frame);
}

/// Record-batch target: `data` as a Produce's record set, through the
/// validation produce applies (with the CRC fixed up first, so mutations
/// reach the records and the codecs instead of dying at the checksum), and
/// through the consumer's decoder.
pub fn record_batch(data: &[u8]) {
    let fixed = fix_crcs(data);
    for bytes in [Bytes::copy_from_slice(data), fixed] {
        let _ = crate::wire::validate_record_set(bytes.clone(), LIMIT);
        let _ = crate::client::batch::decode(bytes, "t", 0, 0);
    }
}

/// Recovery target: `data[0]` picks which file of a partition the rest
/// becomes (the first segment's log, with CRCs fixed up or not, or its
/// offset or time index beside a valid log); the partition is then opened,
/// read end to end, searched by timestamp, appended to and reopened.
pub fn recovery(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let fs = Arc::new(MemFs::default());
    let dir = PathBuf::from("/data/t-0");
    let seg = |suffix: &str| dir.join(format!("{:020}.{suffix}", 0));
    let good_log = || fix_crcs(&sample_batches()).to_vec();
    let files: Vec<(PathBuf, Vec<u8>)> = match selector % 4 {
        0 => vec![(seg("log"), rest.to_vec())],
        1 => vec![(seg("log"), fix_crcs(rest).to_vec())],
        2 => vec![(seg("log"), good_log()), (seg("index"), rest.to_vec())],
        _ => vec![(seg("log"), good_log()), (seg("timeindex"), rest.to_vec())],
    };
    fs.create_dir_all(&dir).expect("in memory");
    for (path, bytes) in files {
        fs.open(&path, OpenOptions::CREATE).and_then(|mut f| f.write_at(&bytes, 0)).expect("in memory");
    }
    let config = LogConfig { internal_segment_bytes: Some(4096), index_interval_bytes: 128, ..LogConfig::default() };
    for _ in 0..2 {
        let Ok((mut log, _)) = PartitionLog::open(fs.clone(), dir.clone(), config.clone(), PlantedBugs::default(), 0)
        else {
            return;
        };
        let end = log.log_end_offset();
        let mut at = log.log_start_offset();
        while at < end {
            let Ok(r) = log.read(at, 64 << 10, end) else { break };
            let next = record_batch::Batches::new(&r.records, false).map_while(Result::ok).last();
            match next {
                Some((_, h, _)) if h.next_offset() > at => at = h.next_offset(),
                _ => break,
            }
        }
        for ts in [i64::MIN, 0, NOW_MS, i64::MAX] {
            let _ = log.offset_for_timestamp(ts);
        }
        let batch = sample_batches();
        if let Ok(v) = record_batch::ValidatedBatches::new(batch) {
            let _ = log.append_as_leader(&v, NOW_MS, 0);
        }
        let _ = log.flush();
    }
}

/// Metadata target. `data[0]` picks what the rest is: one metadata record
/// (decoded, re-encoded, decoded again to the same value), a metadata
/// snapshot (as is, or with its trailing CRC fixed up so mutations reach the
/// records), or a run of records each prefixed by a one-byte length, applied
/// in order to an image whose snapshot must load back to the same image.
pub fn metadata(data: &[u8]) {
    use crate::controller::image::MetadataImage;
    use crate::controller::records::MetadataRecord;
    let Some((&selector, rest)) = data.split_first() else { return };
    match selector % 4 {
        0 => {
            if let Ok(r) = MetadataRecord::decode(rest) {
                assert_eq!(MetadataRecord::decode(&r.encode()).as_ref(), Ok(&r));
            }
        }
        1 => {
            let _ = MetadataImage::from_snapshot(rest);
        }
        2 => {
            let mut fixed = rest.to_vec();
            if fixed.len() >= 4 {
                let body = fixed.len() - 4;
                let crc = crc32c::crc32c(&fixed[..body]);
                fixed[body..].copy_from_slice(&crc.to_be_bytes());
            }
            if let Ok(image) = MetadataImage::from_snapshot(&fixed) {
                assert_eq!(MetadataImage::from_snapshot(&image.to_snapshot()).as_ref(), Ok(&image));
            }
        }
        _ => {
            let mut image = MetadataImage::empty();
            let mut at = rest;
            let mut offset = 0;
            while let Some((&len, tail)) = at.split_first() {
                let n = (len as usize).min(tail.len());
                if let Ok(r) = MetadataRecord::decode(&tail[..n]) {
                    let before = image.clone();
                    if image.apply(offset, &r).is_err() {
                        assert_eq!(image, before, "a refused record changed the image");
                    }
                }
                offset += 1;
                at = &tail[n..];
            }
            assert_eq!(MetadataImage::from_snapshot(&image.to_snapshot()).as_ref(), Ok(&image));
        }
    }
}

/// Seeds for the metadata target: each record kind, a run of records that
/// builds a small cluster, and its snapshot.
fn metadata_seeds() -> Vec<(String, Vec<u8>)> {
    use crate::controller::image::MetadataImage;
    use crate::controller::records::*;
    let topic_id = uuid::Uuid::from_u128(0xfeed);
    let records = vec![
        MetadataRecord::ClusterId { cluster_id: "faultline".into() },
        MetadataRecord::FeatureLevel { name: "metadata.version".into(), level: 1 },
        MetadataRecord::RegisterBroker(RegisterBroker {
            node_id: 1,
            broker_epoch: 2,
            incarnation_id: uuid::Uuid::from_u128(1),
            listeners: vec![Endpoint { name: "PLAINTEXT".into(), host: "h1".into(), port: 9092, security_protocol: 0 }],
            rack: Some("r".into()),
            fenced: true,
        }),
        MetadataRecord::UnfenceBroker(BrokerRef { node_id: 1, broker_epoch: 2 }),
        MetadataRecord::Topic(TopicRecord {
            name: "t".into(),
            topic_id,
            configs: BTreeMap::from([("flush.ms".to_string(), "10".to_string())]),
        }),
        MetadataRecord::Partition(PartitionRecord {
            topic_id,
            partition: 0,
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
        }),
        MetadataRecord::PartitionChange(PartitionChange {
            topic_id,
            partition: 0,
            leader: -1,
            isr: vec![1],
            leader_epoch: 1,
            partition_epoch: 1,
        }),
        MetadataRecord::ControlledShutdown(BrokerRef { node_id: 1, broker_epoch: 2 }),
        MetadataRecord::FenceBroker(BrokerRef { node_id: 1, broker_epoch: 2 }),
        MetadataRecord::RemoveTopic { topic_id },
        MetadataRecord::UnregisterBroker(BrokerRef { node_id: 1, broker_epoch: 2 }),
    ];
    let mut out = Vec::new();
    let mut run = vec![3u8];
    let mut image = MetadataImage::empty();
    for (i, r) in records.iter().enumerate() {
        let bytes = r.encode();
        out.push((format!("record-{i}"), [&[0u8][..], &bytes].concat()));
        run.push(bytes.len() as u8);
        run.extend_from_slice(&bytes);
        if i < 8 {
            image.apply(i as i64, r).expect("the seed records fit");
        }
    }
    out.push(("records".into(), run));
    out.push(("snapshot".into(), [&[2u8][..], &image.to_snapshot()].concat()));
    out
}

/// A fresh node on an in-memory disk, hosting topic `t` with two partitions.
fn node_with_topic() -> Node {
    let fs = Arc::new(MemFs::default());
    let config = BrokerConfig { data_dir: "/data".into(), ..BrokerConfig::default() };
    let node = Node::open(&DiskScope::unmetered(), fs, config, ("fuzz".into(), 9092), NOW_MS, 1).expect("in memory");
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
    let mut t = CreatableTopic::default();
    t.name = TopicName(StrBytes::from_static_str("t"));
    t.num_partitions = 2;
    t.replication_factor = 1;
    let req = CreateTopicsRequest::default().with_topics(vec![t]);
    let mut frame = header_bytes(ApiKey::CreateTopics, 5);
    req.encode(&mut frame, 5).expect("encodable");
    run(&node, frame.freeze());
    node
}

fn run(node: &Node, frame: Bytes) {
    let disk = DiskScope::unmetered();
    let mut clock = Clock { now_ms: NOW_MS, elapsed: Duration::ZERO };
    let mut step = node.handle(&disk, clock, frame).step;
    for _ in 0..3 {
        let Step::Park(parked) = step else { return };
        clock.elapsed = parked.deadline() + Duration::from_millis(1);
        clock.now_ms += 1_000;
        node.tick(&disk, clock);
        step = node.resume(&disk, clock, parked).step;
    }
}

/// A request header for `key` at `version`, encoded.
pub fn header_bytes(key: ApiKey, version: i16) -> BytesMut {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")));
    let mut buf = BytesMut::new();
    let _ = header.encode(&mut buf, key.request_header_version(version));
    buf
}

/// `data` with every batch it holds given a correct CRC (and the last one's
/// length fitted to what remains), so mutated inputs get past the checksum.
pub fn fix_crcs(data: &[u8]) -> Bytes {
    let mut out = data.to_vec();
    let mut pos = 0;
    while out.len() - pos >= HEADER_SIZE {
        let (_, len) = record_batch::peek_offset_and_length(&out[pos..]);
        let mut size = (len.max(0) as usize).saturating_add(LOG_OVERHEAD);
        if size < HEADER_SIZE || size > out.len() - pos {
            size = out.len() - pos;
            let fitted = (size - LOG_OVERHEAD) as i32;
            out[pos + 8..pos + 12].copy_from_slice(&fitted.to_be_bytes());
        }
        let crc = record_batch::compute_crc(&out[pos..pos + size]);
        out[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        pos += size;
    }
    Bytes::from(out)
}

/// A file system in memory: enough of [`Fs`] for a node and its logs.
#[derive(Default)]
pub struct MemFs {
    files: Mutex<BTreeMap<PathBuf, Arc<Mutex<Vec<u8>>>>>,
    dirs: Mutex<BTreeSet<PathBuf>>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

impl Fs for MemFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut dirs = self.dirs.lock().expect("not poisoned");
        dirs.extend(path.ancestors().map(Path::to_path_buf));
        Ok(())
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        if !self.is_dir(path) {
            return Err(not_found(path));
        }
        let files = self.files.lock().expect("not poisoned");
        let dirs = self.dirs.lock().expect("not poisoned");
        let mut out: Vec<PathBuf> =
            files.keys().chain(dirs.iter()).filter(|p| p.parent() == Some(path)).cloned().collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<Box<dyn File>> {
        let mut files = self.files.lock().expect("not poisoned");
        let data = match files.get(path) {
            Some(_) if opts.create_new => return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists")),
            Some(d) => d.clone(),
            None if opts.create || opts.create_new => {
                let d = Arc::new(Mutex::new(Vec::new()));
                files.insert(path.to_path_buf(), d.clone());
                d
            }
            None => return Err(not_found(path)),
        };
        if opts.truncate {
            data.lock().expect("not poisoned").clear();
        }
        Ok(Box::new(MemFile(data)))
    }
    fn exists(&self, path: &Path) -> bool {
        self.files.lock().expect("not poisoned").contains_key(path) || self.is_dir(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.dirs.lock().expect("not poisoned").contains(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.files.lock().expect("not poisoned").remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.files.lock().expect("not poisoned").retain(|p, _| !p.starts_with(path));
        self.dirs.lock().expect("not poisoned").retain(|p| !p.starts_with(path));
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut files = self.files.lock().expect("not poisoned");
        let data = files.remove(from).ok_or_else(|| not_found(from))?;
        files.insert(to.to_path_buf(), data);
        Ok(())
    }
    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }
}

struct MemFile(Arc<Mutex<Vec<u8>>>);

impl File for MemFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.lock().expect("not poisoned").len() as u64)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let data = self.0.lock().expect("not poisoned");
        let start = (offset as usize).min(data.len());
        let n = (data.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.0.lock().expect("not poisoned");
        let end = offset as usize + buf.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.lock().expect("not poisoned").resize(len as usize, 0);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Seed inputs for each target, as (target, name, bytes): one well-formed
/// request per advertised API, a batch per codec, a small valid log.
pub fn seed_corpus() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (key, _, max) in crate::wire::ADVERTISED {
        let i = crate::wire::ADVERTISED.iter().position(|(k, _, _)| k == key).expect("listed") as u8;
        let body = request_body(*key, *max);
        let mut input = vec![i, *max as u8];
        input.extend_from_slice(&body);
        out.push(("request", format!("{key:?}-v{max}"), input));
    }
    for codec in 0..=4u8 {
        out.push(("record_batch", format!("codec-{codec}"), batch_with(codec).to_vec()));
    }
    let log = sample_batches().to_vec();
    out.push(("recovery", "log".into(), [&[1u8][..], &log].concat()));
    out.push(("recovery", "torn-log".into(), [&[0u8][..], &log[..log.len() - 7]].concat()));
    for (name, bytes) in metadata_seeds() {
        out.push(("metadata", name, bytes));
    }
    out
}

/// Two small batches as stored: three plain records at offsets 0-2, two
/// gzip records at 3-4.
pub fn sample_batches() -> Bytes {
    let mut out = batch_with(0).to_vec();
    let mut second = batch_with(1)[..].to_vec();
    record_batch::set_base_offset(&mut second, 3);
    out.extend_from_slice(&second);
    Bytes::from(out)
}

/// One batch of a few records with codec `codec`.
pub fn batch_with(codec: u8) -> Bytes {
    use crate::client::batch::{encode_v2, OutRecord, ProducerFields};
    use kafka_protocol::records::Compression;
    let compression = match codec {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    };
    let n = if codec == 1 { 2 } else { 3 };
    let records: Vec<OutRecord> = (0..n)
        .map(|i| OutRecord {
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: vec![("h".into(), Some(Bytes::from_static(b"x")))],
            timestamp: NOW_MS + i,
        })
        .collect();
    encode_v2(&records, ProducerFields::NONE, compression).expect("encodable")
}

/// A realistic body for `key` at `version` aimed at topic `t`.
fn request_body(key: ApiKey, version: i16) -> Vec<u8> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::*;
    let name = || TopicName(StrBytes::from_static_str("t"));
    let mut buf = BytesMut::new();
    let r = match key {
        ApiKey::Produce => ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![TopicProduceData::default().with_name(name()).with_partition_data(vec![
                PartitionProduceData::default().with_index(0).with_records(Some(sample_batches())),
            ])])
            .encode(&mut buf, version),
        ApiKey::Fetch => FetchRequest::default()
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name())
                .with_partitions(vec![FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20)])])
            .encode(&mut buf, version),
        ApiKey::ListOffsets => ListOffsetsRequest::default()
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name())
                .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(0)])])
            .encode(&mut buf, version),
        ApiKey::Metadata => MetadataRequest::default().with_topics(None).encode(&mut buf, version),
        ApiKey::FindCoordinator => FindCoordinatorRequest::default().encode(&mut buf, version),
        ApiKey::ApiVersions => ApiVersionsRequest::default().encode(&mut buf, version),
        ApiKey::CreateTopics => CreateTopicsRequest::default().encode(&mut buf, version),
        ApiKey::DeleteTopics => DeleteTopicsRequest::default().encode(&mut buf, version),
        ApiKey::InitProducerId => InitProducerIdRequest::default().encode(&mut buf, version),
        ApiKey::DescribeConfigs => DescribeConfigsRequest::default().encode(&mut buf, version),
        ApiKey::Vote => VoteRequest::default().encode(&mut buf, version),
        ApiKey::BeginQuorumEpoch => BeginQuorumEpochRequest::default().encode(&mut buf, version),
        ApiKey::EndQuorumEpoch => EndQuorumEpochRequest::default().encode(&mut buf, version),
        ApiKey::DescribeQuorum => DescribeQuorumRequest::default().encode(&mut buf, version),
        ApiKey::FetchSnapshot => FetchSnapshotRequest::default().encode(&mut buf, version),
        ApiKey::BrokerRegistration => BrokerRegistrationRequest::default().encode(&mut buf, version),
        ApiKey::BrokerHeartbeat => BrokerHeartbeatRequest::default().encode(&mut buf, version),
        ApiKey::UnregisterBroker => UnregisterBrokerRequest::default().encode(&mut buf, version),
        _ => Ok(()),
    };
    r.map(|()| buf.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_run_through_every_target() {
        for (target, name, input) in seed_corpus() {
            match target {
                "request" => request(&input),
                "record_batch" => record_batch(&input),
                "metadata" => metadata(&input),
                _ => recovery(&input),
            }
            assert!(!input.is_empty(), "{name}");
        }
    }

    #[test]
    fn fixed_crcs_validate() {
        let mut b = sample_batches().to_vec();
        b[30] ^= 0xff;
        assert!(record_batch::ValidatedBatches::new(Bytes::from(b.clone())).is_err());
        assert!(record_batch::ValidatedBatches::new(fix_crcs(&b)).is_ok());
    }
}
