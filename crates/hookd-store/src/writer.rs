//! The single writer thread: group commit, pruning, clean close.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use crate::deliveries::{self, AttemptRecord, KvOp, KvWriteResult};
use crate::metrics::StoreMetrics;
use crate::{IngestError, Ingested, NewEvent, StoreConfig, StoreError};

/// How often the writer prunes old events when it has nothing else to do.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// Most events removed by one pruning round, so a round never stalls ingest for long.
const PRUNE_LIMIT: i64 = 5_000;

pub(crate) enum Command {
    Ingest {
        event: NewEvent,
        reply: oneshot::Sender<Result<Ingested, IngestError>>,
    },
    Record {
        records: Vec<AttemptRecord>,
        reply: oneshot::Sender<Result<(), IngestError>>,
    },
    Kv {
        op: KvOp,
        reply: oneshot::Sender<Result<KvWriteResult, IngestError>>,
    },
    Prune {
        now_ms: i64,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    Close,
}

pub(crate) struct Writer {
    conn: Connection,
    rx: Receiver<Command>,
    config: StoreConfig,
    metrics: StoreMetrics,
    running: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    /// Ingest requests in the queue; the handle refuses new ones beyond the capacity.
    queued: Arc<AtomicUsize>,
}

/// One write waiting for the next group commit.
pub(crate) enum Pending {
    Ingest(NewEvent, oneshot::Sender<Result<Ingested, IngestError>>),
    Record(Vec<AttemptRecord>, oneshot::Sender<Result<(), IngestError>>),
    Kv(KvOp, oneshot::Sender<Result<KvWriteResult, IngestError>>),
}

/// What a write produced, answered once the commit returned.
enum Done {
    Ingested(Ingested),
    Recorded,
    Kv(KvWriteResult),
}

impl Writer {
    pub fn new(
        conn: Connection,
        rx: Receiver<Command>,
        config: StoreConfig,
        metrics: StoreMetrics,
        running: Arc<AtomicBool>,
        commits: Arc<AtomicU64>,
        queued: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            conn,
            rx,
            config,
            metrics,
            running,
            commits,
            queued,
        }
    }

    pub fn run(mut self) {
        let max_batch = self.config.max_batch.max(1);
        let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
        let mut last_prune = Instant::now() - PRUNE_INTERVAL;
        let mut closing = false;
        while !closing {
            if last_prune.elapsed() >= PRUNE_INTERVAL {
                last_prune = Instant::now();
                if let Err(e) = self.prune(now_ms()) {
                    warn!(error = %e, "pruning old events failed; will retry");
                }
            }
            let first = match self.rx.recv_timeout(PRUNE_INTERVAL) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut next = Some(first);
            // Take what is already queued, without waiting: that is the group.
            while let Some(command) = next.take() {
                match command {
                    Command::Ingest { event, reply } => {
                        self.queued.fetch_sub(1, Ordering::AcqRel);
                        self.metrics.queue_depth.dec();
                        batch.push(Pending::Ingest(event, reply));
                    }
                    Command::Record { records, reply } => {
                        batch.push(Pending::Record(records, reply))
                    }
                    Command::Kv { op, reply } => batch.push(Pending::Kv(op, reply)),
                    Command::Prune { now_ms, reply } => {
                        let _ = reply.send(self.prune(now_ms));
                    }
                    Command::Close => closing = true,
                }
                if batch.len() < max_batch && !closing {
                    next = self.rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit(&mut batch);
            }
        }
        self.running.store(false, Ordering::Release);
        self.shutdown();
    }

    fn commit(&mut self, batch: &mut Vec<Pending>) {
        let started = Instant::now();
        let result = write_batch(&mut self.conn, batch);
        let elapsed = started.elapsed();
        match result {
            Ok(outcomes) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                self.metrics.commit_seconds.observe(elapsed.as_secs_f64());
                self.metrics.batch_events.observe(batch.len() as f64);
                for (pending, done) in batch.drain(..).zip(outcomes) {
                    match (pending, done) {
                        (Pending::Ingest(_, reply), Done::Ingested(i)) => drop(reply.send(Ok(i))),
                        (Pending::Record(_, reply), Done::Recorded) => drop(reply.send(Ok(()))),
                        (Pending::Kv(_, reply), Done::Kv(r)) => drop(reply.send(Ok(r))),
                        // write_batch answers each pending write with its own kind.
                        _ => {}
                    }
                }
            }
            Err(e) => {
                self.metrics.commit_errors.inc();
                error!(error = %e, writes = batch.len(), disk_full = e.is_disk_full(),
                    "commit failed; none of its writes is acknowledged");
                let e = Arc::new(e);
                for pending in batch.drain(..) {
                    let err = IngestError::Store(e.clone());
                    match pending {
                        Pending::Ingest(_, reply) => drop(reply.send(Err(err))),
                        Pending::Record(_, reply) => drop(reply.send(Err(err))),
                        Pending::Kv(_, reply) => drop(reply.send(Err(err))),
                    }
                }
            }
        }
    }

