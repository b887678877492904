//! Each resource limit of the broker, exercised over real TCP: connections
//! in all and per address, idle and trickling connections, Fetch response
//! size and duplicate partitions, partitions in all, and auto-creation per
//! Metadata request.

mod broker_support;

use broker_support::*;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiVersionsRequest, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, MetadataRequest,
};
use kafka_protocol::records::Compression;
use tokio::io::AsyncWriteExt;

fn fetch_of(topic: &str, partitions: &[i32], max_bytes: i32) -> FetchRequest {
    let parts = partitions
        .iter()
        .map(|&p| {
            let mut fp = FetchPartition::default();
            fp.partition = p;
            fp.partition_max_bytes = 1 << 20;
            fp
        })
        .collect();
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default().with_topic(name(topic)).with_partitions(parts)])
}

#[tokio::test]
async fn connections_per_address_are_capped() {
    let b = TestBroker::start_with(|c| c.max_connections_per_ip = 2).await;
    let mut first = b.connect().await;
    let mut second = b.connect().await;
    let _ = first.call(3, &ApiVersionsRequest::default()).await;
    let _ = second.call(3, &ApiVersionsRequest::default()).await;
    let mut third = b.connect().await;
    assert!(third.is_closed_by_broker().await, "a third connection from one address was kept");
    drop(first);
    // The slot frees when a connection ends; give the broker a moment to see it.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut fourth = b.connect().await;
    let _ = fourth.call(3, &ApiVersionsRequest::default()).await;
}

#[tokio::test]
async fn connections_in_all_are_capped() {
    let b = TestBroker::start_with(|c| c.max_connections = 1).await;
    let mut first = b.connect().await;
    let _ = first.call(3, &ApiVersionsRequest::default()).await;
    let mut second = b.connect().await;
    assert!(second.is_closed_by_broker().await);
    let _ = first.call(3, &ApiVersionsRequest::default()).await;
}

#[tokio::test]
async fn idle_and_trickling_connections_are_closed() {
    let b = TestBroker::start_with(|c| c.connections_max_idle_ms = 300).await;
    let mut idle = b.connect().await;
    assert!(idle.is_closed_by_broker().await, "an idle connection outlived connections_max_idle_ms");
    // A peer sending a frame a byte at a time never completes a request.
    let mut trickle = b.connect().await;
    let frame = [0u8, 0, 0, 100];
    // Writes fail once the broker has closed the connection, which is the point.
    let mut writes_failed = false;
    for byte in frame.into_iter().chain([0; 20]) {
        writes_failed |= trickle.stream.write_all(&[byte]).await.is_err();
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    }
    assert!(
        writes_failed || trickle.is_closed_by_broker().await,
        "a trickling connection outlived connections_max_idle_ms"
    );
    // Busy connections stay.
    let mut busy = b.connect().await;
    for _ in 0..5 {
        let _ = busy.call(3, &ApiVersionsRequest::default()).await;
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
}

#[tokio::test]
async fn fetch_responses_are_bounded_and_duplicates_refused() {
    let b = TestBroker::start_with(|c| c.fetch_max_bytes = 2_000).await;
    let mut c = b.connect().await;
    create_topic(&mut c, "t", 8, &[]).await;
    let value = "x".repeat(400);
    for p in 0..8 {
        let (code, _) = produce(&mut c, "t", p, batch(Compression::None, &[&value])).await;
        assert_eq!(code, 0);
    }
    // The client asks for 100 MB; the broker's fetch.max.bytes wins.
    let resp = c.call(12, &fetch_of("t", &[0, 1, 2, 3, 4, 5, 6, 7], 100 << 20)).await;
    let sizes: Vec<usize> =
        resp.responses[0].partitions.iter().map(|p| p.records.as_ref().map_or(0, |r| r.len())).collect();
    let total: usize = sizes.iter().sum();
    let one_batch = *sizes.iter().max().unwrap();
    assert!(total <= 2_000 + one_batch, "{sizes:?}");
    assert!(sizes.iter().filter(|&&s| s > 0).count() < 8, "every partition fitted: {sizes:?}");
    // A partition named twice is refused, not read twice.
    let resp = c.call(12, &fetch_of("t", &[0, 0, 0], 100 << 20)).await;
    let codes: Vec<i16> = resp.responses[0].partitions.iter().map(|p| p.error_code).collect();
    let invalid = ResponseError::InvalidRequest.code();
    assert_eq!(codes, vec![0, invalid, invalid]);
    let records: Vec<usize> =
        resp.responses[0].partitions.iter().map(|p| p.records.as_ref().map_or(0, |r| r.len())).collect();
    assert_eq!(records[1..], [0, 0]);
}

#[tokio::test]
async fn partitions_in_all_are_capped() {
    let b = TestBroker::start_with(|c| c.max_partitions = 10).await;
    let mut c = b.connect().await;
    create_topic(&mut c, "a", 6, &[]).await;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![new_topic("b", 5, &[])];
    req.timeout_ms = 5000;
    let resp: CreateTopicsResponse = c.call(7, &req).await;
    assert_eq!(resp.topics[0].error_code, ResponseError::PolicyViolation.code());
    assert!(resp.topics[0].error_message.as_ref().unwrap().contains("max_partitions"));
    create_topic(&mut c, "b", 4, &[]).await;
}

#[tokio::test]
async fn metadata_auto_creates_a_bounded_number_of_topics() {
    let b = TestBroker::start_with(|c| {
        c.auto_create_topics_enable = true;
        c.max_auto_created_topics_per_request = 3;
    })
    .await;
    let mut c = b.connect().await;
    let wanted: Vec<MetadataRequestTopic> = (0..8)
        .map(|i| {
            let mut t = MetadataRequestTopic::default();
            t.name = Some(name(&format!("auto-{i}")));
            t
        })
        .collect();
    let req = MetadataRequest::default().with_topics(Some(wanted)).with_allow_auto_topic_creation(true);
    let resp = c.call(9, &req).await;
    let ok = resp.topics.iter().filter(|t| t.error_code == 0).count();
    let unknown = resp.topics.iter().filter(|t| t.error_code == ResponseError::UnknownTopicOrPartition.code()).count();
    assert_eq!((ok, unknown), (3, 5));
    // Asking again creates the next few, as a retrying client would.
    let resp = c.call(9, &req).await;
    assert_eq!(resp.topics.iter().filter(|t| t.error_code == 0).count(), 6);
}
