//! The checkers must bite: each planted broker bug, switched on through the
//! scenario's broker config, must produce its anomaly within a bounded
//! number of seeds, and the same seeds with the bug off must not.

use faultline_broker::config::PlantedBugs;
use faultline_sim::checker::AnomalyKind;
use faultline_sim::runner::{run_scenario, RunOptions, RunResult, CORRUPT_READ};
use faultline_sim::scenario::{self, Nemesis, NemesisKind, Scenario};

/// Seeds tried before giving up on a bug.
const MAX_SEEDS: u64 = 20;
/// The fewest seeds a control run without the bug covers.
const CONTROL_SEEDS: u64 = 10;

/// Crash-restart with a lazy flush policy, so that unsynced data piles up
/// between fsyncs and a crash has something to lose.
fn crashing(bugs: PlantedBugs, crash: NemesisKind) -> Scenario {
    let mut s = scenario::builtin_named("crash-restart").unwrap();
    s.swarm = None;
    s.name = "planted".into();
    s.cluster.bugs = bugs;
    s.cluster.log.flush_messages = 1_000_000;
    s.cluster.log.flush_ms = 300;
    s.faults.nemeses = vec![Nemesis { kind: crash, interval_s: 1.0, duration_s: 0.2, probability: 1.0 }];
    s.validate().unwrap();
    s
}

/// The first seed whose run shows `found`, and the runs without the bug on
/// the seeds up to it.
fn first_failing(s: &Scenario, found: impl Fn(&RunResult) -> bool) -> Option<u64> {
    first_failing_within(s, MAX_SEEDS, found)
}

fn first_failing_within(s: &Scenario, max_seeds: u64, found: impl Fn(&RunResult) -> bool) -> Option<u64> {
    (1..=max_seeds).find(|&seed| {
        let r = run_scenario(s, seed, &RunOptions::default()).unwrap();
        found(&r)
    })
}

fn assert_control_clean(s: &Scenario, upto: u64, found: impl Fn(&RunResult) -> bool) {
    let mut control = s.clone();
    control.cluster.bugs = PlantedBugs::default();
    for seed in 1..=upto {
        let r = run_scenario(&control, seed, &RunOptions::default()).unwrap();
        assert!(!found(&r), "seed {seed} shows the anomaly with no bug planted: {}{}", r.report, r.findings());
    }
}

fn has(kind: AnomalyKind) -> impl Fn(&RunResult) -> bool {
    move |r| r.report.counts.get(&kind).copied().unwrap_or(0) > 0
}

#[test]
fn ack_before_durable_loses_acknowledged_writes() {
    let s = crashing(PlantedBugs { ack_before_durable: true, ..PlantedBugs::default() }, NemesisKind::CrashRestart);
    let seed = first_failing(&s, has(AnomalyKind::LostWrite)).expect("no lost-write within the seed budget");
    println!("ack_before_durable: first lost-write at seed {seed}");
    assert_control_clean(&s, seed, has(AnomalyKind::LostWrite));
}

#[test]
fn duplicate_offset_after_crash_reuses_offsets() {
    let s = crashing(
        PlantedBugs { duplicate_offset_after_crash: true, ..PlantedBugs::default() },
        NemesisKind::CrashRestart,
    );
    let found = |r: &RunResult| has(AnomalyKind::InconsistentOffsets)(r) || has(AnomalyKind::Duplicate)(r);
    let seed = first_failing(&s, found).expect("no inconsistent-offsets or duplicate within the seed budget");
    println!("duplicate_offset_after_crash: first inconsistent-offsets/duplicate at seed {seed}");
    assert_control_clean(&s, seed, found);
}

