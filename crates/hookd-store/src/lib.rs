//! hookd's embedded durable store: the event log, dedup, and the plugin delivery queue.
//!
//! Design decisions:
//! - **One writer thread, group commit.** Every write goes through a bounded queue to a single
//!   thread that owns the read-write SQLite connection. It blocks for the first request, then
//!   takes whatever else is already queued (up to `max_batch`) without waiting, and writes the
//!   lot in one transaction: one fsync for many events. Each request is answered only after the
//!   `COMMIT` holding it returned; if the commit fails, every request of that batch gets the
//!   error and none is acknowledged. A full queue is refused at once ([`IngestError::QueueFull`]),
//!   which the server turns into a 503.
//! - **Durable means fsync'd.** WAL journal with `synchronous=FULL`: a committed transaction
//!   survives a power cut, not just a crash.
//! - **Dedup by primary key.** `events.id` is unique; an insert that conflicts is a duplicate,
//!   answered with the existing row's `seq`, and creates no deliveries.
//! - **Deliveries are created with their event.** The caller names the subscribed plugins; one
//!   `pending` delivery row per plugin is inserted in the same transaction as the event, so an
//!   acknowledged event can never lack its deliveries.
//! - **Corruption stops the daemon.** Opening runs `PRAGMA quick_check`; a damaged file is an
//!   error naming it, never silently recreated.
//!
//! Schema (version 1, `PRAGMA user_version`):
//! ```sql
//! events(seq INTEGER PRIMARY KEY, id TEXT UNIQUE, type TEXT, payload TEXT, received_at_ms INTEGER)
//! deliveries(event_seq, plugin, state 'pending'|'done'|'dead', attempts, next_attempt_at_ms,
//!            last_error, created_at_ms, updated_at_ms, PRIMARY KEY(event_seq, plugin))
//! kv(plugin, key, value BLOB, PRIMARY KEY(plugin, key))
//! ```
//! Dead letters are deliveries in state `dead`, with the last error kept. Events older than the
//! dedup window are pruned once none of their deliveries is pending or dead.

mod deliveries;
mod error;
mod metrics;
mod reader;
mod schema;
mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

pub use deliveries::{
    AttemptRecord, AttemptResult, DeadLetter, DueDelivery, KvOp, KvWriteResult, ReplaySelector,
};
pub use error::{IngestError, StoreError};
pub use reader::{DeliveryCounts, StoreReader, StoredEvent, replay_dead_letters};

use metrics::StoreMetrics;
use writer::{Command, Writer};

/// Name of the database file inside the store directory.
pub const DB_FILE: &str = "hookd.db";

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    pub dedup_window: Duration,
    pub queue_capacity: usize,
    pub max_batch: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/hookd"),
            dedup_window: Duration::from_secs(7 * 24 * 3600),
            queue_capacity: 4096,
            max_batch: 512,
        }
    }
}

/// An event to store, with the plugins that must receive it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub event_type: String,
    /// The payload's raw JSON text, stored verbatim.
    pub payload: String,
    /// Unix milliseconds, passed in by the caller.
    pub received_at_ms: i64,
    /// Plugins subscribed to this event: one pending delivery each, if the event is new.
    pub deliveries: Vec<Arc<str>>,
}

/// What storing an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// The event's row: the new one, or the existing one for a duplicate.
    pub seq: i64,
    pub duplicate: bool,
}

struct Shared {
    tx: Mutex<Option<Sender<Command>>>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    /// For key-value reads, which need no writer.
    kv_reader: Mutex<Option<StoreReader>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    running: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    metrics: StoreMetrics,
    dir: PathBuf,
}

/// A handle to the store. Cheap to clone; the writer stops when [`Store::close`] is called or
/// the last handle is dropped.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    tx: Sender<Command>,
}

