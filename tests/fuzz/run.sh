#!/usr/bin/env bash
# Fuzzing (issue 7): builds the cargo-fuzz targets in service/fuzz/ and runs each one for
# FUZZ_SECONDS (default 30) from its committed seed corpus. Any crash, leak, timeout or
# out-of-memory fails the run; the reproducer is kept and printed.
#
# Self-contained area script: installs cargo-fuzz into $SIS_CACHE_DIR/cargo-bin when missing
# (and a nightly toolchain through rustup when missing), builds into
# $SIS_CACHE_DIR/fuzz-target, writes new corpus entries to a temp dir (the committed corpus
# stays as it is). Ends with `N passed, N failed`; never skips for a missing tool.
#
#   FUZZ_SECONDS=300 tests/fuzz/run.sh               # longer run
#   FUZZ_TARGETS="multipart" tests/fuzz/run.sh      # some targets only
#   cd service && cargo +nightly fuzz run decode_resize fuzz/artifacts/...   # reproduce
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE="${SIS_CACHE_DIR:-$HOME/.cache/sis}"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
FUZZ_DIR="$ROOT/service/fuzz"
read -r -a TARGETS <<<"${FUZZ_TARGETS:-disposition multipart query_params decode_resize}"

log() { echo "[fuzz] $*" >&2; }
PASSED=0
FAILED=0
die() {
  log "error: $*"
  echo "$PASSED passed, $((FAILED + 1)) failed"
  exit 1
}

# ---- tools ----
export PATH="$CACHE/cargo-bin/bin:$PATH"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  log "installing the nightly toolchain (rustup)"
  rustup toolchain install nightly --profile minimal >/dev/null || die "cannot install nightly"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz into $CACHE/cargo-bin"
  cargo install cargo-fuzz --locked --root "$CACHE/cargo-bin" >/dev/null || die "cargo install cargo-fuzz failed"
fi
log "$(cargo fuzz --version), $(rustup run nightly rustc --version)"

TARGET_DIR="$CACHE/fuzz-target"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sis-fuzz.XXXXXX")
# shellcheck disable=SC2317 # called by the trap
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

log "building the fuzz targets (first build takes minutes; cached in $TARGET_DIR)"
(cd "$ROOT/service" && cargo +nightly fuzz build --target-dir "$TARGET_DIR") >"$WORK/build.log" 2>&1 || {
  tail -30 "$WORK/build.log" >&2
  die "cargo fuzz build failed"
}

for t in "${TARGETS[@]}"; do
  seeds="$FUZZ_DIR/corpus/$t"
  [ -d "$seeds" ] || die "no seed corpus at $seeds"
  mkdir -p "$WORK/$t/corpus" "$WORK/$t/artifacts"
  log "running $t for ${FUZZ_SECONDS}s ($(find "$seeds" -type f | wc -l) seeds)"
  if (cd "$ROOT/service" && cargo +nightly fuzz run --target-dir "$TARGET_DIR" "$t" \
    "$WORK/$t/corpus" "$seeds" -- \
    -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=512 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$WORK/$t/artifacts/") \
    >"$WORK/$t/log" 2>&1; then
    PASSED=$((PASSED + 1))
    echo "ok     $t ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$WORK/$t/log" | awk '{print $2}') runs)"
  else
    FAILED=$((FAILED + 1))
    echo "FAILED $t"
    tail -40 "$WORK/$t/log"
    keep="$FUZZ_DIR/artifacts/$t"
    mkdir -p "$keep"
    for a in "$WORK/$t/artifacts"/*; do
      [ -f "$a" ] || continue
      cp "$a" "$keep/"
      log "reproducer: service/fuzz/artifacts/$t/$(basename "$a") ($(od -An -tx1 "$a" | tr -d " \n" | head -c 400))"
    done
  fi
done

echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
