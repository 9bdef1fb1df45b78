#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what it needs, then builds and tests
# every crate. Usage: ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

# RUSTUP_AUTO_INSTALL=0 on our machines: the target listed in rust-toolchain.toml is not
# fetched by itself. Idempotent and quick once installed.
rustup target add wasm32-wasip2 >/dev/null

# lockstep-agent links the system's libcrypt (libxcrypt) to check shadow hashes; Debian ships
# its link library in libcrypt-dev (a dependency of libc6-dev, so usually present).
if command -v dpkg >/dev/null && ! dpkg -s libcrypt-dev >/dev/null 2>&1; then
  apt-get install -y --no-install-recommends libcrypt-dev >/dev/null \
    || { echo "install libcrypt-dev: lockstep-agent links libcrypt" >&2; exit 1; }
fi
# Debian's libfaketime runs one cluster node with its clock 90 s ahead
# (tests/tests/cluster.rs): leases must follow the database's clock, not the node's.
if command -v dpkg >/dev/null && ! dpkg -s libfaketime >/dev/null 2>&1; then
  apt-get install -y --no-install-recommends libfaketime >/dev/null \
    || { apt-get update -qq && apt-get install -y --no-install-recommends libfaketime >/dev/null; } \
    || { echo "install libfaketime: the clock-skew cluster test runs a node under it" >&2; exit 1; }
fi
# Debian's curl is the HTTP/2 client of tests/tests/hostile_clients.rs (a 413 it must hear).
if ! command -v curl >/dev/null; then
  apt-get install -y --no-install-recommends curl >/dev/null \
    || { echo "install curl: the HTTP/2 refusal test runs it" >&2; exit 1; }
fi

# Keep build output outside the clone so CI reruns on the same machine are incremental.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lockstep-target}"

# The PostgreSQL tests need the machine's server (127.0.0.1:5432, trust auth, database test).
# It is started before sessions begin; start it again if it has stopped.
if command -v pg_isready >/dev/null && ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi

# The MySQL connector tests start a private MariaDB server (testkit/src/mariadb.rs) from the
# machine's own binaries: mariadbd, mariadb-install-db and the mariadb clients.
if ! command -v mariadbd >/dev/null || ! command -v mariadb-install-db >/dev/null \
  || ! command -v mariadb-admin >/dev/null; then
  apt-get install -y --no-install-recommends mariadb-server mariadb-client >/dev/null \
    || { apt-get update -qq && apt-get install -y --no-install-recommends mariadb-server mariadb-client >/dev/null; } \
    || { echo "install mariadb-server: the MySQL connector tests start a private MariaDB" >&2; exit 1; }
fi

# The SSH reset tests run Debian's sshd and sudo in namespaces with a private /etc; this
# extracts them into ~/.cache/lockstep-testbed without installing anything on the host.
./scripts/testbed-deps.sh >/dev/null
# The Active Directory connector tests provision a Samba domain controller from Debian's
# packages, extracted the same way (scripts/samba-deps.sh).
./scripts/samba-deps.sh >/dev/null

# The API fuzzer (schemathesis, from PyPI) in its own virtualenv; tests/tests/api_fuzz.rs.
./scripts/fuzz-deps.sh >/dev/null

cargo build --workspace --all-targets --locked
# Every listener as a WebAssembly component: Rust (cargo), Python (componentize-py from PyPI),
# JavaScript (componentize-js from npm). The tests load them from the target dir (and run this
# script themselves when run alone).
./scripts/build-listeners.sh
cargo test --workspace --locked "$@"

# Parser fuzzing (fuzz/, cargo-fuzz pinned from crates.io): every target for a few seconds,
# built outside the clone; the long run and its figures are in docs/security.md.
./scripts/fuzz.sh ci
