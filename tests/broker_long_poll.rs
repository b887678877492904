//! Parked requests over real TCP: a long-poll Fetch completes when data
//! arrives, requests pipelined behind it are answered in order after it,
//! and a client that hangs up ends its long poll at once.

mod broker_support;

use broker_support::*;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiVersionsRequest, FetchRequest};
use kafka_protocol::records::Compression;
use tokio::io::AsyncWriteExt;

fn fetch(offset: i64, max_wait_ms: i32) -> FetchRequest {
    let mut fp = FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = offset;
    fp.partition_max_bytes = 1 << 20;
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default().with_topic(name("t")).with_partitions(vec![fp])])
}

#[tokio::test]
async fn a_parked_fetch_is_woken_by_a_produce() {
    let b = TestBroker::start().await;
    let mut admin = b.connect().await;
    create_topic(&mut admin, "t", 1, &[]).await;
    let mut consumer = b.connect().await;
    // Long enough that only a wake-up can answer it before the test times out.
    let corr = consumer.send(12, &fetch(0, 600_000)).await;
    tokio::task::yield_now().await;
    let (code, _) = produce(&mut admin, "t", 0, batch(Compression::None, &["v"])).await;
    assert_eq!(code, 0);
    let resp = consumer.recv::<FetchRequest>(12, corr).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 1));
    assert!(!p.records.as_ref().unwrap().is_empty());
}

#[tokio::test]
async fn requests_pipelined_behind_a_parked_fetch_are_answered_in_order() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    create_topic(&mut c, "t", 1, &[]).await;
    let first = c.send(12, &fetch(0, 200)).await;
    let second = c.send(3, &ApiVersionsRequest::default()).await;
    let resp = c.recv::<FetchRequest>(12, first).await;
    assert!(resp.responses[0].partitions[0].records.as_ref().unwrap().is_empty());
    let versions = c.recv::<ApiVersionsRequest>(3, second).await;
    assert_eq!(versions.error_code, 0);
}

#[tokio::test]
async fn a_client_that_hangs_up_ends_its_long_poll() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    create_topic(&mut c, "t", 1, &[]).await;
    c.send(12, &fetch(0, 600_000)).await;
    // Half-close: the broker reads end-of-stream while the fetch is parked,
    // drops the request and closes its side, long before max_wait_ms.
    c.stream.shutdown().await.unwrap();
    assert!(c.is_closed_by_broker().await, "the broker kept a hung-up client's long poll open");
}

/// Creating hundreds of partitions is slow disk work (an fsync or more each); it must hold up only
/// the request that asked for it. While it runs, another client's
/// ApiVersions is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_slow_create_topics_does_not_stall_other_clients() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let b = TestBroker::start().await;
    let mut creator = b.connect().await;
    let mut bystander = b.connect().await;
    let _ = bystander.call(3, &ApiVersionsRequest::default()).await;
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let create = tokio::spawn(async move {
        let mut req = kafka_protocol::messages::CreateTopicsRequest::default();
        req.topics = vec![new_topic("wide", 500, &[])];
        req.timeout_ms = 600_000;
        let resp: kafka_protocol::messages::CreateTopicsResponse = creator.call(7, &req).await;
        flag.store(true, Ordering::SeqCst);
        resp.topics[0].error_code
    });
    // Let the creation start, then ask something unrelated.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!done.load(Ordering::SeqCst), "creating 500 partitions finished too fast to test anything");
    let versions = bystander.call(3, &ApiVersionsRequest::default()).await;
    assert_eq!(versions.error_code, 0);
    assert!(!done.load(Ordering::SeqCst), "ApiVersions waited for an unrelated CreateTopics");
    assert_eq!(create.await.unwrap(), 0);
}
