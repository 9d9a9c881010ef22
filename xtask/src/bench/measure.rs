//! One system at one connection count: started in a fresh temp dir, driven by
//! `hookd-loadgen`, its background work awaited (commands counted, deliveries scraped), stopped.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hookd_testkit::http;
use hookd_testkit::process::{ProcessGroup, Supervised, own_group_and_die_with_us};
use serde_json::{Value, json};

use super::Paths;
use super::ingest::Settings;
use super::supervise::{interrupted, stop_requested};
use super::systems::{SECRET, System};

/// Starts `system`, drives it with the load generator, stops it: always, also on error.
pub(super) fn measure(
    paths: &Paths,
    system: &System,
    connections: usize,
    settings: &Settings,
) -> anyhow::Result<Value> {
    // Under target/, not the system temp dir: /tmp is often tmpfs, where fsync costs nothing
    // and a durable store would look faster than it is on a disk.
    let dir = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(paths.runs())
        .with_context(|| format!("cannot make a temp dir in {}", paths.runs().display()))?;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).context("cannot write the secret file")?;
    let mut command = (system.start)(paths, dir.path())?;
    command.current_dir(dir.path()).stdin(Stdio::null());
    // Declared after `dir`, so it is dropped (killed) before the dir is removed.
    let mut sut = Supervised::spawn(command, system.name, dir.path().join("output.log"))?;
    let stop = stop_requested;
    let addr = sut.wait_for_addr(system.ready, Duration::from_secs(30), &stop)?;
    let admin = match system.delivered_by {
        Some(_) => {
            Some(sut.wait_for_addr("admin listening on ", Duration::from_secs(30), &stop)?)
        }
        None => None,
    };

    let mut loadgen = Command::new(paths.bin("hookd-loadgen"));
    loadgen
        .args(["--url", &format!("http://{addr}{}", system.path)])
        .arg("--secret-file")
        .arg(&secret)
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
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    own_group_and_die_with_us(&mut loadgen);
    let mut loadgen = ProcessGroup(loadgen.spawn().context("cannot start hookd-loadgen")?);
    let deadline = Instant::now() + settings.loadgen_limit();
    let status = loop {
        if let Some(status) = loadgen.0.try_wait()? {
            break status;
        }
        interrupted()?;
        if Instant::now() > deadline {
            bail!(
                "hookd-loadgen ran longer than {:?}; killed",
                settings.loadgen_limit()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let load_ended = Instant::now();
    let mut stdout = String::new();
    if let Some(mut out) = loadgen.0.stdout.take() {
        out.read_to_string(&mut stdout)
            .context("cannot read hookd-loadgen's output")?;
    }
    if !status.success() {
        bail!("hookd-loadgen failed ({status})");
    }
    let mut report: Value =
        serde_json::from_str(&stdout).context("hookd-loadgen's output is not its JSON report")?;
    if let Some(status) = sut.exited()? {
        bail!(
            "{} exited during the run ({status}); its last lines:\n{}",
            system.name,
            sut.tail()
        );
    }

    if let Some(file) = system.commands_counted_in {
        // The background runs lag behind the answers: wait until the count stops growing.
        let path = dir.path().join(file);
        let count = || {
            std::fs::read(&path)
                .map(|b| b.iter().filter(|&&c| c == b'\n').count())
                .unwrap_or(0)
        };
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let warmup_ok =
            n(&report["warmup"]["requests"]).saturating_sub(n(&report["warmup"]["non_2xx"]));
        let expected = n(&report["ok"]) + warmup_ok;
        let mut last = count();
        let limit = Instant::now() + Duration::from_secs(60);
        loop {
            interrupted()?;
            std::thread::sleep(Duration::from_millis(500));
            let now = count();
            if now == last && now as u64 >= expected || Instant::now() > limit {
                break;
            }
            if now == last {
                // Not growing, and short of the acknowledged count: give it one more second.
                std::thread::sleep(Duration::from_secs(1));
                if count() == now {
                    break;
                }
            }
            last = count();
        }
        report["commands_ran"] = json!(count());
        report["commands_expected"] = json!(expected);
    }
    if let (Some(plugin), Some(admin)) = (system.delivered_by, admin) {
        // Every event acknowledged, warm-up included, must reach the plugin.
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let warmup_ok =
            n(&report["warmup"]["requests"]).saturating_sub(n(&report["warmup"]["non_2xx"]));
        let expected = n(&report["ok"]) + warmup_ok;
        let metric = format!("hookd_deliveries_total{{plugin=\"{plugin}\",outcome=\"ok\"}} ");
        let limit = Duration::from_secs(120);
        let admin: SocketAddr = admin
            .parse()
            .with_context(|| format!("the admin address `{admin}` does not parse"))?;
        let delivered = loop {
            let n = scrape(admin, &metric).unwrap_or(0);
            if n >= expected || load_ended.elapsed() > limit {
                break n;
            }
            interrupted()?;
            if let Some(status) = sut.exited()? {
                bail!(
                    "{} exited while delivering ({status}); its last lines:\n{}",
                    system.name,
                    sut.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let lag = load_ended.elapsed().as_secs_f64();
        // From the warm-up's first request to the last delivery.
        let window = report["warmup"]["seconds"].as_f64().unwrap_or(0.0)
            + report["seconds"].as_f64().unwrap_or(0.0)
            + lag;
        report["delivered"] = json!(delivered);
        report["delivered_expected"] = json!(expected);
        report["delivered_lag_seconds"] = json!(lag);
        report["delivered_per_sec"] = json!(delivered as f64 / window.max(f64::EPSILON));
    }
    drop(sut);
    drop(dir);
    Ok(report)
}

/// Reads the value of the metric line starting with `prefix` from `GET /metrics`.
fn scrape(admin: SocketAddr, prefix: &str) -> Option<u64> {
    let (_, text) = http::get(admin, "/metrics")?;
    http::metric_value(&text, prefix).map(|v| v as u64)
}
