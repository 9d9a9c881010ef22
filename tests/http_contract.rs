//! Every row of the ingest HTTP contract, against the real binary over real HTTP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hookd_testkit::{Env, event, sign, stored_ids};
use serde_json::Value;

#[test]
fn a_valid_new_event_is_acknowledged_after_it_is_stored() {
    let env = Env::new("");
    let daemon = env.start();
    let body = event("evt-new-1", "message.created");
    let response = daemon.post(&body);
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"id": "evt-new-1", "duplicate": false})
    );
    // The 2xx came after the commit: the row is visible to another reader now.
    assert!(stored_ids(&env.store_dir()).contains("evt-new-1"));
    let metrics = daemon.metrics();
    assert!(
        metrics.contains("hookd_events_received_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_duplicate_is_acknowledged_and_marked() {
    let env = Env::new("");
    let daemon = env.start();
    let body = event("evt-dup", "contact.created");
    assert_eq!(daemon.post(&body).status(), 200);
    let again = daemon.post(&body);
    assert_eq!(again.status(), 200);
    let answer: Value = again.json().unwrap();
    assert_eq!(answer["duplicate"], true);
    // Same id, different body: still the same event.
    let other = event("evt-dup", "contact.updated");
    let answer: Value = daemon.post(&other).json().unwrap();
    assert_eq!(answer["duplicate"], true);
    assert_eq!(stored_ids(&env.store_dir()).len(), 1);
    assert!(daemon.metrics().contains("hookd_events_duplicate_total 2"));
}

#[test]
fn missing_wrong_and_foreign_signatures_get_the_same_generic_401() {
    let env = Env::new("");
    let daemon = env.start();
    let body = event("evt-unsigned", "message.created");
    let other = event("evt-other", "message.created");
    let cases: [(&str, Option<String>); 5] = [
        ("missing", None),
        ("garbage", Some("not-hex".into())),
        ("all zero", Some("0".repeat(64))),
        ("another body's", Some(sign(&other))),
        ("truncated", Some(sign(&body)[..63].to_owned())),
    ];
    for (name, signature) in cases {
        let response = daemon.post_with(&body, signature.as_deref());
        assert_eq!(response.status(), 401, "{name}");
        assert_eq!(
            response.text().unwrap(),
            r#"{"error":"unauthorized"}"#,
            "{name}"
        );
    }
    assert!(stored_ids(&env.store_dir()).is_empty());
    let metrics = daemon.metrics();
    assert!(
        metrics.contains(r#"hookd_requests_rejected_total{reason="missing_signature"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"hookd_requests_rejected_total{reason="bad_signature"} 4"#),
        "{metrics}"
    );
    // Nothing of the unauthenticated body reaches the logs (all of them, after the stop).
    let (_, logs) = daemon.stop_with_logs();
    let logs = logs.join("\n");
    assert!(!logs.contains("evt-unsigned"), "{logs}");
}

#[test]
fn uppercase_and_prefixed_signatures_verify() {
    let env = Env::new("");
    let daemon = env.start();
    let body = event("evt-upper", "message.created");
    assert_eq!(
        daemon
            .post_with(&body, Some(&sign(&body).to_uppercase()))
            .status(),
        200
    );
    let body = event("evt-prefixed", "message.created");
    assert_eq!(
        daemon
            .post_with(&body, Some(&format!("sha256={}", sign(&body))))
            .status(),
        200
    );
}

/// Sends raw bytes and returns what came back before the server closed or `timeout` passed.
/// A signed `POST /webhooks` of event `id`, as bytes.
fn signed_request(id: &str) -> Vec<u8> {
    let body = event(id, "message.created");
    let mut request = format!(
        "POST /webhooks HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nx-protocol-signature: {}\r\n\r\n",
        body.len(),
        sign(&body),
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

/// Sends event `id` on a kept-alive connection and reads the whole answer (head and a body
/// of `content-length` bytes), leaving the connection open.
fn keep_alive_post(stream: &mut TcpStream, id: &str) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(&signed_request(id)).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        answer.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&answer).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

fn raw_exchange(addr: std::net::SocketAddr, request: &[u8], timeout: Duration) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n")
                    && String::from_utf8_lossy(&answer).contains("}")
                {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn an_oversized_declared_body_gets_413_before_it_is_sent() {
    let env = Env::new("max_body_bytes = 1024");
    let daemon = env.start();
    // Only the headers go out: the answer must not wait for the 2 MB that never come.
    let head = format!(
        "POST /webhooks HTTP/1.1\r\nhost: x\r\ncontent-length: 2000000\r\nx-protocol-signature: {}\r\n\r\n",
        "0".repeat(64)
    );
    let answer = raw_exchange(daemon.ingest, head.as_bytes(), Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[test]
fn an_oversized_chunked_body_gets_413() {
    let env = Env::new("max_body_bytes = 1024");
    let daemon = env.start();
    let mut request =
        b"POST /webhooks HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        request.extend_from_slice(format!("{:x}\r\n{}\r\n", 512, "a".repeat(512)).as_bytes());
    }
    let answer = raw_exchange(daemon.ingest, &request, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A chunked body under the limit is fine.
    let body = event("evt-chunked", "group.created");
    let mut request = format!(
        "POST /webhooks HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nx-protocol-signature: {}\r\n\r\n",
        sign(&body)
    )
    .into_bytes();
    for part in body.chunks(20) {
        request.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        request.extend_from_slice(part);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(daemon.ingest, &request, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_signed_body_that_is_not_an_envelope_gets_400_with_a_json_error() {
    let env = Env::new("");
    let daemon = env.start();
    let cases: [(&[u8], &str); 5] = [
        (b"not json", "body is not valid JSON"),
        (b"[1,2]", "body is not a JSON object"),
        (br#"{"type":"message.created"}"#, "field `id` is missing"),
        (
            br#"{"id":42,"type":"message.created"}"#,
            "field `id` must be a string",
        ),
        (br#"{"id":"x","payload":{}}"#, "field `type` is missing"),
    ];
    for (body, detail) in cases {
        let response = daemon.post(body);
        assert_eq!(response.status(), 400, "{}", String::from_utf8_lossy(body));
        let answer: Value = response.json().unwrap();
        assert_eq!(answer["error"], "bad envelope");
        assert!(
            answer["detail"].as_str().unwrap().starts_with(detail),
            "{answer}"
        );
    }
    let deep = format!(
        r#"{{"id":"d","type":"a.b","payload":{}{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let response = daemon.post(deep.as_bytes());
    assert_eq!(response.status(), 400);
    assert!(stored_ids(&env.store_dir()).is_empty());
}

#[test]
fn an_unknown_event_type_is_accepted() {
    let env = Env::new("");
    let daemon = env.start();
    let response = daemon.post(&event("evt-future", "reaction.created"));
    assert_eq!(response.status(), 200);
    assert!(stored_ids(&env.store_dir()).contains("evt-future"));
}

#[test]
fn wrong_method_is_405_and_wrong_path_is_404() {
    let env = Env::new("");
    let daemon = env.start();
    let response = hookd_testkit::client().get(daemon.url()).send().unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let response = hookd_testkit::client()
        .post(format!("http://{}/elsewhere", daemon.ingest))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[test]
fn the_store_being_unavailable_gets_503_with_retry_after_and_nothing_is_acknowledged() {
    let env = Env::with_config("", "");
    // A tiny queue so the blocked writer fills it at once.
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        text.replace("dir = \"state\"", "dir = \"state\"\nqueue_capacity = 1"),
    )
    .unwrap();
    let daemon = env.start();
    assert_eq!(
        daemon
            .post(&event("evt-before", "message.created"))
            .status(),
        200
    );

    // Another process takes the database's write lock: the writer cannot commit.
    let db = rusqlite::Connection::open(env.store_dir().join("hookd.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let url = daemon.url();
    let senders: Vec<_> = (0..6)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let body = event(&format!("evt-blocked-{i}"), "message.created");
                let response = hookd_testkit::client()
                    .post(url)
                    .header("x-protocol-signature", sign(&body))
                    .body(body)
                    .send()
                    .unwrap();
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                (format!("evt-blocked-{i}"), status, retry_after)
            })
        })
        .collect();
    let results: Vec<_> = senders.into_iter().map(|h| h.join().unwrap()).collect();
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);

    let unavailable: Vec<_> = results.iter().filter(|(_, s, _)| *s == 503).collect();
    assert!(!unavailable.is_empty(), "{results:?}");
    for (_, _, retry_after) in &unavailable {
        assert_eq!(retry_after.as_deref(), Some("1"));
    }
    let stored = stored_ids(&env.store_dir());
    for (id, status, _) in &results {
        match status {
            200 => assert!(stored.contains(id), "{id} acknowledged but not stored"),
            503 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    // Once the lock is gone the daemon takes events again.
    assert_eq!(
        daemon.post(&event("evt-after", "message.created")).status(),
        200
    );
}

#[test]
fn a_client_dribbling_its_headers_is_cut_off() {
    let env = Env::new("header_read_timeout_ms = 500");
    let daemon = env.start();
    let mut stream = TcpStream::connect(daemon.ingest).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let header =
        b"POST /webhooks HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    for byte in header.iter().cycle().take(200) {
        if stream.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {
                closed = true; // any answer (408) ends it too
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        closed,
        "the server kept a dribbling client for {:?}",
        started.elapsed()
    );
    // And it is still healthy for everyone else.
    assert_eq!(
        daemon
            .post(&event("evt-healthy", "message.created"))
            .status(),
        200
    );
}

#[test]
fn a_client_stalling_its_body_gets_408() {
    let env = Env::new("body_read_timeout_ms = 300");
    let daemon = env.start();
    let head = "POST /webhooks HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"id\":";
    let answer = raw_exchange(daemon.ingest, head.as_bytes(), Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[test]
fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let env = Env::new(
        "max_connections = 2\nmax_connections_per_client = 2\nheader_read_timeout_ms = 60000",
    );
    let daemon = env.start();
    // Two keep-alive connections take both slots: each has been answered, so each is
    // accepted and holds its slot.
    let mut first = TcpStream::connect(daemon.ingest).unwrap();
    assert!(keep_alive_post(&mut first, "evt-first").starts_with("HTTP/1.1 200"));
    let mut second = TcpStream::connect(daemon.ingest).unwrap();
    assert!(keep_alive_post(&mut second, "evt-second").starts_with("HTTP/1.1 200"));
    let mut third = TcpStream::connect(daemon.ingest).unwrap();
    third.write_all(&signed_request("evt-capped")).unwrap();
    // Evidence that the third waits: a request sent after it on a held slot is answered,
    // and still nothing came back on the third nor was its event stored.
    assert!(keep_alive_post(&mut second, "evt-later").starts_with("HTTP/1.1 200"));
    third.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1024];
    assert!(
        matches!(third.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "served beyond the connection cap"
    );
    assert!(!stored_ids(&env.store_dir()).contains("evt-capped"));
    third.set_nonblocking(false).unwrap();
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = third.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(second);
}
