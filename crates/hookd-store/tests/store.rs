//! The store against real SQLite files in temp dirs: durability, dedup, group commit, back
//! pressure, failed commits, damaged files, pruning, close, metrics.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config, event, event_at, open, payload};
use hookd_store::{
    AttemptRecord, AttemptResult, IngestError, NewEvent, Store, StoreConfig, StoreError,
    StoreReader,
};
use prometheus_client::registry::Registry;

#[tokio::test]
async fn an_event_reads_back_byte_for_byte_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let sent = event("e1", &[]);
    let first = store.ingest(sent.clone()).await.unwrap();
    assert!(!first.duplicate);
    store.close().unwrap();

    let store = open(config(dir.path()));
    let stored = store.reader().unwrap().event("e1").unwrap().unwrap();
    assert_eq!(stored.seq, first.seq);
    assert_eq!(stored.id, "e1");
    assert_eq!(stored.payload, payload("e1"));
    assert_eq!(stored.event_type, "message.created");
    assert_eq!(stored.received_at_ms, sent.received_at_ms);
    // And it is still a duplicate after the restart.
    assert!(store.ingest(event("e1", &["p"])).await.unwrap().duplicate);
}

#[tokio::test]
async fn duplicates_are_detected_and_create_no_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let first = store
        .ingest(event("dup", &["logger", "counter"]))
        .await
        .unwrap();
    let again = store
        .ingest(event("dup", &["logger", "other"]))
        .await
        .unwrap();
    assert_eq!(again.seq, first.seq);
    assert!(again.duplicate);
    let reader = store.reader().unwrap();
    assert_eq!(reader.event_count().unwrap(), 1);
    assert_eq!(
        reader.deliveries_of("dup").unwrap(),
        [
            ("counter".to_owned(), "pending".to_owned()),
            ("logger".to_owned(), "pending".to_owned())
        ]
    );
    assert_eq!(reader.delivery_counts().unwrap().pending, 2);
    assert_eq!(
        reader.pending_by_plugin().unwrap(),
        [("counter".to_owned(), 1), ("logger".to_owned(), 1)]
    );
}

#[tokio::test]
async fn the_same_id_twice_in_one_batch_is_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let before = store.commit_count();
    // Submitted back to back, both land in the same group commit.
    let a = store.submit(event("twin", &["p"])).unwrap();
    let b = store.submit(event("twin", &["p"])).unwrap();
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(store.commit_count() - before, 1, "not one batch");
    assert_eq!(a.seq, b.seq);
    assert!(!a.duplicate, "the first one wins");
    assert!(b.duplicate);
    assert_eq!(
        store.reader().unwrap().delivery_counts().unwrap().pending,
        1
    );
}

#[tokio::test]
async fn an_event_without_subscribers_is_stored_without_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    store.ingest(event("lonely", &[])).await.unwrap();
    let reader = store.reader().unwrap();
    assert!(reader.event("lonely").unwrap().is_some());
    assert_eq!(reader.deliveries_of("lonely").unwrap(), []);
}

/// Regression: a plugin listed twice made the deliveries' primary key fail the whole batch,
/// and with it every other event committed alongside.
#[tokio::test]
async fn a_plugin_listed_twice_gets_one_delivery_and_fails_no_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let twice = store.submit(event("twice", &["a", "b", "a"])).unwrap();
    let other = store.submit(event("other", &["a"])).unwrap();
    assert!(twice.await.is_ok());
    assert!(other.await.is_ok());
    let reader = store.reader().unwrap();
    assert_eq!(
        reader.deliveries_of("twice").unwrap(),
        [
            ("a".to_owned(), "pending".to_owned()),
            ("b".to_owned(), "pending".to_owned())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_events_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let before = store.commit_count();
    let tasks: Vec<_> = (0..2000)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = format!("c{i}");
                let outcome = store.ingest(event(&id, &["p"])).await;
                (id, outcome)
            })
        })
        .collect();
    let mut acknowledged = HashMap::new();
    for t in tasks {
        let (id, outcome) = t.await.unwrap();
        let ingested = outcome.unwrap();
        assert!(!ingested.duplicate);
        acknowledged.insert(id, ingested.seq);
    }
    let commits = store.commit_count() - before;
    // Every acknowledged event is in the database, under the seq it was answered with.
    let reader = store.reader().unwrap();
    assert_eq!(reader.event_count().unwrap(), 2000);
    assert_eq!(reader.delivery_counts().unwrap().pending, 2000);
    for (id, seq) in &acknowledged {
        assert_eq!(reader.event(id).unwrap().unwrap().seq, *seq, "{id}");
    }
    // One fsync per event would be 2000 commits.
    assert!(
        commits < 500,
        "{commits} commits for 2000 events: no grouping happened"
    );
}

