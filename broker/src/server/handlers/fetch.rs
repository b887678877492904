//! Fetch: read from each requested partition up to the high watermark,
//! within the partition and response byte limits, long-polling up to
//! `max_wait_ms` until `min_bytes` are available. Responses never exceed the
//! broker's `fetch.max.bytes` (plus one batch, so a consumer always
//! progresses), and a partition named twice in one request gets
//! INVALID_REQUEST instead of being read twice. A waiting fetch is parked
//! on the partitions it reads; the shell wakes it when one of their high
//! watermarks moves, and drops it when its client disconnects.
//!
//! A fetch with a replica id is a follower's (replication): it reads up to
//! the log end instead of the high watermark, may be told its log diverged,
//! and tells the leader how far the follower has come.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use std::sync::Arc;

use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use super::Request;
use crate::server::node::{Cx, Parked, Step, Waiting as Parkable, Wake};
use crate::server::partition::{check_leader_epoch, Partition};

const READ_COMMITTED: i8 = 1;

/// A fetch that found fewer than `min_bytes` and waits for more.
pub(crate) struct Waiting {
    request: Request,
    fetch: FetchRequest,
}

pub(crate) fn handle(cx: &mut Cx, req: FetchRequest, request: Request) -> Step {
    let deadline = cx.clock.elapsed + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    resume(cx, Waiting { request, fetch: req }, deadline)
}

/// Read every requested partition; answer if there is enough, something
/// failed, or the deadline passed, else park until a watched partition's
/// high watermark moves.
pub(crate) fn resume(cx: &mut Cx, w: Waiting, deadline: Duration) -> Step {
    let min_bytes = w.fetch.min_bytes.max(0) as usize;
    let (resp, bytes, failed, watch) = read_once(cx, &w.fetch);
    if bytes >= min_bytes || failed || cx.clock.elapsed >= deadline || watch.is_empty() {
        return w.request.respond(&resp);
    }
    Step::Park(Parked { request: Parkable::Fetch(w), deadline, watch })
}

/// One pass over the requested partitions: the response, the record bytes it
/// carries, and whether any partition failed (which ends the long poll).
#[allow(clippy::type_complexity)]
fn read_once(cx: &mut Cx, req: &FetchRequest) -> (FetchResponse, usize, bool, Vec<(Wake, u64)>) {
    let mut watch = Vec::new();
    let mut resp = FetchResponse::default();
    let mut total = 0usize;
    let mut failed = false;
    // The broker's fetch.max.bytes bounds every response, whatever the client asks.
    let response_max = (req.max_bytes.max(0) as usize).min(cx.node.config.fetch_max_bytes);
    // A partition named twice would be read (and sent) twice: refused.
    let mut seen = std::collections::BTreeSet::new();
    let replica = (req.replica_id.0 >= 0).then_some(req.replica_id.0);
    for ft in &req.topics {
        let topic = cx.node.topics.get(&ft.topic);
        let mut tr = FetchableTopicResponse::default();
        tr.topic = ft.topic.clone();
        tr.topic_id = ft.topic_id;
        for fp in &ft.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = fp.partition;
            pd.high_watermark = -1;
            pd.aborted_transactions = (req.isolation_level == READ_COMMITTED).then(Vec::new);
            let limit = (fp.partition_max_bytes.max(0) as usize).min(response_max.saturating_sub(total));
            let duplicate = !seen.insert((ft.topic.0.as_str(), ft.topic_id, fp.partition));
            let result = match topic.as_ref().and_then(|t| t.partition(fp.partition)) {
                _ if duplicate => Err(ResponseError::InvalidRequest),
                None => Err(cx.not_hosted(&ft.topic)),
                Some(p) => {
                    // Read the version first: a move after this read is then never missed.
                    watch.push(Wake::HighWatermark(p.clone()).seen());
                    check_leader_epoch(p, fp.current_leader_epoch).and_then(|()| match replica {
                        Some(r) => read_for_follower(cx, p, r, fp, limit, &mut pd, &mut failed),
                        None => read_partition(cx, p, fp.fetch_offset, limit, total == 0, &mut pd),
                    })
                }
            };
            match result {
                Ok(records) => {
                    total += records.len();
                    pd.records = Some(records);
                }
                Err(code) => {
                    failed = true;
                    pd.error_code = code.code();
                    pd.records = Some(Bytes::new());
                }
            }
            tr.partitions.push(pd);
        }
        resp.responses.push(tr);
    }
    (resp, total, failed, watch)
}

/// Serve a follower: records up to the log end, the high watermark, or
/// where its log diverged (which ends the long poll, so it truncates at
/// once). Its progress may move the high watermark and the ISR.
fn read_for_follower(
    cx: &mut Cx,
    p: &Arc<Partition>,
    replica: i32,
    fp: &FetchPartition,
    limit: usize,
    pd: &mut PartitionData,
    failed: &mut bool,
) -> Result<Bytes, ResponseError> {
    let mono_ms = cx.clock.elapsed.as_millis() as i64;
    let lag = cx.node.config.replica_lag_time_max_ms as i64;
    let read =
        p.read_for_follower(cx.disk, replica, fp.fetch_offset, fp.last_fetched_epoch, limit.max(1), mono_ms, lag)?;
    pd.high_watermark = read.offsets.high_watermark;
    pd.last_stable_offset = read.offsets.high_watermark;
    pd.log_start_offset = read.offsets.log_start_offset;
    if let Some((epoch, end)) = read.diverging {
        pd.diverging_epoch.epoch = epoch;
        pd.diverging_epoch.end_offset = end;
        *failed = true;
    }
    cx.advanced(p, read.advanced);
    if let (Some(change), Some(link)) = (read.isr_change, cx.node.cluster()) {
        let topic_id = cx.node.topics.get(&p.topic).map(|t| t.id).unwrap_or_default();
        crate::replication::fetcher::ask_isr_change(link, topic_id, p, change);
    }
    Ok(read.records)
}

/// Read one partition into `pd`'s offsets, returning its records. Only the
/// first partition with data may exceed `limit` (by one batch, as Kafka
/// allows so that a consumer can always make progress).
fn read_partition(
    cx: &Cx,
    p: &Partition,
    offset: i64,
    limit: usize,
    may_exceed: bool,
    pd: &mut PartitionData,
) -> Result<Bytes, ResponseError> {
    let o = p.offsets().map_err(|e| e.code())?;
    pd.high_watermark = o.high_watermark;
    pd.last_stable_offset = o.high_watermark;
    pd.log_start_offset = o.log_start_offset;
    if offset < o.log_start_offset || offset > o.log_end_offset {
        return Err(ResponseError::OffsetOutOfRange);
    }
    // Between the high watermark and the log end: nothing visible yet.
    if offset >= o.high_watermark || (limit == 0 && !may_exceed) {
        return Ok(Bytes::new());
    }
    let read = p.read(cx.disk, offset, limit).map_err(|e| e.code())?;
    if read.records.len() > limit && !may_exceed {
        return Ok(Bytes::new());
    }
    Ok(read.records)
}
