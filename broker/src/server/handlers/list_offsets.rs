//! ListOffsets: the log start (-2), the high watermark (-1), or the first
//! offset at or after a timestamp.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::server::node::Cx;
use crate::server::partition::check_leader_epoch;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub fn handle(cx: &mut Cx, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for t in req.topics {
        let topic = cx.node.topics.get(&t.name);
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for lp in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = lp.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            pr.leader_epoch = -1;
            let result = match topic.as_ref().and_then(|t| t.partition(lp.partition_index)) {
                None => Err(cx.not_hosted(&t.name)),
                Some(p) => check_leader_epoch(p, lp.current_leader_epoch).and_then(|()| {
                    // The field exists from v4 on; setting it for older
                    // versions makes the response unencodable.
                    if version >= 4 {
                        pr.leader_epoch = p.leader_epoch();
                    }
                    match lp.timestamp {
                        EARLIEST => p.offsets().map(|o| (o.log_start_offset, -1)).map_err(|e| e.code()),
                        LATEST if cx.node.config.bugs.stale_end_offsets => p
                            .stale_high_watermark(
                                cx.clock.elapsed,
                                std::time::Duration::from_millis(crate::config::STALE_END_OFFSETS_MS),
                            )
                            .map(|hw| (hw, -1))
                            .map_err(|e| e.code()),
                        LATEST => p
                            .high_watermark_settled()
                            .and_then(|()| p.offsets().map(|o| (o.high_watermark, -1)).map_err(|e| e.code())),
                        ts if ts >= 0 => p
                            .offset_for_timestamp(cx.disk, ts)
                            .map(|found| found.unwrap_or((-1, -1)))
                            .map_err(|e| e.code()),
                        _ => Err(ResponseError::InvalidRequest),
                    }
                }),
            };
            match result {
                Ok((offset, ts)) => {
                    pr.offset = offset;
                    pr.timestamp = ts;
                }
                Err(code) => pr.error_code = code.code(),
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
