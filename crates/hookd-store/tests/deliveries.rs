//! The delivery queue and the plugins' key-value store, as the dispatcher and the CLI use them:
//! what is due, recording attempts, dead letters and their replay, quotas.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{config, event_at};
use hookd_store::{
    AttemptRecord, AttemptResult, DeliveryCounts, KvOp, KvWriteResult, ReplaySelector, Store,
    StoreConfig, StoreReader,
};

/// The tests' clock: fixed times make due dates exact.
const T0: i64 = 1_700_000_000_000;

/// A store whose dedup window reaches back past `T0`, so the writer's own pruning never
/// removes a finished test event while a test looks at it.
fn open(dir: &Path) -> Store {
    common::open(StoreConfig {
        dedup_window: Duration::from_secs(100 * 365 * 24 * 3600),
        ..config(dir)
    })
}

fn record(seq: i64, plugin: &str, result: AttemptResult, at_ms: i64) -> AttemptRecord {
    AttemptRecord {
        event_seq: seq,
        plugin: plugin.to_owned(),
        result,
        at_ms,
    }
}

/// The (event id, plugin) pairs due at `now_ms` for `plugins`.
fn due(reader: &StoreReader, now_ms: i64, plugins: &[&str], limit: usize) -> Vec<(String, String)> {
    reader
        .due_deliveries(now_ms, plugins, limit)
        .unwrap()
        .into_iter()
        .map(|d| (d.event_id, d.plugin))
        .collect()
}

fn pair(id: &str, plugin: &str) -> (String, String) {
    (id.to_owned(), plugin.to_owned())
}

async fn seq_of(store: &Store, id: &str, plugins: &[&str], at: i64) -> i64 {
    store.ingest(event_at(id, plugins, at)).await.unwrap().seq
}

#[tokio::test]
async fn due_deliveries_come_oldest_first_for_the_named_plugins_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    seq_of(&store, "b", &["log", "count"], T0 + 10).await;
    seq_of(&store, "a", &["log"], T0).await;
    seq_of(&store, "c", &["count"], T0 + 20).await;
    let reader = store.reader().unwrap();

    assert_eq!(
        due(&reader, T0 + 20, &["log", "count"], 10),
        [
            pair("a", "log"),
            pair("b", "count"),
            pair("b", "log"),
            pair("c", "count")
        ]
    );
    assert_eq!(
        due(&reader, T0 + 20, &["log"], 10),
        [pair("a", "log"), pair("b", "log")]
    );
    // Not yet due, the limit, and no plugin at all.
    assert_eq!(
        due(&reader, T0 + 5, &["log", "count"], 10),
        [pair("a", "log")]
    );
    assert_eq!(
        due(&reader, T0 + 20, &["log", "count"], 1),
        [pair("a", "log")]
    );
    assert_eq!(due(&reader, T0 + 20, &[], 10), []);
    assert_eq!(reader.next_due_at(&["count"]).unwrap(), Some(T0 + 10));

    let first = &reader.due_deliveries(T0, &["log"], 1).unwrap()[0];
    assert_eq!(first.attempts, 0);
    assert_eq!(first.event_type, "message.created");
    assert_eq!(first.payload, common::payload("a"));
    assert_eq!(first.received_at_ms, T0);
}

#[tokio::test]
async fn a_retry_waits_for_its_time_and_counts_the_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let seq = seq_of(&store, "r", &["flaky"], T0).await;
    let retry = AttemptResult::Retry {
        next_attempt_at_ms: T0 + 5_000,
        error: "timed out after 10 s".to_owned(),
    };
    store
        .record_attempts(vec![record(seq, "flaky", retry, T0 + 100)])
        .await
        .unwrap();
    let reader = store.reader().unwrap();
    assert_eq!(due(&reader, T0 + 4_999, &["flaky"], 10), []);
    let again = reader.due_deliveries(T0 + 5_000, &["flaky"], 10).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(again[0].updated_at_ms, T0 + 100);
    assert_eq!(reader.next_due_at(&["flaky"]).unwrap(), Some(T0 + 5_000));

    store
        .record_attempts(vec![record(seq, "flaky", AttemptResult::Done, T0 + 5_100)])
        .await
        .unwrap();
    assert_eq!(due(&reader, i64::MAX, &["flaky"], 10), []);
    assert_eq!(reader.next_due_at(&["flaky"]).unwrap(), None);
    assert_eq!(
        reader.delivery_counts().unwrap(),
        DeliveryCounts {
            pending: 0,
            done: 1,
            dead: 0
        }
    );
}

