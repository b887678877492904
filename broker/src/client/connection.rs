//! One client connection to one broker: length-prefixed framing, correlation
//! ids with pipelined requests, ApiVersions negotiation and request timeouts.
//!
//! A connection that times out or fails is marked broken and never reused:
//! after a timeout the byte stream may hold half a request or a late
//! response, so the only safe move (Kafka's too) is to drop it and reconnect.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    AllocateProducerIdsRequest, AlterPartitionRequest, ApiKey, ApiVersionsRequest, ApiVersionsResponse,
    BeginQuorumEpochRequest, BrokerHeartbeatRequest, BrokerRegistrationRequest, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest, DescribeQuorumRequest,
    ElectLeadersRequest, EndQuorumEpochRequest, FetchRequest, FetchSnapshotRequest, FindCoordinatorRequest,
    HeartbeatRequest, InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest,
    OffsetForLeaderEpochRequest, ProduceRequest, RequestHeader, SyncGroupRequest, UnregisterBrokerRequest, VoteRequest,
};
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::oneshot;

use super::ClientError;
use crate::io::{self, Env, Stream};
use crate::wire;

/// Largest response frame accepted; anything bigger is a corrupt stream.
const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;

/// `UNSUPPORTED_VERSION`: the broker answers ApiVersions with a v0 body then.
const UNSUPPORTED_VERSION: i16 = 35;

/// The versions this client can speak, per API. Produce and Fetch stop at the
/// last versions that name topics (later ones use topic ids); FindCoordinator
/// and OffsetFetch at the last that name one group each. The inner-cluster
/// APIs span every version `kafka-protocol` speaks; what the quorum needs on
/// top (Vote v2 for pre-vote, Fetch v12) is checked by
/// [`crate::cluster::peers`].
pub fn client_versions(key: i16) -> Option<(i16, i16)> {
    let r = |k: i16, min, max| if key == k { Some((min, max)) } else { None };
    r(ApiVersionsRequest::KEY, 0, 3)
        .or_else(|| r(ProduceRequest::KEY, 3, 12))
        .or_else(|| r(FetchRequest::KEY, 4, 12))
        .or_else(|| r(ListOffsetsRequest::KEY, 1, 10))
        .or_else(|| r(MetadataRequest::KEY, 1, 12))
        .or_else(|| r(CreateTopicsRequest::KEY, 2, 7))
        .or_else(|| r(DeleteTopicsRequest::KEY, 1, 6))
        .or_else(|| r(DescribeConfigsRequest::KEY, 1, 4))
        .or_else(|| r(InitProducerIdRequest::KEY, 0, 4))
        .or_else(|| r(FindCoordinatorRequest::KEY, 0, 3))
        .or_else(|| r(JoinGroupRequest::KEY, 0, 9))
        .or_else(|| r(SyncGroupRequest::KEY, 0, 5))
        .or_else(|| r(HeartbeatRequest::KEY, 0, 4))
        .or_else(|| r(LeaveGroupRequest::KEY, 0, 5))
        .or_else(|| r(OffsetCommitRequest::KEY, 2, 8))
        .or_else(|| r(OffsetFetchRequest::KEY, 1, 7))
        .or_else(|| r(ListGroupsRequest::KEY, 0, 4))
        .or_else(|| r(DescribeGroupsRequest::KEY, 0, 5))
        .or_else(|| r(DeleteGroupsRequest::KEY, 0, 2))
        .or_else(|| r(OffsetDeleteRequest::KEY, 0, 0))
        .or_else(|| r(VoteRequest::KEY, 0, 2))
        .or_else(|| r(BeginQuorumEpochRequest::KEY, 0, 1))
        .or_else(|| r(EndQuorumEpochRequest::KEY, 0, 1))
        .or_else(|| r(DescribeQuorumRequest::KEY, 0, 2))
        .or_else(|| r(FetchSnapshotRequest::KEY, 0, 1))
        .or_else(|| r(BrokerRegistrationRequest::KEY, 0, 4))
        .or_else(|| r(BrokerHeartbeatRequest::KEY, 0, 1))
        .or_else(|| r(UnregisterBrokerRequest::KEY, 0, 0))
        .or_else(|| r(AlterPartitionRequest::KEY, 2, 3))
        .or_else(|| r(ElectLeadersRequest::KEY, 1, 2))
        .or_else(|| r(AllocateProducerIdsRequest::KEY, 0, 0))
        .or_else(|| r(OffsetForLeaderEpochRequest::KEY, 2, 4))
}

fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map(|k| format!("{k:?}")).unwrap_or_else(|_| format!("api {key}"))
}

/// In-flight requests and the connection's fate, shared with the reader task.
#[derive(Default)]
struct Shared {
    pending: BTreeMap<i32, oneshot::Sender<Bytes>>,
    broken: Option<String>,
    stop_reader: Option<oneshot::Sender<()>>,
}

