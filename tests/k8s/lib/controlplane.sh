# shellcheck shell=bash
# `cluster.sh start|stop|status`: etcd + kube-apiserver + kube-controller-manager on 127.0.0.1,
# free ports picked at start, all state (PKI, etcd data, pids, logs) in one STATE_DIR.

K8S_COMPONENTS=(etcd kube-apiserver kube-controller-manager)

# free_port VAR: sets VAR to a TCP port that no socket on this machine uses right now, below the ephemeral
# range so outgoing connections cannot take it between our check and the bind. Ports handed
# out in this process are never handed out twice.
_USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        case "$_USED_PORTS" in *" $p "*) continue ;; esac
        if [ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]; then
            _USED_PORTS="$_USED_PORTS$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}

# PKI: CA, apiserver serving cert (127.0.0.1 + in-cluster names), service-account key pair.
gen_pki() {
    local pki="$1/pki"
    mkdir -p "$pki"
    chmod 700 "$pki"
    (
        cd "$pki"
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
            -keyout ca.key -out ca.crt -subj "/CN=sis-test-ca" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
        openssl req -newkey rsa:2048 -nodes -sha256 -keyout apiserver.key -out apiserver.csr \
            -subj "/CN=kube-apiserver"
        cat >apiserver.ext <<'EOF'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
            -days 3650 -extfile apiserver.ext -out apiserver.crt
        openssl genrsa -out sa.key 2048
        openssl rsa -in sa.key -pubout -out sa.pub
    ) >"$1/pki.log" 2>&1 || {
        tail_logs "$1/pki.log"
        die "openssl failed"
    }
}

# write_kubeconfig FILE SERVER CA TOKEN USER
write_kubeconfig() {
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sis-test
  cluster:
    server: $2
    certificate-authority-data: $(base64 -w0 <"$3")
users:
- name: $5
  user:
    token: $4
contexts:
- name: sis-test
  context:
    cluster: sis-test
    user: $5
    namespace: default
current-context: sis-test
EOF
    chmod 600 "$1"
}

pid_of() { cat "$1/pids/$2.pid" 2>/dev/null || true; }

# alive STATE_DIR NAME: the recorded pid runs and really is ours (its command line names STATE_DIR).
alive() {
    local pid
    pid="$(pid_of "$1" "$2")"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$1"
}

# launch STATE_DIR NAME CMD...: background process, stdin/stdout/stderr detached from ours so
# `$(cluster.sh start)` does not hang on the pipe.
launch() {
    local s="$1" name="$2"
    shift 2
    mkdir -p "$s/pids"
    "$@" </dev/null >>"$s/$name.log" 2>&1 &
    echo $! >"$s/pids/$name.pid"
}

