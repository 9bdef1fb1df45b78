#!/usr/bin/env bash
# Builds and starts the server on its embedded SQLite default (data in ./lockstep-data),
# over HTTPS on https://127.0.0.1:7470 with a self-signed certificate made on first start.
# Extra arguments go to `lockstep serve` (see `lockstep serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lockstep-target}"
exec cargo run --release --locked -p lockstep-server --bin lockstep -- serve "$@"
