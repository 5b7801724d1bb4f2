#!/usr/bin/env bash
# sis-operator on a real control plane (etcd + kube-apiserver + kube-controller-manager 1.20
# from tests/k8s/cluster.sh; no mocks). Builds `sis` and `sis-operator`, starts a cluster in a
# temp dir, and runs the real-cluster tests in operator/tests/k8s.rs (issue 5, items 1-7):
#   1 CRD + sample -> every child and its fields     5 delete -> GC removes children, PVC kept
#   2 spec changes converge, new pod-template hash    6 two operators: only the leader writes
#   3 pods Ready -> Ready=True, `kubectl get sis`     7 contract: pod-template command/args/env
#   4 invalid specs: schema 422s, Degraded, no crash    start the real `sis` binaries
#   8 an apply the apiserver refuses: Degraded/ApplyFailed, event, error metric, backoff retry
#   9 `kubectl scale` via the scale subresource; HPA (autoscaling/v2beta2 on 1.20) created and
#     removed as autoscaling is toggled, replicas handed over; agent PDB (policy/v1beta1)
#  10 placement in both tiers, rollout settings, Progressing conditions, a new Secret value
#     rolls the pods
#  11 S3 storage: server Deployment (2 replicas, S3 flags, keys from a Secret, no PVC), server
#     PDB, both storages at once and a volume<->S3 switch refused (Degraded), nothing deleted
#  12 variant guard + stripMetadata: env in both tiers, the real server enforces it, a new
#     signing key value rolls both tiers, signed without a key is Degraded
# Each test owns a namespace and its own operator process(es). Also checks `sis-operator crd`
# against the apiserver with a server-side dry run.
# Ends with `N passed, N failed`; exit status non-zero on any failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CLUSTER="$HERE/cluster.sh"
STATE=""
OUT=""
PASSED=0
FAILED=0
SUMMARY_PRINTED=0

pass() { PASSED=$((PASSED + 1)); echo "ok   - $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $1"; }

