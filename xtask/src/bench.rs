//! `cargo xtask bench`: the ingest benchmark.
//!
//! Every system in [`SYSTEMS`] runs one after another in the same run, each started fresh on
//! `127.0.0.1:0` in a new temp dir under `target/bench/` (config, store, output log), driven
//! by the same `hookd-loadgen` with the same settings, then killed. The first system is the
//! ceiling, a bare warp endpoint that only verifies the signature; every other row is
//! reported as a ratio to the ceiling measured at the same connection count in the same run.
//! The table goes to stdout, everything else to `target/bench/ingest.json`; any non-2xx
//! answer, error or undelivered event fails the run after both are written.
//!
//! **Invariant:** whatever this starts, it stops: on success, on error, on Ctrl-C / SIGTERM
//! (children run in their own process group, so the signal reaches only us and we kill them)
//! and, on Linux, even if this process is killed outright (children get `PR_SET_PDEATHSIG`).
//! Every load is bounded in count and in time.

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hookd_testkit::http;
use hookd_testkit::process::{ProcessGroup, Supervised, own_group_and_die_with_us};
use serde_json::{Value, json};

/// A system under test. Adding one (another webhook receiver, hookd with other settings) is
/// one entry in [`SYSTEMS`].
struct System {
    name: &'static str,
    /// What must be built or installed first; if any is missing the system is skipped.
    needs: &'static [Need],
    /// Writes the system's files into its fresh `dir` (which already holds the webhook
    /// secret in `secret`) and returns the command that starts it there.
    start: fn(&Paths, &Path) -> anyhow::Result<Command>,
    /// The text right before the ingest address in the stdout or stderr line announcing it.
    ready: &'static str,
    /// The ingest path, appended to the address.
    path: &'static str,
    /// For a system with plugins: the plugin whose completed deliveries are awaited after the
    /// load, read from `hookd_deliveries_total` on the admin listener.
    delivered_by: Option<&'static str>,
    /// For a system that runs a command per event in the background: the file each run
    /// appends a line to, counted after the load (commands that really ran).
    commands_counted_in: Option<&'static str>,
}

/// Something a system needs before it can run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Need {
    /// A binary of this workspace, built with `cargo build --release -p PACKAGE`, that must
    /// answer `PROBE... --help` successfully (so a subcommand not written yet is noticed).
    Binary {
        package: &'static str,
        bin: &'static str,
        probe: &'static [&'static str],
    },
    /// A plugin of the `plugins/` workspace, built for `wasm32-wasip2`.
    Plugin {
        package: &'static str,
        file: &'static str,
    },
    /// A program from a Debian package, installed with apt-get when missing.
    Debian {
        package: &'static str,
        binary: &'static str,
    },
}

/// adnanh/webhook, the receiver users would pick instead of hookd.
const WEBHOOK: Need = Need::Debian {
    package: "webhook",
    binary: "/usr/bin/webhook",
};

/// adnanh/webhook in `dir`: one hook `protocol` whose rule checks `X-Protocol-Signature` as
/// an HMAC-SHA256 of the body, answering 401 when it does not match. `sync`: runs `/bin/true`
/// and answers with its output (the command's completion is in the answer); otherwise the
/// default: answer at once, run the command in the background, here a script that appends a
/// line to `ran` so the runs can be counted.
fn webhook_serve(dir: &Path, sync: bool) -> anyhow::Result<Command> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let command = if sync {
        "/bin/true".to_owned()
    } else {
        let script = dir.join("ran.sh");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho x >> '{}'\n", dir.join("ran").display()),
        )?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        script.display().to_string()
    };
    let hooks = json!([{
        "id": "protocol",
        "execute-command": command,
        "include-command-output-in-response": sync,
        "trigger-rule-mismatch-http-response-code": 401,
        "trigger-rule": {
            "match": {
                "type": "payload-hmac-sha256",
                "secret": SECRET,
                "parameter": { "source": "header", "name": "X-Protocol-Signature" }
            }
        }
    }]);
    std::fs::write(
        dir.join("hooks.json"),
        serde_json::to_string_pretty(&hooks)?,
    )?;
    let mut c = Command::new("/usr/bin/webhook");
    c.arg("-hooks")
        .arg(dir.join("hooks.json"))
        .args(["-ip", "127.0.0.1", "-port", &port.to_string()])
        // Without -verbose it prints nothing, not even the address it serves on. It then logs
        // each request, as hookd logs each event.
        .arg("-verbose");
    Ok(c)
}

