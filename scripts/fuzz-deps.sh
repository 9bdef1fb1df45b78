#!/usr/bin/env bash
# Installs the API fuzzer (schemathesis, pinned in tests/fuzz/requirements.txt) into its own
# virtualenv under ~/.cache/lockstep-tools, once; prints the path of its executable.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LOCKSTEP_TOOLS_DIR:-$HOME/.cache/lockstep-tools}/schemathesis"
want=$(grep -E '^schemathesis==' tests/fuzz/requirements.txt | cut -d= -f3)
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $want" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/fuzz/requirements.txt >&2
fi
echo "$venv/bin/schemathesis"
