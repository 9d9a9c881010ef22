//! `hookd status`: what the running daemon's admin listener knows, for a human (or `--json`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::cli::StatusArgs;

pub fn run(args: StatusArgs) -> ExitCode {
    let result = admin_address(&args).and_then(|addr| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(fetch(addr))
    });
    match result {
        Ok(status) => {
            if args.json {
                println!("{status:#}");
            } else {
                print!("{}", render(&status, now_ms()));
            }
            if status["ready"] == true {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--admin`, else `[admin] listen` from the config. Only that key is read, so the command
/// works without access to the secrets the config names.
fn admin_address(args: &StatusArgs) -> anyhow::Result<SocketAddr> {
    if let Some(addr) = args.admin {
        return Ok(addr);
    }
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read `{}`", args.config.display()))?;
    let raw = hookd_config::RawConfig::parse(&text, Some(&args.config))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let listen = raw.admin.listen.get_ref().trim().to_owned();
    anyhow::ensure!(
        !listen.is_empty(),
        "the admin listener is off in `{}` (`[admin] listen = \"\"`)",
        args.config.display()
    );
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("`[admin] listen` = `{listen}` is not an address"))?;
    // A wildcard listen address is reached on loopback.
    Ok(match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        ip if ip.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port())),
        _ => addr,
    })
}

async fn fetch(addr: SocketAddr) -> anyhow::Result<Value> {
    let url = format!("http://{addr}/status");
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(10), client.get(url.parse()?))
            .await
            .with_context(|| format!("no answer from {url} within 10 s"))?
            .with_context(|| {
                format!("cannot reach hookd's admin listener at {addr}; is hookd running?")
            })?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    serde_json::from_slice(&body).with_context(|| format!("{url} did not answer JSON"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ago(now_ms: u64, at_ms: u64) -> String {
    duration(now_ms.saturating_sub(at_ms) / 1000) + " ago"
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The human form.
pub fn render(s: &Value, now_ms: u64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "hookd {}, up {}, {}",
        s["version"].as_str().unwrap_or("?"),
        duration(n(&s["uptime_secs"])),
        if s["ready"] == true {
            "ready"
        } else {
            "NOT READY"
        }
    );
    let _ = writeln!(
        out,
        "store: writer {}, {} events ({} KiB) waiting to be committed",
        if s["store"]["writer_running"] == true {
            "running"
        } else {
            "STOPPED"
        },
        n(&s["store"]["queue_depth"]),
        n(&s["store"]["queue_bytes"]) / 1024
    );
    if n(&s["connections_refused"]) > 0 {
        let _ = writeln!(
            out,
            "connections refused (one client over its share of the slots): {}",
            n(&s["connections_refused"])
        );
    }
    let _ = writeln!(
        out,
        "events: {} received since start ({} duplicates, {} with no subscriber)",
        n(&s["events"]["received"]),
        n(&s["events"]["duplicate"]),
        n(&s["events"]["unrouted"])
    );
    let d = &s["deliveries"];
    if let Some(error) = d["error"].as_str() {
        let _ = writeln!(out, "deliveries: cannot read the store: {error}");
    } else {
        let _ = writeln!(
            out,
            "deliveries: {} pending, {} dead",
            n(&d["pending"]),
            n(&d["dead"])
        );
        for p in d["by_plugin"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  {:<20} {} pending, {} dead, {:.1} s behind{}",
                p["plugin"].as_str().unwrap_or("?"),
                n(&p["pending"]),
                n(&p["dead"]),
                p["lag_seconds"].as_f64().unwrap_or(0.0),
                if p["paused"] == true {
                    " (paused: plugin not loaded)"
                } else {
                    ""
                }
            );
        }
    }
    let rejected = s["rejected"].as_object().filter(|r| !r.is_empty());
    match rejected {
        None => out.push_str("rejected: none since start\n"),
        Some(r) => {
            let list: Vec<String> = r.iter().map(|(k, v)| format!("{k} {}", n(v))).collect();
            let _ = writeln!(out, "rejected since start: {}", list.join(", "));
        }
    }
    let recent = s["recent_rejections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !recent.is_empty() {
        out.push_str("recent rejections (newest last):\n");
        for r in recent.iter().rev().take(5).rev() {
            let _ = writeln!(
                out,
                "  {:<12} {}",
                ago(now_ms, n(&r["at_ms"])),
                r["reason"].as_str().unwrap_or("?")
            );
        }
    }
    let plugins = s["plugins"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "plugins: {}", plugins.len());
    for p in &plugins {
        let name = p["name"].as_str().unwrap_or("?");
        if p["loaded"] == true {
            let events: Vec<&str> = p["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let _ = writeln!(
                out,
                "  {name:<20} {}  events: {}  loaded {}",
                p["content_hash"]
                    .as_str()
                    .unwrap_or("")
                    .get(..12)
                    .unwrap_or(""),
                events.join(", "),
                ago(now_ms, n(&p["loaded_at_ms"]))
            );
        } else {
            let _ = writeln!(out, "  {name:<20} NOT LOADED");
        }
        if let Some(error) = p["last_error"].as_str() {
            let _ = writeln!(
                out,
                "  {:<20} last reload refused {}: {error}",
                "",
                ago(now_ms, n(&p["last_error_at_ms"]))
            );
        }
    }
    out
}
