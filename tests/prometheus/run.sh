#!/usr/bin/env bash
# Metrics test with a real Prometheus (issue 4): `sis server` (and `sis agent` in front of it,
# once agent mode exists) on free 127.0.0.1 ports, `promtool check metrics` on their /metrics,
# a Prometheus server scraping both every second, a known workload, then assertions through
# Prometheus' HTTP API (/api/v1/query).
# Also the shipped monitoring (issue 16): `promtool check rules` and `promtool test rules`
# (tests/prometheus/alerts.test.yaml) on deploy/monitoring/sis-alerts.rules.yaml; every metric
# the rules and deploy/monitoring/grafana-dashboard.json name is declared in service/ or
# operator/ metrics.rs; every dashboard query is valid PromQL on the live Prometheus.
#
# Self-contained area script: installs Debian's `prometheus` (server + promtool), curl and
# python3 when missing, builds `sis`, cleans up on exit. Ends with `N passed, N failed`;
# exits non-zero on any failure. Never skips for a missing tool.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)

log() { echo "[prometheus] $*" >&2; }
die() {
  log "error: $*"
  echo "$PASSED passed, $((FAILED + 1)) failed"
  exit 1
}
PASSED=0
FAILED=0
ok() {
  PASSED=$((PASSED + 1))
  echo "ok     $*"
}
not_ok() {
  FAILED=$((FAILED + 1))
  echo "FAILED $*"
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
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then apt_install prometheus; fi
command -v curl >/dev/null || apt_install curl ca-certificates
command -v python3 >/dev/null || apt_install python3
command -v prometheus >/dev/null || die "prometheus missing after install"
command -v promtool >/dev/null || die "promtool missing after install"
PY=$(python3 -c 'import sys; print(sys.executable)') # the real interpreter, not a slow shim
log "$(prometheus --version 2>&1 | head -1)"

# ---- shipped alert rules and dashboard (no sis needed) ----
RULES="$ROOT/deploy/monitoring/sis-alerts.rules.yaml"
DASHBOARD="$ROOT/deploy/monitoring/grafana-dashboard.json"
if promtool check rules "$RULES" >"/tmp/sis-promtool-check.$$" 2>&1; then
  ok "promtool check rules deploy/monitoring/sis-alerts.rules.yaml ($(grep -o '[0-9]* rules found' "/tmp/sis-promtool-check.$$"))"
else
  not_ok "promtool check rules:"; sed 's/^/       /' "/tmp/sis-promtool-check.$$"
fi
if promtool test rules "$ROOT/tests/prometheus/alerts.test.yaml" >"/tmp/sis-promtool-test.$$" 2>&1; then
  ok "promtool test rules tests/prometheus/alerts.test.yaml (every alert fires on its sample series, not on the others)"
else
  not_ok "promtool test rules:"; sed 's/^/       /' "/tmp/sis-promtool-test.$$" | head -n 60
fi
rm -f "/tmp/sis-promtool-check.$$" "/tmp/sis-promtool-test.$$"
# Every alert of the rules file has a unit test and a runbook section in the README.
if missing=$("$PY" - "$RULES" "$ROOT/tests/prometheus/alerts.test.yaml" "$ROOT/README.md" <<'EOF'
import re, sys
rules = open(sys.argv[1]).read()
alerts = re.findall(r"^\s*- alert: (\w+)", rules, re.M)
tests = open(sys.argv[2]).read()
readme = open(sys.argv[3]).read()
missing = [a for a in alerts if f"alertname: {a}" not in tests]
missing += [f"{a} (runbook)" for a in alerts if not re.search(rf"^#+ .*`?{a}`?", readme, re.M)]
assert len(alerts) >= 6, alerts
print(" ".join(missing))
EOF
) && [ -z "$missing" ]; then
  ok "every alert has a promtool test and a README runbook"
else
  not_ok "alerts without a test or runbook: $missing"
fi
if undeclared=$("$PY" - "$DASHBOARD" "$RULES" "$ROOT/service/src/metrics.rs" "$ROOT/operator/src/metrics.rs" <<'EOF'
import json, re, sys
dashboard = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
assert len(exprs) >= 20, len(exprs)
text = "\n".join(exprs) + open(sys.argv[2]).read()
declared = set(re.findall(r'"(sis_[a-z_]+)"', open(sys.argv[3]).read() + open(sys.argv[4]).read()))
used = {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"\b(sis_[a-z_]+)", text)}
assert used, "no sis metric used"
print(" ".join(sorted(m for m in used if m not in declared)))
EOF
) && [ -z "$undeclared" ]; then
  ok "dashboard and rules only use metrics declared in service/src/metrics.rs and operator/src/metrics.rs"
