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

#![forbid(unsafe_code)]

pub mod cluster;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hookd_core::{SIGNATURE_HEADER, Secret};
use hookd_testkit::{Daemon, Launch, StoreView};

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

/// Starts the daemon on the harness's config: no logs kept (the config logs warnings only,
/// to a discarded stderr), 60 s to be ready, `/readyz` asked every 2 ms so restart-to-ready is
/// measured closely.
fn start(settings: &CrashSettings) -> anyhow::Result<(Daemon, Duration)> {
    let launch = Launch {
        env: settings.env.clone(),
        keep_logs: false,
        startup_limit: STARTUP_LIMIT,
        ready_poll: Duration::from_millis(2),
        ..Launch::new(&settings.hookd, settings.dir.join("hookd.toml"))
    };
    Daemon::launch(&launch).with_context(|| format!("cannot start {}", settings.hookd.display()))
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
        let (daemon, took) = start(settings)?;
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
    let (daemon, took) = start(settings)?;
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
    daemon
        .terminate(Duration::from_secs(30))
        .context("hookd did not stop within 30 s of SIGTERM")?;

    let stored = open(&db)?.event_ids()?;
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

fn open(db: &Path) -> anyhow::Result<StoreView> {
    StoreView::open_db(db).with_context(|| format!("cannot open {}", db.display()))
}

fn pending_deliveries(db: &Path) -> anyhow::Result<i64> {
    Ok(open(db)?.pending_deliveries()?)
}

/// Event id -> how many times the plugin ran its first attempt.
fn plugin_runs(db: &Path) -> anyhow::Result<HashMap<String, u64>> {
    let mut runs = HashMap::new();
    for (key, value) in open(db)?.kv("recorder")? {
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
