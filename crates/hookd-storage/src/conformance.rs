//! The backend conformance suite: the crate's promises as checks any backend runs unchanged.
//!
//! A backend's tests implement [`Harness`] (open a backend over the same data again; stop one
//! the way a crash would) and call [`run_all`], or each check alone. Every check uses its own
//! event ids and plugin names, so they may share one backend's data. Each panics with what
//! broke.

use std::sync::Arc;

use crate::{
    AttemptRecord, AttemptResult, Backend, Claim, DueDelivery, KvOp, KvWriteResult, NewEvent,
    ReplaySelector,
};

/// How the suite gets backends.
#[async_trait::async_trait]
pub trait Harness: Send + Sync {
    /// Opens a backend over the data of the previous ones (the first time: empty).
    async fn open(&self) -> Arc<dyn Backend>;

    /// Ends `backend` the way a killed process would: whatever it acknowledged stays, nothing
    /// else is done on its behalf (no claim taken back, no record written).
    async fn crash(&self, backend: Arc<dyn Backend>);
}

/// Far enough in the future that every delivery written by the suite is due.
const LATER: i64 = i64::MAX / 4;

fn event(id: &str, plugins: &[&str], received_at_ms: i64) -> NewEvent {
    NewEvent {
        id: id.to_owned(),
        event_type: "message.created".to_owned(),
        payload: format!(r#"{{"id":"{id}","text":"héllo \u0000 ✓"}}"#),
        received_at_ms,
        deliveries: plugins.iter().map(|p| Arc::from(*p)).collect(),
    }
}

async fn append(b: &dyn Backend, e: NewEvent) -> crate::Ingested {
    let id = e.id.clone();
    match b.append(e) {
        Ok(stored) => stored
            .await
            .unwrap_or_else(|err| panic!("appending {id}: {err}")),
        Err(err) => panic!("appending {id} was refused: {err}"),
    }
}

async fn due_for(b: &dyn Backend, plugin: &str, now_ms: i64) -> Vec<DueDelivery> {
    b.due(now_ms, vec![plugin.to_owned()], 1000, usize::MAX)
        .await
        .unwrap_or_else(|e| panic!("due deliveries of {plugin}: {e}"))
}

async fn only_due(b: &dyn Backend, plugin: &str, now_ms: i64) -> DueDelivery {
    let mut due = due_for(b, plugin, now_ms).await;
    assert_eq!(
        due.len(),
        1,
        "{plugin}: expected one due delivery, got {due:?}"
    );
    due.remove(0)
}

async fn record(b: &dyn Backend, d: &DueDelivery, result: AttemptResult, at_ms: i64) {
    b.record(vec![AttemptRecord {
        event_seq: d.event_seq,
        plugin: d.plugin.clone(),
        result,
        at_ms,
    }])
    .await
    .unwrap_or_else(|e| panic!("recording for {}: {e}", d.plugin));
}

async fn claim(b: &dyn Backend, d: &DueDelivery, run: i64) {
    b.claim(vec![Claim {
        event_seq: d.event_seq,
        plugin: d.plugin.clone(),
        started: d.attempts + 1,
        by: run,
    }])
    .await
    .unwrap_or_else(|e| panic!("claiming for {}: {e}", d.plugin));
}

/// Every check, one after another.
pub async fn run_all(h: &dyn Harness) {
    durable_at_the_answer(h).await;
    duplicates_create_no_deliveries(h).await;
    an_event_without_plugins_is_kept_and_delivers_nothing(h).await;
    at_least_once_after_a_crash(h).await;
    a_graceful_stop_takes_its_claim_back(h).await;
    retries_come_due_at_their_time(h).await;
    dead_letters_and_replay(h).await;
    a_stale_record_changes_nothing(h).await;
    due_respects_limits_and_plugins(h).await;
    keys(h).await;
}

/// An appended event and its deliveries survive a crash right after the answer, payload
/// byte for byte; the id is still a duplicate afterwards.
pub async fn durable_at_the_answer(h: &dyn Harness) {
    let b = h.open().await;
    let sent = event("conf-durable", &["conf-durable-a", "conf-durable-b"], 1_000);
    let first = append(b.as_ref(), sent.clone()).await;
    assert!(!first.duplicate);
    h.crash(b).await;

    let b = h.open().await;
    for plugin in ["conf-durable-a", "conf-durable-b"] {
        let d = only_due(b.as_ref(), plugin, LATER).await;
        assert_eq!(d.event_id, sent.id);
        assert_eq!(d.event_seq, first.seq);
        assert_eq!(d.event_type, sent.event_type);
        assert_eq!(
            d.payload, sent.payload,
            "the payload changed on its way through"
        );
        assert_eq!(d.received_at_ms, sent.received_at_ms);
        assert_eq!(d.attempts, 0);
        assert_eq!(d.started, 0);
    }
    let again = append(
        b.as_ref(),
        event("conf-durable", &["conf-durable-c"], 2_000),
    )
    .await;
    assert!(
        again.duplicate,
        "an id seen before a crash is a duplicate after it"
    );
    assert_eq!(again.seq, first.seq);
    assert!(
        due_for(b.as_ref(), "conf-durable-c", LATER)
            .await
            .is_empty()
    );
    h.crash(b).await;
}

/// A second event with the same id is answered as a duplicate and adds no delivery.
pub async fn duplicates_create_no_deliveries(h: &dyn Harness) {
    let b = h.open().await;
    let first = append(b.as_ref(), event("conf-dup", &["conf-dup-a"], 1_000)).await;
    let again = append(
        b.as_ref(),
        event("conf-dup", &["conf-dup-a", "conf-dup-b"], 1_001),
    )
    .await;
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
    assert_eq!(due_for(b.as_ref(), "conf-dup-a", LATER).await.len(), 1);
    assert!(due_for(b.as_ref(), "conf-dup-b", LATER).await.is_empty());
    h.crash(b).await;
}

/// An event no plugin wants is acknowledged and remembered (a duplicate later), and no
/// delivery exists for it.
pub async fn an_event_without_plugins_is_kept_and_delivers_nothing(h: &dyn Harness) {
    let b = h.open().await;
    let first = append(b.as_ref(), event("conf-unrouted", &[], 1_000)).await;
    assert!(!first.duplicate);
    assert!(
        append(b.as_ref(), event("conf-unrouted", &[], 1_001))
            .await
            .duplicate
    );
    h.crash(b).await;
}

/// A delivery whose attempt was claimed by a process that then died is due again, and the
/// next process sees the attempt was begun and not recorded.
pub async fn at_least_once_after_a_crash(h: &dyn Harness) {
    let (run1, run2) = (11, 22);
    let b = h.open().await;
    append(b.as_ref(), event("conf-crash", &["conf-crash-p"], 1_000)).await;
    let d = only_due(b.as_ref(), "conf-crash-p", LATER).await;
    assert!(!d.interrupted(run1), "a fresh delivery is not interrupted");
    claim(b.as_ref(), &d, run1).await;
    h.crash(b).await;

    let b = h.open().await;
    let d = only_due(b.as_ref(), "conf-crash-p", LATER).await;
    assert_eq!(d.attempts, 0, "no attempt was recorded");
    assert_eq!(d.started, 1, "the claimed attempt was begun");
    assert!(
        d.interrupted(run2),
        "another run's unrecorded claim is an interruption"
    );
    assert!(!d.interrupted(run1), "a run's own claim is not");
    record(
        b.as_ref(),
        &d,
        AttemptResult::Retry {
            next_attempt_at_ms: 5_000,
            error: "interrupted".into(),
        },
        2_000,
    )
    .await;
    let d = only_due(b.as_ref(), "conf-crash-p", LATER).await;
    assert_eq!(d.attempts, 1);
    assert!(!d.interrupted(run2), "recorded: no longer interrupted");
    claim(b.as_ref(), &d, run2).await;
    record(b.as_ref(), &d, AttemptResult::Done, 6_000).await;
    assert!(
        due_for(b.as_ref(), "conf-crash-p", LATER).await.is_empty(),
        "done is done"
    );
    h.crash(b).await;
}

/// A claim taken back (`started == attempts`) leaves no interrupted attempt behind.
pub async fn a_graceful_stop_takes_its_claim_back(h: &dyn Harness) {
    let b = h.open().await;
    append(
        b.as_ref(),
        event("conf-takeback", &["conf-takeback-p"], 1_000),
    )
    .await;
    let d = only_due(b.as_ref(), "conf-takeback-p", LATER).await;
    claim(b.as_ref(), &d, 1).await;
    b.claim(vec![Claim {
        event_seq: d.event_seq,
        plugin: d.plugin.clone(),
        started: d.attempts,
        by: 1,
    }])
    .await
    .expect("taking a claim back");
    h.crash(b).await;
    let b = h.open().await;
    let d = only_due(b.as_ref(), "conf-takeback-p", LATER).await;
    assert_eq!((d.attempts, d.started), (0, 0));
    assert!(!d.interrupted(2));
    h.crash(b).await;
}

/// A retry is not due before its time, is due at it, and counts the attempt.
pub async fn retries_come_due_at_their_time(h: &dyn Harness) {
    let b = h.open().await;
    append(b.as_ref(), event("conf-retry", &["conf-retry-p"], 1_000)).await;
    let d = only_due(b.as_ref(), "conf-retry-p", 1_000).await;
    claim(b.as_ref(), &d, 1).await;
    record(
        b.as_ref(),
        &d,
        AttemptResult::Retry {
            next_attempt_at_ms: 60_000,
            error: "try later".into(),
        },
        2_000,
    )
    .await;
    assert!(
        due_for(b.as_ref(), "conf-retry-p", 59_999).await.is_empty(),
        "due before its time"
    );
    let open = b.open_deliveries().await.expect("open deliveries");
    let mine = open
        .iter()
        .find(|p| p.plugin == "conf-retry-p")
        .expect("the plugin's open deliveries");
    assert_eq!((mine.pending, mine.dead), (1, 0));
    assert_eq!(mine.oldest_due_ms, Some(60_000));
    let d = only_due(b.as_ref(), "conf-retry-p", 60_000).await;
    assert_eq!(d.attempts, 1);
    h.crash(b).await;
}

/// A dead letter is no longer due, is listed with its reason, and a replay makes it due again
/// with its attempts counted from zero.
pub async fn dead_letters_and_replay(h: &dyn Harness) {
    let b = h.open().await;
    append(
        b.as_ref(),
        event("conf-dead", &["conf-dead-p", "conf-dead-q"], 1_000),
    )
    .await;
    for plugin in ["conf-dead-p", "conf-dead-q"] {
        let d = only_due(b.as_ref(), plugin, LATER).await;
        claim(b.as_ref(), &d, 1).await;
        record(
            b.as_ref(),
            &d,
            AttemptResult::Dead {
                error: format!("{plugin} gave up"),
            },
            2_000,
        )
        .await;
        assert!(
            due_for(b.as_ref(), plugin, LATER).await.is_empty(),
            "a dead letter is due"
        );
    }
    let letters = b.dead_letters(10_000).await.expect("dead letters");
    let mine: Vec<_> = letters
        .iter()
        .filter(|l| l.event_id == "conf-dead")
        .collect();
    assert_eq!(mine.len(), 2, "{letters:?}");
    let p = mine
        .iter()
        .find(|l| l.plugin == "conf-dead-p")
        .expect("p's letter");
    assert_eq!(p.last_error, "conf-dead-p gave up");
    assert_eq!(p.attempts, 1);
    assert_eq!(p.event_type, "message.created");
    let open = b.open_deliveries().await.expect("open deliveries");
    let p_open = open
        .iter()
        .find(|o| o.plugin == "conf-dead-p")
        .expect("p's counts");
    assert_eq!((p_open.pending, p_open.dead), (0, 1));

    let replayed = b
        .replay(
            ReplaySelector::Event("conf-dead".into()),
            Some("conf-dead-p".into()),
            3_000,
        )
        .await
        .expect("replay");
    assert_eq!(replayed, 1, "only the named plugin's letter");
    let d = only_due(b.as_ref(), "conf-dead-p", 3_000).await;
    assert_eq!(d.attempts, 0, "a replay starts counting again");
    assert!(due_for(b.as_ref(), "conf-dead-q", LATER).await.is_empty());
    h.crash(b).await;
}

/// A record for a delivery no longer pending changes nothing: a late retry cannot revive a
/// done delivery.
pub async fn a_stale_record_changes_nothing(h: &dyn Harness) {
    let b = h.open().await;
    append(b.as_ref(), event("conf-stale", &["conf-stale-p"], 1_000)).await;
    let d = only_due(b.as_ref(), "conf-stale-p", LATER).await;
    record(b.as_ref(), &d, AttemptResult::Done, 2_000).await;
    record(
        b.as_ref(),
        &d,
        AttemptResult::Retry {
            next_attempt_at_ms: 3_000,
            error: "late".into(),
        },
        2_500,
    )
    .await;
    assert!(due_for(b.as_ref(), "conf-stale-p", LATER).await.is_empty());
    h.crash(b).await;
}

/// `due` answers only the named plugins, oldest due first, at most `limit`, and stops at the
/// byte budget (but returns one).
pub async fn due_respects_limits_and_plugins(h: &dyn Harness) {
    let b = h.open().await;
    for i in 0..5 {
        append(
            b.as_ref(),
            event(
                &format!("conf-limit-{i}"),
                &["conf-limit-p", "conf-limit-q"],
                1_000 + i,
            ),
        )
        .await;
    }
    let only_p = b
        .due(LATER, vec!["conf-limit-p".into()], 1000, usize::MAX)
        .await
        .expect("due");
    assert_eq!(only_p.len(), 5);
    assert!(only_p.iter().all(|d| d.plugin == "conf-limit-p"));
    let ids: Vec<&str> = only_p.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "conf-limit-0",
            "conf-limit-1",
            "conf-limit-2",
            "conf-limit-3",
            "conf-limit-4"
        ]
    );
    let limited = b
        .due(
            LATER,
            vec!["conf-limit-p".into(), "conf-limit-q".into()],
            3,
            usize::MAX,
        )
        .await
        .expect("due");
    assert_eq!(limited.len(), 3);
    let one = b
        .due(LATER, vec!["conf-limit-p".into()], 1000, 1)
        .await
        .expect("due");
    assert_eq!(
        one.len(),
        1,
        "a byte budget smaller than one payload still returns one"
    );
    assert!(
        b.due(LATER, Vec::new(), 1000, usize::MAX)
            .await
            .expect("due")
            .is_empty()
    );
    h.crash(b).await;
}

