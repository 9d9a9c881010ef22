//! Reliability harnesses for hookd, run against the real binary.
//!
//! [`crash_loops`] starts the daemon on a store, sends it signed events from several
//! connections, kills it with SIGKILL at a varying moment, and starts it again, over and over.
//! Then it lets the last daemon finish every delivery and compares, with SQLite directly:
//! every event that got a 200 must be stored; every stored event must have been handled by
//! the subscribed plugin at least once. A plugin may see an event twice (at least once: the
//! attempt cut short by the kill runs again), and the harness counts how often that happened.
//!
//! The plugin is the `version-a` test fixture, which increments the key
//! `a:EVENT_ID:ATTEMPT` in its key-value store on each run: a value above 1 is a duplicate.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hookd_core::{SIGNATURE_HEADER, Secret};

const SECRET: &str = "hookd-crash-secret-0123456789abcdef";
const STARTUP_LIMIT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct CrashSettings {
    /// The `hookd` binary.
    pub hookd: PathBuf,
    /// The `version-a` fixture component, subscribed to every event.
    pub plugin: PathBuf,
    /// A fresh folder for the config and the store.
    pub dir: PathBuf,
    pub loops: usize,
    /// Connections sending at once.
    pub senders: usize,
    /// Each run lasts between these many milliseconds before the kill.
    pub run_ms: (u64, u64),
    /// Extra environment for the daemon.
    pub env: Vec<(String, String)>,
}

/// What the loops showed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrashReport {
    pub loops: usize,
    pub acknowledged: usize,
    /// Acknowledged, not in the store after the restart. Must be 0.
    pub lost: usize,
    pub stored: usize,
    /// Stored events the plugin handled at least once.
    pub delivered: usize,
    /// Stored events the plugin never handled (after the final drain). Must be 0.
    pub undelivered: usize,
    /// Runs of the plugin beyond the first for the same attempt of an event.
    pub duplicate_deliveries: u64,
    /// Process start to `/readyz` answering 200, over every start.
    pub restart_to_ready_p50_ms: f64,
    pub restart_to_ready_p99_ms: f64,
}

impl CrashReport {
    pub fn print(&self) {
        println!("kill -9 loops:               {}", self.loops);
        println!("events acknowledged:         {}", self.acknowledged);
        println!("acknowledged events lost:    {}", self.lost);
        println!("events stored:               {}", self.stored);
        println!("events delivered to plugin:  {}", self.delivered);
        println!("events never delivered:      {}", self.undelivered);
        println!("duplicate deliveries:        {}", self.duplicate_deliveries);
        println!(
            "restart to ready:            p50 {:.1} ms, p99 {:.1} ms",
            self.restart_to_ready_p50_ms, self.restart_to_ready_p99_ms
        );
    }

    /// Whether the run kept every promise: nothing acknowledged lost, everything delivered.
    pub fn held(&self) -> bool {
        self.lost == 0 && self.undelivered == 0
    }
}

/// A running daemon.
struct Daemon {
    child: Child,
    ingest: SocketAddr,
    admin: SocketAddr,
}

