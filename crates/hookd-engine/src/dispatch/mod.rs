//! The dispatcher: takes due deliveries from the delivery queue, runs them in the plugin host,
//! records each outcome (done, retry with backoff, dead letter).
//!
//! At least once: a delivery stays `pending` in the store until its outcome is committed, so a
//! crash at any moment leaves it to be run again at the next start.
//!
//! An attempt cut short by the daemon dying counts: before a plugin runs, its delivery is
//! claimed (`started = attempts + 1`, with this run's id) and the claim committed. A due row
//! whose claim is ahead of its attempts and belongs to another run was interrupted: it is
//! recorded as a failed attempt (`interrupted`), with backoff, and becomes a dead letter after
//! `max_attempts`, so a plugin that brings the daemon down cannot loop forever. A graceful stop
//! that has to leave an attempt unfinished takes its claim back.
//!
//! Ordering: deliveries are started oldest-due first, but run concurrently (up to each
//! plugin's `concurrency`), so a plugin may see events out of order, and a retried event after
//! newer ones. Events are never ordered across plugins.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hookd_core::EventType;
use hookd_host::FailureKind;
use hookd_host::{DeliveryEvent, LoadedPlugin, Outcome, PluginHost};
use hookd_server::Subscriptions;
use hookd_storage::{
    AttemptRecord, AttemptResult, Claim, DeliveryQueue, DueDelivery, NewEvent, StorageError, now_ms,
};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::plugins::PluginRegistry;

mod metrics;
mod retry;

pub use metrics::DeliveryMetrics;
use metrics::{PluginLabel, PluginOutcome};
pub use retry::next_step;

/// How many due deliveries one poll of the store reads, at most.
const POLL_BATCH: usize = 512;
/// Deliveries waiting in memory for a free slot; beyond this, hints are dropped and the
/// deliveries are found by the next poll of the store instead.
const BACKLOG_MAX: usize = 65_536;
/// Payload bytes the hints and the backlog may hold together; beyond this, hints are dropped
/// and polls read less, so a burst of large events waits in the store, not in memory.
pub const BACKLOG_MAX_BYTES: usize = 64 << 20;
/// How long a finished delivery is remembered, so a stale copy of it (from a poll or a hint
/// that raced with its completion) is not run again.
const COMPLETED_MEMORY: Duration = Duration::from_secs(60);
/// The longest the dispatcher sleeps without looking at the store (retries coming due,
/// dead letters replayed from the CLI).
const IDLE_POLL: Duration = Duration::from_millis(500);

/// The ingest path's view of the plugins: who subscribes, and a hint channel so new
/// deliveries start at once instead of at the next poll of the store.
pub struct Routes {
    pub registry: Arc<PluginRegistry>,
    /// Whether to hint at all: only when this process is the queue's one reader (see
    /// [`DeliveryQueue::exclusive`]).
    pub hinting: bool,
    pub hints: mpsc::Sender<DueDelivery>,
    /// Payload bytes held by hints and the dispatcher's backlog.
    pub backlog_bytes: Arc<BacklogBytes>,
}

/// Payload bytes held in memory by deliveries waiting to start (hints in the channel and the
/// dispatcher's backlog), bounded by [`BACKLOG_MAX_BYTES`].
#[derive(Debug, Default)]
pub struct BacklogBytes(std::sync::atomic::AtomicUsize);

