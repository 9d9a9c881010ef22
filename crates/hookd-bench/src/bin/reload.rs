//! `hookd-reload-bench`: how long a running hookd takes to serve a plugin file that just
//! landed in its folder, how long a restart with many plugins takes to be ready, cold
//! (empty compiled-code cache) and warm, and the daemon's memory (RSS) with 10 plugins: idle
//! after a cold and a warm start, and at its peak while delivering a burst of events to all.
//!
//! Every plugin variant is the given component with a unique custom section appended: the
//! same code, a different content hash, so each one is really compiled (or really read from
//! the cache) and never mistaken for another.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use hookd_testkit::{Daemon, Launch, http, poll_until};
use sha2::{Digest, Sha256};

#[derive(Debug, Parser)]
#[command(about = "Measure hookd's plugin reload latency and restart-to-ready time")]
struct Args {
    /// The hookd binary (a release build).
    #[arg(long)]
    hookd: PathBuf,
    /// A small plugin component (e.g. the no-op fixture).
    #[arg(long)]
    plugin: PathBuf,
    /// Plugins installed for the restart measurement.
    #[arg(long, default_value_t = 20)]
    plugins: usize,
    /// Restarts measured, cold and warm each.
    #[arg(long, default_value_t = 5)]
    starts: usize,
    /// Plugin files landed for the reload measurement.
    #[arg(long, default_value_t = 40)]
    swaps: usize,
    /// Plugins installed for the memory measurement.
    #[arg(long, default_value_t = 10)]
    memory_plugins: usize,
    /// Events sent (and delivered to every plugin) for the loaded-memory measurement.
    #[arg(long, default_value_t = 20_000)]
    memory_events: usize,
    /// Where the temporary daemon folders go (default: the system's temp folder).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write the figures as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

const SECRET: &str = "hookd-bench-secret-0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let component = std::fs::read(&args.plugin)
        .with_context(|| format!("cannot read {}", args.plugin.display()))?;
    let parent = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => std::env::temp_dir(),
    };

    // Restart to ready with N plugins.
    let work = tempfile::tempdir_in(&parent)?;
    write_config(work.path())?;
    let plugins = work.path().join("plugins");
    std::fs::create_dir_all(&plugins)?;
    for i in 0..args.plugins {
        std::fs::write(
            plugins.join(format!("p{i}.wasm")),
            variant(&component, &format!("start-{i}")),
        )?;
        std::fs::write(plugins.join(format!("p{i}.toml")), "events = [\"*\"]\n")?;
    }
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..args.starts {
        let _ = std::fs::remove_dir_all(work.path().join("state"));
        cold.push(start_to_ready(&args.hookd, work.path(), args.plugins)?);
        warm.push(start_to_ready(&args.hookd, work.path(), args.plugins)?);
    }

    // Reload latency: a new component lands (renamed into place) while the daemon runs.
    let work = tempfile::tempdir_in(&parent)?;
    write_config(work.path())?;
    let plugins = work.path().join("plugins");
    std::fs::create_dir_all(&plugins)?;
    let target = plugins.join("swap.wasm");
    std::fs::write(&target, variant(&component, "swap-0"))?;
    std::fs::write(plugins.join("swap.toml"), "events = [\"*\"]\n")?;
    let daemon = start(&args.hookd, work.path())?;
    wait_plugins(&daemon, 1)?;
    let mut compiled = Vec::new();
    let mut cached = Vec::new();
    let known = [variant(&component, "swap-0"), variant(&component, "swap-1")];
    for i in 1..=args.swaps {
        // New code: compiled. Then code seen before: read from the cache.
        let fresh = variant(&component, &format!("swap-new-{i}"));
        compiled.push(land(&daemon, &target, &fresh)?);
        cached.push(land(&daemon, &target, &known[i % 2])?);
    }
    drop(daemon);

    // Memory with N plugins: idle after a cold start, idle after a warm one, then loaded.
    let work = tempfile::tempdir_in(&parent)?;
    write_config(work.path())?;
    let plugins = work.path().join("plugins");
    std::fs::create_dir_all(&plugins)?;
    for i in 0..args.memory_plugins {
        std::fs::write(
            plugins.join(format!("m{i}.wasm")),
            variant(&component, &format!("memory-{i}")),
        )?;
        std::fs::write(plugins.join(format!("m{i}.toml")), "events = [\"*\"]\n")?;
    }
    let idle = |daemon: &Daemon| -> anyhow::Result<f64> {
        wait_plugins(daemon, args.memory_plugins)?;
        std::thread::sleep(Duration::from_secs(2));
        Ok(memory_mb(daemon, "VmRSS"))
    };
    let daemon = start(&args.hookd, work.path())?;
    let idle_cold = idle(&daemon)?;
    stop(daemon)?;
    let daemon = start(&args.hookd, work.path())?;
    let idle_warm = idle(&daemon)?;
    let ingest = daemon.ingest;
    let sent = send_events(ingest, args.memory_events)?;
    let expected = (sent * args.memory_plugins) as u64;
    let drained = Instant::now();
    while delivered(&daemon) < expected {
        if drained.elapsed() > Duration::from_secs(300) {
            bail!("deliveries did not drain within 300 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let peak = memory_mb(&daemon, "VmHWM");
    let after = memory_mb(&daemon, "VmRSS");
    stop(daemon)?;
    println!(
        "\nmemory with {} plugins: idle after a cold start {idle_cold:.1} MB, after a warm start \
         {idle_warm:.1} MB; {sent} events x {} plugins delivered: peak {peak:.1} MB, after {after:.1} MB",
        args.memory_plugins, args.memory_plugins
    );

    let rows = [
        (
            format!("restart to ready, {} plugins, cold cache", args.plugins),
            summary(&mut cold),
        ),
        (
            format!("restart to ready, {} plugins, warm cache", args.plugins),
            summary(&mut warm),
        ),
        (
            "reload: new plugin code (compiled)".to_owned(),
            summary(&mut compiled),
        ),
        (
            "reload: known plugin code (cache)".to_owned(),
            summary(&mut cached),
        ),
    ];
    let memory = serde_json::json!({
        "plugins": args.memory_plugins,
        "idle_after_cold_start_mb": idle_cold,
        "idle_after_warm_start_mb": idle_warm,
        "events_delivered_to_each": sent,
        "peak_while_delivering_mb": peak,
        "after_delivering_mb": after,
    });
    println!(
        "\n{:<46} {:>6} {:>10} {:>10} {:>10}",
        "measurement", "n", "p50 ms", "p99 ms", "max ms"
    );
    for (name, s) in &rows {
        println!(
            "{name:<46} {:>6} {:>10.1} {:>10.1} {:>10.1}",
            s.n, s.p50_ms, s.p99_ms, s.max_ms
        );
    }
    if let Some(path) = &args.json {
        let value: serde_json::Value = rows
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    serde_json::json!({"n": s.n, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "max_ms": s.max_ms}),
                )
            })
            .chain([("memory".to_owned(), memory)])
            .collect::<serde_json::Map<_, _>>()
            .into();
        std::fs::write(path, serde_json::to_string_pretty(&value)?)?;
    }
    Ok(())
}

