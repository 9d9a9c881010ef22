//! The ingest listener's metrics.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::rejections::RejectionLog;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Every `reason` label `hookd_requests_rejected_total` can carry.
pub const REASONS: [&str; 14] = [
    "missing_signature",
    "bad_signature",
    "too_large",
    "bad_json",
    "too_deep",
    "bad_envelope",
    "body_timeout",
    "body_error",
    "body_budget",
    "not_found",
    "method_not_allowed",
    "queue_full",
    "store_error",
    "shutting_down",
];

/// Counters and histograms for the ingest path. Cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    /// Events acknowledged with a 2xx, duplicates included.
    pub events_received: Counter,
    /// Acknowledged events whose id had been seen before.
    pub events_duplicate: Counter,
    /// New events that no plugin subscribed to: stored, nothing to deliver.
    pub events_unrouted: Counter,
    /// Requests refused, by reason.
    pub requests_rejected: Family<ReasonLabel, Counter>,
    /// Time from the request's arrival to its answer, for acknowledged events.
    pub ingest_seconds: Histogram,
    /// Connections closed at once because their client held its share of the slots.
    pub connections_refused: Counter,
    /// Rejections written to the log in aggregate.
    log: RejectionLog,
    /// The latest rejections, newest last, for `GET /status`.
    recent: Arc<Mutex<VecDeque<Rejection>>>,
}

/// How many rejections `GET /status` remembers.
const RECENT_REJECTIONS: usize = 20;

/// One refused request, as `GET /status` lists it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Rejection {
    pub at_ms: u64,
    pub reason: &'static str,
}

impl IngestMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            events_received: Counter::default(),
            events_duplicate: Counter::default(),
            events_unrouted: Counter::default(),
            requests_rejected: Family::default(),
            recent: Arc::default(),
            ingest_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            connections_refused: Counter::default(),
            log: RejectionLog::default(),
        };
        let r = registry.sub_registry_with_prefix("hookd");
        r.register(
            "events_received",
            "Events acknowledged with a 2xx, duplicates included",
            m.events_received.clone(),
        );
        r.register(
            "events_duplicate",
            "Acknowledged events whose id was already stored (not delivered again)",
            m.events_duplicate.clone(),
        );
        r.register(
            "events_unrouted",
            "New events no plugin subscribed to (stored, no delivery)",
            m.events_unrouted.clone(),
        );
        r.register(
            "requests_rejected",
            "Ingest requests refused, by reason",
            m.requests_rejected.clone(),
        );
        r.register(
            "ingest_request_seconds",
            "Time from request arrival to the 2xx answer, durable enqueue included",
            m.ingest_seconds.clone(),
        );
        r.register(
            "connections_refused",
            "Ingest connections closed at once because their client address held its share of \
             the connection slots (server.max_connections_per_client)",
            m.connections_refused.clone(),
        );
        // Start every reason at zero so alerts and rates see them before the first rejection.
        for reason in REASONS {
            drop(m.requests_rejected.get_or_create(&ReasonLabel { reason }));
        }
        m
    }

    /// Counts a refused request exactly and logs it in aggregate (see [`crate::rejections`]):
    /// only its reason, client address and size, never its content.
    pub fn refuse(&self, reason: &'static str, peer: Option<SocketAddr>, size: Option<u64>) {
        self.reject(reason);
        self.log.record(reason, peer, size);
    }

    /// Counts a connection closed because its client held its share of the slots.
    pub(crate) fn refuse_connection(&self, peer: SocketAddr) {
        self.connections_refused.inc();
        self.log.record("too_many_connections", Some(peer), None);
    }

    /// Counts a refused request, without logging it.
    pub(crate) fn reject(&self, reason: &'static str) {
        self.requests_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT_REJECTIONS {
            recent.pop_front();
        }
        recent.push_back(Rejection { at_ms, reason });
    }

    /// The latest rejections, oldest first.
    pub fn recent_rejections(&self) -> Vec<Rejection> {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// Rejections so far, by reason.
    pub(crate) fn rejections_by_reason(&self) -> Vec<(&'static str, u64)> {
        REASONS
            .iter()
            .map(|&reason| {
                let n = self
                    .requests_rejected
                    .get_or_create(&ReasonLabel { reason })
                    .get();
                (reason, n)
            })
            .collect()
    }
}
