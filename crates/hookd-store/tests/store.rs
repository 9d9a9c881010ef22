//! The store against real SQLite files in temp dirs.

use std::sync::Arc;
use std::time::Duration;

use hookd_store::{IngestError, NewEvent, Store, StoreConfig, StoreError, StoreReader};
use prometheus_client::registry::Registry;

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        dir: dir.to_owned(),
        ..StoreConfig::default()
    }
}

fn open(config: StoreConfig) -> Store {
    Store::open(config, &mut Registry::default()).unwrap()
}

fn event(id: &str, plugins: &[&str]) -> NewEvent {
    NewEvent {
        id: id.to_owned(),
        event_type: "message.created".to_owned(),
        payload: format!(r#"{{"id": "p-{id}",  "text" : "spacing kept"}}"#),
        received_at_ms: 1_700_000_000_000,
        deliveries: plugins.iter().map(|p| Arc::from(*p)).collect(),
    }
}

#[tokio::test]
async fn an_event_reads_back_byte_for_byte_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let first = store.ingest(event("e1", &[])).await.unwrap();
    assert!(!first.duplicate);
    store.close().unwrap();

    let store = open(config(dir.path()));
    let stored = store.reader().unwrap().event("e1").unwrap().unwrap();
    assert_eq!(stored.seq, first.seq);
    assert_eq!(
        stored.payload,
        r#"{"id": "p-e1",  "text" : "spacing kept"}"#
    );
    assert_eq!(stored.event_type, "message.created");
    assert_eq!(stored.received_at_ms, 1_700_000_000_000);
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
}

#[tokio::test]
async fn the_same_id_twice_in_one_batch_is_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    // Submitted back to back, both land in the same group commit.
    let a = store.submit(event("twin", &["p"])).unwrap();
    let b = store.submit(event("twin", &["p"])).unwrap();
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(a.seq, b.seq);
    assert_ne!(a.duplicate, b.duplicate);
    assert_eq!(
        store.reader().unwrap().delivery_counts().unwrap().pending,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_events_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    let tasks: Vec<_> = (0..2000)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.ingest(event(&format!("c{i}"), &[])).await })
        })
        .collect();
    for t in tasks {
        assert!(!t.await.unwrap().unwrap().duplicate);
    }
    let commits = store.commit_count();
    assert_eq!(store.reader().unwrap().event_count().unwrap(), 2000);
    // One fsync per event would be 2000 commits.
    assert!(
        commits < 500,
        "{commits} commits for 2000 events: no grouping happened"
    );
}

/// Another connection holds the write lock, so the writer's `BEGIN IMMEDIATE` waits.
fn lock_database(dir: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join(hookd_store::DB_FILE)).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    conn
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
    let first = store.submit(event("q0", &[])).unwrap(); // taken by the (blocked) writer
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.queue_len() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never took the first event"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let queued: Vec<_> = (1..=2)
        .map(|i| store.submit(event(&format!("q{i}"), &[])).unwrap())
        .collect();
    let started = std::time::Instant::now();
    assert!(matches!(
        store.submit(event("q3", &[])),
        Err(IngestError::QueueFull)
    ));
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "refusal must not wait"
    );
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
        if outcome.is_ok() {
            assert!(reader.event(&format!("q{i}")).unwrap().is_some());
        }
    }
}

#[tokio::test]
async fn a_failed_commit_acknowledges_nothing_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    store.ingest(event("before", &[])).await.unwrap();
    let lock = lock_database(dir.path());
    let pending: Vec<_> = (0..5)
        .map(|i| store.submit(event(&format!("f{i}"), &[])).unwrap())
        .collect();
    // The writer gives up after its busy timeout; hold the lock past it.
    let mut errors = 0;
    for p in pending {
        match p.await {
            Err(IngestError::Store(e)) => {
                assert!(matches!(*e, StoreError::Sql(_)), "{e}");
                errors += 1;
            }
            other => panic!("expected a store error, got {other:?}"),
        }
    }
    assert_eq!(errors, 5);
    lock.execute_batch("ROLLBACK").unwrap();
    let reader = store.reader().unwrap();
    for i in 0..5 {
        assert!(reader.event(&format!("f{i}")).unwrap().is_none());
    }
    // And the store recovers once the lock is gone.
    assert!(store.ingest(event("after", &[])).await.is_ok());
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
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
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
}

#[tokio::test]
async fn pruning_keeps_what_is_still_owed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(StoreConfig {
        dedup_window: Duration::from_secs(60),
        ..config(dir.path())
    });
    let old = 1_000_000;
    let mut e = event("old-plain", &[]);
    e.received_at_ms = old;
    store.ingest(e).await.unwrap();
    let mut e = event("old-pending", &["p"]);
    e.received_at_ms = old;
    store.ingest(e).await.unwrap();
    let mut e = event("new", &[]);
    e.received_at_ms = old + 100_000;
    store.ingest(e).await.unwrap();

    let removed = store.prune(old + 90_000).await.unwrap();
    assert_eq!(removed, 1);
    let reader = store.reader().unwrap();
    assert!(reader.event("old-plain").unwrap().is_none());
    assert!(reader.event("old-pending").unwrap().is_some());
    assert!(reader.event("new").unwrap().is_some());
    // A pruned id is new again.
    let mut e = event("old-plain", &[]);
    e.received_at_ms = old + 100_000;
    assert!(!store.ingest(e).await.unwrap().duplicate);
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
    assert!(matches!(
        store.submit(event("late", &[])),
        Err(IngestError::Closed)
    ));
    assert!(!store.is_running());
    assert_eq!(
        StoreReader::open(dir.path())
            .unwrap()
            .event_count()
            .unwrap(),
        100
    );
}

#[test]
fn a_reader_needs_an_existing_database() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        StoreReader::open(dir.path()),
        Err(StoreError::Missing(_))
    ));
}
