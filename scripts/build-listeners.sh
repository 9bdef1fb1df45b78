#!/usr/bin/env bash
# Builds every listener in listeners/ into $CARGO_TARGET_DIR/listeners/wasm32-wasip2/release/:
# the Rust ones with cargo, the Python one with componentize-py (PyPI), the JavaScript one with
# componentize-js (npm). Installs those tools when missing; skips a non-Rust listener whose
# component is newer than its sources.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lockstep-target}"
out="$CARGO_TARGET_DIR/listeners/wasm32-wasip2/release"

rustup target add wasm32-wasip2 >/dev/null
cargo build --locked --release --target wasm32-wasip2 \
  --manifest-path listeners/Cargo.toml --target-dir "$CARGO_TARGET_DIR/listeners"

# stale OUTPUT SOURCES...: true when OUTPUT is missing or older than any source.
stale() {
  local output=$1; shift
  [ ! -f "$output" ] && return 0
  [ -n "$(find "$@" -newer "$output" -type f 2>/dev/null | head -1)" ]
}

# The Python and JavaScript listeners stay on contract 0.1.0 (wit/v0.1.0) on purpose: they are
# the real, compiler-built components that show a 0.1.0 listener still loads and runs.

# Python: componentize-py against the listener's narrowed world.
py=listeners/maintenance-window-py
if stale "$out/maintenance_window_py.wasm" "$py/app.py" "$py/wit/world.wit" wit/v0.1.0/listener.wit; then
  if [ "$(componentize-py --version 2>/dev/null)" != "componentize-py 0.25.1" ]; then
    python3 -m pip install --quiet --disable-pip-version-check componentize-py==0.25.1
    # Under pyenv a new console script needs its shim.
    command -v pyenv >/dev/null && pyenv rehash || true
  fi
  mkdir -p "$py/wit/deps/lockstep-listener"
  cp wit/v0.1.0/listener.wit "$py/wit/deps/lockstep-listener/listener.wit"
  componentize-py -d "$py/wit" -w maintenance-window componentize app -p "$py" \
    -o "$out/maintenance_window_py.wasm" >/dev/null
  echo "built $out/maintenance_window_py.wasm"
fi

# JavaScript: componentize-js (StarlingMonkey) through the listener's build.mjs.
js=listeners/protect-accounts-js
if stale "$out/protect_accounts_js.wasm" "$js/app.js" "$js/build.mjs" "$js/wit/world.wit" wit/v0.1.0/listener.wit; then
  (cd "$js" && npm ci --no-audit --no-fund --silent && node build.mjs "$out/protect_accounts_js.wasm")
fi
