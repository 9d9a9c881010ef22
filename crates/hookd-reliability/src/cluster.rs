//! The cluster failure harness: three real nats-server nodes (JetStream, R3), several hookd
//! instances sharing them, signed load from several connections spread over the instances,
//! and a failure injected over and over while it runs: a hookd instance killed with
//! `kill -9`, one nats-server node of three killed and brought back, the whole NATS cluster
//! killed and restarted, or everything (every instance and every node) killed and restarted.
//! Then every instance is brought up and the harness waits until each acknowledged event
//! reached each plugin.
//!
//! Deliveries are counted where they land: both plugins are the `http-poster` fixture, posting
//! every event id they get to a local HTTP server in this process, so no instance's death
//! takes its counts with it. An event id seen twice by a plugin is a duplicate (at least
//! once); an acknowledged id never seen is lost, and must not happen.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hookd_core::{SIGNATURE_HEADER, Secret};
use hookd_testkit::fake_api::FakeApi;
use hookd_testkit::nats::NatsCluster;
use hookd_testkit::{Daemon, Launch};

const SECRET: &str = "hookd-cluster-secret-0123456789abcdef";
const PLUGINS: [&str; 2] = ["alpha", "beta"];

/// Which failure to inject, again and again, while the load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `kill -9` one hookd instance, then start it again.
    KillHookd,
    /// `kill -9` one nats-server node of three, then start it again.
    KillNatsNode,
    /// `kill -9` every nats-server node, then start them all again.
    RestartNatsCluster,
    /// `kill -9` everything, every hookd instance and every nats-server node, then start it
    /// all again.
    RestartEverything,
}

#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub hookd: PathBuf,
    /// The `http-poster` fixture component.
    pub poster: PathBuf,
    /// A fresh folder for the instances' configs.
    pub dir: PathBuf,
    pub instances: usize,
    /// Connections sending at once, spread over the instances.
    pub senders: usize,
    pub failure: Failure,
    /// How many times the failure is injected.
    pub rounds: usize,
    /// How long the load runs between two failures (and how long a killed part stays down).
    pub interval: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct ClusterReport {
    pub failure: String,
    pub rounds: usize,
    pub acknowledged: usize,
    /// Acknowledged, then never delivered to a plugin. Must be 0.
    pub lost: usize,
    /// Per plugin: distinct events delivered.
    pub delivered: Vec<(String, usize)>,
    /// Deliveries beyond the first of an event to a plugin, all plugins.
    pub duplicates: usize,
    /// Delivered, though the sender got no 2xx (stored, then the answer was lost or late).
    pub delivered_unacknowledged: usize,
    pub answered_503: u64,
    /// The longest stretch in which no sender got a 2xx.
    pub longest_without_2xx: Duration,
    /// From the last failure's end to every acknowledged event delivered.
    pub drain: Duration,
}

impl ClusterReport {
    pub fn print(&self) {
        println!(
            "failure injected:            {} x {}",
            self.failure, self.rounds
        );
        println!("events acknowledged:         {}", self.acknowledged);
        println!("acknowledged events lost:    {}", self.lost);
        for (plugin, n) in &self.delivered {
            println!("delivered to {plugin:<16} {n}");
        }
        println!("duplicate deliveries:        {}", self.duplicates);
        println!(
            "delivered, not acknowledged: {}",
            self.delivered_unacknowledged
        );
        println!("503 answers:                 {}", self.answered_503);
        println!(
            "longest time without a 2xx:  {} ms",
            self.longest_without_2xx.as_millis()
        );
        println!("drain after the last round:  {} ms", self.drain.as_millis());
    }

