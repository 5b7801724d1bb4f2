//! The HTTP surface: [`router`] builds every route on an [`AppState`]; layers add
//! CORS, request ids, one log line and metrics per request. Handlers live beside
//! their routes in `legacy`, `v1`, `page` and `health`; shared response building
//! (conditional requests, ranges, resizing through the cache) lives in `serve`.

mod health;
pub mod internal;
mod legacy;
mod page;
pub mod params;
mod serve;
pub mod upload;
mod v1;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::Error;
use crate::state::AppState;

/// The whole application on `state`.
pub fn router(state: AppState) -> Router {
    let mut app = Router::new();
    if state.origin.is_local() {
        // The server's API for agents; an agent does not expose it.
        app = app.merge(internal::routes());
    }
    app.merge(legacy::routes())
        .merge(v1::routes())
        .merge(page::routes())
        .merge(health::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(cors))
        // Upload size is enforced by the upload code itself (early 413).
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/v1/") {
        crate::error::Failure::v1(Error::NotFound).into_response()
    } else {
        crate::error::Failure::legacy(Error::NotFound).into_response()
    }
}

/// Bounds the handling of a request that carries a body (an upload) by `limit`, body
/// reading included: a client trickling its body gets 408 and the connection is closed,
/// instead of holding a task and its buffered bytes for as long as it likes.
pub(crate) async fn body_deadline(
    State(limit): State<std::time::Duration>,
    req: Request,
    next: Next,
) -> Response {
    let has_body = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
        || content_length(req.headers()).is_some_and(|n| n > 0)
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    if !has_body {
        return next.run(req).await;
    }
    let v1 = req.uri().path().starts_with("/v1/");
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(?limit, "request body not received in time, closing");
            let error = Error::BodyTimeout(limit.as_secs());
            let failure = if v1 {
                crate::error::Failure::v1(error)
            } else {
                crate::error::Failure::legacy(error)
            };
            let mut resp = failure.into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

/// CORS as in sis 1.x: `Access-Control-Allow-Origin: *` on every response, and any
/// `OPTIONS` preflight answered 204 with the allowed method.
async fn cors(req: Request, next: Next) -> Response {
    let mut resp = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            "access-control-allow-method",
            HeaderValue::from_static("POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, POST, DELETE, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, Range, If-None-Match"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        r
    } else {
        next.run(req).await
    };
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

tokio::task_local! {
    /// The request id of the request being served (set by `observe`).
    static REQUEST_ID: std::sync::Arc<str>;
}

/// The id of the request this task is serving, to forward upstream.
pub fn current_request_id() -> Option<std::sync::Arc<str>> {
    REQUEST_ID.try_with(std::sync::Arc::clone).ok()
}

fn new_request_id() -> String {
    let seq = REQUEST_SEQ.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    format!("{:x}-{seq:x}", t ^ (u64::from(std::process::id()) << 40))
}

struct InFlight(prometheus::IntGauge);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One log line and the `sis_http_*` metrics per request, labelled by route template.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // `MatchedPath` is an `Arc<str>` inside: cloning it does not copy the template.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = req.method().clone();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    let req_bytes = content_length(req.headers());
    let m = &state.metrics;
    let gauge = m.http_in_flight.with_label_values(&[state.mode]);
    gauge.inc();
    let _in_flight = InFlight(gauge);
    let start = Instant::now();
    let span = tracing::info_span!("request", request_id = %request_id);
    let mut resp = REQUEST_ID
        .scope(
            std::sync::Arc::from(request_id.as_str()),
            next.run(req).instrument(span.clone()),
        )
        .await;
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    let resp_bytes = resp
        .body()
        .size_hint()
        .exact()
        .or_else(|| content_length(resp.headers()));
    let health = route == "/healthz" || route == "/readyz";
    m.http_requests
        .with_label_values(&[state.mode, route, method.as_str(), resp.status().as_str()])
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
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Checks the bearer token for uploads and deletes (when one is configured).
pub(crate) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Error> {
    let Some(token) = &state.api_token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant-time comparison.
    let a = given.as_bytes();
    let b = token.as_bytes();
    let mut diff = a.len() ^ b.len();
    for (i, x) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ x);
    }
    if diff == 0 {
        Ok(())
    } else {
        Err(Error::Unauthorized)
    }
}

/// Decodes a query string the way Go's `url.ParseQuery` does (`+` is a space, `%XX`
/// escapes), accepting raw UTF-8. The first value of a key wins.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = query else {
        return Vec::new();
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

fn decode_component(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

pub(crate) fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The answer to an upload whose `Content-Length` is over the limit, sent before
/// the body is read. The body is drained in the background (bounded in bytes and
/// time) so the client, still sending, reads the response instead of a reset.
pub(crate) fn reject_oversized(body: Body, headers: &HeaderMap, mut resp: Response) -> Response {
    let expects_continue = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    // With `Expect: 100-continue` the client waits for us: reading would send a
    // 100 Continue after the final response, so we just close.
    if !expects_continue {
        tokio::spawn(drain(body));
    }
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// How much of a refused body is read and thrown away, at most.
const DRAIN_MAX_BYTES: u64 = 256 << 20;
/// How long a refused body is drained, at most.
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads and discards up to [`DRAIN_MAX_BYTES`] or [`DRAIN_MAX_TIME`] of a body.
async fn drain(body: Body) {
    drain_stream(body.into_data_stream()).await;
}

async fn drain_stream(mut stream: axum::body::BodyDataStream) {
    use futures_util::StreamExt;
    let mut seen = 0u64;
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len() as u64;
            if seen > DRAIN_MAX_BYTES {
                break;
            }
        }
    })
    .await;
}

/// Marker in the stream error of a body cut at the upload limit.
pub(crate) const BODY_TOO_LARGE: &str = "sis: upload body over the limit";

/// Wraps an upload body of unknown length (chunked): a task reads it and forwards
/// chunks until [`crate::state::MAX_UPLOAD_BYTES`] is passed, then yields an error
/// and keeps draining (bounded) so the client still sees the 413. If the handler
/// stops reading early for any reason, the rest is drained the same way.
pub(crate) fn bounded_body(body: Body) -> Body {
    use futures_util::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    total += c.len() as u64;
                    if tx.send(Ok(c)).await.is_err() {
                        break;
                    }
                    if total > crate::state::MAX_UPLOAD_BYTES {
                        let _ = tx.send(Err(std::io::Error::other(BODY_TOO_LARGE))).await;
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    return;
                }
            }
        }
        drop(tx);
        drain_stream(stream).await;
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let p = query_pairs(Some("md5=abc&file_name=测试2.png&x=a+b%2Bc&md5=zzz&flag"));
        assert_eq!(query_get(&p, "md5"), Some("abc"));
        assert_eq!(query_get(&p, "file_name"), Some("测试2.png"));
        assert_eq!(query_get(&p, "x"), Some("a b+c"));
        assert_eq!(query_get(&p, "flag"), Some(""));
        let p = query_pairs(Some("file_name=%E6%B5%8B%E8%AF%952.png"));
        assert_eq!(query_get(&p, "file_name"), Some("测试2.png"));
        assert!(query_pairs(None).is_empty());
    }
}
