#!/usr/bin/env bash
# Runs the `lockstep` command line (built in release mode on first use), e.g.
#   ./scripts/lockstep.sh admin create alice --role privileged-admin
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lockstep-target}"
exec cargo run --release --locked -q -p lockstep-server --bin lockstep -- "$@"
