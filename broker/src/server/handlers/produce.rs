//! Produce: validate each partition's record batches, append them, and
//! answer as the acks ask.
//!
//! The acks contract: acks=0 is never answered (a failure closes the
//! connection, the only signal such a producer gets); acks=1 is answered
//! once the leader itself acknowledges the batches (fsynced under the strict
//! durability policy, appended under Kafka's); acks=-1 once every appended
//! batch is below its partition's high watermark, that is held by every ISR
//! member, and only with an ISR of at least `min.insync.replicas`
//! (NOT_ENOUGH_REPLICAS before appending, NOT_ENOUGH_REPLICAS_AFTER_APPEND if
//! the ISR shrank below it meanwhile). Partitions still short of it at
//! `timeout_ms` get REQUEST_TIMED_OUT. With one replica acks=1 and acks=-1
//! are the same.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{str_bytes, Request};
use crate::server::node::{Cx, Parked, Step, Waiting as Parkable, Wake};
use crate::server::partition::Partition;
use crate::wire::{validate_record_set, InvalidRecords};

/// A produce request whose appended batches are not all acknowledged yet.
pub(crate) struct Waiting {
    request: Request,
    response: ProduceResponse,
    pending: Vec<Pending>,
}

/// One appended partition waiting for its acknowledgement.
struct Pending {
    partition: Arc<Partition>,
    last_offset: i64,
    /// acks=-1: wait for the high watermark; acks=1: for the leader's own.
    all: bool,
    /// The leader epoch the batches were appended in: once this replica
    /// stops leading it, its high watermark says nothing about them (a new
    /// leader may have put other records at those offsets).
    leader_epoch: i32,
    topic_slot: usize,
    partition_slot: usize,
}

