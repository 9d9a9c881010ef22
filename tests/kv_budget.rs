//! Plugin key-value writes share the store's writer under a budget, against the real binary: a
//! plugin that overwrites megabyte values as fast as it can does not hold up the commits that
//! signed senders wait for. Measured (release build, 2 cores, one sender on one connection,
//! 300 events): alone p50 1.2 ms, p99 8 ms; with the plugin, p50 12 ms, p99 28 ms, 78 events/s;
//! without the budget p50 37 ms, p99 513 ms, 13 events/s.

use std::time::{Duration, Instant};

use hookd_test_plugins as wasm;
use hookd_testkit::{Env, install_plugin, wait_until};

/// Every delivery overwrites 4 keys of 1 MiB each; 16 deliveries run at once.
const KV_HEAVY: &str = "events = [\"message.*\"]
[limits]
concurrency = 16
timeout_ms = 60000
[capabilities]
kv = true
kv_max_keys = 16
kv_max_value_bytes = 1048576
[config]
writes = \"4\"
value_bytes = \"1048576\"
";

/// Sends `n` signed events one after another on one connection; returns the sorted
/// latencies of the 200s (every answer must be a 200).
fn send(daemon: &hookd_testkit::Daemon, prefix: &str, n: usize) -> Vec<Duration> {
    let client = hookd_testkit::client();
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let body = hookd_testkit::event(&format!("{prefix}-{i}"), "message.created");
        let signature = hookd_testkit::sign(&body);
        let started = Instant::now();
        let response = client
            .post(daemon.url())
            .header(hookd_core::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{prefix}-{i}");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[test]
fn a_plugin_writing_megabytes_to_its_kv_store_does_not_hold_up_ingest() {
    let env = Env::new("");
    let daemon = env.start();
    // Without plugins: what this machine's disk gives one sender.
    let alone = send(&daemon, "alone", 300);
    assert!(daemon.stop().success());

    install_plugin(&env, "kvheavy", wasm::FIXTURE_KV_HEAVY, KV_HEAVY);
    let daemon = env.start();
    // Warm up until the plugin's writes are flowing.
    let _ = send(&daemon, "warm", 20);
    wait_until("the plugin writes", Duration::from_secs(30), || {
        hookd_testkit::deliveries(&env.store_dir())
            .values()
            .any(|(state, _, _)| state == "done")
    });
    let started = Instant::now();
    let busy = send(&daemon, "busy", 300);
    let took = started.elapsed();
    let done = hookd_testkit::deliveries(&env.store_dir())
        .values()
        .filter(|(state, _, _)| state == "done")
        .count();
    println!(
        "one sender, 300 events: alone p50 {:?} p99 {:?}; with a plugin writing 4 x 1 MiB per \
         event (16 at once): p50 {:?} p99 {:?}, {:.0} events/s, {done} deliveries done meanwhile",
        pct(&alone, 0.5),
        pct(&alone, 0.99),
        pct(&busy, 0.5),
        pct(&busy, 0.99),
        300.0 / took.as_secs_f64()
    );
    assert!(done > 0, "the plugin never wrote");
    // Timings on a shared machine are figures, not evidence: the budget itself is pinned by
    // `kv::tests` (no commit carries more than its bytes). What must hold here: every sender
    // got a 200 (asserted in `send`), and every event still reaches the plugin afterwards (made
    // light now, so the backlog drains quickly in a debug build).
    std::fs::write(
        env.dir.path().join("plugins/kvheavy.toml"),
        KV_HEAVY.replace("1048576\"", "16\""),
    )
    .unwrap();
    wait_until("every delivery done", Duration::from_secs(120), || {
        let rows = hookd_testkit::deliveries(&env.store_dir());
        rows.len() == 320 && rows.values().all(|(state, _, _)| state == "done")
    });
    let conn = rusqlite::Connection::open_with_flags(
        env.store_dir().join("hookd.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let keys: i64 = conn
        .query_row(
            "SELECT count(*) FROM kv WHERE plugin = 'kvheavy'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(keys, 4, "the plugin overwrote its 4 keys, within its quota");
    assert!(daemon.stop().success());
}