else
  not_ok "metrics used by the dashboard or rules but not declared: $undeclared"
fi

log "building sis"
(cd "$ROOT" && cargo build -q -p sis) || die "cargo build -p sis failed"
SIS_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/sis"
[ -x "$SIS_BIN" ] || die "no binary at $SIS_BIN"
SIS_VERSION=$("$SIS_BIN" --version | awk '{print $2}')

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sis-prometheus.XXXXXX")
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

# wait_http URL PID LOG NAME: until URL answers 2xx, or the process dies, or 20 s pass.
wait_http() {
  local url=$1 pid=$2 logf=$3 name=$4
  for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$logf" >&2; return 1; }
    sleep 0.1
  done
  tail -n 20 "$logf" >&2
  log "$name not ready at $url after 20 s"
  return 1
}

# ---- sis server (and agent) ----
SERVER_PORT=$(free_port)
SERVER="http://127.0.0.1:$SERVER_PORT"
"$SIS_BIN" server --listen "127.0.0.1:$SERVER_PORT" --data-dir "$WORK/data" --cache-size 100MiB \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_http "$SERVER/healthz" "$SERVER_PID" "$WORK/server.log" "sis server" || die "sis server did not start"
log "sis server on $SERVER"

AGENT=""
AGENT_STATUS="not run: \`sis agent --help\` fails (agent mode not built)"
if "$SIS_BIN" agent --help >/dev/null 2>&1; then
  AGENT_PORT=$(free_port)
  "$SIS_BIN" agent --upstream "$SERVER" --listen "127.0.0.1:$AGENT_PORT" --cache-size 64MiB \
    >"$WORK/agent.log" 2>&1 &
  AGENT_PID=$!
  PIDS+=("$AGENT_PID")
  if wait_http "http://127.0.0.1:$AGENT_PORT/healthz" "$AGENT_PID" "$WORK/agent.log" "sis agent"; then
    AGENT="http://127.0.0.1:$AGENT_PORT"
    AGENT_STATUS="ran on $AGENT"
  elif ! kill -0 "$AGENT_PID" 2>/dev/null && grep -qi "not yet" "$WORK/agent.log"; then
    AGENT_STATUS="not run: agent mode says \"not yet\""
  else
    not_ok "sis agent --upstream $SERVER starts and answers /healthz"
    AGENT_STATUS="failed to start"
  fi
fi
log "agent: $AGENT_STATUS"

# ---- Prometheus ----
PROM_PORT=$(free_port)
PROM="http://127.0.0.1:$PROM_PORT"
{
  echo "global:"
  echo "  scrape_interval: 1s"
  echo "  scrape_timeout: 1s"
  echo "  evaluation_interval: 1s"
  echo "scrape_configs:"
  echo "  - job_name: sis-server"
  echo "    static_configs: [{targets: ['127.0.0.1:$SERVER_PORT']}]"
  if [ -n "$AGENT" ]; then
    echo "  - job_name: sis-agent"
    echo "    static_configs: [{targets: ['127.0.0.1:$AGENT_PORT']}]"
  fi
} >"$WORK/prometheus.yml"
promtool check config "$WORK/prometheus.yml" >/dev/null || die "generated prometheus.yml is invalid"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
PIDS+=("$PROM_PID")
wait_http "$PROM/-/ready" "$PROM_PID" "$WORK/prometheus.log" "prometheus" || die "prometheus did not start"
log "prometheus on $PROM"

# query EXPR -> prints the value of the single resulting sample, "none" if empty, "many:N" if several
query() {
  curl -fsS -G "$PROM/api/v1/query" --data-urlencode "query=$1" | "$PY" -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
if not r: print("none")
elif len(r) > 1: print("many:%d" % len(r))
else: print(r[0]["value"][1])'
}