/// `skip_crc_on_recovery` keeps a batch whose bits rotted on the medium
/// while the broker was down, and serves it forever: the final read, after
/// the heal, fails its CRC check at that offset on every attempt, which the
/// runner reports as the `corrupt-read` finding.
///
/// The control run, bug off, faces the same bit rot of fsynced data on its
/// single replica. A correct broker's recovery finds the bad batch and cuts
/// the log there, so acknowledged data after it is legitimately lost and
/// the run may well be invalid (lost-write, unseen). What it must never do
/// is serve the corrupt batch: no poll may fail the CRC check, and nothing
/// may stay unreadable. That, not the run's validity, is what the control
/// asserts. The scenario injects no transient read corruption, so any
/// corrupt fetch here came from corrupt data the broker kept.
#[test]
fn skip_crc_on_recovery_serves_corrupt_data() {
    let s = crashing(PlantedBugs { skip_crc_on_recovery: true, ..PlantedBugs::default() }, NemesisKind::CrashCorrupt);
    assert_eq!(s.faults.disk.read_corruption, 0.0, "the scenario must not flip bits on reads");
    let found = |r: &RunResult| !r.unreadable.is_empty();
    let seed = first_failing(&s, found).expect("no persistent corrupt read within the seed budget");
    println!("skip_crc_on_recovery: first persistent corrupt read at seed {seed}");
    let r = run_scenario(&s, seed, &RunOptions::default()).unwrap();
    assert!(!r.passed(), "a run with unreadable acknowledged data must fail");
    assert!(r.verdict().contains(CORRUPT_READ), "{}", r.verdict());
    assert!(r.findings().contains(CORRUPT_READ), "{}", r.findings());
    let served_corrupt = |r: &RunResult| !r.unreadable.is_empty() || r.corrupt_polls > 0;
    // The bug shows on the first seed or so; the control gets a few more,
    // since every one of its runs rots fsynced data and must still serve
    // none of it.
    assert_control_clean(&s, seed.max(CONTROL_SEEDS), served_corrupt);
}

/// A panic in a task the broker spawned (here its policy timer) must fail
/// the run with its message; the runner prints the seed and replay command
/// for any failed run.
#[test]
fn a_panic_in_a_broker_task_fails_the_run() {
    let mut s = scenario::builtin_named("steady").unwrap();
    s.cluster.bugs = PlantedBugs { panic_in_background_task: true, ..PlantedBugs::default() };
    let r = run_scenario(&s, 1, &RunOptions::default()).unwrap();
    assert!(!r.passed(), "a run with a panicking broker task passed");
    assert!(r.verdict().starts_with("PANIC"), "{}", r.verdict());
    assert!(r.panics.iter().any(|p| p.contains("planted panic")), "{:?}", r.panics);
    assert!(r.findings().contains("planted panic"), "{}", r.findings());
    let control = run_scenario(&scenario::builtin_named("steady").unwrap(), 1, &RunOptions::default()).unwrap();
    assert!(control.panics.is_empty(), "{:?}", control.panics);
}

/// The old workload (one send at a time, acks -1, no retries, no
/// idempotence) on the partitions scenario without its swarm table.
fn old_workload() -> Scenario {
    let mut s = scenario::builtin_named("partitions").unwrap();
    s.swarm = None;
    s
}

/// An idempotent producer that renumbers its retries: only a workload that
/// retries with idempotence on, across faults that lose answers, can see
/// it, and then the broker stores a retried batch twice. The old workload
/// never retries and is not idempotent, so it cannot find it.
#[test]
fn renumbered_retries_duplicate_under_idempotence() {
    let bug = PlantedBugs { renumber_retries: true, ..PlantedBugs::default() };
    let mut s = old_workload();
    s.name = "planted".into();
    s.cluster.bugs = bug;
    s.workload.idempotence = true;
    s.workload.retries = 3;
    s.workload.max_in_flight = 1;
    s.workload.concurrency = 3;
    s.workload.linger_ms = 5;
    s.validate().unwrap();
    let seed = first_failing(&s, has(AnomalyKind::Duplicate)).expect("no duplicate within the seed budget");
    println!("renumber_retries: first duplicate at seed {seed}");
    let r = run_scenario(&s, seed, &RunOptions::default()).unwrap();
    assert!(!r.passed(), "idempotence promises no duplicates: {}", r.verdict());
    assert_control_clean(&s, seed, has(AnomalyKind::Duplicate));

    let mut old = old_workload();
    old.cluster.bugs = bug;
    for seed in 1..=MAX_SEEDS {
        let r = run_scenario(&old, seed, &RunOptions::default()).unwrap();
        assert!(r.passed(), "the old workload should not reach the bug, yet seed {seed} failed: {}", r.verdict());
    }
}

