//! `cargo xtask bench`: the ingest benchmark.
//!
//! Systems run one after another, each started fresh on `127.0.0.1:0`, driven by the same
//! `hookd-loadgen` with the same events, sizes and connection counts, then stopped. The
//! ceiling is a bare warp endpoint that only verifies the signature.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// A system under test: how to start it and which stdout line names its address.
struct System {
    name: &'static str,
    start: fn(&Workspace, &Path) -> anyhow::Result<Command>,
    /// Prefix of the stdout line that ends with the bound `IP:PORT`.
    ready_line: &'static str,
    /// For a system with a plugin: the plugin whose completed deliveries to wait for, read
    /// from the admin listener's metrics.
    delivered_by: Option<&'static str>,
}

fn hookd_config(dir: &Path, admin: &str) -> anyhow::Result<PathBuf> {
    let config = dir.join("hookd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"{admin}\"\n\
             [verify]\nsecrets = [\"file:secret\"]\n[store]\ndir = \"state\"\n\
             [plugins]\ndir = \"plugins\"\n[log]\nformat = \"json\"\nfilter = \"info\"\n"
        ),
    )?;
    Ok(config)
}

const SYSTEMS: &[System] = &[
    System {
        name: "ceiling (warp, verify only)",
        start: |ws, dir| {
            let mut c = Command::new(ws.bin("hookd-ceiling"));
            c.args(["--listen", "127.0.0.1:0", "--secret-file"])
                .arg(dir.join("secret"));
            Ok(c)
        },
        ready_line: "listening on ",
        delivered_by: None,
    },
    System {
        name: "hookd durable ingest",
        start: |ws, dir| {
            let config = hookd_config(dir, "")?;
            let mut c = Command::new(ws.bin("hookd"));
            c.args(["serve", "--config"]).arg(&config);
            Ok(c)
        },
        ready_line: "ingest listening on ",
        delivered_by: None,
    },
    System {
        name: "hookd + no-op plugin, delivered",
        start: |ws, dir| {
            let config = hookd_config(dir, "127.0.0.1:0")?;
            let plugins = dir.join("plugins");
            std::fs::create_dir_all(&plugins)?;
            std::fs::copy(
                ws.root
                    .join("plugins/target/wasm32-wasip2/release/fixture_noop.wasm"),
                plugins.join("noop.wasm"),
            )?;
            std::fs::write(plugins.join("noop.toml"), "events = [\"*\"]\n")?;
            let mut c = Command::new(ws.bin("hookd"));
            c.args(["serve", "--config"]).arg(&config);
            Ok(c)
        },
        ready_line: "ingest listening on ",
        delivered_by: Some("noop"),
    },
];

struct Workspace {
    root: PathBuf,
}

impl Workspace {
    fn bin(&self, name: &str) -> PathBuf {
        self.root.join("target/release").join(name)
    }
}

