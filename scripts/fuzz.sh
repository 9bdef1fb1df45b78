#!/usr/bin/env bash
# Parser fuzzing (docs/security.md, "Parser fuzzing"): cargo-fuzz targets in fuzz/, one per
# parser the outside world feeds. Installs cargo-fuzz (pinned) once, builds the targets outside
# the clone and runs them.
#
#   ./scripts/fuzz.sh install              install cargo-fuzz if missing; print its path
#   ./scripts/fuzz.sh build                build every target
#   ./scripts/fuzz.sh run [TARGET...]      run each target (all when none is named)
#   ./scripts/fuzz.sh cmin [TARGET...]     minimize each committed corpus with what runs found
#   ./scripts/fuzz.sh ci                   what CI runs: every target briefly
#
# run: LOCKSTEP_FUZZ_RUNS executions each (default 1000000), or LOCKSTEP_FUZZ_SECONDS seconds
# each when set; the last line per target is its summary. New inputs go to a scratch corpus
# under ~/.cache (LOCKSTEP_FUZZ_CORPUS), never into fuzz/corpus, which runs only read; `cmin`
# merges the two back into fuzz/corpus (at most LOCKSTEP_FUZZ_CORPUS_MAX files, default 300,
# per target). A crash fails the run (the other targets still run) and leaves its input in
# ~/.cache/lockstep-fuzz-artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."

# cargo-fuzz from crates.io, in its own root; reinstalled only when missing or another version.
version=0.13.2
root="${LOCKSTEP_TOOLS_DIR:-$HOME/.cache/lockstep-tools}/cargo-fuzz"
cargo_fuzz="$root/bin/cargo-fuzz"
if [ "$("$cargo_fuzz" --version 2>/dev/null)" != "cargo-fuzz $version" ]; then
  cargo install --locked --quiet --root "$root" "cargo-fuzz@$version" >&2 \
    || { echo "fuzz: cannot install cargo-fuzz $version from crates.io; check the network and retry" >&2; exit 1; }
fi

# cargo-fuzz passes nightly-only flags (sanitizer coverage, --cfg fuzzing); the pinned stable
# toolchain accepts them with RUSTC_BOOTSTRAP. No sanitizer: every fuzzed parser is safe Rust
# (the workspace denies unsafe code outside the listener cache), so AddressSanitizer would find
# nothing more and runs many times slower. -a: debug assertions and overflow checks.
export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR
target_dir="${LOCKSTEP_FUZZ_TARGET_DIR:-$HOME/.cache/lockstep-fuzz-target}"
scratch="${LOCKSTEP_FUZZ_CORPUS:-$HOME/.cache/lockstep-fuzz-corpus}"
artifacts="${LOCKSTEP_FUZZ_ARTIFACTS:-$HOME/.cache/lockstep-fuzz-artifacts}"
flags=(--sanitizer none --debug-assertions --target-dir "$target_dir")
jobs="${LOCKSTEP_FUZZ_JOBS:-2}"
max_corpus="${LOCKSTEP_FUZZ_CORPUS_MAX:-300}"

targets() {
  if [ $# -gt 0 ]; then printf '%s\n' "$@"; else "$cargo_fuzz" list; fi
}

build() {
  CARGO_BUILD_JOBS="$jobs" "$cargo_fuzz" build "${flags[@]}" >&2
}

# run TARGET LIBFUZZER_ARGS...: prints one summary line.
run() {
  local t="$1"
  shift
  mkdir -p "$scratch/$t" "$artifacts/$t"
  local log start
  log=$(mktemp)
  start=$(date +%s%N)
  if ! "$cargo_fuzz" run "${flags[@]}" "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
      -artifact_prefix="$artifacts/$t/" -print_final_stats=1 "$@" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $t crashed; the input is in $artifacts/$t/ (reproduce: $cargo_fuzz run ${flags[*]} $t FILE)" >&2
    rm -f "$log"
    return 1
  fi
  local ms=$(( ($(date +%s%N) - start) / 1000000 ))
  local execs cov ft corpus
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  echo "fuzz: $t: ${execs:-?} executions in $(( ms / 1000 )).$(( ms % 1000 / 100 )) s" \
    "($(( ${execs:-0} * 1000 / (ms > 0 ? ms : 1) )) exec/s), cov ${cov:-?}, ft ${ft:-?}," \
    "committed corpus $corpus files, 0 crashes"
  rm -f "$log"
}

case "${1:-run}" in
  install)
    echo "$cargo_fuzz"
    ;;
  build)
    build
    ;;
  run)
    shift || true
    build
    if [ -n "${LOCKSTEP_FUZZ_SECONDS:-}" ]; then
      limit=(-max_total_time="$LOCKSTEP_FUZZ_SECONDS")
    else
      limit=(-runs="${LOCKSTEP_FUZZ_RUNS:-1000000}")
    fi
    failed=0
    for t in $(targets "$@"); do run "$t" "${limit[@]}" || failed=1; done
    exit "$failed"
    ;;
  cmin)
    shift
    build
    for t in $(targets "$@"); do
      # What runs found joins the committed corpus, then `cargo fuzz cmin` keeps a smallest
      # set of files that reaches the same edges (hit counts aside); past $max_corpus files,
      # the $max_corpus that reach the most edges stay (scripts/fuzz-corpus-cap.py).
      mkdir -p "$scratch/$t"
      find "$scratch/$t" -type f -exec cp -n -t "fuzz/corpus/$t" {} +
      "$cargo_fuzz" cmin "${flags[@]}" "$t" "fuzz/corpus/$t" -- -use_counters=0 >/dev/null 2>&1
      control=$(mktemp)
      out=$(mktemp -d)
      "$target_dir/x86_64-unknown-linux-gnu/release/$t" -merge=1 -use_counters=0 \
        -merge_control_file="$control" "$out" "fuzz/corpus/$t" >/dev/null 2>&1
      echo "fuzz: $t: $(python3 scripts/fuzz-corpus-cap.py "$control" "$max_corpus")" >&2
      rm -rf "$control" "$out"
    done
    ;;
  ci)
    # A few seconds each from a fresh scratch corpus: the committed corpus replays first
    # (every input that once found new coverage), then new inputs for what is left.
    build
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    failed=0
    for t in $(targets); do run "$t" -max_total_time="${LOCKSTEP_FUZZ_SECONDS:-10}" || failed=1; done
    exit "$failed"
    ;;
  *)
    echo "fuzz: unknown command '$1'; use install, build, run, cmin or ci" >&2
    exit 2
    ;;
esac
