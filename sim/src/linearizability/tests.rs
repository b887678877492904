//! Hand-computed verdicts on small histories, and generated histories that
//! are linearizable by construction.

use proptest::prelude::*;

use super::kafka::LogOp;
use super::models::*;
use super::*;

fn append(id: u64, client: u64, v: &str, offset: i64, call: u64, ret: u64) -> LogOp {
    Operation::ok(id, client, LogInput::Append { value: v.into() }, LogOutput::Offset { offset }, call, ret)
}

fn append_info(id: u64, client: u64, v: &str, call: u64) -> LogOp {
    Operation::info(id, client, LogInput::Append { value: v.into() }, call)
}

fn read(id: u64, client: u64, at: &[(i64, &str)], call: u64, ret: u64) -> LogOp {
    Operation::ok(
        id,
        client,
        LogInput::Read { offsets: at.iter().map(|(o, _)| *o).collect() },
        LogOutput::Values { values: at.iter().map(|(_, v)| v.to_string()).collect() },
        call,
        ret,
    )
}

fn end(id: u64, client: u64, offset: i64, call: u64, ret: u64) -> LogOp {
    Operation::ok(id, client, LogInput::End, LogOutput::End { offset }, call, ret)
}

fn verdict<M: Model>(model: &M, ops: &[Operation<M::Input, M::Output>]) -> Outcome {
    let mut budget = DEFAULT_BUDGET;
    check(model, ops, &mut budget)
}

#[test]
fn sequential_appends_and_reads_are_linearizable() {
    let ops = vec![append(0, 1, "a", 0, 1, 2), append(1, 1, "b", 1, 3, 4), read(2, 2, &[(0, "a"), (1, "b")], 5, 6)];
    assert_eq!(verdict(&LogModel, &ops).verdict, Verdict::Linearizable);
    assert_eq!(verdict(&LogModel, &[]).verdict, Verdict::Linearizable);
}

#[test]
fn concurrent_appends_may_land_in_either_order() {
    // b was called after a but they overlap, and b landed first.
    let ops = vec![append(0, 1, "a", 1, 1, 10), append(1, 2, "b", 0, 2, 5)];
    assert_eq!(verdict(&LogModel, &ops).verdict, Verdict::Linearizable);
}

#[test]
fn an_append_that_completed_before_another_began_comes_first() {
    // a completed at 2, b began at 3, yet b has the lower offset.
    let ops = vec![append(0, 1, "a", 1, 1, 2), append(1, 2, "b", 0, 3, 4)];
    let o = verdict(&LogModel, &ops);
    assert_eq!(o.verdict, Verdict::NotLinearizable);
    // Nothing can go first: b's offset 0 needs it before a, which had
    // returned before b was called.
    assert!(o.prefix.is_empty(), "{o:?}");
    assert_eq!(o.unplaceable, Some(0));
}

#[test]
fn a_stale_end_offset_after_an_acknowledged_append_is_not_linearizable() {
    let ops = vec![
        append(0, 1, "a", 0, 1, 2),
        append(1, 1, "b", 1, 3, 4),
        // Called after b was acknowledged at offset 1, yet says 1.
        end(2, 2, 1, 5, 6),
    ];
    let o = verdict(&LogModel, &ops);
    assert_eq!(o.verdict, Verdict::NotLinearizable);
    assert_eq!(o.prefix, vec![0, 1], "the two appends linearize");
    assert_eq!(o.unplaceable, Some(2), "the end offset query cannot be placed");
    assert!(o.state_after_prefix.as_deref().unwrap().contains("log end offset 2"), "{o:?}");
    // The same answer while b was still in flight is fine.
    let ok = vec![append(0, 1, "a", 0, 1, 2), append(1, 1, "b", 1, 3, 6), end(2, 2, 1, 4, 5)];
    assert_eq!(verdict(&LogModel, &ok).verdict, Verdict::Linearizable);
}

