//! Kafka wire format: i32 length-prefixed frames, the API version table this
//! broker advertises, request/response encoding through `kafka-protocol`, and
//! the structural checks a produced record set must pass before storage sees it.

mod codec;
mod frame;
mod records;
mod versions;

pub use codec::{
    decode_body, decode_request_body, decode_request_header, decode_response, encode_request, encode_response,
    RequestPrefix, WireError,
};
pub use frame::{read_frame, write_frame, FrameError, FrameReader, READ_CHUNK};
pub use records::{validate_record_set, InvalidRecords};
pub use versions::{accepted_versions, advertised_api_versions, advertised_versions, ADVERTISED, CLUSTER_APIS};
