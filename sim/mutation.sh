#!/usr/bin/env bash
# Mutation score of the simulator: cargo-mutants mutates the broker's
# storage, server and client code and runs a short sweep of every built-in
# scenario against each mutant (sim/tests/mutation_sweep.rs). A mutant the
# sweep does not catch survives. See sim/MUTATION.md for the figures.
#
#   sim/mutation.sh                      # the sample recorded in MUTATION.md
#   sim/mutation.sh --shard 3/40         # another sample
#   MUTATION_SEEDS=30 sim/mutation.sh    # a deeper sweep per mutant
#
# Needs cargo-mutants (`cargo install --locked cargo-mutants`). A full run
# over the three modules takes hours on two cores; a shard takes minutes.
# The baseline is skipped because cargo-mutants runs it in the mutated
# package (the broker), which does not hold the sweep; `cargo test
# --release -p faultline-sim` is the clean baseline.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export MUTATION_SEEDS="${MUTATION_SEEDS:-10}"
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
    args=(--shard 0/60)
fi
exec cargo mutants --workspace \
    --file 'broker/src/storage/*.rs' --file 'broker/src/server/**/*.rs' --file 'broker/src/client/*.rs' \
    --exclude 'broker/src/**/tests.rs' --exclude 'broker/src/**/*_tests.rs' \
    --test-package faultline-sim \
    --sharding round-robin --baseline skip --timeout 300 --build-timeout 600 \
    --output target/mutants \
    "${args[@]}" \
    -- --test mutation_sweep -- --ignored
