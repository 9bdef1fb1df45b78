#!/usr/bin/env bash
# Runs the `lockstep` command line (built in release mode on first use), e.g.
#   ./scripts/lockstep.sh admin create alice --role privileged-admin
# Relative paths in its arguments are the caller's: it runs in the directory it is called from.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lockstep-target}"
exec cargo run --manifest-path "$repo/Cargo.toml" --release --locked -q -p lockstep-server \
  --bin lockstep -- "$@"