impl Shared {
    /// Mark broken (first reason wins), stop the reader and fail every
    /// waiter: dropping a waiter's sender tells it the connection is gone.
    fn break_with(&mut self, reason: String) {
        if self.broken.is_none() {
            self.broken = Some(reason);
        }
        self.pending.clear();
        if let Some(stop) = self.stop_reader.take() {
            let _ = stop.send(());
        }
    }
}

/// A connection to one broker.
pub struct Connection {
    env: Env,
    addr: String,
    client_id: Option<StrBytes>,
    writer: tokio::sync::Mutex<WriteHalf<Box<dyn Stream>>>,
    shared: Arc<Mutex<Shared>>,
    next_correlation_id: AtomicI32,
    /// The broker's supported range per API key, from ApiVersions.
    broker_versions: OnceLock<BTreeMap<i16, (i16, i16)>>,
}

impl Connection {
    /// Connect to `addr` and negotiate API versions, all within `timeout`.
    pub async fn connect(
        env: &Env,
        addr: &str,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Arc<Connection>, ClientError> {
        let connect_err = |reason: String| ClientError::Connect { addr: addr.to_string(), reason };
        let stream = match io::timeout(env, timeout, env.connect(addr)).await {
            None => return Err(connect_err(format!("no connection after {} ms", timeout.as_millis()))),
            Some(Err(e)) => return Err(connect_err(e.to_string())),
            Some(Ok(s)) => s,
        };
        let (reader, writer) = tokio::io::split(stream);
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared = Arc::new(Mutex::new(Shared { stop_reader: Some(stop_tx), ..Shared::default() }));
        let conn = Arc::new(Connection {
            env: env.clone(),
            addr: addr.to_string(),
            client_id: Some(StrBytes::from_string(client_id.to_string())),
            writer: tokio::sync::Mutex::new(writer),
            shared: shared.clone(),
            next_correlation_id: AtomicI32::new(0),
            broker_versions: OnceLock::new(),
        });
        io::spawn(env, &format!("client-reader-{addr}"), read_loop(reader, shared, stop_rx));
        // Nothing a handshake failure leaves behind was a user request, so
        // report it as a failure to connect.
        match conn.negotiate(timeout).await {
            Ok(()) => Ok(conn),
            Err(e) => {
                conn.mark_broken("handshake failed");
                Err(match e {
                    ClientError::ConnectionLost { reason, .. } => connect_err(reason),
                    ClientError::Timeout { ms, .. } => connect_err(format!("no ApiVersions response in {ms} ms")),
                    other => other,
                })
            }
        }
    }

    /// The address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// False once the connection failed or timed out; drop it then.
    pub fn is_usable(&self) -> bool {
        self.shared.lock().expect("connection state lock").broken.is_none()
    }

    fn mark_broken(&self, reason: &str) {
        self.shared.lock().expect("connection state lock").break_with(reason.to_string());
    }

    /// The highest version of `R` both sides speak.
    pub fn version<R: Request>(&self) -> Result<i16, ClientError> {
        let (cmin, cmax) = client_versions(R::KEY).expect("every request the client sends has a version range");
        let unsupported =
            || ClientError::UnsupportedVersion { addr: self.addr.clone(), api: api_name(R::KEY), min: cmin, max: cmax };
        let (bmin, bmax) = *self.broker_versions.get().and_then(|m| m.get(&R::KEY)).ok_or_else(unsupported)?;
        let (lo, hi) = (cmin.max(bmin), cmax.min(bmax));
        if lo > hi {
            return Err(unsupported());
        }
        Ok(hi)
    }

    async fn negotiate(&self, timeout: Duration) -> Result<(), ClientError> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("faultline"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let (_, max) = client_versions(ApiVersionsRequest::KEY).expect("ApiVersions has a range");
        let frame = self.round_trip::<ApiVersionsRequest>(&req, max, timeout, None).await?;
        // ApiVersions responses always use header v0: 4 bytes, then the error code.
        let code = frame.get(4..6).map(|b| i16::from_be_bytes([b[0], b[1]]));
        // A broker that does not know our version answers in v0 format.
        let version = if code == Some(UNSUPPORTED_VERSION) { 0 } else { max };
        let resp: ApiVersionsResponse = self.decode::<ApiVersionsRequest>(frame, version)?;
        if resp.error_code != 0 && resp.api_keys.is_empty() {
            return Err(ClientError::broker(format!("ApiVersions to {}", self.addr), resp.error_code, None));
        }
        let versions = resp.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        let _ = self.broker_versions.set(versions);
        Ok(())
    }

    /// Send `req` at `version` and wait up to `timeout` for its response.
    pub async fn request<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, ClientError> {
        let frame = self.round_trip(req, version, timeout, None).await?;
        self.decode::<R>(frame, version)
    }

    /// As [`Connection::request`], dropping `written` once the request is
    /// on the wire (or has failed before it got there), so a caller can
    /// hold its next request back until then: requests on one connection
    /// are handled in the order written.
    pub async fn request_then_release<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
        written: oneshot::Sender<()>,
    ) -> Result<R::Response, ClientError> {
        let frame = self.round_trip(req, version, timeout, Some(written)).await?;
        self.decode::<R>(frame, version)
    }

