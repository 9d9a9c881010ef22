//! `hookd-outgoing-bench`: a plugin's outgoing HTTP requests per second against a local
//! keep-alive server, next to a plain keep-alive client (`hookd-loadgen`) against the same
//! server, in the same run, with the share of requests that went on a reused connection.
//!
//! The server (the sink) runs in this process: HTTP/1.1 with keep-alive, an empty `{}` answer,
//! counting the TCP connections it accepts and the requests it answers. Both sides are
//! measured by the sink alike: requests per second from the request that ends the warm-up
//! (the first tenth) to the last one, and reuse as `1 - connections / requests`.
//! - **Plain client:** `hookd-loadgen` with `--connections` keep-alive connections sends
//!   `--requests` requests to the sink.
//! - **Plugin:** hookd (a release build, its own temp folder) with the `http-poster` fixture,
//!   `concurrency` = `--connections`, each delivery POSTing `--requests-per-event` requests to
//!   the sink; `hookd-loadgen` sends the events (`--requests` / `--requests-per-event` of them)
//!   to hookd's ingest, and the sink counts what the plugin sends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use hookd_testkit::{Daemon, Launch};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    about = "Measure a plugin's outgoing requests/s against a plain keep-alive client to the same local server"
)]
struct Args {
    /// The hookd binary (a release build).
    #[arg(long)]
    hookd: PathBuf,
    /// The load generator (a release build of hookd-loadgen).
    #[arg(long)]
    loadgen: PathBuf,
    /// The `http-poster` fixture component.
    #[arg(long)]
    plugin: PathBuf,
    /// Concurrent requests on each side: the plain client's connections, the plugin's
    /// concurrent deliveries (each sends its requests one after another).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Requests sent to the sink on each side.
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    /// Requests one delivery of the plugin sends.
    #[arg(long, default_value_t = 20)]
    requests_per_event: u64,
    /// hookd's `[plugins] priority` (`idle`, `low`, `normal`) [default: hookd's default].
    #[arg(long)]
    priority: Option<String>,
    /// Where the temporary daemon folder goes (default: the system's temp folder).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write the figures as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

const SECRET: &str = "hookd-bench-secret-0123456789abcdef";
/// The longest either side may take to send all its requests.
const LIMIT: Duration = Duration::from_secs(300);

/// What the sink saw since it was last reset.
#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    requests: AtomicU64,
    /// Nanoseconds since `epoch` at which the request ending the warm-up was answered, and
    /// the last one.
    warm_at: AtomicU64,
    last_at: AtomicU64,
    /// The request count that ends the warm-up.
    warm_mark: AtomicU64,
    /// Requests being answered now, and the most at once: the concurrency reached.
    active: AtomicU64,
    max_active: AtomicU64,
}

struct Sink {
    addr: SocketAddr,
    counts: Arc<Counts>,
    _runtime: tokio::runtime::Runtime,
}

