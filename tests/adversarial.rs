//! Attacks on a real `faultline serve` process, run as an attacker would:
//! the broker runs under a memory cap (RLIMIT_AS) and a descriptor cap
//! (RLIMIT_NOFILE), and each attack is followed by a probe — ApiVersions, an
//! acks=all produce and a fetch — that must be answered within a generous
//! bound. At the end, and again after a restart, every record the probes got
//! acknowledged must still be readable.
//!
//! Figures for the notes (not assertions) are printed per attack: the peak
//! resident memory during it (VmHWM, reset before each attack) and the probe
//! latency afterwards. Run with `--nocapture` to see them.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use faultline_broker::client::batch::{encode_v2, OutRecord, ProducerFields};
use faultline_broker::record_batch;
use faultline_broker::wire;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::records::Compression;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Address space the broker may map. Far below what any attack here asks
/// for unbounded (each bomb expands to 1 GiB or claims 4 GiB).
const MEMORY_CAP: u64 = 1536 << 20;
/// Descriptors the broker may hold: connections, log files, everything.
const FD_CAP: u64 = 256;
/// A probe slower than this fails the suite.
const PROBE_BOUND: Duration = Duration::from_secs(10);

const CONFIG: &str = r#"
max_connections = 150
max_connections_per_ip = 150
max_open_files = 64
max_partitions = 700
socket_request_max_bytes = 67108864
queued_max_request_bytes = 134217728
connections_max_idle_ms = 30000
[log]
# Tiny segments everywhere, so every flood is also a segment flood.
internal_segment_bytes = 4096
"#;

struct Broker {
    child: Child,
    addr: String,
    dir: std::path::PathBuf,
}

impl Broker {
    fn start(dir: &std::path::Path) -> Broker {
        let config = dir.join("broker.toml");
        std::fs::write(&config, CONFIG).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                for (resource, limit) in [(libc::RLIMIT_AS, MEMORY_CAP), (libc::RLIMIT_NOFILE, FD_CAP)] {
                    let l = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                    if libc::setrlimit(resource, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start faultline serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr =
            line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line:?}")).to_string();
        Broker { child, addr, dir: dir.to_path_buf() }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn assert_alive(&mut self, after: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the broker died during {after}: {status}");
        }
    }

    fn kill(self) -> std::path::PathBuf {
        self.dir.clone()
    }

    fn status_field(&self, field: &str) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status.lines().find(|l| l.starts_with(field)).map(|l| l[field.len()..].trim().to_string()).unwrap_or_default()
    }

    /// Reset the peak-RSS watermark, so the next reading covers one attack.
    fn reset_peak(&self) {
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{}/clear_refs", self.pid()))
            .and_then(|mut f| f.write_all(b"5"));
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Conn {
    stream: TcpStream,
    corr: i32,
}

impl Conn {
    async fn open(addr: &str) -> Conn {
        Conn { stream: TcpStream::connect(addr).await.unwrap(), corr: 0 }
    }

    fn frame<R: Request>(&mut self, version: i16, req: &R) -> Bytes {
        self.corr += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.corr)
            .with_client_id(Some(StrBytes::from_static_str("attacker")));
        wire::encode_request(&header, req).unwrap()
    }

    async fn send<R: Request>(&mut self, version: i16, req: &R) {
        let f = self.frame(version, req);
        self.stream.write_all(&f).await.unwrap();
    }

    /// The next response, or an error if the connection closed or timed out.
    async fn recv<R: Request>(&mut self, version: i16) -> Result<R::Response, String> {
        let key = ApiKey::try_from(R::KEY).unwrap();
        let read = wire::read_frame(&mut self.stream, 128 << 20);
        let frame = tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?
            .ok_or("connection closed")?;
        let (_, body) = wire::decode_response::<R::Response>(frame, key, version).map_err(|e| e.to_string())?;
        Ok(body)
    }

    async fn call<R: Request>(&mut self, version: i16, req: &R) -> Result<R::Response, String> {
        self.send(version, req).await;
        self.recv::<R>(version).await
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn produce_request(topic: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(name(topic))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(records))])])
}

fn fetch_request(topic: &str, offset: i64, max_wait_ms: i32, min_bytes: i32) -> FetchRequest {
    FetchRequest::default().with_max_wait_ms(max_wait_ms).with_min_bytes(min_bytes).with_max_bytes(8 << 20).with_topics(
        vec![FetchTopic::default().with_topic(name(topic)).with_partitions(vec![FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(8 << 20)])],
    )
}

