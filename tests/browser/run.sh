#!/usr/bin/env bash
# Browser tests of the upload page (GET /) and the gallery (GET /gallery): real `sis server`
# processes on loopback, Debian's Chromium driven by playwright-core (upload.spec.mjs and
# gallery.spec.mjs beside this file).
#
# Self-contained area script: installs Chromium (apt) and playwright-core (npm, into
# $SIS_CACHE_DIR/node, never into the repo) when missing, builds `sis`, starts two servers on
# free 127.0.0.1 ports (one plain, one with --api-token, one with --api-token for the gallery),
# runs the specs, cleans up.
# Screenshots: $SIS_ARTIFACT_DIR/browser (default target/test-artifacts/browser).
# Ends with `N passed, N failed`; exits non-zero on any failure. Never skips.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/tests/browser"
CACHE_DIR=${SIS_CACHE_DIR:-$HOME/.cache/sis}
NODE_DIR="$CACHE_DIR/node"
PLAYWRIGHT_VERSION=1.65.1
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
ARTIFACT_DIR="${SIS_ARTIFACT_DIR:-$ROOT/target/test-artifacts}/browser"

log() { echo "[browser] $*" >&2; }
die() {
  log "error: $*"
  echo "0 passed, 1 failed"
  exit 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  log "installing $* (apt)"
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get -o DPkg::Lock::Timeout=600 -q)
  as_root "${apt[@]}" install -y --no-install-recommends "$@" >/dev/null ||
    { as_root "${apt[@]}" update >/dev/null && as_root "${apt[@]}" install -y --no-install-recommends "$@" >/dev/null; }
}

# ---- tools ----
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
command -v curl >/dev/null || apt_install curl ca-certificates
[ -x "$CHROMIUM" ] || apt_install chromium
[ -x "$CHROMIUM" ] || die "chromium not found at $CHROMIUM after install"
# Screenshots need fonts: a Latin one, and a small CJK one for the Chinese file name.
if ! command -v fc-list >/dev/null || [ -z "$(fc-list 2>/dev/null | head -1)" ]; then apt_install fonts-dejavu-core fontconfig; fi
if [ -z "$(fc-list :lang=zh 2>/dev/null | head -1)" ]; then apt_install fonts-wqy-microhei; fi

have_pw() { [ "$(node -p "require('$NODE_DIR/node_modules/playwright-core/package.json').version" 2>/dev/null)" = "$PLAYWRIGHT_VERSION" ]; }
if ! have_pw; then
  log "installing playwright-core@$PLAYWRIGHT_VERSION into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --save-exact --loglevel=error \
    "playwright-core@$PLAYWRIGHT_VERSION" >&2
  have_pw || die "playwright-core@$PLAYWRIGHT_VERSION not importable from $NODE_DIR"
fi

# ---- build and start servers ----
log "building sis"
(cd "$ROOT" && cargo build -q -p sis) || die "cargo build -p sis failed"
SIS_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/sis"
[ -x "$SIS_BIN" ] || die "no binary at $SIS_BIN"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sis-browser.XXXXXX")
PIDS=()
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server NAME [extra args...]  -> sets URL
start_server() {
  local name=$1 port
  shift
  port=$(free_port)
  mkdir -p "$WORK/$name"
  "$SIS_BIN" server --listen "127.0.0.1:$port" --data-dir "$WORK/$name/data" "$@" \
    >"$WORK/$name/log" 2>&1 &
  PIDS+=($!)
  URL="http://127.0.0.1:$port"
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$URL/healthz" 2>/dev/null && return 0
    if ! kill -0 "${PIDS[-1]}" 2>/dev/null; then
      tail -20 "$WORK/$name/log" >&2
      die "sis server ($name) exited during start-up"
    fi
    sleep 0.1
  done
  tail -20 "$WORK/$name/log" >&2
  die "sis server ($name) not healthy on $URL after 15 s"
}

start_server plain
PLAIN_URL=$URL
TOKEN="browser-test-$RANDOM$RANDOM"
start_server token --api-token "$TOKEN"
TOKEN_URL=$URL
start_server gallery --api-token "$TOKEN"
GALLERY_URL=$URL
log "servers: $PLAIN_URL, $TOKEN_URL (token), $GALLERY_URL (gallery, token)"

# ---- run the spec ----
rm -rf "$ARTIFACT_DIR"
mkdir -p "$ARTIFACT_DIR"
rc=0
total_passed=0
total_failed=0
# run_spec FILE SERVER-NAMES...: runs one spec, adds its counts to the totals.
run_spec() {
  local spec=$1 src=0 last p f
  shift
  SIS_URL="$PLAIN_URL" SIS_TOKEN_URL="$TOKEN_URL" SIS_TOKEN="$TOKEN" SIS_GALLERY_URL="$GALLERY_URL" \
    SIS_NODE_DIR="$NODE_DIR" SIS_WORK_DIR="$WORK" SIS_ARTIFACT_DIR="$ARTIFACT_DIR" CHROMIUM="$CHROMIUM" \
    timeout 300 node "$HERE/$spec" >"$WORK/spec.out" 2>&1 || src=$?
  last=$(tail -n 1 "$WORK/spec.out")
  if [ "$src" -ne 0 ]; then
    log "$spec exited $src; server logs:"
    for name in "$@"; do tail -n 15 "$WORK/$name/log" | sed "s/^/[$name] /" >&2; done
    rc=$src
  fi
  head -n -1 "$WORK/spec.out"
  if [[ "$last" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    p=${BASH_REMATCH[1]} f=${BASH_REMATCH[2]}
    [ "$src" -eq 0 ] || [ "$f" -ne 0 ] || f=1
  else
    echo "$last"
    p=0 f=1
  fi
  total_passed=$((total_passed + p))
  total_failed=$((total_failed + f))
}
run_spec upload.spec.mjs plain token
run_spec gallery.spec.mjs gallery
echo "$total_passed passed, $total_failed failed"
exit "$rc"
