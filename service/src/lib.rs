//! `sis`: a simple, content-addressed image server: `server` mode stores on disk,
//! `agent` mode caches and resizes in front of a server.
//!
//! # Layout
//! - [`config`]: clap flags and env vars, legacy Go flags rewritten, validated once.
//! - [`id`], [`wire`]: leaf modules — validated ids (`Md5Hex`, `FileName`) and the
//!   internal API's wire types shared by server and agent.
//! - [`store`]: the [`store::ImageStore`] trait, the one door to image storage, and its
//!   backends: local disk ([`store::disk`]), S3-compatible object storage
//!   ([`store::s3`]); the agent's client of its server ([`upstream`]) is one more.
//! - [`role`]: server (owns a store, publishes a change feed) or agent.
//! - [`replicas`]: servers over shared storage follow the store's change log.
//! - [`cache`]: generic byte-bounded S3-FIFO cache with single-flight loads.
//! - [`imaging`]: sniff, header probe (bomb checks), resize with JPEG shrink-on-load, and
//!   the bounded resize pool.
//! - [`images`]: the image service between HTTP and storage (ingest, read, delete).
//! - [`state`]: [`state::AppState`] shared by handlers.
//! - [`http`]: [`http::app`], the edge (CORS, request id, log line, metrics) and the
//!   handlers per API surface (`legacy`, `v1`, `page`, `health`).
//! - [`error`]: the error enum and the only `IntoResponse` for errors.
//! - [`metrics`]: every Prometheus metric name.
//! - [`shutdown`]: the SIGTERM/SIGINT future.
//! - [`upstream`]: the agent's HTTP client for its server (timeouts, retries, metrics).
//! - [`feed`]: the server's bounded change feed of deletes, polled by agents.
//! - [`agent`]: the agent's feed loop (cache invalidation, readiness).
//!
//! - [`io_threads`]: one current-thread runtime per core that serves connections.
//! - [`client_limits`]: connections per client address, the minimum body rate.
//!
//! [`serve`] runs the application on a listener until a shutdown future resolves:
//! connections are accepted here and dealt round-robin to the [`io_threads`].

pub mod agent;
pub mod cache;
pub mod client_limits;
pub mod config;
pub mod error;
pub mod feed;
pub mod http;
pub mod id;
pub mod images;
pub mod imaging;
pub mod io_threads;
pub mod metrics;
pub mod migrate;
pub mod replicas;
pub mod role;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod upstream;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Connection-level limits of [`serve_with`]: what a client may hold and for how long.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// In-flight requests get this long to finish after the shutdown future resolves.
    pub shutdown_timeout: Duration,
    /// A client must send a request's head within this long (also bounds idle keep-alive
    /// connections): slowloris protection.
    pub header_read_timeout: Duration,
    /// A request with a body (uploads) must be fully handled within this long, or it is
    /// answered 408 and the connection closed: trickled bodies cannot hold a task forever.
    pub body_read_timeout: Duration,
    /// Most client connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Largest request head (request line + headers) in bytes; larger gets 431.
    pub max_header_size: usize,
    /// Most parts in one multipart upload; more get 413.
    pub max_upload_parts: usize,
    /// Connection threads (one event loop each, see [`io_threads`]); 0 = one per core.
    pub io_threads: usize,
    /// Most connections open at once from one client address (0 = no cap); more are
    /// answered 503 and closed.
    pub max_connections_per_client: usize,
    /// Slowest average rate of a request body after a grace period (408 and close when
    /// slower), see [`client_limits::MinRateBody`].
    pub min_body_rate: client_limits::MinRate,
    /// Which variants are rendered (`--variants`, presets, signing keys); `None` = open.
    pub variant_guard: Option<Arc<http::guard::VariantGuard>>,
}

impl From<&config::CommonArgs> for ServeOptions {
    fn from(c: &config::CommonArgs) -> Self {
        Self {
            shutdown_timeout: c.shutdown_timeout,
            header_read_timeout: c.header_read_timeout,
            body_read_timeout: c.body_read_timeout,
            max_connections: c.max_connections,
            max_header_size: usize::try_from(c.max_header_size).unwrap_or(usize::MAX),
            max_upload_parts: c.max_upload_parts,
            io_threads: c.io_threads,
            max_connections_per_client: c.max_connections_per_client,
            min_body_rate: client_limits::MinRate {
                bytes_per_sec: c.min_body_rate,
                grace: c.body_rate_grace,
            },
            // Built from the flags by the caller (it can fail): see
            // `config::CommonArgs::variant_guard`.
            variant_guard: None,
        }
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            shutdown_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(600),
            max_connections: 1024,
            max_header_size: 64 << 10,
            max_upload_parts: http::upload::DEFAULT_MAX_UPLOAD_PARTS,
            io_threads: 0,
            max_connections_per_client: 256,
            min_body_rate: client_limits::MinRate::default(),
            variant_guard: None,
        }
    }
}