fn batch(values: &[String], compression: Compression) -> Bytes {
    let records: Vec<OutRecord> = values
        .iter()
        .map(|v| OutRecord { key: None, value: Some(Bytes::from(v.clone())), headers: vec![], timestamp: 1_000 })
        .collect();
    encode_v2(&records, ProducerFields::NONE, compression).unwrap()
}

fn create_topic(topic: &str, partitions: i32, configs: &[(&str, &str)]) -> CreatableTopic {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    t.configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    t
}

/// Every value in `topic`-0 from offset 0, in order.
async fn read_all(addr: &str, topic: &str) -> Vec<String> {
    let mut c = Conn::open(addr).await;
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let resp = c.call(12, &fetch_request(topic, offset, 0, 1)).await.unwrap();
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch {topic} at {offset}");
        let decoded =
            faultline_broker::client::batch::decode(p.records.clone().unwrap_or_default(), topic, 0, offset).unwrap();
        let Some(next) = decoded.next_offset else { break };
        out.extend(decoded.records.into_iter().map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()));
        offset = next;
        if offset >= p.high_watermark {
            break;
        }
    }
    out
}

/// The probe client: ApiVersions, an acks=all produce of one fresh record,
/// and a fetch that sees it. Returns its latency; records what was acked.
async fn probe(broker: &mut Broker, acked: &mut Vec<String>, attack: &str) -> Duration {
    broker.assert_alive(attack);
    let addr = broker.addr.clone();
    let value = format!("probe-{}", acked.len());
    let start = Instant::now();
    let run = async {
        let mut c = Conn::open(&addr).await;
        let v = c.call(3, &ApiVersionsRequest::default()).await?;
        if v.error_code != 0 {
            return Err(format!("ApiVersions error {}", v.error_code));
        }
        let r = c.call(9, &produce_request("probe", batch(std::slice::from_ref(&value), Compression::None))).await?;
        let p = &r.responses[0].partition_responses[0];
        if p.error_code != 0 {
            return Err(format!("produce error {}", p.error_code));
        }
        let f = c.call(12, &fetch_request("probe", p.base_offset, 0, 1)).await?;
        let got = faultline_broker::client::batch::decode(
            f.responses[0].partitions[0].records.clone().unwrap_or_default(),
            "probe",
            0,
            p.base_offset,
        )
        .map_err(|e| e.to_string())?;
        if got.records.first().and_then(|r| r.value.clone()) != Some(Bytes::from(value.clone())) {
            return Err("the acknowledged record did not come back".into());
        }
        Ok(())
    };
    match tokio::time::timeout(PROBE_BOUND, run).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("probe after {attack} failed: {e}"),
        Err(_) => panic!("probe after {attack} took more than {PROBE_BOUND:?}"),
    }
    acked.push(value);
    let latency = start.elapsed();
    broker.assert_alive(attack);
    println!(
        "attack {attack:<34} peak RSS {:>10}  probe {:>7.1} ms  open fds {}",
        broker.status_field("VmHWM:"),
        latency.as_secs_f64() * 1e3,
        broker.open_fds()
    );
    latency
}

/// The decompressed stream of one record whose value is `value_len` zero
/// bytes: the record's prefix, then the zeros (written by the caller).
fn record_prefix(value_len: usize) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
    let mut body = vec![0u8]; // attributes
    varint(&mut body, 0); // timestamp delta
    varint(&mut body, 0); // offset delta
    varint(&mut body, -1); // null key
    varint(&mut body, value_len as i64);
    let mut out = Vec::new();
    varint(&mut out, (body.len() + value_len + 1) as i64);
    out.extend(body);
    out
}