impl Store {
    /// Opens (creating or migrating) the database and starts the writer thread.
    pub fn open(config: StoreConfig, registry: &mut Registry) -> Result<Store, StoreError> {
        let metrics = StoreMetrics::register(registry);
        let conn = schema::open_read_write(&config.dir)?;
        // Unbounded channel, bounded by `queued` for ingest: internal writes (delivery
        // results, key-value) are never refused because a burst of webhooks filled the queue.
        let (tx, rx) = std::sync::mpsc::channel();
        let running = Arc::new(AtomicBool::new(true));
        let commits = Arc::new(AtomicU64::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = Writer::new(
            conn,
            rx,
            config.clone(),
            metrics.clone(),
            running.clone(),
            commits.clone(),
            queued.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("hookd-store-writer".into())
            .spawn(move || writer.run())
            .map_err(StoreError::Thread)?;
        Ok(Store {
            shared: Arc::new(Shared {
                tx: Mutex::new(Some(tx.clone())),
                queued,
                capacity: config.queue_capacity.max(1),
                kv_reader: Mutex::new(None),
                thread: Mutex::new(Some(thread)),
                running,
                commits,
                metrics,
                dir: config.dir,
            }),
            tx,
        })
    }

    /// Queues `event` for the next group commit without blocking.
    ///
    /// Fails at once with [`IngestError::QueueFull`] or [`IngestError::Closed`]. The returned
    /// future resolves once the transaction holding the event has committed, or with the error
    /// that made the commit fail.
    pub fn submit(
        &self,
        event: NewEvent,
    ) -> Result<impl Future<Output = Result<Ingested, IngestError>> + Send + 'static, IngestError>
    {
        if !self.shared.running.load(Ordering::Acquire) {
            return Err(IngestError::Closed);
        }
        if self.shared.queued.fetch_add(1, Ordering::AcqRel) >= self.shared.capacity {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(IngestError::QueueFull);
        }
        let (reply, answer) = oneshot::channel();
        self.shared.metrics.queue_depth.inc();
        if self.tx.send(Command::Ingest { event, reply }).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            self.shared.metrics.queue_depth.dec();
            return Err(IngestError::Closed);
        }
        Ok(async move {
            match answer.await {
                Ok(result) => result,
                // The writer went away without answering: nothing was acknowledged.
                Err(_) => Err(IngestError::Closed),
            }
        })
    }

    /// Stores `event` and waits for its commit.
    pub async fn ingest(&self, event: NewEvent) -> Result<Ingested, IngestError> {
        self.submit(event)?.await
    }

    /// Stops accepting, commits everything already queued, checkpoints the WAL and joins the
    /// writer thread. Idempotent; blocks, so call it from a blocking context.
    pub fn close(&self) -> Result<(), StoreError> {
        self.shared.running.store(false, Ordering::Release);
        let tx = self
            .shared
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(tx) = tx {
            // Blocking send: waits for room behind what is already queued.
            let _ = tx.send(Command::Close);
        }
        let thread = self
            .shared
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            thread.join().map_err(|_| StoreError::WriterPanicked)?;
        }
        Ok(())
    }

    /// Prunes events older than the dedup window as of `now_ms` (Unix ms), through the writer.
    /// Returns how many events were removed. The writer also does this every minute.
    pub async fn prune(&self, now_ms: i64) -> Result<usize, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Prune { now_ms, reply })
            .map_err(|_| IngestError::Closed)?;
        match answer.await {
            Ok(result) => result.map_err(|e| IngestError::Store(Arc::new(e))),
            Err(_) => Err(IngestError::Closed),
        }
    }

    /// Records the results of delivery attempts; resolves once they are committed.
    pub async fn record_attempts(&self, records: Vec<AttemptRecord>) -> Result<(), IngestError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Record { records, reply })
            .map_err(|_| IngestError::Closed)?;
        answer.await.unwrap_or(Err(IngestError::Closed))
    }

    /// Applies a key-value write; resolves once it is committed.
    pub async fn kv_write(&self, op: KvOp) -> Result<KvWriteResult, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Kv { op, reply })
            .map_err(|_| IngestError::Closed)?;
        answer.await.unwrap_or(Err(IngestError::Closed))
    }

    /// Reads one key of a plugin's key-value store (a blocking read of a few microseconds).
    pub fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut guard = self
            .shared
            .kv_reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            *guard = Some(StoreReader::open(&self.shared.dir)?);
        }
        match guard.as_ref() {
            Some(reader) => reader.kv_get(plugin, key),
            None => Err(StoreError::Missing(self.shared.dir.clone())),
        }
    }

    /// Whether the writer thread is still taking events.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::Acquire)
    }

    /// A new read-only connection to this store.
    pub fn reader(&self) -> Result<StoreReader, StoreError> {
        StoreReader::open(&self.shared.dir)
    }

    /// Events waiting in the ingest queue.
    pub fn queue_len(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// Transactions committed since the store opened.
    pub fn commit_count(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: let the writer drain and stop.
        self.running.store(false, Ordering::Release);
        if let Some(tx) = self
            .tx
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = tx.send(Command::Close);
        }
        if let Some(thread) = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = thread.join();
        }
    }
}
