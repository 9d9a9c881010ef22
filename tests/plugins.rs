//! Plugins end to end: the real daemon, real components built from `plugins/`, real HTTP.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hookd_test_plugins as wasm;
use hookd_testkit::fake_api::FakeApi;
use hookd_testkit::{Env, deliveries, event, install_plugin, kv_counter, wait_until};

const WAIT: Duration = Duration::from_secs(30);

fn message_created(id: &str, conversation: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","type":"message.created","payload":{{"id":"m-{id}","conversation_id":"{conversation}","message":"hi"}}}}"#
    )
    .into_bytes()
}

fn all_in_state(env: &Env, state: &str, expected: usize) -> bool {
    let d = deliveries(&env.store_dir());
    d.len() == expected && d.values().all(|(s, _, _)| s == state)
}

#[test]
fn an_event_reaches_every_subscribed_plugin() {
    let api = FakeApi::start();
    let env = Env::new("");
    install_plugin(&env, "logger", wasm::LOGGER, "events = [\"*\"]\n");
    install_plugin(
        &env,
        "counter",
        wasm::COUNTER,
        "events = [\"*\"]\n[capabilities]\nkv = true\n",
    );
    install_plugin(
        &env,
        "auto-reply",
        wasm::AUTO_REPLY,
        &format!(
            "events = [\"message.created\"]\n[capabilities]\nhttp = [\"{}\"]\n\
             [config]\napi_base_url = \"{}\"\napi_token = \"s3cret-token\"\nreply_text = \"On it!\"\n",
            api.base, api.base
        ),
    );
    let daemon = env.start();
    assert_eq!(
        daemon.post(&message_created("e2e-1", "conv-9")).status(),
        200
    );
    assert_eq!(
        daemon.post(&event("e2e-2", "contact.created")).status(),
        200
    );
    // A type this version does not know: the `*` subscribers (logger, counter) still get it.
    assert_eq!(daemon.post(&event("e2e-3", "reaction.added")).status(), 200);

    // message: 3 plugins; contact: logger + counter; reaction: logger + counter.
    wait_until("all 7 deliveries done", WAIT, || {
        all_in_state(&env, "done", 7)
    });

    assert_eq!(
        api.requests(),
        [hookd_testkit::fake_api::Seen {
            method: "POST".into(),
            path: "/conversations/conv-9/messages".into(),
            authorization: "Bearer s3cret-token".into(),
            body: r#"{"message":"On it!"}"#.into(),
        }]
    );
    assert_eq!(
        kv_counter(&env.store_dir(), "counter", "count:message.created"),
        Some(1)
    );
    assert_eq!(kv_counter(&env.store_dir(), "counter", "count:*"), Some(3));
    daemon.wait_for_log("the logger plugin's line", WAIT, |l| {
        l.contains("event e2e-1 (message.created, attempt 1)")
    });
    let metrics = daemon.metrics();
    assert!(
        metrics.contains(r#"hookd_deliveries_total{plugin="auto-reply",outcome="ok"} 1"#),
        "{metrics}"
    );
}

#[test]
fn an_event_without_subscribers_is_stored_and_counted() {
    let env = Env::new("");
    install_plugin(&env, "logger", wasm::LOGGER, "events = [\"message.*\"]\n");
    let daemon = env.start();
    assert_eq!(daemon.post(&event("lonely", "group.deleted")).status(), 200);
    assert!(hookd_testkit::stored_ids(&env.store_dir()).contains("lonely"));
    assert!(deliveries(&env.store_dir()).is_empty());
    assert!(daemon.metrics().contains("hookd_events_unrouted_total 1"));
}

#[test]
fn a_disallowed_origin_is_refused_and_recorded_as_a_failed_attempt() {
    let api = FakeApi::start();
    let env = Env::new("");
    install_plugin(
        &env,
        "auto-reply",
        wasm::AUTO_REPLY,
        &format!(
            "events = [\"message.created\"]\n[capabilities]\nhttp = [\"https://api.protocol.chat\"]\n\
             [retry]\nmax_attempts = 2\ninitial_backoff_ms = 10\nmax_backoff_ms = 20\n\
             [config]\napi_base_url = \"{}\"\napi_token = \"t\"\n",
            api.base
        ),
    );
    let daemon = env.start();
    assert_eq!(
        daemon.post(&message_created("denied-1", "c1")).status(),
        200
    );
    wait_until("the delivery is dead", WAIT, || {
        all_in_state(&env, "dead", 1)
    });
    let d = deliveries(&env.store_dir());
    let (_, attempts, error) = &d[&("denied-1".to_owned(), "auto-reply".to_owned())];
    assert_eq!(*attempts, 2);
    assert!(
        error.as_deref().unwrap_or_default().contains("retry"),
        "{error:?}"
    );
    assert!(
        api.requests().is_empty(),
        "the request went out: {:?}",
        api.requests()
    );
    daemon.wait_for_log("the refusal is logged", WAIT, |l| {
        l.contains("outgoing request refused: origin not allowed")
    });
}

#[test]
fn hostile_plugins_fail_only_their_own_deliveries() {
    let env = Env::new("");
    let once = "[retry]\nmax_attempts = 1\n";
    install_plugin(&env, "noop", wasm::FIXTURE_NOOP, "events = [\"*\"]\n");
    install_plugin(
        &env,
        "trap",
        wasm::FIXTURE_TRAP,
        &format!("events = [\"*\"]\n{once}"),
    );
    install_plugin(
        &env,
        "panic",
        wasm::FIXTURE_PANIC,
        &format!("events = [\"*\"]\n{once}"),
    );
    install_plugin(
        &env,
        "spin",
        wasm::FIXTURE_INFINITE_LOOP,
        &format!("events = [\"*\"]\n[limits]\ntimeout_ms = 200\n{once}"),
    );
    install_plugin(
        &env,
        "bomb",
        wasm::FIXTURE_MEMORY_BOMB,
        &format!("events = [\"*\"]\n[limits]\nmemory_mb = 16\n{once}"),
    );
    install_plugin(
        &env,
        "deep",
        wasm::FIXTURE_STACK_OVERFLOW,
        &format!("events = [\"*\"]\n{once}"),
    );
    install_plugin(&env, "flood", wasm::FIXTURE_LOG_FLOOD, "events = [\"*\"]\n");
    let daemon = env.start();
    for i in 0..3 {
        assert_eq!(
            daemon
                .post(&event(&format!("h{i}"), "message.created"))
                .status(),
            200
        );
    }
    let settled = || {
        let d = deliveries(&env.store_dir());
        d.len() == 21 && d.values().all(|(s, _, _)| s != "pending")
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !settled() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        settled(),
        "not settled: {:#?}",
        deliveries(&env.store_dir())
    );
    let d = deliveries(&env.store_dir());
    for ((event_id, plugin), (state, _, error)) in &d {
        let expected = if plugin == "noop" || plugin == "flood" {
            "done"
        } else {
            "dead"
        };
        assert_eq!(state, expected, "{event_id} {plugin}: {error:?}");
    }
    let health = hookd_testkit::client()
        .get(daemon.admin_url("/healthz"))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200);
    let metrics = daemon.metrics();
    for line in [
        r#"hookd_deliveries_total{plugin="trap",outcome="trap"} 3"#,
        r#"hookd_deliveries_total{plugin="panic",outcome="trap"} 3"#,
        r#"hookd_deliveries_total{plugin="spin",outcome="timeout"} 3"#,
        r#"hookd_deliveries_total{plugin="bomb",outcome="memory_limit"} 3"#,
        r#"hookd_deliveries_total{plugin="noop",outcome="ok"} 3"#,
        r#"hookd_dead_letters_total{plugin="trap"} 3"#,
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    // And the daemon still takes events.
    assert_eq!(
        daemon
            .post(&event("after-hostiles", "message.created"))
            .status(),
        200
    );
}

#[test]
fn retries_back_off_then_succeed() {
    let env = Env::new("");
    install_plugin(
        &env,
        "flaky",
        wasm::FIXTURE_FLAKY,
        "events = [\"*\"]\n[retry]\ninitial_backoff_ms = 50\nmax_backoff_ms = 100\n",
    );
    let daemon = env.start();
    assert_eq!(
        daemon.post(&event("flaky-1", "message.created")).status(),
        200
    );
    wait_until("delivered on the third attempt", WAIT, || {
        all_in_state(&env, "done", 1)
    });
    let d = deliveries(&env.store_dir());
    assert_eq!(d[&("flaky-1".to_owned(), "flaky".to_owned())].1, 3);
    assert!(
        daemon
            .metrics()
            .contains(r#"hookd_delivery_retries_total{plugin="flaky"} 2"#)
    );
}

#[test]
fn dead_letters_can_be_listed_and_replayed() {
    let api = FakeApi::start();
    api.status.store(503, Ordering::SeqCst);
    let env = Env::new("");
    install_plugin(
        &env,
        "auto-reply",
        wasm::AUTO_REPLY,
        &format!(
            "events = [\"message.created\"]\n[capabilities]\nhttp = [\"{}\"]\n[retry]\nmax_attempts = 1\n\
             [config]\napi_base_url = \"{}\"\napi_token = \"t\"\n",
            api.base, api.base
        ),
    );
    let daemon = env.start();
    assert_eq!(daemon.post(&message_created("dlq-1", "c7")).status(), 200);
    wait_until("dead letter", WAIT, || all_in_state(&env, "dead", 1));

    let hookd = |args: &[&str]| {
        std::process::Command::new(hookd_testkit::hookd_binary())
            .args(args)
            .arg("--config")
            .arg(&env.config)
            .output()
            .unwrap()
    };
    let list = hookd(&["dlq", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{list:?}");
    assert!(
        listed.contains("dlq-1") && listed.contains("auto-reply") && listed.contains("HTTP 503"),
        "{listed}"
    );

    api.status.store(200, Ordering::SeqCst);
    let replay = hookd(&["dlq", "replay", "dlq-1"]);
    assert_eq!(
        String::from_utf8_lossy(&replay.stdout).trim(),
        "1 dead letter replayed"
    );
    wait_until("replayed and delivered", WAIT, || {
        all_in_state(&env, "done", 1)
    });
    assert_eq!(api.requests().len(), 2);
    let list = hookd(&["dlq", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).trim(),
        "no dead letters"
    );
    drop(daemon);
}

#[test]
fn pending_deliveries_survive_kill_9() {
    let env = Env::new("");
    install_plugin(
        &env,
        "counter",
        wasm::COUNTER,
        "events = [\"*\"]\n[capabilities]\nkv = true\n",
    );
    let daemon = env.start();
    let total = 300;
    for i in 0..total {
        assert_eq!(
            daemon
                .post(&event(&format!("k{i}"), "message.created"))
                .status(),
            200
        );
    }
    daemon.kill9();
    let pending_after_kill = deliveries(&env.store_dir())
        .values()
        .filter(|(s, _, _)| s == "pending")
        .count();
    let _daemon = env.start();
    wait_until("every delivery done after the restart", WAIT, || {
        all_in_state(&env, "done", total)
    });
    let counted = kv_counter(&env.store_dir(), "counter", "count:*").unwrap_or(0);
    println!(
        "kill -9 with deliveries pending: {total} events, {pending_after_kill} pending at the kill, \
         all delivered, {} delivered twice",
        counted - total as i64
    );
    assert!(
        counted >= total as i64,
        "lost deliveries: counted {counted} of {total}"
    );
}

#[test]
fn a_plugin_filling_its_key_value_store_hits_its_quota() {
    let env = Env::new("");
    install_plugin(
        &env,
        "filler",
        wasm::FIXTURE_KV_FILLER,
        "events = [\"*\"]\n[capabilities]\nkv = true\nkv_max_keys = 100\n",
    );
    let daemon = env.start();
    assert_eq!(
        daemon.post(&event("fill-1", "message.created")).status(),
        200
    );
    wait_until("the delivery is dead-lettered", WAIT, || {
        all_in_state(&env, "dead", 1)
    });
    let (_, attempts, error) = deliveries(&env.store_dir()).into_values().next().unwrap();
    assert_eq!(attempts, 1, "a quota refusal is not retried");
    let error = error.unwrap();
    assert!(error.contains("kv quota exceeded"), "{error}");
    let conn = rusqlite::Connection::open_with_flags(
        env.store_dir().join("hookd.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let keys: i64 = conn
        .query_row("SELECT count(*) FROM kv WHERE plugin = 'filler'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(keys, 100, "exactly the quota was stored");
    // The daemon is unaffected.
    assert_eq!(
        hookd_testkit::client()
            .get(daemon.admin_url("/healthz"))
            .send()
            .unwrap()
            .status(),
        200
    );
    daemon.stop();
}
