//! [`AppState`]: what every handler shares — the store, the node's role, the image
//! cache, the resize pool, limits, metrics and the readiness flag. Built once
//! at start-up; cloning is one reference-count increment (axum clones the state for
//! every extractor of every request, so this is on the hot path).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use axum::http::HeaderValue;
use bytes::Bytes;

use crate::cache::{Cache, CacheKey, Weigh};
use crate::error::Error;
use crate::id::{FileName, Md5Hex};
use crate::imaging::{Format, Limits, ResizePool, Strip};
use crate::metrics::{CacheMetrics, Metrics};
use crate::role::Role;
use crate::store::{Metered, SharedStore};

/// Uploads larger than this (by `Content-Length` or as streamed) are refused.
pub const MAX_UPLOAD_BYTES: u64 = 50 * 1024 * 1024;

/// What the cache holds: originals by (md5, name) and resized variants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageKey {
    /// The original; `name: None` is "the first name under md5".
    Original { md5: Md5Hex, name: Option<FileName> },
    /// A variant; `params` is the canonical parameter string (also in its ETag).
    Variant {
        md5: Md5Hex,
        name: Option<FileName>,
        params: String,
    },
}

impl ImageKey {
    pub fn md5(&self) -> &Md5Hex {
        match self {
            Self::Original { md5, .. } | Self::Variant { md5, .. } => md5,
        }
    }
}

impl CacheKey for ImageKey {
    fn kind(&self) -> &'static str {
        match self {
            Self::Original { .. } => "original",
            Self::Variant { .. } => "variant",
        }
    }
}

/// A cached image (original or variant) with its response headers prebuilt: a cache hit
/// clones reference-counted values instead of formatting dates and tags per request.
#[derive(Debug, Clone)]
pub struct CachedImage {
    pub bytes: Bytes,
    pub format: Format,
    pub name: FileName,
    pub modified: SystemTime,
    pub headers: ImageHeaders,
}

/// The per-image response header values.
#[derive(Debug, Clone)]
pub struct ImageHeaders {
    pub etag: HeaderValue,
    pub last_modified: HeaderValue,
    /// Of the whole image (a range answer computes its own).
    pub content_length: HeaderValue,
}

impl ImageHeaders {
    pub fn new(etag: HeaderValue, modified: SystemTime, len: usize) -> Self {
        Self {
            etag,
            last_modified: http_date(modified),
            content_length: HeaderValue::from(len),
        }
    }
}

/// `modified` as an HTTP date header value.
pub fn http_date(modified: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(modified))
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

impl Weigh for CachedImage {
    fn weight(&self) -> usize {
        let h = &self.headers;
        self.bytes.len()
            + self.name.as_str().len()
            + h.etag.len()
            + h.last_modified.len()
            + h.content_length.len()
            + 128
    }
}

/// The image cache type shared by both modes.
pub type ImageCache = Cache<ImageKey, CachedImage, Error>;

/// Shared state of one running `sis`: a handle to [`Shared`] (fields read through `Deref`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points to.
pub struct Shared {
    /// `server` or `agent` (the `mode` label of the metrics).
    pub mode: &'static str,
    /// Where images live (a server's disk or bucket, behind [`Metered`]; an agent's server).
    pub store: SharedStore,
    pub role: Role,
    pub cache: Arc<ImageCache>,
    pub pool: Arc<ResizePool>,
    pub limits: Limits,
    /// Behind an `Arc` of its own: the agent's upstream client records into it too.
    pub metrics: Arc<Metrics>,
    /// `Some` when uploads and deletes need `Authorization: Bearer <token>`.
    pub api_token: Option<Arc<str>>,
    /// Cleared on SIGTERM so /readyz answers 503 at once.
    pub ready: Arc<AtomicBool>,
    /// `--strip-metadata`: what uploads lose before they are hashed.
    pub strip: Option<Strip>,
}

/// What [`AppState::new`] needs besides the store and the role.
#[derive(Debug, Clone)]
pub struct StateOptions {
    pub cache_bytes: u64,
    pub limits: Limits,
    pub resize_workers: usize,
    pub resize_queue: usize,
    pub api_token: Option<String>,
    pub strip: Option<Strip>,
}

impl Default for StateOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 100 << 20,
            limits: Limits::default(),
            resize_workers: 0,
            resize_queue: 64,
            api_token: None,
            strip: None,
        }
    }
}

impl AppState {
    /// Builds the state around a store; a server's store is wrapped in [`Metered`].
    ///
    /// # Errors
    /// Metrics registration failed.
    pub fn new(
        store: SharedStore,
        role: Role,
        opts: StateOptions,
    ) -> Result<Self, prometheus::Error> {
        let metrics = Metrics::new(role.name())?;
        Ok(Self::with_metrics(store, role, opts, metrics))
    }

    /// Builds the state with metrics made beforehand (the agent's upstream client records
    /// into the same registry).
    pub fn with_metrics(
        store: SharedStore,
        role: Role,
        opts: StateOptions,
        metrics: Metrics,
    ) -> Self {
        let metrics = Arc::new(metrics);
        let store = match role {
            Role::Server { .. } => Metered::wrap(store, Arc::clone(&metrics)),
            Role::Agent => store,
        };
        let cache_bytes = usize::try_from(opts.cache_bytes).unwrap_or(usize::MAX);
        metrics.set_cache_capacity(cache_bytes);
        let cache = Arc::new(Cache::new(
            cache_bytes,
            Box::new(CacheMetrics(Metrics::clone(&metrics))),
        ));
        let workers = if opts.resize_workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            opts.resize_workers
        };
        let pool = Arc::new(ResizePool::new(workers, opts.resize_queue));
        Self(Arc::new(Shared {
            mode: role.name(),
            store,
            role,
            cache,
            pool,
            limits: opts.limits,
            metrics,
            api_token: opts.api_token.filter(|t| !t.is_empty()).map(Arc::from),
            ready: Arc::new(AtomicBool::new(true)),
            strip: opts.strip,
        }))
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Refreshes the storage gauges from the store's own count (a server's [`Metered`]
    /// store sets them; an agent's store has none).
    pub async fn refresh_storage_gauges(&self) {
        let _ = self.store.usage().await;
    }
}
