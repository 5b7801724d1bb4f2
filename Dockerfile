# sis container image: the `sis` image server (entrypoint) and `sis-operator`.
#
#   docker build -t sis:0.1.0 .
#   docker run -p 3333:3333 -v sis-data:/data sis:0.1.0            # server, defaults
#   docker run -p 4444:4444 sis:0.1.0 -port 4444 -cache 0          # legacy Go flags
#   docker run sis:0.1.0 agent --upstream http://server:3333       # agent mode
#   docker run --entrypoint sis-operator sis:0.1.0                 # the operator
#
# Builds with BuildKit (`docker build`), `buildah bud` and `podman build`: the only feature
# beyond the classic syntax is `RUN --mount=type=cache`, which keeps cargo's registry and target
# directory between builds, so a rebuild compiles only what changed (a source edit: the two
# workspace crates; a Cargo.lock change: the changed dependencies). Nothing from those caches
# ends up in an image layer. tests/image/run.sh builds and runs this file with buildah.

# Base images are build arguments with the usual upstream names.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------- builder
FROM ${RUST_IMAGE} AS builder

ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    CARGO_NET_RETRY=5
WORKDIR /src

# The workspace: the two shipped crates in full; of the `tests` member (end-to-end tests, not
# built here) only its manifest and an empty lib, which cargo needs to load the workspace.
# .dockerignore keeps everything else (target/, .git, charts, scripts) out of the context.
COPY Cargo.toml Cargo.lock ./
COPY tests/Cargo.toml tests/Cargo.toml
RUN mkdir -p tests/src && : > tests/src/lib.rs
COPY service service
COPY operator operator

# Release build of both binaries, copied out of the cached target dir into /out.
RUN --mount=type=cache,id=sis-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=sis-cargo-target,target=/src/target \
    set -eux; \
    # cargo judges path crates by mtime; the cached target dir may be newer than the context's
    # files (another checkout built earlier), so mark the sources as changed.
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

LABEL org.opencontainers.image.title="sis" \
      org.opencontainers.image.description="Simple image server (server and agent modes) and its Kubernetes operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
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
# Two glibc malloc arenas instead of one per thread: with per-thread arenas freed image
# buffers stay resident and RSS drifts past cache size + 64 MiB under load (tests/tests/soak.rs).
ENV MALLOC_ARENA_MAX=2
WORKDIR /
VOLUME ["/data"]
USER 10001:10001
EXPOSE 3333
ENTRYPOINT ["sis"]
