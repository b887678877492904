//! One small history per anomaly kind that must be flagged, and clean ones
//! that must pass.

use super::testkit::{fail, info, kinds, part, Builder};
use super::*;
use crate::history::{OpKind, Outcome};
use AnomalyKind::*;

/// Three acknowledged values in partition 0 and one in partition 1.
fn written() -> Builder {
    let mut b = Builder::default();
    b.sent(1, "a", 0, 0);
    b.sent(1, "b", 0, 1);
    b.sent(2, "x", 1, 0);
    b.sent(1, "c", 0, 2);
    b
}

#[test]
fn clean_history_passes() {
    let mut b = written();
    b.send(2, "f", None, fail());
    b.assign(10, &[0, 1]);
    b.poll(10, &[(0, 0, "a"), (0, 1, "b"), (1, 0, "x")]);
    b.poll(10, &[(0, 2, "c")]);
    b.assign(20, &[0, 1]);
    b.final_poll(20, &[(0, 0, "a"), (1, 0, "x")]);
    b.final_poll(20, &[(0, 1, "b"), (0, 2, "c")]);
    let r = b.check();
    assert!(r.valid, "{r}");
    assert!(r.anomalies.is_empty(), "{r}");
    assert_eq!(r.stats.sends_ok, 4);
    assert_eq!(r.stats.sends_fail, 1);
    assert_eq!(r.stats.records_read, 8);
    assert_eq!(r.stats.values_read, 4);
    assert_eq!(r.stats.unseen, 0);
    assert!(r.to_string().starts_with("valid: no anomalies"));
}

#[test]
fn empty_history_passes() {
    let r = Builder::default().check();
    assert!(r.valid && r.anomalies.is_empty());
}

#[test]
fn lost_write_when_a_later_offset_was_read() {
    // Jepsen's own example: reading c at offset 2 means a and b should
    // have been read; d is past the read and only unseen.
    let mut b = Builder::default();
    let a = b.sent(0, "a", 0, 0);
    b.sent(0, "b", 0, 1);
    b.sent(0, "d", 0, 3);
    b.send(1, "c", None, info());
    let poll = b.poll(0, &[(0, 2, "c")]);
    let r = b.check();
    assert!(!r.valid);
    assert_eq!(kinds(&r), vec![LostWrite, Unseen]);
    let lost: Vec<_> = r.of_kind(LostWrite).collect();
    assert_eq!(lost.len(), 2);
    assert_eq!(lost[0].values, vec!["a"]);
    assert_eq!(lost[0].offsets, vec![0, 2]);
    assert_eq!(lost[0].ops, vec![a, poll]);
    assert_eq!(r.of_kind(Unseen).next().unwrap().values, vec!["d"]);
    // c was invoked after d landed at 3, so it cannot sit at 2 either.
    assert_eq!(r.invalid_kinds, vec![LostWrite, NonLinearizable]);
}

#[test]
fn lost_write_overwritten_offset() {
    // a acknowledged at 0, then b also at 0 and c at 2; reading b and c
    // must also have read a.
    let mut b = Builder::default();
    b.sent(0, "a", 0, 0);
    b.sent(0, "b", 0, 0);
    b.sent(0, "c", 0, 2);
    b.poll(1, &[(0, 0, "b"), (0, 2, "c")]);
    let r = b.check();
    let lost: Vec<_> = r.of_kind(LostWrite).map(|a| a.values[0].clone()).collect();
    assert_eq!(lost, vec!["a"]);
    assert_eq!(r.counts[&InconsistentOffsets], 1);
}

#[test]
fn lost_write_missing_from_final_read() {
    // b was read once, then the final read passed its offset without it.
    let mut b = written();
    b.poll(10, &[(0, 0, "a"), (0, 1, "b"), (0, 2, "c"), (1, 0, "x")]);
    b.final_poll(20, &[(0, 0, "a"), (1, 0, "x")]);
    let last = b.final_poll(20, &[(0, 2, "c")]);
    let r = b.check();
    let lost: Vec<_> = r.of_kind(LostWrite).collect();
    assert_eq!(lost.len(), 1, "{r}");
    assert_eq!(lost[0].values, vec!["b"]);
    assert!(lost[0].ops.contains(&last));
    assert!(lost[0].explanation.contains("final read"));
    assert_eq!(r.counts[&PollSkip], 1);
}

