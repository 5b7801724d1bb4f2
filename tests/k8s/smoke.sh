#!/usr/bin/env bash
# Self-test of tests/k8s/cluster.sh: the control plane it starts behaves like a real one.
# Installs (idempotent, cached), starts a cluster in a temp dir, checks custom resources
# (the reflect2 fix), StatefulSet -> Pod + PVC, garbage collection, status-driven readiness,
# RBAC and ServiceAccount tokens, helm; stops it. Ends with `N passed, N failed`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLUSTER="$HERE/cluster.sh"
PASSED=0
FAILED=0
STATE=""
SUMMARY_PRINTED=0

pass() {
    PASSED=$((PASSED + 1))
    echo "ok   - $1"
}
fail() {
    FAILED=$((FAILED + 1))
    echo "FAIL - $1"
}
# check NAME CMD...: one test case.
check() {
    local name="$1"
    shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}
quiet() { "$@" >/dev/null; }
# eventually TIMEOUT_S CMD...: polls CMD until it succeeds.
eventually() {
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

cleanup() {
    local rc=$?
    if [ -n "$STATE" ]; then
        if [ "$FAILED" -gt 0 ] || [ "$rc" -ne 0 ]; then
            for f in "$STATE"/kube-apiserver.log "$STATE"/kube-controller-manager.log "$STATE"/etcd.log; do
                [ -s "$f" ] && { echo "----- tail $f"; tail -n 30 "$f"; }
            done
        fi
        "$CLUSTER" stop "$STATE" || true
        rm -rf "$STATE"
        STATE=""
    fi
    if [ "$SUMMARY_PRINTED" = 0 ]; then
        echo "FAIL - aborted (exit $rc) before all checks ran"
        echo "$PASSED passed, $((FAILED + 1)) failed"
        exit 1
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$(date +%s)
"$CLUSTER" install
t1=$(date +%s)
echo "install: $((t1 - t0)) s"
STATE="$(mktemp -d "${TMPDIR:-/tmp}/sis-k8s-smoke.XXXXXX")"
"$CLUSTER" start "$STATE" >/dev/null
t2=$(date +%s)
echo "start: $((t2 - t1)) s"
# shellcheck disable=SC1091
. "$STATE/env"
k() { kubectl --request-timeout=20s "$@"; }
NS=smoke
k create namespace "$NS" >/dev/null

# --- 1. custom resource round-trip (the vendored reflect2 1.0.1 segfaults here under Go >= 1.18)
cat <<'EOF' | k apply -f - >/dev/null
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.sis.dev}
spec:
  group: smoke.sis.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
              color: {type: string, default: blue}
EOF
check "CRD becomes Established" quiet \
    k wait --for condition=established --timeout=60s crd/widgets.smoke.sis.dev
cr_round_trip() {
    cat <<'EOF' | k -n smoke apply -f - >/dev/null || return 1
apiVersion: smoke.sis.dev/v1
kind: Widget
metadata: {name: w1}
spec: {size: 3}
EOF
    [ "$(k -n smoke get widget w1 -o jsonpath='{.spec.size}/{.spec.color}')" = "3/blue" ]
}
check "custom resource stored and read back (with schema default)" eventually 30 cr_round_trip
check "schema rejects an invalid custom resource" \
    bash -c "! kubectl -n smoke patch widget w1 --type=merge -p '{\"spec\":{\"size\":-1}}' 2>/dev/null"
check "kube-apiserver still running after storing a CR" \
    bash -c "kill -0 \$(cat '$STATE/pids/kube-apiserver.pid')"

# --- 2. StatefulSet with a volumeClaimTemplate -> controller-manager creates Pod and PVC
cat <<'EOF' | k -n smoke apply -f - >/dev/null
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: example.invalid/web:1
        ports: [{containerPort: 8080, protocol: TCP}]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
EOF
check "StatefulSet controller creates Pod web-0" eventually 90 k -n smoke get pod web-0
check "StatefulSet controller creates PVC data-web-0" eventually 30 k -n smoke get pvc data-web-0
check "Pod web-0 stays Pending (no scheduler/kubelet)" \
    test "$(k -n smoke get pod web-0 -o jsonpath='{.status.phase}')" = Pending

# --- 3. simulated kubelet: Pod status Running/Ready -> StatefulSet readyReplicas 1
now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
check "Pod status patched to Running/Ready" quiet \
    k -n smoke patch pod web-0 --subresource=status --type=merge -p "{\"status\":{\"phase\":\"Running\",
      \"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"},
                      {\"type\":\"ContainersReady\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"}]}}"
