//! What a partition leader knows of its followers (Kafka's `Partition`
//! leader state): each follower's log end offset and when it last caught up,
//! the ISR as the metadata log has it, and the one ISR change it has asked
//! the controller for. From these it derives the high watermark and decides
//! when the ISR must shrink or expand. Pure: time comes in as milliseconds,
//! and nothing here sends anything.
//!
//! The high watermark is the smallest acknowledged offset over the
//! *maximal* ISR: the committed ISR plus any member a pending expansion
//! adds (KIP-497: a replica counts as in sync from the moment it is
//! proposed, so the watermark never depends on the controller's answer,
//! and a pending shrink still waits for the member it would drop).

use std::collections::BTreeMap;

/// The partition's replicas and ISR as the metadata image has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Preference order: the first is the preferred leader.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Bumped by the controller on every change of the partition.
    pub partition_epoch: i32,
}

/// One follower, as its fetches show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Follower {
    /// Its log end offset (the offset of its last fetch); `None` until it
    /// has fetched from this leader in this epoch.
    log_end_offset: Option<i64>,
    /// Last time it had everything the leader had (Kafka's `lastCaughtUpTimeMs`).
    last_caught_up_ms: i64,
    /// The leader's log end when it last answered this follower: a fetch
    /// reaching it proves the follower caught up at that answer's time.
    leader_end_at_last_fetch: i64,
    last_fetch_ms: i64,
}

/// An ISR change sent to the controller and not yet seen in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIsr {
    pub isr: Vec<i32>,
    /// The partition epoch the change was based on: the image answers it
    /// once it shows a later one.
    pub partition_epoch: i32,
    pub sent_ms: i64,
    /// The controller said it was not applied: it no longer counts, and
    /// stays only to space the next request [`ISR_CHANGE_RETRY_MS`] after
    /// this one (a follower the controller will not take yet, fenced say,
    /// would otherwise be proposed again at its every fetch).
    pub refused: bool,
}

/// How long an ISR change may go unanswered before it is asked again (the
/// request or its answer was lost; the controller refuses a stale repeat).
pub const ISR_CHANGE_RETRY_MS: i64 = 500;

/// The leader's replica state for one partition.
#[derive(Debug, Clone)]
pub struct LeaderView {
    me: i32,
    assignment: Assignment,
    followers: BTreeMap<i32, Follower>,
    /// The log end when this leader's epoch began: a follower joins the
    /// ISR only once it has everything of earlier epochs (Kafka's
    /// `leaderEpochStartOffset`).
    epoch_start_offset: i64,
    pending: Option<PendingIsr>,
}

impl LeaderView {
    /// A new leadership at `now_ms`. Every follower is given until
    /// `now_ms + replica.lag.time.max.ms` to fetch, as Kafka does.
    pub fn new(me: i32, assignment: Assignment, epoch_start_offset: i64, now_ms: i64) -> LeaderView {
        invariant!(assignment.replicas.contains(&me), "leader {me} is not a replica: {assignment:?}");
        let followers = assignment
            .replicas
            .iter()
            .filter(|r| **r != me)
            .map(|r| {
                let f = Follower {
                    log_end_offset: None,
                    last_caught_up_ms: now_ms,
                    leader_end_at_last_fetch: epoch_start_offset,
                    last_fetch_ms: now_ms,
                };
                (*r, f)
            })
            .collect();
        LeaderView { me, assignment, followers, epoch_start_offset, pending: None }
    }

    pub fn assignment(&self) -> &Assignment {
        &self.assignment
    }

    pub fn epoch_start_offset(&self) -> i64 {
        self.epoch_start_offset
    }

    pub fn pending(&self) -> Option<&PendingIsr> {
        self.pending.as_ref()
    }

    pub fn is_replica(&self, id: i32) -> bool {
        self.assignment.replicas.contains(&id)
    }

