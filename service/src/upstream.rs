//! The agent's client for its sis server: one `reqwest` client (keep-alive pool,
//! connect and request timeouts on every call), bounded retries with exponential
//! backoff for idempotent reads only, the caller's `x-request-id` forwarded, a
//! child tracing span and the `sis_upstream_*` metrics per call.
//!
//! It speaks the server's internal API (`/internal/v1/...`, see
//! [`crate::http::internal`]), never the public one, and must not cache: caching
//! is the shared [`crate::cache`]'s job. Errors become [`UpstreamError`], which
//! maps to 502/503/504 (or to the server's own answer, e.g. 409) in
//! [`crate::error`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tracing::Instrument;

use crate::id::{FileName, Md5Hex, URL_COMPONENT};
use crate::metrics::Metrics;
use crate::store::{Health, ImageStore, NameInfo, Object, PutOutcome, StoreError};
use crate::wire::{
    Changes, DeleteReply, ListEntry, MODIFIED_HEADER, NAME_HEADER, NameReply, PutReply,
    UpstreamError, from_millis,
};

/// How long an idle pooled connection to the server is kept (see `Upstream::new`).
const IDLE_POOL_TIMEOUT: Duration = Duration::from_secs(4);

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Base URL, e.g. `http://sis:3333` (no trailing slash needed).
    pub base: String,
    /// TCP connect timeout for each call.
    pub connect_timeout: Duration,
    /// Whole-call timeout (connect, send, answer and body) for each call.
    pub request_timeout: Duration,
    /// Extra attempts for idempotent reads after a connection failure or a 502/503/504.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Bearer token for the server's internal API (when it has one).
    pub token: Option<String>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            base: "http://127.0.0.1:3333".into(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            retries: 2,
            backoff: Duration::from_millis(50),
            token: None,
        }
    }
}

/// [`UpstreamError`] helpers that need reqwest (the type itself is in [`crate::wire`]).
struct UpstreamErrors;

impl UpstreamErrors {
    /// The `status` label of `sis_upstream_requests_total` for a failed call.
    fn label(e: &UpstreamError) -> String {
        match e {
            UpstreamError::Unreachable(_) => "unreachable".into(),
            UpstreamError::Timeout => "timeout".into(),
            UpstreamError::Rejected { status, .. } => status.to_string(),
            UpstreamError::Protocol(_) => "protocol".into(),
        }
    }

    fn from_reqwest(e: &reqwest::Error) -> UpstreamError {
        // The source chain carries the useful part ("connection refused").
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        if e.is_timeout() {
            UpstreamError::Timeout
        } else if e.is_connect() {
            UpstreamError::Unreachable(msg)
        } else if e.is_body() || e.is_decode() {
            UpstreamError::Protocol(msg)
        } else {
            // The connection broke before an answer (e.g. the server died mid-call).
            UpstreamError::Unreachable(msg)
        }
    }
}

/// Delay before retry number `attempt` (1-based): `backoff * 2^(attempt-1)`, at most 2 s.
pub fn backoff_delay(backoff: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    backoff.saturating_mul(factor).min(Duration::from_secs(2))
}

/// An answer: status, headers, whole body.
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