/// Another connection holds the write lock, so the writer's `BEGIN IMMEDIATE` waits (and gives
/// up after its busy timeout).
fn lock_database(dir: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join(hookd_store::DB_FILE)).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    conn
}

/// Waits until the writer has taken everything queued so far (it is then blocked in a commit).
async fn until_taken(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.queue_len() > 0 {
        assert!(
            Instant::now() < deadline,
            "the writer never took the first event"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_full_queue_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(StoreConfig {
        queue_capacity: 2,
        max_batch: 1,
        ..config(dir.path())
    });
    let lock = lock_database(dir.path());
    let first = store.submit(event("q0", &[])).unwrap();
    until_taken(&store).await;
    let queued: Vec<_> = (1..=2)
        .map(|i| store.submit(event(&format!("q{i}"), &[])).unwrap())
        .collect();
    assert_eq!(store.queue_len(), 2);
    let started = Instant::now();
    let refused = store.submit(event("q3", &[]));
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "refusal must not wait"
    );
    match refused {
        Err(e @ IngestError::QueueFull) => assert!(e.to_string().contains("queue is full")),
        Err(other) => panic!("expected QueueFull, got {other}"),
        Ok(_) => panic!("a full queue took one more event"),
    }
    drop(lock.execute_batch("ROLLBACK"));
    drop(lock);
    // The writer may have timed out on the lock meanwhile: either way, an answer comes and an
    // Ok means the event is there.
    let mut outcomes = vec![first.await];
    for q in queued {
        outcomes.push(q.await);
    }
    let reader = store.reader().unwrap();
    for (i, outcome) in outcomes.iter().enumerate() {
        let stored = reader.event(&format!("q{i}")).unwrap().is_some();
        assert_eq!(outcome.is_ok(), stored, "q{i}: {outcome:?}");
    }
    assert!(reader.event("q3").unwrap().is_none());
    // Room again once the queue drained.
    assert!(store.ingest(event("q4", &[])).await.is_ok());
}

/// The queue is bounded in bytes as well as in number: a few large events fill it long
/// before `queue_capacity` is reached, refused at once like a full count; the bytes come back
/// once their commit is over.
#[tokio::test]
async fn a_queue_full_in_bytes_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let big = |id: &str| NewEvent {
        payload: format!(r#"{{"blob":"{}"}}"#, "x".repeat(100_000)),
        ..event(id, &[])
    };
    let size = big("b0").queued_bytes();
    let store = open(StoreConfig {
        queue_capacity: 4096,
        queue_max_bytes: 3 * size,
        max_batch: 1,
        ..config(dir.path())
    });
    let lock = lock_database(dir.path());
    // The first is taken into a commit that waits on the lock: its bytes are still held.
    let first = store.submit(big("b0")).unwrap();
    until_taken(&store).await;
    assert_eq!(store.queue_bytes(), size);
    let queued: Vec<_> = (1..=2)
        .map(|i| store.submit(big(&format!("b{i}"))).unwrap())
        .collect();
    assert_eq!(store.queue_bytes(), 3 * size);
    let started = Instant::now();
    let refused = store.submit(big("b3"));
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(
        matches!(refused, Err(IngestError::QueueFull)),
        "a queue full in bytes took one more event"
    );
    assert_eq!(store.queue_len(), 2, "far below the count bound");
    // A small event does not fit either while the bytes are held.
    assert!(matches!(
        store.submit(event("small", &[])),
        Err(IngestError::QueueFull)
    ));
    drop(lock.execute_batch("ROLLBACK"));
    drop(lock);
    let _ = first.await;
    for q in queued {
        let _ = q.await;
    }
    // Given back by the writer just after it answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.queue_bytes() > 0 {
        assert!(Instant::now() < deadline, "bytes never given back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(store.ingest(big("b4")).await.is_ok());
}

#[tokio::test]
async fn a_failed_commit_acknowledges_nothing_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let store = Store::open(config(dir.path()), &mut registry).unwrap();
    store.ingest(event("before", &[])).await.unwrap();
    let lock = lock_database(dir.path());
    let pending: Vec<_> = (0..5)
        .map(|i| store.submit(event(&format!("f{i}"), &["p"])).unwrap())
        .collect();
    // The writer gives up after its busy timeout; the lock is held past it.
    for p in pending {
        match p.await {
            Err(e @ IngestError::Store(_)) => {
                assert!(!e.is_disk_full(), "a busy lock is not a full disk: {e}");
                let IngestError::Store(inner) = &e else {
                    unreachable!()
                };
                assert!(matches!(**inner, StoreError::Sql(_)), "{inner}");
            }
            other => panic!("expected a store error, got {other:?}"),
        }
    }
    lock.execute_batch("ROLLBACK").unwrap();
    let reader = store.reader().unwrap();
    for i in 0..5 {
        assert!(reader.event(&format!("f{i}")).unwrap().is_none());
    }
    assert_eq!(reader.delivery_counts().unwrap().pending, 0);
    // One failed commit per batch: the first event alone, then the rest together.
    let failed = metric(&registry, "hookd_store_commit_errors_total").unwrap();
    assert!((1.0..=5.0).contains(&failed), "{failed}");
    // The store recovers once the lock is gone, and a refused event can be sent again.
    assert!(!store.ingest(event("f0", &["p"])).await.unwrap().duplicate);
}

/// The watchdog's probe: an idle writer answers only if it could commit, so a database another
/// process keeps locked fails the ping even with nothing queued, and for as long as the lock
/// lasts (past the writer's 2 s busy timeout).
#[tokio::test]
async fn a_ping_fails_while_the_database_is_locked_even_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    assert!(store.ping(Duration::from_secs(5)).await, "an idle store");
    let lock = lock_database(dir.path());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert!(
            !store.ping(Duration::from_millis(300)).await,
            "answered while locked, {:?} after the lock",
            started.elapsed()
        );
    }
    lock.execute_batch("ROLLBACK").unwrap();
    assert!(store.ping(Duration::from_secs(5)).await, "after the lock");
    // The probes wrote nothing.
    assert_eq!(store.reader().unwrap().event_count().unwrap(), 0);
}

