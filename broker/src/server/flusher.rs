//! The background task that applies time-based log policies: `flush.ms`
//! (fsync data older than that, advancing the high watermark) and
//! `segment.ms` (roll old active segments). Appends apply `flush.messages`
//! themselves; this covers partitions that go quiet.

use std::sync::Arc;
use std::time::Duration;

use super::Broker;
use crate::io;

/// How often policies are checked, like Kafka's `log.flush.scheduler.interval.ms`.
/// Bounded by the smallest `flush.ms` so short flush intervals are honoured.
fn tick_interval(broker: &Broker) -> Duration {
    let smallest = broker.topics.all().iter().map(|t| t.config.flush_ms).chain([broker.config.log.flush_ms]).min();
    let ms = smallest.unwrap_or(1000).clamp(10, 1000) as u64;
    Duration::from_millis(ms / 2).max(Duration::from_millis(10))
}

pub(super) fn spawn(broker: Arc<Broker>) {
    let env = broker.env.clone();
    io::spawn(&env, "broker-flusher", async move {
        let stopping = broker.stopping();
        tokio::pin!(stopping);
        loop {
            let pause = tick_interval(&broker);
            tokio::select! {
                biased;
                _ = &mut stopping => return,
                _ = broker.env.sleep(pause) => {}
            }
            tick(&broker).await;
        }
    });
}

async fn tick(broker: &Broker) {
    let now = broker.env.now_ms();
    let mut advanced = false;
    for topic in broker.topics.all() {
        for p in &topic.partitions {
            match p.tick(now) {
                Ok(moved) => advanced |= moved,
                Err(e) => tracing::error!(topic = %topic.name, partition = p.index, error = %e, "flush/roll failed"),
            }
        }
    }
    broker.env.pay_disk_latency().await;
    if advanced {
        broker.hw_advanced.notify_waiters();
    }
}
