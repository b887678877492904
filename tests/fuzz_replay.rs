//! The fuzz targets in `fuzz/`, run in `cargo test` without libFuzzer: every
//! committed corpus input (the seeds, and every input a long fuzz run found
//! to crash, kept under `fuzz/regressions/`), then a fixed number of
//! deterministic mutations of each seed — bit flips, byte changes,
//! insertions, cuts and splices — through the same entry points
//! (`faultline_broker::fuzz_targets`). A panic fails the test with the input
//! in hex; an abort fails the whole run.

use std::path::{Path, PathBuf};

use faultline_broker::fuzz_targets;

const TARGETS: [&str; 4] = ["request", "record_batch", "recovery", "metadata"];
/// Mutations per seed per target: about 15,000 inputs in all, a few seconds.
const MUTATIONS: usize = 500;

fn run(target: &str, input: &[u8]) {
    match target {
        "request" => fuzz_targets::request(input),
        "record_batch" => fuzz_targets::record_batch(input),
        "recovery" => fuzz_targets::recovery(input),
        "metadata" => fuzz_targets::metadata(input),
        other => panic!("unknown target {other}"),
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    out.sort();
    out
}

/// xorshift64*: a fixed stream, so every run tries the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = [0, 0xff, 0x7f, 0x80, 1][rng.below(5)];
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let n = 1 + rng.below(8);
                let byte = rng.next() as u8;
                v.splice(i..i, std::iter::repeat_n(byte, n));
            }
            3 if v.len() > 1 => v.truncate(1 + rng.below(v.len() - 1)),
            4 if !other.is_empty() => {
                let i = rng.below(v.len() + 1);
                let j = rng.below(other.len());
                v.truncate(i);
                v.extend_from_slice(&other[j..]);
            }
            _ if v.len() >= 4 => {
                // A big-endian length or count somewhere set to an extreme.
                let i = rng.below(v.len() - 3);
                let x: i32 = [i32::MAX, i32::MIN, -1, 0x7fff_fff0][rng.below(4)];
                v[i..i + 4].copy_from_slice(&x.to_be_bytes());
            }
            _ => {}
        }
    }
    v
}

fn guarded(target: &str, what: &str, input: &[u8]) {
    let r = std::panic::catch_unwind(|| run(target, input));
    if r.is_err() {
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        panic!("{target} panicked on {what}: {hex}");
    }
}

#[test]
fn corpus_and_regressions_replay_cleanly() {
    let mut total = 0;
    for target in TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(target));
        assert!(!corpus.is_empty(), "no committed seeds for {target}");
        for (name, input) in corpus.iter().chain(&inputs(&fuzz_dir().join("regressions").join(target))) {
            guarded(target, name, input);
            total += 1;
        }
    }
    assert!(total > 0);
}

#[test]
fn mutated_seeds_are_survived() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for target in TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(target));
        for (name, seed) in &corpus {
            for i in 0..MUTATIONS {
                let other = &corpus[rng.below(corpus.len())].1;
                let input = mutate(&mut rng, seed, other);
                guarded(target, &format!("mutation {i} of {name}"), &input);
            }
        }
    }
}

/// Rewrite the committed seeds: `cargo test --test fuzz_replay -- --ignored`.
#[test]
#[ignore]
fn write_seed_corpus() {
    for (target, name, bytes) in fuzz_targets::seed_corpus() {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}
