#!/usr/bin/env bash
# sis benchmark harness (issue 8): one command, every target measured back to back in ONE run.
#
#   bench/run.sh                 full run: 10 s per scenario, 32 connections; writes
#                                bench/results/latest.md and bench/results/profile.txt
#   BENCH_SMOKE=1 bench/run.sh   ~1 s per scenario, 4 connections, small corpus: exercises the
#                                whole harness quickly; writes to $SIS_CACHE_DIR/bench/smoke/
#                                and ends with "N passed, N failed" (non-zero exit on failure)
#
# Environment: BENCH_BUILD=0 (use the existing binary), BENCH_CARGO_PROFILE (release; smoke: dev),
# BENCH_KEEP=1 (keep the temp dir), BENCH_NICE (root: -10), BENCH_DURATION (s per scenario), BENCH_CONNECTIONS, BENCH_OUT (results dir),
# BENCH_PROFILE=0|1 (cold-resize profile; default 1), BENCH_SIS_CACHE_SIZE (default 256MiB),
# SIS_CACHE_DIR (heavy artifacts: venv, wheels, corpus; default ~/.cache/sis).
#
# On a fresh Debian machine it installs (idempotently) nginx + libnginx-mod-http-image-filter,
# wrk, valgrind, strace, a venv with thumbor (pinned in bench/requirements.txt), builds sis in
# release, makes the corpus from scikit-image's wheel, starts everything on 127.0.0.1 free
# ports in a temp dir, runs the scenarios, stops everything it started and writes the report.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$BENCH_DIR")
LIB=$BENCH_DIR/lib
SMOKE=${BENCH_SMOKE:-0}
if [[ $SMOKE == 1 ]]; then
  DUR=${BENCH_DURATION:-1}
  CONNS=${BENCH_CONNECTIONS:-4}
  COLD_DUR=$DUR
  # tiny originals keep a dev build's cold resizes well under the 1 s runs
  TAG3=p03
  COLD_ROWS=${BENCH_COLD_ROWS:-"p03:300x200 p2:300x200"}
else
  DUR=${BENCH_DURATION:-10}
  CONNS=${BENCH_CONNECTIONS:-32}
  COLD_DUR=${BENCH_COLD_DURATION:-6}
  TAG3=p2
  # cold resizes, one row per (source size class, output box): see bench/lib/corpus.py
  COLD_ROWS=${BENCH_COLD_ROWS:-"p1:64x64 p1:300x200 p1:1200x800 p2:64x64 p2:300x200 p2:1200x800 p12:64x64 p12:300x200 p12:1200x800 p24:64x64 p24:300x200 p24:1200x800"}
fi
PROFILE=${BENCH_PROFILE:-1}
# S3 rows (issue 12): a single-node Ceph (tests/s3/ceph-s3.sh) for sis --storage s3:// and
# the raw RGW reference; off in smoke runs (Ceph takes ~30 s to start)
S3_ROWS=${BENCH_S3:-$([[ $SMOKE == 1 ]] && echo 0 || echo 1)}
SIS_CACHE_SIZE=${BENCH_SIS_CACHE_SIZE:-256MiB}
CACHE=${SIS_CACHE_DIR:-$HOME/.cache/sis}/bench
VENV=$CACHE/venv
SKIMAGE=scikit-image==0.24.0
CORPUS=$CACHE/corpus-v2
NPROC=$(nproc)
if [[ $SMOKE == 1 ]]; then OUT=${BENCH_OUT:-$CACHE/smoke}; else OUT=${BENCH_OUT:-$BENCH_DIR/results}; fi
mkdir -p "$CACHE" "$OUT"

