//! The run's trace: an ordered log of everything observable that happened
//! (bytes delivered to a node, disk events, faults, client operations), folded
//! into one stable 64-bit hash. Two runs of the same seed must produce the
//! same hash; a differing hash is the first sign of lost determinism, and the
//! text form (`--trace FILE`) shows where the runs part ways.
//!
//! The hash is FNV-1a over each event's text line, written out here so it can
//! never depend on a per-process random state.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::history::{Observed, ObservedEvent};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(FNV_OFFSET, bytes)
}

/// Continue an FNV-1a 64 hash with more bytes.
pub fn fnv1a_extend(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// What kind of thing an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Bytes a node read from a connection.
    Net,
    /// Something the simulated disk did (sync, torn write, injected error).
    Disk,
    /// A fault the nemesis injected or healed.
    Fault,
    /// A client operation completed.
    Op,
    /// A node started, stopped or failed.
    Node,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Net => "net",
            EventKind::Disk => "disk",
            EventKind::Fault => "fault",
            EventKind::Op => "op",
            EventKind::Node => "node",
        }
    }
}

#[derive(Debug)]
struct Inner {
    hash: u64,
    events: u64,
    /// Kept only when the text trace was asked for: long runs produce many
    /// events and most runs only need the hash.
    lines: Option<Vec<String>>,
    line: String,
    /// Panics caught in tasks spawned through the seam, as "node task: message".
    panics: Vec<String>,
    /// What the servers reported through the seam, in order.
    observations: Vec<Observed>,
}

/// Shared handle to the trace; every node and the runner append to it. The
/// simulation is single-threaded, so the mutex is never contended; it exists
/// because the seam must be `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Trace(Arc<Mutex<Inner>>);

impl Trace {
    /// A trace that keeps its text lines when `keep_lines` is set.
    pub fn new(keep_lines: bool) -> Trace {
        Trace(Arc::new(Mutex::new(Inner {
            hash: FNV_OFFSET,
            events: 0,
            lines: keep_lines.then(Vec::new),
            line: String::new(),
            panics: Vec::new(),
            observations: Vec::new(),
        })))
    }

    /// A task spawned on `node` panicked: record it as an event, and keep it
    /// so the run fails with it.
    pub fn record_panic(&self, at_ns: u64, node: &str, task: &str, message: &str) {
        self.record(at_ns, node, EventKind::Node, format_args!("task {task} panicked: {message}"));
        self.0.lock().expect("trace lock").panics.push(format!("{node} {task}: {message}"));
    }

    /// A server reported `event`: record it as an event (so the hash
    /// covers it) and keep it for the quorum checkers.
    pub fn observe(&self, at_ns: u64, host: &str, incarnation: u64, event: ObservedEvent) {
        self.record(at_ns, host, EventKind::Node, format_args!("observe #{incarnation} {event}"));
        let observed = Observed { at_ns, host: host.to_string(), incarnation, event };
        self.0.lock().expect("trace lock").observations.push(observed);
    }

    /// Every observation so far, in the order reported.
    pub fn observations(&self) -> Vec<Observed> {
        self.0.lock().expect("trace lock").observations.clone()
    }

    /// The observations from the `from`-th on.
    pub fn observations_from(&self, from: usize) -> Vec<Observed> {
        let t = self.0.lock().expect("trace lock");
        t.observations.get(from..).map(<[Observed]>::to_vec).unwrap_or_default()
    }

    /// How many observations there are so far.
    pub fn observation_count(&self) -> usize {
        self.0.lock().expect("trace lock").observations.len()
    }

    pub fn has_panicked(&self) -> bool {
        !self.0.lock().expect("trace lock").panics.is_empty()
    }

    /// Every panic caught so far.
    pub fn panics(&self) -> Vec<String> {
        self.0.lock().expect("trace lock").panics.clone()
    }

    /// Append one event at simulated time `at_ns`.
    pub fn record(&self, at_ns: u64, node: &str, kind: EventKind, detail: std::fmt::Arguments<'_>) {
        let mut inner = self.0.lock().expect("trace lock");
        let inner = &mut *inner;
        inner.line.clear();
        let secs = at_ns / 1_000_000_000;
        let frac = at_ns % 1_000_000_000;
        let _ = write!(inner.line, "{secs:>4}.{frac:09} {node} {} {detail}", kind.as_str());
        inner.hash = fnv1a_extend(inner.hash, inner.line.as_bytes());
        inner.hash = fnv1a_extend(inner.hash, b"\n");
        inner.events += 1;
        if let Some(lines) = &mut inner.lines {
            lines.push(inner.line.clone());
        }
    }

    /// The hash of every event so far.
    pub fn hash(&self) -> u64 {
        self.0.lock().expect("trace lock").hash
    }

    /// How many events were recorded.
    pub fn len(&self) -> u64 {
        self.0.lock().expect("trace lock").events
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text lines, if they were kept.
    pub fn lines(&self) -> Option<Vec<String>> {
        self.0.lock().expect("trace lock").lines.clone()
    }

    /// Write the text form: one event per line, then the hash.
    pub fn write_text<W: Write>(&self, mut w: W) -> std::io::Result<()> {
        let inner = self.0.lock().expect("trace lock");
        if let Some(lines) = &inner.lines {
            for l in lines {
                writeln!(w, "{l}")?;
            }
        }
        writeln!(w, "# events {} hash {:016x}", inner.events, inner.hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn hash_depends_on_order_and_content() {
        let a = Trace::new(true);
        a.record(1, "n", EventKind::Net, format_args!("x"));
        a.record(2, "n", EventKind::Net, format_args!("y"));
        let b = Trace::new(false);
        b.record(2, "n", EventKind::Net, format_args!("y"));
        b.record(1, "n", EventKind::Net, format_args!("x"));
        assert_ne!(a.hash(), b.hash());
        let c = Trace::new(false);
        c.record(1, "n", EventKind::Net, format_args!("x"));
        c.record(2, "n", EventKind::Net, format_args!("y"));
        assert_eq!(a.hash(), c.hash());
        assert_eq!(a.lines().unwrap().len(), 2);
        assert!(c.lines().is_none());
    }
}