#[tokio::test]
async fn a_late_result_for_a_finished_delivery_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let seq = seq_of(&store, "once", &["p"], T0).await;
    store
        .record_attempts(vec![record(seq, "p", AttemptResult::Done, T0 + 1)])
        .await
        .unwrap();
    let stale = AttemptResult::Retry {
        next_attempt_at_ms: T0 + 10,
        error: "stale".to_owned(),
    };
    store
        .record_attempts(vec![
            record(seq, "p", stale, T0 + 2),
            record(
                seq,
                "p",
                AttemptResult::Dead {
                    error: "stale".to_owned(),
                },
                T0 + 3,
            ),
        ])
        .await
        .unwrap();
    let reader = store.reader().unwrap();
    assert_eq!(
        reader.deliveries_of("once").unwrap(),
        [("p".to_owned(), "done".to_owned())]
    );
    assert_eq!(reader.dead_letters(10).unwrap(), []);
}

#[tokio::test]
async fn a_dead_letter_keeps_its_error_and_replays_as_a_fresh_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let seq = seq_of(&store, "doomed", &["forward", "log"], T0).await;
    let other = seq_of(&store, "also-doomed", &["forward"], T0 + 1).await;
    let dead = |error: &str| AttemptResult::Dead {
        error: error.to_owned(),
    };
    store
        .record_attempts(vec![
            record(seq, "forward", dead("HTTP 404 from hooks.example"), T0 + 50),
            record(seq, "log", AttemptResult::Done, T0 + 50),
            record(other, "forward", dead("trap: unreachable"), T0 + 60),
        ])
        .await
        .unwrap();

    let reader = store.reader().unwrap();
    let letters = reader.dead_letters(10).unwrap();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].event_id, "doomed");
    assert_eq!(letters[0].plugin, "forward");
    assert_eq!(letters[0].attempts, 1);
    assert_eq!(letters[0].last_error, "HTTP 404 from hooks.example");
    assert_eq!(letters[0].died_at_ms, T0 + 50);
    assert_eq!(letters[1].last_error, "trap: unreachable");
    assert_eq!(reader.delivery_counts().unwrap().dead, 2);
    assert_eq!(reader.pending_by_plugin().unwrap(), []);

    // Replay one event's dead letters from outside the writer, as `hookd dlq replay` does while
    // the daemon runs.
    let revived = hookd_store::replay_dead_letters(
        dir.path(),
        &ReplaySelector::Event("doomed".to_owned()),
        None,
        T0 + 1_000,
    )
    .unwrap();
    assert_eq!(revived, 1);
    let due_now = reader.due_deliveries(T0 + 1_000, &["forward"], 10).unwrap();
    assert_eq!(due_now.len(), 1);
    assert_eq!(due_now[0].event_id, "doomed");
    assert_eq!(
        due_now[0].attempts, 0,
        "a replay gets a fresh attempt budget"
    );
    assert_eq!(
        reader.pending_by_plugin().unwrap(),
        [("forward".to_owned(), 1)]
    );
    // The writer keeps working beside that other writer.
    store
        .record_attempts(vec![record(
            seq,
            "forward",
            AttemptResult::Done,
            T0 + 1_001,
        )])
        .await
        .unwrap();

    // The rest, selected by plugin.
    assert_eq!(
        hookd_store::replay_dead_letters(dir.path(), &ReplaySelector::All, Some("log"), T0)
            .unwrap(),
        0
    );
    assert_eq!(
        hookd_store::replay_dead_letters(
            dir.path(),
            &ReplaySelector::All,
            Some("forward"),
            T0 + 2_000
        )
        .unwrap(),
        1
    );
    assert_eq!(
        reader.delivery_counts().unwrap(),
        DeliveryCounts {
            pending: 1,
            done: 2,
            dead: 0
        }
    );
}