impl Sink {
    fn start() -> anyhow::Result<Sink> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("sink")
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let epoch = Instant::now();
        let seen = counts.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                seen.accepted.fetch_add(1, Ordering::Relaxed);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                use http_body_util::BodyExt as _;
                                let now = seen.active.fetch_add(1, Ordering::Relaxed) + 1;
                                seen.max_active.fetch_max(now, Ordering::Relaxed);
                                let _ = req.into_body().collect().await;
                                seen.active.fetch_sub(1, Ordering::Relaxed);
                                let n = seen.requests.fetch_add(1, Ordering::Relaxed) + 1;
                                let now = epoch.elapsed().as_nanos() as u64;
                                if n == seen.warm_mark.load(Ordering::Relaxed) {
                                    seen.warm_at.store(now, Ordering::Relaxed);
                                }
                                seen.last_at.fetch_max(now, Ordering::Relaxed);
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from_static(b"{}")),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Sink {
            addr,
            counts,
            _runtime: runtime,
        })
    }

    /// Forgets what was counted; the request numbered `warm_mark` ends the next warm-up.
    fn reset(&self, warm_mark: u64) {
        let c = &self.counts;
        c.warm_mark.store(warm_mark, Ordering::Relaxed);
        for counter in [
            &c.accepted,
            &c.requests,
            &c.warm_at,
            &c.last_at,
            &c.max_active,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::Relaxed)
    }

    /// The figures of one side, once `expected` requests were answered.
    fn figures(&self, expected: u64, cpu: Cpu) -> anyhow::Result<serde_json::Value> {
        let c = &self.counts;
        let requests = c.requests.load(Ordering::Relaxed);
        let accepted = c.accepted.load(Ordering::Relaxed);
        let warm_mark = c.warm_mark.load(Ordering::Relaxed);
        let seconds = (c
            .last_at
            .load(Ordering::Relaxed)
            .saturating_sub(c.warm_at.load(Ordering::Relaxed))) as f64
            / 1e9;
        if requests < expected || seconds <= 0.0 {
            bail!("the sink answered {requests} of {expected} requests");
        }
        let measured = (requests - warm_mark) as f64;
        Ok(json!({
            "client_cpu_us_per_request": cpu.client * 1e6 / measured,
            "sink_cpu_us_per_request": cpu.sink * 1e6 / measured,
            "requests": requests,
            "most_at_once": c.max_active.load(Ordering::Relaxed),
            "connections": accepted,
            "reused_share": 1.0 - accepted as f64 / requests as f64,
            "measured_requests": requests - warm_mark,
            "seconds": seconds,
            "requests_per_sec": (requests - warm_mark) as f64 / seconds,
        }))
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    // The daemon runs in its own folder: make the paths independent of ours.
    for path in [&mut args.hookd, &mut args.loadgen, &mut args.plugin] {
        *path = path
            .canonicalize()
            .with_context(|| format!("cannot find {}", path.display()))?;
    }
    if args.requests_per_event == 0 || args.requests < 10 * args.requests_per_event {
        bail!("--requests must be at least ten times --requests-per-event");
    }
    let parent = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => std::env::temp_dir(),
    };
    let work = tempfile::tempdir_in(&parent)?;
    std::fs::write(work.path().join("secret"), SECRET)?;
    let sink = Sink::start()?;
    let url = format!("http://{}", sink.addr);
    let warm = args.requests / 10;

    // The plain keep-alive client.
    sink.reset(warm);
    let client = loadgen(
        &args.loadgen,
        &work.path().join("secret"),
        &format!("{url}/plain"),
        args.connections,
        args.requests,
    )?;
    let cpu = watch(&sink, client.id(), args.requests);
    let report = finish(client)?;
    if report["non_2xx"].as_u64() != Some(0) || report["errors"].as_u64() != Some(0) {
        bail!("the plain client had failures: {report}");
    }
    let plain = sink.figures(args.requests, cpu?)?;
    eprintln!("outgoing bench: plain client: {plain}");

    // The plugin in hookd.
    let events = args.requests / args.requests_per_event;
    let expected = events * args.requests_per_event;
    sink.reset(warm);
    let plugins = work.path().join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::copy(&args.plugin, plugins.join("poster.wasm"))
        .with_context(|| format!("cannot copy {}", args.plugin.display()))?;
    std::fs::write(
        plugins.join("poster.toml"),
        format!(
            "events = [\"*\"]\n[limits]\nconcurrency = {}\ntimeout_ms = 60000\n\
             [capabilities]\nhttp = [\"{url}\"]\n\
             [config]\nurl = \"{url}/plugin\"\nrequests = \"{}\"\n",
            args.connections, args.requests_per_event
        ),
    )?;
    let priority = args
        .priority
        .as_ref()
        .map_or(String::new(), |p| format!("priority = \"{p}\"\n"));
    std::fs::write(
        work.path().join("hookd.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [verify]\nsecrets = [\"file:secret\"]\n[store]\ndir = \"state\"\n\
             [plugins]\ndir = \"plugins\"\n{priority}[log]\nformat = \"json\"\nfilter = \"info\"\n"
        ),
    )?;
    let daemon = start_hookd(&args.hookd, work.path())?;
    let sender = loadgen(
        &args.loadgen,
        &work.path().join("secret"),
        &daemon.url(),
        4,
        events,
    )?;
    let cpu = watch(&sink, daemon.pid(), expected);
    let report = finish(sender)?;
    if report["non_2xx"].as_u64() != Some(0) || report["errors"].as_u64() != Some(0) {
        bail!("sending the events to hookd had failures: {report}");
    }
    let plugin = sink.figures(expected, cpu?)?;
    drop(daemon);
    eprintln!("outgoing bench: plugin: {plugin}");

    let rate = |v: &serde_json::Value| v["requests_per_sec"].as_f64().unwrap_or(0.0);
    let result = json!({
        "connections": args.connections,
        "requests": args.requests,
        "requests_per_event": args.requests_per_event,
        "plugin_priority": args.priority.as_deref().unwrap_or("default"),
        "plain_client": plain,
        "plugin": plugin,
        "ratio": rate(&plugin) / rate(&plain),
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Starts `hookd-loadgen`; [`finish`] collects its report.
fn loadgen(
    loadgen: &Path,
    secret: &Path,
    url: &str,
    connections: usize,
    requests: u64,
) -> anyhow::Result<Child> {
    Command::new(loadgen)
        .args(["--url", url])
        .arg("--secret-file")
        .arg(secret)
        .args([
            "--connections",
            &connections.to_string(),
            "--requests",
            &requests.to_string(),
            "--warmup-requests",
            "0",
            "--duration",
            &LIMIT.as_secs().to_string(),
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", loadgen.display()))
}

/// Waits for `hookd-loadgen` to end and returns its JSON report.
fn finish(loadgen: Child) -> anyhow::Result<serde_json::Value> {
    let output = loadgen.wait_with_output()?;
    if !output.status.success() {
        bail!("hookd-loadgen failed ({})", output.status);
    }
    serde_json::from_slice(&output.stdout).context("hookd-loadgen's output is not its JSON report")
}

/// CPU seconds the client (hookd-loadgen, or hookd) and the sink (this process) used from the
/// end of the warm-up to the last request.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    client: f64,
    sink: f64,
}

/// Waits until the sink has answered `expected` requests, reading the CPU time of `pid` and
/// of this process when the warm-up ends and at the end.
fn watch(sink: &Sink, pid: u32, expected: u64) -> anyhow::Result<Cpu> {
    let warm_mark = sink.counts.warm_mark.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut at_warm = None;
    loop {
        let answered = sink.requests();
        if at_warm.is_none() && answered >= warm_mark {
            at_warm = Some((cpu_of(pid)?, own_cpu()));
        }
        if answered >= expected {
            let (client, own) = at_warm.context("no warm-up")?;
            return Ok(Cpu {
                client: cpu_of(pid)? - client,
                sink: own_cpu() - own,
            });
        }
        if started.elapsed() > LIMIT {
            bail!("{answered} of {expected} requests answered within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// User and system CPU seconds of process `pid` (it may have exited, not yet been reaped).
fn cpu_of(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces), from field 3 on.
    let after = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .context("odd /proc stat")?
        .iter()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .sum();
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / per_second)
}

/// User and system CPU seconds of this process (the sink, essentially).
fn own_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// hookd serving the folder `dir` (the testkit's daemon, killed when dropped), once
/// `/plugins` lists the poster: events sent before would have no subscriber.
fn start_hookd(hookd: &Path, dir: &Path) -> anyhow::Result<Daemon> {
    let mut launch = Launch::new(hookd, dir.join("hookd.toml"));
    launch.keep_logs = false;
    let (daemon, _) = Daemon::launch(&launch).context("hookd did not start")?;
    let started = Instant::now();
    while !daemon
        .admin_get("/plugins")
        .is_some_and(|(_, body)| body.contains("\"poster\""))
    {
        if started.elapsed() > LIMIT {
            bail!("hookd did not load the plugin within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(daemon)
}
