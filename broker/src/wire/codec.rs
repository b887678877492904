//! Request and response encoding and decoding, all through `kafka-protocol`.
//! Both directions are here so the broker, the client library and raw-protocol
//! tests share one implementation of the header rules.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Why a request or response could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes is too short for a request header")]
    ShortHeader(usize),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("cannot decode {what}: {source}")]
    Decode { what: &'static str, source: anyhow::Error },
    #[error("cannot encode {what}: {source}")]
    Encode { what: &'static str, source: anyhow::Error },
    #[error("{0} trailing bytes after the message body")]
    TrailingBytes(usize),
}

/// The fields every request header version starts with, read without
/// trusting the rest of the frame: enough to answer or reject a request whose
/// API or version we cannot decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl RequestPrefix {
    pub fn parse(frame: &[u8]) -> Result<RequestPrefix, WireError> {
        if frame.len() < 8 {
            return Err(WireError::ShortHeader(frame.len()));
        }
        Ok(RequestPrefix {
            api_key: i16::from_be_bytes([frame[0], frame[1]]),
            api_version: i16::from_be_bytes([frame[2], frame[3]]),
            correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
        })
    }

    pub fn known_api_key(&self) -> Result<ApiKey, WireError> {
        ApiKey::try_from(self.api_key).map_err(|_| WireError::UnknownApiKey(self.api_key))
    }
}

/// Decode a request body. Bytes left after it are tolerated and logged at
/// debug, as Kafka does: some clients pad requests (librdkafka 2.16 adds 3
/// bytes to an all-topics Metadata v11). A body that is short is an error.
pub fn decode_request_body<T: Decodable>(buf: &mut Bytes, key: ApiKey, version: i16) -> Result<T, WireError> {
    let body =
        T::decode(buf, version).map_err(|source| WireError::Decode { what: std::any::type_name::<T>(), source })?;
    if !buf.is_empty() {
        tracing::debug!(api = ?key, version, trailing = buf.len(), "ignoring bytes after the request body");
    }
    Ok(body)
}

/// Decode the request header at the front of `frame`, leaving the body.
pub fn decode_request_header(frame: &mut Bytes, key: ApiKey, version: i16) -> Result<RequestHeader, WireError> {
    let header_version = key.request_header_version(version);
    RequestHeader::decode(frame, header_version).map_err(|source| WireError::Decode { what: "request header", source })
}

/// Decode a whole message body strictly: bytes left over mean the peer and we
/// disagree about the schema. The client and tests use this for responses;
/// the broker is lenient with requests ([`decode_request_body`]).
pub fn decode_body<T: Decodable>(buf: &mut Bytes, version: i16) -> Result<T, WireError> {
    let body =
        T::decode(buf, version).map_err(|source| WireError::Decode { what: std::any::type_name::<T>(), source })?;
    if !buf.is_empty() {
        return Err(WireError::TrailingBytes(buf.len()));
    }
    Ok(body)
}

/// Encode a response frame, length prefix included.
pub fn encode_response<T: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, WireError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    encode_frame(|buf| {
        header.encode(buf, key.response_header_version(version))?;
        body.encode(buf, version)
    })
    .map_err(|source| WireError::Encode { what: std::any::type_name::<T>(), source })
}

/// Encode a request frame, length prefix included. The API key and version
/// come from `header`.
pub fn encode_request<T: Encodable>(header: &RequestHeader, body: &T) -> Result<Bytes, WireError> {
    let key = ApiKey::try_from(header.request_api_key).map_err(|_| WireError::UnknownApiKey(header.request_api_key))?;
    let version = header.request_api_version;
    encode_frame(|buf| {
        header.encode(buf, key.request_header_version(version))?;
        body.encode(buf, version)
    })
    .map_err(|source| WireError::Encode { what: std::any::type_name::<T>(), source })
}

/// Decode a response frame payload (length prefix already removed).
pub fn decode_response<T: Decodable>(
    mut frame: Bytes,
    key: ApiKey,
    version: i16,
) -> Result<(ResponseHeader, T), WireError> {
    let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))
        .map_err(|source| WireError::Decode { what: "response header", source })?;
    let body = decode_body(&mut frame, version)?;
    Ok((header, body))
}

fn encode_frame(f: impl FnOnce(&mut BytesMut) -> anyhow::Result<()>) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    f(&mut buf)?;
    let len = i32::try_from(buf.len() - 4)
        .map_err(|_| anyhow::anyhow!("message of {} bytes is too large to frame", buf.len()))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn header(key: ApiKey, version: i16) -> RequestHeader {
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .with_client_id(Some(StrBytes::from_static_str("t")))
    }

    #[test]
    fn request_round_trips_through_prefix_header_and_body() {
        for version in 0..=4 {
            let frame = encode_request(&header(ApiKey::ApiVersions, version), &ApiVersionsRequest::default()).unwrap();
            let mut payload = frame.slice(4..);
            let prefix = RequestPrefix::parse(&payload).unwrap();
            assert_eq!((prefix.api_key, prefix.api_version, prefix.correlation_id), (18, version, 42));
            let h = decode_request_header(&mut payload, prefix.known_api_key().unwrap(), version).unwrap();
            assert_eq!(h.client_id.as_deref(), Some("t"));
            let _: ApiVersionsRequest = decode_body(&mut payload, version).unwrap();
        }
    }

    #[test]
    fn response_round_trips() {
        let body = crate::wire::advertised_api_versions(0);
        let frame = encode_response(ApiKey::ApiVersions, 3, 7, &body).unwrap();
        let (h, back): (_, ApiVersionsResponse) = decode_response(frame.slice(4..), ApiKey::ApiVersions, 3).unwrap();
        assert_eq!(h.correlation_id, 7);
        assert_eq!(back.api_keys, body.api_keys);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(RequestPrefix::parse(&[0, 3, 0]), Err(WireError::ShortHeader(3))));
        assert!(matches!(
            RequestPrefix::parse(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 0]).unwrap().known_api_key(),
            Err(WireError::UnknownApiKey(_))
        ));
        let mut junk = Bytes::from_static(&[0, 3, 0, 9, 0, 0, 0, 1, 0xff]);
        assert!(decode_request_header(&mut junk, ApiKey::Metadata, 9).is_err());
        let mut junk = Bytes::from_static(&[0xff, 0xff, 0xff]);
        assert!(decode_body::<MetadataRequest>(&mut junk, 9).is_err());
        let mut extra = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 1, 0]);
        assert!(matches!(decode_body::<MetadataRequest>(&mut extra, 1), Err(WireError::TrailingBytes(2))));
    }
}
