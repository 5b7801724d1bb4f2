//! The HTTP surface: [`app`] is every route on an [`AppState`] behind the edge (`edge`:
//! CORS, request ids, body deadline, one log line and metrics per request). Handlers live beside
//! their routes in `legacy`, `v1`, `page` and `health`; shared response building
//! (conditional requests, ranges, resizing through the cache) lives in `serve`.

mod edge;
pub mod guard;
mod health;
pub mod internal;
mod legacy;
pub mod list;
mod page;
pub mod params;
mod serve;
pub mod upload;
mod v1;

use std::borrow::Cow;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

pub use edge::{App, EdgeOptions, current_request_id};

use crate::error::Error;
use crate::state::AppState;

/// The `{md5}` and optional `{name}` segments of an image route, so one handler serves both
/// `/…/{md5}` and `/…/{md5}/{name}`.
#[derive(serde::Deserialize)]
pub(crate) struct ImagePath {
    pub md5: String,
    pub name: Option<String>,
}

/// The whole application on `state` ([`App`]: routes behind the edge), default options.
pub fn app(state: AppState) -> App {
    App::new(state, EdgeOptions::default())
}

/// Every route on `state`, without the edge (CORS, request ids, metrics, log lines).
fn router(state: AppState) -> Router {
    let mut app = Router::new();
    if state.role.serves_internal_api() {
        // The server's API for agents; an agent does not expose it.
        app = app.merge(internal::routes());
    }
    app.merge(legacy::routes())
        .merge(v1::routes())
        .merge(page::routes())
        .merge(health::routes())
        .route_layer(edge::TagRouteLayer)
        .fallback(not_found)
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
/// escapes), accepting raw UTF-8. The first value of a key wins. Components without
/// escapes are borrowed, not copied.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
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

fn decode_component(s: &str) -> Cow<'_, str> {
    if !s.contains(['+', '%']) {
        return Cow::Borrowed(s);
    }
    let plus = s.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&plus)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// The first value of `key` in a raw query string, decoded like [`query_pairs`] but
/// strictly: `Err` when its bytes (after `%XX` decoding) are not UTF-8, so a name is
/// refused rather than stored with replacement characters.
pub(crate) fn query_get_utf8(query: Option<&str>, key: &str) -> Result<Option<String>, Error> {
    let Some(q) = query else {
        return Ok(None);
    };
    for p in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        if decode_component(k) != key {
            continue;
        }
        let plus = v.replace('+', " ");
        return percent_encoding::percent_decode_str(&plus)
            .decode_utf8()
            .map(|v| Some(v.into_owned()))
            .map_err(|_| Error::NameNotUtf8);
    }
    Ok(None)
}

/// The first value of `key`.
pub(crate) fn query_get<'a, K: AsRef<str>, V: AsRef<str>>(
    pairs: &'a [(K, V)],
    key: &str,
) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.as_ref() == key)
        .map(|(_, v)| v.as_ref())
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

/// Admits an upload body: over the limit by `Content-Length`, the answer is `too_large()` at
/// once (see [`reject_oversized`]); of unknown length, the body is bounded while it streams
/// ([`bounded_body`]).
#[allow(
    clippy::result_large_err,
    reason = "the error is the response itself, built once per refused upload"
)]
pub(crate) fn admit_upload_body(
    headers: &HeaderMap,
    body: Body,
    too_large: impl FnOnce() -> Response,
) -> Result<Body, Response> {
    match content_length(headers) {
        Some(n) if n > crate::state::MAX_UPLOAD_BYTES => {
            Err(reject_oversized(body, headers, too_large()))
        }
        Some(_) => Ok(body),
        None => Ok(bounded_body(body)),
    }
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
        assert_eq!(
            query_get_utf8(Some("a=1&name=%E6%B5%8B.png"), "name").unwrap(),
            Some("测.png".into())
        );
        assert!(matches!(
            query_get_utf8(Some("name=%FF%FE.jpg"), "name"),
            Err(Error::NameNotUtf8)
        ));
        assert_eq!(query_get_utf8(Some("x=1"), "name").unwrap(), None);
    }
}
