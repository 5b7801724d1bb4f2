//! The edge of the application: what happens to every request around the routes —
//! CORS, the request id, the deadline on bodies, one log line and the `sis_http_*`
//! metrics.
//!
//! It is one plain `async fn` ([`App::handle`]) rather than a stack of axum
//! `middleware::from_fn` layers: each such layer clones and boxes its inner service and
//! boxes its future on every request, which on a cached-image hit cost more than the
//! handler itself.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tracing::Instrument;

use super::content_length;
use super::guard::VariantGuard;
use super::upload::UploadLimits;
use crate::client_limits::{MinRate, MinRateBody};
use crate::error::{Error, Failure};
use crate::state::AppState;

/// Settings of the edge (from [`crate::ServeOptions`]).
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// A request with a body must be handled within this long (body included) or it
    /// gets 408 and the connection is closed.
    pub body_deadline: Duration,
    /// Limits on multipart uploads, handed to the upload handlers.
    pub upload: UploadLimits,
    /// The variant policy ([`super::guard`]), handed to requests with a query string
    /// (only they can ask for variants); `None` = open.
    pub guard: Option<Arc<VariantGuard>>,
    /// Slowest a request body may arrive ([`crate::client_limits::MinRateBody`]).
    pub min_body_rate: MinRate,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        Self {
            body_deadline: Duration::from_secs(120),
            upload: UploadLimits::default(),
            guard: None,
            min_body_rate: MinRate::default(),
        }
    }
}

/// The whole application: the routes of [`super::router`] behind the edge. Cloning is
/// two reference-count increments. Also a `tower::Service`, for in-process tests.
#[derive(Clone)]
pub struct App {
    routes: Router,
    state: AppState,
    opts: EdgeOptions,
    /// `sis_http_requests_in_flight` for this mode, resolved once.
    in_flight: prometheus::IntGauge,
}

impl App {
    pub fn new(state: AppState, opts: EdgeOptions) -> Self {
        let in_flight = state
            .metrics
            .http_in_flight
            .with_label_values(&[state.mode]);
        Self {
            routes: super::router(state.clone()),
            state,
            opts,
            in_flight,
        }
    }

    /// Answers one request.
    pub async fn handle(self, mut req: Request) -> Response {
        if req.method() == Method::OPTIONS {
            return preflight();
        }
        let has_body = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
            || content_length(req.headers()).is_some_and(|n| n > 0)
            || req.headers().contains_key(header::TRANSFER_ENCODING);
        let mut too_slow = None;
        if has_body {
            req.extensions_mut().insert(self.opts.upload);
            let (parts, body) = req.into_parts();
            let (body, tripped) = MinRateBody::wrap(body, self.opts.min_body_rate);
            req = Request::from_parts(parts, body);
            too_slow = Some(tripped);
        }
        if let Some(g) = &self.opts.guard
            && req.uri().query().is_some()
        {
            req.extensions_mut().insert(Arc::clone(g));
        }
        let min_rate = self.opts.min_body_rate;
        let metrics = too_slow
            .as_ref()
            .map(|_| self.state.metrics.client_limits.clone());
        let mut resp = self.observe(req, has_body).await;
        if let (Some(tripped), Some(metrics)) = (too_slow, metrics)
            && tripped.load(std::sync::atomic::Ordering::SeqCst)
        {
            // Whatever the handler made of the cut body, the client gets a 408 and the
            // connection is closed (the rest of its body is not read).
            metrics.with_label_values(&["slow-body"]).inc();
            tracing::warn!(
                min_bytes_per_sec = min_rate.bytes_per_sec,
                grace = ?min_rate.grace,
                "request body too slow, closing"
            );
            let id = resp.headers().get("x-request-id").cloned();
            resp = slow_body(min_rate);
            if let Some(id) = id {
                resp.headers_mut().insert("x-request-id", id);
            }
        }
        resp.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        resp
    }

    /// Runs the routes with a request id in scope, then logs and records the request.
    async fn observe(self, req: Request, has_body: bool) -> Response {
        let request_id = request_id(req.headers().get("x-request-id"));
        let method = req.method().clone();
        let req_bytes = content_length(req.headers());
        let v1 = req.uri().path().starts_with("/v1/");
        let state = &self.state;
        let m = &state.metrics;
        self.in_flight.inc();
        let _in_flight = InFlight(self.in_flight.clone());
        let start = Instant::now();
        let span = tracing::info_span!(
            "request",
            request_id = request_id.to_str().unwrap_or_default()
        );
        let run = self.routes.clone().oneshot(req).instrument(span.clone());
        let deadline = has_body.then_some(self.opts.body_deadline);
        let scope = RequestScope {
            id: request_id.clone(),
            route: RefCell::new(None),
        };
        // The route template is known only once the router has matched: `TagRoute` leaves
        // it in the request's scope, read back before the scope ends.
        let (mut resp, matched) = REQUEST
            .scope(scope, async move {
                let resp = match deadline {
                    Some(limit) => match tokio::time::timeout(limit, run).await {
                        Ok(r) => r.unwrap_or_else(|e| match e {}),
                        Err(_) => body_timeout(limit, v1),
                    },
                    None => run.await.unwrap_or_else(|e| match e {}),
                };
                let matched = REQUEST.with(|r| r.route.take());
                (resp, matched)
            })
            .await;
        let elapsed = start.elapsed();
        let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
        let status = resp.status();
        let resp_bytes = resp
            .body()
            .size_hint()
            .exact()
            .or_else(|| content_length(resp.headers()));
        let health = route == "/healthz" || route == "/readyz";
        m.http_requests
            .with_label_values(&[state.mode, route, method.as_str(), status.as_str()])
            .inc();
        if !health {
            m.http_duration
                .with_label_values(&[state.mode, route])
                .observe(elapsed.as_secs_f64());
            if let Some(b) = req_bytes {
                m.http_request_bytes
                    .with_label_values(&[state.mode, route])
                    .observe(b as f64);
            }
            if let Some(b) = resp_bytes {
                m.http_response_bytes
                    .with_label_values(&[state.mode, route])
                    .observe(b as f64);
            }
        }
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let status = status.as_u16();
        span.in_scope(|| {
            if health {
                tracing::debug!(method = %method, route = %route, status, latency_ms, "request");
            } else {
                tracing::info!(
                    method = %method,
                    route = %route,
                    status,
                    bytes = resp_bytes.unwrap_or(0),
                    latency_ms,
                    "request"
                );
            }
        });
        resp.headers_mut().insert("x-request-id", request_id);
        resp
    }
}

