//! The systemd notify protocol against the real binary: `NOTIFY_SOCKET` points at a datagram
//! socket this test owns, as systemd's would.

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Env, event, sign};

/// The daemon, started the way systemd starts it.
struct Service {
    child: Child,
    ingest: SocketAddr,
    socket: UnixDatagram,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Service {
    fn start(env: &Env, watchdog: Option<Duration>) -> Service {
        let path = env.dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookd"));
        cmd.args(["serve", "--log-format", "json", "--config"])
            .arg(&env.config)
            .env("NOTIFY_SOCKET", &path)
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match watchdog {
            Some(interval) => cmd.env("WATCHDOG_USEC", interval.as_micros().to_string()),
            None => cmd.env_remove("WATCHDOG_USEC"),
        };
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ingest = loop {
            let line = lines.next().expect("hookd announces its address").unwrap();
            if let Some(addr) = line.strip_prefix("ingest listening on ") {
                break addr.parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Service {
            child,
            ingest,
            socket,
            logs,
        }
    }

    /// Every datagram received within `window`, one string per datagram.
    fn receive_for(&self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut messages = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return messages;
            }
            self.socket.set_read_timeout(Some(left)).unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => messages.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => return messages,
            }
        }
    }

    /// Waits for a datagram containing `line`; returns it and everything before it.
    fn wait_for(&self, line: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no `{line}` within {timeout:?}; got {seen:?}"
            );
            self.socket.set_read_timeout(Some(left)).unwrap();
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = message.lines().any(|l| l == line);
                seen.push(message);
                if found {
                    return seen;
                }
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: signalling our own child.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, signal) },
            0
        );
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pings(messages: &[String]) -> usize {
    messages
        .iter()
        .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        .count()
}

#[test]
fn ready_reloading_ready_and_stopping_are_announced() {
    let env = Env::new("");
    let mut service = Service::start(&env, None);
    let before = service.wait_for("READY=1", Duration::from_secs(30));
    assert!(
        before.last().unwrap().contains("STATUS=ready"),
        "READY comes with a human status: {before:?}"
    );
    // READY means the listener is up.
    let body = event("notify-1", "message.created");
    let response = common::client()
        .post(format!("http://{}/webhooks", service.ingest))
        .header("x-protocol-signature", sign(&body))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);

    service.signal(libc::SIGHUP);
    let reload = service.wait_for("READY=1", Duration::from_secs(30));
    let reloading = reload
        .iter()
        .find(|m| m.lines().any(|l| l == "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {reload:?}"));
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("RELOADING=1 carries MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(usec > 0);

    service.signal(libc::SIGTERM);
    service.wait_for("STOPPING=1", Duration::from_secs(30));
    let status = common::wait_with_timeout(&mut service.child, Duration::from_secs(30));
    assert!(status.success());
}

#[test]
fn the_watchdog_is_pinged_only_while_the_store_makes_progress() {
    let env = Env::new("");
    let service = Service::start(&env, Some(Duration::from_millis(400)));
    service.wait_for("READY=1", Duration::from_secs(30));
    let healthy = service.receive_for(Duration::from_millis(1200));
    assert!(
        pings(&healthy) >= 3,
        "pings every 200 ms expected: {healthy:?}"
    );

    // Another process holds the database's write lock: the writer blocks on its next commit
    // (up to its 2 s busy timeout) and the watchdog must go quiet.
    let db = rusqlite::Connection::open(env.store_dir().join("hookd.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let url = format!("http://{}/webhooks", service.ingest);
    let blocked = std::thread::spawn(move || {
        let body = event("notify-blocked", "message.created");
        common::client()
            .post(url)
            .header("x-protocol-signature", sign(&body))
            .body(body)
            .send()
            .unwrap()
            .status()
    });
    // hookd says when a ping went unanswered: the writer has been blocked for at least 100 ms
    // and at most about 400 ms of its 2 s busy wait, so the next second is all blocked.
    common::wait_until(
        "hookd notices the stuck writer",
        Duration::from_secs(10),
        || {
            service
                .logs
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("not pinging the watchdog"))
        },
    );
    service.receive_for(Duration::from_millis(1)); // what was sent before: not counted
    let stuck = service.receive_for(Duration::from_millis(1000));
    assert_eq!(
        pings(&stuck),
        0,
        "pinged while the writer was stuck: {stuck:?}"
    );
    assert_eq!(blocked.join().unwrap(), 503);
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);

    let recovered = service.receive_for(Duration::from_millis(1500));
    assert!(pings(&recovered) >= 2, "pings resume: {recovered:?}");
}
