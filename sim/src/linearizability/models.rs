//! The sequential models the linearizability search checks against: a
//! partition's log, a register and the topic set. Each keeps an incremental
//! 128-bit fingerprint of its state so a step costs no more than the
//! operation itself.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{hash_bytes, zobrist, Model};

// ---------------------------------------------------------------------------
// The partition log.

/// What one operation does to a partition's log of committed records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum LogInput {
    /// Append one record (a produce acknowledged, with acks=all, once it is
    /// below the high watermark).
    Append { value: String },
    /// Read records at these offsets (a fetch; the values are in the output).
    Read { offsets: Vec<i64> },
    /// Ask for the end offset (ListOffsets latest: the high watermark).
    End,
}

/// What it returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogOutput {
    /// The offset an append landed at.
    Offset { offset: i64 },
    /// The values read, one per requested offset.
    Values { values: Vec<String> },
    /// The end offset.
    End { offset: i64 },
}

/// A log of committed records: appends land at the end, reads of an offset
/// see what is there (and only offsets below the end), the end offset is
/// the log's length.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogModel;

#[derive(Debug, Clone, Default)]
pub struct LogState {
    pub values: Vec<String>,
    hash: u128,
}

/// One (offset, value) pair's share of the log's fingerprint. The pair is
/// mixed non-linearly: with a plain XOR of a value hash and an offset hash,
/// two logs holding the same values in swapped places would collide.
fn log_key(offset: usize, value: &str) -> u128 {
    let v = hash_bytes(value.as_bytes());
    let o = zobrist(offset as u64 ^ 0x4c4f_4700_0000_0000);
    let lo = (v as u64) ^ (o as u64);
    let hi = ((v >> 64) as u64) ^ ((o >> 64) as u64);
    zobrist(lo) ^ zobrist(hi).rotate_left(64)
}

impl Model for LogModel {
    type State = LogState;
    type Input = LogInput;
    type Output = LogOutput;
    /// Whether the step appended (to pop on undo).
    type Undo = bool;

    fn init(&self) -> LogState {
        LogState::default()
    }

    fn step(&self, s: &mut LogState, input: &LogInput, output: Option<&LogOutput>) -> Option<bool> {
        let len = s.values.len() as i64;
        match (input, output) {
            (LogInput::Append { value }, out) => {
                match out {
                    None => {}
                    Some(LogOutput::Offset { offset }) if *offset == len => {}
                    Some(_) => return None,
                }
                s.hash ^= log_key(s.values.len(), value);
                s.values.push(value.clone());
                Some(true)
            }
            (LogInput::Read { offsets }, Some(LogOutput::Values { values })) => {
                let all = offsets.len() == values.len()
                    && offsets.iter().zip(values).all(|(o, v)| {
                        usize::try_from(*o).ok().and_then(|o| s.values.get(o)).is_some_and(|have| have == v)
                    });
                all.then_some(false)
            }
            (LogInput::End, Some(LogOutput::End { offset })) => (*offset == len).then_some(false),
            // Reads and end queries change nothing: unknown ones are free.
            (LogInput::Read { .. } | LogInput::End, None) => Some(false),
            _ => None,
        }
    }

    fn is_pure(&self, input: &LogInput) -> bool {
        !matches!(input, LogInput::Append { .. })
    }

    fn undo(&self, s: &mut LogState, appended: bool) {
        if appended {
            if let Some(v) = s.values.pop() {
                s.hash ^= log_key(s.values.len(), &v);
            }
        }
    }

    fn fingerprint(&self, s: &LogState) -> u128 {
        s.hash ^ zobrist(s.values.len() as u64)
    }

    fn describe(&self, s: &LogState) -> String {
        let tail: Vec<String> =
            s.values.iter().enumerate().rev().take(3).rev().map(|(o, v)| format!("{o}={}", short(v))).collect();
        format!("log end offset {} (last records: {})", s.values.len(), tail.join(", "))
    }
}

/// A value cut to its unique id: the workload pads values after a colon.
pub fn short(v: &str) -> &str {
    v.split(':').next().unwrap_or(v)
}