    fn prune(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        let window = i64::try_from(self.config.dedup_window.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(window);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Old events whose deliveries are all done lose those rows, then old events with no
        // delivery left go. Pending and dead deliveries keep their event.
        tx.execute(
            "DELETE FROM deliveries WHERE event_seq IN (
                SELECT seq FROM events e WHERE e.received_at_ms < ?1
                AND NOT EXISTS (SELECT 1 FROM deliveries d
                                WHERE d.event_seq = e.seq AND d.state != 'done')
                LIMIT ?2)",
            params![cutoff, PRUNE_LIMIT],
        )?;
        let removed = tx.execute(
            "DELETE FROM events WHERE seq IN (
                SELECT seq FROM events e WHERE e.received_at_ms < ?1
                AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)
                LIMIT ?2)",
            params![cutoff, PRUNE_LIMIT],
        )?;
        tx.commit()?;
        if removed > 0 {
            debug!(removed, "pruned events older than the dedup window");
        }
        Ok(removed)
    }

    fn shutdown(self) {
        // Fold the WAL back into the database so the next start reads one file.
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            warn!(error = %e, "WAL checkpoint at close failed (harmless: replayed at next open)");
        }
        match self.conn.close() {
            Ok(()) => info!("store writer stopped"),
            Err((_, e)) => warn!(error = %e, "closing the database reported an error"),
        }
    }
}

/// Writes a whole batch in one transaction; the outcomes come back in order.
fn write_batch(conn: &mut Connection, batch: &[Pending]) -> Result<Vec<Done>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (id, type, payload, received_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO NOTHING",
        )?;
        let mut existing = tx.prepare_cached("SELECT seq FROM events WHERE id = ?1")?;
        let mut deliver = tx.prepare_cached(
            "INSERT INTO deliveries
                (event_seq, plugin, state, attempts, next_attempt_at_ms, created_at_ms, updated_at_ms)
             VALUES (?1, ?2, 'pending', 0, ?3, ?3, ?3)",
        )?;
        for pending in batch {
            let done = match pending {
                Pending::Ingest(event, _) => {
                    let inserted = insert.execute(params![
                        event.id,
                        event.event_type,
                        event.payload,
                        event.received_at_ms
                    ])?;
                    if inserted == 1 {
                        let seq = tx.last_insert_rowid();
                        for plugin in &event.deliveries {
                            deliver.execute(params![seq, &**plugin, event.received_at_ms])?;
                        }
                        Done::Ingested(Ingested {
                            seq,
                            duplicate: false,
                        })
                    } else {
                        let seq = existing.query_row(params![event.id], |r| r.get(0))?;
                        Done::Ingested(Ingested {
                            seq,
                            duplicate: true,
                        })
                    }
                }
                Pending::Record(records, _) => {
                    deliveries::record(&tx, records)?;
                    Done::Recorded
                }
                Pending::Kv(op, _) => Done::Kv(deliveries::kv_write(&tx, op)?),
            };
            outcomes.push(done);
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
