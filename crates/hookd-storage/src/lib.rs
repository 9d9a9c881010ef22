//! hookd's storage seam: what the ingest listener, the dispatcher and the plugins' key-value
//! store ask of a storage backend, and what a backend promises back.
//!
//! Three traits, one per user: [`EventLog`] (ingest appends events with their deliveries),
//! [`DeliveryQueue`] (the dispatcher takes due deliveries, claims attempts, records outcomes)
//! and [`KvStore`] (plugins' keys). [`Backend`] is all three, opened together. SQLite
//! (`hookd-store`) is the embedded backend; the traits are shaped so that a log with
//! consumers, such as NATS JetStream (publish with a dedup id, per-plugin durable consumers,
//! ack / nak with delay / term), implements them without pretending to be SQL: no query
//! language, no row ids beyond an event's position in the log, no transaction spanning calls.
//!
//! # The promises
//! - **Durable at the answer.** [`EventLog::append`] resolves `Ok` only once the event and its
//!   deliveries would survive the process and the machine dying (SQLite: committed with
//!   `synchronous=FULL`; a replicated log: acknowledged by its quorum). Any error
//!   acknowledges nothing.
//! - **Deliveries are created with their event.** An event acknowledged has one pending
//!   delivery for every plugin named in it; there is no moment where it exists without them.
//! - **Dedup window.** An event whose id was appended within the backend's dedup window is a
//!   duplicate: answered `Ok` with `duplicate: true`, creating no deliveries. After the window,
//!   the id may be accepted again.
//! - **At least once.** A delivery stays due (from [`DeliveryQueue::due`]) until an outcome
//!   is recorded for it: done, dead, or retry at a later time. A process that dies mid-attempt
//!   leaves it due; since its claim was durable, the next reader sees the attempt was begun
//!   ([`DueDelivery::interrupted`]) and counts it.
//! - **Ordering.** None promised across deliveries: `due` answers oldest-due first as far as
//!   the backend knows, and deliveries run concurrently. Within one delivery, outcomes apply in
//!   the order recorded, and an outcome for a delivery no longer pending changes nothing (a
//!   stale or repeated record cannot undo a later state).
//! - **Keys.** A key-value write resolves once durable; [`KvOp::Increment`] is atomic across
//!   every process sharing the backend; quotas are checked by the backend in the same step as
//!   the write.

#![forbid(unsafe_code)]

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod records;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use error::{BackendError, StorageError};
pub use records::{
    AttemptRecord, AttemptResult, Claim, DeadLetter, DueDelivery, Ingested, KvOp, KvWriteResult,
    NewEvent, PluginDeliveries, ReplaySelector,
};

/// An append under way: resolves once the event is durable (or refused).
pub type Appending = Pin<Box<dyn Future<Output = Result<Ingested, StorageError>> + Send>>;

/// What the event log holds now, for readiness and `/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogHealth {
    /// It takes events. False once closing, or when its writer (or connection) is gone.
    pub accepting: bool,
    /// Events admitted but not yet durable.
    pub queued: usize,
    /// Their bytes (see [`NewEvent::queued_bytes`]).
    pub queued_bytes: usize,
}

/// Ingest's side: events in, durably, with their deliveries.
#[async_trait::async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Admits `event` and its deliveries, or refuses at once ([`StorageError::QueueFull`],
    /// [`StorageError::Closed`]) without waiting. The returned future resolves once the event
    /// is durable, or a duplicate (see the crate's promises), or with the error that kept it
    /// from being stored. It is `'static`: a caller may stop polling it (a client that hung
    /// up) without changing what is stored.
    fn append(&self, event: NewEvent) -> Result<Appending, StorageError>;

    /// Whether it takes events and how much waits to be written.
    fn health(&self) -> LogHealth;

    /// Whether the backend gets through what was admitted before this call within `within`:
    /// the liveness probe (a writer blocked on a lock, a stalled disk, a lost cluster).
    async fn ping(&self, within: Duration) -> bool;

    /// Stops taking events, makes everything already admitted durable, and releases the
    /// backend. Idempotent.
    async fn close(&self) -> Result<(), StorageError>;
}

/// The dispatcher's side: deliveries out, attempts and outcomes recorded.
#[async_trait::async_trait]
pub trait DeliveryQueue: Send + Sync + 'static {
    /// Whether this process is the queue's only reader. Then a delivery of an event this
    /// process appended may start from the append's answer (a hint), before `due` would return
    /// it; a queue shared by several processes answers `false`, and every delivery comes
    /// through `due`, so that one process runs it.
    fn exclusive(&self) -> bool;

    /// Says which event patterns `plugin` subscribes to (`message.*`, `*`), when it is loaded
    /// or reloaded, before any event is routed to it. A backend that routes by pattern (a
    /// consumer per plugin with a subject filter) makes sure it will receive them; one that
    /// stores deliveries by name, like SQLite, needs nothing.
    async fn subscribe(&self, plugin: &str, patterns: &[String]) -> Result<(), StorageError> {
        let _ = (plugin, patterns);
        Ok(())
    }

    /// For a queue that is not [`exclusive`](DeliveryQueue::exclusive): calls `wake` when
    /// deliveries may have arrived (this process appended an event with plugins), so the
    /// dispatcher polls `due` now rather than at its next tick. A queue that has no such
    /// signal ignores it.
    fn on_arrival(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let _ = wake;
    }

    /// Deliveries of `plugins` due at `now_ms`, oldest due first: at most `limit`, and no more
    /// once their payloads add up to `max_bytes` (at least one when any is due). A delivery is
    /// returned again until an outcome is recorded, so the caller skips those it is running.
    async fn due(
        &self,
        now_ms: i64,
        plugins: Vec<String>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<DueDelivery>, StorageError>;

    /// Begins attempts (or, with `started == attempts`, takes back ones a graceful stop cut
    /// short). Durable when it resolves: call it before the plugin runs, so that a process
    /// that dies during the attempt still counts it.
    async fn claim(&self, claims: Vec<Claim>) -> Result<(), StorageError>;

    /// Records attempts' outcomes: done, retry at a time, or dead (a dead letter). Durable when
    /// it resolves; a record for a delivery no longer pending changes nothing.
    async fn record(&self, records: Vec<AttemptRecord>) -> Result<(), StorageError>;

    /// Each plugin's pending and dead deliveries, and when its longest-waiting one came due.
    async fn open_deliveries(&self) -> Result<Vec<PluginDeliveries>, StorageError>;

    /// Dead letters, the oldest death first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StorageError>;

    /// Puts dead letters back to pending, due at `now_ms`, attempts counted from zero.
    /// Returns how many.
    async fn replay(
        &self,
        selector: ReplaySelector,
        plugin: Option<String>,
        now_ms: i64,
    ) -> Result<usize, StorageError>;
}

/// The plugins' keys, namespaced by plugin.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// One key's value, as last written durably.
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Applies one write; resolves once it is durable.
    async fn write(&self, op: KvOp) -> Result<KvWriteResult, StorageError>;
}

/// A storage backend: the event log, the delivery queue and the keys, over the same data.
pub trait Backend: EventLog + DeliveryQueue + KvStore {}

impl<T: EventLog + DeliveryQueue + KvStore> Backend for T {}

/// The clock every stored time is read from: Unix milliseconds, the unit of every `*_ms`
/// field of the records (0 before 1970, saturating far in the future).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `t` in Unix milliseconds, as [`now_ms`] reads the clock.
pub fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
