//! The dispatcher's metrics: attempts by outcome, durations, retries, dead letters, and the
//! per-plugin gauges refreshed from the queue (pending, lag, outgoing connections).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PluginOutcome {
    pub(super) plugin: String,
    pub(super) outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PluginLabel {
    pub(super) plugin: String,
}

/// Delivery metrics.
#[derive(Clone)]
pub struct DeliveryMetrics {
    pub(super) deliveries: Family<PluginOutcome, Counter>,
    pub(super) duration: Family<PluginLabel, Histogram>,
    pub(super) retries: Family<PluginLabel, Counter>,
    pub(super) dead: Family<PluginLabel, Counter>,
    pub(super) pending: Family<PluginLabel, Gauge>,
    pub(super) lag: Family<PluginLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub(super) outgoing_connections: Family<PluginLabel, Gauge>,
    pub(super) outgoing_reused: Family<PluginLabel, Gauge>,
}

impl DeliveryMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            deliveries: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
            }),
            retries: Family::default(),
            dead: Family::default(),
            pending: Family::default(),
            lag: Family::default(),
            outgoing_connections: Family::default(),
            outgoing_reused: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("hookd");
        r.register(
            "deliveries",
            "Delivery attempts, by plugin and outcome",
            m.deliveries.clone(),
        );
        r.register(
            "plugin_duration_seconds",
            "Time one delivery attempt took, instantiation included",
            m.duration.clone(),
        );
        r.register(
            "delivery_retries",
            "Attempts that will be retried",
            m.retries.clone(),
        );
        r.register(
            "dead_letters",
            "Deliveries moved to the dead letters",
            m.dead.clone(),
        );
        r.register(
            "deliveries_pending",
            "Deliveries waiting (due or backing off), by plugin",
            m.pending.clone(),
        );
        r.register(
            "delivery_lag_seconds",
            "How long the longest-waiting due delivery of a plugin has waited past its due time",
            m.lag.clone(),
        );
        r.register(
            "plugin_outgoing_connections",
            "Outgoing HTTP connections a plugin's loaded version has opened",
            m.outgoing_connections.clone(),
        );
        r.register(
            "plugin_outgoing_requests_reused",
            "Outgoing HTTP requests a plugin's loaded version sent on a kept-alive connection",
            m.outgoing_reused.clone(),
        );
        m
    }
}