#[tokio::test]
async fn key_value_writes_are_per_plugin_and_within_quota() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let set = |plugin: &str, key: &str, value: &[u8]| KvOp::Set {
        plugin: plugin.to_owned(),
        key: key.to_owned(),
        value: value.to_vec(),
        max_keys: 2,
    };
    let incr = |key: &str, delta| KvOp::Increment {
        plugin: "counter".to_owned(),
        key: key.to_owned(),
        delta,
        max_keys: 2,
    };
    assert_eq!(
        store
            .kv_write(set("a", "k", b"\x00bytes\xff"))
            .await
            .unwrap(),
        KvWriteResult::Stored
    );
    assert_eq!(
        store.kv_get("a", "k").unwrap().as_deref(),
        Some(&b"\x00bytes\xff"[..])
    );
    assert_eq!(
        store.kv_get("b", "k").unwrap(),
        None,
        "another plugin's key"
    );

    // Overwriting an existing key needs no room; a third key does.
    store.kv_write(set("a", "k2", b"2")).await.unwrap();
    assert_eq!(
        store.kv_write(set("a", "k", b"new")).await.unwrap(),
        KvWriteResult::Stored
    );
    assert_eq!(
        store.kv_write(set("a", "k3", b"3")).await.unwrap(),
        KvWriteResult::QuotaExceeded
    );
    assert_eq!(store.kv_get("a", "k3").unwrap(), None);
    store
        .kv_write(KvOp::Delete {
            plugin: "a".to_owned(),
            key: "k2".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(
        store.kv_write(set("a", "k3", b"3")).await.unwrap(),
        KvWriteResult::Stored
    );

    assert_eq!(
        store.kv_write(incr("n", 5)).await.unwrap(),
        KvWriteResult::Counter(5)
    );
    assert_eq!(
        store.kv_write(incr("n", -2)).await.unwrap(),
        KvWriteResult::Counter(3)
    );
    assert_eq!(
        store.kv_get("counter", "n").unwrap(),
        Some(3i64.to_le_bytes().to_vec())
    );

    // Durable: a new reader after a restart sees the same values.
    store.close().unwrap();
    let reader = StoreReader::open(dir.path()).unwrap();
    assert_eq!(
        reader.kv_get("a", "k").unwrap().as_deref(),
        Some(&b"new"[..])
    );
    assert_eq!(reader.kv_get("a", "k2").unwrap(), None);
}

#[tokio::test]
async fn a_claimed_attempt_left_unrecorded_reads_as_interrupted_for_another_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let seq = seq_of(&store, "e", &["p"], T0).await;
    let reader = store.reader().unwrap();
    let row = || reader.due_deliveries(T0, &["p"], 10).unwrap().remove(0);
    assert_eq!((row().started, row().claimed_by), (0, None));
    assert!(!row().interrupted(7));

    // Run 7 claims attempt 1, then dies before recording it.
    let claim = |started, by| hookd_store::Claim {
        event_seq: seq,
        plugin: "p".into(),
        started,
        by,
    };
    store.claim(vec![claim(1, 7)]).await.unwrap();
    assert_eq!((row().started, row().attempts), (1, 0));
    assert!(
        !row().interrupted(7),
        "run 7's own claim is its running attempt"
    );
    assert!(
        row().interrupted(8),
        "to the next run, attempt 1 was cut short"
    );

    // The next run records it; the claim and the count agree again.
    let retry = AttemptResult::Retry {
        next_attempt_at_ms: T0,
        error: "interrupted".into(),
    };
    store
        .record_attempts(vec![record(seq, "p", retry, T0)])
        .await
        .unwrap();
    assert_eq!((row().started, row().attempts), (1, 1));
    assert!(!row().interrupted(8));

    // A claim taken back (a graceful stop) is not an interruption either.
    store.claim(vec![claim(2, 8)]).await.unwrap();
    store.claim(vec![claim(1, 8)]).await.unwrap();
    assert!(!row().interrupted(9));
}

#[tokio::test]
async fn polls_stop_at_a_byte_budget_but_always_return_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..10 {
        seq_of(&store, &format!("e{i}"), &["p"], T0 + i).await;
    }
    let reader = store.reader().unwrap();
    let payload = reader.due_deliveries(T0 + 10, &["p"], 10).unwrap()[0]
        .payload
        .len();
    let within = |bytes| {
        reader
            .due_deliveries_within(T0 + 10, &["p"], 10, bytes)
            .unwrap()
            .len()
    };
    assert_eq!(within(usize::MAX), 10);
    assert_eq!(within(payload * 3), 3);
    assert_eq!(within(1), 1);
}