#[test]
fn a_read_cannot_see_a_value_at_an_offset_it_never_had() {
    let ops = vec![append(0, 1, "a", 0, 1, 2), read(1, 2, &[(0, "x")], 3, 4)];
    assert_eq!(verdict(&LogModel, &ops).verdict, Verdict::NotLinearizable);
    // Nor read an offset not yet appended when the read returned.
    let ops = vec![read(0, 2, &[(0, "a")], 1, 2), append(1, 1, "a", 0, 3, 4)];
    assert_eq!(verdict(&LogModel, &ops).verdict, Verdict::NotLinearizable);
}

#[test]
fn info_appends_may_happen_late_or_never() {
    // The info append of a was called first; b landed at 0, so a never
    // happened (or happened after b and nobody looked).
    let never = vec![append_info(0, 1, "a", 1), append(1, 2, "b", 0, 2, 3), end(2, 3, 1, 4, 5)];
    assert_eq!(verdict(&LogModel, &never).verdict, Verdict::Linearizable);
    // It happened long after its call: the end offset saw 1, then 2.
    let late = vec![append_info(0, 1, "a", 1), end(1, 2, 0, 2, 3), end(2, 2, 1, 4, 5), read(3, 3, &[(0, "a")], 6, 7)];
    assert_eq!(verdict(&LogModel, &late).verdict, Verdict::Linearizable);
    // But not before its call.
    let early = vec![end(0, 2, 1, 1, 2), append_info(1, 1, "a", 3)];
    assert_eq!(verdict(&LogModel, &early).verdict, Verdict::NotLinearizable);
    // And at most once: two end offsets of 1 and 2 need two appends.
    let twice = vec![append_info(0, 1, "a", 1), end(1, 2, 1, 2, 3), end(2, 2, 2, 4, 5)];
    assert_eq!(verdict(&LogModel, &twice).verdict, Verdict::NotLinearizable);
}

#[test]
fn the_budget_yields_unknown_deterministically() {
    let ops = bench::generate(400, 8, 7);
    let mut budget = 50;
    let o = check(&LogModel, &ops, &mut budget);
    assert_eq!(o.verdict, Verdict::Unknown);
    assert_eq!(o.steps, 50);
    assert_eq!(budget, 0);
    let mut again = 50;
    assert_eq!(check(&LogModel, &ops, &mut again), o);
}

#[test]
fn objects_are_checked_apart_and_share_the_budget() {
    let mut objects = std::collections::BTreeMap::new();
    objects.insert("p0", vec![append(0, 1, "a", 0, 1, 2)]);
    objects.insert("p1", vec![append(1, 1, "b", 0, 1, 2), end(2, 2, 0, 3, 4)]);
    let out = check_objects(&LogModel, &objects, DEFAULT_BUDGET);
    assert_eq!(out["p0"].verdict, Verdict::Linearizable);
    assert_eq!(out["p1"].verdict, Verdict::NotLinearizable);
    assert_eq!(overall(out.values()), Verdict::NotLinearizable);
    let starved = check_objects(&LogModel, &objects, 1);
    assert_eq!(starved["p1"].verdict, Verdict::Unknown);
}

#[test]
fn register_verdicts() {
    use RegisterInput as I;
    use RegisterOutput as O;
    let w = |id, c, v, call, ret| Operation::ok(id, c, I::Write { value: v }, O::Written, call, ret);
    let r = |id, c, v, call, ret| Operation::ok(id, c, I::Read, O::Value { value: v }, call, ret);
    // Read overlapping the write may see either value.
    let ok = vec![w(0, 1, 1, 1, 2), w(1, 1, 2, 3, 6), r(2, 2, Some(1), 4, 5), r(3, 2, Some(2), 7, 8)];
    assert_eq!(verdict(&RegisterModel, &ok).verdict, Verdict::Linearizable);
    // A read after the write completed must not see the old value.
    let stale = vec![w(0, 1, 1, 1, 2), w(1, 1, 2, 3, 4), r(2, 2, Some(1), 5, 6)];
    assert_eq!(verdict(&RegisterModel, &stale).verdict, Verdict::NotLinearizable);
    // An info write may explain a later read, or not happen.
    let info = vec![Operation::info(0, 1, I::Write { value: 3 }, 1), r(1, 2, None, 2, 3), r(2, 2, Some(3), 4, 5)];
    assert_eq!(verdict(&RegisterModel, &info).verdict, Verdict::Linearizable);
    let cas = vec![
        w(0, 1, 1, 1, 2),
        Operation::ok(1, 2, I::Cas { from: Some(1), to: 5 }, O::Cas { swapped: true }, 3, 4),
        Operation::ok(2, 3, I::Cas { from: Some(1), to: 6 }, O::Cas { swapped: true }, 5, 6),
    ];
    assert_eq!(verdict(&RegisterModel, &cas).verdict, Verdict::NotLinearizable);
}

