//! `cargo xtask bench`'s outgoing-HTTP row: a plugin's outgoing requests per second against a
//! local keep-alive server, next to a plain keep-alive client (`hookd-loadgen`) against the
//! same server, measured in the same run by `hookd-outgoing-bench` (see its docs), with the
//! share of requests sent on a reused connection. Also `cargo xtask bench outgoing [--quick]`
//! alone.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{HOOKD, Need, Paths, provide, run_bounded};

const OUTGOING_BENCH: Need = Need::Binary {
    package: "hookd-bench",
    bin: "hookd-outgoing-bench",
    probe: &[],
};
const LOADGEN: Need = Need::Binary {
    package: "hookd-bench",
    bin: "hookd-loadgen",
    probe: &[],
};
const HTTP_POSTER: Need = Need::Plugin {
    package: "fixture-http-poster",
    file: "fixture_http_poster.wasm",
};

/// Requests each side sends in a full run and in a quick one.
const FULL_REQUESTS: u64 = 100_000;
const QUICK_REQUESTS: u64 = 5_000;

/// The goals the issue set: the plugin at half the plain client's rate or better, nine in
/// ten of its requests on a reused connection.
const GOAL_RATIO: f64 = 0.5;
const GOAL_REUSED: f64 = 0.9;

/// `cargo xtask bench outgoing [--quick]`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = match args {
        [] => false,
        [q] if q == "--quick" => true,
        _ => bail!("usage: cargo xtask bench outgoing [--quick]"),
    };
    super::catch_signals();
    let paths = Paths::new()?;
    let mut built = Vec::new();
    let figures = measure(&paths, quick, &mut built)?;
    print(&figures);
    check(&figures)
}

/// Builds what the row needs and measures it; writes `target/bench/outgoing.json`.
pub(crate) fn measure(
    paths: &Paths,
    quick: bool,
    built: &mut Vec<(&'static str, Result<(), String>)>,
) -> anyhow::Result<Value> {
    for need in [HOOKD, LOADGEN, OUTGOING_BENCH, HTTP_POSTER] {
        provide(paths, need, built).map_err(anyhow::Error::msg)?;
    }
    let runs = paths.target.join("bench");
    std::fs::create_dir_all(&runs)?;
    let out = runs.join("outgoing.json");
    let _ = std::fs::remove_file(&out);
    let requests = if quick { QUICK_REQUESTS } else { FULL_REQUESTS };
    eprintln!("bench: outgoing HTTP, a plugin against a plain keep-alive client…");
    let status = run_bounded(
        Command::new(paths.bin("hookd-outgoing-bench"))
            .arg("--hookd")
            .arg(paths.bin("hookd"))
            .arg("--loadgen")
            .arg(paths.bin("hookd-loadgen"))
            .arg("--plugin")
            .arg(paths.plugin("fixture_http_poster.wasm"))
            .arg("--dir")
            .arg(&runs)
            .args(["--requests", &requests.to_string()])
            .arg("--json")
            .arg(&out)
            .stdout(std::process::Stdio::null()),
        Duration::from_secs(900),
    )?;
    if !status.success() {
        bail!("hookd-outgoing-bench failed: {status}");
    }
    let text =
        std::fs::read_to_string(&out).with_context(|| format!("cannot read {}", out.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// The row, as a small table of its own (its unit is outgoing requests, not webhooks).
pub(crate) fn print(figures: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let plain = &figures["plain_client"];
    let plugin = &figures["plugin"];
    println!();
    println!(
        "| outgoing HTTP to a local keep-alive server, {} at once | requests | req/s | on reused connections | CPU µs per request: client, server | vs plain client |",
        figures["connections"]
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| plain keep-alive client (hookd-loadgen) | {} | {:.0} | {:.2}% | {:.0}, {:.0} | 100% |",
        plain["requests"],
        f(&plain["requests_per_sec"]),
        100.0 * f(&plain["reused_share"]),
        f(&plain["client_cpu_us_per_request"]),
        f(&plain["sink_cpu_us_per_request"]),
    );
    println!(
        "| plugin in hookd (http-poster, {} requests per delivery) | {} | {:.0} | {:.2}% | {:.0}, {:.0} | {:.0}% |",
        figures["requests_per_event"],
        plugin["requests"],
        f(&plugin["requests_per_sec"]),
        100.0 * f(&plugin["reused_share"]),
        f(&plugin["client_cpu_us_per_request"]),
        f(&plugin["sink_cpu_us_per_request"]),
        100.0 * f(&figures["ratio"]),
    );
}

/// Fails when the plugin missed either goal.
pub(crate) fn check(figures: &Value) -> anyhow::Result<()> {
    let ratio = figures["ratio"].as_f64().unwrap_or(0.0);
    let reused = figures["plugin"]["reused_share"].as_f64().unwrap_or(0.0);
    if ratio < GOAL_RATIO || reused < GOAL_REUSED {
        bail!(
            "outgoing HTTP: the plugin reached {:.0}% of the plain client with {:.1}% reused; \
             the goals are {:.0}% and {:.0}%",
            ratio * 100.0,
            reused * 100.0,
            GOAL_RATIO * 100.0,
            GOAL_REUSED * 100.0
        );
    }
    Ok(())
}