    /// The controller answered that `change` was not applied and the
    /// partition epoch it was based on is current (INELIGIBLE_REPLICA): the
    /// committed ISR stands, and the next change is computed afresh.
    pub fn refused(&mut self, change: &PendingIsr) {
        if let Some(p) =
            self.pending.as_mut().filter(|p| p.isr == change.isr && p.partition_epoch == change.partition_epoch)
        {
            p.refused = true;
        }
    }

    /// Take the image's word for the replicas and ISR (same leader epoch).
    /// A pending change is settled once the image has a later partition
    /// epoch (whether the change won or something else did).
    pub fn update_assignment(&mut self, assignment: Assignment, now_ms: i64) {
        if self.pending.as_ref().is_some_and(|p| assignment.partition_epoch > p.partition_epoch) {
            self.pending = None;
        }
        for r in &assignment.replicas {
            if *r != self.me && !self.followers.contains_key(r) {
                let f = Follower {
                    log_end_offset: None,
                    last_caught_up_ms: now_ms,
                    leader_end_at_last_fetch: self.epoch_start_offset,
                    last_fetch_ms: now_ms,
                };
                self.followers.insert(*r, f);
            }
        }
        self.followers.retain(|r, _| assignment.replicas.contains(r));
        self.assignment = assignment;
    }