#[test]
fn topic_set_verdicts() {
    use TopicInput as I;
    use TopicOutput as O;
    let t = |s: &str| s.to_string();
    let create = |id, c, name: &str, created, call, ret| {
        Operation::ok(id, c, I::Create { topic: t(name) }, O::Created { created }, call, ret)
    };
    let list = |id, c, names: &[&str], call, ret| {
        Operation::ok(id, c, I::List, O::Listed { topics: names.iter().map(|n| t(n)).collect() }, call, ret)
    };
    // Two concurrent creates of one topic: exactly one wins.
    let ok = vec![create(0, 1, "a", true, 1, 4), create(1, 2, "a", false, 2, 3), list(2, 3, &["a"], 5, 6)];
    assert_eq!(verdict(&TopicSetModel, &ok).verdict, Verdict::Linearizable);
    let both = vec![create(0, 1, "a", true, 1, 4), create(1, 2, "a", true, 2, 3)];
    assert_eq!(verdict(&TopicSetModel, &both).verdict, Verdict::NotLinearizable);
    // A delete that completed before a list began leaves no trace in it.
    let gone = vec![
        create(0, 1, "a", true, 1, 2),
        Operation::ok(1, 1, I::Delete { topic: t("a") }, O::Deleted { deleted: true }, 3, 4),
        list(2, 2, &["a"], 5, 6),
    ];
    assert_eq!(verdict(&TopicSetModel, &gone).verdict, Verdict::NotLinearizable);
}

#[test]
fn a_long_generated_history_checks_quickly() {
    let ops = bench::generate(5_000, 10, 3);
    let o = verdict(&LogModel, &ops);
    assert_eq!(o.verdict, Verdict::Linearizable);
}

#[test]
fn a_stale_end_offset_in_a_long_history_is_found_with_its_prefix() {
    let mut ops = bench::generate(3_000, 20, 11);
    assert!(bench::plant_stale_end(&mut ops));
    let o = verdict(&LogModel, &ops);
    assert_eq!(o.verdict, Verdict::NotLinearizable);
    let u = o.unplaceable.expect("an unplaceable operation");
    assert!(matches!(ops[u].input, LogInput::End), "{:?}", ops[u]);
    assert!(o.prefix.len() > 1_000, "the prefix reaches the middle: {}", o.prefix.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A history generated from a sequential execution is linearizable.
    #[test]
    fn generated_histories_are_linearizable(n in 1usize..300, clients in 1usize..12, seed in any::<u64>()) {
        for infos in [bench::Infos::Kafka, bench::Infos::Unknown] {
            let ops = bench::generate_with(n, clients, seed, infos);
            let o = verdict(&LogModel, &ops);
            prop_assert_eq!(o.verdict, Verdict::Linearizable, "{:?} {:?}", infos, o);
        }
    }

    /// Moving one acknowledged append's offset breaks it.
    #[test]
    fn a_wrong_offset_is_caught(n in 20usize..200, clients in 1usize..6, seed in any::<u64>(), pick in any::<prop::sample::Index>()) {
        let mut ops = bench::generate(n, clients, seed);
        let appends: Vec<usize> = ops
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o.output, Some(LogOutput::Offset { .. })))
            .map(|(i, _)| i)
            .collect();
        prop_assume!(!appends.is_empty());
        let i = appends[pick.index(appends.len())];
        if let Some(LogOutput::Offset { offset }) = &mut ops[i].output {
            *offset += 1_000_000;
        }
        let o = verdict(&LogModel, &ops);
        prop_assert_eq!(o.verdict, Verdict::NotLinearizable);
        prop_assert!(o.unplaceable.is_some());
    }
}
