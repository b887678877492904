//! Produce and Fetch over real TCP: compressed batches round-trip, the long
//! poll wakes on appends and times out, offsets are listed, limits hold, and
//! topics survive a restart.

mod broker_support;

use std::time::{Duration, Instant};

use broker_support::*;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

fn fetch_request(topic: &str, offset: i64, max_wait_ms: i32, min_bytes: i32, partition_max: i32) -> FetchRequest {
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = offset;
    p.partition_max_bytes = partition_max;
    let mut req = FetchRequest::default();
    req.replica_id = (-1).into();
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = min_bytes;
    req.max_bytes = 50 << 20;
    req.topics = vec![FetchTopic::default().with_topic(name(topic)).with_partitions(vec![p])];
    req
}

async fn fetch(
    c: &mut Conn,
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
    version: i16,
) -> fetch_response::PartitionData {
    let resp: FetchResponse = c.call(version, &fetch_request(topic, offset, max_wait_ms, 1, 1 << 20)).await;
    resp.responses[0].partitions[0].clone()
}

/// (compression, values) of every batch in a record set.
fn decode(records: &Bytes) -> Vec<(Compression, Vec<String>)> {
    RecordBatchDecoder::decode_all(&mut records.clone())
        .unwrap()
        .into_iter()
        .map(|set| {
            let values =
                set.records.iter().map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()).collect();
            (set.compression, values)
        })
        .collect()
}

#[tokio::test]
async fn produced_batches_come_back_as_stored() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    create_topic(&mut c, "events", 1, &[]).await;
    assert_eq!(produce(&mut c, "events", 0, batch(Compression::None, &["a", "b"])).await, (0, 0));
    assert_eq!(produce(&mut c, "events", 0, batch(Compression::Gzip, &["c", "d", "e"])).await, (0, 2));
    assert_eq!(produce(&mut c, "events", 0, batch(Compression::Zstd, &["f"])).await, (0, 5));
    assert_eq!(produce(&mut c, "events", 0, batch(Compression::Snappy, &["g"])).await, (0, 6));
    assert_eq!(produce(&mut c, "events", 0, batch(Compression::Lz4, &["h"])).await, (0, 7));

    for version in [4, 11, 12] {
        let p = fetch(&mut c, "events", 0, 0, version).await;
        assert_eq!(p.error_code, 0);
        assert_eq!(p.high_watermark, 8);
        assert_eq!(p.log_start_offset, if version >= 5 { 0 } else { -1 }, "log start is sent from v5");
        let batches = decode(p.records.as_ref().unwrap());
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            batches,
            vec![
                (Compression::None, s(&["a", "b"])),
                (Compression::Gzip, s(&["c", "d", "e"])),
                (Compression::Zstd, s(&["f"])),
                (Compression::Snappy, s(&["g"])),
                (Compression::Lz4, s(&["h"])),
            ]
        );
    }
    // From the middle of the log: whole batches from the one holding offset 3.
    let p = fetch(&mut c, "events", 3, 0, 12).await;
    assert_eq!(decode(p.records.as_ref().unwrap())[0].1, vec!["c", "d", "e"]);
    // At the high watermark: nothing, no error. Past the log end: out of range.
    assert_eq!(fetch(&mut c, "events", 8, 0, 12).await.records.unwrap().len(), 0);
    assert_eq!(fetch(&mut c, "events", 9, 0, 12).await.error_code, ResponseError::OffsetOutOfRange.code());
    assert_eq!(fetch(&mut c, "nope", 0, 0, 12).await.error_code, ResponseError::UnknownTopicOrPartition.code());
}

#[tokio::test]
async fn partition_max_bytes_still_returns_one_batch() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    create_topic(&mut c, "small", 1, &[]).await;
    for v in ["x", "y", "z"] {
        produce(&mut c, "small", 0, batch(Compression::None, &[v])).await;
    }
    let resp: FetchResponse = c.call(12, &fetch_request("small", 0, 0, 1, 1)).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!(decode(p.records.as_ref().unwrap()).len(), 1, "first batch even though it exceeds 1 byte");
}

#[tokio::test]
async fn long_poll_wakes_on_append_and_times_out_without_one() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    create_topic(&mut c, "poll", 1, &[]).await;

    let started = Instant::now();
    let p = fetch(&mut c, "poll", 0, 300, 12).await;
    let waited = started.elapsed();
    assert!(p.records.unwrap().is_empty());
    assert!(waited >= Duration::from_millis(290) && waited < Duration::from_secs(3), "{waited:?}");

    let mut consumer = b.connect().await;
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let p = fetch(&mut consumer, "poll", 0, 10_000, 12).await;
        (started.elapsed(), p)
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The waiting fetch holds only its own connection: this one is served meanwhile.
    let meta: MetadataResponse = c.call(9, &MetadataRequest::default().with_topics(None)).await;
    assert_eq!(meta.topics.len(), 1);
    produce(&mut c, "poll", 0, batch(Compression::None, &["wake"])).await;
    let (waited, p) = waiter.await.unwrap();
    assert!(waited < Duration::from_secs(5), "fetch waited {waited:?} despite the append");
    assert_eq!(decode(p.records.as_ref().unwrap())[0].1, vec!["wake"]);
}

#[tokio::test]
async fn list_offsets_earliest_latest_and_by_time() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    create_topic(&mut c, "times", 1, &[]).await;
    produce(&mut c, "times", 0, batch(Compression::None, &["a", "b", "c"])).await; // timestamps 1000..1002
    let lookup = |ts: i64| {
        let mut req = ListOffsetsRequest::default();
        req.replica_id = (-1).into();
        req.topics = vec![ListOffsetsTopic::default()
            .with_name(name("times"))
            .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(ts)])];
        req
    };
    let mut answers = vec![];
    for ts in [-2, -1, 1001, 5000] {
        let resp: ListOffsetsResponse = c.call(6, &lookup(ts)).await;
        let p = &resp.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        answers.push((p.offset, p.timestamp));
    }
    assert_eq!(answers, vec![(0, -1), (3, -1), (1, 1001), (-1, -1)]);
}

#[tokio::test]
async fn acks_zero_gets_no_response_and_keeps_order() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    create_topic(&mut c, "fire", 1, &[]).await;
    c.send(9, &produce_request("fire", 0, 0, batch(Compression::None, &["one"]))).await;
    // The next response on the connection is the fetch's, not a produce ack.
    let p = fetch(&mut c, "fire", 0, 2000, 12).await;
    assert_eq!(decode(p.records.as_ref().unwrap())[0].1, vec!["one"]);
}

#[tokio::test]
async fn topics_and_records_survive_a_restart() {
    let mut b = TestBroker::start().await;
    let mut c = b.connect().await;
    create_topic(&mut c, "durable", 2, &[("segment.bytes", "1048576")]).await;
    produce(&mut c, "durable", 1, batch(Compression::Gzip, &["kept"])).await;
    drop(c);
    b.restart().await;
    let mut c = b.connect().await;
    let meta: MetadataResponse = c.call(9, &MetadataRequest::default().with_topics(None)).await;
    assert_eq!(meta.topics.len(), 1);
    assert_eq!(meta.topics[0].partitions.len(), 2);
    let mut req = fetch_request("durable", 0, 0, 1, 1 << 20);
    req.topics[0].partitions[0].partition = 1;
    let resp: FetchResponse = c.call(12, &req).await;
    assert_eq!(decode(resp.responses[0].partitions[0].records.as_ref().unwrap())[0].1, vec!["kept"]);
    assert_eq!(produce(&mut c, "durable", 1, batch(Compression::None, &["next"])).await, (0, 1));
}
