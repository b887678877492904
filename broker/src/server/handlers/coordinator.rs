//! InitProducerId: idempotent producers get their ids here. Transactions are
//! not built yet, and requests for them get an error clients report clearly
//! instead of a closed connection they would retry forever.
//! (FindCoordinator lives with the consumer groups, in [`super::group`].)

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};

use crate::server::node::Cx;

const NO_TRANSACTIONS: &str = "transactions are not supported by this broker yet";

/// Give an idempotent producer a fresh id with epoch 0.
///
/// A request naming a transactional id is refused with INVALID_REQUEST:
/// transactions are not built, and Kafka clients treat that code as fatal
/// with a clear message, instead of retrying as they would a coordinator
/// error. (An authorization error would mislead; UNSUPPORTED_VERSION would
/// blame the protocol version, which is fine.)
///
/// A request carrying an existing producer id and epoch (KIP-360: the
/// producer bumps its epoch after an unknown or out-of-order sequence) gets
/// a brand-new id, as Kafka answers non-transactional producers: the new id
/// has no history in any partition, so its sequences start afresh, and the
/// old id is never handed out again.
pub fn init_producer_id(cx: &mut Cx, req: InitProducerIdRequest, _version: i16) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = (-1).into();
    resp.producer_epoch = -1;
    if let Some(txn) = req.transactional_id.as_ref().filter(|t| !t.0.is_empty()) {
        tracing::info!(transactional_id = %txn.0, "InitProducerId refused: {NO_TRANSACTIONS}");
        resp.error_code = ResponseError::InvalidRequest.code();
        return resp;
    }
    // Kafka checks that a producer id and epoch come together or not at all.
    if (req.producer_id.0 < 0) != (req.producer_epoch < 0) {
        tracing::info!(
            producer_id = req.producer_id.0,
            epoch = req.producer_epoch,
            "InitProducerId refused: producer id and epoch must both be set or both be -1"
        );
        resp.error_code = ResponseError::InvalidRequest.code();
        return resp;
    }
    let allocated = cx.node.producer_ids.allocate(cx.disk).and_then(|id| match cx.node.cluster() {
        Some(_) => crate::server::producer_ids::cluster_wide(cx.node.config.node_id, id),
        None => Ok(id),
    });
    match allocated {
        Ok(id) => {
            tracing::debug!(producer_id = id, previous = req.producer_id.0, "producer id allocated");
            resp.producer_id = id.into();
            resp.producer_epoch = 0;
        }
        Err(e) => {
            // Retriable: clients try InitProducerId again, perhaps once the disk recovers.
            tracing::error!(error = %e, "cannot reserve producer ids");
            resp.error_code = ResponseError::CoordinatorNotAvailable.code();
        }
    }
    resp
}
