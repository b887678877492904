//! The producer against a scripted broker: a refusal is DEFINITE (not
//! written), a lost answer is INDETERMINATE; an idempotent producer sends a
//! partition's first batch alone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use faultline_broker::client::{ClientError, ProduceError, Producer, ProducerConfig, ProducerRecord, ResponseError};
use faultline_broker::io::real::RealIo;
use faultline_broker::record_batch::BatchHeader;
use faultline_broker::wire::{
    advertised_api_versions, decode_body, decode_request_header, encode_response, read_frame, write_frame,
    RequestPrefix,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdResponse, MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

/// How the scripted broker answers Produce.
#[derive(Clone, Copy)]
enum OnProduce {
    /// Never answer.
    Silence,
    /// Answer every partition with this error code.
    Error(i16),
    /// Accept every batch; hold the answer to a batch at sequence 0 for a
    /// while and note whether another request arrived meanwhile.
    HoldFirst,
}

/// What [`OnProduce::HoldFirst`] saw: per batch at sequence 0, whether a
/// later request was already written while it was unanswered.
type Overtaken = Arc<Mutex<Vec<bool>>>;

/// A one-topic ("t", one partition, led by node 0) broker speaking just
/// ApiVersions, Metadata and Produce.
async fn scripted_broker(on_produce: OnProduce) -> String {
    scripted_broker_noting(on_produce, Overtaken::default()).await
}

async fn scripted_broker_noting(on_produce: OnProduce, overtaken: Overtaken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let overtaken = overtaken.clone();
            tokio::spawn(async move {
                while let Ok(Some(mut frame)) = read_frame(&mut sock, 1 << 20).await {
                    let prefix = RequestPrefix::parse(&frame).unwrap();
                    let key = prefix.known_api_key().unwrap();
                    let (v, corr) = (prefix.api_version, prefix.correlation_id);
                    decode_request_header(&mut frame, key, v).unwrap();
                    let reply = match key {
                        ApiKey::ApiVersions => encode_response(key, v, corr, &advertised_api_versions(0)).unwrap(),
                        ApiKey::Metadata => encode_response(key, v, corr, &metadata(addr.port() as i32)).unwrap(),
                        ApiKey::Produce => {
                            let req: ProduceRequest = decode_body(&mut frame, v).unwrap();
                            match on_produce {
                                OnProduce::Silence => continue,
                                OnProduce::Error(code) => {
                                    encode_response(key, v, corr, &produce_error(&req, code)).unwrap()
                                }
                                OnProduce::HoldFirst => {
                                    let batch = req.topic_data[0].partition_data[0].records.clone().unwrap();
                                    if BatchHeader::parse(&batch).unwrap().base_sequence == 0 {
                                        tokio::time::sleep(Duration::from_millis(100)).await;
                                        let mut b = [0u8; 1];
                                        let peek = sock.peek(&mut b);
                                        let more = tokio::time::timeout(Duration::from_millis(5), peek).await;
                                        overtaken.lock().unwrap().push(more.is_ok());
                                    }
                                    encode_response(key, v, corr, &produce_error(&req, 0)).unwrap()
                                }
                            }
                        }
                        ApiKey::InitProducerId => {
                            let resp =
                                InitProducerIdResponse::default().with_producer_id(7.into()).with_producer_epoch(0);
                            encode_response(key, v, corr, &resp).unwrap()
                        }
                        other => panic!("scripted broker does not speak {other:?}"),
                    };
                    write_frame(&mut sock, &reply).await.unwrap();
                }
            });
        }
    });
    addr.to_string()
}

fn metadata(port: i32) -> MetadataResponse {
    let mut m = MetadataResponse::default();
    m.brokers = vec![MetadataResponseBroker::default()
        .with_node_id(0.into())
        .with_host(StrBytes::from_static_str("127.0.0.1"))
        .with_port(port)];
    m.controller_id = 0.into();
    m.topics = vec![MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
        .with_partitions(vec![MetadataResponsePartition::default()
            .with_partition_index(0)
            .with_leader_id(0.into())
            .with_replica_nodes(vec![0.into()])
            .with_isr_nodes(vec![0.into()])])];
    m
}