# num_cmp A OP B: numeric comparison (OP: == >= > <=); B may be "X + Y".
num_cmp() { awk -v a="$1" -v op="$2" -v b="$3" 'BEGIN { split(b, p, " [+] "); b = p[1] + p[2]; a += 0
  exit !((op == "==" && a == b) || (op == ">=" && a >= b) || (op == ">" && a > b) || (op == "<=" && a <= b)) }'; }

# expect NAME EXPR OP WANT: OP is ==, >=, > (numeric) or "present"; retries for 10 s.
expect() {
  local name=$1 expr=$2 op=$3 want=${4:-} got=""
  for _ in $(seq 1 20); do
    got=$(query "$expr" 2>/dev/null || echo "error")
    if [ "$op" = present ]; then
      [ "$got" != none ] && [ "$got" != error ] && { ok "$name"; return 0; }
    elif [[ "$got" =~ ^[-+0-9.eE]+$ ]] && num_cmp "$got" "$op" "$want"; then
      ok "$name ($got)"
      return 0
    fi
    sleep 0.5
  done
  not_ok "$name: $expr -> $got, want $op $want"
}

# wait_scrape JOB: until Prometheus holds a scrape of JOB that started after now.
wait_scrape() {
  local job=$1 since got
  since=$(date +%s.%N)
  for _ in $(seq 1 60); do
    got=$(query "timestamp(up{job=\"$job\"})" 2>/dev/null || echo none)
    if [[ "$got" =~ ^[0-9.]+$ ]] && num_cmp "$got" ">" "$since + 0.2"; then
      return 0
    fi
    sleep 0.5
  done
  not_ok "Prometheus scraped $job after the workload (last: $got)"
  return 1
}