impl Daemon {
    fn start(settings: &CrashSettings) -> anyhow::Result<(Daemon, Duration)> {
        let started = Instant::now();
        let mut child = Command::new(&settings.hookd)
            .args(["serve", "--config"])
            .arg(settings.dir.join("hookd.toml"))
            .envs(settings.env.iter().map(|(k, v)| (k, v)))
            .env_remove("HOOKD_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", settings.hookd.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut ingest, mut admin) = (None, None);
        while ingest.is_none() || admin.is_none() {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                let _ = child.wait();
                bail!("hookd exited before announcing its addresses");
            };
            let line = line?;
            if let Some(a) = line.strip_prefix("ingest listening on ") {
                ingest = Some(a.trim().parse()?);
            } else if let Some(a) = line.strip_prefix("admin listening on ") {
                admin = Some(a.trim().parse()?);
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let daemon = Daemon {
            child,
            ingest: ingest.unwrap_or_else(|| unreachable!()),
            admin: admin.unwrap_or_else(|| unreachable!()),
        };
        let client = client(Duration::from_secs(2))?;
        loop {
            let ready = client
                .get(format!("http://{}/readyz", daemon.admin))
                .send()
                .is_ok_and(|r| r.status() == 200);
            if ready {
                break;
            }
            if started.elapsed() > STARTUP_LIMIT {
                bail!("hookd was not ready within {STARTUP_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok((daemon, started.elapsed()))
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(mut self) -> anyhow::Result<()> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let started = Instant::now();
        while self.child.try_wait()?.is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("hookd did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(timeout: Duration) -> anyhow::Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()?)
}

fn write_files(settings: &CrashSettings) -> anyhow::Result<()> {
    let dir = &settings.dir;
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::write(dir.join("secret"), SECRET)?;
    std::fs::write(
        dir.join("hookd.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [verify]\nsecrets = [\"file:secret\"]\n\n[store]\ndir = \"state\"\n\n\
         [plugins]\ndir = \"plugins\"\n\
         # The recorder keeps a key per attempt of every event: more than the default ceilings.\n\
         max_kv_keys = 10000000\nmax_kv_mb = 16384\n\n[log]\nformat = \"json\"\nfilter = \"warn\"\n",
    )?;
    std::fs::copy(&settings.plugin, plugins.join("recorder.wasm"))
        .with_context(|| format!("cannot copy the plugin {}", settings.plugin.display()))?;
    std::fs::write(
        plugins.join("recorder.toml"),
        "events = [\"*\"]\n[limits]\nconcurrency = 16\n[capabilities]\nkv = true\nkv_max_keys = 10000000\nkv_max_value_bytes = 8\n",
    )?;
    Ok(())
}

/// Runs the kill -9 loops and the final check.
pub fn crash_loops(settings: &CrashSettings) -> anyhow::Result<CrashReport> {
    write_files(settings)?;
    let secret = Secret::new(SECRET).map_err(|e| anyhow::anyhow!("{e}"))?;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let next_id = Arc::new(AtomicU64::new(0));
    let mut restarts = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let (low, high) = settings.run_ms;

    for _ in 0..settings.loops {
        let (daemon, took) = Daemon::start(settings)?;
        restarts.push(took);
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..settings.senders)
            .map(|_| {
                let url = format!("http://{}/webhooks", daemon.ingest);
                let (stop, acked, next_id, secret) =
                    (stop.clone(), acked.clone(), next_id.clone(), secret.clone());
                std::thread::spawn(move || {
                    let Ok(client) = client(Duration::from_secs(10)) else {
                        return;
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let id = format!("crash-{}", next_id.fetch_add(1, Ordering::Relaxed));
                        let body = format!(
                            r#"{{"id":"{id}","type":"message.created","payload":{{"id":"m-{id}","message":"hi"}}}}"#
                        );
                        let signature = hookd_core::sign(&secret, body.as_bytes());
                        let sent = client
                            .post(&url)
                            .header(SIGNATURE_HEADER, signature)
                            .body(body)
                            .send();
                        match sent {
                            Ok(r) if r.status() == 200 => acked.lock().unwrap_or_else(|e| e.into_inner()).push(id),
                            Ok(_) => {}
                            Err(_) => break, // killed
                        }
                    }
                })
            })
            .collect();
        // xorshift: a different moment every loop, the same sequence every run.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(low + rng % (high - low).max(1)));
        daemon.kill9();
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            let _ = s.join();
        }
    }

    // The last start: recovery, then every pending delivery drains.
    let (daemon, took) = Daemon::start(settings)?;
    restarts.push(took);
    let db = settings.dir.join("state/hookd.db");
    let drained = Instant::now();
    loop {
        let pending = pending_deliveries(&db)?;
        if pending == 0 {
            break;
        }
        if drained.elapsed() > Duration::from_secs(300) {
            bail!("{pending} deliveries still pending after 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.terminate()?;

    let stored = stored_ids(&db)?;
    let runs = plugin_runs(&db)?;
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let lost = acked.iter().filter(|id| !stored.contains(*id)).count();
    let delivered = stored.iter().filter(|id| runs.contains_key(*id)).count();
    let duplicate_deliveries = runs.values().map(|n| n.saturating_sub(1)).sum();
    restarts.sort();
    let at = |p: f64| {
        restarts[((restarts.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
    };
    Ok(CrashReport {
        loops: settings.loops,
        acknowledged: acked.len(),
        lost,
        stored: stored.len(),
        delivered,
        undelivered: stored.len() - delivered,
        duplicate_deliveries,
        restart_to_ready_p50_ms: at(0.5),
        restart_to_ready_p99_ms: at(0.99),
    })
}

fn open(db: &Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", db.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

fn pending_deliveries(db: &Path) -> anyhow::Result<i64> {
    Ok(open(db)?.query_row(
        "SELECT count(*) FROM deliveries WHERE state = 'pending'",
        [],
        |r| r.get(0),
    )?)
}

fn stored_ids(db: &Path) -> anyhow::Result<HashSet<String>> {
    let conn = open(db)?;
    let mut stmt = conn.prepare("SELECT id FROM events")?;
    let ids = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// Event id -> how many times the plugin ran its first attempt.
fn plugin_runs(db: &Path) -> anyhow::Result<HashMap<String, u64>> {
    let conn = open(db)?;
    let mut stmt = conn.prepare("SELECT key, value FROM kv WHERE plugin = 'recorder'")?;
    let mut runs = HashMap::new();
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    for row in rows {
        let (key, value) = row?;
        // a:EVENT_ID:ATTEMPT; an attempt after the first is a retry, not a duplicate.
        let Some((id, attempt)) = key
            .strip_prefix("a:")
            .and_then(|rest| rest.rsplit_once(':'))
        else {
            continue;
        };
        let n = i64::from_le_bytes(value.try_into().unwrap_or([0; 8]));
        let n = u64::try_from(n).unwrap_or(0);
        let entry = runs.entry(id.to_owned()).or_insert(0);
        if attempt == "1" {
            *entry += n;
        } else {
            *entry += n.saturating_sub(1);
        }
    }
    Ok(runs)
}
