//! Linearizability checking: does some total order of a history's
//! operations, each placed between its call and its return, satisfy a
//! sequential model? The search is Wing and Gong's, with Lowe's
//! just-in-time linearization and memoization — the algorithm behind
//! Knossos and Porcupine — written over our own history format.
//!
//! - **P-compositionality**: a history over independent objects (a Kafka
//!   topic-partition is one) is linearizable iff each object's
//!   sub-history is, so [`check_objects`] checks each alone. The search is
//!   exponential in concurrency, not in history length, only because of
//!   this split and the memo below.
//! - **Memoization**: a (set of linearized operations, model state) pair
//!   already explored is never explored again. Both halves are kept as
//!   128-bit fingerprints updated as operations are placed and undone
//!   (Zobrist hashing of the set, the model's own incremental hash of its
//!   state), so a memo entry costs 16 bytes whatever the history's length.
//!   Two different pairs with one fingerprint would prune a branch wrongly;
//!   at 2^-128 per pair that is not a practical concern.
//! - **`info` operations** (timed out: they may or may not have happened)
//!   carry no output. They may be linearized anywhere after their call, or
//!   never: the search succeeds once every operation with a known outcome is
//!   placed.
//! - **Reads first**: an operation that cannot change the state is placed
//!   as soon as it fits and never backtracked over as a choice (placing it
//!   then loses nothing), so concurrent reads do not multiply the search.
//! - **Budget**: the search counts steps (one candidate operation tried, or
//!   one backtrack) against a budget per history and answers
//!   [`Verdict::Unknown`] when it is spent. Steps, not wall time, so the same
//!   history always gets the same verdict on any machine.
//! - **Diagnosis**: a history that is not linearizable comes back with the
//!   longest sequence of operations the search managed to linearize and the
//!   operation whose return it could not get past: the one that cannot be
//!   placed.
//!
//! The models ([`models`]) are a partition's log, a register and the topic
//! set. What of Kafka each is meant to capture, and which Kafka guarantees
//! are linearizable at all, is in [`kafka`].

pub mod bench;
pub mod export;
pub mod kafka;
pub mod models;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use serde::Serialize;

/// The default step budget for one history (all its objects together).
pub const DEFAULT_BUDGET: u64 = 20_000_000;

/// A sequential specification the search replays candidate orders against.
///
/// The state is changed in place and changed back on backtracking, so a
/// model with a large state (a partition's log) costs O(1) per step rather
/// than a copy.
pub trait Model {
    type State;
    type Input: Debug + Clone;
    type Output: Debug + Clone + PartialEq;
    /// What [`Model::undo`] needs to reverse one [`Model::step`].
    type Undo;

    fn init(&self) -> Self::State;

    /// Apply `input` to `state` if the model allows it with `output` (any
    /// output when `None`: an `info` operation), returning how to undo it;
    /// `None` leaves `state` unchanged.
    fn step(&self, state: &mut Self::State, input: &Self::Input, output: Option<&Self::Output>) -> Option<Self::Undo>;

    fn undo(&self, state: &mut Self::State, undo: Self::Undo);

    /// Whether `input` never changes the state (a read). The search places
    /// such an operation as soon as it fits and never tries it elsewhere.
    fn is_pure(&self, _input: &Self::Input) -> bool {
        false
    }

    /// A 128-bit fingerprint of the state, equal for equal states.
    fn fingerprint(&self, state: &Self::State) -> u128;

    /// The state in words, for reports.
    fn describe(&self, state: &Self::State) -> String;
}

/// One operation of one object's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operation<I, O> {
    /// The operation's index in the history it came from.
    pub id: u64,
    /// The client (Jepsen's process) that issued it.
    pub client: u64,
    pub input: I,
    /// `None` for an `info` operation: it may or may not have happened.
    pub output: Option<O>,
    /// Call and return times; an `info` operation's return is [`NEVER`].
    pub call: u64,
    pub ret: u64,
}

/// An operation on `M`.
pub type OperationOf<M> = Operation<<M as Model>::Input, <M as Model>::Output>;

/// The return time of an operation that never returned.
pub const NEVER: u64 = u64::MAX;

impl<I, O> Operation<I, O> {
    pub fn ok(id: u64, client: u64, input: I, output: O, call: u64, ret: u64) -> Self {
        Operation { id, client, input, output: Some(output), call, ret }
    }

    pub fn info(id: u64, client: u64, input: I, call: u64) -> Self {
        Operation { id, client, input, output: None, call, ret: NEVER }
    }

    pub fn is_info(&self) -> bool {
        self.output.is_none()
    }
}

/// What the search concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Linearizable,
    /// The step budget ran out first.
    Unknown,
    NotLinearizable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Linearizable => "linearizable",
            Verdict::Unknown => "unknown",
            Verdict::NotLinearizable => "not linearizable",
        }
    }
}