    fn decode<R: Request>(&self, frame: Bytes, version: i16) -> Result<R::Response, ClientError> {
        let key = ApiKey::try_from(R::KEY).expect("requests the client sends have known keys");
        let (_header, body) = wire::decode_response::<R::Response>(frame, key, version).map_err(|e| {
            ClientError::Protocol(format!("{} v{version} response from {}: {e}", api_name(R::KEY), self.addr))
        })?;
        Ok(body)
    }

    /// Send a request the broker does not answer (Produce with acks=0).
    pub async fn send_oneway<R: Request>(&self, req: &R, version: i16, timeout: Duration) -> Result<(), ClientError> {
        let (_, frame) = self.encode(req, version)?;
        self.check_usable()?;
        match io::timeout(&self.env, timeout, self.write_frame(&frame)).await {
            Some(r) => r,
            None => {
                self.mark_broken("write timed out");
                Err(ClientError::Timeout { addr: self.addr.clone(), ms: timeout.as_millis() as u64 })
            }
        }
    }

    /// Write a request and wait for the frame with its correlation id.
    async fn round_trip<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
        written: Option<oneshot::Sender<()>>,
    ) -> Result<Bytes, ClientError> {
        let (correlation_id, frame) = self.encode(req, version)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut shared = self.shared.lock().expect("connection state lock");
            if let Some(reason) = &shared.broken {
                return Err(ClientError::Connect { addr: self.addr.clone(), reason: reason.clone() });
            }
            // Registered before writing so that a fast response finds its waiter.
            shared.pending.insert(correlation_id, tx);
        }
        let exchange = async {
            self.write_frame(&frame).await?;
            drop(written);
            rx.await.map_err(|_| self.lost())
        };
        match io::timeout(&self.env, timeout, exchange).await {
            Some(r) => r,
            None => {
                self.mark_broken("request timed out");
                Err(ClientError::Timeout { addr: self.addr.clone(), ms: timeout.as_millis() as u64 })
            }
        }
    }

    fn encode<R: Request>(&self, req: &R, version: i16) -> Result<(i32, Bytes), ClientError> {
        let correlation_id = self.next_correlation_id.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(self.client_id.clone());
        let frame = wire::encode_request(&header, req)
            .map_err(|e| ClientError::InvalidArgument(format!("cannot encode {} v{version}: {e}", api_name(R::KEY))))?;
        Ok((correlation_id, frame))
    }

    fn check_usable(&self) -> Result<(), ClientError> {
        match &self.shared.lock().expect("connection state lock").broken {
            Some(reason) => Err(ClientError::Connect { addr: self.addr.clone(), reason: reason.clone() }),
            None => Ok(()),
        }
    }

    fn lost(&self) -> ClientError {
        let reason = self.shared.lock().expect("connection state lock").broken.clone();
        ClientError::ConnectionLost { addr: self.addr.clone(), reason: reason.unwrap_or_else(|| "closed".into()) }
    }

    async fn write_frame(&self, frame: &[u8]) -> Result<(), ClientError> {
        let mut w = self.writer.lock().await;
        wire::write_frame(&mut *w, frame).await.map_err(|e| {
            self.mark_broken(&format!("write failed: {e}"));
            self.lost()
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.mark_broken("connection closed by client");
    }
}

/// Read response frames and hand each to the request waiting for it.
async fn read_loop(mut reader: ReadHalf<Box<dyn Stream>>, shared: Arc<Mutex<Shared>>, mut stop: oneshot::Receiver<()>) {
    let reason = loop {
        let frame = tokio::select! {
            biased;
            _ = &mut stop => break "connection closed".to_string(),
            f = wire::read_frame(&mut reader, MAX_RESPONSE_BYTES) => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break "closed by broker".to_string(),
            Err(e) => break format!("read failed: {e}"),
        };
        let correlation_id = match frame.get(..4) {
            Some(b) => i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            None => break "response frame without a header".to_string(),
        };
        let waiter = shared.lock().expect("connection state lock").pending.remove(&correlation_id);
        match waiter {
            // The waiter may have given up (timeout); the frame is then dropped.
            Some(tx) => {
                let _ = tx.send(frame);
            }
            None => break format!("response with unknown correlation id {correlation_id}"),
        }
    };
    shared.lock().expect("connection state lock").break_with(reason);
}
