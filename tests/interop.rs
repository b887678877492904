//! Real Kafka clients against `faultline serve`, on the `faultline` binary
//! cargo built for this test run (see tests/interop/README.md):
//!
//! - `tests/interop/run.py`: kcat (librdkafka) and kafka-python produce,
//!   consume, cross-read each other's topics, and check that acknowledged
//!   records survive SIGKILL and restart;
//! - `tests/interop/groups.py`: consumer groups — two confluent-kafka members
//!   share a 6-partition topic through a rebalance and a leave, a restarted
//!   consumer resumes at the committed offsets, commits survive SIGKILL, and
//!   kcat -G, kafka-python, aiokafka and kafkajs each consume through a group
//!   and commit;
//! - `tests/interop/replication.py`: `faultline cluster --nodes 3`, topics of
//!   replication factor 3 with min.insync.replicas=2; kcat streams acks=all
//!   records while the leader of a partition is SIGKILLed, and every
//!   acknowledged record is read back from the survivors at its offset, in
//!   order, with no gap; then two confluent-kafka idempotent producers stream
//!   across another leader's SIGKILL and every value is read back exactly once.
//!
//! When a client tool is missing, a test prints a SKIPPED line and passes,
//! unless `FAULTLINE_REQUIRE_INTEROP=1` (set by `.ci/run`), which turns a
//! missing tool into a failure. `FAULTLINE_PYTHON` picks the interpreter
//! (default `python3`). The scripts run one at a time.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `run.py`'s exit status when a client tool is missing.
const EXIT_MISSING_TOOLS: i32 = 77;
/// A backstop only: every step inside run.py has its own bound.
const OVERALL_LIMIT: Duration = Duration::from_secs(25 * 60);

/// Written straight to the process's stderr, past the test harness's output
/// capture, so a skip is visible in every `cargo test` log.
fn loud(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "\n{}\n{msg}\n{}\n", "=".repeat(78), "=".repeat(78));
}

fn required() -> bool {
    std::env::var("FAULTLINE_REQUIRE_INTEROP").map(|v| v == "1").unwrap_or(false)
}

fn skip_or_fail(script: &str, why: &str) {
    if required() {
        panic!("interop tools missing and FAULTLINE_REQUIRE_INTEROP=1: {why}");
    }
    loud(&format!(
        "SKIPPED: interop test {script} (real Kafka clients against `faultline serve`) did not run: {why}\n\
         Install the clients with `apt-get install -y kcat nodejs npm && python3 -m pip install -r tests/interop/requirements.txt\n\
         && npm ci --prefix tests/interop`, or run .ci/run. Set FAULTLINE_REQUIRE_INTEROP=1 to make this a failure."
    ));
}

/// One broker (or cluster) and its clients at a time: the scripts are heavy on a small machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn real_kafka_clients_interoperate() {
    run_script("run.py");
}

#[test]
fn real_kafka_clients_use_consumer_groups() {
    run_script("groups.py");
}

#[test]
fn real_kafka_clients_survive_a_leader_sigkill_in_a_three_node_cluster() {
    run_script("replication.py");
}

fn run_script(name: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let python = std::env::var("FAULTLINE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop").join(name);
    let faultline = env!("CARGO_BIN_EXE_faultline");

    let probe = match Command::new(&python).arg(&script).arg("--check-tools").stdin(Stdio::null()).output() {
        Ok(out) => out,
        Err(e) => return skip_or_fail(name, &format!("cannot run `{python}`: {e}")),
    };
    let probe_text = String::from_utf8_lossy(&probe.stdout).trim().to_string();
    match probe.status.code() {
        Some(0) => {}
        Some(EXIT_MISSING_TOOLS) => return skip_or_fail(name, &probe_text),
        _ => panic!(
            "`{python} {} --check-tools` failed ({}):\n{probe_text}\n{}",
            script.display(),
            probe.status,
            String::from_utf8_lossy(&probe.stderr)
        ),
    }

    // The script's output goes straight to this process's stdout/stderr (not
    // through the test harness's capture) so its progress and counts show in
    // every log, and a failure's diagnosis is never swallowed.
    let mut child = Command::new(&python)
        .arg(&script)
        .arg("--faultline")
        .arg(faultline)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{python} {}`: {e}", script.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for run.py") {
            break status;
        }
        if started.elapsed() > OVERALL_LIMIT {
            // SIGTERM lets run.py stop its broker; SIGKILL if it does not exit.
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            std::thread::sleep(Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
            panic!("interop run of {name} did not finish within {OVERALL_LIMIT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    match status.code() {
        Some(0) => {}
        Some(EXIT_MISSING_TOOLS) => skip_or_fail(name, "the script found a tool missing (see its output above)"),
        _ => panic!("interop run of {name} failed ({status}); the diagnosis is in the `interop` lines above"),
    }
}
