#!/usr/bin/env bash
# Image test: build the repository's Dockerfile with buildah and run the image.
#
#   tests/image/run.sh            # build + run checks; prints "N passed, N failed" last
#
# Nothing can be pulled here, so the base images the Dockerfile names are made locally and
# kept in buildah's storage (/var/lib/containers), re-created only when absent:
#   debian:bookworm-slim      debootstrap --variant=minbase bookworm, slimmed like the real one
#   rust:<X.Y.Z>-bookworm     that + gcc, libc6-dev, ca-certificates + this machine's active
#                             Rust toolchain (no docs); also tagged rust:<X.Y>-bookworm
# The build runs with `--isolation chroot --layers --pull=never`; the machine's CA bundle
# ($SSL_CERT_FILE) is bind-mounted read-only for cargo's registry access, never copied.
# The runtime checks start the image's `sis` inside a private network namespace with only
# loopback, so its default 0.0.0.0:3333 is reachable by curl in that namespace and nowhere else.
#
# Timings of every phase are printed (and appended to $SIS_CACHE_DIR/image-timings.log).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE_DIR="${SIS_CACHE_DIR:-$HOME/.cache/sis}"
IMAGE="localhost/sis:test"
BASE_IMAGE="docker.io/library/debian:bookworm-slim"
CA_FILE="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
NETNS="sis-image-$$"
WORK="$(mktemp -d /tmp/sis-image-test.XXXXXX)"
mkdir -p "$CACHE_DIR"

passed=0
failed=0
ctrs=()
timings=()

