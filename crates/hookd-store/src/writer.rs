//! The single writer thread: group commit, pruning, clean close.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use crate::deliveries;
use crate::metrics::StoreMetrics;
use crate::{IngestError, Ingested, NewEvent, StoreConfig, StoreError};
use hookd_storage::{AttemptRecord, Claim, KvOp, KvWriteResult, now_ms};

/// How often the writer prunes old events when it is not behind.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// How soon the next round comes when a round was full: catching up after a backlog without
/// ever holding the write lock for one long stretch.
const PRUNE_CATCH_UP: Duration = Duration::from_millis(250);
/// Most old events one pruning round looks at (and so at most removes), so that a round never
/// stalls ingest for long, however many old events must be kept.
pub(crate) const PRUNE_LIMIT: usize = 5_000;

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
    Claim {
        claims: Vec<Claim>,
        reply: oneshot::Sender<Result<(), IngestError>>,
    },
    Prune {
        now_ms: i64,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// Answered once everything queued before it is committed (with nothing queued, once the
    /// write lock could be taken); dropped unanswered if that fails. A liveness probe for the
    /// service manager's watchdog.
    Ping(oneshot::Sender<()>),
    Close,
}

/// Everything the writer shares with the [`crate::Store`] handles.
pub(crate) struct WriterShared {
    pub metrics: StoreMetrics,
    pub running: Arc<AtomicBool>,
    pub commits: Arc<AtomicU64>,
    /// Ingest requests in the queue; the handle refuses new ones beyond the capacity.
    pub queued: Arc<AtomicUsize>,
    /// Their bytes, released only once their commit is over (the writer holds them until then).
    pub queued_bytes: Arc<AtomicUsize>,
}

pub(crate) struct Writer {
    conn: Connection,
    path: PathBuf,
    rx: Receiver<Command>,
    config: StoreConfig,
    shared: WriterShared,
    /// Where the periodic pruning pass goes on: `(received_at_ms, seq)` of the last event the
    /// previous round looked at, or `None` to start from the oldest.
    prune_cursor: Option<(i64, i64)>,
}

/// One write waiting for the next group commit.
enum Pending {
    Ingest(NewEvent, oneshot::Sender<Result<Ingested, IngestError>>),
    Record(Vec<AttemptRecord>, oneshot::Sender<Result<(), IngestError>>),
    Kv(KvOp, oneshot::Sender<Result<KvWriteResult, IngestError>>),
    Claim(Vec<Claim>, oneshot::Sender<Result<(), IngestError>>),
}

/// What a write produced, answered once the commit returned.
enum Done {
    Ingested(Ingested),
    Recorded,
    Kv(KvWriteResult),
    Claimed,
}

/// What one pruning round did.
struct PruneRound {
    removed: usize,
    /// Whether the round looked at as many events as it may: there may be more to do.
    full: bool,
    cursor: Option<(i64, i64)>,
}

impl Writer {
    pub fn new(
        conn: Connection,
        path: PathBuf,
        rx: Receiver<Command>,
        config: StoreConfig,
        shared: WriterShared,
    ) -> Self {
        Self {
            conn,
            path,
            rx,
            config,
            shared,
            prune_cursor: None,
        }
    }