#[test]
fn lost_write_cut_from_the_tail_after_a_completed_final_read() {
    // c was acknowledged and even read, then cut from the log's tail: the
    // final read reached the log end without it.
    let mut b = written();
    b.poll(10, &[(0, 0, "a"), (0, 1, "b"), (0, 2, "c")]);
    let assign = b.op(20, OpKind::Assign { partitions: vec![part(0), part(1)] }, Outcome::Ok, true);
    b.final_poll(20, &[(0, 0, "a"), (0, 1, "b"), (1, 0, "x")]);
    let r = b.check();
    let lost: Vec<_> = r.of_kind(LostWrite).collect();
    assert_eq!(lost.len(), 1, "{r}");
    assert_eq!(lost[0].values, vec!["c"]);
    assert!(lost[0].ops.contains(&assign));
    assert!(!r.valid);
}

#[test]
fn an_incomplete_final_read_does_not_prove_a_tail_lost() {
    // The final read gave up before the end (its Assign is indeterminate):
    // c is merely unseen by it, not lost.
    let mut b = written();
    let info = Outcome::Info { error: "timeout".to_string() };
    b.op(20, OpKind::Assign { partitions: vec![part(0), part(1)] }, info, true);
    b.final_poll(20, &[(0, 0, "a"), (0, 1, "b"), (1, 0, "x")]);
    let r = b.check();
    assert_eq!(r.of_kind(LostWrite).count(), 0, "{r}");
    assert!(r.valid, "{r}");
}

#[test]
fn unseen_is_informational_by_default() {
    let mut b = written();
    b.final_poll(20, &[(0, 0, "a"), (0, 1, "b"), (1, 0, "x")]);
    let r = b.check();
    assert!(r.valid, "{r}");
    assert_eq!(kinds(&r), vec![Unseen]);
    let u = r.of_kind(Unseen).next().unwrap();
    assert_eq!((u.offsets.clone(), u.values.clone()), (vec![2], vec!["c".to_string()]));
    assert!(u.explanation.contains("stopped at offset 1"));
    assert_eq!(r.stats.unseen, 1);
    assert!(r.to_string().contains("unseen (informational)"));

    let strict = check(&b.history, &CheckOptions::all());
    assert!(!strict.valid);
    assert_eq!(strict.invalid_kinds, vec![Unseen]);
}

#[test]
fn unseen_without_position() {
    let mut b = Builder::default();
    b.send(0, "a", None, Outcome::Ok);
    let r = b.check();
    let u = r.of_kind(Unseen).next().unwrap();
    assert_eq!(u.partition, None);
    assert!(u.offsets.is_empty());
}

#[test]
fn duplicate_value_at_two_offsets() {
    let mut b = written();
    b.poll(10, &[(0, 0, "a"), (0, 1, "b"), (0, 2, "c"), (0, 3, "a")]);
    let r = b.check();
    let d: Vec<_> = r.of_kind(Duplicate).collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].offsets, vec![0, 3]);
    assert_eq!(d[0].values, vec!["a"]);
    assert_eq!(d[0].partition, Some(testkit::part(0)));
    assert!(!r.valid);
}

#[test]
fn duplicate_across_partitions() {
    let mut b = written();
    b.poll(10, &[(1, 1, "a")]);
    let d: Vec<_> = b.check().of_kind(Duplicate).cloned().collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].partition, None);
}

#[test]
fn inconsistent_offsets_between_send_and_poll() {
    let mut b = written();
    b.send(3, "z", None, info());
    b.poll(10, &[(0, 0, "a"), (0, 1, "z"), (0, 2, "c")]);
    let r = b.check();
    let i: Vec<_> = r.of_kind(InconsistentOffsets).collect();
    assert_eq!(i.len(), 1, "{r}");
    assert_eq!(i[0].offsets, vec![1]);
    assert_eq!(i[0].values, vec!["b", "z"]);
}

#[test]
fn indefinite_send_unread_is_not_an_inconsistency() {
    // As in Jepsen: an info send's offset counts only once a read proves it
    // took effect.
    let mut b = Builder::default();
    b.send(0, "a", Some((0, 0)), info());
    b.sent(1, "b", 0, 0);
    b.poll(2, &[(0, 0, "b")]);
    assert!(b.check().anomalies.is_empty());
    b.poll(3, &[(0, 5, "a")]);
    let r = b.check();
    assert_eq!(r.counts[&InconsistentOffsets], 1, "{r}");
    assert_eq!(r.counts[&Duplicate], 1, "{r}");
}

#[test]
fn g1a_reads_a_failed_send() {
    let mut b = Builder::default();
    let send = b.send(0, "a", None, fail());
    let poll = b.poll(1, &[(0, 0, "a")]);
    let r = b.check();
    assert_eq!(kinds(&r), vec![G1a]);
    assert_eq!(r.of_kind(G1a).next().unwrap().ops, vec![send, poll]);
    assert!(!r.valid);
}

