//! The systemd notify protocol against the real binary: `NOTIFY_SOCKET` points at a datagram
//! socket this test owns, as systemd's would.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookd_testkit::{Env, event, sign};

/// The daemon, started the way systemd starts it.
struct Service {
    child: Child,
    ingest: SocketAddr,
    socket: UnixDatagram,
    logs: Arc<Mutex<Vec<String>>>,
}

/// Whom systemd's watchdog variables are meant for.
#[derive(Clone, Copy)]
enum Watchdog {
    Off,
    /// `WATCHDOG_USEC` with `WATCHDOG_PID` = the daemon's pid, as systemd sets them.
    On(Duration),
    /// `WATCHDOG_USEC` with the pid of another process: inherited, not for this daemon.
    ForAnotherProcess(Duration),
}

impl Service {
    fn start(env: &Env, watchdog: Watchdog) -> Service {
        let path = env.dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        // Through `sh -c '... exec'`, so that `$$` is the pid the daemon will have.
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(r#"[ -n "$WATCHDOG_USEC" ] && export WATCHDOG_PID="${WATCHDOG_PID:-$$}"; exec "$0" "$@""#)
            .arg(hookd_testkit::hookd_binary())
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&env.config)
            .env("NOTIFY_SOCKET", &path)
            .env_remove("WATCHDOG_PID")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match watchdog {
            Watchdog::Off => {}
            Watchdog::On(interval) => {
                cmd.env("WATCHDOG_USEC", interval.as_micros().to_string());
            }
            Watchdog::ForAnotherProcess(interval) => {
                cmd.env("WATCHDOG_USEC", interval.as_micros().to_string())
                    .env("WATCHDOG_PID", std::process::id().to_string());
            }
        }
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

/// `CLOCK_MONOTONIC` in microseconds, the clock `MONOTONIC_USEC` is read from.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write into.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) },
        0
    );
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
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
    let mut service = Service::start(&env, Watchdog::Off);
    let before = service.wait_for("READY=1", Duration::from_secs(30));
    assert!(
        before.last().unwrap().contains("STATUS=ready"),
        "READY comes with a human status: {before:?}"
    );
    // READY means the listener is up.
    let body = event("notify-1", "message.created");
    let response = hookd_testkit::client()
        .post(format!("http://{}/webhooks", service.ingest))
        .header("x-protocol-signature", sign(&body))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);

    let before_hup = monotonic_usec();
    service.signal(libc::SIGHUP);
    let reload = service.wait_for("READY=1", Duration::from_secs(30));
    let after_ready = monotonic_usec();
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
    // systemd compares it with when it asked for the reload: it must be the time of sending.
    assert!(
        (before_hup..=after_ready).contains(&usec),
        "MONOTONIC_USEC={usec} not within {before_hup}..={after_ready}"
    );
    assert!(
        reload
            .last()
            .unwrap()
            .contains("STATUS=ready: configuration reloaded"),
        "{reload:?}"
    );

    // A configuration that does not validate: systemd still hears the reload end, and
    // `systemctl status` says the running configuration was kept.
    let good = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("{good}\nno_such_key = 1\n")).unwrap();
    service.signal(libc::SIGHUP);
    let refused = service.wait_for("READY=1", Duration::from_secs(30));
    assert!(
        refused
            .iter()
            .any(|m| m.lines().any(|l| l == "RELOADING=1")),
        "{refused:?}"
    );
    assert!(
        refused.last().unwrap().contains("reload refused"),
        "{refused:?}"
    );

    service.signal(libc::SIGTERM);
    service.wait_for("STOPPING=1", Duration::from_secs(30));
    let status = hookd_testkit::wait_with_timeout(&mut service.child, Duration::from_secs(30));
    assert!(status.success());
}

/// SIGHUP must be caught before `READY=1`: a reload asked for at once (`systemctl reload`
/// may) would otherwise meet SIGHUP's default action and end the daemon.
#[test]
fn a_reload_right_at_ready_is_a_reload_not_the_end() {
    let env = Env::new("");
    let mut service = Service::start(&env, Watchdog::Off);
    service.wait_for("READY=1", Duration::from_secs(30));
    service.signal(libc::SIGHUP);
    let reload = service.wait_for("READY=1", Duration::from_secs(30));
    assert!(
        reload.iter().any(|m| m.lines().any(|l| l == "RELOADING=1")),
        "{reload:?}"
    );
    assert!(service.child.try_wait().unwrap().is_none(), "hookd ended");
}

#[test]
fn the_watchdog_is_pinged_only_while_the_store_makes_progress() {
    let env = Env::new("");
    let service = Service::start(&env, Watchdog::On(Duration::from_millis(400)));
    service.wait_for("READY=1", Duration::from_secs(30));
    let healthy = service.receive_for(Duration::from_millis(1200));
    assert!(
        pings(&healthy) >= 3,
        "pings every 200 ms expected: {healthy:?}"
    );

    // Another process holds the database's write lock. Idle or not, the writer could not
    // commit, so the watchdog must go quiet, and stay quiet for as long as the lock lasts:
    // longer than the writer's 2 s busy timeout, after which it gives up and tries again.
    let db = rusqlite::Connection::open(env.store_dir().join("hookd.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    hookd_testkit::wait_until(
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
    let url = format!("http://{}/webhooks", service.ingest);
    let blocked = std::thread::spawn(move || {
        let body = event("notify-blocked", "message.created");
        hookd_testkit::client()
            .post(url)
            .header("x-protocol-signature", sign(&body))
            .body(body)
            .send()
            .unwrap()
            .status()
    });
    let stuck = service.receive_for(Duration::from_millis(3000));
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

#[test]
fn a_watchdog_meant_for_another_process_is_not_pinged() {
    let env = Env::new("");
    let service = Service::start(
        &env,
        Watchdog::ForAnotherProcess(Duration::from_millis(200)),
    );
    service.wait_for("READY=1", Duration::from_secs(30));
    // Five intervals: a daemon that took the variables for itself would have pinged ten times.
    let after = service.receive_for(Duration::from_secs(1));
    assert_eq!(pings(&after), 0, "{after:?}");
}
