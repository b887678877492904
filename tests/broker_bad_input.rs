//! Bad input over real TCP: each gets its Kafka error or a closed connection,
//! and the broker keeps serving a connection opened before it and one opened
//! after it.

mod broker_support;

use broker_support::*;
use bytes::{BufMut, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Encodable;
use kafka_protocol::records::Compression;

const MAX_REQUEST: usize = 1 << 20;

async fn broker() -> TestBroker {
    let b = TestBroker::start_with(|c| c.socket_request_max_bytes = MAX_REQUEST).await;
    let mut c = b.connect().await;
    create_topic(&mut c, "t", 1, &[("max.message.bytes", "2000")]).await;
    b
}

/// Both an existing connection and a new one still get answers.
async fn still_serving(b: &TestBroker, bystander: &mut Conn) {
    for c in [bystander, &mut b.connect().await] {
        let resp: ApiVersionsResponse = c.call(3, &ApiVersionsRequest::default()).await;
        assert_eq!(resp.error_code, 0);
        let (err, _) = produce(c, "t", 0, batch(Compression::None, &["ok"])).await;
        assert_eq!(err, 0);
    }
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// A frame with a valid header for `key`/`version` and `body` as the body.
fn with_header(c: &mut Conn, key: ApiKey, version: i16, body: &[u8]) -> Vec<u8> {
    let header = c.header(key, version);
    let mut buf = BytesMut::new();
    header.encode(&mut buf, key.request_header_version(version)).unwrap();
    buf.put_slice(body);
    framed(&buf)
}

async fn assert_closes(b: &TestBroker, what: &str, bytes: impl FnOnce(&mut Conn) -> Vec<u8>) {
    let mut bystander = b.connect().await;
    let mut c = b.connect().await;
    let raw = bytes(&mut c);
    c.write_raw(&raw).await;
    assert!(c.is_closed_by_broker().await, "{what}: connection should be closed");
    still_serving(b, &mut bystander).await;
}

/// Kafka ignores bytes after a request body; librdkafka 2.16 pads its
/// all-topics Metadata v11 with 3 of them. A short body is still an error.
#[tokio::test]
async fn trailing_bytes_after_a_request_body_are_tolerated() {
    use kafka_protocol::messages::MetadataRequest;
    let b = broker().await;
    let mut c = b.connect().await;
    for (version, body) in
        [(1i16, &[0xffu8, 0xff, 0xff, 0xff, 7][..]), (11, &[0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00][..])]
    {
        let header = c.header(ApiKey::Metadata, version);
        let mut buf = BytesMut::new();
        header.encode(&mut buf, ApiKey::Metadata.request_header_version(version)).unwrap();
        buf.put_slice(body);
        c.write_raw(&framed(&buf)).await;
        let resp = c.recv::<MetadataRequest>(version, header.correlation_id).await;
        assert_eq!(resp.brokers.len(), 1, "v{version}");
    }
}

#[tokio::test]
async fn malformed_frames_close_only_their_connection() {
    let b = broker().await;
    assert_closes(&b, "frame shorter than a header", |_| framed(&[0, 3, 0])).await;
    assert_closes(&b, "negative length", |_| (-5i32).to_be_bytes().to_vec()).await;
    assert_closes(&b, "unknown api key", |_| framed(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0, 0])).await;
    assert_closes(&b, "api not served", |c| with_header(c, ApiKey::JoinGroup, 5, &[])).await;
    assert_closes(&b, "unsupported metadata version", |c| with_header(c, ApiKey::Metadata, 99, &[])).await;
    assert_closes(&b, "produce v2", |c| with_header(c, ApiKey::Produce, 2, &[0xff, 0xff, 0, 1])).await;
    assert_closes(&b, "undecodable header", |_| framed(&[0, 3, 0, 9, 0, 0, 0, 1, 0x7f, 0x7f])).await;
    assert_closes(&b, "undecodable body", |c| with_header(c, ApiKey::Metadata, 1, &[0x00, 0x00, 0x00, 0x05, 0x00]))
        .await;
    // A tiny body claiming i32::MAX topics must not make the broker allocate
    // for them (it used to abort the whole process).
    assert_closes(&b, "huge claimed array", |c| with_header(c, ApiKey::Metadata, 1, &[0x7f, 0xff, 0xff, 0xff])).await;
    assert_closes(&b, "huge claimed compact array", |c| {
        // Metadata v9 is flexible: compact array length is an unsigned varint (n + 1).
        with_header(c, ApiKey::Metadata, 9, &[0xff, 0xff, 0xff, 0xff, 0x07])
    })
    .await;
}

#[tokio::test]
async fn oversized_frame_is_refused_without_reading_it() {
    let b = broker().await;
    // Only the length is sent: the broker must close without waiting for the body.
    assert_closes(&b, "oversized frame", |_| ((MAX_REQUEST + 1) as i32).to_be_bytes().to_vec()).await;
}

#[tokio::test]
async fn corrupt_and_oversized_batches_get_partition_errors() {
    let b = broker().await;
    let mut bystander = b.connect().await;
    let mut c = b.connect().await;

    let mut corrupt = batch(Compression::None, &["a", "b"]).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    let (err, offset) = produce(&mut c, "t", 0, corrupt.into()).await;
    assert_eq!((err, offset), (ResponseError::CorruptMessage.code(), -1));

    let mut gzip_garbage = batch(Compression::Gzip, &["a"]).to_vec();
    gzip_garbage.truncate(gzip_garbage.len() - 3);
    let (err, _) = produce(&mut c, "t", 0, gzip_garbage.into()).await;
    assert_eq!(err, ResponseError::CorruptMessage.code());

    let big = "x".repeat(3000);
    let (err, _) = produce(&mut c, "t", 0, batch(Compression::None, &[&big])).await;
    assert_eq!(err, ResponseError::MessageTooLarge.code());

    let (err, _) = produce(&mut c, "missing", 0, batch(Compression::None, &["a"])).await;
    assert_eq!(err, ResponseError::UnknownTopicOrPartition.code());
    let (err, _) = produce(&mut c, "t", 7, batch(Compression::None, &["a"])).await;
    assert_eq!(err, ResponseError::UnknownTopicOrPartition.code());

    let resp: ProduceResponse = c.call(9, &produce_request("t", 0, 2, batch(Compression::None, &["a"]))).await;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, ResponseError::InvalidRequiredAcks.code());

    // Nothing refused was stored: the first good record lands at offset 0.
    assert_eq!(produce(&mut c, "t", 0, batch(Compression::None, &["good"])).await, (0, 0));
    still_serving(&b, &mut bystander).await;
}

#[tokio::test]
async fn failed_acks_zero_produce_closes_the_connection() {
    let b = broker().await;
    let mut bystander = b.connect().await;
    let mut c = b.connect().await;
    let mut corrupt = batch(Compression::None, &["a"]).to_vec();
    corrupt[30] ^= 1;
    c.send(9, &produce_request("t", 0, 0, corrupt.into())).await;
    assert!(c.is_closed_by_broker().await);
    still_serving(&b, &mut bystander).await;
}

#[tokio::test]
async fn invalid_topic_names_are_refused() {
    let b = broker().await;
    let mut c = b.connect().await;
    let mut req = CreateTopicsRequest::default();
    req.topics = [".", "..", "a b", &"x".repeat(250), "", "t"].iter().map(|n| new_topic(n, 1, &[])).collect();
    let resp: CreateTopicsResponse = c.call(5, &req).await;
    let codes: Vec<i16> = resp.topics.iter().map(|t| t.error_code).collect();
    let invalid = ResponseError::InvalidTopicException.code();
    assert_eq!(codes, vec![invalid, invalid, invalid, invalid, invalid, ResponseError::TopicAlreadyExists.code()]);
    still_serving(&b, &mut c).await;
}
