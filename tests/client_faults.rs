//! The producer's failure classification against a scripted broker: a
//! refusal is DEFINITE (not written), a lost answer is INDETERMINATE.

use bytes::Bytes;
use faultline_broker::client::{ClientError, ProduceError, Producer, ProducerConfig, ProducerRecord, ResponseError};
use faultline_broker::io::real::RealIo;
use faultline_broker::wire::{
    advertised_api_versions, decode_body, decode_request_header, encode_response, read_frame, write_frame,
    RequestPrefix,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, MetadataResponse, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

/// How the scripted broker answers Produce.
#[derive(Clone, Copy)]
enum OnProduce {
    /// Never answer.
    Silence,
    /// Answer every partition with this error code.
    Error(i16),
}

/// A one-topic ("t", one partition, led by node 0) broker speaking just
/// ApiVersions, Metadata and Produce.
async fn scripted_broker(on_produce: OnProduce) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
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
                            }
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
    let p = producer(scripted_broker(OnProduce::Error(ResponseError::NotLeaderOrFollower.code())).await, 2);
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
