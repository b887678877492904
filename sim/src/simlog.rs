//! Logging for simulations: `RUST_LOG` filters as usual, and every line is
//! stamped with simulated time and carries the node it came from (turmoil
//! runs each host inside a `node{name=...}` span).

use std::fmt;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::EnvFilter;

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
/// Without `RUST_LOG`, only errors are shown.
pub fn init() {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into());
    // turmoil's per-host span is at info level; enable it so every line
    // names its node, whatever level the user asked for.
    let filter = EnvFilter::try_new(format!("{spec},turmoil=info")).unwrap_or_else(|_| EnvFilter::new("error,turmoil=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_timer(SimTime).with_writer(std::io::stderr).try_init();
}
