//! The store's metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone)]
pub(crate) struct StoreMetrics {
    pub commit_seconds: Histogram,
    pub batch_events: Histogram,
    pub queue_depth: Gauge,
    pub queue_bytes: Gauge,
    pub commit_errors: Counter,
}

impl StoreMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            // 50 µs .. ~1.6 s
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            batch_events: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            queue_depth: Gauge::default(),
            queue_bytes: Gauge::default(),
            commit_errors: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("hookd_store");
        r.register(
            "commit_seconds",
            "Duration of each group commit, fsync included",
            m.commit_seconds.clone(),
        );
        r.register(
            "batch_events",
            "Events written per group commit",
            m.batch_events.clone(),
        );
        r.register(
            "queue_depth",
            "Events waiting for the store writer",
            m.queue_depth.clone(),
        );
        r.register(
            "queue_bytes",
            "Bytes of the events waiting for the store writer or in its commit",
            m.queue_bytes.clone(),
        );
        r.register(
            "commit_errors",
            "Group commits that failed (their events were answered 503)",
            m.commit_errors.clone(),
        );
        m
    }
}