#[test]
fn a_corrupt_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(hookd_store::DB_FILE);
    let garbage = b"this is not a database, but it is someone's data".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    let err = match Store::open(config(dir.path()), &mut Registry::default()) {
        Err(e) => e,
        Ok(_) => panic!("opened a corrupt database"),
    };
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "SQLite's error is kept"
    );
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
    // Readers refuse it too, rather than answering from nothing.
    assert!(
        StoreReader::open(dir.path())
            .unwrap()
            .event_count()
            .is_err()
    );
}

#[tokio::test]
async fn a_truncated_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    for i in 0..200 {
        store.ingest(event(&format!("t{i}"), &["p"])).await.unwrap();
    }
    store.close().unwrap();
    drop(store);
    let path = dir.path().join(hookd_store::DB_FILE);
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    let err = match Store::open(config(dir.path()), &mut Registry::default()) {
        Err(e) => e,
        Ok(_) => panic!("opened a truncated database"),
    };
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len / 2);
}

#[test]
fn a_database_from_a_newer_hookd_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(config(dir.path())));
    let conn = rusqlite::Connection::open(dir.path().join(hookd_store::DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = match Store::open(config(dir.path()), &mut Registry::default()) {
        Err(e) => e,
        Ok(_) => panic!("opened a database from the future"),
    };
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

#[cfg(unix)]
#[test]
fn the_store_directory_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("state").join("hookd");
    drop(open(config(&store_dir)));
    let mode = std::fs::metadata(&store_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    assert!(store_dir.join(hookd_store::DB_FILE).is_file());
}

#[tokio::test]
async fn a_reader_opened_earlier_sees_later_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    // A separate read-only connection, as the CLI has in another process.
    let reader = StoreReader::open(dir.path()).unwrap();
    assert_eq!(reader.event_count().unwrap(), 0);
    store.ingest(event("later", &["p"])).await.unwrap();
    assert_eq!(reader.event_count().unwrap(), 1);
    assert_eq!(reader.delivery_counts().unwrap().pending, 1);
}

/// Old events, one per delivery state, and one recent one.
async fn old_events_in_every_state(store: &Store, old: i64) {
    let mut seq = HashMap::new();
    for (id, plugins) in [
        ("old-plain", &[][..]),
        ("old-done", &["p", "q"][..]),
        ("old-pending", &["p"][..]),
        ("old-dead", &["p"][..]),
        ("old-done-and-dead", &["p", "q"][..]),
    ] {
        let ingested = store.ingest(event_at(id, plugins, old)).await.unwrap();
        seq.insert(id, ingested.seq);
    }
    store
        .ingest(event_at("new", &["p"], old + 100_000))
        .await
        .unwrap();
    let record = |id: &str, plugin: &str, result| AttemptRecord {
        event_seq: seq[id],
        plugin: plugin.to_owned(),
        result,
        at_ms: old + 1_000,
    };
    let dead = || AttemptResult::Dead {
        error: "HTTP 500 from the chat webhook".to_owned(),
    };
    store
        .record_attempts(vec![
            record("old-done", "p", AttemptResult::Done),
            record("old-done", "q", AttemptResult::Done),
            record("old-dead", "p", dead()),
            record("old-done-and-dead", "p", AttemptResult::Done),
            record("old-done-and-dead", "q", dead()),
        ])
        .await
        .unwrap();
}

#[tokio::test]
async fn pruning_keeps_what_is_still_owed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(StoreConfig {
        dedup_window: Duration::from_secs(60),
        ..config(dir.path())
    });
    let old = 1_000_000;
    old_events_in_every_state(&store, old).await;

    let removed = store.prune(old + 90_000).await.unwrap();
    assert_eq!(removed, 2);
    let reader = store.reader().unwrap();
    assert!(reader.event("old-plain").unwrap().is_none());
    assert!(reader.event("old-done").unwrap().is_none());
    assert_eq!(reader.deliveries_of("old-done").unwrap(), []);
    for kept in ["old-pending", "old-dead", "old-done-and-dead", "new"] {
        assert!(reader.event(kept).unwrap().is_some(), "{kept} was pruned");
    }
    // The done delivery of an event kept for its dead letter stays with it.
    assert_eq!(
        reader.deliveries_of("old-done-and-dead").unwrap(),
        [
            ("p".to_owned(), "done".to_owned()),
            ("q".to_owned(), "dead".to_owned())
        ]
    );
    let dead = reader.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter()
            .all(|d| d.last_error == "HTTP 500 from the chat webhook")
    );
    // Within the window, nothing goes.
    assert_eq!(store.prune(old + 30_000).await.unwrap(), 0);
    // A pruned id is new again.
    assert!(
        !store
            .ingest(event_at("old-plain", &[], old + 100_000))
            .await
            .unwrap()
            .duplicate
    );
}