/// With fsync failures that drop their pages (Linux's behaviour), a broker
/// that retried a failed fsync and then acknowledged would lose
/// acknowledged writes at the next power loss. The broker refuses the
/// produce whose fsync failed instead, so none is lost. Off in the built-in
/// scenarios (the fault makes lost writes informational there).
#[test]
fn fsync_failures_that_drop_pages_lose_nothing_acknowledged() {
    let mut s = scenario::builtin_named("disk-faults").unwrap();
    s.swarm = None;
    s.name = "fsyncgate".into();
    s.faults.disk.sync_error_drops_pages = true;
    s.faults.nemeses = vec![
        Nemesis {
            kind: NemesisKind::DiskFaults {
                faults: faultline_sim::disk::DiskFaults {
                    sync_error: 0.3,
                    sync_error_drops_pages: true,
                    ..Default::default()
                },
            },
            interval_s: 1.0,
            duration_s: 0.6,
            probability: 1.0,
        },
        Nemesis { kind: NemesisKind::CrashRestart, interval_s: 1.5, duration_s: 0.2, probability: 1.0 },
    ];
    s.validate().unwrap();
    let mut lost = None;
    for seed in 1..=MAX_SEEDS {
        let r = run_scenario(&s, seed, &RunOptions::default()).unwrap();
        if r.report.counts.get(&AnomalyKind::LostWrite).copied().unwrap_or(0) > 0 {
            lost = Some(seed);
            break;
        }
    }
    assert_eq!(lost, None, "an acknowledged write was lost after an fsync failure dropped its pages");
}

/// ListOffsets answered from a stale high-watermark snapshot: every record
/// is committed, fetched and read back in order, so no ordering checker
/// has anything to say; only the linearizability checker, which holds an
/// end offset against the appends acknowledged before it was asked, sees
/// it. The snapshot is refreshed once it is older than 300 ms, so the
/// final read (after the settle period) gets the true end.
#[test]
fn stale_end_offsets_only_linearizability_catches() {
    let mut s = scenario::builtin_named("steady").unwrap();
    s.swarm = None;
    s.name = "planted".into();
    s.cluster.bugs = PlantedBugs { stale_end_offsets: true, ..PlantedBugs::default() };
    s.validate().unwrap();
    let ordering = |r: &RunResult| {
        r.report.counts.iter().filter(|(k, n)| **k != AnomalyKind::NonLinearizable && **n > 0).count() > 0
    };
    let mut first = None;
    for seed in 1..=MAX_SEEDS {
        let r = run_scenario(&s, seed, &RunOptions::default()).unwrap();
        assert!(!ordering(&r), "seed {seed}: an ordering checker flagged the stale end offsets: {}", r.report);
        if has(AnomalyKind::NonLinearizable)(&r) {
            assert!(!r.passed(), "one broker promises linearizability: {}", r.verdict());
            assert!(r.report.linearizability.failures().all(|p| p
                .unplaceable_text
                .as_deref()
                .unwrap_or("")
                .contains("end offset")));
            first = Some(seed);
            break;
        }
    }
    let seed = first.expect("no nonlinearizable history within the seed budget");
    println!("stale_end_offsets: first nonlinearizable history at seed {seed}");
    assert_control_clean(&s, seed.max(3), has(AnomalyKind::NonLinearizable));
}

/// The `groups` scenario with a group coordinator bug planted.
fn groups_with(bugs: PlantedBugs) -> Scenario {
    let mut s = scenario::builtin_named("groups").unwrap();
    s.name = "planted-groups".into();
    s.cluster.bugs = bugs;
    s.validate().unwrap();
    s
}

#[test]
fn group_generation_not_bumped_gives_a_partition_two_owners() {
    let s = groups_with(PlantedBugs { group_generation_not_bumped: true, ..PlantedBugs::default() });
    let seed =
        first_failing(&s, has(AnomalyKind::GroupDoubleOwner)).expect("no group-double-owner within the seed budget");
    println!("group_generation_not_bumped: first group-double-owner at seed {seed}");
    assert_control_clean(&s, seed, has(AnomalyKind::GroupDoubleOwner));
}

#[test]
fn group_stale_commit_accepted_moves_committed_offsets_back() {
    let s = groups_with(PlantedBugs { group_stale_commit_accepted: true, ..PlantedBugs::default() });
    let seed =
        first_failing(&s, has(AnomalyKind::CommitRegression)).expect("no commit-regression within the seed budget");
    println!("group_stale_commit_accepted: first commit-regression at seed {seed}");
    assert_control_clean(&s, seed.max(3), has(AnomalyKind::CommitRegression));
}

/// The `groups-failover` scenario (a replicated `__consumer_offsets` whose
/// leader crashes and is cut off) with a group coordinator bug planted.
fn groups_failover_with(bugs: PlantedBugs) -> Scenario {
    let mut s = scenario::builtin_named("groups-failover").unwrap();
    s.name = "planted-groups-failover".into();
    s.cluster.bugs = bugs;
    s.validate().unwrap();
    s
}