# The machine is shared (other builds may be running): as root, everything this run starts
# (peers, sis, wrk) gets a higher CPU priority so background work disturbs the ratios less.
# Children inherit it; the cargo build is put back to normal priority.
NICE=${BENCH_NICE:-0}
[[ $(id -u) == 0 && -z ${BENCH_NICE:-} ]] && NICE=-10
if [[ $NICE != 0 ]]; then renice -n "$NICE" -p $$ >/dev/null || NICE=0; fi

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- install (idempotent)
install_tools() {
  local need=() p
  # libjpeg-turbo-progs: djpeg, the entropy-decode floor of the cold-resize rows;
  # libturbojpeg0: libjpeg-turbo's TurboJPEG library, sis's JPEG decoder when present
  for p in nginx libnginx-mod-http-image-filter wrk valgrind strace python3-venv curl \
    libjpeg-turbo-progs libturbojpeg0; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || need+=("$p")
  done
  if ((${#need[@]})); then
    log "apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  # Debian's package may have started the system nginx on :80; it is not ours to touch,
  # and our nginx runs from its own config on its own port, so it does not matter.
  local req=$BENCH_DIR/requirements.txt stamp=$VENV/.bench-requirements
  if ! [[ -x $VENV/bin/thumbor ]] || ! cmp -s "$req" "$stamp"; then
    log "venv + thumbor into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
  fi
  local wheels=$CACHE/wheels
  if ! compgen -G "$wheels/scikit_image-0.24.0-*.whl" >/dev/null; then
    log "pip download $SKIMAGE (its data photos are the corpus source)"
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary :all: \
      --python-version 3.11 --platform manylinux2014_x86_64 -d "$wheels" "$SKIMAGE"
  fi
  local wheel
  wheel=$(compgen -G "$wheels/scikit_image-0.24.0-*.whl" || true)
  wheel=${wheel%%$'\n'*}
  if ! [[ -f $CORPUS/MANIFEST ]]; then
    log "building corpus in $CORPUS"
    rm -rf "$CORPUS.tmp"
    "$VENV/bin/python" "$LIB/corpus.py" "$wheel" "$CORPUS.tmp" >&2
    rm -rf "$CORPUS"
    mv "$CORPUS.tmp" "$CORPUS"
  fi
}

# ---------------------------------------------------------------- processes we start
PIDS=()
WORK=""
CEPH_DIR=""
cleanup() {
  local p
  if [[ -n $CEPH_DIR ]]; then bash "$REPO/tests/s3/ceph-s3.sh" stop "$CEPH_DIR" >/dev/null 2>&1 || true; fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ -n $WORK && ${BENCH_KEEP:-0} != 1 ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

wait_http() { # url seconds pid
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

start_nginx() {
  local port=$1 d=$WORK/nginx
  mkdir -p "$d/logs" "$d/cache" "$d/tmp"
  local user=""
  [[ $(id -u) == 0 ]] && user="user root;"
  cat >"$d/nginx.conf" <<EOF
# generated by bench/run.sh
load_module /usr/lib/nginx/modules/ngx_http_image_filter_module.so;
$user
worker_processes auto;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 4096; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  open_file_cache max=4096;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  proxy_cache_path $d/cache levels=1:2 keys_zone=img:16m max_size=1g inactive=1h;
  upstream self { server 127.0.0.1:$port; keepalive 64; }
  server {
    listen 127.0.0.1:$port;
    # scenario 1: originals as static files
    location /orig/ { alias $CORPUS/; }
    # scenarios 3, 4: image_filter resize per request (no cache)
    location /resize/ {
      alias $CORPUS/;
      image_filter resize \$arg_w \$arg_h;
      image_filter_buffer 64M;
      image_filter_jpeg_quality 80;
    }
    # scenario 2: the same behind proxy_cache (repeated hits)
    location /cached/ {
      proxy_pass http://self/resize/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache img;
      proxy_cache_key \$uri\$is_args\$args;
      proxy_cache_valid 200 1h;
      proxy_cache_lock on;
    }
  }
}
EOF
  nginx -p "$d" -c "$d/nginx.conf" -g 'daemon off;' 2>>"$d/logs/stderr.log" &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  wait_http "http://127.0.0.1:$port/orig/MANIFEST" 10 "$NGINX_PID"
}

start_thumbor() {
  local port=$1 d=$WORK/thumbor
  mkdir -p "$d"
  cat >"$d/thumbor.conf" <<EOF
# generated by bench/run.sh: PIL engine, file loader on the corpus, unsafe URLs,
# no storage and no result storage (every request loads and resizes). The URLs are
# /unsafe/fit-in/WxH/...: the engine resizes a lazily opened image, so PIL's draft mode
# (libjpeg-turbo's DCT scaling, 1/2 to 1/8) is on; no smart detection, no filters.
# NON_BLOCKING_SOCKETS: the sockets come from bench/lib/thumbor_fleet.py through --fd.
ENGINE = 'thumbor.engines.pil'
LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = '$CORPUS'
ALLOW_UNSAFE_URL = True
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = None
QUALITY = 80
AUTO_WEBP = False
RESPECT_ORIENTATION = False
MAX_AGE = 0
NON_BLOCKING_SOCKETS = True
EOF
  # one process per core, like nginx's worker_processes auto, each on its own SO_REUSEPORT
  # socket (thumbor --fd), so the kernel spreads wrk's keep-alive connections over all of them
  python3 "$LIB/thumbor_fleet.py" --thumbor "$VENV/bin/thumbor" --port "$port" --processes "$NPROC" \
    -- -c "$d/thumbor.conf" -l error >"$d/log" 2>&1 &
  THUMBOR_PID=$!
  PIDS+=("$THUMBOR_PID")
  wait_http "http://127.0.0.1:$port/healthcheck" 30 "$THUMBOR_PID"
}

start_sis() { # port
  mkdir -p "$WORK/data"
  "$SIS" server --listen "127.0.0.1:$1" --data-dir "$WORK/data" --cache-size "$SIS_CACHE_SIZE" \
    --log-level warn >"$WORK/sis-server.log" 2>&1 &
  SIS_PID=$!
  PIDS+=("$SIS_PID")
  wait_http "http://127.0.0.1:$1/healthz" 30 "$SIS_PID"
}

start_agent() { # port upstream-port
  "$SIS" agent --upstream "http://127.0.0.1:$2" --listen "127.0.0.1:$1" \
    --cache-size "$SIS_CACHE_SIZE" --log-level warn >"$WORK/sis-agent.log" 2>&1 &
  AGENT_PID=$!
  PIDS+=("$AGENT_PID")
  wait_http "http://127.0.0.1:$1/healthz" 30 "$AGENT_PID"
}

# ---------------------------------------------------------------- measuring
RESULTS=""
SETTLE_PIDS=()

record_status() { # scenario target conc status
  printf '{"scenario":"%s","target":"%s","conc":%s,"status":"%s"}\n' "$1" "$2" "$3" \
    "$(tr '\n' ' ' <<<"$4" | sed 's/["\\]//g')" >>"$RESULTS"
}

record_json() { # scenario target conc json [per-process cpu: [[name, pid, us], ...]]
  local procs=${5:-null} total=null
  [[ $procs != null ]] && total=$(python3 -c 'import json,sys; print(sum(r[2] for r in json.loads(sys.argv[1])))' "$procs")
  printf '{"scenario":"%s","target":"%s","conc":%s,"result":%s,"cpu_us":%s,"cpu_procs":%s}\n' "$1" "$2" "$3" "$4" \
    "$total" "$procs" >>"$RESULTS"
}

# The processes whose CPU time a target's run is charged with (their trees: nginx and
# thumbor workers are children). The agent's runs also pay for the server behind it.
target_pids() { # target
  case $1 in
    sis) echo "${SIS_PID:-}" ;;
    nginx*) echo "${NGINX_PID:-}" ;;
    thumbor) echo "${THUMBOR_PID:-}" ;;
    agent) echo "${AGENT_PID:-} ${SIS_PID:-}" ;;
    "sis s3") echo "${S3_PID:-} ${CEPH_PIDS:-}" ;;
    "sis disk"*) echo "${COLD_PID:-}" ;;
    raw\ RGW*) echo "${CEPH_PIDS:-}" ;;
  esac
}