const CEILING: Need = Need::Binary {
    package: "hookd-bench",
    bin: "hookd-ceiling",
    probe: &[],
};
const LOADGEN: Need = Need::Binary {
    package: "hookd-bench",
    bin: "hookd-loadgen",
    probe: &[],
};
pub(crate) const HOOKD: Need = Need::Binary {
    package: "hookd",
    bin: "hookd",
    probe: &["serve"],
};
const RELOAD_BENCH: Need = Need::Binary {
    package: "hookd-bench",
    bin: "hookd-reload-bench",
    probe: &[],
};
const NOOP_PLUGIN: Need = Need::Plugin {
    package: "fixture-noop",
    file: "fixture_noop.wasm",
};
const CPU_HEAVY_PLUGIN: Need = Need::Plugin {
    package: "fixture-cpu-heavy",
    file: "fixture_cpu_heavy.wasm",
};
/// The row the CPU-heavy one is compared with: ingest with nothing subscribed.
const INGEST_BASELINE: &str = "hookd durable ingest";
const INGEST_CPU_HEAVY: &str = "hookd + CPU-heavy plugin, ingest";

/// The systems, in the order they run at each connection count. The first is the ceiling.
const SYSTEMS: &[System] = &[
    System {
        name: "ceiling (warp, verify only)",
        needs: &[CEILING],
        start: |paths, dir| {
            let mut c = Command::new(paths.bin("hookd-ceiling"));
            c.args(["--listen", "127.0.0.1:0", "--secret-file"])
                .arg(dir.join("secret"));
            Ok(c)
        },
        ready: "listening on ",
        path: "/webhooks",
        delivered_by: None,
        commands_counted_in: None,
    },
    System {
        name: "adnanh/webhook 2.8, sync /bin/true",
        needs: &[WEBHOOK],
        start: |_, dir| webhook_serve(dir, true),
        ready: "serving hooks on http://",
        path: "/hooks/protocol",
        delivered_by: None,
        commands_counted_in: None,
    },
    System {
        name: "adnanh/webhook 2.8, async (runs counted)",
        needs: &[WEBHOOK],
        start: |_, dir| webhook_serve(dir, false),
        ready: "serving hooks on http://",
        path: "/hooks/protocol",
        delivered_by: None,
        commands_counted_in: Some("ran"),
    },
    System {
        name: "hookd durable ingest",
        needs: &[HOOKD],
        start: |paths, dir| {
            std::fs::create_dir_all(dir.join("plugins"))?;
            hookd_serve(paths, dir, "")
        },
        ready: "ingest listening on ",
        path: "/webhooks",
        delivered_by: None,
        commands_counted_in: None,
    },
    // A plugin that computes for a few milliseconds on every event (as one in Python or
    // JavaScript does): the sender must still be answered at disk speed. Its deliveries
    // lag behind in the durable queue and are not awaited here (the isolation tests check
    // that they all complete).
    System {
        name: INGEST_CPU_HEAVY,
        needs: &[HOOKD, CPU_HEAVY_PLUGIN],
        start: |paths, dir| {
            let plugins = dir.join("plugins");
            std::fs::create_dir_all(&plugins)?;
            let wasm = paths.plugin("fixture_cpu_heavy.wasm");
            std::fs::copy(&wasm, plugins.join("busy.wasm"))
                .with_context(|| format!("cannot copy {}", wasm.display()))?;
            std::fs::write(plugins.join("busy.toml"), "events = [\"*\"]\n")?;
            hookd_serve(paths, dir, "")
        },
        ready: "ingest listening on ",
        path: "/webhooks",
        delivered_by: None,
        commands_counted_in: None,
    },
    System {
        name: "hookd + no-op plugin, delivered",
        needs: &[HOOKD, NOOP_PLUGIN],
        start: |paths, dir| {
            let plugins = dir.join("plugins");
            std::fs::create_dir_all(&plugins)?;
            let wasm = paths.plugin("fixture_noop.wasm");
            std::fs::copy(&wasm, plugins.join("noop.wasm"))
                .with_context(|| format!("cannot copy {}", wasm.display()))?;
            std::fs::write(plugins.join("noop.toml"), "events = [\"*\"]\n")?;
            hookd_serve(paths, dir, "127.0.0.1:0")
        },
        ready: "ingest listening on ",
        path: "/webhooks",
        delivered_by: Some("noop"),
        commands_counted_in: None,
    },
];

