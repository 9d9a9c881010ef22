//! `cargo xtask bench`: the ingest table.
//!
//! Every system in [`SYSTEMS`] runs one after another in the same run, each started fresh on
//! `127.0.0.1:0` in a new temp dir under `target/bench/` (config, store, output log), driven
//! by the same `hookd-loadgen` with the same settings, then killed. The first system is the
//! ceiling, a bare warp endpoint that only verifies the signature; every other row is
//! reported as a ratio to the ceiling measured at the same connection count in the same run.
//! The table goes to stdout, everything else to `target/bench/ingest.json`; any non-2xx
//! answer, error or undelivered event fails the run after both are written.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::json;

use super::Paths;
use super::machine::{commit, disk_sync_ms, filesystem, load_average, machine};
use super::measure::measure;
use super::needs::{CEILING, LOADGEN, Need, provide};
use super::supervise::{catch_signals, interrupted};
use super::systems::{INGEST_BASELINE, INGEST_CPU_HEAVY, SYSTEMS, WEBHOOK_BASELINE};
use super::table::{Row, print_table};

/// How hard to push.
pub(super) struct Settings {
    pub(super) connections: Vec<usize>,
    pub(super) requests: usize,
    pub(super) warmup: usize,
    pub(super) duration_secs: u64,
}

impl Settings {
    fn full() -> Self {
        Self {
            connections: vec![16, 64, 256],
            requests: 200_000,
            warmup: 10_000,
            duration_secs: 20,
        }
    }

    /// A smoke run for CI: every system, small counts.
    fn quick() -> Self {
        Self {
            connections: vec![16],
            requests: 5_000,
            warmup: 500,
            duration_secs: 10,
        }
    }

    /// The longest a loadgen run may take before it is killed: signing, the warm-up and the
    /// measured phase (each bounded by the duration), the last requests' timeout, slack.
    pub(super) fn loadgen_limit(&self) -> Duration {
        Duration::from_secs(2 * self.duration_secs + 10 + 30)
    }
}

