//! From a published metadata image to hosted partitions: the broker
//! materializes every topic that has a replica here and gives each partition
//! the role and leader epoch the image says (Kafka's `ReplicaManager
//! .applyDelta`). Removed topics are deleted.
//!
//! Every partition of such a topic gets a local log, led or not, so a
//! partition whose leadership later moves here has its log ready; the ones
//! not led refuse produce and consumer fetches with NOT_LEADER_OR_FOLLOWER,
//! and the ones followed are filled by the replica fetcher. A leader also
//! takes the replicas and ISR, which its high watermark is computed over.
//!
//! A `__consumer_offsets` partition whose role or leader epoch changes drops
//! its group coordinator here; a leader loads it again on the first group
//! request once its high watermark has caught up (`Groups` in
//! `server::group`), and members parked on the dropped one are woken to
//! hear NOT_COORDINATOR.

use crate::controller::image::{LocalChanges, MetadataImage, NO_LEADER};
use crate::io::{DiskScope, Env, Observation};
use crate::replication::Assignment;
use crate::server::group::OFFSETS_TOPIC;
use crate::server::node::{Clock, Node, Wake};
use crate::server::partition::Role;

/// Apply `changes` (the difference between the previous image and `image`
/// for this node). Returns what waiting requests must re-check. Each
/// partition this node takes the lead of is reported through `env`.
pub fn apply(
    node: &Node,
    disk: &DiskScope,
    clock: Clock,
    image: &MetadataImage,
    changes: &LocalChanges,
    env: &Env,
) -> Vec<Wake> {
    let me = node.config.node_id;
    let mut wake = Vec::new();
    for d in &changes.deletes {
        let Some(local) = node.topics.get(&d.topic_name) else { continue };
        if local.id != d.topic_id {
            continue;
        }
        if d.topic_name == OFFSETS_TOPIC {
            wake.extend(node.groups.unload(d.partition).into_iter().map(Wake::Group));
        }
        if d.topic_removed {
            match node.topics.delete(disk, &d.topic_name) {
                Ok(t) => wake.extend(t.partitions.iter().cloned().map(Wake::HighWatermark)),
                Err(e) => tracing::error!(topic = %d.topic_name, error = %e.message, "cannot delete a removed topic"),
            }
        } else if let Some(p) = local.partition(d.partition) {
            // No longer a replica here (reassignment): stop leading it.
            let epoch = p.leader_epoch();
            if p.change_role(Role::Follower { leader_id: NO_LEADER }, epoch + 1).is_ok() {
                wake.push(Wake::HighWatermark(p.clone()));
            }
        }
    }
    for local in changes.leaders.iter().chain(&changes.followers) {
        let Some(t) = image.topic(local.topic_id) else { continue };
        // A partition created here just now starts as leader at epoch 0,
        // which the image may confirm without a change of role: its lead is
        // reported all the same.
        let fresh = node.topics.get(&t.name).is_none_or(|h| h.id != t.id);
        let topic = match node.topics.ensure(disk, &t.name, t.id, t.partitions.len() as i32, &t.configs, clock.now_ms) {
            Ok(topic) => topic,
            Err(e) => {
                tracing::error!(topic = %t.name, error = %e.message, "cannot host a topic of the metadata image");
                continue;
            }
        };
        let reg = &local.registration;
        let Some(p) = topic.partition(local.partition) else { continue };
        let role = if reg.leader == me { Role::Leader } else { Role::Follower { leader_id: reg.leader } };
        let assignment =
            Assignment { replicas: reg.replicas.clone(), isr: reg.isr.clone(), partition_epoch: reg.partition_epoch };
        let mono_ms = clock.elapsed.as_millis() as i64;
        match p.apply_registration(me, role, reg.leader_epoch, assignment, mono_ms) {
            Ok(changed) => {
                wake.push(Wake::HighWatermark(p.clone()));
                if !changed && !fresh {
                    continue;
                }
                let o = p.offsets().ok();
                tracing::info!(topic = %t.name, partition = local.partition, ?role, epoch = reg.leader_epoch, isr = ?reg.isr,
                    leo = o.map(|o| o.log_end_offset), hw = o.map(|o| o.high_watermark), "partition role");
                if role == Role::Leader {
                    let (topic, partition, leader_epoch) = (t.name.clone(), local.partition, reg.leader_epoch);
                    env.observe(&Observation::PartitionLeader { node: me, topic, partition, leader_epoch });
                }
                if t.name == OFFSETS_TOPIC {
                    // Whatever this node served in its last role is not the
                    // new epoch's: a leader loads afresh once caught up.
                    wake.extend(node.groups.unload(local.partition).into_iter().map(Wake::Group));
                }
            }
            Err(e) => {
                tracing::warn!(topic = %t.name, partition = local.partition, error = ?e, "stale partition role refused")
            }
        }
    }
    wake
}