/// `hookd serve` on a config in `dir`: defaults everywhere except the addresses (OS-picked)
/// and the paths (inside `dir`), JSON logs at `info` as a service would have.
fn hookd_serve(paths: &Paths, dir: &Path, admin: &str) -> anyhow::Result<Command> {
    let config = dir.join("hookd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npath = \"/webhooks\"\n\
             [admin]\nlisten = \"{admin}\"\n\
             [verify]\nsecrets = [\"file:secret\"]\n\
             [store]\ndir = \"state\"\n\
             [plugins]\ndir = \"plugins\"\n\
             [log]\nformat = \"json\"\nfilter = \"info\"\n"
        ),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    let mut c = Command::new(paths.bin("hookd"));
    c.args(["serve", "--config"]).arg(&config);
    Ok(c)
}

/// How hard to push.
struct Settings {
    connections: Vec<usize>,
    requests: usize,
    warmup: usize,
    duration_secs: u64,
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
    fn loadgen_limit(&self) -> Duration {
        Duration::from_secs(2 * self.duration_secs + 10 + 30)
    }
}

const USAGE: &str = "usage: cargo xtask bench [--quick] [--connections N[,N...]]\n\
    \n  --quick            smoke run: 16 connections, 5,000 requests per system\
    \n  --connections LIST connection counts to run every system at (default 16,64,256)";

/// Where things are.
pub(crate) struct Paths {
    pub(crate) root: PathBuf,
    pub(crate) target: PathBuf,
}

impl Paths {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let root = crate::plugins::root()?;
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        Ok(Self { root, target })
    }

    pub(crate) fn bin(&self, name: &str) -> PathBuf {
        self.target.join("release").join(name)
    }

    /// Where each system's fresh temp dir (config, store, output) is made.
    fn runs(&self) -> PathBuf {
        self.target.join("bench")
    }

    pub(crate) fn plugin(&self, file: &str) -> PathBuf {
        self.root
            .join("plugins/target/wasm32-wasip2/release")
            .join(file)
    }
}

/// Set by SIGINT / SIGTERM; every wait in here checks it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// `cargo xtask bench all`: every figure BENCHMARKS.md records, one after another: the ingest
/// table, then reload, restart and memory, then the per-delivery host overhead (criterion).
/// Stops at the first that fails.
pub fn all(args: &[String]) -> anyhow::Result<()> {
    if let Some(arg) = args.first() {
        bail!("`bench all` takes no arguments (got `{arg}`)");
    }
    run(&[])?;
    reload(&[])?;
    deliver()
}

/// `cargo bench -p hookd-host --bench deliver`: a fresh sandbox and one `handle` call of the
/// no-op plugin, with the pooling and the on-demand instance allocator.
fn deliver() -> anyhow::Result<()> {
    let paths = Paths::new()?;
    eprintln!("bench: cargo bench -p hookd-host --bench deliver");
    let status = run_bounded(
        crate::plugins::cargo().current_dir(&paths.root).args([
            "bench",
            "--locked",
            "-p",
            "hookd-host",
            "--bench",
            "deliver",
        ]),
        Duration::from_secs(1800),
    )?;
    if !status.success() {
        bail!("the per-delivery benchmark failed: {status}");
    }
    Ok(())
}