/// A compressed body that expands to about `total` bytes (one record of
/// zeros), built by repeating one compressed chunk where the codec's framing
/// allows, so building it is cheap.
fn bomb_body(codec: u8, total: usize) -> Vec<u8> {
    const CHUNK: usize = 16 << 20;
    let zeros = vec![0u8; CHUNK];
    let prefix = record_prefix(total);
    let repeats = total / CHUNK;
    match codec {
        1 => {
            let gz = |data: &[u8]| {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            };
            let mut out = gz(&prefix);
            let member = gz(&zeros);
            (0..repeats).for_each(|_| out.extend_from_slice(&member));
            out
        }
        2 => {
            let mut out = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
            let mut block = |data: &[u8]| {
                let b = snap::raw::Encoder::new().compress_vec(data).unwrap();
                out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                out.extend_from_slice(&b);
            };
            block(&prefix);
            // Snappy expands ~20x at best: 64 KiB blocks, 3 MiB on the wire.
            let b = snap::raw::Encoder::new().compress_vec(&zeros[..64 << 10]).unwrap();
            for _ in 0..(64 << 20) / (64 << 10) + 16 {
                out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                out.extend_from_slice(&b);
            }
            out
        }
        3 => {
            let mut e = lz4::EncoderBuilder::new().level(1).build(Vec::new()).unwrap();
            e.write_all(&prefix).unwrap();
            (0..repeats).for_each(|_| e.write_all(&zeros).unwrap());
            let (out, r) = e.finish();
            r.unwrap();
            out
        }
        4 => {
            let mut out = zstd::stream::encode_all(&prefix[..], 1).unwrap();
            let frame = zstd::stream::encode_all(&zeros[..], 1).unwrap();
            (0..repeats).for_each(|_| out.extend_from_slice(&frame));
            out
        }
        _ => unreachable!(),
    }
}

/// A v2 batch holding `body` as its (compressed) records.
fn wrap_batch(codec: u8, body: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i64(0);
    b.put_i32((record_batch::HEADER_SIZE - record_batch::LOG_OVERHEAD + body.len()) as i32);
    b.put_i32(-1);
    b.put_i8(2);
    b.put_u32(0); // CRC, below
    b.put_i16(codec as i16);
    b.put_i32(0); // last offset delta
    b.put_i64(1_000);
    b.put_i64(1_000);
    b.put_i64(-1);
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_i32(1); // one record
    b.put_slice(body);
    let crc = record_batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

async fn attack_bombs(broker: &Broker) {
    let mut c = Conn::open(&broker.addr).await;
    for codec in 1..=4u8 {
        // 1 GiB expanded (snappy: 64 MiB and more), megabytes on the wire.
        let body = bomb_body(codec, 1 << 30);
        let r = c.call(9, &produce_request("bombs", wrap_batch(codec, &body))).await.unwrap();
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, ResponseError::MessageTooLarge.code(), "codec {codec}: {:?}", p.error_message);
    }
    // A raw snappy block whose header claims ~4 GiB: refused from the claim.
    let r = c.call(9, &produce_request("bombs", wrap_batch(2, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]))).await.unwrap();
    assert_eq!(r.responses[0].partition_responses[0].error_code, ResponseError::MessageTooLarge.code());
}

async fn attack_stalled_frames(broker: &Broker) {
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(&broker.addr).await.unwrap();
        let mut start = (60u32 << 20).to_be_bytes().to_vec();
        start.extend(vec![7u8; 1 << 20]);
        let _ = s.write_all(&start).await;
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _keep = held;
}

async fn attack_duplicate_partition_fetch(broker: &Broker) {
    let mut c = Conn::open(&broker.addr).await;
    let mut req = fetch_request("probe", 0, 0, 1);
    let p = req.topics[0].partitions[0].clone();
    req.topics[0].partitions = vec![p; 5_000];
    let resp = c.call(12, &req).await.unwrap();
    // The first is read once; every repeat is refused and carries no records.
    let parts = &resp.responses[0].partitions;
    assert_eq!(parts.len(), 5_000);
    assert!(parts[1..].iter().all(
        |p| p.error_code == ResponseError::InvalidRequest.code() && p.records.as_ref().is_none_or(|r| r.is_empty())
    ));
}

async fn attack_disconnecting_long_polls(broker: &Broker) {
    let before = broker.open_fds();
    for _ in 0..3 {
        let mut conns = Vec::new();
        for _ in 0..100 {
            let mut c = Conn::open(&broker.addr).await;
            c.send(12, &fetch_request("bombs", 0, 86_400_000, 1 << 30)).await;
            conns.push(c);
        }
        drop(conns);
    }
    // The broker lets go of every hung-up long poll.
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.open_fds() > before + 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(broker.open_fds() <= before + 5, "{} descriptors open, {before} before", broker.open_fds());
}