/// The result of checking one object's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub verdict: Verdict,
    /// Steps the search took.
    pub steps: u64,
    /// Operations in the history.
    pub ops: usize,
    /// When not linearizable: the longest linearizable prefix found, as
    /// positions in the operation list, in linearization order.
    pub prefix: Vec<usize>,
    /// When not linearizable: the operation whose return the longest prefix
    /// could not get past.
    pub unplaceable: Option<usize>,
    /// The model's state after the longest prefix, in words.
    pub state_after_prefix: Option<String>,
}

/// Check one object's history against `model`, spending at most `*budget`
/// steps (what is left is written back).
pub fn check<M: Model>(model: &M, ops: &[Operation<M::Input, M::Output>], budget: &mut u64) -> Outcome {
    let n = ops.len();
    // Entries: 0 is the head sentinel; 1 + 2i is op i's call, 2 + 2i its return.
    let call_of = |i: usize| 1 + 2 * i;
    let ret_of = |i: usize| 2 + 2 * i;
    let op_of = |e: usize| (e - 1) / 2;
    let is_call = |e: usize| e % 2 == 1;
    const NIL: usize = usize::MAX;

    let mut order: Vec<usize> = (0..n).flat_map(|i| [call_of(i), ret_of(i)]).collect();
    // Calls before returns at one instant: operations that touch are taken
    // as concurrent, the lenient reading. Known returns at NEVER (an op
    // proven to have happened whose return is unknown) before info ones.
    order.sort_by_key(|&e| {
        let op = &ops[op_of(e)];
        if is_call(e) {
            (op.call, 0u8, e)
        } else {
            (op.ret, if op.is_info() { 2 } else { 1 }, e)
        }
    });
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut last = 0;
    for &e in &order {
        next[last] = e;
        prev[e] = last;
        last = e;
    }

    let keys: Vec<u128> = (0..n).map(|i| zobrist(ops[i].id ^ ((i as u64) << 40))).collect();
    let mut state = model.init();
    let mut set_hash: u128 = 0;
    let mut memo: BTreeSet<u128> = BTreeSet::new();
    // (op, how to undo it, whether it was a forced read-only placement)
    let mut stack: Vec<(usize, M::Undo, bool)> = Vec::new();
    let mut remaining = ops.iter().filter(|o| !o.is_info()).count();
    let mut steps = 0u64;
    // The longest linearization seen: `best`, of which the current stack
    // shares its first `shared` entries.
    let mut best: Vec<usize> = Vec::new();
    let mut shared = 0usize;
    let mut unplaceable: Option<usize> = None;

    let mut entry = next[0];
    // At the start of each level the search first looks for a read-only
    // operation it can place: placing one now loses nothing (the state is
    // unchanged and its call has happened, so any order placing it later
    // can place it here), so it is never backtracked over as a choice. This
    // keeps many concurrent reads from multiplying the search.
    let mut fresh = true;
    let verdict = 'search: loop {
        if remaining == 0 {
            break Verdict::Linearizable;
        }
        if steps >= *budget {
            break Verdict::Unknown;
        }
        let mut place: Option<(usize, M::Undo, bool)> = None;
        let mut failed_at = None;
        if fresh {
            fresh = false;
            let mut e = next[0];
            let mut seen = false;
            while e != NIL && (is_call(e) || ops[op_of(e)].is_info()) {
                let i = op_of(e);
                if is_call(e) && model.is_pure(&ops[i].input) {
                    if steps >= *budget {
                        break 'search Verdict::Unknown;
                    }
                    steps += 1;
                    if let Some(undo) = model.step(&mut state, &ops[i].input, ops[i].output.as_ref()) {
                        if memo.insert(mix(set_hash ^ keys[i], model.fingerprint(&state))) {
                            place = Some((i, undo, true));
                        } else {
                            // Explored before and failed: so does this level.
                            model.undo(&mut state, undo);
                            seen = true;
                        }
                        break;
                    }
                }
                e = next[e];
            }
            if place.is_none() && !seen {
                entry = next[0];
                continue;
            }
        } else if entry != NIL && is_call(entry) {
            steps += 1;
            let i = op_of(entry);
            let op = &ops[i];
            if model.is_pure(&op.input) {
                // Tried at the start of this level, in this very state.
                entry = next[entry];
                continue;
            }
            match model.step(&mut state, &op.input, op.output.as_ref()) {
                Some(undo) if memo.insert(mix(set_hash ^ keys[i], model.fingerprint(&state))) => {
                    place = Some((i, undo, false));
                }
                Some(undo) => {
                    model.undo(&mut state, undo);
                    entry = next[entry];
                    continue;
                }
                None => {
                    entry = next[entry];
                    continue;
                }
            }
        } else if entry != NIL && ops[op_of(entry)].is_info() {
            // An info op need not have happened: its return forces nothing.
            entry = next[entry];
            continue;
        } else {
            // A return reached (or the list's end): the op it ends cannot
            // be placed after the current prefix.
            steps += 1;
            failed_at = (entry != NIL).then(|| op_of(entry));
        }

        if let Some((i, undo, forced)) = place {
            set_hash ^= keys[i];
            stack.push((i, undo, forced));
            if !ops[i].is_info() {
                remaining -= 1;
            }
            // Lift the call and its return out of the list.
            let (c, r) = (call_of(i), ret_of(i));
            next[prev[c]] = next[c];
            if next[c] != NIL {
                prev[next[c]] = prev[c];
            }
            next[prev[r]] = next[r];
            if next[r] != NIL {
                prev[next[r]] = prev[r];
            }
            if stack.len() > best.len() {
                best.truncate(shared);
                best.extend(stack[shared..].iter().map(|(i, _, _)| *i));
                shared = stack.len();
                unplaceable = None;
            } else if shared + 1 == stack.len() && best.get(shared) == Some(&i) {
                shared += 1;
            }
            fresh = true;
            entry = next[0];
            continue;
        }

        // This level failed: backtrack to the last choice.
        if stack.len() == best.len() && shared == best.len() && unplaceable.is_none() {
            unplaceable = failed_at;
        }
        loop {
            let Some((i, undo, forced)) = stack.pop() else { break 'search Verdict::NotLinearizable };
            shared = shared.min(stack.len());
            model.undo(&mut state, undo);
            set_hash ^= keys[i];
            if !ops[i].is_info() {
                remaining += 1;
            }
            // Put the call and its return back, in the reverse order of lifting.
            let (c, r) = (call_of(i), ret_of(i));
            next[prev[r]] = r;
            if next[r] != NIL {
                prev[next[r]] = r;
            }
            next[prev[c]] = c;
            if next[c] != NIL {
                prev[next[c]] = c;
            }
            if !forced {
                entry = next[c];
                break;
            }
        }
    };
    *budget -= steps.min(*budget);

    let mut out = Outcome { verdict, steps, ops: n, prefix: Vec::new(), unplaceable: None, state_after_prefix: None };
    if verdict == Verdict::NotLinearizable {
        let mut s = model.init();
        for &i in &best {
            let applied = model.step(&mut s, &ops[i].input, ops[i].output.as_ref());
            assert!(applied.is_some(), "the longest prefix replays");
        }
        out.state_after_prefix = Some(model.describe(&s));
        out.prefix = best;
        out.unplaceable = unplaceable;
    }
    out
}