/// Serves `state` on `listener` until `shutdown` resolves; then readiness turns
/// 503, the listener closes, and in-flight requests get `shutdown_timeout` to finish.
/// Connection limits are the defaults of [`ServeOptions`].
///
/// # Errors
/// The accept loop failed.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    shutdown_timeout: Duration,
) -> std::io::Result<()> {
    let opts = ServeOptions {
        shutdown_timeout,
        ..ServeOptions::default()
    };
    serve_with(listener, state, shutdown, opts).await
}

/// [`serve`] with explicit connection limits: at most `max_connections` connections
/// (the rest get a 503 and are closed), heads bounded in time and size (431 when too
/// large), bodies bounded in time (408), multipart uploads bounded in parts (413).
///
/// # Errors
/// The accept loop failed.
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    opts: ServeOptions,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tokio::io::AsyncWriteExt;

    let token = CancellationToken::new();
    {
        let token = token.clone();
        let state = state.clone();
        tokio::spawn(async move {
            shutdown.await;
            state.set_ready(false);
            token.cancel();
        });
    }
    let client_limit_hits = state.metrics.client_limits.clone();
    let app = http::App::new(
        state,
        http::EdgeOptions {
            body_deadline: opts.body_read_timeout,
            upload: http::upload::UploadLimits {
                max_parts: opts.max_upload_parts.max(1),
            },
            guard: opts.variant_guard.clone().filter(|g| !g.is_inert()),
            min_body_rate: opts.min_body_rate,
        },
    );
    let per_client = client_limits::PerClient::new(opts.max_connections_per_client);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_header_size(opts.max_header_size)
        // An incomplete head that fills the read buffer is refused too (431); hyper
        // refuses buffers under 8 KiB, and a small buffer would slow uploads down.
        .max_buf_size(opts.max_header_size.max(64 << 10))
        .keep_alive(true);
    let io = io_threads::IoThreads::start(if opts.io_threads == 0 {
        io_threads::default_count()
    } else {
        opts.io_threads
    })?;
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = token.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(
                max_connections = opts.max_connections,
                "connection limit reached, answering 503"
            );
            tracker.spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = stream.write_all(CONNECTION_LIMIT_RESPONSE).await;
                    let _ = stream.shutdown().await;
                })
                .await;
            });
            continue;
        };
        let Some(client_slot) = per_client.admit(peer.ip()) else {
            client_limit_hits
                .with_label_values(&["per-client-connections"])
                .inc();
            tracing::warn!(
                client = %peer.ip(),
                max_connections_per_client = opts.max_connections_per_client,
                "per-client connection limit reached, answering 503"
            );
            drop(slot);
            tracker.spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = stream.write_all(CLIENT_LIMIT_RESPONSE).await;
                    let _ = stream.shutdown().await;
                })
                .await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Re-registered on the connection thread's own reactor.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection over");
                continue;
            }
        };
        let app = app.clone();
        let builder = builder.clone();
        let token = token.clone();
        tracker.spawn_on(
            async move {
                let _slot = (slot, client_slot);
                let stream = match tokio::net::TcpStream::from_std(stream) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot register a connection");
                        return;
                    }
                };
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let app = app.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                app.handle(req.map(axum::body::Body::new)).await,
                            )
                        }
                    },
                );
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    }
                    () = token.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            },
            io.next_handle(),
        );
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(opts.shutdown_timeout, tracker.wait())
        .await
        .is_ok()
    {
        tracing::info!("all connections closed");
    } else {
        tracing::warn!(
            shutdown_timeout = ?opts.shutdown_timeout,
            "shutdown timeout reached, dropping open connections"
        );
    }
    // Joining threads blocks: not on this runtime's worker.
    let _ = tokio::task::spawn_blocking(move || io.stop()).await;
    Ok(())
}

/// What a connection over `max_connections_per_client` gets before it is closed.
const CLIENT_LIMIT_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 40\r\nConnection: close\r\n\r\ntoo many open connections from your host";

/// What a connection over `max_connections` gets before it is closed.
const CONNECTION_LIMIT_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 25\r\nConnection: close\r\n\r\ntoo many open connections";