# wait_for TIMEOUT_S DESCRIPTION NAME... -- CMD...: polls CMD until it succeeds; fails early
# when one of the named components died.
wait_for() {
    local timeout="$1" what="$2" s="$STATE" n deadline
    shift 2
    local names=()
    while [ "$1" != "--" ]; do
        names+=("$1")
        shift
    done
    shift
    deadline=$(($(date +%s) + timeout))
    while ! "$@" >/dev/null 2>&1; do
        for n in "${names[@]}"; do
            alive "$s" "$n" || {
                log "$n exited while waiting for $what"
                return 1
            }
        done
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "timed out after ${timeout}s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

api_get() {
    curl -fsS --max-time 5 --cacert "$STATE/pki/ca.crt" \
        -H "Authorization: Bearer $(cat "$STATE/admin.token")" "https://127.0.0.1:$(cat "$STATE/ports/apiserver")$1"
}

readyz_ok() { [ "$(api_get /readyz)" = ok ]; }
etcd_ok() { curl -fsS --max-time 3 "http://127.0.0.1:$(cat "$STATE/ports/etcd-client")/health" | grep -q true; }
kcm_ok() { curl -fsSk --max-time 3 "https://127.0.0.1:$(cat "$STATE/ports/controller-manager")/healthz" | grep -q ok; }
default_sa_token_ok() {
    kubectl --kubeconfig "$STATE/kubeconfig" -n default get serviceaccount default \
        -o jsonpath='{.secrets[0].name}' | grep -q .
}

port_clash() { grep -qsi 'address already in use' "$STATE"/*.log; }

# One attempt at starting everything; returns non-zero (after stopping what it started) on failure.
start_once() {
    local s="$STATE" ep pp ap kp
    rm -rf "$s/etcd-data" "$s/ports" "$s/pids"
    rm -f "$s"/{etcd,kube-apiserver,kube-controller-manager}.log
    mkdir -p "$s/ports"
    free_port ep
    free_port pp
    free_port ap
    free_port kp
    echo "$ep" >"$s/ports/etcd-client"
    echo "$pp" >"$s/ports/etcd-peer"
    echo "$ap" >"$s/ports/apiserver"
    echo "$kp" >"$s/ports/controller-manager"
    write_kubeconfig "$s/kubeconfig" "https://127.0.0.1:$ap" "$s/pki/ca.crt" "$(cat "$s/admin.token")" admin
    write_kubeconfig "$s/controller-manager.kubeconfig" "https://127.0.0.1:$ap" "$s/pki/ca.crt" \
        "$(cat "$s/controller-manager.token")" system:kube-controller-manager

    log "etcd on 127.0.0.1:$ep"
    launch "$s" etcd etcd --name sis-test --data-dir "$s/etcd-data" \
        --listen-client-urls "http://127.0.0.1:$ep" --advertise-client-urls "http://127.0.0.1:$ep" \
        --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
        --initial-cluster "sis-test=http://127.0.0.1:$pp" --initial-cluster-state new
    wait_for 60 "etcd health" etcd -- etcd_ok || return 1

    log "kube-apiserver on https://127.0.0.1:$ap"
    launch "$s" kube-apiserver "$K8S_BIN_DIR/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$ep" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$ap" --insecure-port 0 \
        --cert-dir "$s/apiserver-certs" \
        --tls-cert-file "$s/pki/apiserver.crt" --tls-private-key-file "$s/pki/apiserver.key" \
        --client-ca-file "$s/pki/ca.crt" \
        --token-auth-file "$s/tokens.csv" \
        --service-account-key-file "$s/pki/sa.pub" \
        --service-account-signing-key-file "$s/pki/sa.key" \
        --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
        --authorization-mode RBAC \
        --enable-admission-plugins NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,DefaultTolerationSeconds,ResourceQuota,StorageObjectInUseProtection,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
        --service-cluster-ip-range 10.0.0.0/24 \
        --allow-privileged=true --profiling=false --v=1
    wait_for 180 "kube-apiserver /readyz" etcd kube-apiserver -- readyz_ok || return 1

    log "kube-controller-manager (healthz on 127.0.0.1:$kp)"
    launch "$s" kube-controller-manager "$K8S_BIN_DIR/kube-controller-manager" \
        --kubeconfig "$s/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$s/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$s/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$kp" --port 0 --cert-dir "$s/controller-manager-certs" \
        --service-account-private-key-file "$s/pki/sa.key" \
        --root-ca-file "$s/pki/ca.crt" \
        --cluster-signing-cert-file "$s/pki/ca.crt" --cluster-signing-key-file "$s/pki/ca.key" \
        --controllers '*' --use-service-account-credentials=true --leader-elect=false \
        --profiling=false --v=1
    wait_for 120 "kube-controller-manager /healthz" etcd kube-apiserver kube-controller-manager -- kcm_ok || return 1
    wait_for 120 "namespace default" etcd kube-apiserver kube-controller-manager -- \
        api_get /api/v1/namespaces/default || return 1
    wait_for 120 "serviceaccount default/default and its token Secret" \
        etcd kube-apiserver kube-controller-manager -- default_sa_token_ok || return 1
}

write_env() {
    local s="$1" ap
    ap="$(cat "$s/ports/apiserver")"
    cat >"$s/env" <<EOF
# Source me: . $s/env
export KUBECONFIG='$s/kubeconfig'
export SIS_K8S_STATE_DIR='$s'
export SIS_K8S_SERVER='https://127.0.0.1:$ap'
export SIS_K8S_CA='$s/pki/ca.crt'
export SIS_K8S_TOKEN='$(cat "$s/admin.token")'
export SIS_K8S_USER_TOKEN='$(cat "$s/user.token")'
export SIS_K8S_ETCD='http://127.0.0.1:$(cat "$s/ports/etcd-client")'
export SIS_K8S_SERVER_VERSION='v$K8S_VERSION'
export SIS_HELM='$HELM_DIR/helm'
export PATH='$HELM_DIR':"\$PATH"
EOF
}

# k8s_start [STATE_DIR]: prints STATE_DIR (the only line on stdout) once everything is ready.
k8s_start() {
    k8s_install
    STATE="${1:-}"
    if [ -z "$STATE" ]; then
        STATE="$(mktemp -d "${TMPDIR:-/tmp}/sis-k8s.XXXXXX")"
    fi
    mkdir -p "$STATE"
    STATE="$(cd "$STATE" && pwd)"
    local n
    for n in "${K8S_COMPONENTS[@]}"; do
        if alive "$STATE" "$n"; then
            if [ -f "$STATE/env" ] && (readyz_ok) 2>/dev/null; then
                log "already running in $STATE"
                printf '%s\n' "$STATE"
                return 0
            fi
            die "$n already runs from $STATE but the cluster is not ready; run: $0 stop $STATE"
        fi
    done
    local t0
    t0=$(date +%s)
    [ -f "$STATE/pki/sa.pub" ] || gen_pki "$STATE"
    if [ ! -f "$STATE/tokens.csv" ]; then
        (umask 077
        openssl rand -hex 24 >"$STATE/admin.token"
        openssl rand -hex 24 >"$STATE/controller-manager.token"
        openssl rand -hex 24 >"$STATE/user.token"
        {
            echo "$(cat "$STATE/admin.token"),admin,uid-admin,\"system:masters\""
            echo "$(cat "$STATE/controller-manager.token"),system:kube-controller-manager,uid-kcm"
            echo "$(cat "$STATE/user.token"),sis-test-user,uid-user"
        } >"$STATE/tokens.csv")
    fi
    local attempt
    for attempt in 1 2 3; do
        if start_once; then
            write_env "$STATE"
            log "control plane ready in $(($(date +%s) - t0)) s: . $STATE/env"
            printf '%s\n' "$STATE"
            return 0
        fi
        if port_clash && [ "$attempt" -lt 3 ]; then
            log "port clash; retrying with other ports"
            stop_components "$STATE"
            continue
        fi
        break
    done
    tail_logs "$STATE/etcd.log" "$STATE/kube-apiserver.log" "$STATE/kube-controller-manager.log"
    stop_components "$STATE"
    die "control plane did not come up (state and logs in $STATE)"
}

stop_components() {
    local s="$1" n pid
    for n in kube-controller-manager kube-apiserver etcd; do
        if alive "$s" "$n"; then
            pid="$(pid_of "$s" "$n")"
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do
                alive "$s" "$n" || break
                sleep 0.1
            done
            if alive "$s" "$n"; then
                log "$n ($pid) ignored SIGTERM; killing"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        rm -f "$s/pids/$n.pid"
    done
}

k8s_stop() {
    [ $# -ge 1 ] || die "usage: cluster.sh stop STATE_DIR"
    [ -d "$1" ] || {
        log "$1 does not exist; nothing to stop"
        return 0
    }
    local s
    s="$(cd "$1" && pwd)"
    stop_components "$s"
    log "stopped control plane in $s"
}

k8s_status() {
    [ $# -ge 1 ] || die "usage: cluster.sh status STATE_DIR"
    STATE="$(cd "$1" && pwd)"
    local n rc=0
    for n in "${K8S_COMPONENTS[@]}"; do
        if alive "$STATE" "$n"; then
            echo "$n: running (pid $(pid_of "$STATE" "$n"))"
        else
            echo "$n: stopped"
            rc=1
        fi
    done
    if [ "$rc" = 0 ] && readyz_ok 2>/dev/null; then echo "readyz: ok"; else
        echo "readyz: not ok"
        rc=1
    fi
    return "$rc"
}
