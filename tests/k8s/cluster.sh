#!/usr/bin/env bash
# A real Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager 1.20)
# on loopback, for tests that must not be fooled by mocks.
#
#   tests/k8s/cluster.sh install            # idempotent; first run builds k8s (~5-15 min)
#   tests/k8s/cluster.sh start [STATE_DIR]  # prints STATE_DIR; writes STATE_DIR/{kubeconfig,env}
#   tests/k8s/cluster.sh stop STATE_DIR
#   tests/k8s/cluster.sh status STATE_DIR
#   tests/k8s/cluster.sh helm               # prints the cached helm binary's path
#
# Everything heavy lives in ${SIS_CACHE_DIR:-$HOME/.cache/sis}/k8s (outside the repo).
# There is no scheduler and no kubelet: Pods stay Pending unless a test patches their status.
# See tests/k8s/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/common.sh
. "$HERE/lib/common.sh"
# shellcheck source=lib/install.sh
. "$HERE/lib/install.sh"
# shellcheck source=lib/controlplane.sh
. "$HERE/lib/controlplane.sh"

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    install) k8s_install "$@" ;;
    start) k8s_start "$@" ;;
    stop) k8s_stop "$@" ;;
    status) k8s_status "$@" ;;
    helm) k8s_install >&2 && k8s_helm_path ;;
    *) usage ;;
esac
