//! Consumer groups: the group coordinator of every `__consumer_offsets`
//! partition this node leads, and the signals that wake members parked in a
//! rebalance.
//!
//! A group's coordinator is the leader of partition
//! `abs(hashCode(group.id)) % partitions` of `__consumer_offsets` (Java's
//! `String.hashCode`, as every Kafka client and tool computes it). Each
//! partition has one [`GroupCoordinator`], a pure state machine whose
//! durable state — committed offsets and each group's last metadata — is the
//! partition's records ([`records`]). Loading replays a partition into a
//! fresh coordinator: that is all a broker does to take over a partition's
//! groups, at start on a single broker and, in a cluster, at every leader
//! epoch of the partition it leads ([`Locked::serving`]).
//!
//! A coordinator belongs to one leader epoch of its partition. A new
//! leader loads only once its high watermark has reached the start of its
//! epoch — its log end when it took over, which holds every record ever
//! acknowledged — and answers COORDINATOR_LOAD_IN_PROGRESS until then, so
//! it never serves a state older than one a client was told about. A node
//! that stops leading the partition, or leads it in a new epoch, drops the
//! coordinator ([`Groups::unload`]); a request there is NOT_COORDINATOR.
//!
//! A group speaks the classic protocol (JoinGroup, SyncGroup) or, as a
//! consumer group of KIP-848, ConsumerGroupHeartbeat ([`consumer`]); a
//! group with members of one cannot be joined with the other.
//!
//! The records are written by the handlers (`server::handlers::group`),
//! which own the disk; the coordinator only says what to write.

pub mod consumer;
#[cfg(test)]
mod consumer_tests;
pub mod coordinator;
pub mod records;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

pub use consumer::{TopicMeta, TopicsView};
pub use coordinator::{Answer, Client, Effects, GroupCoordinator, GroupState, Ticket};
pub use records::Record;