/// `cargo xtask bench reload [ARGS]`: plugin reload latency and restart-to-ready time, from
/// `hookd-reload-bench` (ARGS are passed to it; `--help` lists them). Writes
/// `target/bench/reload.json`.
pub fn reload(args: &[String]) -> anyhow::Result<()> {
    catch_signals();
    let paths = Paths::new()?;
    let mut built = Vec::new();
    for need in [HOOKD, RELOAD_BENCH, NOOP_PLUGIN] {
        provide(&paths, need, &mut built).map_err(anyhow::Error::msg)?;
    }
    std::fs::create_dir_all(paths.runs())?;
    let status = run_bounded(
        Command::new(paths.bin("hookd-reload-bench"))
            .arg("--hookd")
            .arg(paths.bin("hookd"))
            .arg("--plugin")
            .arg(paths.plugin("fixture_noop.wasm"))
            .arg("--dir")
            .arg(paths.runs())
            .arg("--json")
            .arg(paths.runs().join("reload.json"))
            .args(args),
        Duration::from_secs(1800),
    )?;
    if !status.success() {
        bail!("hookd-reload-bench failed: {status}");
    }
    Ok(())
}

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
    let outgoing = match crate::bench_outgoing::measure(&paths, quick, &mut built) {
        Ok(figures) => {
            crate::bench_outgoing::print(&figures);
            if let Err(missed) = crate::bench_outgoing::check(&figures) {
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

/// The webhook secret every system is configured with, written to `secret` in its temp dir.
const SECRET: &str = "hookd-bench-secret-0123456789abcdef";

/// Builds (or checks) one need. `built` remembers each package's build outcome.
pub(crate) fn provide(
    paths: &Paths,
    need: Need,
    built: &mut Vec<(&'static str, Result<(), String>)>,
) -> Result<(), String> {
    match need {
        Need::Binary {
            package,
            bin,
            probe,
        } => {
            let outcome = match built.iter().find(|(p, _)| *p == package) {
                Some((_, outcome)) => outcome.clone(),
                None => {
                    eprintln!("bench: cargo build --release -p {package}");
                    let outcome = run_bounded(
                        crate::plugins::cargo().current_dir(&paths.root).args([
                            "build",
                            "--release",
                            "-p",
                            package,
                        ]),
                        Duration::from_secs(3600),
                    )
                    .and_then(|status| {
                        if status.success() {
                            Ok(())
                        } else {
                            bail!("{status}")
                        }
                    })
                    .map_err(|e| format!("`cargo build --release -p {package}` failed: {e:#}"));
                    built.push((package, outcome.clone()));
                    outcome
                }
            };
            outcome?;
            let path = paths.bin(bin);
            if !path.is_file() {
                return Err(format!("{} was not built", path.display()));
            }
            let answered = run_bounded(
                Command::new(&path)
                    .args(probe)
                    .arg("--help")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
                Duration::from_secs(10),
            );
            match answered {
                Ok(status) if status.success() => Ok(()),
                _ => Err(format!(
                    "`{} {}--help` does not work yet",
                    path.display(),
                    probe.iter().map(|p| format!("{p} ")).collect::<String>()
                )),
            }
        }
        Need::Debian { package, binary } => {
            if Path::new(binary).is_file() {
                return Ok(());
            }
            eprintln!("bench: apt-get install -y {package}");
            let install = || {
                run_bounded(
                    Command::new("apt-get").args(["install", "-y", "-qq", package]),
                    Duration::from_secs(600),
                )
            };
            let installed = install().is_ok_and(|s| s.success())
                || (run_bounded(
                    Command::new("apt-get").args(["update", "-qq"]),
                    Duration::from_secs(600),
                )
                .is_ok_and(|s| s.success())
                    && install().is_ok_and(|s| s.success()));
            if installed && Path::new(binary).is_file() {
                Ok(())
            } else {
                Err(format!(
                    "cannot install the Debian package `{package}` ({binary})"
                ))
            }
        }
        Need::Plugin { package, file } => {
            eprintln!(
                "bench: cargo build --release --target wasm32-wasip2 -p {package} (plugins/)"
            );
            let status = run_bounded(
                crate::plugins::cargo()
                    .current_dir(paths.root.join("plugins"))
                    .args([
                        "build",
                        "--release",
                        "--target",
                        "wasm32-wasip2",
                        "-p",
                        package,
                    ])
                    .env_remove("CARGO_TARGET_DIR"),
                Duration::from_secs(3600),
            );
            match status {
                Ok(status) if status.success() && paths.plugin(file).is_file() => Ok(()),
                Ok(status) => Err(format!("building the plugin `{package}` failed ({status})")),
                Err(e) => Err(format!("building the plugin `{package}` failed: {e:#}")),
            }
        }
    }
}

/// Runs `command` to completion, killing it after `limit` or on Ctrl-C.
pub(crate) fn run_bounded(command: &mut Command, limit: Duration) -> anyhow::Result<ExitStatus> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = ProcessGroup(
        command
            .spawn()
            .with_context(|| format!("cannot start {program}"))?,
    );
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.0.try_wait()? {
            return Ok(status);
        }
        interrupted()?;
        if Instant::now() > deadline {
            bail!("{program} took longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `system`, drives it with the load generator, stops it: always, also on error.
fn measure(
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
    let stop = || INTERRUPTED.load(Ordering::Relaxed);
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

/// One system at one connection count.
struct Row {
    system: &'static str,
    ceiling: bool,
    connections: usize,
    outcome: Outcome,
    ratio: Option<f64>,
    /// Against adnanh/webhook (synchronous) at the same connection count.
    ratio_webhook: Option<f64>,
}

/// The row the "vs webhook" column compares with.
const WEBHOOK_BASELINE: &str = "adnanh/webhook 2.8, sync /bin/true";

enum Outcome {
    Measured(Value),
    Skipped(String),
    Failed(String),
}

impl Row {
    fn new(system: &System, connections: usize, outcome: Outcome) -> Self {
        Self {
            system: system.name,
            ceiling: SYSTEMS.first().is_some_and(|c| c.name == system.name),
            connections,
            outcome,
            ratio: None,
            ratio_webhook: None,
        }
    }

    fn measured(system: &System, connections: usize, report: Value) -> Self {
        Self::new(system, connections, Outcome::Measured(report))
    }

    fn skipped(system: &System, connections: usize, why: &str) -> Self {
        Self::new(system, connections, Outcome::Skipped(why.to_owned()))
    }

    fn failed(system: &System, connections: usize, why: &str) -> Self {
        Self::new(system, connections, Outcome::Failed(why.to_owned()))
    }

    fn report(&self) -> Option<&Value> {
        match &self.outcome {
            Outcome::Measured(r) => Some(r),
            _ => None,
        }
    }

    fn requests_per_sec(&self) -> Option<f64> {
        self.report()?["requests_per_sec"].as_f64()
    }

    /// Failed to run, or ran with any non-2xx answer, error, or undelivered event.
    fn is_failure(&self) -> bool {
        match &self.outcome {
            Outcome::Measured(r) => {
                let n = |v: &Value| v.as_u64().unwrap_or(0);
                n(&r["non_2xx"])
                    + n(&r["errors"])
                    + n(&r["warmup"]["non_2xx"])
                    + n(&r["warmup"]["errors"])
                    > 0
                    || r.get("delivered")
                        .is_some_and(|d| n(d) < n(&r["delivered_expected"]))
            }
            Outcome::Skipped(_) => false,
            Outcome::Failed(_) => true,
        }
    }

    fn to_json(&self) -> Value {
        let (status, detail) = match &self.outcome {
            Outcome::Measured(r) => ("measured", r.clone()),
            Outcome::Skipped(why) => ("skipped", json!(why)),
            Outcome::Failed(why) => ("failed", json!(why)),
        };
        json!({
            "system": self.system,
            "connections": self.connections,
            "status": status,
            "ratio_to_ceiling": self.ratio,
            "ratio_to_webhook": self.ratio_webhook,
            if status == "measured" { "report" } else { "reason" }: detail,
        })
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| system | connections | requests | req/s | p50 ms | p99 ms | non-2xx | errors | vs ceiling | vs webhook | done after the answer |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut notes = Vec::new();
    for row in rows {
        let Some(r) = row.report() else {
            let (what, why) = match &row.outcome {
                Outcome::Skipped(why) => ("skipped", why),
                Outcome::Failed(why) => ("FAILED", why),
                Outcome::Measured(_) => continue,
            };
            println!(
                "| {} | {} | {what} | | | | | | | | |",
                row.system, row.connections
            );
            notes.push(format!(
                "{} at {}: {what}: {}",
                row.system,
                row.connections,
                why.trim_end()
            ));
            continue;
        };
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
        let delivered = match r.get("delivered_per_sec") {
            Some(d) if n(&r["delivered"]) < n(&r["delivered_expected"]) => format!(
                "{:.0} ({} of {} delivered)",
                f(d),
                n(&r["delivered"]),
                n(&r["delivered_expected"])
            ),
            Some(d) => format!("{:.0} delivered/s", f(d)),
            None => match r.get("commands_ran") {
                Some(ran) => format!("{} of {} commands ran", n(ran), n(&r["commands_expected"])),
                None => "-".to_owned(),
            },
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {delivered} |",
            row.system,
            row.connections,
            n(&r["requests"]),
            f(&r["requests_per_sec"]),
            f(&r["p50_ms"]),
            f(&r["p99_ms"]),
            n(&r["non_2xx"]) + n(&r["warmup"]["non_2xx"]),
            n(&r["errors"]) + n(&r["warmup"]["errors"]),
            row.ratio
                .map_or("-".to_owned(), |x| format!("{:.0}%", 100.0 * x)),
            row.ratio_webhook
                .map_or("-".to_owned(), |x| format!("{x:.1}x")),
        );
        if r["stopped_by"] == "duration" {
            notes.push(format!(
                "{} at {}: stopped by the time bound before all requests were sent",
                row.system, row.connections
            ));
        }
        if let Some(e) = r["first_error"].as_str() {
            notes.push(format!(
                "{} at {}: first error: {e}",
                row.system, row.connections
            ));
        }
    }
    for note in notes {
        println!("- {note}");
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
        "load_average_before": load_average(),
    })
}

/// The type of the filesystem holding `path` (the mount with the longest matching prefix).
fn filesystem(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, fs) = (fields.next()?, fields.next()?, fields.next()?);
            // Spaces in mount points are written as \040.
            let point = PathBuf::from(point.replace("\\040", " "));
            path.starts_with(&point)
                .then(|| (point.as_os_str().len(), fs.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}

/// How long making 8 KiB durable takes on the filesystem the stores live on (write, then
/// `fdatasync`), p50 and p99 in ms over 300 tries: the floor under a durable commit. With N
/// connections each waiting for the commit that holds its event, durable ingest cannot go
/// faster than N / (commit time) requests/s, whatever the CPU.
fn disk_sync_ms(dir: &Path) -> anyhow::Result<(f64, f64)> {
    use std::io::Write as _;
    let mut file = tempfile::tempfile_in(dir)
        .with_context(|| format!("cannot make a file in {}", dir.display()))?;
    let block = [0x5a_u8; 8192];
    let mut took = Vec::with_capacity(300);
    for i in 0..330 {
        if i % 100 == 0 {
            file.seek(SeekFrom::Start(0))?;
        }
        file.write_all(&block)?;
        let started = Instant::now();
        file.sync_data()?;
        if i >= 30 {
            took.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    took.sort_by(f64::total_cmp);
    Ok((took[took.len() / 2], took[took.len() * 99 / 100]))
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews every figure.
fn load_average() -> Value {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| {
            s.split_whitespace()
                .take(3)
                .filter_map(|v| v.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .map_or(Value::Null, |v| json!(v))
}

/// The commit measured, `+dirty` if tracked files were changed.
fn commit(root: &Path) -> Value {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            json!(if dirty { format!("{head}+dirty") } else { head })
        }
        None => Value::Null,
    }
}

/// SIGINT and SIGTERM set [`INTERRUPTED`]; the waits notice it and unwind, which kills every
/// child and removes every temp dir on the way out.
pub(crate) fn catch_signals() {
    extern "C" fn on_signal(_: libc::c_int) {
        INTERRUPTED.store(true, Ordering::Relaxed);
    }
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(signal, handler as libc::sighandler_t);
        }
    }
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

    #[test]
    fn the_first_system_is_the_ceiling_and_names_are_unique() {
        assert!(SYSTEMS[0].needs.contains(&CEILING));
        for (i, a) in SYSTEMS.iter().enumerate() {
            assert!(SYSTEMS[i + 1..].iter().all(|b| b.name != a.name));
        }
    }
}