#[tokio::test]
async fn pruning_a_backlog_larger_than_one_round_removes_all_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(StoreConfig {
        dedup_window: Duration::from_secs(1),
        ..config(dir.path())
    });
    // More than the 5,000 events one round looks at, in big batches to keep the test quick
    // (and within the queue's capacity).
    let events: i64 = 12_000;
    for chunk in (0..events).collect::<Vec<_>>().chunks(4_000) {
        let futures: Vec<_> = chunk
            .iter()
            .map(|i| {
                let mut e = event_at(&format!("b{i}"), &[], 1_000 + i);
                e.payload = "{}".to_owned();
                store.submit(e).unwrap()
            })
            .collect();
        for f in futures {
            f.await.unwrap();
        }
    }
    let removed = store.prune(10_000_000).await.unwrap();
    assert_eq!(removed, usize::try_from(events).unwrap());
    assert_eq!(store.reader().unwrap().event_count().unwrap(), 0);
}

#[tokio::test]
async fn close_commits_what_was_queued_and_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let pending: Vec<_> = (0..100)
        .map(|i| store.submit(event(&format!("z{i}"), &[])).unwrap())
        .collect();
    let closer = store.clone();
    tokio::task::spawn_blocking(move || closer.close())
        .await
        .unwrap()
        .unwrap();
    for p in pending {
        assert!(p.await.is_ok());
    }
    match store.submit(event("late", &[])) {
        Err(e @ IngestError::Closed) => assert!(e.to_string().contains("closed")),
        Err(other) => panic!("expected Closed, got {other}"),
        Ok(_) => panic!("a closed store took an event"),
    }
    assert!(matches!(
        store.ingest(event("later", &[])).await,
        Err(IngestError::Closed)
    ));
    assert!(!store.is_running());
    assert_eq!(store.queue_len(), 0);
    // Idempotent.
    store.close().unwrap();
    assert_eq!(
        StoreReader::open(dir.path())
            .unwrap()
            .event_count()
            .unwrap(),
        100
    );
    assert!(
        StoreReader::open(dir.path())
            .unwrap()
            .event("late")
            .unwrap()
            .is_none()
    );
    // The WAL was folded back into the database.
    let wal = dir.path().join(format!("{}-wal", hookd_store::DB_FILE));
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
}