#[test]
fn group_bugs_are_caught_across_coordinator_failovers() {
    let cases = [
        (PlantedBugs { group_generation_not_bumped: true, ..PlantedBugs::default() }, AnomalyKind::GroupDoubleOwner),
        (PlantedBugs { group_stale_commit_accepted: true, ..PlantedBugs::default() }, AnomalyKind::CommitRegression),
    ];
    for (bugs, kind) in cases {
        caught_in_groups_failover(bugs, kind);
    }
}

/// The first seed of `groups-failover` with `bugs` planted that shows
/// `kind`, checked against clean controls.
fn caught_in_groups_failover(bugs: PlantedBugs, kind: AnomalyKind) {
    let s = groups_failover_with(bugs);
    let seed = first_failing(&s, has(kind)).unwrap_or_else(|| panic!("no {kind:?} within the seed budget: {bugs:?}"));
    println!("groups-failover {bugs:?}: first {kind:?} at seed {seed}");
    assert_control_clean(&s, seed.max(3), has(kind));
}

#[test]
fn group_load_before_caught_up_hands_a_generation_out_twice() {
    let bugs = PlantedBugs { group_load_before_caught_up: true, ..PlantedBugs::default() };
    caught_in_groups_failover(bugs, AnomalyKind::GroupDoubleOwner);
}

/// A restarted broker that acts on its replayed image before the controller
/// has registered its new run leads again, at the same leader epoch, what
/// its previous run led: two tenures in one epoch, which followers' epoch
/// based truncation cannot tell apart (and a group coordinator loaded twice
/// in one epoch). Every coordinator crash shorter than the broker session
/// can show it.
#[test]
fn publish_before_registered_reuses_a_leader_epoch() {
    let bugs = PlantedBugs { publish_before_registered: true, ..PlantedBugs::default() };
    caught_in_groups_failover(bugs, AnomalyKind::LeaderEpochReused);
}

/// A quorum scenario without its swarm table, with `bugs` planted in every
/// node.
fn quorum_planted(name: &str, bugs: PlantedBugs) -> Scenario {
    let mut s = scenario::builtin_named(name).unwrap();
    s.swarm = None;
    s.name = format!("planted-{name}");
    s.cluster.bugs = bugs;
    s.validate().unwrap();
    s
}

/// Any of the metadata quorum's safety anomalies.
fn quorum_unsafe(r: &RunResult) -> bool {
    [AnomalyKind::QuorumTwoLeaders, AnomalyKind::MetadataDivergence, AnomalyKind::MetadataOrder, AnomalyKind::TopicLost]
        .into_iter()
        .any(|k| has(k)(r))
}

fn first_quorum_failure(what: &str, scenarios: &[&str], bugs: PlantedBugs) {
    for name in scenarios {
        let s = quorum_planted(name, bugs);
        if let Some(seed) = first_failing(&s, quorum_unsafe) {
            let r = run_scenario(&s, seed, &RunOptions::default()).unwrap();
            println!("{what}: first quorum anomaly in {name} at seed {seed}: {}", r.verdict());
            assert!(!r.passed(), "a run with a quorum anomaly must fail: {}", r.verdict());
            assert_control_clean(&s, seed, quorum_unsafe);
            return;
        }
    }
    panic!("{what}: no quorum anomaly in {scenarios:?} within {MAX_SEEDS} seeds each");
}

/// A voter that grants its vote before persisting it can vote again, for
/// another candidate, in the same epoch after a power loss: two leaders in
/// one epoch.
///
/// It takes a power loss between the grant leaving and the write landing
/// (the `crash-after-vote` nemesis, with buggify delaying the write) and two
/// candidates in one epoch, which quorum-elections makes common by standing
/// without pre-votes.
#[test]
fn quorum_vote_before_persist_elects_two_leaders() {
    let bugs = PlantedBugs { quorum_vote_before_persist: true, ..PlantedBugs::default() };
    first_quorum_failure("quorum_vote_before_persist", &["quorum-elections"], bugs);
}