// ---------------------------------------------------------------------------
// A register (committed group offsets, later).

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum RegisterInput {
    Write {
        value: i64,
    },
    Read,
    /// Compare-and-set: write `to` if the register holds `from`.
    Cas {
        from: Option<i64>,
        to: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RegisterOutput {
    Written,
    Value { value: Option<i64> },
    Cas { swapped: bool },
}

/// A single register, initially empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegisterModel;

impl Model for RegisterModel {
    type State = Option<i64>;
    type Input = RegisterInput;
    type Output = RegisterOutput;
    /// The value before the step.
    type Undo = Option<i64>;

    fn init(&self) -> Option<i64> {
        None
    }

    fn step(&self, s: &mut Option<i64>, input: &RegisterInput, output: Option<&RegisterOutput>) -> Option<Option<i64>> {
        let before = *s;
        match (input, output) {
            (RegisterInput::Write { value }, None | Some(RegisterOutput::Written)) => *s = Some(*value),
            (RegisterInput::Read, None) => {}
            (RegisterInput::Read, Some(RegisterOutput::Value { value })) if value == s => {}
            (RegisterInput::Cas { from, to }, out) => {
                let swaps = from == s;
                let agrees = match out {
                    None => true,
                    Some(RegisterOutput::Cas { swapped }) => *swapped == swaps,
                    Some(_) => false,
                };
                if !agrees {
                    return None;
                }
                if swaps {
                    *s = Some(*to);
                }
            }
            _ => return None,
        }
        Some(before)
    }

    fn is_pure(&self, input: &RegisterInput) -> bool {
        matches!(input, RegisterInput::Read)
    }

    fn undo(&self, s: &mut Option<i64>, before: Option<i64>) {
        *s = before;
    }

    fn fingerprint(&self, s: &Option<i64>) -> u128 {
        match s {
            None => 0,
            Some(v) => zobrist(*v as u64) | 1,
        }
    }

    fn describe(&self, s: &Option<i64>) -> String {
        match s {
            None => "register empty".into(),
            Some(v) => format!("register holds {v}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The topic set.

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum TopicInput {
    Create { topic: String },
    Delete { topic: String },
    List,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TopicOutput {
    /// Created, or refused with TOPIC_ALREADY_EXISTS.
    Created {
        created: bool,
    },
    /// Deleted, or refused with UNKNOWN_TOPIC_OR_PARTITION.
    Deleted {
        deleted: bool,
    },
    Listed {
        topics: Vec<String>,
    },
}

/// The cluster's set of topics.
#[derive(Debug, Clone, Copy, Default)]
pub struct TopicSetModel;

#[derive(Debug, Clone, Default)]
pub struct TopicSet {
    pub topics: BTreeSet<String>,
    hash: u128,
}

/// What to reverse: a topic added or removed.
#[derive(Debug)]
pub enum TopicUndo {
    Nothing,
    Added(String),
    Removed(String),
}

impl Model for TopicSetModel {
    type State = TopicSet;
    type Input = TopicInput;
    type Output = TopicOutput;
    type Undo = TopicUndo;

    fn init(&self) -> TopicSet {
        TopicSet::default()
    }

    fn step(&self, s: &mut TopicSet, input: &TopicInput, output: Option<&TopicOutput>) -> Option<TopicUndo> {
        match (input, output) {
            (TopicInput::Create { topic }, out) => {
                let absent = !s.topics.contains(topic);
                match out {
                    None | Some(TopicOutput::Created { .. }) => {}
                    Some(_) => return None,
                }
                if let Some(TopicOutput::Created { created }) = out {
                    if *created != absent {
                        return None;
                    }
                }
                if absent {
                    s.hash ^= hash_bytes(topic.as_bytes());
                    s.topics.insert(topic.clone());
                    Some(TopicUndo::Added(topic.clone()))
                } else {
                    Some(TopicUndo::Nothing)
                }
            }
            (TopicInput::Delete { topic }, out) => {
                let present = s.topics.contains(topic);
                match out {
                    None => {}
                    Some(TopicOutput::Deleted { deleted }) if *deleted == present => {}
                    Some(_) => return None,
                }
                if present {
                    s.hash ^= hash_bytes(topic.as_bytes());
                    s.topics.remove(topic);
                    Some(TopicUndo::Removed(topic.clone()))
                } else {
                    Some(TopicUndo::Nothing)
                }
            }
            (TopicInput::List, None) => Some(TopicUndo::Nothing),
            (TopicInput::List, Some(TopicOutput::Listed { topics })) => {
                let same = topics.len() == s.topics.len() && topics.iter().all(|t| s.topics.contains(t));
                same.then_some(TopicUndo::Nothing)
            }
            _ => None,
        }
    }

    fn is_pure(&self, input: &TopicInput) -> bool {
        matches!(input, TopicInput::List)
    }

    fn undo(&self, s: &mut TopicSet, undo: TopicUndo) {
        match undo {
            TopicUndo::Nothing => {}
            TopicUndo::Added(t) => {
                s.hash ^= hash_bytes(t.as_bytes());
                s.topics.remove(&t);
            }
            TopicUndo::Removed(t) => {
                s.hash ^= hash_bytes(t.as_bytes());
                s.topics.insert(t);
            }
        }
    }

    fn fingerprint(&self, s: &TopicSet) -> u128 {
        s.hash
    }

    fn describe(&self, s: &TopicSet) -> String {
        format!("topics {{{}}}", s.topics.iter().cloned().collect::<Vec<_>>().join(", "))
    }
}