#[test]
fn unexpected_reads_a_value_never_sent() {
    let mut b = written();
    b.poll(10, &[(0, 0, "a"), (0, 1, "b"), (0, 2, "c"), (0, 3, "ghost")]);
    let r = b.check();
    assert_eq!(kinds(&r), vec![Unseen, Unexpected]);
    assert!(!r.valid);
}

#[test]
fn nonmonotonic_send_in_one_session() {
    let mut b = Builder::default();
    let first = b.sent(0, "a", 0, 5);
    let second = b.sent(0, "b", 0, 3);
    b.sent(1, "c", 0, 1); // another session: no order owed
    b.sent(0, "d", 1, 0); // another partition
    let r = b.check();
    let nm: Vec<_> = r.of_kind(NonmonotonicSend).collect();
    assert_eq!(nm.len(), 1, "{r}");
    assert_eq!(nm[0].ops, vec![first, second]);
    assert_eq!(nm[0].offsets, vec![5, 3]);
}

#[test]
fn concurrent_sends_are_not_nonmonotonic() {
    let mut b = Builder::default();
    // Both in flight at once; the later-invoked one landed first.
    b.op_at(0, testkit::send_kind("a", Some((0, 1))), Outcome::Ok, false, 1, 10);
    b.op_at(0, testkit::send_kind("b", Some((0, 0))), Outcome::Ok, false, 2, 11);
    b.op_at(0, testkit::send_kind("c", Some((0, 2))), Outcome::Ok, false, 12, 13);
    assert_eq!(b.check().counts[&NonmonotonicSend], 0);
    // Once both completed, a new send must pass the higher of them.
    b.op_at(0, testkit::send_kind("d", Some((0, 1))), Outcome::Ok, false, 14, 15);
    assert_eq!(b.check().counts[&NonmonotonicSend], 1);
}

#[test]
fn nonmonotonic_poll_in_one_session() {
    let mut b = Builder::default();
    for (i, v) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        b.sent(0, v, 0, i as i64);
    }
    b.poll(1, &[(0, 0, "a"), (0, 1, "b"), (0, 2, "c")]);
    let again = b.poll(1, &[(0, 1, "b"), (0, 2, "c"), (0, 3, "d")]);
    let r = b.check();
    assert_eq!(kinds(&r), vec![Unseen, NonmonotonicPoll], "{r}");
    let nm = r.of_kind(NonmonotonicPoll).next().unwrap();
    assert_eq!(nm.offsets, vec![2, 1]);
    assert!(nm.ops.contains(&again));
}

#[test]
fn assign_crash_and_other_sessions_reset_poll_order() {
    let mut b = Builder::default();
    for (i, v) in ["a", "b", "c", "d"].into_iter().enumerate() {
        b.sent(0, v, 0, i as i64);
    }
    b.poll(1, &[(0, 0, "a"), (0, 1, "b")]);
    b.assign(1, &[0]);
    b.poll(1, &[(0, 0, "a")]); // seek back after assign
    b.poll(1, &[(0, 1, "b")]);
    b.op(1, OpKind::Crash, info(), false);
    b.poll(1, &[(0, 3, "d")]); // skip after crash
    b.poll(2, &[(0, 2, "c"), (0, 3, "d")]);
    b.poll(3, &[(0, 0, "a")]); // another session starts anywhere
    b.assign(4, &[0]);
    b.poll(4, &[(0, 1, "b")]);
    b.assign(4, &[0]);
    b.poll(4, &[(0, 3, "d")]); // skip across an assign
    let r = b.check();
    assert!(r.valid && r.anomalies.is_empty(), "{r}");
}

#[test]
fn failed_assign_keeps_position() {
    let mut b = Builder::default();
    b.sent(0, "a", 0, 0);
    b.sent(0, "b", 0, 1);
    b.poll(1, &[(0, 0, "a"), (0, 1, "b")]);
    b.op(1, OpKind::Assign { partitions: vec![testkit::part(0)] }, fail(), false);
    b.poll(1, &[(0, 0, "a")]);
    assert_eq!(b.check().counts[&NonmonotonicPoll], 1);
}

