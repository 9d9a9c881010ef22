//! The admin listener: health, readiness, plugins, status and metrics, on a separate (default
//! loopback) address. The JSON answers are the types of [`hookd_admin`], the contract
//! `hookd status` reads back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Instant;

use hookd_admin::{Deliveries, EventCounts, Plugin, Rejection, Status, StoreStatus};
use hookd_storage::EventLog;
use prometheus_client::registry::Registry;

use crate::IngestMetrics;
use warp::http::StatusCode;
use warp::{Filter, Reply};

/// What the admin routes read.
pub struct AdminState {
    pub registry: Arc<Registry>,
    pub log: Arc<dyn EventLog>,
    /// True once the daemon serves, false again when it starts shutting down.
    pub ready: Arc<AtomicBool>,
    pub info: Arc<dyn AdminInfo>,
    pub ingest: IngestMetrics,
    pub started: Instant,
}

/// What the admin listener reports beyond the store; the daemon implements it.
#[async_trait::async_trait]
pub trait AdminInfo: Send + Sync + 'static {
    /// `GET /plugins`: the plugins loaded and those refused.
    fn plugins(&self) -> Vec<Plugin>;

    /// Pending and dead deliveries, for `GET /status`, from the delivery queue.
    async fn deliveries(&self) -> Deliveries;

    /// The instances sharing the store, when it is shared (see [`hookd_admin::Cluster`]).
    async fn cluster(&self) -> Option<hookd_admin::Cluster> {
        None
    }
}

/// `GET /status`: what `hookd status` prints.
fn status(s: &AdminState, deliveries: Deliveries, cluster: Option<hookd_admin::Cluster>) -> Status {
    let rejected = s
        .ingest
        .rejections_by_reason()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(reason, n)| (reason.to_owned(), n))
        .collect();
    let health = s.log.health();
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_secs: s.started.elapsed().as_secs(),
        ready: s.ready.load(Ordering::Acquire),
        store: StoreStatus {
            writer_running: health.accepting,
            queue_depth: health.queued as u64,
            queue_bytes: health.queued_bytes as u64,
        },
        connections_refused: s.ingest.connections_refused.get(),
        events: EventCounts {
            received: s.ingest.events_received.get(),
            duplicate: s.ingest.events_duplicate.get(),
            unrouted: s.ingest.events_unrouted.get(),
        },
        rejected,
        recent_rejections: s
            .ingest
            .recent_rejections()
            .into_iter()
            .map(|r| Rejection {
                at_ms: r.at_ms,
                reason: r.reason.to_owned(),
            })
            .collect(),
        deliveries,
        plugins: s.info.plugins(),
        cluster,
    }
}

/// `GET /healthz`, `GET /readyz`, `GET /plugins`, `GET /status`, `GET /metrics`.
pub fn admin_routes(
    state: Arc<AdminState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    let with_state = warp::any().map(move || state.clone());
    let healthz = warp::path!("healthz")
        .and(with_state.clone())
        .map(|s: Arc<AdminState>| {
            if s.log.health().accepting {
                warp::reply::with_status("ok\n", StatusCode::OK).into_response()
            } else {
                warp::reply::with_status("store writer stopped\n", StatusCode::SERVICE_UNAVAILABLE)
                    .into_response()
            }
        });
    let readyz = warp::path!("readyz")
        .and(with_state.clone())
        .map(|s: Arc<AdminState>| {
            if s.ready.load(Ordering::Acquire) && s.log.health().accepting {
                warp::reply::with_status("ready\n", StatusCode::OK).into_response()
            } else {
                warp::reply::with_status("not ready\n", StatusCode::SERVICE_UNAVAILABLE)
                    .into_response()
            }
        });
    let plugins = warp::path!("plugins")
        .and(with_state.clone())
        .map(|s: Arc<AdminState>| warp::reply::json(&s.info.plugins()).into_response());
    let status =
        warp::path!("status")
            .and(with_state.clone())
            .then(|s: Arc<AdminState>| async move {
                let (deliveries, cluster) = tokio::join!(s.info.deliveries(), s.info.cluster());
                warp::reply::json(&status(&s, deliveries, cluster)).into_response()
            });
    let metrics = warp::path!("metrics")
        .and(with_state)
        .map(|s: Arc<AdminState>| {
            let mut text = String::with_capacity(8 * 1024);
            match prometheus_client::encoding::text::encode(&mut text, &s.registry) {
                Ok(()) => warp::reply::with_header(
                    text,
                    "content-type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .into_response(),
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        });
    warp::get()
        .and(
            healthz
                .or(readyz)
                .unify()
                .or(plugins)
                .unify()
                .or(status)
                .unify()
                .or(metrics)
                .unify(),
        )
        .recover(|_| async {
            Ok::<_, std::convert::Infallible>(StatusCode::NOT_FOUND.into_response())
        })
        .unify()
}