async fn attack_topic_floods(broker: &Broker) {
    let mut c = Conn::open(&broker.addr).await;
    // segment.bytes below Kafka's minimum is refused.
    let r = c
        .call(
            7,
            &CreateTopicsRequest::default().with_topics(vec![create_topic("tiny", 1, &[("segment.bytes", "100")])]),
        )
        .await
        .unwrap();
    assert_eq!(r.topics[0].error_code, ResponseError::InvalidConfig.code());
    // Auto-creation through Metadata: bounded per request.
    let topics: Vec<MetadataRequestTopic> =
        (0..2_000).map(|i| MetadataRequestTopic::default().with_name(Some(name(&format!("auto-{i}"))))).collect();
    let m = c
        .call(11, &MetadataRequest::default().with_topics(Some(topics)).with_allow_auto_topic_creation(true))
        .await
        .unwrap();
    let created = m.topics.iter().filter(|t| t.error_code == 0).count();
    assert!(created <= 10, "{created} topics auto-created by one request");
    // CreateTopics past the partition budget: the rest refused.
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(60_000)
        .with_topics((0..800).map(|i| create_topic(&format!("flood-{i}"), 1, &[])).collect());
    let r = c.call(7, &req).await.unwrap();
    let ok = r.topics.iter().filter(|t| t.error_code == 0).count();
    assert!(ok < 800 && r.topics.iter().any(|t| t.error_code == ResponseError::PolicyViolation.code()), "{ok} created");
}

async fn attack_segment_flood(broker: &Broker) -> Vec<String> {
    let mut c = Conn::open(&broker.addr).await;
    let mut values = Vec::new();
    // 4 KiB segments: 1,200 produces of 1.5 KiB make 600 segments, 1,800
    // files, seven times the descriptor cap.
    for i in 0..1_200 {
        let v = format!("{i:06}-{}", "s".repeat(1_500));
        let r =
            c.call(9, &produce_request("segments", batch(std::slice::from_ref(&v), Compression::None))).await.unwrap();
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0, "produce {i}");
        values.push(v);
    }
    assert_eq!(read_all(&broker.addr, "segments").await, values);
    values
}

async fn attack_trailing_bytes(broker: &Broker) {
    let mut c = Conn::open(&broker.addr).await;
    let f = c.frame(3, &ApiVersionsRequest::default());
    let mut padded = f[4..].to_vec();
    padded.extend_from_slice(&[0, 0, 0]);
    let mut framed = (padded.len() as u32).to_be_bytes().to_vec();
    framed.extend(padded);
    c.stream.write_all(&framed).await.unwrap();
    assert_eq!(c.recv::<ApiVersionsRequest>(3).await.unwrap().error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_survives_every_attack_and_loses_no_acknowledged_record() {
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(tmp.path());
    let mut acked = Vec::new();
    {
        let mut c = Conn::open(&broker.addr).await;
        let topics = ["probe", "bombs", "segments"].map(|t| create_topic(t, 1, &[])).to_vec();
        let r = c.call(7, &CreateTopicsRequest::default().with_topics(topics)).await.unwrap();
        assert!(r.topics.iter().all(|t| t.error_code == 0), "{r:?}");
    }
    probe(&mut broker, &mut acked, "none (baseline)").await;

    broker.reset_peak();
    attack_bombs(&broker).await;
    probe(&mut broker, &mut acked, "compression bombs (4 codecs)").await;

    broker.reset_peak();
    attack_stalled_frames(&broker).await;
    probe(&mut broker, &mut acked, "stalled 60 MiB frames x100").await;

    broker.reset_peak();
    attack_duplicate_partition_fetch(&broker).await;
    probe(&mut broker, &mut acked, "duplicate-partition fetch").await;

    broker.reset_peak();
    attack_disconnecting_long_polls(&broker).await;
    probe(&mut broker, &mut acked, "disconnecting long polls x300").await;

    broker.reset_peak();
    attack_topic_floods(&broker).await;
    probe(&mut broker, &mut acked, "topic floods").await;

    broker.reset_peak();
    let segment_values = attack_segment_flood(&broker).await;
    probe(&mut broker, &mut acked, "segment flood (4 KiB segments)").await;

    broker.reset_peak();
    attack_trailing_bytes(&broker).await;
    probe(&mut broker, &mut acked, "trailing bytes").await;

    assert_eq!(read_all(&broker.addr, "probe").await, acked);

    // Killed and restarted under the same caps: everything acknowledged is
    // still there, and the broker serves again.
    let dir = broker.kill();
    let mut broker = Broker::start(&dir);
    probe(&mut broker, &mut acked, "restart after all attacks").await;
    assert_eq!(read_all(&broker.addr, "probe").await, acked);
    assert_eq!(read_all(&broker.addr, "segments").await, segment_values);
    broker.kill();
}
