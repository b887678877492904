//! Idempotent producers over real TCP: InitProducerId hands out fresh ids,
//! a retried batch is stored once and answered with its original offset (also
//! after a restart), and a gap in the sequence is refused.

mod broker_support;

use broker_support::*;
use bytes::Bytes;
use faultline_broker::client::batch::ProducerFields;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

/// A batch of `values` from producer `pid` at `epoch`, numbered from `seq`.
/// Timestamped now: a producer whose last batch is older than
/// `producer.id.expiration.ms` (by its timestamps, as Kafka judges) is
/// forgotten, and a batch from 1970 would be.
fn idempotent_batch(pid: i64, epoch: i16, seq: i32, values: &[&str]) -> Bytes {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    batch_at(ProducerFields { id: pid, epoch, base_sequence: seq }, Compression::None, values, |_| None, now)
}

async fn init_producer_id(c: &mut Conn, transactional_id: Option<&str>) -> InitProducerIdResponse {
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = transactional_id.map(|t| TransactionalId(str_bytes(t)));
    req.transaction_timeout_ms = 60_000;
    req.producer_id = (-1).into();
    req.producer_epoch = -1;
    c.call(4, &req).await
}

/// Every value in the partition, in offset order.
async fn values(c: &mut Conn, topic: &str) -> Vec<String> {
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.partition_max_bytes = 1 << 20;
    let mut req = FetchRequest::default();
    req.replica_id = (-1).into();
    req.max_bytes = 1 << 20;
    req.topics = vec![FetchTopic::default().with_topic(name(topic)).with_partitions(vec![p])];
    let resp: FetchResponse = c.call(12, &req).await;
    let mut records = resp.responses[0].partitions[0].records.clone().unwrap_or_default();
    let mut out = Vec::new();
    while !records.is_empty() {
        for r in RecordBatchDecoder::decode(&mut records).unwrap().records {
            out.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn retries_are_stored_once_and_gaps_refused_across_a_restart() {
    let mut b = TestBroker::start().await;
    let mut c = b.connect().await;
    create_topic(&mut c, "idem", 1, &[]).await;

    let first = init_producer_id(&mut c, None).await;
    assert_eq!(first.error_code, 0);
    assert!(first.producer_id.0 >= 0);
    assert_eq!(first.producer_epoch, 0);
    let second = init_producer_id(&mut c, Some("")).await;
    assert_eq!(second.error_code, 0, "an empty transactional id is no transactional id");
    assert_ne!(second.producer_id, first.producer_id);
    let pid = first.producer_id.0;

    assert_eq!(produce(&mut c, "idem", 0, batch(Compression::None, &["plain"])).await, (0, 0));
    let a = idempotent_batch(pid, 0, 0, &["a0", "a1"]);
    assert_eq!(produce(&mut c, "idem", 0, a.clone()).await, (0, 1));
    assert_eq!(produce(&mut c, "idem", 0, a.clone()).await, (0, 1), "the retry gets the original offset");
    let gap = idempotent_batch(pid, 0, 5, &["gap"]);
    let (code, _) = produce(&mut c, "idem", 0, gap).await;
    assert_eq!(code, ResponseError::OutOfOrderSequenceNumber.code());
    let b2 = idempotent_batch(pid, 0, 2, &["b2"]);
    assert_eq!(produce(&mut c, "idem", 0, b2.clone()).await, (0, 3));
    assert_eq!(values(&mut c, "idem").await, ["plain", "a0", "a1", "b2"]);

    b.restart().await;
    let mut c = b.connect().await;
    assert_eq!(produce(&mut c, "idem", 0, b2).await, (0, 3), "the restarted broker still knows the batch");
    assert_eq!(produce(&mut c, "idem", 0, a).await, (0, 1));
    let (code, _) = produce(&mut c, "idem", 0, idempotent_batch(pid, 0, 9, &["late"])).await;
    assert_eq!(code, ResponseError::OutOfOrderSequenceNumber.code());
    assert_eq!(produce(&mut c, "idem", 0, idempotent_batch(pid, 0, 3, &["c3"])).await, (0, 4));
    assert_eq!(values(&mut c, "idem").await, ["plain", "a0", "a1", "b2", "c3"]);

    // Ids are never reused after a restart.
    let third = init_producer_id(&mut c, None).await;
    assert_eq!(third.error_code, 0);
    assert!(third.producer_id.0 > second.producer_id.0);
}

#[tokio::test]
async fn transactional_ids_and_half_given_producers_are_refused() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    let resp = init_producer_id(&mut c, Some("txn-1")).await;
    assert_eq!(resp.error_code, ResponseError::InvalidRequest.code());
    assert_eq!((resp.producer_id.0, resp.producer_epoch), (-1, -1));

    let mut req = InitProducerIdRequest::default();
    req.producer_id = 5.into();
    req.producer_epoch = -1;
    let resp: InitProducerIdResponse = c.call(4, &req).await;
    assert_eq!(resp.error_code, ResponseError::InvalidRequest.code());

    // A KIP-360 bump with a known id and epoch gets a fresh id at epoch 0.
    let first = init_producer_id(&mut c, None).await;
    let mut req = InitProducerIdRequest::default();
    req.producer_id = first.producer_id;
    req.producer_epoch = 0;
    let bumped: InitProducerIdResponse = c.call(4, &req).await;
    assert_eq!(bumped.error_code, 0);
    assert_ne!(bumped.producer_id, first.producer_id);
    assert_eq!(bumped.producer_epoch, 0);
}
