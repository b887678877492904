//! Fetch: read from each requested partition up to the high watermark,
//! within the partition and response byte limits, long-polling up to
//! `max_wait_ms` until `min_bytes` are available. A waiting fetch holds only
//! its own connection; appends and flushes wake it.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use crate::server::partition::{check_leader_epoch, Partition};
use crate::server::Broker;

const READ_COMMITTED: i8 = 1;

pub async fn handle(b: &Broker, req: FetchRequest, _version: i16) -> FetchResponse {
    let deadline = b.env.elapsed() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let stopping = b.stopping();
    tokio::pin!(stopping);
    loop {
        // Register for wake-ups before reading so an append between the read
        // and the wait is not missed.
        let notified = b.hw_advanced.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (resp, bytes, failed) = read_once(b, &req);
        b.env.pay_disk_latency().await;
        let now = b.env.elapsed();
        if bytes >= min_bytes || failed || now >= deadline {
            return resp;
        }
        tokio::select! {
            biased;
            _ = &mut stopping => return resp,
            _ = &mut notified => {}
            _ = b.env.sleep(deadline - now) => {}
        }
    }
}

/// One pass over the requested partitions: the response, the record bytes it
/// carries, and whether any partition failed (which ends the long poll).
fn read_once(b: &Broker, req: &FetchRequest) -> (FetchResponse, usize, bool) {
    let mut resp = FetchResponse::default();
    let mut total = 0usize;
    let mut failed = false;
    let response_max = req.max_bytes.max(0) as usize;
    for ft in &req.topics {
        let topic = b.topics.get(&ft.topic);
        let mut tr = FetchableTopicResponse::default();
        tr.topic = ft.topic.clone();
        tr.topic_id = ft.topic_id;
        for fp in &ft.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = fp.partition;
            pd.high_watermark = -1;
            pd.aborted_transactions = (req.isolation_level == READ_COMMITTED).then(Vec::new);
            let limit = (fp.partition_max_bytes.max(0) as usize).min(response_max.saturating_sub(total));
            let result = match topic.as_ref().and_then(|t| t.partition(fp.partition)) {
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(p) => check_leader_epoch(p, fp.current_leader_epoch)
                    .and_then(|()| read_partition(p, fp.fetch_offset, limit, total == 0, &mut pd)),
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
    (resp, total, failed)
}

/// Read one partition into `pd`'s offsets, returning its records. Only the
/// first partition with data may exceed `limit` (by one batch, as Kafka
/// allows so that a consumer can always make progress).
fn read_partition(
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
    let read = p.read(offset, limit).map_err(|e| e.code())?;
    if read.records.len() > limit && !may_exceed {
        return Ok(Bytes::new());
    }
    Ok(read.records)
}