impl BacklogBytes {
    /// Takes `n` bytes if they fit.
    fn try_take(&self, n: usize) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        self.0
            .fetch_update(AcqRel, Acquire, |held| {
                held.checked_add(n).filter(|&t| t <= BACKLOG_MAX_BYTES)
            })
            .is_ok()
    }
    fn take(&self, n: usize) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::AcqRel);
    }
    fn give_back(&self, n: usize) {
        self.0.fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
    }
    fn held(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Subscriptions for Routes {
    fn subscribers(&self, event_type: &EventType) -> Vec<Arc<str>> {
        self.registry.subscribers(event_type)
    }

    fn takes_hints(&self) -> bool {
        self.hinting
    }

    fn stored(&self, seq: i64, event: &NewEvent) {
        if !self.hinting {
            return;
        }
        for plugin in &event.deliveries {
            // A full channel or byte budget drops the hint: the store still has the delivery.
            let size = event.payload.len();
            if !self.backlog_bytes.try_take(size) {
                continue;
            }
            let sent = self.hints.try_send(DueDelivery {
                event_seq: seq,
                plugin: plugin.to_string(),
                attempts: 0,
                event_id: event.id.clone(),
                event_type: event.event_type.clone(),
                payload: event.payload.clone(),
                received_at_ms: event.received_at_ms,
                updated_at_ms: event.received_at_ms,
                started: 0,
                claimed_by: None,
            });
            if sent.is_err() {
                self.backlog_bytes.give_back(size);
            }
        }
    }
}

/// Deliveries running, and those finished recently.
#[derive(Default)]
struct Tracker {
    /// Deliveries running (claimed or about to be), with the attempts made before this one.
    running: HashMap<Key, u32>,
    /// Recently finished attempts: when they were recorded (store time), how many attempts
    /// the row then counted, and local time for expiry. A copy of the row read before the
    /// record is stale.
    finished: HashMap<Key, (i64, u32, std::time::Instant)>,
}

/// What the dispatcher needs.
pub struct Dispatcher {
    pub queue: Arc<dyn DeliveryQueue>,
    pub host: Arc<PluginHost>,
    pub registry: Arc<PluginRegistry>,
    pub hints: mpsc::Receiver<DueDelivery>,
    pub metrics: DeliveryMetrics,
    /// Most deliveries running at once, across plugins.
    pub max_in_flight: usize,
    /// Beats on every turn of the loop (at least every 500 ms): the watchdog's view of it.
    pub heartbeat: Arc<Heartbeat>,
    /// Payload bytes held by hints and the backlog (shared with [`Routes`]).
    pub backlog_bytes: Arc<BacklogBytes>,
    /// This daemon run's id, written with each claim; chosen at random at start.
    pub run_id: i64,
}

/// When a loop last went round, for a liveness probe.
#[derive(Debug)]
pub struct Heartbeat {
    origin: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            origin: std::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

type Key = (i64, String);

/// A finished attempt on its way to the store, with the attempts the row counts after it.
type Finished = (Key, u32, AttemptRecord);

/// Whether `copy` of a delivery row was read before the attempt recorded at `recorded_at_ms`
/// (which left the row at `attempts_after`). Timestamps are milliseconds, so an attempt can be
/// recorded in the same millisecond the row was last written: then the attempt count decides.
/// A replay writes a later timestamp, so its copy is never stale.
fn is_stale(copy: &DueDelivery, recorded_at_ms: i64, attempts_after: u32) -> bool {
    copy.updated_at_ms < recorded_at_ms
        || (copy.updated_at_ms == recorded_at_ms && copy.attempts < attempts_after)
}

impl Dispatcher {
    /// Runs until `stop` turns true; then waits (up to `grace`) for running deliveries and
    /// their records, so finished work is not redone after a restart.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, grace: Duration) {
        let tracker: Arc<Mutex<Tracker>> = Arc::default();
        let freed = Arc::new(Notify::new());
        let (record_tx, record_rx) = mpsc::unbounded_channel::<Finished>();
        let recorder = tokio::spawn(record_loop(
            self.queue.clone(),
            record_rx,
            tracker.clone(),
            freed.clone(),
        ));
        let mut backlog: VecDeque<DueDelivery> = VecDeque::new();
        let mut last_poll = std::time::Instant::now() - IDLE_POLL;
        let mut last_gauge = std::time::Instant::now() - Duration::from_secs(60);
        let mut hints_dropped = false;
        // A shared queue sends no hints: it says when this process appended deliveries, and
        // the dispatcher polls then rather than at its next tick.
        let arrivals = Arc::new(Notify::new());
        let mut woken = false;
        let hinting = self.queue.exclusive();
        if !hinting {
            let arrivals = arrivals.clone();
            self.queue
                .on_arrival(Box::new(move || arrivals.notify_one()));
        }

        while !*stop.borrow() {
            self.heartbeat.beat();
            if last_gauge.elapsed() >= Duration::from_secs(5) {
                last_gauge = std::time::Instant::now();
                self.refresh_pending_gauge().await;
                lock(&tracker)
                    .finished
                    .retain(|_, (_, _, at)| at.elapsed() < COMPLETED_MEMORY);
            }
            while let Ok(hint) = self.hints.try_recv() {
                if backlog.len() < BACKLOG_MAX {
                    backlog.push_back(hint);
                } else {
                    self.backlog_bytes.give_back(hint.payload.len());
                    hints_dropped = true;
                }
            }
            // The store is the truth: poll it for retries coming due, deliveries left from
            // before a restart, replays, and hints that were dropped.
            if backlog.is_empty() && (hints_dropped || woken || last_poll.elapsed() >= IDLE_POLL) {
                woken = false;
                last_poll = std::time::Instant::now();
                let room = BACKLOG_MAX_BYTES.saturating_sub(self.backlog_bytes.held());
                let due = self.due(POLL_BATCH, room).await;
                // A full batch means more is due: poll again as soon as this one is started.
                // So does any answer from a shared queue, which caps what one poll takes.
                hints_dropped = due.len() == POLL_BATCH
                    || due.len() > 1 && room <= due_bytes(&due)
                    || !hinting && !due.is_empty();
                self.backlog_bytes.take(due_bytes(&due));
                backlog.extend(due);
            }
            let mut started = 0;
            while lock(&tracker).running.len() < self.max_in_flight {
                let Some(d) = backlog.pop_front() else { break };
                self.backlog_bytes.give_back(d.payload.len());
                // A plugin removed since: its deliveries wait in the store, paused.
                let Some(plugin) = self.registry.get(&d.plugin) else {
                    continue;
                };
                let key = (d.event_seq, d.plugin.clone());
                {
                    let mut t = lock(&tracker);
                    let stale = t
                        .finished
                        .get(&key)
                        .is_some_and(|(at, attempts, _)| is_stale(&d, *at, *attempts));
                    if stale || t.running.contains_key(&key) {
                        continue;
                    }
                    t.running.insert(key.clone(), d.attempts);
                }
                started += 1;
                self.start(d, plugin, key, record_tx.clone());
            }
            if started == 0 {
                let full = lock(&tracker).running.len() >= self.max_in_flight;
                tokio::select! {
                    hint = self.hints.recv(), if !full => {
                        if let Some(hint) = hint {
                            backlog.push_back(hint);
                        }
                    }
                    () = freed.notified() => {}
                    () = arrivals.notified() => woken = true,
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stop.changed() => {}
                }
            } else {
                tokio::task::yield_now().await;
            }
        }

        drop(record_tx);
        let waited = tokio::time::timeout(grace, async {
            while !lock(&tracker).running.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if waited.is_err() {
            // Cut short by this stop, not by the plugin: take the claims back so these
            // attempts are not counted.
            let claims: Vec<Claim> = lock(&tracker)
                .running
                .iter()
                .map(|((event_seq, plugin), attempts)| Claim {
                    event_seq: *event_seq,
                    plugin: plugin.clone(),
                    started: *attempts,
                    by: self.run_id,
                })
                .collect();
            warn!(
                running = claims.len(),
                "stopping with deliveries still running; they stay pending and run again at start"
            );
            if let Err(e) = self.queue.claim(claims).await {
                warn!(error = %e, "cannot take back the claims of unfinished deliveries; they count as attempts");
            }
        }
        recorder.abort();
    }

    async fn due(&self, limit: usize, max_bytes: usize) -> Vec<DueDelivery> {
        let names: Vec<String> = self.registry.snapshot().keys().cloned().collect();
        match self.queue.due(now_ms(), names, limit, max_bytes).await {
            Ok(due) => due,
            Err(e) => {
                warn!(error = %e, "cannot read due deliveries; will try again");
                Vec::new()
            }
        }
    }

    fn start(
        &self,
        due: DueDelivery,
        plugin: Arc<LoadedPlugin>,
        key: Key,
        records: mpsc::UnboundedSender<Finished>,
    ) {
        let host = self.host.clone();
        let metrics = self.metrics.clone();
        let queue = self.queue.clone();
        let run_id = self.run_id;
        let attempt = due.attempts.saturating_add(1);
        let interrupted = due.interrupted(run_id);
        let span = info_span!("delivery", event_id = %due.event_id, event_type = %due.event_type,
            plugin = %due.plugin, attempt);
        tokio::spawn(
            async move {
                let label = PluginLabel { plugin: due.plugin.clone() };
                let outcome = if interrupted {
                    Outcome::Failed(
                        FailureKind::Interrupted,
                        format!("hookd stopped while attempt {attempt} ran (killed, crashed or out of memory)"),
                    )
                } else {
                    if !claim(queue.as_ref(), &due, run_id).await {
                        return; // the queue is closing: the delivery stays pending
                    }
                    let event = DeliveryEvent {
                        id: due.event_id.clone(),
                        event_type: due.event_type.clone(),
                        payload: due.payload,
                        received_at_ms: due.received_at_ms,
                        attempt,
                    };
                    let delivery = host.deliver(&plugin, &event).await;
                    metrics.duration.get_or_create(&label).observe(delivery.duration.as_secs_f64());
                    delivery.outcome
                };
                metrics
                    .deliveries
                    .get_or_create(&PluginOutcome {
                        plugin: due.plugin.clone(),
                        outcome: outcome.label(),
                    })
                    .inc();
                let now = now_ms();
                let result = next_step(&outcome, attempt, due.received_at_ms, now, &plugin.spec.retry);
                match &result {
                    AttemptResult::Done => debug!("delivered"),
                    AttemptResult::Retry { next_attempt_at_ms, error } => {
                        metrics.retries.get_or_create(&label).inc();
                        info!(%error, retry_in_ms = next_attempt_at_ms - now, "delivery failed; will retry");
                    }
                    AttemptResult::Dead { error } => {
                        metrics.dead.get_or_create(&label).inc();
                        warn!(%error, "delivery failed for good; moved to the dead letters");
                    }
                }
                let record = AttemptRecord {
                    event_seq: due.event_seq,
                    plugin: due.plugin,
                    result,
                    at_ms: now,
                };
                let _ = records.send((key, attempt, record));
            }
            .instrument(span),
        );
    }

    async fn refresh_pending_gauge(&self) {
        if let Ok(counts) = self.queue.open_deliveries().await {
            self.metrics.pending.clear();
            self.metrics.lag.clear();
            self.metrics.outgoing_connections.clear();
            self.metrics.outgoing_reused.clear();
            // Every loaded plugin has a lag, 0 unless a delivery of it is overdue, and its
            // outgoing connections' counts (since it was loaded: a reload starts a new pool).
            for (plugin, loaded) in self.registry.snapshot().iter() {
                let label = PluginLabel {
                    plugin: plugin.clone(),
                };
                self.metrics.lag.get_or_create(&label).set(0.0);
                let outgoing = loaded.outgoing_stats();
                let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                self.metrics
                    .outgoing_connections
                    .get_or_create(&label)
                    .set(count(outgoing.connections_opened));
                self.metrics
                    .outgoing_reused
                    .get_or_create(&label)
                    .set(count(outgoing.requests_reused));
            }
            let now = now_ms();
            for row in counts {
                let label = PluginLabel { plugin: row.plugin };
                let (pending, oldest_due) = (row.pending, row.oldest_due_ms);
                self.metrics
                    .pending
                    .get_or_create(&label)
                    .set(i64::try_from(pending).unwrap_or(i64::MAX));
                let lag = oldest_due.map_or(0, |due| (now - due).max(0));
                self.metrics
                    .lag
                    .get_or_create(&label)
                    .set(lag as f64 / 1000.0);
            }
        }
    }
}

/// Claims `due` for this run before its plugin runs; retries while the store refuses. `false`
/// when the store is closing.
async fn claim(queue: &dyn DeliveryQueue, due: &DueDelivery, run_id: i64) -> bool {
    let claim = Claim {
        event_seq: due.event_seq,
        plugin: due.plugin.clone(),
        started: due.attempts.saturating_add(1),
        by: run_id,
    };
    loop {
        match queue.claim(vec![claim.clone()]).await {
            Ok(()) => return true,
            Err(StorageError::Closed) => return false,
            Err(e) => {
                warn!(error = %e, "cannot claim a delivery before running it; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Total payload bytes of `due`.
fn due_bytes(due: &[DueDelivery]) -> usize {
    due.iter().map(|d| d.payload.len()).sum()
}

/// Commits attempt records in batches, then releases their in-flight marks.
async fn record_loop(
    queue: Arc<dyn DeliveryQueue>,
    mut rx: mpsc::UnboundedReceiver<Finished>,
    tracker: Arc<Mutex<Tracker>>,
    freed: Arc<Notify>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let mut keys = Vec::with_capacity(batch.len());
        let mut records = Vec::with_capacity(batch.len());
        for (key, attempts, record) in batch.drain(..) {
            keys.push((key, record.at_ms, attempts));
            records.push(record);
        }
        loop {
            match queue.record(records.clone()).await {
                Ok(()) => break,
                Err(StorageError::Closed) => return,
                Err(e) => {
                    // Keep the marks: retrying the record is cheaper than redoing deliveries.
                    warn!(error = %e, "cannot record delivery results; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let now = std::time::Instant::now();
        let mut t = lock(&tracker);
        for (key, at_ms, attempts) in keys {
            t.running.remove(&key);
            t.finished.insert(key, (at_ms, attempts, now));
        }
        drop(t);
        freed.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_read_before_a_record_are_stale() {
        let copy = |updated_at_ms, attempts| DueDelivery {
            event_seq: 1,
            plugin: "p".into(),
            attempts,
            event_id: "e".into(),
            event_type: "t".into(),
            payload: "{}".into(),
            received_at_ms: 100,
            updated_at_ms,
            started: attempts,
            claimed_by: None,
        };
        // First attempt recorded at 105, leaving 1 attempt.
        assert!(is_stale(&copy(100, 0), 105, 1), "read before the record");
        assert!(
            is_stale(&copy(105, 0), 105, 1),
            "same millisecond, fewer attempts"
        );
        assert!(
            !is_stale(&copy(105, 1), 105, 1),
            "the row after a retry record"
        );
        assert!(!is_stale(&copy(200, 0), 105, 1), "replayed later");
    }
}