#[test]
fn int_nonmonotonic_poll_within_one_poll() {
    let mut b = written();
    let poll = b.poll(10, &[(0, 0, "a"), (0, 1, "b"), (1, 0, "x"), (0, 1, "b"), (0, 2, "c")]);
    let r = b.check();
    assert_eq!(kinds(&r), vec![IntNonmonotonicPoll], "{r}");
    let a = r.of_kind(IntNonmonotonicPoll).next().unwrap();
    assert_eq!((a.offsets.clone(), a.ops.clone()), (vec![1, 1], vec![poll]));
}

#[test]
fn poll_skip_over_known_offsets_only() {
    // Jepsen's example: process 0 reads 1 2, then 4, then 7; 3 and 6 are
    // known from another reader and a send, 5 is a hole nobody saw.
    let mut b = Builder::default();
    for v in ["a", "b", "c", "d", "g"] {
        b.send(9, v, None, info());
    }
    let p12 = b.poll(0, &[(0, 1, "a"), (0, 2, "b")]);
    b.poll(1, &[(0, 3, "c")]);
    let p4 = b.poll(0, &[(0, 4, "d")]);
    b.sent(2, "f", 0, 6);
    let p7 = b.poll(0, &[(0, 7, "g")]);
    let r = b.check();
    let skips: Vec<_> = r.of_kind(PollSkip).collect();
    assert_eq!(skips.len(), 2, "{r}");
    assert_eq!(skips[0].ops, vec![p12, p4]);
    assert_eq!(skips[0].offsets, vec![2, 4]);
    assert_eq!(skips[1].ops, vec![p4, p7]);
    assert!(skips[1].explanation.contains("1 known record(s) at [6]"));
    // f sits below the 7 process 0 read, and nobody read it.
    assert_eq!(kinds(&r), vec![LostWrite, PollSkip]);
}

#[test]
fn int_poll_skip_within_one_poll() {
    let mut b = written();
    b.poll(10, &[(0, 0, "a"), (0, 2, "c"), (1, 0, "x")]);
    let r = b.check();
    assert_eq!(kinds(&r), vec![LostWrite, IntPollSkip], "{r}");

    // A hole no one saw filled is not a skip.
    let mut b = Builder::default();
    b.sent(0, "a", 0, 0);
    b.sent(0, "c", 0, 2);
    b.poll(10, &[(0, 0, "a"), (0, 2, "c")]);
    // Only the log model objects: Faultline's offsets are dense, so an
    // acknowledged append at 2 after one at 0 needs something at 1.
    assert_eq!(b.check().anomalies.iter().map(|a| a.kind).collect::<Vec<_>>(), vec![NonLinearizable]);
}

#[test]
fn names_round_trip() {
    for k in AnomalyKind::ALL {
        assert_eq!(k.as_str().parse::<AnomalyKind>(), Ok(k));
        assert_eq!(k.to_string(), k.as_str());
    }
    let names: Vec<String> = ["lost-write", "G1a", "poll-skip"].map(String::from).to_vec();
    let opts = CheckOptions::from_names(&names).unwrap();
    assert_eq!(opts.invalid_on.into_iter().collect::<Vec<_>>(), vec![LostWrite, G1a, PollSkip]);
}

#[test]
fn bad_names_get_clear_errors() {
    let err = CheckOptions::from_names(&["lost-writes".to_string()]).unwrap_err().to_string();
    assert!(err.contains("unknown checker \"lost-writes\"") && err.contains("lost-write,"), "{err}");
    let err = CheckOptions::from_names(&["int-nonmonotonic-send".to_string()]).unwrap_err().to_string();
    assert!(err.contains("does not apply") && err.contains("one record"), "{err}");
    let err = "G1c".parse::<AnomalyKind>().unwrap_err().to_string();
    assert!(err.contains("transactions"), "{err}");
    assert!(CheckOptions::from_names(&[]).is_err());
}

#[test]
fn options_decide_validity() {
    let mut b = Builder::default();
    b.send(0, "a", None, fail());
    b.poll(1, &[(0, 0, "a")]);
    let only_lost = CheckOptions::from_names(&["lost-write".to_string()]).unwrap();
    let r = check(&b.history, &only_lost);
    assert!(r.valid);
    assert_eq!(r.counts[&G1a], 1);
    assert!(r.to_string().contains("G1a (informational)"));
}

#[test]
fn summary_shows_examples_with_their_ops() {
    let mut b = written();
    b.poll(10, &[(0, 2, "c")]);
    let r = b.check();
    let text = r.to_string();
    assert!(text.starts_with("INVALID: lost-write 2"), "{text}");
    assert!(text.contains("send \"a\" -> t-0@0 => ok"), "{text}");
    assert!(text.contains("poll [t-0@2=\"c\"] => ok"), "{text}");

    // Many anomalies of a kind print a few and a count.
    let mut b = Builder::default();
    for i in 0..20 {
        b.sent(0, &format!("v{i}"), 0, i);
    }
    b.poll(1, &[(0, 20, "late")]);
    b.sent(0, "late", 0, 20);
    let text = b.check().to_string();
    assert!(text.contains("… and 15 more"), "{text}");
}