/// Keys: set, get, delete, increment (atomic under concurrent callers), quotas, and all of it
/// durable at the answer.
pub async fn keys(h: &dyn Harness) {
    let b = h.open().await;
    let set = |key: &str, value: &[u8], max_keys| KvOp::Set {
        plugin: "conf-kv".into(),
        key: key.into(),
        value: value.to_vec(),
        max_keys,
    };
    assert_eq!(
        b.write(set("a", b"1", 3)).await.expect("set"),
        KvWriteResult::Stored
    );
    assert_eq!(
        b.write(set("b", b"\x00\xff", 3)).await.expect("set"),
        KvWriteResult::Stored
    );
    assert_eq!(
        b.write(set("c", b"", 3)).await.expect("set"),
        KvWriteResult::Stored
    );
    assert_eq!(
        b.write(set("d", b"over", 3)).await.expect("set"),
        KvWriteResult::QuotaExceeded,
        "a fourth key past a quota of three"
    );
    assert_eq!(
        b.write(set("a", b"overwritten", 3)).await.expect("set"),
        KvWriteResult::Stored,
        "overwriting an existing key needs no room"
    );
    assert_eq!(b.get("conf-kv", "d").await.expect("get"), None);
    assert_eq!(
        b.get("other-plugin", "a").await.expect("get"),
        None,
        "keys are per plugin"
    );
    b.write(KvOp::Delete {
        plugin: "conf-kv".into(),
        key: "c".into(),
    })
    .await
    .expect("delete");

    let increments = (0..50).map(|_| {
        b.write(KvOp::Increment {
            plugin: "conf-kv-count".into(),
            key: "n".into(),
            delta: 2,
            max_keys: 1,
        })
    });
    let mut seen: Vec<i64> = futures_util::future::join_all(increments)
        .await
        .into_iter()
        .map(|r| match r.expect("increment") {
            KvWriteResult::Counter(n) => n,
            other => panic!("an increment answered {other:?}"),
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=50).map(|i| i * 2).collect::<Vec<_>>(),
        "increments lost or repeated"
    );
    h.crash(b).await;

    let b = h.open().await;
    assert_eq!(
        b.get("conf-kv", "a").await.expect("get").as_deref(),
        Some(&b"overwritten"[..])
    );
    assert_eq!(
        b.get("conf-kv", "b").await.expect("get").as_deref(),
        Some(&b"\x00\xff"[..])
    );
    assert_eq!(b.get("conf-kv", "c").await.expect("get"), None, "deleted");
    assert_eq!(
        b.get("conf-kv-count", "n").await.expect("get").as_deref(),
        Some(&100i64.to_le_bytes()[..])
    );
    h.crash(b).await;
}
