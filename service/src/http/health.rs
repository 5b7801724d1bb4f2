//! `/healthz` (alive while serving), `/readyz` (not shutting down and the origin
//! usable: data dir writable for the server) and `/metrics` (Prometheus text).
//! All cheap; health checks are kept out of the latency histograms.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if !state.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if let crate::store::Health::Unready(why) = state.store.health().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage not ready: {why}\n"),
        )
            .into_response();
    }
    "ready\n".into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .resize_queue_depth
        .set(i64::try_from(state.pool.queue_depth()).unwrap_or(i64::MAX));
    let mut r = state.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
