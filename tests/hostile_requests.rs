//! Hostile clients against the real binary, beyond the contract's rows (http_contract.rs):
//! crowds of idle connections, invalid UTF-8, huge JSON, duplicate floods, and unauthenticated
//! floods with a plugin subscribed. Each gets the contract's answer, the daemon stays healthy,
//! and nothing unauthenticated reaches the store or a plugin.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookd_test_plugins as wasm;
use hookd_testkit::{Env, client, deliveries, event, install_plugin, stored_ids, wait_until};

const WAIT: Duration = Duration::from_secs(30);

fn healthy(daemon: &hookd_testkit::Daemon) -> bool {
    client()
        .get(daemon.admin_url("/healthz"))
        .send()
        .is_ok_and(|r| r.status() == 200)
}

#[test]
fn thousands_of_idle_connections_are_cut_off_and_genuine_events_still_get_through() {
    let env = Env::new(
        "max_connections = 512\nmax_connections_per_client = 512\nheader_read_timeout_ms = 1000",
    );
    let daemon = env.start();
    let idle: Vec<TcpStream> = (0..3000)
        .filter_map(|_| TcpStream::connect(daemon.ingest).ok())
        .collect();
    assert!(idle.len() >= 2500, "only {} connections opened", idle.len());
    assert!(healthy(&daemon), "the admin listener stays up");

    // Idle connections hold their slot for at most the header timeout; a genuine client gets
    // through once slots free up.
    let started = Instant::now();
    let response = daemon.post(&event("through-the-crowd", "message.created"));
    assert_eq!(response.status(), 200);
    println!(
        "{} idle connections: a genuine event was acknowledged after {:?}",
        idle.len(),
        started.elapsed()
    );
    // The server closed the idle ones.
    let mut closed = 0;
    for mut c in idle.into_iter().take(200) {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        if matches!(c.read(&mut buf), Ok(0) | Err(_)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 200, "idle connections are closed by the server");
    assert!(healthy(&daemon));
    assert_eq!(stored_ids(&env.store_dir()).len(), 1);
}

#[test]
fn invalid_utf8_and_huge_json_get_the_contracts_answers() {
    let env = Env::new("max_body_bytes = 2097152");
    let daemon = env.start();
    // Signed, but not UTF-8: not JSON.
    let mut invalid = br#"{"id":"utf8-1","type":"message.created","payload":{"m":""#.to_vec();
    invalid.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    invalid.extend_from_slice(br#""}}"#);
    let response = daemon.post(&invalid);
    assert_eq!(response.status(), 400);
    assert!(response.text().unwrap().contains("not valid JSON"));

    // Huge but within the limit: 1.5 MiB of array elements, shallow. Accepted and stored whole.
    let items = vec!["0123456789"; 120_000].join("\",\"");
    let huge =
        format!(r#"{{"id":"huge-1","type":"message.created","payload":{{"items":["{items}"]}}}}"#);
    assert!(huge.len() > 1_400_000);
    assert_eq!(daemon.post(huge.as_bytes()).status(), 200);
    // Over the limit: refused before it is read whole.
    let over = format!(
        r#"{{"id":"huge-2","type":"message.created","payload":"{}"}}"#,
        "x".repeat(2_200_000)
    );
    assert_eq!(daemon.post(over.as_bytes()).status(), 413);
    // Deeply nested within the byte limit: refused by the depth scan, not parsed.
    let deep = format!(
        r#"{{"id":"deep-1","type":"message.created","payload":{}{}}}"#,
        "{\"a\":".repeat(100_000),
        "}".repeat(100_000)
    );
    let response = daemon.post(deep.as_bytes());
    assert_eq!(response.status(), 400);
    assert!(response.text().unwrap().contains("deep"));
    assert!(healthy(&daemon));
    let stored = stored_ids(&env.store_dir());
    assert_eq!(stored.len(), 1);
    assert!(stored.contains("huge-1"));
}

#[test]
fn a_flood_of_one_id_is_stored_and_delivered_once() {
    let env = Env::new("");
    install_plugin(
        &env,
        "versioned",
        wasm::FIXTURE_VERSION_A,
        "events = [\"*\"]\n[capabilities]\nkv = true\n",
    );
    let daemon = Arc::new(env.start());
    let body = Arc::new(event("dup-flood", "message.created"));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (daemon, body) = (daemon.clone(), body.clone());
            std::thread::spawn(move || {
                let mut duplicates = 0;
                for _ in 0..250 {
                    let response = daemon.post(&body);
                    assert_eq!(response.status(), 200);
                    let answer: serde_json::Value = response.json().unwrap();
                    duplicates += usize::from(answer["duplicate"] == true);
                }
                duplicates
            })
        })
        .collect();
    let duplicates: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(duplicates, 1999, "exactly one of 2000 was new");
    wait_until("the one delivery is done", WAIT, || {
        deliveries(&env.store_dir())
            .values()
            .all(|(state, _, _)| state == "done")
    });
    assert_eq!(deliveries(&env.store_dir()).len(), 1);
    assert_eq!(
        hookd_testkit::kv_counter(&env.store_dir(), "versioned", "a:dup-flood:1"),
        Some(1),
        "the plugin ran once"
    );
    assert!(
        daemon
            .metrics()
            .contains("hookd_events_duplicate_total 1999")
    );
}

#[test]
fn an_unauthenticated_flood_reaches_neither_the_store_nor_a_plugin() {
    let env = Env::new("");
    install_plugin(
        &env,
        "versioned",
        wasm::FIXTURE_VERSION_A,
        "events = [\"*\"]\n[capabilities]\nkv = true\n",
    );
    let daemon = Arc::new(env.start());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let daemon = daemon.clone();
            std::thread::spawn(move || {
                let other = event("signed-for-another-body", "message.created");
                let foreign = hookd_testkit::sign(&other);
                for i in 0..250 {
                    let body = event(&format!("forged-{t}-{i}"), "message.created");
                    let signature = match i % 3 {
                        0 => None,
                        1 => Some(foreign.as_str()),
                        _ => Some("sha256=0000"),
                    };
                    assert_eq!(daemon.post_with(&body, signature).status(), 401);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Raw garbage on the socket too.
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /webhooks HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"\0\0\0\0\0\0\0\0\0\0\0\0\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(daemon.ingest).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(garbage);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    assert!(healthy(&daemon));
    assert_eq!(
        daemon.post(&event("genuine", "message.created")).status(),
        200
    );
    wait_until("the genuine event is delivered", WAIT, || {
        deliveries(&env.store_dir())
            .values()
            .all(|(state, _, _)| state == "done")
            && !deliveries(&env.store_dir()).is_empty()
    });
    let stored = stored_ids(&env.store_dir());
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(deliveries(&env.store_dir()).len(), 1);
    let conn = rusqlite::Connection::open_with_flags(
        env.store_dir().join("hookd.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let keys: i64 = conn
        .query_row("SELECT count(*) FROM kv", [], |r| r.get(0))
        .unwrap();
    assert_eq!(keys, 1, "the plugin saw only the genuine event");
    let Ok(daemon) = Arc::try_unwrap(daemon) else {
        panic!("a sender still holds the daemon");
    };
    let (_, logs) = daemon.stop_with_logs();
    let logs = logs.join("\n");
    assert!(
        !logs.contains("forged-"),
        "unauthenticated ids reached the logs"
    );
}
