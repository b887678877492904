//! Request dispatch: check the API and version, decode the header and body,
//! run the API's handler, encode the response. One submodule per Kafka API.

mod admin;
mod api_versions;
pub(crate) mod cluster;
mod coordinator;
pub(crate) mod fetch;
pub(crate) mod group;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
pub(crate) mod produce;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, FetchRequest, TopicName};

use crate::cluster::peers::PeerRequest;
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::node::{Cx, Step};
use crate::wire::{accepted_versions, decode_request_body, decode_request_header, encode_response, RequestPrefix};

/// Handle one request frame (length prefix removed).
pub(crate) fn dispatch(cx: &mut Cx, mut frame: Bytes) -> Step {
    let prefix = match RequestPrefix::parse(&frame) {
        Ok(p) => p,
        Err(e) => return Step::Close(e.to_string()),
    };
    let key = match prefix.known_api_key() {
        Ok(k) => k,
        Err(e) => return Step::Close(e.to_string()),
    };
    let version = prefix.api_version;
    let Some(accepted) = accepted_versions(key) else {
        return Step::Close(format!("{key:?} is not served by this broker (it is not in our ApiVersions)"));
    };
    if version < accepted.min || version > accepted.max {
        if key == ApiKey::ApiVersions {
            // Clients probe with their newest ApiVersions; Kafka answers in v0,
            // which every client can parse, with the versions it does support.
            let body = api_versions::unsupported();
            return respond(key, 0, prefix.correlation_id, &body);
        }
        return Step::Close(format!("{key:?} v{version} is not supported (accepted: {accepted})"));
    }
    let header = match decode_request_header(&mut frame, key, version) {
        Ok(h) => h,
        Err(e) => return Step::Close(format!("{key:?} v{version}: {e}")),
    };
    let corr = header.correlation_id;
    let client_id = header.client_id.as_deref().unwrap_or("");
    tracing::trace!(api = ?key, version, corr, client = ?header.client_id, "request");

    macro_rules! body {
        () => {
            match decode_request_body(&mut frame, key, version) {
                Ok(r) => r,
                Err(e) => return Step::Close(format!("{key:?} v{version}: {e}")),
            }
        };
    }
    let v = version;
    match key {
        ApiKey::ApiVersions => respond(key, v, corr, &api_versions::handle(body!(), v)),
        ApiKey::Metadata => respond(key, v, corr, &metadata::handle(cx, body!(), v)),
        ApiKey::CreateTopics if cx.node.cluster().is_some() => {
            let body: CreateTopicsRequest = body!();
            cluster::forward(cx, PeerRequest::CreateTopics(body), Request { key, version, corr }, client_id)
        }
        ApiKey::DeleteTopics if cx.node.cluster().is_some() => {
            let body = admin::delete_topics_v6(body!(), v);
            cluster::forward(cx, PeerRequest::DeleteTopics(body), Request { key, version, corr }, client_id)
        }
        ApiKey::ElectLeaders if cx.node.cluster().is_some() => {
            cluster::forward(cx, PeerRequest::ElectLeaders(body!()), Request { key, version, corr }, client_id)
        }
        ApiKey::ElectLeaders => respond(key, v, corr, &cluster::elect_leaders_single(cx, body!())),
        ApiKey::CreateTopics => respond(key, v, corr, &admin::create_topics(cx, body!(), v)),
        ApiKey::DeleteTopics => respond(key, v, corr, &admin::delete_topics(cx, body!(), v)),
        ApiKey::DescribeConfigs => respond(key, v, corr, &admin::describe_configs(cx, body!(), v)),
        ApiKey::Produce => produce::handle(cx, body!(), Request { key, version, corr }),
        ApiKey::Fetch => {
            let body: FetchRequest = body!();
            if cluster::is_metadata_fetch(&body) {
                cluster::forward(cx, PeerRequest::Fetch(body), Request { key, version, corr }, client_id)
            } else {
                fetch::handle(cx, body, Request { key, version, corr })
            }
        }
        ApiKey::Vote => cluster::forward(cx, PeerRequest::Vote(body!()), Request { key, version, corr }, client_id),
        ApiKey::BeginQuorumEpoch => {
            cluster::forward(cx, PeerRequest::BeginQuorumEpoch(body!()), Request { key, version, corr }, client_id)
        }
        ApiKey::EndQuorumEpoch => {
            cluster::forward(cx, PeerRequest::EndQuorumEpoch(body!()), Request { key, version, corr }, client_id)
        }
        ApiKey::FetchSnapshot => {
            cluster::forward(cx, PeerRequest::FetchSnapshot(body!()), Request { key, version, corr }, client_id)
        }
        ApiKey::DescribeQuorum => {
            cluster::forward(cx, PeerRequest::DescribeQuorum(body!()), Request { key, version, corr }, client_id)
        }
        ApiKey::BrokerRegistration => {
            cluster::forward(cx, PeerRequest::BrokerRegistration(body!()), Request { key, version, corr }, client_id)
        }
        ApiKey::BrokerHeartbeat => {
            cluster::forward(cx, PeerRequest::BrokerHeartbeat(body!()), Request { key, version, corr }, client_id)
        }
        ApiKey::UnregisterBroker => {
            cluster::forward(cx, PeerRequest::UnregisterBroker(body!()), Request { key, version, corr }, client_id)
        }
        ApiKey::AllocateProducerIds => {
            cluster::forward(cx, PeerRequest::AllocateProducerIds(body!()), Request { key, version, corr }, client_id)
        }
        ApiKey::AlterPartition => {
            cluster::forward(cx, PeerRequest::AlterPartition(body!()), Request { key, version, corr }, client_id)
        }
        ApiKey::ListOffsets => respond(key, v, corr, &list_offsets::handle(cx, body!(), v)),
        ApiKey::OffsetForLeaderEpoch => respond(key, v, corr, &offset_for_leader_epoch::handle(cx, body!())),
        ApiKey::FindCoordinator => respond(key, v, corr, &group::find_coordinator(cx, body!(), v)),
        ApiKey::JoinGroup => group::join_group(cx, body!(), Request { key, version, corr }, client_id),
        ApiKey::SyncGroup => group::sync_group(cx, body!(), Request { key, version, corr }),
        ApiKey::Heartbeat => respond(key, v, corr, &group::heartbeat(cx, body!(), v)),
        ApiKey::LeaveGroup => respond(key, v, corr, &group::leave_group(cx, body!(), v)),
        ApiKey::OffsetCommit => group::offset_commit(cx, body!(), Request { key, version, corr }),
        ApiKey::OffsetFetch => respond(key, v, corr, &group::offset_fetch(cx, body!(), v)),
        ApiKey::ListGroups => respond(key, v, corr, &group::list_groups(cx, body!(), v)),
        ApiKey::DescribeGroups => respond(key, v, corr, &group::describe_groups(cx, body!(), v)),
        ApiKey::DeleteGroups => group::delete_groups(cx, body!(), Request { key, version, corr }),
        ApiKey::OffsetDelete => group::offset_delete(cx, body!(), Request { key, version, corr }),
        ApiKey::ConsumerGroupHeartbeat => {
            let client_id = header.client_id.as_deref().unwrap_or("").to_string();
            group::consumer_group_heartbeat(cx, body!(), Request { key, version, corr }, &client_id)
        }
        ApiKey::ConsumerGroupDescribe => respond(key, v, corr, &group::consumer_group_describe(cx, body!(), v)),
        ApiKey::InitProducerId if cx.node.cluster().is_some() => {
            coordinator::init_producer_id_cluster(cx, body!(), Request { key, version, corr })
        }
        ApiKey::InitProducerId => respond(key, v, corr, &coordinator::init_producer_id(cx, body!(), v)),
        // Every API in the version table has a handler; `broker_versions` sends each.
        other => panic!("{other:?} is in the version table but has no handler"),
    }
}

/// Who asked: enough to encode the answer to a parked request later.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    pub key: ApiKey,
    pub version: i16,
    pub corr: i32,
}

impl Request {
    pub fn respond<T: Encodable>(&self, body: &T) -> Step {
        respond(self.key, self.version, self.corr, body)
    }
}

fn respond<T: Encodable>(key: ApiKey, version: i16, corr: i32, body: &T) -> Step {
    match encode_response(key, version, corr, body) {
        Ok(frame) => Step::Reply(frame),
        // Our own response failed to encode: a bug, but one client's bug
        // report should not take the broker down.
        Err(e) => {
            tracing::error!(api = ?key, version, error = %e, "cannot encode response");
            Step::Close(format!("cannot encode {key:?} v{version} response: {e}"))
        }
    }
}

pub(super) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub(super) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}
