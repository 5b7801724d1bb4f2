//! Every Prometheus metric of `sis`, declared in one place, and the `/metrics` text.
//!
//! Each [`Metrics`] owns its own registry (no globals), so tests can run several
//! servers in one process. Route labels are route templates (`/v1/images/{md5}`),
//! never raw paths.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::cache::CacheObserver;

/// All metrics. Cheap to clone (collectors are reference counted).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub mode: &'static str,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_in_flight: IntGaugeVec,
    pub http_request_bytes: HistogramVec,
    pub http_response_bytes: HistogramVec,
    pub cache_hits: IntCounterVec,
    pub cache_misses: IntCounterVec,
    pub cache_evictions: IntCounterVec,
    pub cache_bytes: IntGaugeVec,
    pub cache_entries: IntGaugeVec,
    pub cache_capacity: IntGaugeVec,
    pub images_stored: IntCounter,
    pub storage_objects: IntGauge,
    pub storage_bytes: IntGauge,
    pub resize_duration: Histogram,
    pub resize_queue_depth: IntGauge,
    pub resize_rejected: IntCounter,
    /// Variant requests refused by the variant policy (`crate::http::guard`), by reason.
    pub variant_refusals: IntCounterVec,
    /// Connections and bodies cut by the per-client limits (`crate::limits`), by reason.
    pub client_limits: IntCounterVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub build_info: IntGaugeVec,
}

/// Why the registry could not be built (a duplicate name is a programming error).
pub type MetricsError = prometheus::Error;

const SIZE_BUCKETS: &[f64] = &[
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];