const USAGE: &str = "usage: cargo xtask bench [--quick] [--connections N[,N...]]\n\
    \n  --quick            smoke run: 16 connections, 5,000 requests per system\
    \n  --connections LIST connection counts to run every system at (default 16,64,256)";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut settings = Settings::full();
    let mut connections = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => settings = Settings::quick(),
            "--connections" => {
                let list = args.next().context("--connections needs a value")?;
                connections = Some(parse_connections(list)?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if let Some(connections) = connections {
        settings.connections = connections;
    }
    let paths = Paths::new()?;
    catch_signals();
    let begun = Instant::now();

    // Build what the systems need; a system whose needs fail is skipped, not fatal, so the
    // harness keeps working while a system is being written.
    let mut needs: Vec<Need> = vec![LOADGEN];
    for need in SYSTEMS.iter().flat_map(|s| s.needs) {
        if !needs.contains(need) {
            needs.push(*need);
        }
    }
    let mut missing: Vec<(Need, String)> = Vec::new();
    let mut built = Vec::new();
    for need in needs {
        interrupted()?;
        if let Err(why) = provide(&paths, need, &mut built) {
            eprintln!("bench: {why}");
            missing.push((need, why));
        }
    }
    if let Some((_, why)) = missing.iter().find(|(n, _)| *n == LOADGEN || *n == CEILING) {
        bail!("the load generator and the ceiling are required: {why}");
    }

    std::fs::create_dir_all(paths.runs())
        .with_context(|| format!("cannot create {}", paths.runs().display()))?;
    let filesystem = filesystem(&paths.runs());
    if filesystem
        .as_deref()
        .is_some_and(|fs| fs == "tmpfs" || fs == "ramfs")
    {
        eprintln!(
            "bench: warning: {} is on {}: fsync costs nothing there, so durable figures \
             are better than on a disk",
            paths.runs().display(),
            filesystem.as_deref().unwrap_or_default()
        );
    }
    let machine = machine();
    let disk_sync = disk_sync_ms(&paths.runs())?;
    let mut rows = Vec::new();
    for &connections in &settings.connections {
        for system in SYSTEMS {
            interrupted()?;
            if let Some((_, why)) = missing.iter().find(|(n, _)| system.needs.contains(n)) {
                eprintln!("bench: skipping `{}`: {why}", system.name);
                rows.push(Row::skipped(system, connections, why));
                continue;
            }
            eprintln!("bench: {} at {connections} connections…", system.name);
            let row = match measure(&paths, system, connections, &settings) {
                Ok(report) => Row::measured(system, connections, report),
                Err(e) => {
                    interrupted()?;
                    eprintln!("bench: {} failed: {e:#}", system.name);
                    Row::failed(system, connections, &format!("{e:#}"))
                }
            };
            rows.push(row);
        }
    }
    // Each row against the ceiling measured at the same connection count in this run; a
    // row with failed requests gets no ratio, its throughput is not the ingest path's.
    let ceilings: Vec<(usize, f64)> = rows
        .iter()
        .filter(|r| r.ceiling)
        .filter_map(|r| Some((r.connections, r.requests_per_sec()?)))
        .collect();
    let webhook: Vec<(usize, f64)> = rows
        .iter()
        .filter(|r| r.system == WEBHOOK_BASELINE && !r.is_failure())
        .filter_map(|r| Some((r.connections, r.requests_per_sec()?)))
        .collect();
    for row in rows.iter_mut().filter(|r| !r.is_failure()) {
        row.ratio = ceilings
            .iter()
            .find(|(c, _)| *c == row.connections)
            .and_then(|(_, base)| Some(row.requests_per_sec()? / base));
        row.ratio_webhook = webhook
            .iter()
            .find(|(c, _)| *c == row.connections)
            .and_then(|(_, base)| Some(row.requests_per_sec()? / base));
    }

    print_table(&rows);
    for &connections in &settings.connections {
        let at = |name: &str| {
            rows.iter()
                .find(|r| r.system == name && r.connections == connections && !r.is_failure())
                .and_then(|r| Some((r.requests_per_sec()?, r.report()?["p99_ms"].as_f64()?)))
        };
        if let (Some((base, base_p99)), Some((busy, busy_p99))) =
            (at(INGEST_BASELINE), at(INGEST_CPU_HEAVY))
        {
            println!(
                "- {connections} connections: with a CPU-heavy plugin on every event, durable \
                 ingest kept {:.0}% of its rate ({busy:.0} against {base:.0} req/s), p99 \
                 {busy_p99:.1} ms against {base_p99:.1} ms",
                busy / base * 100.0
            );
        }
    }
    println!(
        "- the store's disk: 8 KiB written and fdatasync'd in p50 {:.2} ms, p99 {:.2} ms",
        disk_sync.0, disk_sync.1
    );
    // The outgoing-HTTP row: its own unit (a plugin's requests out), its own small table.
    let quick = settings.requests < Settings::full().requests;
    let outgoing = match super::outgoing::measure(&paths, quick, &mut built) {
        Ok(figures) => {
            super::outgoing::print(&figures);
            if let Err(missed) = super::outgoing::check(&figures) {
                println!("- {missed:#}");
            }
            Ok(figures)
        }
        Err(e) => {
            interrupted()?;
            eprintln!("bench: the outgoing HTTP row failed: {e:#}");
            Err(format!("{e:#}"))
        }
    };
    let out = paths.runs().join("ingest.json");
    let results = json!({
        "machine": machine,
        "store_filesystem": filesystem,
        "store_disk_sync_ms": { "p50": disk_sync.0, "p99": disk_sync.1 },
        "load_average_after": load_average(),
        "commit": commit(&paths.root),
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "seconds": begun.elapsed().as_secs_f64(),
        "settings": {
            "connections": settings.connections,
            "requests": settings.requests,
            "warmup_requests": settings.warmup,
            "duration_secs": settings.duration_secs,
        },
        "results": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "outgoing": match &outgoing {
            Ok(figures) => figures.clone(),
            Err(why) => json!({ "failed": why }),
        },
    });
    std::fs::write(&out, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "bench: written to {} ({:.0} s in all)",
        out.display(),
        begun.elapsed().as_secs_f64()
    );

    if let Err(why) = &outgoing {
        bail!("the outgoing HTTP row failed: {why}");
    }
    let failed: Vec<_> = rows.iter().filter(|r| r.is_failure()).collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} runs failed or had non-2xx answers or errors (see the table)",
            failed.len(),
            rows.len()
        );
    }
    Ok(())
}

fn parse_connections(list: &str) -> anyhow::Result<Vec<usize>> {
    list.split(',')
        .map(|n| match n.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("--connections `{list}`: expected positive numbers separated by commas"),
        })
        .collect()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_lists_are_positive_numbers() {
        assert_eq!(
            parse_connections("16,64, 256").ok(),
            Some(vec![16, 64, 256])
        );
        assert!(parse_connections("0").is_err());
        assert!(parse_connections("16,,64").is_err());
        assert!(parse_connections("many").is_err());
    }
}
