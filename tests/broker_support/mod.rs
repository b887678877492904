//! Shared by the broker's real-TCP tests: start a broker on 127.0.0.1:0 over a
//! temporary directory, and talk raw Kafka protocol to it.

#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use faultline_broker::client::batch::{encode_v2, OutRecord, ProducerFields};
use faultline_broker::config::BrokerConfig;
use faultline_broker::io::real::RealIo;
use faultline_broker::io::{Env, Stream};
use faultline_broker::server::{self, RunningBroker};
use faultline_broker::wire;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::records::Compression;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct TestBroker {
    pub env: Env,
    pub dir: tempfile::TempDir,
    pub broker: Option<RunningBroker>,
    pub addr: String,
}

pub fn config(dir: &std::path::Path) -> BrokerConfig {
    BrokerConfig { listen: "127.0.0.1:0".into(), data_dir: dir.to_path_buf(), ..BrokerConfig::default() }
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        tweak(&mut c);
        let env = RealIo::new();
        let broker = server::start(env.clone(), c).await.unwrap();
        let addr = broker.local_addr().to_string();
        TestBroker { env, dir, broker: Some(broker), addr }
    }

    /// Stop the broker and start a new one over the same directory.
    pub async fn restart(&mut self) {
        self.broker.take().unwrap().shutdown().await.unwrap();
        let broker = server::start(self.env.clone(), config(self.dir.path())).await.unwrap();
        self.addr = broker.local_addr().to_string();
        self.broker = Some(broker);
    }

    pub async fn connect(&self) -> Conn {
        Conn { stream: self.env.connect(&self.addr).await.unwrap(), next_corr: 1 }
    }
}

pub struct Conn {
    pub stream: Box<dyn Stream>,
    next_corr: i32,
}

impl Conn {
    pub fn header(&mut self, key: ApiKey, version: i16) -> RequestHeader {
        self.next_corr += 1;
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.next_corr)
            .with_client_id(Some(StrBytes::from_static_str("broker-test")))
    }

    /// Send a request without waiting for its response; returns the correlation id.
    pub async fn send<R: Request>(&mut self, version: i16, req: &R) -> i32 {
        let key = ApiKey::try_from(R::KEY).unwrap();
        let header = self.header(key, version);
        let frame = wire::encode_request(&header, req).unwrap();
        self.stream.write_all(&frame).await.unwrap();
        header.correlation_id
    }

    pub async fn recv<R: Request>(&mut self, version: i16, corr: i32) -> R::Response {
        let key = ApiKey::try_from(R::KEY).unwrap();
        let frame = wire::read_frame(&mut self.stream, 64 << 20).await.unwrap().expect("connection closed");
        let (h, body) = wire::decode_response::<R::Response>(frame, key, version).unwrap();
        assert_eq!(h.correlation_id, corr, "responses come back in request order");
        body
    }

    pub async fn call<R: Request>(&mut self, version: i16, req: &R) -> R::Response {
        let corr = self.send(version, req).await;
        self.recv::<R>(version, corr).await
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// True if the broker closes the connection within a few seconds.
    pub async fn is_closed_by_broker(&mut self) -> bool {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => false,
            Err(_) => false,
        }
    }
}

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn new_topic(topic: &str, partitions: i32, configs: &[(&str, &str)]) -> CreatableTopic {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    t.configs = configs
        .iter()
        .map(|(k, v)| CreatableTopicConfig::default().with_name(str_bytes(k)).with_value(Some(str_bytes(v))))
        .collect();
    t
}

pub async fn create_topic(conn: &mut Conn, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![new_topic(topic, partitions, configs)];
    req.timeout_ms = 5000;
    let resp: CreateTopicsResponse = conn.call(7, &req).await;
    assert_eq!(resp.topics[0].error_code, 0, "{:?}", resp.topics[0].error_message);
}

/// A v2 record batch holding `values`.
pub fn batch(compression: Compression, values: &[&str]) -> Bytes {
    batch_from(ProducerFields { id: -1, epoch: -1, base_sequence: 0 }, compression, values, |i| {
        Some(Bytes::from(format!("k{i}")))
    })
}

/// A v2 record batch holding `values` from `producer`, timestamped from 1000
/// on, with keys from `key`.
pub fn batch_from(
    producer: ProducerFields,
    compression: Compression,
    values: &[&str],
    key: impl Fn(usize) -> Option<Bytes>,
) -> Bytes {
    batch_at(producer, compression, values, key, 1_000)
}

/// As [`batch_from`], timestamped from `first_ts` on.
pub fn batch_at(
    producer: ProducerFields,
    compression: Compression,
    values: &[&str],
    key: impl Fn(usize) -> Option<Bytes>,
    first_ts: i64,
) -> Bytes {
    let records: Vec<OutRecord> = values
        .iter()
        .enumerate()
        .map(|(i, v)| OutRecord {
            key: key(i),
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: vec![],
            timestamp: first_ts + i as i64,
        })
        .collect();
    encode_v2(&records, producer, compression).unwrap()
}

pub fn produce_request(topic: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = 5000;
    req.topic_data = vec![TopicProduceData::default()
        .with_name(name(topic))
        .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(records))])];
    req
}

/// Produce one record set with acks=1 and return (error code, base offset).
pub async fn produce(conn: &mut Conn, topic: &str, partition: i32, records: Bytes) -> (i16, i64) {
    let resp: ProduceResponse = conn.call(9, &produce_request(topic, partition, 1, records)).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}