# run_wrk SCENARIO TARGET CONC SCRIPT URL [VAR=VALUE...]
run_wrk() {
  local scen=$1 target=$2 conc=$3 script=$4 url=$5
  shift 5
  local threads=$((conc < NPROC ? conc : NPROC)) out json pids cpu0="" cpu1="" dur=$DUR
  [[ $scen == 3/* ]] && dur=$COLD_DUR
  ((${#SETTLE_PIDS[@]})) && python3 "$LIB/procs.py" settle "${SETTLE_PIDS[@]}"
  log "scenario $scen: $target c=$conc ${dur}s $url"
  pids=$(target_pids "$target")
  [[ -n ${pids// /} ]] && cpu0=$(python3 "$LIB/procs.py" snap $pids)
  out=$(env "$@" BENCH_LUA_DIR="$BENCH_DIR/lua" BENCH_THREADS="$threads" \
    wrk -t"$threads" -c"$conc" -d"${dur}s" --timeout 30s -s "$BENCH_DIR/lua/$script" "$url" 2>&1) || true
  [[ -n $cpu0 ]] && cpu1=$(python3 "$LIB/procs.py" snap $pids)
  json=$(sed -n 's/^BENCHJSON //p' <<<"$out" | tail -1)
  if [[ -n $json ]]; then
    # per process CPU (every nginx worker, every thumbor process): nobody on fewer cores than sis
    local procs=null
    [[ -n $cpu1 ]] && procs=$(python3 "$LIB/procs.py" delta "$cpu0" "$cpu1")
    record_json "$scen" "$target" "$conc" "$json" "$procs"
  else
    record_status "$scen" "$target" "$conc" "failed: $(tail -3 <<<"$out")"
  fi
}

run_limit() { # scenario conc target [--dir-fsync]
  local json
  log "scenario $1: $3 c=$2 ${DUR}s in $WORK/limit"
  json=$(python3 "$LIB/fsync_limit.py" --dir "$WORK/limit" --file "$CORPUS/upload.jpg" \
    --concurrency "$2" --duration "$DUR" "${@:4}" | sed -n 's/^BENCHJSON //p')
  if [[ -n $json ]]; then record_json "$1" "$3" "$2" "$json"; else record_status "$1" "$3" "$2" "failed"; fi
}

first_line() { head -1 "$1"; }
sub() { local s=${1//\{W\}/$2}; echo "${s//\{H\}/$3}"; }

# Are acknowledged uploads fsynced? strace the server's fsync/fdatasync calls during a short
# upload run and compare with the number of uploads acknowledged (2xx).
check_fsync() { # port pid
  local tr=$WORK/strace.out out json
  strace -f -qq -e trace=fsync,fdatasync -o "$tr" -p "$2" &
  local spid=$!
  sleep 1
  out=$(env BENCH_LUA_DIR="$BENCH_DIR/lua" BENCH_UPLOAD_FILE="$CORPUS/upload.jpg" BENCH_NONCE="f$RANDOM" \
    wrk -t1 -c2 -d2s --timeout 30s -s "$BENCH_DIR/lua/upload.lua" "http://127.0.0.1:$1" 2>&1) || true
  sleep 0.5
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  json=$(sed -n 's/^BENCHJSON //p' <<<"$out" | tail -1)
  local calls
  calls=$(grep -cE 'fsync\(|fdatasync\(' "$tr" 2>/dev/null || true)
  printf '{"check":"fsync","fsync_calls":%s,"wrk":%s}\n' "${calls:-0}" "${json:-null}" >>"$RESULTS"
  # where an upload's time goes, by syscall
  strace -c -f -qq -o "$WORK/upload-syscalls.txt" -p "$2" &
  spid=$!
  sleep 1
  env BENCH_LUA_DIR="$BENCH_DIR/lua" BENCH_UPLOAD_FILE="$CORPUS/upload.jpg" BENCH_NONCE="s$RANDOM" \
    wrk -t1 -c2 -d2s --timeout 30s -s "$BENCH_DIR/lua/upload.lua" "http://127.0.0.1:$1" >/dev/null 2>&1 || true
  sleep 0.5
  kill -INT "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
}

# ---------------------------------------------------------------- S3 rows (issue 12)
# sis over S3 beside sis over disk, both with --cache-size 0 (every original read comes from
# the store), and the raw reference: pre-signed PUT/GET of the same bytes straight to the
# same RGW at the same concurrency (bench/lib/s3raw.py, lua/s3raw.lua). The CPU of the
# sis s3 and raw rows includes Ceph's processes (mon, osd, radosgw).
run_s3() { # port-s3 port-cold
  local d=$WORK/ceph envl c=$CONNS st bucket=sis-bench rows=(8.1 8.2 8.3 8.4)
  local fail="" S3B="http://127.0.0.1:$1" DB="http://127.0.0.1:$2"
  log "S3: starting Ceph (tests/s3/ceph-s3.sh)"
  CEPH_DIR=$d
  # the monitor refuses to start when its file system has < 5% free (mon_data_avail_crit);
  # a shared build machine's disk often is that full, and this cluster lives for minutes
  if ! envl=$(CEPH_ARGS="--mon_data_avail_crit=1" bash "$REPO/tests/s3/ceph-s3.sh" start "$d" 2>"$WORK/ceph.log" |
    grep -E '^(S3_ENDPOINT|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY)='); then
    fail="not run: Ceph did not start ($(tail -1 "$WORK/ceph.log"))"
  fi
  if [[ -z $fail ]]; then
    eval "export ${envl//$'\n'/ ; export }"
    export AWS_REGION=us-east-1
    CEPH_PIDS=$(cat "$d"/run/*.pid 2>/dev/null | tr '\n' ' ')
    python3 "$LIB/s3raw.py" bucket --endpoint "$S3_ENDPOINT" --bucket "$bucket" 2>>"$WORK/ceph.log" ||
      fail="not run: bucket creation failed"
  fi
  if [[ -z $fail ]]; then
    "$SIS" server --listen "127.0.0.1:$1" --storage "s3://$bucket/sis" --s3-endpoint "$S3_ENDPOINT" \
      --s3-path-style --cache-size 0 --log-level warn >"$WORK/sis-s3.log" 2>&1 &
    S3_PID=$!
    PIDS+=("$S3_PID")
    "$SIS" server --listen "127.0.0.1:$2" --data-dir "$WORK/data" --cache-size 0 --log-level warn \
      >"$WORK/sis-cold.log" 2>&1 &
    COLD_PID=$!
    PIDS+=("$COLD_PID")
    if ! wait_http "$S3B/healthz" 30 "$S3_PID" || ! wait_http "$DB/healthz" 30 "$COLD_PID"; then
      fail="not run: sis over S3 did not start ($(tail -2 "$WORK/sis-s3.log"))"
    elif ! python3 "$LIB/prepare.py" sis --base "$S3B" --corpus "$CORPUS" --out "$WORK" --prefix s3 --only p2 \
      2>"$WORK/load-s3.log"; then
      fail="not run: loading the corpus into sis over S3 failed ($(tail -1 "$WORK/load-s3.log"))"
    fi
  fi
  if [[ -n $fail ]]; then
    for st in "${rows[@]}"; do record_status "$st" "sis s3" "$c" "$fail"; done
    return 0
  fi
  # raw objects: the 2 MP originals under raw-orig/, read back by the raw GET row
  local i=0 f
  while read -r f; do
    python3 "$LIB/s3raw.py" put --endpoint "$S3_ENDPOINT" --bucket "$bucket" \
      --key "raw-orig/$(printf %06d $i)" --file "$f"
    i=$((i + 1))
  done <"$WORK/files_p2.txt"
  python3 "$LIB/s3raw.py" urls --endpoint "$S3_ENDPOINT" --bucket "$bucket" --method GET \
    --prefix raw-orig --count "$i" --out "$WORK/raw_get.txt"
  SETTLE_PIDS=("$S3_PID" "$COLD_PID" $CEPH_PIDS)
  local cc
  for cc in 1 $c; do
    run_wrk 8.1 "sis s3" "$cc" upload.lua "$S3B" BENCH_UPLOAD_FILE="$CORPUS/upload.jpg" BENCH_NONCE="s3c${cc}r$RANDOM"
    python3 "$LIB/s3raw.py" urls --endpoint "$S3_ENDPOINT" --bucket "$bucket" --method PUT \
      --prefix "raw-put/c$cc" --count 30000 --out "$WORK/raw_put.txt"
    run_wrk 8.1 "raw RGW PUT" "$cc" s3raw.lua "$S3_ENDPOINT" BENCH_URLS="$WORK/raw_put.txt" \
      BENCH_METHOD=PUT BENCH_BODY_FILE="$CORPUS/upload.jpg"
  done
  run_wrk 8.2 "sis disk" "$c" rotate.lua "$DB" BENCH_URLS="$WORK/sis_p2_orig.txt"
  run_wrk 8.2 "sis s3" "$c" rotate.lua "$S3B" BENCH_URLS="$WORK/s3_p2_orig.txt"
  run_wrk 8.2 "raw RGW GET" "$c" s3raw.lua "$S3_ENDPOINT" BENCH_URLS="$WORK/raw_get.txt" BENCH_METHOD=GET
  run_wrk 8.3 "sis disk" "$c" rotate.lua "$DB" BENCH_URLS="$WORK/sis_p2.txt" BENCH_W=300 BENCH_H=200
  run_wrk 8.3 "sis s3" "$c" rotate.lua "$S3B" BENCH_URLS="$WORK/s3_p2.txt" BENCH_W=300 BENCH_H=200
  RSS_S3=$(python3 "$LIB/procs.py" hwm "$S3_PID")
  kill "$S3_PID" "$COLD_PID" 2>/dev/null || true
  wait "$S3_PID" "$COLD_PID" 2>/dev/null || true
  bash "$REPO/tests/s3/ceph-s3.sh" stop "$d" >/dev/null 2>&1 || true
  CEPH_DIR=""
}

# ---------------------------------------------------------------- profiles
# A second `sis server` on the same data dir (the measured one is stopped by then), under perf
# when `perf stat -e instructions true` works, else under valgrind's callgrind.
profile_tool() {
  local probe
  probe=$(perf stat -e instructions true 2>&1) || probe="not supported"
  if [[ $probe != *"not supported"* && $probe != *"not counted"* ]]; then echo perf; else echo callgrind; fi
}

# profile_server TITLE CACHE_SIZE WORKLOAD_FN: appends a section to $PROF
profile_server() {
  local title=$1 cache=$2 workload=$3 port=$P_PROF tool raw=$WORK/profile.raw i
  tool=$(profile_tool)
  rm -f "$raw"
  log "profile ($tool): $title"
  local cmd=("$SIS" server --listen "127.0.0.1:$port" --data-dir "$WORK/data" --cache-size "$cache" --log-level warn)
  if [[ $tool == perf ]]; then
    perf record -g -o "$raw" -- "${cmd[@]}" >"$WORK/profile.log" 2>&1 &
  else
    valgrind --tool=callgrind --callgrind-out-file="$raw" "${cmd[@]}" >"$WORK/profile.log" 2>&1 &
  fi
  local ppid=$!
  PIDS+=("$ppid")
  if ! wait_http "http://127.0.0.1:$port/healthz" 120 "$ppid"; then
    printf '## %s\n\nserver did not start under %s\n\n' "$title" "$tool" >>"$PROF"
    return 0
  fi
  local what
  what=$("$workload" "http://127.0.0.1:$port")
  # SIGINT (what Ctrl-C sends): graceful shutdown, then the profiler writes its data
  kill -INT "$ppid" 2>/dev/null || true
  for ((i = 0; i < 600; i++)); do kill -0 "$ppid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$ppid" 2>/dev/null; then kill "$ppid" 2>/dev/null || true; sleep 2; fi
  {
    echo "## $title"
    echo
    echo "sis server --cache-size $cache under $tool; workload: $what"
    echo "(the whole process: start-up, HTTP and the work itself)"
    echo
    if [[ $tool == perf ]]; then
      perf report -i "$raw" --stdio --no-children --percent-limit 0.5 2>/dev/null | head -120 || true
    else
      echo "### exclusive (self) instructions, top 40 functions"
      callgrind_annotate --inclusive=no "$raw" 2>/dev/null | grep -E '^ *[0-9,]+ +\(' | head -41 || true
      echo
      echo "### inclusive instructions, top 40 functions"
      callgrind_annotate --inclusive=yes "$raw" 2>/dev/null | grep -E '^ *[0-9,]+ +\(' | head -41 || true
    fi
    echo
  } | sed -E -e 's/[[:space:]]*$//' -e 's/ \[[^]]*\]$//' -e 's#(%\)  )(\?\?\?|[^ ]+\.(rs|S|c|h)):#\1#' |
    cut -c1-200 >>"$PROF" || true
}

wl_cold_resize() { # base url
  local n2=8 n12=2 n03=0 i
  [[ $SMOKE == 1 ]] && n2=0 n12=0 n03=1
  for ((i = 0; i < n2; i++)); do
    curl -fsS -o /dev/null "$1$(sub "$(sed -n "$((i + 1))p" "$WORK/sis_p2.txt")" 300 200)" || true
  done
  for ((i = 0; i < n03; i++)); do
    curl -fsS -o /dev/null "$1$(sub "$(sed -n "$((i + 1))p" "$WORK/sis_p03.txt")" 300 200)" || true
  done
  for ((i = 0; i < n12; i++)); do
    curl -fsS -o /dev/null "$1$(sub "$(sed -n "$((i + 1))p" "$WORK/sis_p12.txt")" 300 200)" || true
  done
  echo "GET cold resizes into a 300x200 box (fit=contain) of different originals: $n2 x 2 MP JPEG, $n12 x 12 MP JPEG, $n03 x 0.3 MP JPEG"
}

wl_original() { # base url: scenario 1 (cached original), for the (1) ratio
  local d=5 out n
  [[ $SMOKE == 1 ]] && d=1
  curl -fsS -o /dev/null "$1$(first_line "$WORK/sis_p2_orig.txt")" || true
  out=$(env BENCH_LUA_DIR="$BENCH_DIR/lua" wrk -t1 -c4 -d"${d}s" --timeout 30s -s "$BENCH_DIR/lua/get.lua" \
    "$1$(first_line "$WORK/sis_p2_orig.txt")" 2>&1) || true
  n=$(sed -n 's/^BENCHJSON {"requests":\([0-9]*\).*/\1/p' <<<"$out")
  echo "scenario 1 (GET the cached 2 MP original) with wrk -c4 for ${d} s under the profiler: ${n:-0} requests"
}

# ---------------------------------------------------------------- main
main() {
  install_tools

  # release for measurements; a smoke run uses the dev build the test suite already made
  local profile=${BENCH_CARGO_PROFILE:-release}
  [[ $SMOKE == 1 ]] && profile=${BENCH_CARGO_PROFILE:-dev}
  local target_dir=${CARGO_TARGET_DIR:-$REPO/target} sub=$profile
  [[ $profile == dev ]] && sub=debug
  SIS=$target_dir/$sub/sis
  SIS_PROFILE=$profile
  local sis_state="ok"
  if [[ ${BENCH_BUILD:-1} == 1 ]]; then
    log "cargo build --profile $profile -p sis"
    if ! (cd "$REPO" && nice -n $((-NICE)) cargo build --profile "$profile" -p sis --quiet) >"$CACHE/build.log" 2>&1; then
      sis_state="not run: sis did not build (cargo build --profile $profile -p sis)"
    fi
  fi
  [[ $sis_state == ok && ! -x $SIS ]] && sis_state="not run: no sis binary at $SIS"
  if [[ $sis_state == ok ]] && ! "$SIS" server --help >/dev/null 2>&1; then
    sis_state="not run: this sis build has no server mode yet"
  fi

  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/sis-bench.XXXXXX")
  mkdir -p "$WORK/limit"
  RESULTS=$WORK/results.jsonl
  : >"$RESULTS"
  local ports
  read -r -a ports <<<"$(python3 "$LIB/procs.py" ports 7)"
  local P_NGINX=${ports[0]} P_THUMBOR=${ports[1]} P_SIS=${ports[2]} P_AGENT=${ports[3]} P_PROF=${ports[4]}
  local P_S3=${ports[5]} P_COLD=${ports[6]}

  python3 "$LIB/prepare.py" peers --corpus "$CORPUS" --out "$WORK"
  local nginx_state=ok thumbor_state=ok agent_state=ok
  start_nginx "$P_NGINX" || nginx_state="not run: nginx did not start ($(tail -2 "$WORK/nginx/logs/error.log" 2>/dev/null))"
  start_thumbor "$P_THUMBOR" || thumbor_state="not run: thumbor did not start ($(tail -2 "$WORK/thumbor/log"))"
  if [[ $sis_state == ok ]]; then
    if ! start_sis "$P_SIS"; then
      sis_state="not run: sis server did not start ($(tail -2 "$WORK/sis-server.log"))"
    elif ! python3 "$LIB/prepare.py" sis --base "http://127.0.0.1:$P_SIS" --corpus "$CORPUS" \
      --out "$WORK" 2>"$WORK/load.log"; then
      sis_state="not run: loading the corpus failed ($(tail -1 "$WORK/load.log"))"
    fi
  fi
  if [[ $sis_state != ok ]]; then
    agent_state="not run: no server"
  elif ! "$SIS" agent --help >/dev/null 2>&1; then
    agent_state="not run: agent not built"
  elif ! start_agent "$P_AGENT" "$P_SIS"; then
    if grep -qi 'not yet' "$WORK/sis-agent.log"; then
      agent_state="not run: agent not built ($(grep -i -m1 'not yet' "$WORK/sis-agent.log"))"
    else
      agent_state="not run: agent did not start ($(tail -2 "$WORK/sis-agent.log"))"
    fi
  fi
  log "states: sis=$sis_state nginx=$nginx_state thumbor=$thumbor_state agent=$agent_state"
  SETTLE_PIDS=()
  [[ $nginx_state == ok ]] && SETTLE_PIDS+=("$NGINX_PID")
  [[ $thumbor_state == ok ]] && SETTLE_PIDS+=("$THUMBOR_PID")
  [[ $sis_state == ok ]] && SETTLE_PIDS+=("$SIS_PID")
  [[ $agent_state == ok ]] && SETTLE_PIDS+=("$AGENT_PID")

  local S="http://127.0.0.1:$P_SIS" A="http://127.0.0.1:$P_AGENT" N="http://127.0.0.1:$P_NGINX"
  local T="http://127.0.0.1:$P_THUMBOR" c=$CONNS
  local sis_orig sis_var
  if [[ $sis_state == ok ]]; then
    sis_orig=$(first_line "$WORK/sis_p2_orig.txt")
    sis_var=$(sub "$(first_line "$WORK/sis_p2.txt")" 300 200)
    if ! curl -fsS -o /dev/null "$S$sis_orig" || ! curl -fsS -o /dev/null "$S$sis_var"; then
      log "warning: sis warm-up request failed"
    fi
  fi
  if [[ $nginx_state == ok ]]; then
    curl -fsS -o /dev/null "$N/cached/p2_0000.jpg?w=300&h=200" || true
    curl -fsS -o /dev/null "$N/cached/p2_0000.jpg?w=300&h=200" || true
  fi

  local st
  # (1) GET a stored 2 MP original
  if [[ $sis_state == ok ]]; then run_wrk 1 sis "$c" get.lua "$S$sis_orig"; else record_status 1 sis "$c" "$sis_state"; fi
  if [[ $nginx_state == ok ]]; then run_wrk 1 nginx "$c" get.lua "$N/orig/p2_0000.jpg"; else record_status 1 nginx "$c" "$nginx_state"; fi
  # (2) GET a 300x200 variant already cached
  if [[ $sis_state == ok ]]; then run_wrk 2 sis "$c" get.lua "$S$sis_var"; else record_status 2 sis "$c" "$sis_state"; fi
  if [[ $nginx_state == ok ]]; then run_wrk 2 "nginx proxy_cache" "$c" get.lua "$N/cached/p2_0000.jpg?w=300&h=200"; else record_status 2 "nginx proxy_cache" "$c" "$nginx_state"; fi
  # (3) cold resizes, one row per (size class, box): every request another original (or size),
  # each target fits the photo inside the box; plus the entropy-decode floor (djpeg) per row
  local scen tag row bw bh floor
  for row in $COLD_ROWS; do
    tag=${row%%:*} bw=${row#*:} bh=${bw#*x} bw=${bw%x*}
    scen="3/$tag/${bw}x$bh"
    floor=$("$VENV/bin/python" "$LIB/procs.py" djpeg "$bw" "$bh" $(cat "$WORK/files_$tag.txt") 2>/dev/null || echo null)
    printf '{"check":"djpeg","scenario":"%s","cpu_us":%s}\n' "$scen" "${floor:-null}" >>"$RESULTS"
    if [[ $sis_state == ok ]]; then run_wrk "$scen" sis "$c" rotate.lua "$S" BENCH_URLS="$WORK/sis_$tag.txt" BENCH_W="$bw" BENCH_H="$bh"; else record_status "$scen" sis "$c" "$sis_state"; fi
    if [[ $nginx_state == ok ]]; then run_wrk "$scen" "nginx image_filter" "$c" rotate.lua "$N" BENCH_URLS="$WORK/nginx_$tag.txt" BENCH_W="$bw" BENCH_H="$bh"; else record_status "$scen" "nginx image_filter" "$c" "$nginx_state"; fi
    if [[ $thumbor_state == ok ]]; then run_wrk "$scen" thumbor "$c" rotate.lua "$T" BENCH_URLS="$WORK/thumbor_$tag.txt" BENCH_W="$bw" BENCH_H="$bh"; else record_status "$scen" thumbor "$c" "$thumbor_state"; fi
  done
  # (6) scenarios 1-3 through the agent (cold resizes at width 302: sizes the server has not seen)
  if [[ $agent_state == ok ]]; then
    if ! curl -fsS -o /dev/null "$A$sis_orig" || ! curl -fsS -o /dev/null "$A$sis_var"; then
      log "warning: agent warm-up failed"
    fi
    run_wrk 6.1 agent "$c" get.lua "$A$sis_orig"
    run_wrk 6.2 agent "$c" get.lua "$A$sis_var"
    run_wrk 6.3 agent "$c" rotate.lua "$A" BENCH_URLS="$WORK/sis_$TAG3.txt" BENCH_W=302 BENCH_H=200
  else
    for st in 6.1 6.2 6.3; do record_status $st agent "$c" "$agent_state"; done
  fi
  # (5) multipart upload of a unique ~200 KB JPEG at concurrency 1 and $c; (7) the raw limit
  local cc
  for cc in 1 $c; do
    if [[ $sis_state == ok ]]; then
      run_wrk 5 sis "$cc" upload.lua "$S" BENCH_UPLOAD_FILE="$CORPUS/upload.jpg" BENCH_NONCE="c${cc}r$RANDOM"
    else
      record_status 5 sis "$cc" "$sis_state"
    fi
    run_limit 7 "$cc" "raw fs limit"
    run_limit 7 "$cc" "raw + dir fsync" --dir-fsync
  done
  [[ $sis_state == ok ]] && check_fsync "$P_SIS" "$SIS_PID"

  # peak RSS of our processes (lifetime peak, so this covers every scenario)
  local rss_server=0 rss_agent=0
  [[ $sis_state == ok ]] && rss_server=$(python3 "$LIB/procs.py" hwm "$SIS_PID")
  [[ $agent_state == ok ]] && rss_agent=$(python3 "$LIB/procs.py" hwm "$AGENT_PID")
  local same_fs=no
  [[ $(stat -f -c %i "$WORK/limit") == $(stat -f -c %i "$WORK/data" 2>/dev/null || echo x) ]] && same_fs=yes

  # stop the server before profiling a second instance on the same data dir
  if [[ $agent_state == ok ]]; then kill "$AGENT_PID" 2>/dev/null || true; wait "$AGENT_PID" 2>/dev/null || true; fi
  if [[ $sis_state == ok ]]; then kill "$SIS_PID" 2>/dev/null || true; wait "$SIS_PID" 2>/dev/null || true; fi
  RSS_S3=0
  if [[ $S3_ROWS == 1 && $sis_state == ok ]]; then run_s3 "$P_S3" "$P_COLD"; fi

  local cpu
  cpu=$(sed -n 's/^model name[[:space:]]*: //p;T;q' /proc/cpuinfo)
  cat >"$WORK/meta.json" <<EOF
{"date": "$(date -u '+%Y-%m-%d %H:%M UTC')", "nproc": $NPROC, "cpu": "$cpu",
 "kernel": "$(uname -r)", "cargo_profile": "$SIS_PROFILE",
 "load_start": "$LOAD_START", "nice": $NICE, "load_end": "$(cut -d' ' -f1-3 /proc/loadavg)", "mem": "$(free -g | awk '/^Mem:/{print $2}') GiB",
 "duration_s": $DUR, "connections": $CONNS, "smoke": $SMOKE,
 "sis_cache_size": "$SIS_CACHE_SIZE", "rss_server_kib": $rss_server, "rss_agent_kib": $rss_agent,
 "rss_s3_kib": ${RSS_S3:-0},
 "sis_commit": "$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$REPO" && [[ -n $(git status --porcelain -- service Cargo.lock 2>/dev/null) ]] && echo ' + uncommitted changes in service/')",
 "sis_scheme": "$(cat "$WORK/sis_scheme" 2>/dev/null || echo none)",
 "corpus": "$(basename "$CORPUS"): $(python3 "$LIB/procs.py" corpus "$CORPUS/MANIFEST")", "cold_rows": "$COLD_ROWS", "cold_duration_s": $COLD_DUR, "limit_same_fs": "$same_fs",
 "nginx": "$(nginx -v 2>&1 | sed 's/.*nginx\///')",
 "thumbor": "$("$VENV/bin/thumbor" --version 2>/dev/null | sed -n '1{s/"//g;p}')",
 "wrk": "$(wrk -v 2>&1 | awk 'NR==1{print $2}')"}
EOF
  PROF=""
  if [[ $PROFILE == 1 && $sis_state == ok ]]; then
    PROF=$OUT/profile.txt
    {
      echo "# sis profiles, $(date -u '+%Y-%m-%d %H:%M UTC'), $NPROC x $cpu"
      echo "# sis build: cargo profile $SIS_PROFILE, commit $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null)"
      echo
    } >"$PROF"
    profile_server "cold resize (scenario 3: 2 MP and 12 MP into a 300x200 box)" 0 wl_cold_resize
    profile_server "serving a cached original (scenario 1)" "$SIS_CACHE_SIZE" wl_original
    if [[ -s $WORK/upload-syscalls.txt ]]; then
      {
        echo "## uploads (scenario 5): syscalls of the server (strace -c -f) during 2 s of uploads at c=2"
        echo
        cat "$WORK/upload-syscalls.txt"
      } >>"$PROF"
    fi
    log "profile: $PROF"
  fi

  local report=$OUT/latest.md
  [[ $SMOKE == 1 ]] && report=$OUT/smoke.md
  python3 "$LIB/report.py" "$WORK/meta.json" "$RESULTS" "$report" "${PROF:-}"
  cp "$RESULTS" "$OUT/$(basename "$report" .md).jsonl"
  log "report: $report"

  if [[ $SMOKE == 1 ]]; then
    python3 "$LIB/report.py" --check "$RESULTS"
  fi
}

main "$@"