#[tokio::test]
async fn dropping_the_last_handle_commits_what_was_queued() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let pending: Vec<_> = (0..100)
        .map(|i| store.submit(event(&format!("d{i}"), &["p"])).unwrap())
        .collect();
    let clone = store.clone();
    drop(store);
    assert!(clone.is_running(), "a clone keeps the store open");
    // The last handle: its drop waits for the writer to commit and stop.
    drop(clone);
    for p in pending {
        assert!(!p.await.unwrap().duplicate);
    }
    let reader = StoreReader::open(dir.path()).unwrap();
    assert_eq!(reader.event_count().unwrap(), 100);
    assert_eq!(reader.delivery_counts().unwrap().pending, 100);
}

#[test]
fn a_reader_needs_an_existing_database() {
    let dir = tempfile::tempdir().unwrap();
    let err = match StoreReader::open(dir.path()) {
        Err(e) => e,
        Ok(_) => panic!("a reader opened a store that does not exist"),
    };
    assert!(matches!(err, StoreError::Missing(_)), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
    // And it did not create one.
    assert!(!dir.path().join(hookd_store::DB_FILE).exists());
}

#[test]
fn handles_are_cheap_to_share_between_threads() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Store>();
}

/// The value of an unlabelled metric line `name value` in the registry's text exposition.
fn metric(registry: &Registry, name: &str) -> Option<f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines().find_map(|line| {
        let (n, v) = line.split_once(' ')?;
        if n == name { v.parse().ok() } else { None }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_commits_and_events_per_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let store = Store::open(config(dir.path()), &mut registry).unwrap();
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.ingest(event(&format!("m{i}"), &[])).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let commits = store.commit_count() as f64;
    assert_eq!(
        metric(&registry, "hookd_store_batch_events_sum"),
        Some(300.0)
    );
    assert_eq!(
        metric(&registry, "hookd_store_batch_events_count"),
        Some(commits)
    );
    assert_eq!(
        metric(&registry, "hookd_store_commit_seconds_count"),
        Some(commits)
    );
    assert!(metric(&registry, "hookd_store_commit_seconds_sum").unwrap() > 0.0);
    assert_eq!(metric(&registry, "hookd_store_queue_depth"), Some(0.0));
    assert_eq!(
        metric(&registry, "hookd_store_commit_errors_total"),
        Some(0.0)
    );
}

/// A store written by the version-1 schema opens under version 2: deliveries gain their claim
/// columns, with every existing row unclaimed.
#[test]
fn a_version_1_store_is_migrated_with_unclaimed_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("hookd.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
                 type TEXT NOT NULL, payload TEXT NOT NULL, received_at_ms INTEGER NOT NULL);
             CREATE TABLE deliveries (event_seq INTEGER NOT NULL REFERENCES events(seq),
                 plugin TEXT NOT NULL,
                 state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'dead')),
                 attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at_ms INTEGER NOT NULL,
                 last_error TEXT, created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL,
                 PRIMARY KEY (event_seq, plugin)) WITHOUT ROWID;
             CREATE TABLE kv (plugin TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 PRIMARY KEY (plugin, key)) WITHOUT ROWID;
             INSERT INTO events VALUES (1, 'old', 't', '{}', 5);
             INSERT INTO deliveries VALUES (1, 'p', 'pending', 2, 5, 'boom', 5, 5);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = common::open(common::config(dir.path()));
    let due = store
        .reader()
        .unwrap()
        .due_deliveries(i64::MAX, &["p"], 10)
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].attempts, due[0].started, due[0].claimed_by),
        (2, 2, None)
    );
    assert!(!due[0].interrupted(1));
}