# ---- workload ----
mkdir -p "$WORK/img"
python3 - "$WORK/img" <<'PY'
import struct, sys, zlib
def png(w, h, rgb):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    raw = b"".join(b"\0" + b"".join(bytes(rgb(x, y)) for x in range(w)) for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
out = sys.argv[1]
open(out + "/one.png", "wb").write(png(64, 48, lambda x, y: (255, 4 * y, 4 * x)))
open(out + "/two.png", "wb").write(png(80, 80, lambda x, y: (3 * x, 255, 3 * y)))
open(out + "/three.png", "wb").write(png(120, 90, lambda x, y: (2 * x, 2 * y, 255)))
open(out + "/four.png", "wb").write(png(40, 40, lambda x, y: (6 * x, 6 * y, 6 * x)))
PY
md5() { md5sum "$1" | cut -d' ' -f1; }
M1=$(md5 "$WORK/img/one.png")
M2=$(md5 "$WORK/img/two.png")
M3=$(md5 "$WORK/img/three.png")
STORED_BYTES=$(($(stat -c %s "$WORK/img/one.png") + $(stat -c %s "$WORK/img/two.png") + $(stat -c %s "$WORK/img/three.png")))

# status METHOD URL [curl args...] -> HTTP status code
status() {
  local m=$1 u=$2
  shift 2
  curl -sS -o /dev/null -w '%{http_code}' -X "$m" "$u" "$@" || echo 000
}
# step NAME WANT GOT
step() { if [ "$3" = "$2" ]; then ok "$1 -> $3"; else not_ok "$1 -> $3, want $2"; fi; }

log "workload on the server"
step "POST /up (1 file)" 200 "$(status POST "$SERVER/up" -F "file=@$WORK/img/one.png")"
step "POST /v1/images (2 files)" 201 "$(status POST "$SERVER/v1/images" \
  -F "file=@$WORK/img/two.png" -F "file=@$WORK/img/three.png")"
step "GET /v1/images/{md5}/{name} (1)" 200 "$(status GET "$SERVER/v1/images/$M1/one.png")"
step "GET /v1/images/{md5}/{name} (2)" 200 "$(status GET "$SERVER/v1/images/$M2/two.png")"
step "GET /full_down" 200 "$(status GET "$SERVER/full_down?md5=$M3&file_name=three.png")"
step "GET /simple_down" 200 "$(status GET "$SERVER/simple_down?md5=$M1")"
step "GET /v1/images/{md5} of an unknown image" 404 "$(status GET "$SERVER/v1/images/00000000000000000000000000000000")"
step "GET resized (first)" 200 "$(status GET "$SERVER/v1/images/$M2/two.png?w=32&h=32&fit=cover")"
step "GET resized (again, from the cache)" 200 "$(status GET "$SERVER/v1/images/$M2/two.png?w=32&h=32&fit=cover")"

# ---- promtool on the raw exposition ----
check_metrics() {
  local name=$1 url=$2
  if ! curl -fsS "$url/metrics" >"$WORK/$name.metrics"; then
    not_ok "GET $url/metrics"
    return
  fi
  if promtool check metrics <"$WORK/$name.metrics" >"$WORK/$name.promtool" 2>&1; then
    ok "promtool check metrics ($name, $(grep -c '^sis_' "$WORK/$name.metrics") sis_ samples)"
  else
    not_ok "promtool check metrics ($name):"
    sed 's/^/       /' "$WORK/$name.promtool" | head -n 20
  fi
}
check_metrics server "$SERVER"

# ---- what Prometheus saw ----
S='job="sis-server"'
if wait_scrape sis-server; then
  expect "server target is up" "up{$S}" == 1
  expect "sis_build_info{mode=server,version=$SIS_VERSION} == 1" "sis_build_info{$S,mode=\"server\",version=\"$SIS_VERSION\"}" == 1
  expect "sis_images_stored_total == 3" "sis_images_stored_total{$S}" == 3
  expect "sis_storage_objects == 3" "sis_storage_objects{$S}" == 3
  expect "sis_storage_bytes == $STORED_BYTES" "sis_storage_bytes{$S}" == "$STORED_BYTES"
  expect "requests{route=/v1/images,POST,201} == 1" \
    "sis_http_requests_total{$S,mode=\"server\",route=\"/v1/images\",method=\"POST\",status=\"201\"}" == 1
  expect "requests{route=/up,POST,200} == 1" \
    "sis_http_requests_total{$S,mode=\"server\",route=\"/up\",method=\"POST\",status=\"200\"}" == 1
  expect "requests{route=/full_down,GET,200} == 1" \
    "sis_http_requests_total{$S,route=\"/full_down\",method=\"GET\",status=\"200\"}" == 1
  expect "requests{route=/simple_down,GET,200} == 1" \
    "sis_http_requests_total{$S,route=\"/simple_down\",method=\"GET\",status=\"200\"}" == 1
  expect "GET 200 on /v1/images/... routes >= 4" \
    "sum(sis_http_requests_total{$S,route=~\"/v1/images/.+\",method=\"GET\",status=\"200\"})" ">=" 4
  expect "a 404 is counted" "sum(sis_http_requests_total{$S,status=\"404\"})" ">=" 1
  expect "route labels are templates (no MD5 in any label)" \
    "count(sis_http_requests_total{$S,route=~\".*[0-9a-f]{32}.*\"}) or vector(0)" == 0
  expect "latency histogram has the upload" \
    "sis_http_request_duration_seconds_count{$S,route=\"/v1/images\"}" ">=" 1
  expect "health checks are not in the latency histogram" \
    "count(sis_http_request_duration_seconds_count{$S,route=~\"/healthz|/readyz\"}) or vector(0)" == 0
  expect "request body bytes recorded for uploads" \
    "sum(sis_http_request_body_bytes_count{$S,route=\"/v1/images\"})" ">=" 1
  expect "response body bytes recorded" "sum(sis_http_response_body_bytes_sum{$S})" ">" 0
  expect "sis_http_requests_in_flight{mode=server} present" "sis_http_requests_in_flight{$S,mode=\"server\"}" present
  expect "resize histogram counted the resize" "sis_resize_duration_seconds_count{$S}" ">=" 1
  expect "sis_resize_queue_depth present" "sis_resize_queue_depth{$S}" present
  expect "sis_resize_rejected_total == 0" "sis_resize_rejected_total{$S}" == 0
  expect "sis_cache_hits_total > 0 after the repeated resize" "sum(sis_cache_hits_total{$S})" ">" 0
  expect "sis_cache_hits_total{kind=variant} > 0" "sis_cache_hits_total{$S,kind=\"variant\"}" ">" 0
  expect "sis_cache_misses_total > 0" "sum(sis_cache_misses_total{$S})" ">" 0
  expect "sis_cache_bytes > 0" "sum(sis_cache_bytes{$S})" ">" 0
  expect "sis_cache_entries > 0" "sum(sis_cache_entries{$S})" ">" 0
  expect "sis_cache_capacity_bytes == 100 MiB" "max(sis_cache_capacity_bytes{$S})" == 104857600
  expect "sis_cache_evictions_total present" "sum(sis_cache_evictions_total{$S})" present
  expect "process_resident_memory_bytes > 0" "process_resident_memory_bytes{$S}" ">" 0
  expect "process_cpu_seconds_total present" "process_cpu_seconds_total{$S}" present
  expect "process_open_fds > 0" "process_open_fds{$S}" ">" 0
fi

# ---- agent in front of the server ----
if [ -n "$AGENT" ]; then
  log "workload through the agent"
  A='job="sis-agent"'
  step "agent: POST /v1/images (a 4th image)" 201 "$(status POST "$AGENT/v1/images" -F "file=@$WORK/img/four.png")"
  step "agent: GET original" 200 "$(status GET "$AGENT/v1/images/$M1/one.png")"
  step "agent: GET /full_down" 200 "$(status GET "$AGENT/full_down?md5=$M3&file_name=three.png")"
  step "agent: GET resized (first)" 200 "$(status GET "$AGENT/v1/images/$M3/three.png?w=20")"
  step "agent: GET resized (again)" 200 "$(status GET "$AGENT/v1/images/$M3/three.png?w=20")"
  check_metrics agent "$AGENT"
  if wait_scrape sis-agent && wait_scrape sis-server; then
    expect "agent target is up" "up{$A}" == 1
    expect "sis_build_info{mode=agent} == 1" "sis_build_info{$A,mode=\"agent\",version=\"$SIS_VERSION\"}" == 1
    expect "agent counts its requests" "sum(sis_http_requests_total{$A,mode=\"agent\"})" ">=" 5
    expect "agent upstream requests counted" "sum(sis_upstream_requests_total{$A})" ">=" 1
    expect "agent upstream latency histogram" "sum(sis_upstream_request_duration_seconds_count{$A})" ">=" 1
    expect "agent cache hit on the repeated resize" "sum(sis_cache_hits_total{$A})" ">" 0
    expect "server stored the agent's upload (sis_images_stored_total == 4)" "sis_images_stored_total{$S}" == 4
    expect "agent process_resident_memory_bytes > 0" "process_resident_memory_bytes{$A}" ">" 0
  fi
fi

# ---- the dashboard's queries on the live Prometheus ----
# Grafana's $__rate_interval and $namespace replaced by what Grafana would send; each query must
# be accepted (valid PromQL); the sis_http ones must return data from the scraped server/agent.
"$PY" - "$DASHBOARD" >"$WORK/dashboard.queries" <<'EOF'
import json, sys
for p in json.load(open(sys.argv[1]))["panels"]:
    for t in p.get("targets", []):
        print(p["title"] + "\t" + t["expr"].replace("$__rate_interval", "1m").replace('namespace=~"$namespace"', 'namespace=~".*"'))
EOF
bad=0
with_data=0
while IFS=$'\t' read -r title expr; do
  answer=$(curl -sS -G "$PROM/api/v1/query" --data-urlencode "query=$expr")
  if [ "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1]).get("status"))' "$answer" 2>/dev/null)" != success ]; then
    bad=$((bad + 1))
    log "dashboard query refused ($title): $expr -> $answer"
  elif [[ "$expr" == *sis_http_requests_total* ]] &&
    [ "$("$PY" -c 'import json,sys; print(len(json.loads(sys.argv[1])["data"]["result"]))' "$answer")" -gt 0 ]; then
    with_data=$((with_data + 1))
  fi
done <"$WORK/dashboard.queries"
if [ "$bad" = 0 ] && [ "$with_data" -ge 1 ]; then
  ok "all $(wc -l <"$WORK/dashboard.queries") dashboard queries accepted by Prometheus ($with_data request-rate/error queries with data)"
else
  not_ok "dashboard queries: $bad refused, $with_data of the request queries with data"
fi

if ((FAILED > 0)); then
  log "server log (last lines):"
  tail -n 20 "$WORK/server.log" >&2
  [ -z "$AGENT" ] || { log "agent log (last lines):"; tail -n 20 "$WORK/agent.log" >&2; }
fi
log "agent: $AGENT_STATUS"
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