    /// A fetch from follower `id` at `fetch_offset` (its log end), answered
    /// while the leader's log ends at `leader_end`.
    pub fn on_fetch(&mut self, id: i32, fetch_offset: i64, leader_end: i64, now_ms: i64) {
        let Some(f) = self.followers.get_mut(&id) else { return };
        if fetch_offset >= leader_end {
            f.last_caught_up_ms = now_ms;
        } else if fetch_offset >= f.leader_end_at_last_fetch {
            // It has all the leader had when it last answered it.
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.log_end_offset = Some(fetch_offset);
        f.leader_end_at_last_fetch = leader_end;
        f.last_fetch_ms = now_ms;
    }

    /// The ISR plus whatever a pending change adds.
    pub fn maximal_isr(&self) -> Vec<i32> {
        let mut isr = self.assignment.isr.clone();
        if let Some(p) = self.pending.as_ref().filter(|p| !p.refused) {
            for r in &p.isr {
                if !isr.contains(r) {
                    isr.push(*r);
                }
            }
        }
        isr
    }

    /// The committed ISR's size: what `min.insync.replicas` is held to.
    pub fn isr_len(&self) -> usize {
        self.assignment.isr.len()
    }

    /// The offset every member of the maximal ISR has acknowledged, given
    /// the leader's own (its log end or its durable offset, by policy).
    /// `None` while a member has not fetched in this epoch.
    ///
    /// `bug_any_follower` is the planted bug: the offset of the leader and
    /// its furthest follower, in the ISR or not.
    pub fn acknowledged_offset(&self, leader_ack: i64, bug_any_follower: bool) -> Option<i64> {
        if bug_any_follower {
            let furthest = self.followers.values().filter_map(|f| f.log_end_offset).max();
            return Some(match furthest {
                Some(f) => leader_ack.min(f),
                None => leader_ack,
            });
        }
        let mut ack = leader_ack;
        for r in self.maximal_isr() {
            if r == self.me {
                continue;
            }
            ack = ack.min(self.followers.get(&r)?.log_end_offset?);
        }
        Some(ack)
    }

    /// The ISR change due now, if any, recorded as pending: followers of
    /// the ISR that have not caught up for `lag_max_ms` leave; replicas that
    /// have reached `high_watermark` (and this epoch's start) join. The
    /// leader never leaves its own ISR. One change at a time.
    ///
    /// A change in flight is asked again, unchanged, every
    /// [`ISR_CHANGE_RETRY_MS`] until it is settled: the controller may have
    /// committed it already, with the answer or the image lost on the way,
    /// so the leader must go on counting the replicas it adds (Kafka's
    /// `PendingExpandIsr`). Only the image ([`Self::update_assignment`]) or
    /// the controller's word that it was not applied ([`Self::refused`])
    /// settles it.
    pub fn isr_change_due(&mut self, high_watermark: i64, now_ms: i64, lag_max_ms: i64) -> Option<PendingIsr> {
        if let Some(p) = &mut self.pending {
            if now_ms < p.sent_ms + ISR_CHANGE_RETRY_MS {
                return None;
            }
            if !p.refused {
                p.sent_ms = now_ms;
                return Some(p.clone());
            }
            self.pending = None;
        }
        let isr = &self.assignment.isr;
        let mut next: Vec<i32> = isr
            .iter()
            .copied()
            .filter(|r| {
                *r == self.me || self.followers.get(r).is_some_and(|f| now_ms - f.last_caught_up_ms <= lag_max_ms)
            })
            .collect();
        if !next.contains(&self.me) {
            next.insert(0, self.me);
        }
        for (r, f) in &self.followers {
            let caught_up = f.log_end_offset.is_some_and(|o| o >= high_watermark && o >= self.epoch_start_offset);
            if !isr.contains(r) && caught_up && now_ms - f.last_caught_up_ms <= lag_max_ms {
                next.push(*r);
            }
        }
        // Replica order, so equal sets compare equal.
        next.sort_by_key(|r| self.assignment.replicas.iter().position(|x| x == r));
        let mut current = isr.clone();
        current.sort_by_key(|r| self.assignment.replicas.iter().position(|x| x == r));
        if next == current {
            self.pending = None;
            return None;
        }
        let p =
            PendingIsr { isr: next, partition_epoch: self.assignment.partition_epoch, sent_ms: now_ms, refused: false };
        self.pending = Some(p.clone());
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(isr: &[i32]) -> LeaderView {
        let a = Assignment { replicas: vec![0, 1, 2], isr: isr.to_vec(), partition_epoch: 3 };
        LeaderView::new(0, a, 10, 1_000)
    }

    #[test]
    fn the_watermark_waits_for_every_isr_member() {
        let mut v = view(&[0, 1, 2]);
        assert_eq!(v.acknowledged_offset(20, false), None, "followers not heard from yet");
        v.on_fetch(1, 15, 20, 1_010);
        assert_eq!(v.acknowledged_offset(20, false), None);
        v.on_fetch(2, 12, 20, 1_010);
        assert_eq!(v.acknowledged_offset(20, false), Some(12));
        assert_eq!(v.acknowledged_offset(11, false), Some(11), "the leader's own offset bounds it");
        // The planted bug counts the furthest follower only.
        assert_eq!(v.acknowledged_offset(20, true), Some(15));
    }

    #[test]
    fn a_lagging_follower_leaves_and_a_caught_up_one_joins() {
        let mut v = view(&[0, 1, 2]);
        v.on_fetch(1, 20, 20, 1_100);
        v.on_fetch(2, 12, 20, 1_100);
        assert_eq!(v.isr_change_due(12, 1_200, 500), None);
        v.on_fetch(1, 25, 25, 1_700);
        let p = v.isr_change_due(12, 1_700, 500).expect("follower 2 lags");
        assert_eq!(p.isr, vec![0, 1]);
        assert_eq!(v.isr_change_due(12, 1_800, 500), None, "one change in flight");
        v.update_assignment(Assignment { replicas: vec![0, 1, 2], isr: vec![0, 1], partition_epoch: 4 }, 1_900);
        assert!(v.pending().is_none());
        assert_eq!(v.acknowledged_offset(25, false), Some(25), "follower 2 no longer counts");
        v.on_fetch(2, 25, 25, 2_000);
        let p = v.isr_change_due(25, 2_000, 500).expect("follower 2 caught up");
        assert_eq!(p.isr, vec![0, 1, 2]);
        assert_eq!(v.maximal_isr(), vec![0, 1, 2], "a joining member counts at once");
    }

    #[test]
    fn a_follower_behind_the_epoch_start_does_not_join() {
        let mut v = view(&[0]);
        v.on_fetch(1, 5, 5, 1_010);
        assert_eq!(v.isr_change_due(5, 1_010, 500), None, "offset 5 is before this epoch began at 10");
        v.on_fetch(1, 10, 10, 1_020);
        assert_eq!(v.isr_change_due(5, 1_020, 500).map(|p| p.isr), Some(vec![0, 1]));
    }

    #[test]
    fn an_unanswered_change_is_asked_again() {
        let mut v = view(&[0, 1, 2]);
        v.on_fetch(1, 20, 20, 2_000);
        let first = v.isr_change_due(20, 2_000, 500).expect("2 never fetched");
        assert_eq!(v.isr_change_due(20, 2_000 + ISR_CHANGE_RETRY_MS - 1, 500), None);
        v.on_fetch(1, 20, 20, 2_000 + ISR_CHANGE_RETRY_MS);
        let again = v.isr_change_due(20, 2_000 + ISR_CHANGE_RETRY_MS, 500).expect("asked again");
        assert_eq!(first.isr, again.isr);
    }

    /// The controller may commit an expansion whose answer never arrives.
    /// A retry must not recompute the change from the stale image: the
    /// joining follower, meanwhile lagging, would be dropped from the
    /// maximal ISR and the watermark would pass it, though the controller
    /// counts it in sync and may elect it.
    #[test]
    fn an_expansion_in_flight_counts_until_settled() {
        let mut v = view(&[0, 2]);
        v.on_fetch(2, 30, 30, 1_000);
        v.on_fetch(1, 30, 30, 1_000);
        let p = v.isr_change_due(30, 1_000, 500).expect("1 caught up");
        assert_eq!(p.isr, vec![0, 1, 2]);
        // Follower 1 stops fetching; the leader and follower 2 go on.
        v.on_fetch(2, 60, 60, 2_000);
        let again = v.isr_change_due(30, 2_000, 500).expect("asked again");
        assert_eq!(again.isr, vec![0, 1, 2], "the same change, not one without follower 1");
        assert_eq!(v.acknowledged_offset(60, false), Some(30), "follower 1 still holds the watermark back");
        // INELIGIBLE_REPLICA: not applied, the committed ISR stands.
        v.refused(&again);
        assert_eq!(v.acknowledged_offset(60, false), Some(60));
        v.on_fetch(1, 60, 60, 2_100);
        assert_eq!(v.isr_change_due(60, 2_100, 500), None, "not asked again at once");
        let next = v.isr_change_due(60, 2_000 + ISR_CHANGE_RETRY_MS, 500).expect("asked afresh");
        assert!(!next.refused);
    }

    proptest! {
        /// Whatever the fetches, the acknowledged offset never exceeds what
        /// any ISR member holds, and the leader stays in every proposed ISR.
        #[test]
        fn acknowledged_is_held_by_every_isr_member(
            fetches in proptest::collection::vec((1i32..3, 0i64..50, 0i64..50), 0..40),
            leader_ack in 0i64..60,
        ) {
            let mut v = view(&[0, 1, 2]);
            let mut now = 1_000;
            let mut held = BTreeMap::new();
            for (id, off, end) in fetches {
                now += 7;
                v.on_fetch(id, off, end.max(off), now);
                held.insert(id, off);
                if let Some(p) = v.isr_change_due(0, now, 100) {
                    prop_assert!(p.isr.contains(&0));
                }
            }
            if let Some(ack) = v.acknowledged_offset(leader_ack, false) {
                prop_assert!(ack <= leader_ack);
                for r in v.maximal_isr() {
                    if r != 0 {
                        prop_assert!(ack <= held[&r]);
                    }
                }
            }
        }
    }
}