fn produce_error(req: &ProduceRequest, code: i16) -> ProduceResponse {
    let mut r = ProduceResponse::default();
    r.responses = req
        .topic_data
        .iter()
        .map(|t| {
            TopicProduceResponse::default().with_name(t.name.clone()).with_partition_responses(
                t.partition_data
                    .iter()
                    .map(|p| PartitionProduceResponse::default().with_index(p.index).with_error_code(code))
                    .collect(),
            )
        })
        .collect();
    r
}

fn producer(addr: String, retries: i32) -> Producer {
    let mut c = ProducerConfig::new(vec![addr]);
    c.retries = retries;
    c.request_timeout_ms = 300;
    c.delivery_timeout_ms = 2_000;
    c.retry_backoff_ms = 20;
    c.linger_ms = 0;
    Producer::new(RealIo::new(), c).unwrap()
}

async fn send_one(p: &Producer) -> ProduceError {
    p.send(ProducerRecord::new("t", Bytes::from_static(b"v"))).await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answer_is_indeterminate() {
    let p = producer(scripted_broker(OnProduce::Silence).await, 0);
    let err = send_one(&p).await;
    assert!(matches!(err, ProduceError::Indeterminate(ClientError::Timeout { .. })), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_stay_indeterminate_through_retries() {
    let p = producer(scripted_broker(OnProduce::Silence).await, i32::MAX);
    let err = send_one(&p).await;
    assert!(!err.is_definite(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_is_definite() {
    let p = producer(scripted_broker(OnProduce::Error(ResponseError::MessageTooLarge.code())).await, 5);
    let err = send_one(&p).await;
    assert!(err.is_definite(), "{err}");
    assert_eq!(err.error().broker_error(), Some(ResponseError::MessageTooLarge));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_refusals_exhaust_retries_definitely() {
    // NOT_ENOUGH_REPLICAS is a refusal before appending. (NOT_LEADER_OR_FOLLOWER
    // is not definite: a leader that lost the lead while the batch waited for
    // its acknowledgement answers it too, and the batch may survive.)
    let p = producer(scripted_broker(OnProduce::Error(ResponseError::NotEnoughReplicas.code())).await, 2);
    let err = send_one(&p).await;
    assert!(err.is_definite(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_timeout_is_indeterminate() {
    // REQUEST_TIMED_OUT from the broker: the leader appended, replication
    // was not confirmed in time.
    let p = producer(scripted_broker(OnProduce::Error(ResponseError::RequestTimedOut.code())).await, 0);
    let err = send_one(&p).await;
    assert!(!err.is_definite(), "{err}");
}

/// The broker accepts an unknown producer's batch at any sequence, so a
/// partition's second batch must not be on its way before the first is
/// stored: had it overtaken the first, it would be stored as the first and
/// the true first refused as out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_first_batch_goes_alone() {
    let overtaken = Overtaken::default();
    let addr = scripted_broker_noting(OnProduce::HoldFirst, overtaken.clone()).await;
    let mut c = ProducerConfig::new(vec![addr]);
    c.enable_idempotence = true;
    c.max_in_flight_requests_per_connection = 5;
    c.linger_ms = 0;
    // One record per batch.
    c.batch_size = 1;
    let p = Producer::new(RealIo::new(), c).unwrap();
    let sends: Vec<_> = (0..4).map(|_| p.send(ProducerRecord::new("t", Bytes::from_static(b"v")))).collect();
    for s in sends {
        s.await.unwrap();
    }
    assert_eq!(*overtaken.lock().unwrap(), vec![false], "a later batch was sent while the first was unanswered");
    assert_eq!(p.sequence_refusals(), 0);
}