/// Check each object's history alone (P-compositionality), in key order,
/// sharing one step budget: objects checked after it runs out are
/// [`Verdict::Unknown`].
pub fn check_objects<K: Ord + Clone, M: Model>(
    model: &M,
    objects: &BTreeMap<K, Vec<OperationOf<M>>>,
    budget: u64,
) -> BTreeMap<K, Outcome> {
    let mut left = budget;
    objects.iter().map(|(k, ops)| (k.clone(), check(model, ops, &mut left))).collect()
}

/// The verdict over several objects: not linearizable if any is not,
/// unknown if any is unknown, else linearizable.
pub fn overall<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> Verdict {
    outcomes.into_iter().map(|o| o.verdict).max().unwrap_or(Verdict::Linearizable)
}

/// SplitMix64, twice: a fixed 128-bit key per position, the same in every
/// run.
pub fn zobrist(x: u64) -> u128 {
    let a = splitmix(x);
    let b = splitmix(a ^ 0x9e37_79b9_7f4a_7c15);
    (u128::from(a) << 64) | u128::from(b)
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Combine the set's and the state's fingerprints asymmetrically, so that
/// one cannot cancel the other.
fn mix(set: u128, state: u128) -> u128 {
    set ^ state.rotate_left(64).wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15)
}

/// A 128-bit hash of bytes, for model fingerprints and value digests: two
/// multiply-rotate lanes over 8-byte words (values can be kilobytes, and
/// every read of one is hashed), finished with SplitMix. Not meant to
/// resist an adversary, only to tell a run's values apart.
pub fn hash_bytes(bytes: &[u8]) -> u128 {
    let mut a = 0x243f_6a88_85a3_08d3u64 ^ bytes.len() as u64;
    let mut b = 0x1319_8a2e_0370_7344u64;
    let mut lane = |x: u64| {
        a = (a ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
        b = (b ^ x.rotate_left(32)).wrapping_mul(0xbf58_476d_1ce4_e5b9).rotate_left(31);
    };
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        lane(u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    lane(u64::from_le_bytes(tail));
    (u128::from(splitmix(a ^ b.rotate_left(17))) << 64) | u128::from(splitmix(b ^ a))
}