impl Metrics {
    /// Builds and registers every metric for `mode` (`server` or `agent`).
    ///
    /// # Errors
    /// Registration failed (duplicate names).
    pub fn new(mode: &'static str) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let r = &registry;
        fn reg<C: prometheus::core::Collector + Clone + 'static>(
            r: &Registry,
            c: C,
        ) -> Result<C, MetricsError> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let m = Self {
            mode,
            http_requests: reg(
                r,
                IntCounterVec::new(
                    Opts::new("sis_http_requests_total", "HTTP requests answered"),
                    &["mode", "route", "method", "status"],
                )?,
            )?,
            http_duration: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "sis_http_request_duration_seconds",
                        "HTTP request latency (health checks excluded)",
                    ),
                    &["mode", "route"],
                )?,
            )?,
            http_in_flight: reg(
                r,
                IntGaugeVec::new(
                    Opts::new("sis_http_requests_in_flight", "HTTP requests being served"),
                    &["mode"],
                )?,
            )?,
            http_request_bytes: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "sis_http_request_body_bytes",
                        "Request body sizes (from Content-Length)",
                    )
                    .buckets(SIZE_BUCKETS.to_vec()),
                    &["mode", "route"],
                )?,
            )?,
            http_response_bytes: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new("sis_http_response_body_bytes", "Response body sizes")
                        .buckets(SIZE_BUCKETS.to_vec()),
                    &["mode", "route"],
                )?,
            )?,
            cache_hits: reg(
                r,
                IntCounterVec::new(Opts::new("sis_cache_hits_total", "Cache hits"), &["kind"])?,
            )?,
            cache_misses: reg(
                r,
                IntCounterVec::new(
                    Opts::new("sis_cache_misses_total", "Cache misses"),
                    &["kind"],
                )?,
            )?,
            cache_evictions: reg(
                r,
                IntCounterVec::new(
                    Opts::new("sis_cache_evictions_total", "Cache evictions"),
                    &["kind"],
                )?,
            )?,
            cache_bytes: reg(
                r,
                IntGaugeVec::new(
                    Opts::new("sis_cache_bytes", "Bytes held in the cache"),
                    &["kind"],
                )?,
            )?,
            cache_entries: reg(
                r,
                IntGaugeVec::new(
                    Opts::new("sis_cache_entries", "Entries held in the cache"),
                    &["kind"],
                )?,
            )?,
            cache_capacity: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "sis_cache_capacity_bytes",
                        "Cache capacity in bytes: one pool shared by originals and variants, \
                         reported once as kind=\"all\" (never per kind, so sums do not double count)",
                    ),
                    &["kind"],
                )?,
            )?,
            images_stored: reg(
                r,
                IntCounter::new("sis_images_stored_total", "Images newly stored")?,
            )?,
            storage_objects: reg(
                r,
                IntGauge::new("sis_storage_objects", "Stored (md5, name) pairs")?,
            )?,
            storage_bytes: reg(
                r,
                IntGauge::new("sis_storage_bytes", "Stored content bytes (deduplicated)")?,
            )?,
            resize_duration: reg(
                r,
                Histogram::with_opts(HistogramOpts::new(
                    "sis_resize_duration_seconds",
                    "Time to decode, resize and encode one variant",
                ))?,
            )?,
            resize_queue_depth: reg(
                r,
                IntGauge::new("sis_resize_queue_depth", "Resize jobs queued or running")?,
            )?,
            resize_rejected: reg(
                r,
                IntCounter::new(
                    "sis_resize_rejected_total",
                    "Resize jobs refused because the queue was full",
                )?,
            )?,
            variant_refusals: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "sis_variant_refusals_total",
                        "Variant requests refused by the --variants policy (403), by reason",
                    ),
                    &["reason"],
                )?,
            )?,
            client_limits: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "sis_client_limit_hits_total",
                        "Connections refused or bodies cut by per-client limits, by reason",
                    ),
                    &["reason"],
                )?,
            )?,
            upstream_requests: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "sis_upstream_requests_total",
                        "Requests to the upstream server",
                    ),
                    &["op", "status"],
                )?,
            )?,
            upstream_duration: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "sis_upstream_request_duration_seconds",
                        "Upstream request latency",
                    ),
                    &["op"],
                )?,
            )?,
            build_info: reg(
                r,
                IntGaugeVec::new(
                    Opts::new("sis_build_info", "Build information; always 1"),
                    &["version", "mode"],
                )?,
            )?,
            registry,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), mode])
            .set(1);
        m.http_in_flight.with_label_values(&[mode]).set(0);
        for kind in ["original", "variant"] {
            m.cache_hits.with_label_values(&[kind]);
            m.cache_misses.with_label_values(&[kind]);
            m.cache_evictions.with_label_values(&[kind]);
            m.cache_bytes.with_label_values(&[kind]);
            m.cache_entries.with_label_values(&[kind]);
        }
        // Zero series exist from the start, so rates and alerts see them before a refusal.
        for reason in crate::http::guard::REFUSAL_REASONS {
            m.variant_refusals.with_label_values(&[reason]);
        }
        for reason in ["per-client-connections", "slow-body"] {
            m.client_limits.with_label_values(&[reason]);
        }
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            m.registry.register(Box::new(pc))?;
        }
        Ok(m)
    }

    /// Sets the cache capacity gauge: one series, `kind="all"`, since originals
    /// and variants share one byte budget.
    pub fn set_cache_capacity(&self, bytes: usize) {
        self.cache_capacity
            .with_label_values(&["all"])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Cache events go to the `sis_cache_*` metrics.
pub struct CacheMetrics(pub Metrics);

impl CacheObserver for CacheMetrics {
    fn hit(&self, kind: &'static str) {
        self.0.cache_hits.with_label_values(&[kind]).inc();
    }
    fn miss(&self, kind: &'static str) {
        self.0.cache_misses.with_label_values(&[kind]).inc();
    }
    fn evicted(&self, kind: &'static str) {
        self.0.cache_evictions.with_label_values(&[kind]).inc();
    }
    fn level(&self, kind: &'static str, bytes: usize, entries: usize) {
        self.0
            .cache_bytes
            .with_label_values(&[kind])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.0
            .cache_entries
            .with_label_values(&[kind])
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_present() {
        let m = Metrics::new("server").unwrap();
        m.http_requests
            .with_label_values(&["server", "/up", "POST", "200"])
            .inc();
        m.images_stored.inc();
        let text = m.render();
        for name in [
            "sis_http_requests_total",
            "sis_http_requests_in_flight",
            "sis_cache_hits_total",
            "sis_cache_bytes",
            "sis_images_stored_total 1",
            "sis_storage_objects",
            "sis_storage_bytes",
            "sis_resize_queue_depth",
            "sis_resize_rejected_total",
            "sis_variant_refusals_total",
            "sis_client_limit_hits_total",
            "sis_build_info{mode=\"server\",version=\"0.1.0\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        // Two registries in one process do not clash.
        assert!(Metrics::new("agent").is_ok());
    }
}