    pub fn run(mut self) {
        let max_batch = self.config.max_batch.max(1);
        let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
        let mut pings: Vec<oneshot::Sender<()>> = Vec::new();
        // The first round runs at once: a daemon restarted after a long stop has work waiting.
        let mut next_prune = Instant::now();
        let mut closing = false;
        let mut batch_bytes = 0;
        while !closing {
            if Instant::now() >= next_prune {
                next_prune = Instant::now() + self.periodic_prune();
            }
            // Waiting with a timeout lets an idle writer still prune on time.
            let wait = next_prune.saturating_duration_since(Instant::now());
            let first = match self.rx.recv_timeout(wait) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut next = Some(first);
            // Take what is already queued, without waiting: that is the group.
            while let Some(command) = next.take() {
                match command {
                    Command::Ingest { event, reply } => {
                        self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                        self.shared.metrics.queue_depth.dec();
                        batch_bytes += event.queued_bytes();
                        batch.push(Pending::Ingest(event, reply));
                    }
                    Command::Record { records, reply } => {
                        batch.push(Pending::Record(records, reply))
                    }
                    Command::Kv { op, reply } => batch.push(Pending::Kv(op, reply)),
                    Command::Claim { claims, reply } => batch.push(Pending::Claim(claims, reply)),
                    Command::Prune { now_ms, reply } => {
                        let _ = reply.send(self.prune_all(now_ms));
                    }
                    Command::Ping(reply) => pings.push(reply),
                    Command::Close => closing = true,
                }
                if batch.len() < max_batch && !closing {
                    next = self.rx.try_recv().ok();
                }
            }
            let committed = if !batch.is_empty() {
                self.commit(&mut batch)
            } else if !pings.is_empty() {
                self.probe_write_lock()
            } else {
                true
            };
            self.release_bytes(std::mem::take(&mut batch_bytes));
            if committed {
                for ping in pings.drain(..) {
                    let _ = ping.send(());
                }
            } else {
                pings.clear();
            }
        }
        self.shared.running.store(false, Ordering::Release);
        self.refuse_stragglers();
        self.shutdown();
    }

    /// Takes the database's write lock and lets it go, for a ping with nothing else queued: an
    /// idle writer is only healthy if its next commit could start, so a database that another
    /// process keeps locked silences the watchdog even while no event arrives. Writes nothing,
    /// so it costs no fsync.
    fn probe_write_lock(&mut self) -> bool {
        let probe = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .and_then(|tx| tx.commit());
        if let Err(e) = &probe {
            warn!(error = %e, path = %self.path.display(),
                "the store cannot take its write lock: commits would fail");
        }
        probe.is_ok()
    }

    /// Commits `batch` and answers each write; returns whether the commit succeeded.
    fn commit(&mut self, batch: &mut Vec<Pending>) -> bool {
        #[cfg(feature = "fault-injection")]
        fault::ack_before_commit(batch);
        let started = Instant::now();
        let result = write_batch(&mut self.conn, batch);
        let elapsed = started.elapsed();
        match result {
            Ok(outcomes) => {
                let metrics = &self.shared.metrics;
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                metrics.commit_seconds.observe(elapsed.as_secs_f64());
                let events = batch
                    .iter()
                    .filter(|p| matches!(p, Pending::Ingest(..)))
                    .count();
                // Commits of delivery results alone would drag the histogram towards 0.
                if events > 0 {
                    metrics.batch_events.observe(events as f64);
                }
                for (pending, done) in batch.drain(..).zip(outcomes) {
                    match (pending, done) {
                        (Pending::Ingest(_, reply), Done::Ingested(i)) => drop(reply.send(Ok(i))),
                        (Pending::Record(_, reply), Done::Recorded) => drop(reply.send(Ok(()))),
                        (Pending::Kv(_, reply), Done::Kv(r)) => drop(reply.send(Ok(r))),
                        (Pending::Claim(_, reply), Done::Claimed) => drop(reply.send(Ok(()))),
                        // write_batch answers each pending write with its own kind.
                        _ => {}
                    }
                }
                true
            }
            Err(e) => {
                self.shared.metrics.commit_errors.inc();
                error!(error = %e, path = %self.path.display(), writes = batch.len(),
                    disk_full = e.is_disk_full(),
                    "commit failed and was rolled back; none of its writes is acknowledged");
                let e = Arc::new(e);
                for pending in batch.drain(..) {
                    let err = IngestError::Store(e.clone());
                    match pending {
                        Pending::Ingest(_, reply) => drop(reply.send(Err(err))),
                        Pending::Record(_, reply) => drop(reply.send(Err(err))),
                        Pending::Kv(_, reply) => drop(reply.send(Err(err))),
                        Pending::Claim(_, reply) => drop(reply.send(Err(err))),
                    }
                }
                false
            }
        }
    }

    /// One bounded round of the background pruning pass; returns when the next one is due.
    fn periodic_prune(&mut self) -> Duration {
        match prune_round(
            &mut self.conn,
            self.config.dedup_window,
            now_ms(),
            self.prune_cursor,
            PRUNE_LIMIT,
        ) {
            Ok(round) => {
                if round.removed > 0 {
                    debug!(
                        removed = round.removed,
                        "pruned events older than the dedup window"
                    );
                }
                if round.full {
                    self.prune_cursor = round.cursor;
                    PRUNE_CATCH_UP
                } else {
                    self.prune_cursor = None;
                    PRUNE_INTERVAL
                }
            }
            Err(e) => {
                warn!(error = %e, path = %self.path.display(),
                    "pruning old events failed; will retry");
                PRUNE_INTERVAL
            }
        }
    }

