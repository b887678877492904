//! Logging for simulations: `RUST_LOG` filters as usual, and every line is
//! stamped with simulated time and carries the node it came from (turmoil
//! runs each host inside a `node{name=...}` span).

use std::fmt;

use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Prints simulated time, or `-` outside any simulated host.
struct SimTime;

impl FormatTime for SimTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        match turmoil::sim_elapsed() {
            Some(t) => write!(w, "{:>4}.{:06}s", t.as_secs(), t.subsec_micros()),
            None => write!(w, "{:>12}", "-"),
        }
    }
}

/// Install the subscriber (once per process; later calls do nothing).
/// Without `RUST_LOG` nothing is shown: under fault injection the nodes log
/// errors by design, and the verdict table is what a run reports.
pub fn init() {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "off".into());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("off"));
    // turmoil runs each host inside an info-level `node` span: keep that span
    // whatever level was asked for, so every line names its node.
    let node_span = filter_fn(|m| m.is_span() && m.name() == "node" && m.target().starts_with("turmoil"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer().with_timer(SimTime).with_ansi(ansi).with_writer(std::io::stderr);
    let _ = tracing_subscriber::registry().with(layer.with_filter(filter.or(node_span))).try_init();
}
