//! ApiVersions: the first request every client sends, answered from the
//! version table in [`crate::wire`].

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use crate::wire::advertised_api_versions;

pub fn handle(_req: ApiVersionsRequest, _version: i16) -> ApiVersionsResponse {
    advertised_api_versions(0)
}

/// The v0 answer to an ApiVersions version we do not speak.
pub fn unsupported() -> ApiVersionsResponse {
    advertised_api_versions(ResponseError::UnsupportedVersion.code())
}
