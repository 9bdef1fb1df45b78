#!/usr/bin/env bash
# The cluster kill harness (docs/cluster.md): 3 nodes on a fresh PostgreSQL database, one bulk
# job over every account per round, one random node SIGKILLed at a random point of each round.
# Every round checks: every item done, no password applied more often than its item tried,
# every stored password logs in; at the end, one successful reset per account and job.
# Usage: ./scripts/kill-harness.sh [ROUNDS [TARGETS [ACCOUNTS_PER_TARGET]]]
set -euo pipefail
cd "$(dirname "$0")/.."
export LOCKSTEP_KILL_ROUNDS="${1:-20}"
export LOCKSTEP_KILL_TARGETS="${2:-4}"
export LOCKSTEP_KILL_ACCOUNTS_PER_TARGET="${3:-75}"
rustup target add wasm32-wasip2 >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lockstep-target}"
./scripts/testbed-deps.sh >/dev/null
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --test cluster -- --exact \
  three_nodes_lose_nothing_and_run_nothing_twice_when_one_is_killed_mid_job --nocapture