log() { printf '%s [image] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
pass() { passed=$((passed + 1)); log "PASS $1"; }
fail() { failed=$((failed + 1)); log "FAIL $1${2:+: $2}"; }
# check NAME CMD...: run CMD, count it
check() {
    local name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}
timed() { # timed NAME CMD...: run CMD and record its duration
    local name=$1 start=$SECONDS rc
    shift
    "$@"
    rc=$?
    timings+=("$name=$((SECONDS - start))s")
    log "time $name: $((SECONDS - start)) s (rc=$rc)"
    return $rc
}

finish() {
    local rc=$?
    if ip netns list 2>/dev/null | grep -qw "$NETNS"; then
        # Only the processes this script started live in its namespace.
        for pid in $(ip netns pids "$NETNS" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null; done
        sleep 1
        for pid in $(ip netns pids "$NETNS" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
        ip netns delete "$NETNS" 2>/dev/null
    fi
    for c in "${ctrs[@]}"; do buildah rm "$c" >/dev/null 2>&1; done
    rm -rf "$WORK"
    if ((${#timings[@]})); then
        log "timings: ${timings[*]}"
        echo "$(date -u +%FT%TZ) ${timings[*]}" >>"$CACHE_DIR/image-timings.log"
    fi
    echo "$passed passed, $failed failed"
    if ((failed > 0 || rc != 0)); then exit 1; fi
    exit 0
}
trap finish EXIT
trap 'exit 130' INT TERM

# --------------------------------------------------------------------------- tools
apt_install() { # apt_install PKG...: install the missing ones
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "apt-get install ${missing[*]}"
    if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq || return 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null ||
        { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
                --no-install-recommends "${missing[@]}" >/dev/null; }
}

# buildah (chroot isolation needs nothing more), debootstrap for the base image,
# iproute2 for the private network namespace, curl for the HTTP checks.
if ! timed tools apt_install buildah debootstrap iproute2 curl ca-certificates; then
    fail "install buildah/debootstrap/iproute2/curl"
    exit 1
fi

# --------------------------------------------------------------------------- base images
have_image() { command buildah inspect --type image "$1" >/dev/null 2>&1; }

debian_mirror() { # the machine's Debian mirror for bookworm, as configured in /etc/apt
    local m=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

make_debian_base() {
    local mirror ctr mnt
    mirror=$(debian_mirror)
    log "creating $BASE_IMAGE with debootstrap (minbase, mirror $mirror)"
    ctr=$(buildah from scratch) || return 1
    ctrs+=("$ctr")
    mnt=$(buildah mount "$ctr") || return 1
    if ! debootstrap --variant=minbase bookworm "$mnt" "$mirror" >"$WORK/debootstrap.log" 2>&1; then
        tail -20 "$WORK/debootstrap.log"
        return 1
    fi
    # Slim it down the way debian:*-slim is: no docs, man pages or locales, no apt caches.
    cat >"$mnt/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    cat >"$mnt/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$mnt/etc/apt/apt.conf.d/docker-no-languages"
    find "$mnt/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$mnt/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$mnt"/usr/share/{man,info,groff,lintian,linda}/* "$mnt"/var/lib/apt/lists/* \
        "$mnt"/var/cache/apt/*.bin "$mnt"/var/cache/apt/archives/*.deb "$mnt"/var/log/*.log \
        "$mnt"/var/cache/debconf/*-old "$mnt/etc/resolv.conf" "$mnt/etc/hostname"
    find "$mnt/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    # apt sources in deb822 form, as the real image has them, on the machine's mirror.
    rm -f "$mnt/etc/apt/sources.list"
    cat >"$mnt/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    buildah umount "$ctr" >/dev/null
    # No labels: they would be inherited by every image built on it, as the real one has none.
    buildah config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        "$ctr" || return 1
    buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null || return 1
    ctrs=("${ctrs[@]/$ctr/}")
}

# The machine's active toolchain: its sysroot holds bin/ and lib/ (rustup's layout).
RUST_SYSROOT="$(rustc --print sysroot)"
RUST_VERSION="$(rustc --version | awk '{print $2}')" # e.g. 1.95.0
RUST_MINOR="${RUST_VERSION%.*}"                    # e.g. 1.95
RUST_IMAGE="docker.io/library/rust:${RUST_VERSION}-bookworm"

make_rust_builder() {
    local ctr mnt tc
    log "creating $RUST_IMAGE from $BASE_IMAGE + gcc + the machine's Rust $RUST_VERSION"
    ctr=$(buildah from --pull=never "$BASE_IMAGE") || return 1
    ctrs+=("$ctr")
    # The Debian mirror is plain HTTP (signed by the archive keyring): no CA needed here.
    buildah run --isolation chroot "$ctr" -- sh -ec '
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            gcc libc6-dev ca-certificates >/dev/null
        rm -rf /var/lib/apt/lists/*' || return 1
    mnt=$(buildah mount "$ctr") || return 1
    tc="$mnt/usr/local/rustup/toolchains/${RUST_VERSION}-x86_64-unknown-linux-gnu"
    mkdir -p "$tc" "$mnt/usr/local/cargo/bin"
    # Only the active toolchain, without its HTML docs (~800 MB).
    tar -C "$RUST_SYSROOT" --exclude=./share/doc -cf - . | tar -C "$tc" -xf - || return 1
    for b in "$tc"/bin/*; do
        ln -s "../../rustup/toolchains/$(basename "$tc")/bin/$(basename "$b")" \
            "$mnt/usr/local/cargo/bin/$(basename "$b")"
    done
    buildah umount "$ctr" >/dev/null
    buildah config \
        --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
        --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env RUST_VERSION="$RUST_VERSION" \
        --label dev.sis.base="debian:bookworm-slim + gcc + rust $RUST_VERSION" "$ctr" || return 1
    buildah commit --quiet --rm "$ctr" "$RUST_IMAGE" >/dev/null || return 1
    ctrs=("${ctrs[@]/$ctr/}")
    buildah tag "$RUST_IMAGE" "docker.io/library/rust:${RUST_MINOR}-bookworm"
}

if have_image "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE present"
else
    timed base-debian make_debian_base || { fail "create $BASE_IMAGE"; exit 1; }
fi
if have_image "$RUST_IMAGE"; then
    log "builder image $RUST_IMAGE present"
else
    timed base-rust make_rust_builder || { fail "create $RUST_IMAGE"; exit 1; }
fi
pass "base images ($BASE_IMAGE, $RUST_IMAGE)"

# --------------------------------------------------------------------------- build
VERSION="$(awk -F'"' '/^\[workspace.package\]/ {w=1} w && /^version *=/ {print $2; exit}' "$ROOT/Cargo.toml")"
dockerfile_version="$(awk -F= '/^ARG VERSION=/ {print $2; exit}' "$ROOT/Dockerfile")"
check "Dockerfile ARG VERSION ($dockerfile_version) = crate version ($VERSION)" \
    test "$dockerfile_version" = "$VERSION"

build_image() {
    buildah bud --isolation chroot --layers --force-rm --pull=never --format oci \
        --volume "$CA_FILE:/etc/ssl/certs/ca-certificates.crt:ro" \
        --build-arg RUST_IMAGE="$RUST_IMAGE" \
        --build-arg RUNTIME_IMAGE="$BASE_IMAGE" \
        --build-arg VERSION="$VERSION" \
        --build-arg REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
        -f "$ROOT/Dockerfile" -t "$IMAGE" "$ROOT" >"$WORK/build.log" 2>&1
    local rc=$?
    grep -E '^(STEP|COMMIT|--> )' "$WORK/build.log" | sed 's/^/    /' | tail -40
    if ((rc != 0)); then tail -60 "$WORK/build.log"; fi
    cp "$WORK/build.log" "$CACHE_DIR/image-build.log" 2>/dev/null
    return $rc
}
if ! timed build build_image; then
    fail "buildah bud (log: $CACHE_DIR/image-build.log)"
    exit 1
fi
pass "buildah bud --isolation chroot"

# --------------------------------------------------------------------------- image config
buildah inspect --type image "$IMAGE" >"$WORK/inspect.json" 2>/dev/null
cfg() { # cfg KEY [SUBKEY]: a field of the image's OCI config, as JSON
    python3 - "$WORK/inspect.json" "$@" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))["OCIv1"]["config"]
for k in sys.argv[2:]:
    v = (v or {}).get(k)
print(json.dumps(v, separators=(",", ":")))
EOF
}
check "ENTRYPOINT [\"sis\"]" test "$(cfg Entrypoint)" = '["sis"]'
check "USER 10001:10001" test "$(cfg User)" = '"10001:10001"'
check "EXPOSE 3333" test "$(cfg ExposedPorts)" = '{"3333/tcp":{}}'
check "VOLUME /data" test "$(cfg Volumes)" = '{"/data":{}}'
check "ENV SIS_DATA_DIR=/data" grep -q '"SIS_DATA_DIR=/data"' <<<"$(cfg Env)"
check "ENV MALLOC_ARENA_MAX=2" grep -q '"MALLOC_ARENA_MAX=2"' <<<"$(cfg Env)"
check "label org.opencontainers.image.version=$VERSION" \
    test "$(cfg Labels org.opencontainers.image.version)" = "\"$VERSION\""
size=$(buildah images --format '{{.Size}}' "$IMAGE" 2>/dev/null | head -1)
log "image $IMAGE: $size"

# --------------------------------------------------------------------------- run inside it
ctr=$(buildah from --pull=never "$IMAGE") || { fail "buildah from $IMAGE"; exit 1; }
ctrs+=("$ctr")
crun() { buildah run --isolation chroot "$ctr" -- "$@"; }

out=$(crun sis --version 2>&1)
check "sis --version prints 'sis $VERSION' (got '$out')" test "$out" = "sis $VERSION"
out=$(crun sis-operator --version 2>&1)
check "sis-operator --version prints 'sis-operator $VERSION' (got '$out')" \
    test "$out" = "sis-operator $VERSION"
check "runs as uid 10001" test "$(crun id -u 2>&1)" = "10001"
check "/data owned by 10001" test "$(crun stat -c %u /data 2>&1)" = "10001"
# The CA bundle must be Debian's (from the builder's ca-certificates package), never the host's
# file that was bind-mounted during the build.
bctr=$(buildah from --pull=never "$RUST_IMAGE") && ctrs+=("$bctr")
want_ca=$(buildah run --isolation chroot "$bctr" -- sha256sum /etc/ssl/certs/ca-certificates.crt | awk '{print $1}')
got_ca=$(crun sha256sum /etc/ssl/certs/ca-certificates.crt | awk '{print $1}')
check "CA bundle is Debian's from the builder, not baked from the host" \
    test -n "$got_ca" -a "$got_ca" = "$want_ca"

if crun sis-operator crd >"$WORK/crd.yaml" 2>"$WORK/crd.err"; then
    if [ -f "$ROOT/deploy/crd.yaml" ]; then
        check "sis-operator crd in the image = deploy/crd.yaml" \
            diff -u "$ROOT/deploy/crd.yaml" "$WORK/crd.yaml"
    else
        check "sis-operator crd prints a CRD" grep -q "kind: CustomResourceDefinition" "$WORK/crd.yaml"
    fi
else
    fail "sis-operator crd" "$(head -3 "$WORK/crd.err")"
fi

# --- the server, started as `docker run IMAGE [ARGS]` would: ENTRYPOINT + args.
if ! { ip netns add "$NETNS" && ip -n "$NETNS" link set lo up; }; then
    fail "create network namespace"
    exit 1
fi
nsx() { ip netns exec "$NETNS" "$@"; }

# start_sis LOG ARGS...: start `sis ARGS` in the container, in the namespace, in the background
start_sis() {
    local logf=$1
    shift
    nsx buildah run --isolation chroot "$ctr" -- sis "$@" >"$logf" 2>&1 &
    echo $!
}
wait_http() { # wait_http URL: up to 30 s for a 200
    local _
    for _ in $(seq 1 60); do
        [ "$(nsx curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1")" = 200 ] && return 0
        sleep 0.5
    done
    return 1
}
stop_sis() { # stop_sis: SIGTERM the sis processes in the namespace; 0 if they exit in 15 s
    local pid _
    for pid in $(ip netns pids "$NETNS"); do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sis ] && kill -TERM "$pid"
    done
    for _ in $(seq 1 30); do
        [ -z "$(ip netns pids "$NETNS")" ] && return 0
        sleep 0.5
    done
    return 1
}

# A 1x1 PNG.
printf '%s' 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC' |
    base64 -d >"$WORK/dot.png"
want_md5=$(md5sum "$WORK/dot.png" | awk '{print $1}')

start_sis "$WORK/sis-default.log" >/dev/null
if wait_http http://127.0.0.1:3333/healthz; then
    pass "sis (default args) answers /healthz on :3333"
    check "readyz 200" test "$(nsx curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:3333/readyz)" = 200
    up=$(nsx curl -s --max-time 10 -F "file=@$WORK/dot.png;filename=dot.png" http://127.0.0.1:3333/up)
    check "upload /up returns the MD5 ($up)" grep -q "\"MD5\":\"$want_md5\"" <<<"$up"
    nsx curl -s --max-time 10 -o "$WORK/down.png" "http://127.0.0.1:3333/simple_down?md5=$want_md5"
    check "download /simple_down returns the same bytes" cmp -s "$WORK/dot.png" "$WORK/down.png"
    landed=$(crun find /data -type f -user 10001 -size +0 2>/dev/null | head -1)
    if [[ "$landed" == /data/* ]]; then
        pass "the image landed in /data (as uid 10001): $landed"
    else
        fail "the image landed in /data (as uid 10001)" \
            "find said: ${landed:-nothing}; /data holds: $(crun find /data -ls 2>&1 | head -20 | tr '\n' ';')"
    fi
else
    fail "sis (default args) answers /healthz on :3333" "$(tail -5 "$WORK/sis-default.log")"
fi
check "sis exits on SIGTERM" stop_sis

start_sis "$WORK/sis-legacy.log" -port 4444 -cache 0 >/dev/null
if wait_http http://127.0.0.1:4444/healthz; then
    pass "sis -port 4444 -cache 0 answers /healthz on :4444"
    nsx curl -s --max-time 10 -o "$WORK/down2.png" "http://127.0.0.1:4444/simple_down?md5=$want_md5"
    check "legacy-flag server serves the stored image from /data" cmp -s "$WORK/dot.png" "$WORK/down2.png"
else
    fail "sis -port 4444 -cache 0 answers /healthz on :4444" "$(tail -5 "$WORK/sis-legacy.log")"
fi
check "sis (legacy flags) exits on SIGTERM" stop_sis
