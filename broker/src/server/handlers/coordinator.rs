//! FindCoordinator and InitProducerId: consumer groups, idempotence and
//! transactions are not built yet. Both get an error clients report clearly
//! instead of a closed connection they would retry forever.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    FindCoordinatorRequest, FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse,
};

use super::str_bytes;
use crate::server::Broker;

const NOT_BUILT: &str = "consumer groups and transactions are not supported by this broker yet";

pub fn find_coordinator(_broker: &Broker, req: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    tracing::info!("FindCoordinator refused: {NOT_BUILT}");
    let err = ResponseError::CoordinatorNotAvailable.code();
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let mut c = Coordinator::default();
                c.key = key;
                c.node_id = (-1).into();
                c.host = str_bytes("");
                c.port = -1;
                c.error_code = err;
                c.error_message = Some(str_bytes(NOT_BUILT));
                c
            })
            .collect();
    } else {
        resp.error_code = err;
        resp.error_message = Some(str_bytes(NOT_BUILT));
        resp.node_id = (-1).into();
        resp.host = str_bytes("");
        resp.port = -1;
    }
    resp
}

/// A non-retriable error: Kafka clients fail the producer with a message
/// pointing at an incompatible broker, rather than retrying forever.
pub fn init_producer_id(_broker: &Broker, _req: InitProducerIdRequest, _version: i16) -> InitProducerIdResponse {
    tracing::info!("InitProducerId refused: idempotent and transactional producers are not supported yet");
    let mut resp = InitProducerIdResponse::default();
    resp.error_code = ResponseError::InvalidRequest.code();
    resp.producer_id = (-1).into();
    resp.producer_epoch = -1;
    resp
}
