# sis container image: the `sis` image server (entrypoint) and `sis-operator`.
#
#   docker build -t sis:0.1.0 .
#   docker run -p 3333:3333 -v sis-data:/data sis:0.1.0            # server, defaults
#   docker run -p 4444:4444 sis:0.1.0 -port 4444 -cache 0          # legacy Go flags
#   docker run sis:0.1.0 agent --upstream http://server:3333       # agent mode
#   docker run --entrypoint sis-operator sis:0.1.0                 # the operator
#
# Plain Dockerfile syntax (no BuildKit-only features), so `docker build`, `buildah bud`
# and `podman build` all build it. Dependencies are compiled in their own layer from
# the manifests alone, so a source-only change rebuilds just the two workspace crates.
# tests/image/run.sh builds and runs this file with buildah.

# Base images are build arguments with the usual upstream names.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------- builder
FROM ${RUST_IMAGE} AS builder

ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    CARGO_NET_RETRY=5
WORKDIR /src

# 1. Dependency layer. Only the manifests and the lock file are copied, every member
#    gets an empty stub source, and all dependencies are compiled. This layer is
#    reused until Cargo.toml/Cargo.lock of any member change.
COPY Cargo.toml Cargo.lock ./
COPY service/Cargo.toml service/Cargo.toml
COPY operator/Cargo.toml operator/Cargo.toml
COPY tests/Cargo.toml tests/Cargo.toml
RUN set -eux; \
    for member in service operator tests; do \
        mkdir -p "$member/src"; \
        echo 'fn main() {}' > "$member/src/main.rs"; \
        : > "$member/src/lib.rs"; \
    done; \
    cargo build --release --locked -p sis -p sis-operator; \
    # Drop the stubs' own artifacts; the dependencies' stay.
    cargo clean --release -p sis -p sis-operator; \
    rm -rf service/src operator/src

# 2. The real sources of the two shipped crates (the `tests` member keeps its stub:
#    it is only needed for the workspace to load). See .dockerignore.
COPY service service
COPY operator operator
RUN set -eux; \
    # COPY keeps the context's mtimes, which may be older than the stub build.
    find service operator -type f -exec touch {} +; \
    cargo build --release --locked -p sis -p sis-operator; \
    install -D -m 0755 target/release/sis /out/sis; \
    install -D -m 0755 target/release/sis-operator /out/sis-operator; \
    /out/sis --version; \
    /out/sis-operator --version

# ---------------------------------------------------------------------------- runtime
FROM ${RUNTIME_IMAGE}

# Keep in step with [workspace.package] version in Cargo.toml (tests/image/run.sh checks).
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="sis" \
      org.opencontainers.image.description="Simple image server (server and agent modes) and its Kubernetes operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/sis-dev/sis" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.vendor="sis"

# A fixed non-root uid/gid (10001) so volume ownership and Kubernetes
# securityContext.runAsUser/fsGroup can name it; /data belongs to it.
RUN set -eux; \
    groupadd --system --gid 10001 sis; \
    useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin sis; \
    install -d -o 10001 -g 10001 -m 0750 /data

# Root CAs for an HTTPS upstream (agent mode) — Debian's bundle from the builder.
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/sis /out/sis-operator /usr/local/bin/

# The default data dir `./data` resolves to /data from WORKDIR /; SIS_DATA_DIR says so
# explicitly. A flag (`--data-dir`, legacy `-image`) still wins over the variable.
ENV SIS_DATA_DIR=/data
WORKDIR /
VOLUME ["/data"]
USER 10001:10001
EXPOSE 3333
ENTRYPOINT ["sis"]
