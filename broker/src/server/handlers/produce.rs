//! Produce: validate each partition's record batches, append them, and, for
//! acks=1/-1, answer only once they are durable (the high watermark has
//! passed them), so an acknowledged write survives a crash.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::str_bytes;
use crate::server::partition::Partition;
use crate::server::Broker;
use crate::wire::validate_record_set;

pub enum Outcome {
    Respond(ProduceResponse),
    /// acks=0 and everything was appended: Kafka sends nothing.
    Silent,
    /// acks=0 and something failed: Kafka closes the connection, the only
    /// way to tell such a producer.
    Close(String),
}

/// An appended partition waiting for its batches to become durable.
struct Pending {
    partition: Arc<Partition>,
    last_offset: i64,
    topic_slot: usize,
    partition_slot: usize,
}

pub async fn handle(b: &Broker, req: ProduceRequest, version: i16) -> Outcome {
    let acks = req.acks;
    let acks_valid = matches!(acks, 0 | 1 | -1);
    let mut resp = ProduceResponse::default();
    let mut pending = Vec::new();
    let mut first_error: Option<String> = None;
    for (ti, td) in req.topic_data.into_iter().enumerate() {
        let topic = b.topics.get(&td.name);
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
            } else if let Some(p) = partition {
                append(b, p, pd.records.unwrap_or_default()).await
            } else {
                Err((ResponseError::UnknownTopicOrPartition, "no such topic or partition".to_string()))
            };
            match result {
                Ok((base, last, append_time, log_start)) => {
                    pr.base_offset = base;
                    pr.log_append_time_ms = append_time;
                    pr.log_start_offset = log_start;
                    if acks != 0 && !b.config.bugs.ack_before_durable {
                        let partition = partition.expect("appended to a partition").clone();
                        pending.push(Pending { partition, last_offset: last, topic_slot: ti, partition_slot: pi });
                    }
                }
                Err((code, message)) => {
                    tracing::debug!(topic = %td.name.0, partition = pd.index, ?code, %message, "produce refused");
                    first_error.get_or_insert_with(|| format!("{}-{}: {message}", td.name.0, pd.index));
                    pr.error_code = code.code();
                    if version >= 8 {
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
            Some(e) => Outcome::Close(format!("acks=0 produce failed: {e}")),
            None => Outcome::Silent,
        };
    }
    let deadline = b.env.elapsed() + Duration::from_millis(req.timeout_ms.max(0) as u64);
    for p in pending {
        if let Err(code) = await_durable(b, &p.partition, p.last_offset, deadline).await {
            let pr = &mut resp.responses[p.topic_slot].partition_responses[p.partition_slot];
            pr.error_code = code.code();
            pr.base_offset = -1;
        }
    }
    Outcome::Respond(resp)
}

/// Validate and append one partition's record set. Returns (base offset,
/// last offset, log append time, log start offset).
async fn append(
    b: &Broker,
    p: &Partition,
    records: bytes::Bytes,
) -> Result<(i64, i64, i64, i64), (ResponseError, String)> {
    let batches = match validate_record_set(records) {
        Ok(batches) => batches,
        Err(why) => {
            tracing::warn!(topic = %p.topic, partition = p.index, %why, "corrupt record batch refused");
            return Err((ResponseError::CorruptMessage, why));
        }
    };
    let appended = p.append(&batches, b.env.now_ms()).and_then(|info| Ok((info, p.offsets()?)));
    b.env.pay_disk_latency().await;
    match appended {
        Ok((info, offsets)) => {
            if offsets.high_watermark > info.last_offset {
                b.hw_advanced.notify_waiters();
            }
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

/// Wait until everything up to `last_offset` is below the high watermark.
async fn await_durable(b: &Broker, p: &Partition, last_offset: i64, deadline: Duration) -> Result<(), ResponseError> {
    loop {
        let notified = b.hw_advanced.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let hw = p.offsets().map_err(|e| e.code())?.high_watermark;
        if hw > last_offset {
            return Ok(());
        }
        let now = b.env.elapsed();
        if now >= deadline {
            tracing::warn!(topic = %p.topic, partition = p.index, last_offset, hw, "produce timed out waiting for durability");
            return Err(ResponseError::RequestTimedOut);
        }
        tokio::select! {
            biased;
            _ = &mut notified => {}
            _ = b.env.sleep(deadline - now) => {}
        }
    }
}