/// A leader that commits an earlier epoch's entry by counting replicas
/// (Raft's figure 8) lets a later leader overwrite committed metadata.
///
/// It takes logs ending in uncommitted entries of several epochs (new
/// leaders crashed before their first entry spreads: `crash-new-leader`), a
/// fetch that brings the old entry without the new leader's own
/// (`cluster.small-quorum-fetch`), and the leader dying again before its own
/// entry commits. Rare: the first failure is at seed 170 (1 in 600 seeds
/// swept), so this test has its own budget of 200 seeds (about a minute).
/// The failure shows as a node truncating below its high watermark (an
/// invariant) and as metadata-divergence.
#[test]
#[ignore = "no longer caught within 200 seeds since nodes publish metadata only once caught up; needs a new search"]
fn quorum_commit_previous_epoch_changes_committed_metadata() {
    let bugs = PlantedBugs { quorum_commit_previous_epoch: true, ..PlantedBugs::default() };
    let failed = |r: &RunResult| quorum_unsafe(r) || !r.panics.is_empty();
    let s = quorum_planted("quorum-elections", bugs);
    let seed = first_failing_within(&s, 200, failed).expect("no overwritten commit within 200 seeds");
    let r = run_scenario(&s, seed, &RunOptions::default()).unwrap();
    println!("quorum_commit_previous_epoch: first failure in quorum-elections at seed {seed}: {}", r.verdict());
    assert!(!r.passed());
    assert_control_clean(&s, seed, failed);
}

/// A follower that keeps a divergent suffix applies records the quorum
/// never committed.
#[test]
fn quorum_keep_divergent_suffix_applies_uncommitted_metadata() {
    let bugs = PlantedBugs { quorum_keep_divergent_suffix: true, ..PlantedBugs::default() };
    first_quorum_failure("quorum_keep_divergent_suffix", &["quorum-partition"], bugs);
}

/// A replication scenario with one planted bug and no swarm draw.
fn replication_planted(name: &str, bugs: PlantedBugs) -> Scenario {
    let mut s = scenario::builtin_named(name).unwrap();
    s.name = format!("planted-{name}");
    s.cluster.bugs = bugs;
    s.validate().unwrap();
    s
}

/// A safety failure: a fatal anomaly (lost-write, replica-divergence,
/// inconsistent-offsets and the like, as the configuration promises them)
/// or a failed invariant. Liveness is left out: a correct broker can miss
/// it on an unlucky seed, which would make the control runs flaky.
fn unsafe_run(r: &RunResult) -> bool {
    !r.report.valid || !r.panics.is_empty()
}

/// Sweep `scenarios` until one seed shows the bug; the same seeds with no
/// bug planted must be safe. Prints the first failing seed.
fn first_replication_failure(what: &str, scenarios: &[&str], bugs: PlantedBugs) {
    for name in scenarios {
        let s = replication_planted(name, bugs);
        if let Some(seed) = first_failing_within(&s, 30, unsafe_run) {
            let r = run_scenario(&s, seed, &RunOptions::default()).unwrap();
            println!("{what}: first failure in {name} at seed {seed}: {}", r.verdict());
            assert!(!r.passed(), "an unsafe run must fail: {}", r.verdict());
            assert_control_clean(&s, seed, unsafe_run);
            return;
        }
    }
    panic!("{what}: no safety failure in {scenarios:?} within 30 seeds each");
}

/// acks=all answered once the leader alone has the batch: a leader that
/// dies before its followers fetch takes acknowledged records with it.
#[test]
fn replica_ack_before_isr_loses_acknowledged_writes() {
    let bugs = PlantedBugs { replica_ack_before_isr: true, ..PlantedBugs::default() };
    first_replication_failure("replica_ack_before_isr", &["replication-crash", "replication-lag"], bugs);
}

/// The high watermark moved by the furthest follower, in the ISR or not:
/// an ISR member without the records can be elected.
#[test]
fn replica_high_watermark_outside_isr_loses_acknowledged_writes() {
    let bugs = PlantedBugs { replica_high_watermark_outside_isr: true, ..PlantedBugs::default() };
    first_replication_failure("replica_high_watermark_outside_isr", &["replication-crash", "replication-lag"], bugs);
}

/// KAFKA-1211, before KIP-101: a follower cuts its log to its own high
/// watermark when it starts following, then may be elected without records
/// the old leader acknowledged.
#[test]
fn replica_truncate_to_high_watermark_loses_acknowledged_writes() {
    let bugs = PlantedBugs { replica_truncate_to_high_watermark: true, ..PlantedBugs::default() };
    first_replication_failure("replica_truncate_to_high_watermark", &["replication-crash", "replication-lag"], bugs);
}

/// Unclean leader election everywhere: a replica outside the ISR leads and
/// the ISR's acknowledged records are gone (or a follower must truncate
/// below its high watermark, which the strict policy's invariant forbids).
#[test]
fn unclean_election_always_loses_acknowledged_writes() {
    let bugs = PlantedBugs { unclean_election_always: true, ..PlantedBugs::default() };
    first_replication_failure("unclean_election_always", &["replication-lag", "replication-crash"], bugs);
}
