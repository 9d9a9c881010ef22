//! Test harness: runs the real `hookd` binary in a temp dir and talks to it over real HTTP.

#![allow(dead_code)]

pub mod fake_api;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookd_core::{SIGNATURE_HEADER, Secret};

pub const SECRET: &str = "hookd-test-secret-0123456789abcdef";

pub fn secret() -> Secret {
    Secret::new(SECRET).unwrap()
}

pub fn sign(body: &[u8]) -> String {
    hookd_core::sign(&secret(), body)
}

pub fn event(id: &str, event_type: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","type":"{event_type}","payload":{{"id":"p-{id}","message":"hello"}}}}"#
    )
    .into_bytes()
}

/// A temp dir with a config for one daemon; the daemon can be started, killed and restarted
/// on the same store.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Env {
    /// `extra` is appended to the config, inside `[server]` unless it opens its own section.
    pub fn new(server_extra: &str) -> Self {
        Self::with_config(server_extra, "")
    }

    pub fn with_config(server_extra: &str, tail: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), SECRET).unwrap();
        let config = dir.path().join("hookd.toml");
        std::fs::write(
            &config,
            format!(
                r#"[server]
listen = "127.0.0.1:0"
{server_extra}

[admin]
listen = "127.0.0.1:0"

[verify]
secrets = ["file:secret"]

[store]
dir = "state"

[plugins]
dir = "plugins"

[log]
filter = "debug"
{tail}
"#
            ),
        )
        .unwrap();
        Env { dir, config }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn start(&self) -> Daemon {
        Daemon::start(&self.config)
    }
}

/// A running `hookd serve`.
pub struct Daemon {
    pub child: Child,
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Self::start_watching(config, |_| {})
    }

    /// [`Daemon::start`], calling `on_line` with each log line as soon as it is read (from
    /// the thread reading them), to act at a precise moment of the start.
    pub fn start_watching(config: &Path, on_line: impl Fn(&str) + Send + 'static) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookd"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(config)
            .env_remove("HOOKD_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hookd starts");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                on_line(&line);
                let _ = tx.send(line.clone());
                sink.lock().unwrap().push(line);
            }
        });
        let (mut ingest, mut admin) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while ingest.is_none() || admin.is_none() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(remaining) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "hookd did not report its addresses; logs:\n{}",
                        logs.lock().unwrap().join("\n")
                    );
                }
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let (Some(name), Some(addr)) = (json["listener"].as_str(), json["addr"].as_str()) {
                let addr: SocketAddr = addr.parse().unwrap();
                match name {
                    "ingest" => ingest = Some(addr),
                    "admin" => admin = Some(addr),
                    _ => {}
                }
            }
        }
        let daemon = Daemon {
            child,
            ingest: ingest.unwrap(),
            admin: admin.unwrap(),
            logs,
        };
        daemon.wait_ready();
        daemon
    }

    pub fn url(&self) -> String {
        format!("http://{}/webhooks", self.ingest)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = client().get(self.admin_url("/readyz")).send()
                && r.status() == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("hookd never became ready");
    }

    /// POSTs a correctly signed body.
    pub fn post(&self, body: &[u8]) -> reqwest::blocking::Response {
        self.post_with(body, Some(&sign(body)))
    }

    pub fn post_with(&self, body: &[u8], signature: Option<&str>) -> reqwest::blocking::Response {
        let mut request = client().post(self.url()).body(body.to_vec());
        if let Some(sig) = signature {
            request = request.header(SIGNATURE_HEADER, sig);
        }
        request.send().expect("request answered")
    }

    pub fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        wait_with_timeout(&mut self.child, Duration::from_secs(30))
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hookd did not exit in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Event ids stored in the database at `dir`, read with SQLite directly.
pub fn stored_ids(dir: &Path) -> std::collections::HashSet<String> {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("hookd.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn.prepare("SELECT id FROM events").unwrap();
    stmt.query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Puts plugin `name` (component `wasm`, manifest text `toml`) into the env's plugin folder.
pub fn install_plugin(env: &Env, name: &str, wasm: &str, toml: &str) {
    let dir = env.dir.path().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(wasm, dir.join(format!("{name}.wasm"))).unwrap();
    std::fs::write(dir.join(format!("{name}.toml")), toml).unwrap();
}

/// Deliveries by (event id, plugin) -> (state, attempts, last error), read from the store.
pub fn deliveries(
    dir: &Path,
) -> std::collections::BTreeMap<(String, String), (String, i64, Option<String>)> {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("hookd.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT e.id, d.plugin, d.state, d.attempts, d.last_error
             FROM deliveries d JOIN events e ON e.seq = d.event_seq",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?, r.get(4)?)))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// A plugin's counter from its key-value store.
pub fn kv_counter(dir: &Path, plugin: &str, key: &str) -> Option<i64> {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("hookd.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT value FROM kv WHERE plugin = ?1 AND key = ?2",
        [plugin, key],
        |r| r.get::<_, Vec<u8>>(0),
    )
    .ok()
    .map(|v| i64::from_le_bytes(v.try_into().unwrap()))
}

/// Waits until `done` holds, polling; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}