#[test]
fn report_serialises_with_jepsen_names() {
    let mut b = Builder::default();
    b.send(0, "a", None, fail());
    b.poll(1, &[(0, 0, "a")]);
    let json = serde_json::to_value(b.check()).unwrap();
    assert_eq!(json["valid"], false);
    assert_eq!(json["counts"]["G1a"], 1);
    assert_eq!(json["anomalies"][0]["kind"], "G1a");
    assert_eq!(json["invalid_kinds"][0], "G1a");
}

#[test]
fn odd_input_does_not_panic() {
    let mut b = Builder::default();
    b.sent(0, "a", 0, -5);
    b.sent(0, "a", 0, i64::MAX);
    b.send(0, "a", Some((0, i64::MIN)), fail());
    b.poll(1, &[(0, i64::MAX, "a"), (0, i64::MIN, "q"), (0, i64::MAX, "a")]);
    b.final_poll(1, &[(0, i64::MIN, "q"), (0, i64::MAX, "a")]);
    b.op_at(2, testkit::send_kind("z", Some((0, 3))), Outcome::Ok, false, 50, 1);
    let r = b.check();
    assert!(!r.valid);
    let _ = r.to_string();
}

#[test]
fn final_read_must_return_the_start_of_a_partition() {
    // a was read once; the final read seeks to the beginning yet starts
    // past it.
    let mut b = Builder::default();
    b.sent(0, "a", 0, 0);
    b.sent(0, "b", 0, 1);
    b.poll(1, &[(0, 0, "a")]);
    b.final_poll(2, &[(0, 1, "b")]);
    let r = b.check();
    assert_eq!(kinds(&r), vec![LostWrite], "{r}");
    assert_eq!(r.of_kind(LostWrite).next().unwrap().offsets, vec![0, 1]);
}

#[test]
fn reads_of_what_was_never_appended_are_not_linearizable_either() {
    let mut b = Builder::default();
    b.send(0, "a", None, fail());
    b.poll(1, &[(0, 0, "a")]);
    let r = b.check();
    assert_eq!(r.counts[&NonLinearizable], 1, "{r}");
    let a = r.of_kind(NonLinearizable).next().unwrap();
    assert!(a.explanation.contains("cannot be placed"), "{}", a.explanation);
    assert!(r.to_string().contains("linearizability: not linearizable"), "{r}");
}

#[test]
fn a_correct_history_is_linearizable() {
    let mut b = Builder::default();
    b.sent(0, "a", 0, 0);
    b.sent(0, "b", 0, 1);
    b.poll(1, &[(0, 0, "a"), (0, 1, "b")]);
    let r = b.check();
    assert_eq!(r.counts[&NonLinearizable], 0, "{r}");
    assert_eq!(r.linearizability.verdict, crate::linearizability::Verdict::Linearizable);
}

#[test]
fn concurrent_sends_land_in_call_order() {
    let mut b = Builder::default();
    // Invoked at 1 and 2, both in flight: the later call landed first.
    let first = b.op_at(0, testkit::send_kind("a", Some((0, 1))), Outcome::Ok, false, 1, 10);
    let second = b.op_at(0, testkit::send_kind("b", Some((0, 0))), Outcome::Ok, false, 2, 11);
    // Invoked at the same instant: no known call order.
    b.op_at(0, testkit::send_kind("c", Some((0, 3))), Outcome::Ok, false, 12, 20);
    b.op_at(0, testkit::send_kind("d", Some((0, 2))), Outcome::Ok, false, 12, 21);
    // Another session and another partition owe nothing.
    b.op_at(1, testkit::send_kind("e", Some((0, 4))), Outcome::Ok, false, 1, 5);
    b.op_at(0, testkit::send_kind("f", Some((1, 0))), Outcome::Ok, false, 3, 30);
    let r = b.check();
    let re: Vec<_> = r.of_kind(ReorderedSend).collect();
    assert_eq!(re.len(), 1, "{r}");
    assert_eq!(re[0].ops, vec![first, second]);
    assert_eq!(re[0].offsets, vec![1, 0]);
    assert_eq!(r.counts[&NonmonotonicSend], 0, "{r}");
}
