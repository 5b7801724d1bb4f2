//! Every metric the operator exports, in one registry, plus the drop guard that times a
//! reconcile.
//!
//! - `sis_operator_reconciliations_total` — reconciles started
//! - `sis_operator_reconcile_duration_seconds` — histogram of reconcile durations
//! - `sis_operator_reconcile_errors_total{reason}` — failed reconciles by step
//!   ([`crate::error::Error::metric_label`]) and `invalid_spec`
//! - `sis_operator_leader` — 1 while this replica holds the leader Lease
//! - `sis_operator_info{version}` — always 1

use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The operator's metrics and their registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub reconciliations: IntCounter,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: IntCounterVec,
    pub leader: IntGauge,
}

impl Metrics {
    /// Create and register every metric.
    ///
    /// # Errors
    /// Only on a duplicate or malformed metric definition (a bug).
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let reconciliations = IntCounter::new(
            "sis_operator_reconciliations_total",
            "Reconciles of SisCluster objects started",
        )?;
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "sis_operator_reconcile_duration_seconds",
                "Time spent reconciling a SisCluster",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "sis_operator_reconcile_errors_total",
                "Failed reconciles, by the step that failed",
            ),
            &["reason"],
        )?;
        let leader = IntGauge::new(
            "sis_operator_leader",
            "1 while this replica holds the leader Lease and runs the controller",
        )?;
        let info = IntGaugeVec::new(
            Opts::new("sis_operator_info", "Build information"),
            &["version"],
        )?;
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(info))?;
        Ok(Metrics {
            registry,
            reconciliations,
            reconcile_duration,
            reconcile_errors,
            leader,
        })
    }

    /// Count a reconcile and time it until the returned guard is dropped.
    pub fn start_reconcile(&self) -> ReconcileTimer {
        self.reconciliations.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.reconcile_duration.clone(),
        }
    }

    /// Count a failed reconcile.
    pub fn reconcile_failed(&self, reason: &str) {
        self.reconcile_errors.with_label_values(&[reason]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec only fails for malformed metric families, which we never build.
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "encoding metrics failed");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// Observes the reconcile duration when dropped, whichever way the reconcile ends.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_is_counted_and_timed_and_errors_labelled() {
        let m = Metrics::new().unwrap();
        drop(m.start_reconcile());
        m.reconcile_failed("apply_statefulset");
        let text = m.render();
        assert!(
            text.contains("sis_operator_reconciliations_total 1"),
            "{text}"
        );
        assert!(
            text.contains("sis_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"sis_operator_reconcile_errors_total{reason="apply_statefulset"} 1"#),
            "{text}"
        );
        assert!(text.contains("sis_operator_leader 0"), "{text}");
    }
}
