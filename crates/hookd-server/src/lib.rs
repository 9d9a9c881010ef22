//! hookd's HTTP side: the ingest listener and the admin listener.
//!
//! **Boundary:** this is the only crate that knows HTTP. It turns a request into a verified
//! [`hookd_core::Envelope`], appends it to the [`hookd_storage::EventLog`], and answers only once
//! the log says the event is durable.
//!
//! Design decisions:
//! - **Verify before anything else.** The body is read under a byte cap and a deadline, then
//!   the signature is checked over those exact bytes; only a verified body is parsed, stored or
//!   logged (an unverified one is logged by size and peer address only).
//! - **Our own accept loop.** warp's `serve` builds hyper without a timer, which silently
//!   disables hyper's header-read timeout. [`serve`] drives hyper's HTTP/1 connection
//!   builder directly, with a [`hyper_util::rt::TokioTimer`], a header-read timeout, a cap on
//!   concurrent connections and a share of them per client address, and graceful shutdown.
//!   The routes are still warp filters.
//! - **What a client can make the daemon hold is bounded.** Connections per client, body
//!   bytes in flight (all clients, and per client), hyper's read buffer per connection; a
//!   limit reached is a reset connection or a 503 with `Retry-After`, never an allocation
//!   sized by what the client declared.
//! - **Rejections are counted exactly and logged in aggregate** (`rejections`): a flood
//!   costs a counter increment per request, and one log line per reason per second.
//! - **Subscriptions are a seam.** The server asks a [`Subscriptions`] which plugins want an
//!   event, so their deliveries are created in the same transaction as the event; the plugin
//!   host implements it.

#![forbid(unsafe_code)]

mod admin;
mod ingest;
mod listener;
mod metrics;
mod rejections;

use std::sync::Arc;

use hookd_core::EventType;
use hookd_storage::NewEvent;

pub use admin::{AdminInfo, AdminState, admin_routes};
// InflightBodies is the type of a public field of IngestState, so it stays nameable.
pub use ingest::{InflightBodies, IngestLimits, IngestState, ingest_routes};
pub use listener::{ListenerSettings, serve};
pub use metrics::IngestMetrics;

/// Which plugins want an event. Asked once per accepted event, on the request path: keep it
/// cheap (a lookup in a precomputed table).
pub trait Subscriptions: Send + Sync + 'static {
    /// Names of the plugins subscribed to `event_type`.
    fn subscribers(&self, event_type: &EventType) -> Vec<Arc<str>>;

    /// Called once a new event with subscribers is committed (its deliveries too), as a hint
    /// to start them now rather than at the next poll of the queue. Must not block.
    fn stored(&self, _seq: i64, _event: &NewEvent) {}

    /// Whether [`Subscriptions::stored`] does anything: when not (a queue shared by several
    /// processes takes no hints), ingest keeps no copy of the event for it.
    fn takes_hints(&self) -> bool {
        true
    }
}
