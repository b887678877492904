//! InitProducerId: idempotent producers get their ids here. Transactions are
//! not built yet, and requests for them get an error clients report clearly
//! instead of a closed connection they would retry forever.
//! (FindCoordinator lives with the consumer groups, in [`super::group`].)

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{AllocateProducerIdsRequest, BrokerId, InitProducerIdRequest, InitProducerIdResponse};

use super::Request;
use crate::cluster::peers::{PeerRequest, PeerResponse};
use crate::server::node::{Cx, Step};

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
    let resp = match check(&req) {
        Ok(()) => refused(0),
        Err(refusal) => return refusal,
    };
    let allocated = cx.node.producer_ids.allocate(cx.disk);
    granted(resp, allocated, req.producer_id.0)
}

/// In a cluster (KIP-730): an id from the block the active controller gave
/// this broker; when the block is used up, the request waits for
/// AllocateProducerIds to bring the next one. Every id of a block was
/// reserved by a committed `ProducerIds` record, so no two brokers, nor one
/// broker across restarts, hand out the same id. If the controller cannot
/// be reached the answer is COORDINATOR_LOAD_IN_PROGRESS, as Kafka's while
/// its block is being fetched; clients retry it.
pub(crate) fn init_producer_id_cluster(cx: &mut Cx, req: InitProducerIdRequest, request: Request) -> Step {
    if let Err(refusal) = check(&req) {
        return request.respond(&refusal);
    }
    let previous = req.producer_id.0;
    let blocks = cx.node.producer_ids.controller_blocks();
    if let Some(id) = blocks.take() {
        return request.respond(&granted(refused(0), Ok(id), previous));
    }
    let link = cx.node.cluster().expect("called in cluster mode");
    let node_id = cx.node.config.node_id;
    // The registration the controller knows this broker by; until one is
    // committed there is no epoch to ask with.
    let Some(broker_epoch) = link.image().broker(node_id).map(|b| b.epoch) else {
        return request.respond(&refused(ResponseError::CoordinatorLoadInProgress.code()));
    };
    let ask = AllocateProducerIdsRequest::default().with_broker_id(BrokerId(node_id)).with_broker_epoch(broker_epoch);
    let answer = link.call(PeerRequest::AllocateProducerIds(ask), false);
    Step::Await(Box::pin(async move {
        let resp = match answer.await {
            Some(PeerResponse::AllocateProducerIds(r)) if r.error_code == 0 => {
                match blocks.install_and_take(r.producer_id_start.0, r.producer_id_len) {
                    Some(id) => granted(refused(0), Ok(id), previous),
                    None => {
                        tracing::error!(?r, "the controller gave an empty producer id block");
                        refused(ResponseError::CoordinatorLoadInProgress.code())
                    }
                }
            }
            other => {
                tracing::debug!(answer = ?other, "no producer id block from the controller; the client retries");
                refused(ResponseError::CoordinatorLoadInProgress.code())
            }
        };
        request.respond(&resp)
    }))
}

/// An answer with no producer id and `error_code`.
fn refused(error_code: i16) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = (-1).into();
    resp.producer_epoch = -1;
    resp.error_code = error_code;
    resp
}

/// What Kafka refuses before allocating anything.
fn check(req: &InitProducerIdRequest) -> Result<(), InitProducerIdResponse> {
    let mut resp = refused(0);
    if let Some(txn) = req.transactional_id.as_ref().filter(|t| !t.0.is_empty()) {
        tracing::info!(transactional_id = %txn.0, "InitProducerId refused: {NO_TRANSACTIONS}");
        resp.error_code = ResponseError::InvalidRequest.code();
        return Err(resp);
    }
    // Kafka checks that a producer id and epoch come together or not at all.
    if (req.producer_id.0 < 0) != (req.producer_epoch < 0) {
        tracing::info!(
            producer_id = req.producer_id.0,
            epoch = req.producer_epoch,
            "InitProducerId refused: producer id and epoch must both be set or both be -1"
        );
        resp.error_code = ResponseError::InvalidRequest.code();
        return Err(resp);
    }
    Ok(())
}

/// `resp` carrying the id allocated, or the retriable error for a failed reservation.
fn granted(mut resp: InitProducerIdResponse, allocated: std::io::Result<i64>, previous: i64) -> InitProducerIdResponse {
    match allocated {
        Ok(id) => {
            tracing::debug!(producer_id = id, previous, "producer id allocated");
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
