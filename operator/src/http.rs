//! The operator's own small HTTP server on `--metrics-addr`: `/metrics`, `/healthz`, `/readyz`.
//!
//! `/healthz` answers 200 while the process runs. `/readyz` answers 200 once the apiserver has
//! answered, on the leader and on standby replicas alike (a standby is ready to take over; with
//! readiness tied to leadership a rolling update of a 2-replica Deployment would never finish).
//! The body says `leader` or `standby`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::controller::Health;
use crate::metrics::Metrics;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Metrics,
    pub health: Arc<Health>,
}

/// The router (tests call it with `oneshot`).
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if !state.health.ready.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: apiserver not reached yet\n",
        );
    }
    if state.health.leading.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok: leader\n")
    } else {
        (StatusCode::OK, "ok: standby\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(state: &HttpState, path: &str) -> (StatusCode, String) {
        let response = router(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let state = HttpState {
            metrics: Metrics::new().unwrap(),
            health: Arc::new(Health::default()),
        };
        assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(&state, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.health.ready.store(true, Ordering::SeqCst);
        assert_eq!(
            get(&state, "/readyz").await,
            (StatusCode::OK, "ok: standby\n".into())
        );
        state.health.leading.store(true, Ordering::SeqCst);
        assert_eq!(
            get(&state, "/readyz").await,
            (StatusCode::OK, "ok: leader\n".into())
        );
        let (status, body) = get(&state, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("sis_operator_reconciliations_total 0"),
            "{body}"
        );
        assert_eq!(get(&state, "/nope").await.0, StatusCode::NOT_FOUND);
    }
}