use super::node::Clock;
use super::partition::Partition;
use super::partition::Role;
use crate::config::{GroupConfig, PlantedBugs};
use crate::io::DiskScope;
use kafka_protocol::error::ResponseError;

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Java's `String.hashCode` over UTF-16 code units, as Kafka hashes group ids.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The `__consumer_offsets` partition of a group (Kafka's `Utils.abs`, which
/// maps `i32::MIN` to 0).
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let h = java_string_hash(group_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// Moves whenever answers for a group's parked members become ready, so a
/// parked JoinGroup or SyncGroup can tell whether it missed a wake-up.
pub struct GroupSignal {
    pub group: String,
    version: AtomicU64,
}

impl GroupSignal {
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

/// Every coordinator of this node, and the signals of groups with parked members.
pub struct Groups {
    config: GroupConfig,
    bugs: PlantedBugs,
    coordinators: Mutex<BTreeMap<i32, Slot>>,
    /// Entries die with their last parked request.
    signals: Mutex<BTreeMap<String, Weak<GroupSignal>>>,
}

/// A loaded coordinator and the leader epoch of its partition it serves.
struct Slot {
    leader_epoch: i32,
    coordinator: GroupCoordinator,
}

/// The coordinators, locked for one input.
pub struct Locked<'a>(MutexGuard<'a, BTreeMap<i32, Slot>>, &'a Groups);

impl Locked<'_> {
    /// The coordinator of `partition` if this node leads it, loaded for
    /// its current leader epoch: NOT_COORDINATOR if it does not lead it,
    /// COORDINATOR_LOAD_IN_PROGRESS while a new leader's high watermark is
    /// short of its epoch's start (it may not yet hold as committed what
    /// the last coordinator acknowledged), and loaded from the partition's
    /// records the first time it is asked for after that.
    pub fn serving(
        &mut self,
        disk: &DiskScope,
        partition: &Partition,
        clock: Clock,
    ) -> Result<(&mut GroupCoordinator, i32), ResponseError> {
        if partition.role() != Role::Leader {
            return Err(ResponseError::NotCoordinator);
        }
        let epoch = partition.leader_epoch();
        let index = partition.index;
        if self.0.get(&index).map(|s| s.leader_epoch) != Some(epoch) {
            self.0.remove(&index);
            match partition.high_watermark_settled() {
                Ok(()) => {}
                Err(ResponseError::OffsetNotAvailable) if self.1.bugs.group_load_before_caught_up => {}
                Err(ResponseError::OffsetNotAvailable) => return Err(ResponseError::CoordinatorLoadInProgress),
                Err(_) => return Err(ResponseError::NotCoordinator),
            }
            let coordinator = self.1.read(disk, partition, clock).map_err(|e| {
                tracing::error!(partition = index, error = %format!("{e:#}"), "cannot load group coordinator");
                ResponseError::CoordinatorNotAvailable
            })?;
            self.0.insert(index, Slot { leader_epoch: epoch, coordinator });
        }
        Ok((&mut self.0.get_mut(&index).expect("loaded above").coordinator, epoch))
    }

    /// Drop every coordinator `current(partition, leader epoch)` says is no
    /// longer this node's to serve. Returns the groups they held.
    pub fn retain(&mut self, mut current: impl FnMut(i32, i32) -> bool) -> BTreeSet<String> {
        let mut dropped = BTreeSet::new();
        self.0.retain(|&index, slot| {
            let keep = current(index, slot.leader_epoch);
            if !keep {
                dropped.extend(slot.coordinator.list().into_iter().map(|(id, ..)| id.to_string()));
            }
            keep
        });
        dropped
    }

    /// Groups across every coordinator.
    pub fn group_count(&self) -> usize {
        self.0.values().map(|s| s.coordinator.group_count()).sum()
    }

    pub fn all(&self) -> impl Iterator<Item = &GroupCoordinator> {
        self.0.values().map(|s| &s.coordinator)
    }

    /// Every coordinator, with the leader epoch it serves.
    pub fn all_mut(&mut self) -> impl Iterator<Item = (&mut GroupCoordinator, i32)> {
        self.0.values_mut().map(|s| (&mut s.coordinator, s.leader_epoch))
    }
}

impl Groups {
    pub fn new(config: GroupConfig, bugs: PlantedBugs) -> Groups {
        Groups { config, bugs, coordinators: Mutex::new(BTreeMap::new()), signals: Mutex::new(BTreeMap::new()) }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    pub fn lock(&self) -> Locked<'_> {
        Locked(self.coordinators.lock().unwrap_or_else(|p| p.into_inner()), self)
    }

    /// The signal a member parked in `group` waits on.
    pub fn signal(&self, group: &str) -> Arc<GroupSignal> {
        let mut map = self.signals.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(group).and_then(Weak::upgrade) {
            return s;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let s = Arc::new(GroupSignal { group: group.to_string(), version: AtomicU64::new(0) });
        map.insert(group.to_string(), Arc::downgrade(&s));
        s
    }

    /// Move the signals of `groups`; returns those someone waits on.
    pub fn notify(&self, groups: &BTreeSet<String>) -> Vec<Arc<GroupSignal>> {
        let map = self.signals.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .iter()
            .filter_map(|g| map.get(g).and_then(Weak::upgrade))
            .inspect(|s| {
                s.version.fetch_add(1, Ordering::Release);
            })
            .collect()
    }

    /// Rebuild the coordinator of one `__consumer_offsets` partition from its
    /// records, replacing what was there, for the partition's current
    /// leader epoch (a single broker at start). Returns how many groups it holds.
    pub fn load(&self, disk: &DiskScope, partition: &Partition, clock: Clock) -> anyhow::Result<usize> {
        let coordinator = self.read(disk, partition, clock)?;
        let groups = coordinator.group_count();
        let slot = Slot { leader_epoch: partition.leader_epoch(), coordinator };
        self.lock().0.insert(partition.index, slot);
        Ok(groups)
    }

    /// Drop the coordinator of `partition` (this node no longer leads it, or
    /// leads it in a new epoch and must load it again). Returns the groups
    /// it held, whose parked members must be woken to hear NOT_COORDINATOR.
    pub fn unload(&self, partition: i32) -> Vec<Arc<GroupSignal>> {
        let dropped = self.lock().retain(|index, _| index != partition);
        if !dropped.is_empty() {
            tracing::info!(partition, groups = dropped.len(), "group coordinator unloaded");
        }
        self.notify(&dropped)
    }

    /// A coordinator replaying every record of `partition` below its high
    /// watermark.
    fn read(&self, disk: &DiskScope, partition: &Partition, clock: Clock) -> anyhow::Result<GroupCoordinator> {
        let mut c = GroupCoordinator::new(partition.index, self.config.clone(), self.bugs);
        let offsets = partition.offsets()?;
        let mut at = offsets.log_start_offset;
        let mut count = 0;
        while at < offsets.high_watermark {
            let read = partition.read(disk, at, 1 << 20)?;
            let decoded = crate::client::batch::decode(read.records, &partition.topic, partition.index, at)?;
            for r in decoded.records {
                let Some(key) = r.key else { continue };
                match Record::decode(&key, r.value.as_deref()) {
                    Ok(record) => c.apply(record, clock),
                    Err(e) => {
                        tracing::warn!(partition = partition.index, offset = r.offset, error = %e, "skipping an unreadable __consumer_offsets record")
                    }
                }
                count += 1;
            }
            match decoded.next_offset {
                Some(next) if next > at => at = next,
                _ => anyhow::bail!("__consumer_offsets-{} makes no progress at offset {at}", partition.index),
            }
        }
        tracing::info!(
            partition = partition.index,
            leader_epoch = partition.leader_epoch(),
            records = count,
            groups = c.group_count(),
            "group coordinator loaded"
        );
        Ok(c)
    }
}
