#!/usr/bin/env bash
# The whole test suite: the README's test command, and what .ci/run calls.
#
# Runs on a fresh machine as root: every stage installs what it needs (idempotently)
# and caches heavy artifacts under $SIS_CACHE_DIR (default ~/.cache/sis), outside the repo.
# Stages run in order; a failing stage fails the run, the rest still run so one CI
# run shows every failure. With CI=true nothing is skipped for a missing tool.
set -uo pipefail

cd "$(dirname "$0")/.."
export SIS_CACHE_DIR="${SIS_CACHE_DIR:-$HOME/.cache/sis}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$SIS_CACHE_DIR"
# CI starts from a fresh clone each time: keep cargo's build output in the cache so a run
# rebuilds only what changed. Developers keep their usual ./target.
if [[ "${CI:-}" == "true" && -z "${CARGO_TARGET_DIR:-}" ]]; then
  export CARGO_TARGET_DIR="$SIS_CACHE_DIR/target"
fi

passed=0
failed=0
failures=()

# Run-time libraries the unit tests exercise, loaded with dlopen when present: libturbojpeg0
# (sis's JPEG decoder) and libavif15 (its AVIF decoder). Installed once; the tests fail under
# CI=true when one is missing.
for lib in 'libturbojpeg0:libturbojpeg\.so\.0' 'libavif15:libavif\.so\.15'; do
  pkg=${lib%%:*}
  if ! ldconfig -p 2>/dev/null | grep -q "${lib#*:}"; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "$pkg" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "$pkg" >/dev/null; } \
      || echo "warning: could not install $pkg"
  fi
done

stage() {
  local name=$1
  shift
  local start=$SECONDS
  echo
  echo "=== stage: $name"
  if "$@"; then
    passed=$((passed + 1))
    echo "=== stage $name: ok ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "=== stage $name: FAILED ($((SECONDS - start)) s)"
  fi
}

stage fmt cargo fmt --all -- --check
stage clippy cargo clippy --workspace --all-targets --locked -- -D warnings
stage build cargo build --workspace --locked
stage cargo-test cargo test --workspace --locked
# A real Ceph (mon, OSD, RADOS Gateway) on loopback: the API tests again on S3, replicas, faults.
stage s3 bash tests/s3/run.sh
stage browser bash tests/browser/run.sh
stage prometheus bash tests/prometheus/run.sh
stage k8s-smoke bash tests/k8s/smoke.sh
stage operator bash tests/k8s/operator.sh
stage helm bash tests/helm/run.sh
stage fuzz bash tests/fuzz/run.sh
stage image bash tests/image/run.sh
# Benchmarks assert no timings; the smoke run only keeps the harness working.
stage bench-smoke env BENCH_SMOKE=1 BENCH_PROFILE=0 bash bench/run.sh

echo
if ((failed > 0)); then
  echo "failed stages: ${failures[*]}"
fi
echo "stages: $passed passed, $failed failed"
((failed == 0))