sts_ready() { [ "$(k -n smoke get sts web -o jsonpath='{.status.readyReplicas}')" = 1 ]; }
check "StatefulSet status.readyReplicas becomes 1" eventually 60 sts_ready

# --- 4. garbage collection by ownerReferences
k -n smoke create configmap gc-owner --from-literal=a=b >/dev/null
owner_uid="$(k -n smoke get configmap gc-owner -o jsonpath='{.metadata.uid}')"
cat <<EOF | k -n smoke apply -f - >/dev/null
apiVersion: v1
kind: ConfigMap
metadata:
  name: gc-child
  ownerReferences:
  - {apiVersion: v1, kind: ConfigMap, name: gc-owner, uid: "$owner_uid"}
data: {k: v}
EOF
k -n smoke delete configmap gc-owner --wait=false >/dev/null
check "garbage collector removes the owned ConfigMap" \
    eventually 90 bash -c "! kubectl -n smoke get configmap gc-child 2>/dev/null"

# --- 5. auth: RBAC is enforced; ServiceAccount token Secrets are minted and accepted
user_secrets() {
    kubectl --server "$SIS_K8S_SERVER" --certificate-authority "$SIS_K8S_CA" --token "$1" \
        --kubeconfig /dev/null -n smoke get secrets 2>&1
}
check "RBAC forbids a non-admin user" bash -c "$(declare -f user_secrets); user_secrets '$SIS_K8S_USER_TOKEN' | grep -q Forbidden"
k -n smoke create serviceaccount robot >/dev/null
sa_token() {
    local secret
    secret="$(k -n smoke get serviceaccount robot -o jsonpath='{.secrets[0].name}')"
    [ -n "$secret" ] && k -n smoke get secret "$secret" -o jsonpath='{.data.token}' | base64 -d
}
check "controller-manager mints a ServiceAccount token Secret" eventually 60 sa_token
sa_tok="$(sa_token || true)"
check "the ServiceAccount token authenticates (then RBAC forbids)" \
    bash -c "$(declare -f user_secrets); user_secrets '$sa_tok' | grep -q 'system:serviceaccount:smoke:robot'"
k create rolebinding robot-view -n smoke --clusterrole=view --serviceaccount=smoke:robot >/dev/null
check "a RoleBinding grants the ServiceAccount access" \
    eventually 30 bash -c "kubectl --server '$SIS_K8S_SERVER' --certificate-authority '$SIS_K8S_CA' \
        --token '$sa_tok' --kubeconfig /dev/null -n smoke get pods"

# --- 6. helm from the cache talks to the cluster
check "helm is 3.17" bash -c "'$SIS_HELM' version --short | grep -q '^v3\.17\.'"
check "helm lists releases on the cluster" bash -c "'$SIS_HELM' list -A >/dev/null"

# --- 7. stop is clean
pids="$(cat "$STATE"/pids/*.pid | tr '\n' ' ')"
"$CLUSTER" stop "$STATE" >/dev/null 2>&1
# Gone, or a zombie waiting for whoever adopted it (cluster.sh start exited long ago).
all_gone() {
    local p st
    for p in $pids; do
        st="$(ps -o stat= -p "$p" 2>/dev/null || true)"
        case "$st" in "" | Z*) ;; *) return 1 ;; esac
    done
}
check "stop ends all components ($pids)" all_gone

# Stop (and print log tails on failure) before the summary, which must be the last line.
trap - EXIT
SUMMARY_PRINTED=1
cleanup
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