struct Settings {
    connections: Vec<usize>,
    requests: usize,
    warmup: usize,
    duration_secs: u64,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let settings = if quick {
        Settings {
            connections: vec![32],
            requests: 5_000,
            warmup: 500,
            duration_secs: 10,
        }
    } else {
        Settings {
            connections: vec![16, 64, 256],
            requests: 100_000,
            warmup: 5_000,
            duration_secs: 30,
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the workspace")?
        .to_owned();
    let ws = Workspace { root };

    eprintln!("building the plugins…");
    crate::plugins::build()?;
    eprintln!("building release binaries…");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&ws.root)
        .args(["build", "--release", "-p", "hookd", "-p", "hookd-bench"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("release build failed");
    }

    let mut rows = Vec::new();
    for &connections in &settings.connections {
        for system in SYSTEMS {
            eprintln!("{} with {connections} connections…", system.name);
            let report = measure(&ws, system, connections, &settings)
                .with_context(|| format!("benchmarking {}", system.name))?;
            rows.push(json!({"system": system.name, "connections": connections, "report": report}));
        }
    }
    print_table(&rows);
    let out = ws.root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let machine = machine();
    std::fs::write(
        out.join("ingest.json"),
        serde_json::to_string_pretty(&json!({"machine": machine, "results": rows}))?,
    )?;
    eprintln!("written to {}", out.join("ingest.json").display());
    Ok(())
}

/// Starts `system`, drives it, stops it: always, also on error.
fn measure(
    ws: &Workspace,
    system: &System,
    connections: usize,
    settings: &Settings,
) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!("hookd-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("secret"), "hookd-bench-secret-0123456789abcdef")?;
    let mut command = (system.start)(ws, &dir)?;
    let child = command
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", system.name))?;
    let mut guard = Running(child);
    let lines = stdout_lines(&mut guard.0)?;
    let addr = wait_line(&lines, system.ready_line)?;
    let admin = match system.delivered_by {
        Some(_) => Some(wait_line(&lines, "admin listening on ")?),
        None => None,
    };
    let started = Instant::now();
    let output = Command::new(ws.bin("hookd-loadgen"))
        .args(["--url", &format!("http://{addr}/webhooks"), "--secret-file"])
        .arg(dir.join("secret"))
        .args([
            "--connections",
            &connections.to_string(),
            "--requests",
            &settings.requests.to_string(),
            "--warmup-requests",
            &settings.warmup.to_string(),
            "--duration",
            &settings.duration_secs.to_string(),
            "--json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run hookd-loadgen")?;
    if !output.status.success() {
        bail!("hookd-loadgen failed");
    }
    let mut report: Value = serde_json::from_slice(&output.stdout)?;
    if let (Some(plugin), Some(admin)) = (system.delivered_by, admin) {
        // Every acknowledged request, warm-up included, must be delivered.
        let expected = report["ok"].as_u64().unwrap_or(0) + settings.warmup as u64;
        let metric = format!("hookd_deliveries_total{{plugin=\"{plugin}\",outcome=\"ok\"}} ");
        let deadline = Instant::now() + Duration::from_secs(120);
        let delivered = loop {
            let n = scrape(&admin, &metric).unwrap_or(0);
            if n >= expected || Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let seconds = started.elapsed().as_secs_f64();
        report["delivered"] = json!(delivered);
        report["delivered_per_sec"] = json!(delivered as f64 / seconds);
        report["delivered_seconds"] = json!(seconds);
    }
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// Reads the value of the metric line starting with `prefix` from `GET /metrics`.
fn scrape(admin: &str, prefix: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).ok()?;
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nhost: {admin}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Kills the child when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child's stdout lines, as they come.
fn stdout_lines(child: &mut Child) -> anyhow::Result<std::sync::mpsc::Receiver<String>> {
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Waits for the line starting with `prefix` and returns the rest (an address).
fn wait_line(lines: &std::sync::mpsc::Receiver<String>, prefix: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .with_context(|| format!("no `{prefix}` line within 30 s"))?;
        if let Some(rest) = line.strip_prefix(prefix) {
            return Ok(rest.trim().to_owned());
        }
    }
}

fn print_table(rows: &[Value]) {
    println!(
        "\n| system | connections | requests | req/s | p50 ms | p99 ms | non-2xx + errors | vs ceiling | delivered/s |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        let r = &row["report"];
        let ceiling = rows
            .iter()
            .find(|c| {
                c["connections"] == row["connections"]
                    && c["system"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("ceiling"))
            })
            .and_then(|c| c["report"]["requests_per_sec"].as_f64());
        let rps = r["requests_per_sec"].as_f64().unwrap_or(0.0);
        let ratio = ceiling.map_or("-".to_owned(), |c| format!("{:.0}%", 100.0 * rps / c));
        let delivered = r["delivered_per_sec"]
            .as_f64()
            .map_or("-".to_owned(), |d| format!("{d:.0}"));
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {delivered} |",
            row["system"].as_str().unwrap_or("?"),
            row["connections"],
            r["requests"],
            rps,
            r["p50_ms"].as_f64().unwrap_or(0.0),
            r["p99_ms"].as_f64().unwrap_or(0.0),
            r["non_2xx"].as_u64().unwrap_or(0) + r["errors"].as_u64().unwrap_or(0),
            ratio
        );
    }
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
    })
}
