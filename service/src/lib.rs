//! `sis`: a simple, content-addressed image server: `server` mode stores on disk,
//! `agent` mode caches and resizes in front of a server.
//!
//! # Layout
//! - [`config`]: clap flags and env vars, legacy Go flags rewritten, validated once.
//! - [`store`]: validated keys ([`store::key`]), the disk store ([`store::disk`]) and
//!   [`store::Origin`], the one door to image storage (disk now, upstream for the agent).
//! - [`cache`]: generic byte-bounded S3-FIFO cache with single-flight loads.
//! - [`imaging`]: sniff, probe, resize, the bounded resize pool (owned separately).
//! - [`state`]: [`state::AppState`] shared by handlers.
//! - [`http`]: [`http::router`], layers (CORS, request id, log line, metrics) and the
//!   handlers per API surface (`legacy`, `v1`, `page`, `health`).
//! - [`error`]: the error enum and the only `IntoResponse` for errors.
//! - [`metrics`]: every Prometheus metric name.
//! - [`shutdown`]: the SIGTERM/SIGINT future.
//! - [`upstream`]: the agent's HTTP client for its server (timeouts, retries, metrics).
//! - [`feed`]: the server's bounded change feed of deletes, polled by agents.
//! - [`agent`]: the agent's feed loop (cache invalidation, readiness).
//!
//! [`serve`] runs a router on a listener until a shutdown future resolves.

pub mod agent;
pub mod cache;
pub mod config;
pub mod error;
pub mod feed;
pub mod http;
pub mod imaging;
pub mod metrics;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod upstream;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Serves `state` on `listener` until `shutdown` resolves; then readiness turns
/// 503, the listener closes, and in-flight requests get `shutdown_timeout` to finish.
///
/// # Errors
/// The accept loop failed.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    shutdown_timeout: Duration,
) -> std::io::Result<()> {
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
    let app = http::router(state);
    let server = axum::serve(listener, app).with_graceful_shutdown(token.clone().cancelled_owned());
    tokio::select! {
        r = std::future::IntoFuture::into_future(server) => {
            tracing::info!("all connections closed");
            r
        }
        () = async {
            token.cancelled().await;
            tokio::time::sleep(shutdown_timeout).await;
        } => {
            tracing::warn!(?shutdown_timeout, "shutdown timeout reached, dropping open connections");
            Ok(())
        }
    }
}