    pub fn held(&self) -> bool {
        self.lost == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One hookd instance's folder and, while it runs, its process.
struct Instance {
    config: PathBuf,
    daemon: Option<Daemon>,
    ingest: Arc<Mutex<Option<String>>>,
    runs: u32,
}

impl Instance {
    fn start(&mut self, hookd: &Path) -> anyhow::Result<()> {
        let launch = Launch {
            // HOOKD_CLUSTER_LOGS=1 keeps each run's log beside its config, for a post-mortem.
            keep_logs: std::env::var_os("HOOKD_CLUSTER_LOGS").is_some(),
            startup_limit: Duration::from_secs(90),
            ..Launch::new(hookd, &self.config)
        };
        let (daemon, _) = Daemon::launch(&launch)
            .with_context(|| format!("cannot start hookd on {}", self.config.display()))?;
        *lock(&self.ingest) = Some(format!("http://{}/webhooks", daemon.ingest));
        self.daemon = Some(daemon);
        Ok(())
    }

    fn kill(&mut self) {
        *lock(&self.ingest) = None;
        if let Some(d) = self.daemon.take() {
            self.runs += 1;
            let logs = d.logs();
            if !logs.is_empty()
                && let Some(dir) = self.config.parent()
            {
                let _ = std::fs::write(dir.join(format!("log.{}", self.runs)), logs.join("\n"));
            }
            d.kill9();
        }
    }
}

fn write_instance(
    settings: &ClusterSettings,
    index: usize,
    servers: &[String],
    api: &FakeApi,
) -> anyhow::Result<PathBuf> {
    let dir = settings.dir.join(format!("hookd-{index}"));
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::write(dir.join("secret"), SECRET)?;
    let servers = servers
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        dir.join("hookd.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [verify]\nsecrets = [\"file:secret\"]\n\n[store]\ndir = \"state\"\nbackend = \"nats\"\n\n\
             [store.nats]\nservers = [{servers}]\nprefix = \"cluster\"\nreplicas = 3\n\
             ack_wait_secs = 2\nrequest_timeout_ms = 2000\nconnect_timeout_ms = 1000\n\n\
             [plugins]\ndir = \"plugins\"\n\n[log]\nformat = \"json\"\nfilter = \"info,hookd_nats=debug\"\n"
        ),
    )?;
    for plugin in PLUGINS {
        std::fs::copy(&settings.poster, plugins.join(format!("{plugin}.wasm")))
            .with_context(|| format!("cannot copy {}", settings.poster.display()))?;
        std::fs::write(
            plugins.join(format!("{plugin}.toml")),
            format!(
                "events = [\"*\"]\n[limits]\nconcurrency = 16\n[retry]\nmax_attempts = 100\ninitial_backoff_ms = 200\nmax_backoff_ms = 2000\n\
                 [capabilities]\nhttp = [\"{base}\"]\n[config]\nurl = \"{base}/{plugin}\"\n",
                base = api.base
            ),
        )?;
    }
    Ok(dir.join("hookd.toml"))
}

/// Every answer's moment and whether it was a 2xx, for the longest outage.
#[derive(Default)]
struct Answers {
    ok_at: Mutex<Vec<Instant>>,
    answered_503: AtomicU64,
}

/// Runs the load with the failure injected `rounds` times, then drains and counts.
pub fn cluster_failures(settings: &ClusterSettings) -> anyhow::Result<ClusterReport> {
    let mut cluster = NatsCluster::start();
    let servers = cluster.urls();
    let api = FakeApi::start();
    let mut instances = Vec::new();
    for i in 0..settings.instances {
        instances.push(Instance {
            config: write_instance(settings, i, &servers, &api)?,
            daemon: None,
            ingest: Arc::default(),
            runs: 0,
        });
    }
    for instance in &mut instances {
        instance.start(&settings.hookd)?;
    }
    let targets: Vec<Arc<Mutex<Option<String>>>> =
        instances.iter().map(|i| i.ingest.clone()).collect();

    let secret = Secret::new(SECRET).map_err(|e| anyhow::anyhow!("{e}"))?;
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let answers = Arc::new(Answers::default());
    let next_id = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let senders: Vec<_> = (0..settings.senders)
        .map(|s| {
            let (targets, acked, answers, next_id, stop, secret) = (
                targets.clone(),
                acked.clone(),
                answers.clone(),
                next_id.clone(),
                stop.clone(),
                secret.clone(),
            );
            std::thread::spawn(move || {
                send_loop(s, &targets, &acked, &answers, &next_id, &stop, &secret)
            })
        })
        .collect();

    let mut turn = 0usize;
    for round in 0..settings.rounds {
        std::thread::sleep(settings.interval);
        match settings.failure {
            Failure::KillHookd => {
                let i = turn % instances.len();
                turn += 1;
                instances[i].kill();
                std::thread::sleep(settings.interval / 2);
                instances[i].start(&settings.hookd)?;
            }
            Failure::KillNatsNode => {
                let n = round % cluster.nodes.len();
                cluster.nodes[n].kill();
                std::thread::sleep(settings.interval);
                cluster.nodes[n].start();
            }
            Failure::RestartNatsCluster => {
                for node in &mut cluster.nodes {
                    node.kill();
                }
                std::thread::sleep(settings.interval / 2);
                for node in &mut cluster.nodes {
                    node.start();
                }
            }
            Failure::RestartEverything => {
                for instance in &mut instances {
                    instance.kill();
                }
                for node in &mut cluster.nodes {
                    node.kill();
                }
                std::thread::sleep(settings.interval / 2);
                for node in &mut cluster.nodes {
                    node.start();
                }
                // Each waits for JetStream before it is ready.
                for instance in &mut instances {
                    instance.start(&settings.hookd)?;
                }
            }
        }
        // The next failure only once the cluster is whole again: a second node lost while the
        // first still catches up is a lost quorum, which no replica count survives.
        let whole = Instant::now() + Duration::from_secs(60);
        while !cluster.nodes.iter().all(|n| n.jetstream_ready()) {
            if Instant::now() > whole {
                bail!("the NATS cluster was not whole again within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::thread::sleep(settings.interval);
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.join();
    }
    let load_ended = Instant::now();

    let acked = lock(&acked).clone();
    let delivered = |plugin: &str| -> HashMap<String, usize> {
        let path = format!("/{plugin}");
        let mut counts = HashMap::new();
        for seen in api.accepted() {
            if seen.path != path {
                continue;
            }
            let id = serde_json::from_str::<serde_json::Value>(&seen.body)
                .ok()
                .and_then(|v| v["event"].as_str().map(str::to_owned));
            if let Some(id) = id {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
        counts
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let all = PLUGINS.iter().all(|p| {
            let got = delivered(p);
            acked.iter().all(|id| got.contains_key(id))
        });
        if all {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let drain = load_ended.elapsed();
    for instance in &mut instances {
        instance.kill();
    }

    let mut report = ClusterReport {
        failure: format!("{:?}", settings.failure),
        rounds: settings.rounds,
        acknowledged: acked.len(),
        answered_503: answers.answered_503.load(Ordering::Relaxed),
        drain,
        ..ClusterReport::default()
    };
    let mut unacked = HashSet::new();
    for plugin in PLUGINS {
        let got = delivered(plugin);
        report.lost += acked.iter().filter(|id| !got.contains_key(*id)).count();
        report.duplicates += got.values().map(|n| n - 1).sum::<usize>();
        unacked.extend(got.keys().filter(|id| !acked.contains(*id)).cloned());
        report.delivered.push((plugin.to_owned(), got.len()));
    }
    report.delivered_unacknowledged = unacked.len();
    let mut oks = lock(&answers.ok_at).clone();
    oks.sort();
    let mut prev = started;
    for at in oks.iter().chain(std::iter::once(&load_ended)) {
        report.longest_without_2xx = report.longest_without_2xx.max(at.duration_since(prev));
        prev = *at;
    }
    if acked.is_empty() {
        bail!("no event was acknowledged: the cluster never took load");
    }
    Ok(report)
}

fn send_loop(
    sender: usize,
    targets: &[Arc<Mutex<Option<String>>>],
    acked: &Mutex<HashSet<String>>,
    answers: &Answers,
    next_id: &AtomicU64,
    stop: &AtomicBool,
    secret: &Secret,
) {
    let Ok(client) = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    else {
        return;
    };
    // As a load balancer would: this sender's instance, else the next one up.
    let mut at = sender % targets.len();
    while !stop.load(Ordering::Relaxed) {
        let Some(url) = lock(&targets[at]).clone() else {
            at = (at + 1) % targets.len();
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let id = format!("cl-{}", next_id.fetch_add(1, Ordering::Relaxed));
        let body = format!(
            r#"{{"id":"{id}","type":"message.created","payload":{{"id":"m-{id}","message":"hi"}}}}"#
        );
        let signature = hookd_core::sign(secret, body.as_bytes());
        match client
            .post(&url)
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
        {
            Ok(r) if r.status().is_success() => {
                lock(acked).insert(id);
                lock(&answers.ok_at).push(Instant::now());
            }
            Ok(r) if r.status() == 503 => {
                answers.answered_503.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(_) => {}
            Err(_) => {
                at = (at + 1) % targets.len();
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