/// The client. Share it behind an `Arc`.
pub struct Upstream {
    client: reqwest::Client,
    base: String,
    cfg: UpstreamConfig,
    metrics: Metrics,
    /// Set by the agent's feed poller: the last probes reached the server.
    reachable: AtomicBool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.base)
            .field("reachable", &self.is_reachable())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the client (no connection is made yet).
    ///
    /// # Errors
    /// The base URL is not `http://host:port`, or the client cannot be built.
    pub fn new(cfg: UpstreamConfig, metrics: Metrics) -> Result<Self, String> {
        let base = cfg.base.trim_end_matches('/').to_owned();
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("upstream {base:?}: only http:// URLs are supported"))?;
        if rest.is_empty() || rest.contains('/') {
            return Err(format!(
                "upstream {base:?}: want http://HOST:PORT without a path"
            ));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            // The server closes keep-alive connections idle for its header-read timeout
            // (10 s by default); dropping ours well before that means a pooled connection is
            // never one the server is closing, which would fail a (never retried) upload.
            .pool_idle_timeout(IDLE_POOL_TIMEOUT)
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            // Agent to server traffic is internal: never through a proxy from the environment.
            .no_proxy()
            .user_agent(concat!("sis-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the upstream client: {e}"))?;
        Ok(Self {
            client,
            base,
            cfg,
            metrics,
            reachable: AtomicBool::new(false),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.cfg
    }

    /// What the last feed probes said (see [`crate::agent`]).
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::SeqCst)
    }

    pub fn set_reachable(&self, ok: bool) {
        self.reachable.store(ok, Ordering::SeqCst);
    }

    /// One call with retries (idempotent calls only) and metrics. 2xx and 404 are
    /// answers; other statuses become [`UpstreamError::Rejected`].
    async fn call(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        timeout: Option<Duration>,
    ) -> Result<Reply, UpstreamError> {
        let idempotent = matches!(method, Method::GET | Method::HEAD);
        let attempts = if idempotent { self.cfg.retries + 1 } else { 1 };
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let span = tracing::info_span!("upstream", op, method = %method, path, attempt);
            let result = self
                .once(op, method.clone(), &url, body.clone(), timeout)
                .instrument(span.clone())
                .await;
            match result {
                Err(e) if e.retriable() && attempt < attempts => {
                    let delay = backoff_delay(self.cfg.backoff, attempt);
                    span.in_scope(|| {
                        tracing::info!(error = %e, retry_in_ms = delay.as_millis() as u64, "upstream call failed, retrying");
                    });
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    span.in_scope(|| tracing::warn!(error = %e, "upstream call failed"));
                    return Err(e);
                }
                Ok(r) => return Ok(r),
            }
        }
    }

    async fn once(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        body: Option<Bytes>,
        timeout: Option<Duration>,
    ) -> Result<Reply, UpstreamError> {
        let start = Instant::now();
        let mut req = self.client.request(method, url);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(id) = crate::http::current_request_id() {
            req = req.header("x-request-id", id);
        }
        if let Some(token) = &self.cfg.token {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let result = async {
            let resp = req
                .send()
                .await
                .map_err(|e| UpstreamErrors::from_reqwest(&e))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp
                .bytes()
                .await
                .map_err(|e| UpstreamErrors::from_reqwest(&e))?;
            Ok::<_, UpstreamError>(Reply {
                status,
                headers,
                body,
            })
        }
        .await;
        let elapsed = start.elapsed().as_secs_f64();
        self.metrics
            .upstream_duration
            .with_label_values(&[op])
            .observe(elapsed);
        let label = match &result {
            Ok(r) => r.status.as_u16().to_string(),
            Err(e) => UpstreamErrors::label(e),
        };
        self.metrics
            .upstream_requests
            .with_label_values(&[op, &label])
            .inc();
        let reply = result?;
        tracing::debug!(
            status = reply.status.as_u16(),
            latency_ms = elapsed * 1000.0,
            "upstream answered"
        );
        if reply.status.is_success() || reply.status == StatusCode::NOT_FOUND {
            return Ok(reply);
        }
        let (code, message) = serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .map(|v| {
                (
                    v["code"].as_str().unwrap_or("").to_owned(),
                    v["error"].as_str().unwrap_or("").to_owned(),
                )
            })
            .unwrap_or_default();
        Err(UpstreamError::Rejected {
            status: reply.status.as_u16(),
            code,
            message,
        })
    }

    fn object_path(md5: &Md5Hex, name: Option<&FileName>) -> String {
        match name {
            Some(n) => format!(
                "/internal/v1/objects/{md5}/{}",
                percent_encoding::utf8_percent_encode(n.as_str(), URL_COMPONENT)
            ),
            None => format!("/internal/v1/objects/{md5}"),
        }
    }

    fn json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, UpstreamError> {
        serde_json::from_slice(body).map_err(|e| UpstreamError::Protocol(format!("bad JSON: {e}")))
    }

    /// Stores one image on the server, which verifies `md5` against the bytes.
    ///
    /// # Errors
    /// Unreachable, timeout, or the server's refusal (409, 400, 415, …).
    pub async fn put(
        &self,
        md5: &Md5Hex,
        name: &FileName,
        bytes: Bytes,
    ) -> Result<PutOutcome, UpstreamError> {
        let path = Self::object_path(md5, Some(name));
        let r = self
            .call("put", Method::PUT, &path, Some(bytes), None)
            .await?;
        if r.status == StatusCode::NOT_FOUND {
            return Err(UpstreamError::Protocol(
                "the server has no internal API (not a sis server, or an old one?)".into(),
            ));
        }
        let reply: PutReply = Self::json(&r.body)?;
        Ok(if reply.created {
            PutOutcome::Created {
                new_bytes: reply.new_bytes,
            }
        } else {
            PutOutcome::Exists
        })
    }

    /// The image (md5, name), or the first name under md5; `None` when missing.
    ///
    /// # Errors
    /// Unreachable, timeout, bad answer.
    pub async fn get(
        &self,
        md5: &Md5Hex,
        name: Option<&FileName>,
    ) -> Result<Option<Object>, UpstreamError> {
        let r = self
            .call(
                "get",
                Method::GET,
                &Self::object_path(md5, name),
                None,
                None,
            )
            .await?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let header = |h: &str| r.headers.get(h).and_then(|v| v.to_str().ok());
        let name = header(NAME_HEADER)
            .and_then(|v| percent_encoding::percent_decode_str(v).decode_utf8().ok())
            .and_then(|v| FileName::parse(&v).ok())
            .ok_or_else(|| UpstreamError::Protocol(format!("missing or bad {NAME_HEADER}")))?;
        let modified = header(MODIFIED_HEADER)
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(SystemTime::UNIX_EPOCH, from_millis);
        Ok(Some(Object {
            name,
            // The body may be a slice of a larger receive buffer; the cache counts only
            // `len()`, so keep an exact-size copy rather than pinning the whole buffer.
            bytes: Bytes::copy_from_slice(&r.body),
            modified,
        }))
    }

    /// Names stored under `md5`, in byte order.
    ///
    /// # Errors
    /// Unreachable, timeout, bad answer.
    pub async fn names(&self, md5: &Md5Hex) -> Result<Vec<NameInfo>, UpstreamError> {
        let path = format!("/internal/v1/names/{md5}");
        let r = self.call("names", Method::GET, &path, None, None).await?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let list: Vec<NameReply> = Self::json(&r.body)?;
        list.into_iter()
            .map(|n| {
                Ok(NameInfo {
                    name: FileName::parse(&n.name)
                        .map_err(|e| UpstreamError::Protocol(format!("bad name: {e}")))?,
                    size: n.size,
                    stored: from_millis(n.stored_ms),
                    inode: n.inode,
                })
            })
            .collect()
    }

    /// Deletes a name (or all names); returns (names removed, bytes freed).
    ///
    /// # Errors
    /// Unreachable, timeout, the server's refusal.
    pub async fn delete(
        &self,
        md5: &Md5Hex,
        name: Option<&FileName>,
    ) -> Result<(usize, u64), UpstreamError> {
        let path = Self::object_path(md5, name);
        let r = self
            .call("delete", Method::DELETE, &path, None, None)
            .await?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok((0, 0));
        }
        let reply: DeleteReply = Self::json(&r.body)?;
        Ok((reply.removed, reply.freed))
    }

    /// Up to `limit` stored (md5, name) after `after`, in the server's key order.
    ///
    /// # Errors
    /// Unreachable, timeout, bad answer.
    pub async fn list(
        &self,
        after: Option<&(Md5Hex, FileName)>,
        limit: usize,
    ) -> Result<Vec<(Md5Hex, NameInfo)>, UpstreamError> {
        let mut path = format!("/internal/v1/list?limit={limit}");
        if let Some((m, n)) = after {
            path.push_str("&after=");
            path.push_str(&crate::http::list::encode_cursor(m, n));
        }
        let r = self.call("list", Method::GET, &path, None, None).await?;
        if r.status == StatusCode::NOT_FOUND {
            return Err(UpstreamError::Protocol(
                "the server has no listing (an older sis server?)".into(),
            ));
        }
        let list: Vec<ListEntry> = Self::json(&r.body)?;
        list.into_iter()
            .map(|e| {
                let bad = |what: &str| UpstreamError::Protocol(format!("bad {what} in a listing"));
                Ok((
                    Md5Hex::parse(&e.md5).ok_or_else(|| bad("md5"))?,
                    NameInfo {
                        name: FileName::parse(&e.name).map_err(|_| bad("name"))?,
                        size: e.size,
                        stored: from_millis(e.stored_ms),
                        inode: e.inode,
                    },
                ))
            })
            .collect()
    }

    /// The server's change feed after `since` (no retries: the poller polls again).
    ///
    /// # Errors
    /// Unreachable, timeout, bad answer.
    pub async fn changes(
        &self,
        since: Option<u64>,
        timeout: Duration,
    ) -> Result<Changes, UpstreamError> {
        let path = match since {
            Some(s) => format!("/internal/v1/changes?since={s}"),
            None => "/internal/v1/changes".to_owned(),
        };
        let r = self
            .once(
                "changes",
                Method::GET,
                &format!("{}{path}", self.base),
                None,
                Some(timeout),
            )
            .await?;
        if r.status == StatusCode::NOT_FOUND {
            return Err(UpstreamError::Protocol(
                "the server has no change feed (not a sis server, or an old one?)".into(),
            ));
        }
        Self::json(&r.body)
    }
}

