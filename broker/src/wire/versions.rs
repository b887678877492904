//! The API version table: which Kafka APIs this broker serves and at which
//! versions. The ranges follow a Kafka 3.x broker (with the pre-3.0 versions
//! Kafka 4.0 dropped left out), capped where a later version would need a
//! feature not built yet (Fetch by topic id from v13, ListOffsets max-timestamp
//! from v7). ElectLeaders starts at v1, the first with an election type
//! (Kafka 4.0 dropped v0).
//!
//! The inner-cluster APIs (the quorum's Vote, BeginQuorumEpoch,
//! EndQuorumEpoch, DescribeQuorum and FetchSnapshot; the controller's
//! BrokerRegistration, BrokerHeartbeat, UnregisterBroker, AllocateProducerIds
//! and AlterPartition, the last from v2, the first that names topics by id)
//! are served over
//! the same listener, at every version `kafka-protocol` speaks: the quorum
//! core and the controller build their responses without the endpoint and
//! node lists the later versions add, so each version encodes. The quorum's
//! own Fetch rides the ordinary Fetch API at v12, the first version with
//! `last_fetched_epoch` and the diverging-epoch and snapshot answers, and the
//! last one that names topics (the quorum core fills both `replica_id` and
//! `replica_state`; below v15 the former carries the fetching replica).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::VersionRange;

/// (api, min advertised, max advertised), sorted by API key.
pub const ADVERTISED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ElectLeaders, 1, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::Vote, 0, 2),
    (ApiKey::BeginQuorumEpoch, 0, 1),
    (ApiKey::EndQuorumEpoch, 0, 1),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::AlterPartition, 2, 3),
    (ApiKey::FetchSnapshot, 0, 1),
    (ApiKey::BrokerRegistration, 0, 4),
    (ApiKey::BrokerHeartbeat, 0, 1),
    (ApiKey::UnregisterBroker, 0, 0),
    (ApiKey::AllocateProducerIds, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// The APIs only other nodes of the cluster send (plus DescribeQuorum, which
/// tools send too).
pub const CLUSTER_APIS: &[ApiKey] = &[
    ApiKey::Vote,
    ApiKey::BeginQuorumEpoch,
    ApiKey::EndQuorumEpoch,
    ApiKey::DescribeQuorum,
    ApiKey::FetchSnapshot,
    ApiKey::BrokerRegistration,
    ApiKey::BrokerHeartbeat,
    ApiKey::UnregisterBroker,
    ApiKey::AlterPartition,
    ApiKey::AllocateProducerIds,
];

/// Produce v0–v2 are advertised but refused, exactly as Kafka 4.0 does
/// (KAFKA-18659): librdkafka only enables compression when the broker's
/// Produce range starts at 0, and clients always pick the highest common
/// version, so no real client sends them.
const PRODUCE_MIN_ACCEPTED: i16 = 3;

/// The range a client is told about, if the API is served at all.
pub fn advertised_versions(key: ApiKey) -> Option<VersionRange> {
    ADVERTISED.iter().find(|(k, _, _)| *k == key).map(|&(_, min, max)| VersionRange { min, max })
}

/// The range this broker actually decodes and answers.
pub fn accepted_versions(key: ApiKey) -> Option<VersionRange> {
    let mut range = advertised_versions(key)?;
    if key == ApiKey::Produce {
        range.min = PRODUCE_MIN_ACCEPTED;
    }
    Some(range)
}

/// The `api_keys` of an ApiVersions response, with `error_code` and nothing else set.
pub fn advertised_api_versions(error_code: i16) -> ApiVersionsResponse {
    let mut resp = ApiVersionsResponse::default();
    resp.error_code = error_code;
    resp.api_keys = ADVERTISED
        .iter()
        .map(|&(k, min, max)| ApiVersion::default().with_api_key(k as i16).with_min_version(min).with_max_version(max))
        .collect();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_version_is_one_kafka_protocol_can_decode() {
        for &(key, _, _) in ADVERTISED {
            let accepted = accepted_versions(key).unwrap();
            let codec = key.valid_versions();
            assert!(!accepted.is_empty(), "{key:?}");
            assert!(accepted.min >= codec.min && accepted.max <= codec.max, "{key:?}: {accepted} outside {codec}");
        }
    }

    #[test]
    fn cluster_apis_are_served() {
        for &key in CLUSTER_APIS {
            assert!(accepted_versions(key).is_some(), "{key:?}");
        }
    }

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(ADVERTISED.windows(2).all(|w| (w[0].0 as i16) < (w[1].0 as i16)));
    }

    #[test]
    fn produce_is_advertised_from_zero_but_accepted_from_three() {
        assert_eq!(advertised_versions(ApiKey::Produce).unwrap().min, 0);
        assert_eq!(accepted_versions(ApiKey::Produce).unwrap().min, 3);
        assert!(advertised_versions(ApiKey::SaslHandshake).is_none());
    }
}