pub(crate) fn handle(cx: &mut Cx, req: ProduceRequest, request: Request) -> Step {
    let acks = req.acks;
    let acks_valid = matches!(acks, 0 | 1 | -1);
    let mut resp = ProduceResponse::default();
    let mut pending = Vec::new();
    let mut first_error: Option<String> = None;
    let topics = &cx.node.topics;
    for (ti, td) in req.topic_data.into_iter().enumerate() {
        let topic = topics.get(&td.name);
        let mut tr = TopicProduceResponse::default();
        tr.name = td.name.clone();
        for (pi, pd) in td.partition_data.into_iter().enumerate() {
            let mut pr = PartitionProduceResponse::default();
            pr.index = pd.index;
            pr.base_offset = -1;
            pr.log_append_time_ms = -1;
            pr.log_start_offset = -1;
            let partition = topic.as_ref().and_then(|t| t.partition(pd.index));
            let result = if !acks_valid {
                Err((ResponseError::InvalidRequiredAcks, format!("acks must be 0, 1 or -1, not {acks}")))
            } else if td.name.0.as_str() == crate::server::group::OFFSETS_TOPIC {
                // The coordinator's records: only it writes them.
                Err((ResponseError::InvalidTopicException, format!("cannot append to internal topic {}", td.name.0)))
            } else if let (Some(p), Some(t)) = (partition, &topic) {
                enough_replicas(p, acks)
                    .and_then(|()| append(cx, p, pd.records.unwrap_or_default(), t.config.decompressed_batch_limit()))
            } else {
                Err((cx.not_hosted(&td.name), "this broker hosts no such topic or partition".to_string()))
            };
            match result {
                Ok((base, last, append_time, log_start)) => {
                    pr.base_offset = base;
                    pr.log_append_time_ms = append_time;
                    pr.log_start_offset = log_start;
                    if acks != 0 && !cx.node.config.bugs.ack_before_durable {
                        let partition = partition.expect("appended to a partition").clone();
                        let all = acks == -1;
                        let leader_epoch = partition.leader_epoch();
                        let (topic_slot, partition_slot) = (ti, pi);
                        pending.push(Pending {
                            partition,
                            last_offset: last,
                            all,
                            leader_epoch,
                            topic_slot,
                            partition_slot,
                        });
                    }
                }
                Err((code, message)) => {
                    tracing::debug!(topic = %td.name.0, partition = pd.index, ?code, %message, "produce refused");
                    first_error.get_or_insert_with(|| format!("{}-{}: {message}", td.name.0, pd.index));
                    pr.error_code = code.code();
                    if request.version >= 8 {
                        pr.error_message = Some(str_bytes(message));
                    }
                }
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    if acks == 0 {
        return match first_error {
            Some(e) => Step::Close(format!("acks=0 produce failed: {e}")),
            None => Step::Silent,
        };
    }
    let deadline = cx.clock.elapsed + Duration::from_millis(req.timeout_ms.max(0) as u64);
    resume(cx, Waiting { request, response: resp, pending }, deadline)
}

/// Answer once every pending partition's high watermark has passed its
/// batches, or at the deadline with REQUEST_TIMED_OUT for those that have not.
pub(crate) fn resume(cx: &mut Cx, mut w: Waiting, deadline: Duration) -> Step {
    let timed_out = cx.clock.elapsed >= deadline;
    let mut watch = Vec::new();
    let mut still = Vec::new();
    for p in w.pending {
        // Read the version first: a move after this read is then never missed.
        let seen = Wake::HighWatermark(p.partition.clone()).seen();
        let outcome = acknowledged(&p).map_err(|e| e.code());
        let pr = &mut w.response.responses[p.topic_slot].partition_responses[p.partition_slot];
        match outcome {
            Ok(true) if p.all && !enough_isr(&p.partition) => {
                pr.error_code = ResponseError::NotEnoughReplicasAfterAppend.code();
                pr.base_offset = -1;
            }
            Ok(true) => {}
            Ok(false) if !timed_out => {
                watch.push(seen);
                still.push(p);
            }
            Ok(false) => {
                tracing::warn!(
                    topic = %p.partition.topic,
                    partition = p.partition.index,
                    last_offset = p.last_offset,
                    "produce timed out waiting for the high watermark"
                );
                pr.error_code = ResponseError::RequestTimedOut.code();
                pr.base_offset = -1;
            }
            Err(code) => {
                pr.error_code = code.code();
                pr.base_offset = -1;
            }
        }
    }
    if still.is_empty() {
        return w.request.respond(&w.response);
    }
    w.pending = still;
    Step::Park(Parked { request: Parkable::Produce(w), deadline, watch })
}

/// Whether `p`'s batches are acknowledged as its acks ask.
fn acknowledged(p: &Pending) -> Result<bool, crate::server::partition::PartitionError> {
    let part = &p.partition;
    if part.role() != crate::server::partition::Role::Leader || part.leader_epoch() != p.leader_epoch {
        return Err(crate::server::partition::PartitionError::NotLeader);
    }
    if p.all && !part.bug_ack_before_isr() {
        Ok(part.offsets()?.high_watermark > p.last_offset)
    } else {
        Ok(part.own_ack_offset()? > p.last_offset)
    }
}

/// Whether the ISR is at least `min.insync.replicas`.
fn enough_isr(p: &Partition) -> bool {
    p.insync().is_ok_and(|(isr, min)| isr >= min)
}

/// acks=-1 refuses to append while the ISR is below `min.insync.replicas`.
fn enough_replicas(p: &Partition, acks: i16) -> Result<(), (ResponseError, String)> {
    if acks != -1 {
        return Ok(());
    }
    let (isr, min) = p.insync().map_err(|e| (e.code(), e.to_string()))?;
    if isr < min {
        return Err((
            ResponseError::NotEnoughReplicas,
            format!("the ISR has {isr} replicas, fewer than min.insync.replicas {min}"),
        ));
    }
    Ok(())
}

/// Validate and append one partition's record set. Returns (base offset,
/// last offset, log append time, log start offset).
fn append(
    cx: &mut Cx,
    p: &Arc<Partition>,
    records: bytes::Bytes,
    max_decompressed_bytes: usize,
) -> Result<(i64, i64, i64, i64), (ResponseError, String)> {
    let batches = match validate_record_set(records, max_decompressed_bytes) {
        Ok(batches) => batches,
        Err(InvalidRecords::Corrupt(why)) => {
            tracing::warn!(topic = %p.topic, partition = p.index, %why, "corrupt record batch refused");
            return Err((ResponseError::CorruptMessage, why));
        }
        Err(InvalidRecords::TooLarge(why)) => {
            tracing::warn!(topic = %p.topic, partition = p.index, %why, "record batch decompressing too large refused");
            return Err((ResponseError::MessageTooLarge, why));
        }
    };
    let appended = p.append(cx.disk, &batches, cx.clock.now_ms).and_then(|info| Ok((info, p.offsets()?)));
    match appended {
        Ok(((info, advanced), offsets)) => {
            cx.advanced(p, advanced);
            Ok((info.base_offset, info.last_offset, info.log_append_time, offsets.log_start_offset))
        }
        Err(e) => {
            if e.code() == ResponseError::KafkaStorageError {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "append failed");
            }
            Err((e.code(), e.to_string()))
        }
    }
}
