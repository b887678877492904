//! OffsetForLeaderEpoch (KIP-101, KIP-320): where a leader epoch ends in the
//! leader's log — the largest epoch at or below the one asked for and its
//! end offset. A consumer asks it after a leader change to learn whether the
//! log it read was truncated under it (an end offset below its position).

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::server::node::Cx;
use crate::server::partition::check_leader_epoch;

pub fn handle(cx: &mut Cx, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in req.topics {
        let topic = cx.node.topics.get(&t.topic);
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        for lp in t.partitions {
            let mut e = EpochEndOffset::default();
            e.partition = lp.partition;
            e.leader_epoch = -1;
            e.end_offset = -1;
            let result = match topic.as_ref().and_then(|t| t.partition(lp.partition)) {
                None => Err(cx.not_hosted(&t.topic)),
                Some(p) => check_leader_epoch(p, lp.current_leader_epoch)
                    .and_then(|()| p.end_offset_for_epoch(lp.leader_epoch).map_err(|e| e.code())),
            };
            match result {
                Ok((epoch, end)) => {
                    e.leader_epoch = epoch;
                    e.end_offset = end;
                }
                Err(code) => e.error_code = code.code(),
            }
            tr.partitions.push(e);
        }
        resp.topics.push(tr);
    }
    resp
}
