//! Requests that belong to the cluster's metadata machinery: the quorum's
//! RPCs (Vote, BeginQuorumEpoch, EndQuorumEpoch, Fetch of
//! `__cluster_metadata`, FetchSnapshot, DescribeQuorum), the controller's
//! (BrokerRegistration, BrokerHeartbeat, UnregisterBroker, AlterPartition
//! from partition leaders, AllocateProducerIds) and, in cluster mode, the admin requests the
//! controller answers (CreateTopics, DeleteTopics, ElectLeaders). They are
//! handed to the cluster
//! driver and answered when it answers; the connection waits meanwhile, as
//! it does for any request.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, FetchRequest};

use super::Request;
use crate::cluster::metadata_node::error_response;
use crate::cluster::peers::{PeerRequest, PeerResponse};
use crate::quorum::{METADATA_TOPIC, METADATA_TOPIC_ID};
use crate::server::node::{Cx, Step};

/// Client id every node uses on its connections to other nodes; requests
/// carrying it are never forwarded again.
pub const PEER_CLIENT_ID_PREFIX: &str = "faultline-peer-";

/// Does this Fetch read the metadata log (a voter or observer of the quorum)?
pub fn is_metadata_fetch(req: &FetchRequest) -> bool {
    req.topics.iter().any(|t| t.topic.0.as_str() == METADATA_TOPIC || t.topic_id == METADATA_TOPIC_ID)
}

/// Hand `request` to the cluster driver; answer when it does.
pub(crate) fn forward(cx: &mut Cx, request: PeerRequest, req: Request, client_id: &str) -> Step {
    let Some(link) = cx.node.cluster() else {
        // A single broker has no quorum and no controller to ask.
        let refusal = error_response(&request, ResponseError::NotController);
        return encode(req, refusal);
    };
    let from_peer = client_id.starts_with(PEER_CLIENT_ID_PREFIX);
    let answer = link.call(request.clone(), from_peer);
    Step::Await(Box::pin(async move {
        match answer.await {
            Some(response) => encode(req, response),
            None => encode(req, error_response(&request, ResponseError::NotController)),
        }
    }))
}

/// ElectLeaders on a single broker (no `process_roles`): every partition
/// has one replica, this broker, which leads it already, so every existing
/// partition named is ELECTION_NOT_NEEDED and, asked for all partitions,
/// nothing is elected (Kafka lists only partitions that elected someone).
pub(crate) fn elect_leaders_single(cx: &Cx, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let mut resp = ElectLeadersResponse::default();
    if !matches!(req.election_type, 0 | 1) {
        return resp.with_error_code(ResponseError::InvalidRequest.code());
    }
    for t in req.topic_partitions.unwrap_or_default() {
        let hosted = cx.node.topics.get(t.topic.as_str());
        let mut out = ReplicaElectionResult::default().with_topic(t.topic.clone());
        for index in t.partitions {
            let exists = hosted.as_ref().is_some_and(|h| h.partition(index).is_some());
            let (code, message) = if exists {
                (ResponseError::ElectionNotNeeded, "a single broker leads every partition it has")
            } else {
                (ResponseError::UnknownTopicOrPartition, "no such partition")
            };
            out.partition_result.push(
                PartitionResult::default()
                    .with_partition_id(index)
                    .with_error_code(code.code())
                    .with_error_message(Some(super::str_bytes(message))),
            );
        }
        resp.replica_election_results.push(out);
    }
    resp
}

/// Encode `response` for the request it answers.
fn encode(req: Request, response: PeerResponse) -> Step {
    match response {
        PeerResponse::Vote(r) => req.respond(&r),
        PeerResponse::BeginQuorumEpoch(r) => req.respond(&r),
        PeerResponse::EndQuorumEpoch(r) => req.respond(&r),
        PeerResponse::Fetch(r) => req.respond(&r),
        PeerResponse::FetchSnapshot(r) => req.respond(&r),
        PeerResponse::DescribeQuorum(r) => req.respond(&r),
        PeerResponse::BrokerRegistration(r) => req.respond(&r),
        PeerResponse::BrokerHeartbeat(r) => req.respond(&r),
        PeerResponse::UnregisterBroker(r) => req.respond(&r),
        PeerResponse::CreateTopics(r) => req.respond(&r),
        PeerResponse::DeleteTopics(r) => req.respond(&r),
        PeerResponse::AlterPartition(r) => req.respond(&r),
        PeerResponse::ElectLeaders(r) => req.respond(&r),
        PeerResponse::AllocateProducerIds(r) => req.respond(&r),
    }
}