/// `component` with a custom section named `hookd-bench` holding `tag` appended: valid, the
/// same behaviour, a different hash.
fn variant(component: &[u8], tag: &str) -> Vec<u8> {
    let name = b"hookd-bench";
    let mut payload = Vec::new();
    leb128(&mut payload, name.len() as u64);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section
    leb128(&mut out, payload.len() as u64);
    out.extend_from_slice(&payload);
    out
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn write_config(dir: &Path) -> anyhow::Result<()> {
    std::fs::write(dir.join("secret"), SECRET)?;
    std::fs::write(
        dir.join("hookd.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [verify]\nsecrets = [\"file:secret\"]\n\n[store]\ndir = \"state\"\n\n\
         [plugins]\ndir = \"plugins\"\n\n[log]\nformat = \"json\"\nfilter = \"warn\"\n",
    )?;
    Ok(())
}

/// Spawn to `/readyz` answering 200, with every plugin loaded; then a clean stop.
fn start_to_ready(hookd: &Path, dir: &Path, plugins: usize) -> anyhow::Result<Duration> {
    let (daemon, took) = Daemon::launch(&launch(hookd, dir))?;
    wait_plugins(&daemon, plugins)?;
    stop(daemon)?;
    Ok(took)
}

/// The daemon on `dir`'s config: stderr discarded, `/readyz` asked every 2 ms while it starts
/// so restart-to-ready is measured closely.
fn launch(hookd: &Path, dir: &Path) -> Launch {
    Launch {
        keep_logs: false,
        startup_limit: LIMIT,
        ready_poll: Duration::from_millis(2),
        ..Launch::new(hookd, dir.join("hookd.toml"))
    }
}

fn start(hookd: &Path, dir: &Path) -> anyhow::Result<Daemon> {
    Ok(Daemon::launch(&launch(hookd, dir))?.0)
}

/// `field` (`VmRSS`, `VmHWM`) of the daemon's /proc status, in MB.
fn memory_mb(daemon: &Daemon, field: &str) -> f64 {
    daemon
        .proc_status_kib(field)
        .map_or(f64::NAN, |kb| kb as f64 / 1024.0)
}

/// Successful deliveries so far, all plugins together, from `/metrics`.
fn delivered(daemon: &Daemon) -> u64 {
    daemon.admin_get("/metrics").map_or(0, |(_, body)| {
        http::metric_sum(&body, "hookd_deliveries_total", &["outcome=\"ok\""]) as u64
    })
}

fn hashes(daemon: &Daemon) -> Vec<String> {
    daemon
        .admin_get("/plugins")
        .and_then(|(_, body)| serde_json::from_str::<Vec<serde_json::Value>>(&body).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p["content_hash"].as_str().map(str::to_owned))
        .collect()
}

fn wait_plugins(daemon: &Daemon, n: usize) -> anyhow::Result<()> {
    if !poll_until(LIMIT, Duration::from_millis(5), || {
        hashes(daemon).len() >= n
    }) {
        bail!("fewer than {n} plugins loaded after {LIMIT:?}");
    }
    Ok(())
}

/// Renames `bytes` into place at `target`; returns the time until `/plugins` shows it.
fn land(daemon: &Daemon, target: &Path, bytes: &[u8]) -> anyhow::Result<Duration> {
    let expected = hex::encode(Sha256::digest(bytes));
    let tmp = target.with_extension("wasm.part");
    std::fs::write(&tmp, bytes)?;
    let landed = Instant::now();
    std::fs::rename(&tmp, target)?;
    if !poll_until(LIMIT, Duration::from_millis(2), || {
        hashes(daemon).contains(&expected)
    }) {
        bail!("the new plugin did not serve within {LIMIT:?}");
    }
    Ok(landed.elapsed())
}

fn stop(daemon: Daemon) -> anyhow::Result<()> {
    daemon
        .terminate(LIMIT)
        .with_context(|| format!("hookd did not stop within {LIMIT:?}"))?;
    Ok(())
}

/// Sends `count` signed events over 4 keep-alive connections; returns how many got a 200.
fn send_events(addr: SocketAddr, count: usize) -> anyhow::Result<usize> {
    let secret = hookd_core::Secret::new(SECRET).map_err(|e| anyhow::anyhow!("{e}"))?;
    let events = hookd_bench::signed_events(&secret, "memory", count, 0)?;
    let chunks: Vec<Vec<hookd_bench::SignedEvent>> = events
        .chunks(count.div_ceil(4).max(1))
        .map(<[_]>::to_vec)
        .collect();
    let threads: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            std::thread::spawn(move || -> anyhow::Result<usize> {
                let mut stream = TcpStream::connect(addr)?;
                stream.set_read_timeout(Some(Duration::from_secs(30)))?;
                let mut reader = BufReader::new(stream.try_clone()?);
                let mut ok = 0;
                for e in chunk {
                    write!(
                        stream,
                        "POST /webhooks HTTP/1.1\r\nHost: {addr}\r\ncontent-type: application/json\r\n\
                         x-protocol-signature: {}\r\ncontent-length: {}\r\n\r\n",
                        e.signature,
                        e.body.len()
                    )?;
                    stream.write_all(&e.body)?;
                    // Status line, headers (for the length), body.
                    let mut line = String::new();
                    reader.read_line(&mut line)?;
                    ok += usize::from(line.split(' ').nth(1) == Some("200"));
                    let mut length = 0;
                    loop {
                        line.clear();
                        reader.read_line(&mut line)?;
                        if line == "\r\n" || line.is_empty() {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body)?;
                }
                Ok(ok)
            })
        })
        .collect();
    let mut ok = 0;
    for t in threads {
        ok += t
            .join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
    }
    Ok(ok)
}

struct Summary {
    n: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn summary(samples: &mut [Duration]) -> Summary {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |p: f64| ms(samples[((samples.len() as f64 - 1.0) * p).round() as usize]);
    Summary {
        n: samples.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: samples.last().map_or(0.0, |d| ms(*d)),
    }
}