cleanup() {
    local rc=$?
    if [ -n "$STATE" ]; then
        if [ "$FAILED" -gt 0 ] || [ "$rc" -ne 0 ]; then
            for f in "$STATE"/kube-apiserver.log "$STATE"/kube-controller-manager.log; do
                [ -s "$f" ] && { echo "----- tail $f"; tail -n 20 "$f"; }
            done
        fi
        "$CLUSTER" stop "$STATE" >/dev/null 2>&1 || true
        rm -rf "$STATE"
        STATE=""
    fi
    [ -n "$OUT" ] && rm -f "$OUT"
    if [ "$SUMMARY_PRINTED" = 0 ]; then
        echo "FAIL - aborted (exit $rc) before all checks ran"
        echo "$PASSED passed, $((FAILED + 1)) failed"
        exit 1
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v kubectl >/dev/null || { echo "kubectl is required (preinstalled on this machine kind)"; exit 1; }

cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
echo "building sis and sis-operator (debug) and the real-cluster tests"
cargo build --locked -q -p sis -p sis-operator
cargo test --locked -q -p sis-operator --test k8s --no-run 2>&1 | grep -v '^\s*Executable' || true

STATE="$(mktemp -d)"
"$CLUSTER" start "$STATE" >/dev/null
# shellcheck disable=SC1091
. "$STATE/env"
echo "control plane $SIS_K8S_SERVER_VERSION at $SIS_K8S_SERVER"

# The CRD as `sis-operator crd` prints it is accepted by the 1.20 apiserver as is.
if "$TARGET"/debug/sis-operator crd | kubectl apply --dry-run=server -f - >/dev/null; then
    pass "sis-operator crd: accepted by kube-apiserver $SIS_K8S_SERVER_VERSION (server dry run)"
else
    fail "sis-operator crd: rejected by kube-apiserver $SIS_K8S_SERVER_VERSION"
fi
# `sis-operator` without a kubeconfig fails fast with a clear message rather than hanging (and
# without a panic: built together with `sis`, as here and in the image, rustls has two crypto
# providers and the operator must pick one itself).
if ! KUBECONFIG=/nonexistent timeout 20 "$TARGET"/debug/sis-operator --metrics-addr 127.0.0.1:0 >"$STATE.noconfig" 2>&1 &&
    ! grep -q panicked "$STATE.noconfig" && grep -q "no Kubernetes client configuration" "$STATE.noconfig"; then
    pass "sis-operator exits non-zero without a usable kubeconfig (a clear message, no panic)"
else
    fail "sis-operator without a kubeconfig: $(tail -3 "$STATE.noconfig")"
fi
rm -f "$STATE.noconfig"
# Before the CRD exists the controller's watches never start; SIGTERM must still end the
# operator (it leaves after a 20 s grace at most) rather than hang until SIGKILL.
start=$SECONDS
set +e
KUBECONFIG="$STATE/kubeconfig" timeout -k 30 -s TERM 3 "$TARGET"/debug/sis-operator --metrics-addr 127.0.0.1:0 \
    --watch-namespace sis-op-smoke --lease-namespace default --lease-name sis-op-nocrd >"$STATE.nocrd" 2>&1
rc=$?
set -e
if [ "$rc" != 137 ] && [ $((SECONDS - start)) -lt 30 ] && grep -q "connected to the apiserver" "$STATE.nocrd" &&
    ! grep -q panicked "$STATE.nocrd"; then
    pass "sis-operator (built with sis) connects over TLS and stops on SIGTERM even without the CRD ($((SECONDS - start)) s)"
else
    fail "sis-operator without the CRD (exit $rc after $((SECONDS - start)) s): $(grep -m3 -i 'panicked\|error\|warn' "$STATE.nocrd")"
fi
rm -f "$STATE.nocrd"
# With the CRD it shuts down cleanly: Lease released, exit 0.
"$TARGET"/debug/sis-operator crd | kubectl apply --server-side -f - >/dev/null
set +e
KUBECONFIG="$STATE/kubeconfig" timeout -k 30 -s TERM 5 "$TARGET"/debug/sis-operator --metrics-addr 127.0.0.1:0 \
    --watch-namespace sis-op-smoke --lease-namespace default --lease-name sis-op-smoke >"$STATE.smoke" 2>&1
set -e
if grep -q "released the Lease" "$STATE.smoke" && grep -q "shut down cleanly" "$STATE.smoke"; then
    pass "sis-operator with the CRD: leader, then a clean shutdown on SIGTERM (Lease released)"
else
    fail "sis-operator clean shutdown: $(tail -3 "$STATE.smoke")"
fi
rm -f "$STATE.smoke"

OUT="$(mktemp)"
set +e
SIS_TEST_KUBECONFIG="$STATE/kubeconfig" SIS_BIN="$TARGET/debug/sis" \
    cargo test --locked -p sis-operator --test k8s -- --ignored --show-output --test-threads=3 >"$OUT" 2>&1
rc=$?
set -e
while read -r name result; do
    case "$result" in
        ok) pass "$name" ;;
        *) fail "$name" ;;
    esac
done < <(sed -nE 's/^test (k8s_[a-z0-9_]+) \.\.\. (ok|FAILED)$/\1 \2/p' "$OUT")
ran=$(grep -cE '^test k8s_[a-z0-9_]+ \.\.\. (ok|FAILED)$' "$OUT" || true)
if [ "$rc" -ne 0 ] || [ "$ran" -lt 12 ]; then
    [ "$rc" -ne 0 ] && [ "$FAILED" -eq 0 ] && fail "cargo test exited $rc"
    [ "$ran" -lt 12 ] && fail "only $ran of 12 real-cluster tests reported"
    echo "----- cargo test output"
    cat "$OUT"
fi

SUMMARY_PRINTED=1
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
