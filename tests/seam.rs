//! The seam enforces itself: logic above it (everything in `broker/src` and
//! `sim/src` but the two implementations of the seam and the harness code
//! that runs outside any simulation) may not read a clock, draw OS
//! randomness, start threads, touch `std::fs` or tokio's I/O, timers and
//! spawner, or use hashed collections whose iteration order could leak into
//! a run, or `debug_assert!`, which release builds (the simulator's and CI's)
//! compile out. A line that must break the rule says why with a `seam-ok:`
//! comment, which this check honours and a reviewer can read.

use std::path::{Path, PathBuf};

/// What may not appear above the seam, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("Instant::now", "reads the real monotonic clock; use Io::elapsed"),
    ("SystemTime::now", "reads the real wall clock; use Io::now_ms"),
    ("thread_rng", "OS-seeded randomness; use Io::random_u64 or a seeded ChaCha"),
    ("rand::rng(", "OS-seeded randomness; use Io::random_u64 or a seeded ChaCha"),
    ("OsRng", "OS randomness"),
    ("std::thread", "threads break the simulation's single-threaded determinism"),
    ("std::fs", "real files; use the seam's Fs"),
    ("tokio::fs", "real files; use the seam's Fs"),
    ("tokio::net", "real sockets; use Io::listen / Io::connect"),
    ("tokio::time", "tokio's clock and timers; use Io::sleep / Io::elapsed"),
    ("tokio::spawn", "spawns outside the seam; use io::spawn"),
    ("tokio::task::spawn", "spawns outside the seam; use io::spawn"),
    ("spawn_blocking", "runs on real threads; use io::on_disk"),
    ("block_in_place", "a real-runtime primitive; only the real seam may use it"),
    ("HashMap", "iteration order is random per process; use BTreeMap"),
    ("HashSet", "iteration order is random per process; use BTreeSet"),
    ("debug_assert", "compiled out of release builds, which simulated runs use; use invariant! or assert!"),
];

/// Files that implement the seam, or run outside any simulation.
const EXEMPT: &[&str] = &[
    "broker/src/io/real.rs", // the real world's side of the seam
    "sim/src/seam.rs",       // the simulated side (turmoil's clock and tasks)
    "sim/src/sweep.rs",      // many seeds on OS threads, each a whole simulation
    "sim/src/cli.rs",        // writes trace/history files after a run
    "sim/src/scenario.rs",   // reads scenario files before a run
];

#[derive(Debug)]
struct Violation {
    file: PathBuf,
    line: usize,
    pattern: &'static str,
    why: &'static str,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every rule broken under `root`'s `dirs`, but in exempt files and lines.
fn scan(root: &Path, dirs: &[&str], exempt: &[&str]) -> Vec<Violation> {
    let mut files = Vec::new();
    for d in dirs {
        rust_files(&root.join(d), &mut files);
    }
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        if exempt.contains(&rel.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            // tokio picks an unbiased select!'s branch with its own unseeded RNG.
            if line.contains("select! {") && lines.get(i + 1).is_none_or(|next| next.trim() != "biased;") {
                found.push(Violation {
                    file: PathBuf::from(&rel),
                    line: i + 1,
                    pattern: "select!",
                    why: "an unbiased select! draws from tokio's unseeded RNG; start it with `biased;`",
                });
            }
            let code = line.trim_start();
            if code.starts_with("//") || line.contains("seam-ok:") {
                continue;
            }
            // Drop a trailing comment so prose about a rule is not a breach of it.
            let code = code.split(" //").next().unwrap_or(code);
            for &(pattern, why) in FORBIDDEN {
                if code.contains(pattern) {
                    found.push(Violation { file: PathBuf::from(&rel), line: i + 1, pattern, why });
                }
            }
        }
    }
    found
}

#[test]
fn nothing_above_the_seam_touches_the_world() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = scan(root, &["broker/src", "sim/src"], EXEMPT);
    let report: Vec<String> =
        found.iter().map(|v| format!("{}:{}: `{}` — {}", v.file.display(), v.line, v.pattern, v.why)).collect();
    assert!(report.is_empty(), "logic above the seam breaks its rules:\n{}", report.join("\n"));
}

#[test]
fn the_check_catches_a_planted_clock_read() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("broker/src/server");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("handler.rs"),
        "// Instant::now in a comment is fine\nfn deadline() -> std::time::Instant {\n    std::time::Instant::now()\n}\n",
    )
    .unwrap();
    std::fs::write(src.join("ok.rs"), "fn f() { let _ = 1; } // tokio::time in a trailing comment\n").unwrap();
    std::fs::write(src.join("select.rs"), "async fn f() {\n    tokio::select! {\n        _ = a => {}\n    }\n}\n")
        .unwrap();
    let found = scan(dir.path(), &["broker/src"], &[]);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!((found[1].line, found[1].pattern), (2, "select!"));
    assert_eq!((found[0].line, found[0].pattern), (3, "Instant::now"));
    assert_eq!(found[0].file, PathBuf::from("broker/src/server/handler.rs"));
    // Exempted as seam implementations, the files pass.
    let exempt = ["broker/src/server/handler.rs", "broker/src/server/select.rs"];
    assert!(scan(dir.path(), &["broker/src"], &exempt).is_empty());
}