impl<B> tower::Service<axum::http::Request<B>> for App
where
    B: HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let app = self.clone();
        Box::pin(async move { Ok(app.handle(req.map(Body::new)).await) })
    }
}

/// Leaves the matched route template (`MatchedPath`, known only inside the router) in the
/// request's scope, where [`App::handle`] labels metrics and the log line with it. Added
/// with `route_layer`, so unmatched requests (the fallback) have none.
#[derive(Clone)]
pub(super) struct TagRoute<S>(S);

#[derive(Clone, Copy)]
pub(super) struct TagRouteLayer;

impl<S> tower::Layer<S> for TagRouteLayer {
    type Service = TagRoute<S>;
    fn layer(&self, inner: S) -> TagRoute<S> {
        TagRoute(inner)
    }
}

impl<S> tower::Service<Request> for TagRoute<S>
where
    S: tower::Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if let Some(m) = req.extensions().get::<MatchedPath>() {
            // Outside a request scope (not through `App`) there is nobody to tell.
            let _ = REQUEST.try_with(|r| *r.route.borrow_mut() = Some(m.clone()));
        }
        self.0.call(req)
    }
}

/// CORS as in sis 1.x: any `OPTIONS` preflight is answered 204 with the allowed methods
/// (and `Access-Control-Allow-Origin: *`, which every response carries).
fn preflight() -> Response {
    const HEADERS: [(&str, &str); 5] = [
        // sis 1.x's own (misspelt) header, kept for its clients.
        ("access-control-allow-method", "POST"),
        (
            "access-control-allow-methods",
            "GET, HEAD, POST, DELETE, OPTIONS",
        ),
        (
            "access-control-allow-headers",
            "Authorization, Content-Type, Range, If-None-Match",
        ),
        ("access-control-max-age", "86400"),
        ("access-control-allow-origin", "*"),
    ];
    let mut r = StatusCode::NO_CONTENT.into_response();
    for (name, value) in HEADERS {
        r.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    r
}

/// The answer to a body cut by the minimum-rate rule.
fn slow_body(rate: MinRate) -> Response {
    let body = serde_json::json!({
        "error": format!(
            "request body arrived slower than {} bytes/s after {} s; connection closed",
            rate.bytes_per_sec,
            rate.grace.as_secs()
        ),
        "code": "body-too-slow",
    });
    let mut resp = (StatusCode::REQUEST_TIMEOUT, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The answer when a request with a body was not handled within the deadline: a client
/// trickling its body gets 408 and the connection is closed, instead of holding a task
/// and its buffered bytes for as long as it likes.
fn body_timeout(limit: Duration, v1: bool) -> Response {
    tracing::warn!(?limit, "request body not received in time, closing");
    let error = Error::BodyTimeout(limit.as_secs());
    let failure = if v1 {
        Failure::v1(error)
    } else {
        Failure::legacy(error)
    };
    let mut resp = failure.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

/// What the edge knows of the request a task is serving.
struct RequestScope {
    id: HeaderValue,
    /// Set by [`TagRoute`] once the router has matched.
    route: RefCell<Option<MatchedPath>>,
}

tokio::task_local! {
    static REQUEST: RequestScope;
}

/// The id of the request this task is serving, to forward upstream.
pub fn current_request_id() -> Option<HeaderValue> {
    REQUEST.try_with(|r| r.id.clone()).ok()
}

/// The client's `X-Request-Id` when it is sane (visible ASCII, at most 128 bytes), else
/// a new one: this process's tag (start time and pid, fixed once) and a sequence number.
fn request_id(given: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = given
        && !v.is_empty()
        && v.len() <= 128
        && v.as_bytes().iter().all(u8::is_ascii_graphic)
    {
        return v.clone();
    }
    static PROCESS_TAG: OnceLock<u64> = OnceLock::new();
    // Not per request: `getpid` is a system call.
    let tag = *PROCESS_TAG.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        t ^ (u64::from(std::process::id()) << 40)
    });
    let seq = REQUEST_SEQ.fetch_add(1, Ordering::Relaxed);
    // Formatted on the stack: at most 16 + 1 + 16 hex digits.
    let mut buf = [0u8; 40];
    let mut out = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(out, "{tag:x}-{seq:x}");
    let len = usize::try_from(out.position()).unwrap_or(0);
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("-"))
}

struct InFlight(prometheus::IntGauge);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_taken_when_sane_and_made_otherwise() {
        let given = HeaderValue::from_static("abc-123");
        assert_eq!(request_id(Some(&given)), given);
        let spaced = HeaderValue::from_static("a b");
        let long = HeaderValue::from_str(&"x".repeat(129)).unwrap();
        for bad in [Some(&spaced), Some(&long), None] {
            let made = request_id(bad);
            assert!(made.to_str().unwrap().contains('-'));
            assert_ne!(Some(&made), bad);
        }
        assert_ne!(request_id(None), request_id(None));
    }
}
