//! Request dispatch: check the API and version, decode the header and body,
//! run the API's handler, encode the response. One submodule per Kafka API.

mod admin;
mod api_versions;
mod coordinator;
mod fetch;
mod list_offsets;
mod metadata;
mod produce;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::Broker;
use crate::wire::{accepted_versions, decode_body, decode_request_header, encode_response, RequestPrefix};

/// What the connection does after a request.
pub(crate) enum Reply {
    /// Send this frame (length prefix included).
    Frame(Bytes),
    /// Send nothing (acks=0 produce).
    Nothing,
    /// Close the connection, logging why.
    Close(String),
}

/// Handle one request frame (length prefix removed).
pub(crate) async fn handle(broker: &Broker, mut frame: Bytes) -> Reply {
    let prefix = match RequestPrefix::parse(&frame) {
        Ok(p) => p,
        Err(e) => return Reply::Close(e.to_string()),
    };
    let key = match prefix.known_api_key() {
        Ok(k) => k,
        Err(e) => return Reply::Close(e.to_string()),
    };
    let version = prefix.api_version;
    let Some(accepted) = accepted_versions(key) else {
        return Reply::Close(format!("{key:?} is not served by this broker (it is not in our ApiVersions)"));
    };
    if version < accepted.min || version > accepted.max {
        if key == ApiKey::ApiVersions {
            // Clients probe with their newest ApiVersions; Kafka answers in v0,
            // which every client can parse, with the versions it does support.
            let body = api_versions::unsupported();
            return respond(key, 0, prefix.correlation_id, &body);
        }
        return Reply::Close(format!("{key:?} v{version} is not supported (accepted: {accepted})"));
    }
    let header = match decode_request_header(&mut frame, key, version) {
        Ok(h) => h,
        Err(e) => return Reply::Close(format!("{key:?} v{version}: {e}")),
    };
    let corr = header.correlation_id;
    tracing::trace!(api = ?key, version, corr, client = ?header.client_id, "request");

    macro_rules! body {
        () => {
            match decode_body(&mut frame, version) {
                Ok(r) => r,
                Err(e) => return Reply::Close(format!("{key:?} v{version}: {e}")),
            }
        };
    }
    let (b, v) = (broker, version);
    match key {
        ApiKey::ApiVersions => respond(key, v, corr, &api_versions::handle(b, body!(), v)),
        ApiKey::Metadata => respond(key, v, corr, &metadata::handle(b, body!(), v).await),
        ApiKey::CreateTopics => respond(key, v, corr, &admin::create_topics(b, body!(), v).await),
        ApiKey::DeleteTopics => respond(key, v, corr, &admin::delete_topics(b, body!(), v).await),
        ApiKey::DescribeConfigs => respond(key, v, corr, &admin::describe_configs(b, body!(), v)),
        ApiKey::Produce => match produce::handle(b, body!(), v).await {
            produce::Outcome::Respond(resp) => respond(key, v, corr, &resp),
            produce::Outcome::Silent => Reply::Nothing,
            produce::Outcome::Close(why) => Reply::Close(why),
        },
        ApiKey::Fetch => respond(key, v, corr, &fetch::handle(b, body!(), v).await),
        ApiKey::ListOffsets => respond(key, v, corr, &list_offsets::handle(b, body!(), v).await),
        ApiKey::FindCoordinator => respond(key, v, corr, &coordinator::find_coordinator(b, body!(), v)),
        ApiKey::InitProducerId => respond(key, v, corr, &coordinator::init_producer_id(b, body!(), v).await),
        other => {
            debug_assert!(false, "{other:?} is in the version table but has no handler");
            Reply::Close(format!("{other:?} has no handler"))
        }
    }
}

fn respond<T: Encodable>(key: ApiKey, version: i16, corr: i32, body: &T) -> Reply {
    match encode_response(key, version, corr, body) {
        Ok(frame) => Reply::Frame(frame),
        // Our own response failed to encode: a bug, but one client's bug
        // report should not take the broker down.
        Err(e) => {
            tracing::error!(api = ?key, version, error = %e, "cannot encode response");
            Reply::Close(format!("cannot encode {key:?} v{version} response: {e}"))
        }
    }
}

pub(super) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub(super) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}