    /// A whole pruning pass as of `now_ms`, in bounded rounds (each its own transaction).
    fn prune_all(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut cursor = None;
        loop {
            let round = prune_round(
                &mut self.conn,
                self.config.dedup_window,
                now_ms,
                cursor,
                PRUNE_LIMIT,
            )?;
            removed += round.removed;
            if !round.full {
                return Ok(removed);
            }
            cursor = round.cursor;
        }
    }

    /// Gives back the queue bytes of ingest requests the writer is done with.
    fn release_bytes(&self, bytes: usize) {
        if bytes > 0 {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.shared.metrics.queue_bytes.dec_by(bytes as i64);
        }
    }

    /// Answers whatever raced in behind the close: nothing of it is stored.
    fn refuse_stragglers(&mut self) {
        while let Ok(command) = self.rx.try_recv() {
            match command {
                Command::Ingest { event, reply } => {
                    self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                    self.shared.metrics.queue_depth.dec();
                    self.release_bytes(event.queued_bytes());
                    drop(reply.send(Err(IngestError::Closed)));
                }
                Command::Record { reply, .. } => drop(reply.send(Err(IngestError::Closed))),
                Command::Kv { reply, .. } => drop(reply.send(Err(IngestError::Closed))),
                Command::Claim { reply, .. } => drop(reply.send(Err(IngestError::Closed))),
                Command::Ping(_) => {}
                // Dropping the reply tells the caller the store is closed.
                Command::Prune { .. } | Command::Close => {}
            }
        }
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
///
/// Any failing statement fails the batch: the transaction is rolled back when `tx` drops, and
/// the caller answers every request of the batch with the error.
fn write_batch(conn: &mut Connection, batch: &[Pending]) -> Result<Vec<Done>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (id, type, payload, received_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO NOTHING",
        )?;
        let mut existing = tx.prepare_cached("SELECT seq FROM events WHERE id = ?1")?;
        // DO NOTHING: a plugin named twice gets one delivery, rather than a key conflict
        // failing the whole batch and every other event in it.
        let mut deliver = tx.prepare_cached(
            "INSERT INTO deliveries
                (event_seq, plugin, state, attempts, next_attempt_at_ms, created_at_ms, updated_at_ms)
             VALUES (?1, ?2, 'pending', 0, ?3, ?3, ?3)
             ON CONFLICT (event_seq, plugin) DO NOTHING",
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
                        // Seen before, or earlier in this very batch: the first one wins.
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
                Pending::Claim(claims, _) => {
                    deliveries::claim(&tx, claims)?;
                    Done::Claimed
                }
            };
            outcomes.push(done);
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

/// One pruning round in one transaction: looks at up to `limit` events older than the dedup
/// window, in `(received_at_ms, seq)` order after `cursor`, and deletes those none of whose
/// deliveries is pending or dead, with their done deliveries.
///
/// Bounding what is *looked at* (not only what is deleted) keeps every round short even when
/// many old events must be kept for their dead letters; the cursor moves the next round past
/// them.
fn prune_round(
    conn: &mut Connection,
    window: Duration,
    now_ms: i64,
    cursor: Option<(i64, i64)>,
    limit: usize,
) -> Result<PruneRound, StoreError> {
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now_ms.saturating_sub(window_ms);
    let (after_at, after_seq) = cursor.unwrap_or((i64::MIN, i64::MIN));
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut removed = 0;
    let mut looked_at = 0;
    let mut last = None;
    {
        // Walks the events_received index, whose entries are ordered (received_at_ms, seq).
        let mut scan = tx.prepare_cached(
            "SELECT e.seq, e.received_at_ms,
                    NOT EXISTS (SELECT 1 FROM deliveries d
                                WHERE d.event_seq = e.seq AND d.state != 'done')
             FROM events e
             WHERE e.received_at_ms < ?1 AND (e.received_at_ms, e.seq) > (?2, ?3)
             ORDER BY e.received_at_ms, e.seq
             LIMIT ?4",
        )?;
        let candidates = scan
            .query_map(
                params![
                    cutoff,
                    after_at,
                    after_seq,
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, bool>(2)?,
                    ))
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        let mut drop_deliveries =
            tx.prepare_cached("DELETE FROM deliveries WHERE event_seq = ?1")?;
        let mut drop_event = tx.prepare_cached("DELETE FROM events WHERE seq = ?1")?;
        for (seq, received_at_ms, prunable) in candidates {
            looked_at += 1;
            last = Some((received_at_ms, seq));
            if prunable {
                drop_deliveries.execute(params![seq])?;
                removed += drop_event.execute(params![seq])?;
            }
        }
    }
    tx.commit()?;
    Ok(PruneRound {
        removed,
        full: looked_at >= limit,
        cursor: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with `n` old events, every third one kept by a dead letter.
    fn seeded(n: i64) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::schema::open_read_write(dir.path()).unwrap();
        let tx = conn.transaction().unwrap();
        for i in 0..n {
            tx.execute(
                "INSERT INTO events (id, type, payload, received_at_ms) VALUES (?1, 't', '{}', ?2)",
                params![format!("e{i}"), 1_000 + i / 10],
            )
            .unwrap();
            let state = if i % 3 == 0 { "dead" } else { "done" };
            tx.execute(
                "INSERT INTO deliveries (event_seq, plugin, state, attempts, next_attempt_at_ms,
                 created_at_ms, updated_at_ms) VALUES (?1, 'p', ?2, 1, 0, 0, 0)",
                params![tx.last_insert_rowid(), state],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        (dir, conn)
    }

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn rounds_are_bounded_and_the_cursor_walks_past_kept_events() {
        let (_dir, mut conn) = seeded(100);
        let window = Duration::from_millis(10);
        let now = 1_000_000;
        let mut cursor = None;
        let mut rounds = 0;
        let mut removed = 0;
        loop {
            let round = prune_round(&mut conn, window, now, cursor, 16).unwrap();
            assert!(round.removed <= 16);
            rounds += 1;
            removed += round.removed;
            if !round.full {
                break;
            }
            cursor = round.cursor;
        }
        // 100 events looked at 16 per round: 7 rounds, the last one short.
        assert_eq!(rounds, 7);
        assert_eq!(removed, 66);
        assert_eq!(count(&conn, "events"), 34);
        // Only dead letters are left, and every one of them.
        assert_eq!(count(&conn, "deliveries"), 34);
        let done: i64 = conn
            .query_row(
                "SELECT count(*) FROM deliveries WHERE state != 'dead'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(done, 0);
    }

    #[test]
    fn nothing_newer_than_the_window_is_looked_at() {
        let (_dir, mut conn) = seeded(50);
        // Cutoff 1_003: events received at 1_000..=1_002 (i < 30) are old.
        let round = prune_round(&mut conn, Duration::from_millis(1), 1_004, None, 1_000).unwrap();
        assert!(!round.full);
        assert_eq!(round.removed, 20);
        assert_eq!(count(&conn, "events"), 30);
    }
}

/// Deliberately broken durability, to prove the crash harness notices. Compiled only with the
/// `fault-injection` feature (never in a release), and active only when
/// `HOOKD_FAULT_ACK_BEFORE_COMMIT=1`: every event is acknowledged as soon as the writer takes
/// it, and the commit follows 20 ms later, so a kill in between loses acknowledged events.
#[cfg(feature = "fault-injection")]
mod fault {
    use super::*;

    pub(super) fn ack_before_commit(batch: &mut [Pending]) {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if !*ON
            .get_or_init(|| std::env::var("HOOKD_FAULT_ACK_BEFORE_COMMIT").is_ok_and(|v| v == "1"))
        {
            return;
        }
        for pending in batch.iter_mut() {
            if let Pending::Ingest(_, reply) = pending {
                let (unused, _) = oneshot::channel();
                let early = std::mem::replace(reply, unused);
                // No row yet: seq 0 matches no delivery, so the hint is a no-op.
                let _ = early.send(Ok(Ingested {
                    seq: 0,
                    duplicate: false,
                }));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
