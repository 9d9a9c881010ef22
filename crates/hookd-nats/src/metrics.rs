//! The JetStream backend's metrics, beside the delivery metrics every backend has.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PluginLabel {
    pub plugin: String,
}

#[derive(Debug, Clone)]
pub(crate) struct NatsMetrics {
    pub publish_seconds: Histogram,
    pub publish_errors: Counter,
    pub connected: Gauge,
    pub redeliveries: Family<PluginLabel, Counter>,
    pub consumer_pending: Family<PluginLabel, Gauge>,
    pub held: Gauge,
}

impl NatsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            // 100 µs .. ~6.5 s: a leader election is seconds.
            publish_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 17)),
            publish_errors: Counter::default(),
            connected: Gauge::default(),
            redeliveries: Family::default(),
            consumer_pending: Family::default(),
            held: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("hookd_nats");
        r.register(
            "publish_seconds",
            "Time from publishing an event to JetStream's acknowledgement (replicas included)",
            m.publish_seconds.clone(),
        );
        r.register(
            "publish_errors",
            "Events JetStream did not acknowledge (answered 503)",
            m.publish_errors.clone(),
        );
        r.register(
            "connected",
            "1 while the connection to NATS is up",
            m.connected.clone(),
        );
        r.register(
            "redeliveries",
            "Deliveries JetStream handed out again (an instance died or stalled holding them)",
            m.redeliveries.clone(),
        );
        r.register(
            "consumer_pending",
            "Messages of each plugin's consumer not yet acknowledged, across the cluster",
            m.consumer_pending.clone(),
        );
        r.register(
            "held",
            "Deliveries this instance has fetched and not yet finished",
            m.held.clone(),
        );
        m
    }
}