/// The agent's store: its server, through the internal API.
#[async_trait::async_trait]
impl ImageStore for Upstream {
    fn kind(&self) -> &'static str {
        "upstream"
    }

    async fn put_if_absent(
        &self,
        md5: Md5Hex,
        name: FileName,
        bytes: Bytes,
    ) -> Result<PutOutcome, StoreError> {
        Ok(self.put(&md5, &name, bytes).await?)
    }

    async fn get(
        &self,
        md5: &Md5Hex,
        name: Option<&FileName>,
    ) -> Result<Option<Object>, StoreError> {
        Ok(Upstream::get(self, md5, name).await?)
    }

    async fn names(&self, md5: &Md5Hex) -> Result<Vec<NameInfo>, StoreError> {
        Ok(Upstream::names(self, md5).await?)
    }

    async fn delete(
        &self,
        md5: &Md5Hex,
        name: Option<&FileName>,
    ) -> Result<(usize, u64), StoreError> {
        Ok(Upstream::delete(self, md5, name).await?)
    }

    /// Ready while the last polls of the server's change feed succeeded.
    async fn health(&self) -> Health {
        if self.is_reachable() {
            Health::Ready
        } else {
            Health::Unready("the image server's change feed is unreachable".into())
        }
    }

    async fn usage(&self) -> Option<(u64, u64)> {
        None
    }

    async fn list(
        &self,
        after: Option<&(Md5Hex, FileName)>,
        limit: usize,
    ) -> Result<Vec<(Md5Hex, NameInfo)>, StoreError> {
        Ok(Upstream::list(self, after, limit).await?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn rejected(status: u16, code: &str) -> UpstreamError {
        UpstreamError::Rejected {
            status,
            code: code.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn error_mapping() {
        let code = |e: UpstreamError| Error::from(e).code();
        assert_eq!(
            code(UpstreamError::Unreachable("x".into())),
            "upstream-unavailable"
        );
        assert_eq!(code(UpstreamError::Timeout), "upstream-timeout");
        assert_eq!(code(UpstreamError::Protocol("x".into())), "bad-gateway");
        assert_eq!(code(rejected(409, "conflict")), "conflict");
        assert_eq!(code(rejected(400, "md5-mismatch")), "md5-mismatch");
        assert_eq!(
            code(rejected(415, "unsupported-media-type")),
            "unsupported-media-type"
        );
        assert_eq!(code(rejected(404, "not-found")), "not-found");
        assert_eq!(code(rejected(503, "busy")), "upstream-unavailable");
        assert_eq!(code(rejected(503, "")), "upstream-unavailable");
        assert_eq!(code(rejected(504, "")), "upstream-timeout");
        assert_eq!(code(rejected(401, "unauthorized")), "bad-gateway");
        assert_eq!(code(rejected(500, "internal")), "bad-gateway");
    }

    #[test]
    fn retry_policy() {
        assert!(UpstreamError::Unreachable("refused".into()).retriable());
        assert!(UpstreamError::Protocol("cut".into()).retriable());
        assert!(rejected(502, "").retriable());
        assert!(rejected(503, "busy").retriable());
        assert!(!UpstreamError::Timeout.retriable());
        assert!(!rejected(404, "not-found").retriable());
        assert!(!rejected(409, "conflict").retriable());
        assert!(!rejected(500, "internal").retriable());
        let b = Duration::from_millis(50);
        assert_eq!(backoff_delay(b, 1), Duration::from_millis(50));
        assert_eq!(backoff_delay(b, 2), Duration::from_millis(100));
        assert_eq!(backoff_delay(b, 3), Duration::from_millis(200));
        assert_eq!(backoff_delay(b, 30), Duration::from_secs(2));
    }

    #[test]
    fn base_url_checked() {
        let m = Metrics::new("agent").unwrap();
        let cfg = |base: &str| UpstreamConfig {
            base: base.into(),
            ..UpstreamConfig::default()
        };
        assert!(Upstream::new(cfg("http://127.0.0.1:1"), m.clone()).is_ok());
        assert_eq!(
            Upstream::new(cfg("http://h:1/"), m.clone()).unwrap().base(),
            "http://h:1"
        );
        assert!(Upstream::new(cfg("https://h:1"), m.clone()).is_err());
        assert!(Upstream::new(cfg("h:1"), m.clone()).is_err());
        assert!(Upstream::new(cfg("http://h:1/x"), m).is_err());
    }

    /// Against a port nobody listens on: unreachable, retried, counted, fast.
    #[tokio::test]
    async fn unreachable_is_retried_and_counted() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let m = Metrics::new("agent").unwrap();
        let up = Upstream::new(
            UpstreamConfig {
                base: format!("http://{addr}"),
                retries: 2,
                backoff: Duration::from_millis(1),
                ..UpstreamConfig::default()
            },
            m.clone(),
        )
        .unwrap();
        let start = Instant::now();
        let e = up.get(&Md5Hex::of(b"x"), None).await.unwrap_err();
        assert!(matches!(e, UpstreamError::Unreachable(_)), "{e:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
        let text = m.render();
        assert!(
            text.contains("sis_upstream_requests_total{op=\"get\",status=\"unreachable\"} 3"),
            "{text}"
        );
        // Writes are not retried.
        let e = up
            .put(
                &Md5Hex::of(b"x"),
                &FileName::parse("a.png").unwrap(),
                Bytes::from_static(b"x"),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, UpstreamError::Unreachable(_)));
        assert!(
            m.render()
                .contains("sis_upstream_requests_total{op=\"put\",status=\"unreachable\"} 1")
        );
    }

    /// A server that accepts and never answers: a timeout, not retried.
    #[tokio::test]
    async fn slow_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let m = Metrics::new("agent").unwrap();
        let up = Upstream::new(
            UpstreamConfig {
                base: format!("http://{addr}"),
                request_timeout: Duration::from_millis(200),
                ..UpstreamConfig::default()
            },
            m.clone(),
        )
        .unwrap();
        let start = Instant::now();
        let e = up.get(&Md5Hex::of(b"x"), None).await.unwrap_err();
        assert!(matches!(e, UpstreamError::Timeout), "{e:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(
            m.render()
                .contains("sis_upstream_requests_total{op=\"get\",status=\"timeout\"} 1")
        );
    }
}
