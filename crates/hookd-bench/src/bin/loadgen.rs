//! `hookd-loadgen`: a closed-loop HTTP/1.1 load generator for webhook receivers.
//!
//! Every request carries a unique event (fresh `id`) with its own valid signature, all made
//! before the clock starts, so no receiver can short-cut on duplicates and signing costs the
//! generator nothing while it measures. Each connection is one task on one keep-alive
//! connection that sends its next request as soon as the previous answer arrived; the
//! warm-up runs on the same connections, and the clock starts when every connection has
//! finished it. The run is bounded in count (`--requests`) and in time (`--duration`, with a
//! per-request `--timeout-ms`). Every answer's latency goes into an HDR histogram; every
//! non-2xx answer and every error is counted and reported, never dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use hookd_core::SIGNATURE_HEADER;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::sync::{Barrier, watch};

#[derive(Parser, Clone)]
#[command(
    about = "Send uniquely signed webhook events as fast as a receiver answers them",
    long_about = "Send uniquely signed webhook events as fast as a receiver answers them.\n\n\
        Events are made and signed before the clock starts: ids `PREFIX-0`, `PREFIX-1`, …, \
        types cycling through the 15 Protocol types with each type's sample payload. Each \
        connection sends its next request when the previous answer arrived (closed loop). \
        The measured phase ends after --requests requests or --duration seconds, whichever \
        comes first."
)]
struct Args {
    /// Target URL, e.g. http://127.0.0.1:8080/webhooks
    #[arg(long)]
    url: String,
    /// File holding the webhook secret (a trailing newline is ignored). Never on the command
    /// line, where other users can read it.
    #[arg(long)]
    secret_file: PathBuf,
    /// Concurrent keep-alive connections, one task each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Requests in the measured phase. All are signed in memory up front (about 0.3 KB
    /// each at the natural body size).
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
    /// Upper bound on the measured phase, in seconds; the warm-up has the same bound.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Requests sent, on the same connections, before the clock starts.
    #[arg(long, default_value_t = 2_000)]
    warmup_requests: usize,
    /// Pad every body to exactly this many bytes (0: each sample's natural size).
    #[arg(long, default_value_t = 0)]
    body_bytes: usize,
    /// Prefix of the event ids [default: bench-<run>, unique per run, so a receiver with a
    /// persistent store sees new events on every run].
    #[arg(long)]
    id_prefix: Option<String>,
    /// Extra request header `NAME:VALUE` (repeatable; replaces a generated header of the
    /// same name).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// Runtime worker threads of the generator [default: one per CPU].
    #[arg(long)]
    threads: Option<usize>,
    /// A request without an answer after this long counts as an error (`timeout`) and its
    /// connection is replaced.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// The measured outcome of one run.
#[derive(Debug, Serialize)]
struct Report {
    url: String,
    connections: usize,
    threads: usize,
    /// Mean request body size in bytes.
    body_bytes: usize,
    /// `requests` (the count was reached) or `duration` (the time bound was).
    stopped_by: &'static str,
    /// Answered requests in the measured phase: `ok` + `non_2xx`.
    requests: u64,
    ok: u64,
    non_2xx: u64,
    /// Non-2xx answers by status code.
    statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer: refused or broken connections, timeouts.
    errors: u64,
    errors_by_kind: BTreeMap<&'static str, u64>,
    first_error: Option<String>,
    /// Requests still in flight when the time bound ended the phase (neither counted as
    /// answered nor as errors).
    unfinished: u64,
    /// TCP connections opened, warm-up included (more than `connections` means some were
    /// closed or broken and replaced).
    connections_opened: u64,
    seconds: f64,
    requests_per_sec: f64,
    mean_ms: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    warmup: WarmupReport,
}

#[derive(Debug, Serialize)]
struct WarmupReport {
    requests: u64,
    non_2xx: u64,
    errors: u64,
    unfinished: u64,
    seconds: f64,
}

/// A prepared request: the exact body and its signature header.
struct Prepared {
    body: Bytes,
    signature: HeaderValue,
}

/// What every connection task shares.
struct Plan {
    addr: SocketAddr,
    authority: HeaderValue,
    path: String,
    extra: Vec<(HeaderName, HeaderValue)>,
    events: Vec<Prepared>,
    warmup_next: AtomicUsize,
    warmup_end: usize,
    next: AtomicUsize,
    timeout: Duration,
    /// Latencies in microseconds, 1 µs to 1 h, 3 significant digits; longer ones saturate.
    empty: Histogram<u64>,
}

impl Plan {
    /// Claims the next unsent event of a phase, if any is left.
    fn claim(&self, next: &AtomicUsize, end: usize) -> Option<&Prepared> {
        let index = next.fetch_add(1, Ordering::Relaxed);
        self.events.get(index).filter(|_| index < end)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    // A day bounds both, so deadlines computed from them cannot overflow.
    if !(args.duration > 0.0 && args.duration <= 86_400.0) {
        bail!("--duration must be more than 0 and at most 86400 seconds");
    }
    if !(1..=86_400_000).contains(&args.timeout_ms) {
        bail!("--timeout-ms must be between 1 and 86400000");
    }
    let threads = match args.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = runtime.block_on(run(&args, threads))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    let failed = report.non_2xx + report.errors + report.warmup.non_2xx + report.warmup.errors;
    if failed > 0 {
        eprintln!(
            "hookd-loadgen: warning: {} non-2xx answers and {} errors in the measured phase, \
             {} + {} in the warm-up{}",
            report.non_2xx,
            report.errors,
            report.warmup.non_2xx,
            report.warmup.errors,
            report
                .first_error
                .as_deref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

async fn run(args: &Args, threads: usize) -> anyhow::Result<Report> {
    let secret = hookd_bench::read_secret(&args.secret_file)?;
    let uri: hyper::Uri = args
        .url
        .parse()
        .with_context(|| format!("--url `{}` is not a URL", args.url))?;
    if uri.scheme_str() != Some("http") {
        bail!("--url `{}`: only http:// is supported", args.url);
    }
    let host = uri.host().context("--url needs a host")?;
    let port = uri.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let authority = HeaderValue::from_str(uri.authority().map_or(host, |a| a.as_str()))
        .context("--url has an authority that is not a valid Host header")?;
    let path = uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let extra = parse_headers(&args.headers)?;

    let id_prefix = args.id_prefix.clone().unwrap_or_else(run_prefix);
    let total = args
        .warmup_requests
        .checked_add(args.requests)
        .context("--requests + --warmup-requests is too large")?;
    let preparing = Instant::now();
    let events = hookd_bench::signed_events(&secret, &id_prefix, total, args.body_bytes)?
        .into_iter()
        .map(|e| {
            Ok(Prepared {
                signature: HeaderValue::from_str(&e.signature)?,
                body: e.body,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let total_bytes: usize = events.iter().map(|e| e.body.len()).sum();
    let body_bytes = total_bytes / events.len().max(1);
    eprintln!(
        "hookd-loadgen: {total} events signed ({:.1} MB, ids {id_prefix}-N) in {:.2} s; \
         {} warm-up + up to {} measured requests over {} connections, {threads} threads",
        total_bytes as f64 / 1e6,
        preparing.elapsed().as_secs_f64(),
        args.warmup_requests,
        args.requests,
        args.connections,
    );

    let plan = Arc::new(Plan {
        addr,
        authority,
        path,
        extra,
        events,
        warmup_next: AtomicUsize::new(0),
        warmup_end: args.warmup_requests,
        next: AtomicUsize::new(args.warmup_requests),
        timeout: Duration::from_millis(args.timeout_ms),
        empty: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
    });
    let duration = Duration::from_secs_f64(args.duration);
    let warmup_started = Instant::now();
    let warmup_deadline = warmup_started + duration;
    // Every connection task, plus this one, meets here when its warm-up is done.
    let warm = Arc::new(Barrier::new(args.connections + 1));
    let (start_tx, start_rx) = watch::channel(None);
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| {
            let (plan, warm, start_rx) = (plan.clone(), warm.clone(), start_rx.clone());
            tokio::spawn(connection(plan, warm, start_rx, warmup_deadline, duration))
        })
        .collect();
    // Tasks cannot fail before the barrier; the timeout only guards against a bug there.
    tokio::time::timeout_at(
        (warmup_deadline + plan.timeout + Duration::from_secs(5)).into(),
        warm.wait(),
    )
    .await
    .context("the warm-up did not end in time")?;
    let started = Instant::now();
    let warmup_seconds = (started - warmup_started).as_secs_f64();
    start_tx
        .send(Some(started))
        .context("every connection task is gone")?;

    let mut warmup = Tally::new(&plan.empty);
    let mut measured = Tally::new(&plan.empty);
    for task in tasks {
        let (w, m) = task.await.context("a connection task failed")?;
        warmup.merge(w)?;
        measured.merge(m)?;
    }
    let seconds = measured
        .ended
        .map_or(0.0, |e| e.saturating_duration_since(started).as_secs_f64());
    let stopped_by = if plan.next.load(Ordering::Relaxed) >= plan.events.len() {
        "requests"
    } else {
        "duration"
    };
    let h = &measured.latencies_us;
    let ms = |us: u64| us as f64 / 1000.0;
    let requests = measured.ok + measured.non_2xx();
    Ok(Report {
        url: args.url.clone(),
        connections: args.connections,
        threads,
        body_bytes,
        stopped_by,
        requests,
        ok: measured.ok,
        non_2xx: measured.non_2xx(),
        errors: measured.errors(),
        statuses: measured.statuses,
        errors_by_kind: measured.errors_by_kind,
        first_error: measured.first_error.or(warmup.first_error.clone()),
        unfinished: measured.unfinished,
        connections_opened: warmup.connections_opened + measured.connections_opened,
        seconds,
        requests_per_sec: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        warmup: WarmupReport {
            requests: warmup.ok + warmup.non_2xx(),
            non_2xx: warmup.non_2xx(),
            errors: warmup.errors(),
            unfinished: warmup.unfinished,
            seconds: warmup_seconds,
        },
    })
}

/// Unique per run: milliseconds since the epoch and the process id, in hex.
fn run_prefix() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("bench-{millis:x}{:x}", std::process::id())
}

/// What one connection saw in one phase.
struct Tally {
    latencies_us: Histogram<u64>,
    ok: u64,
    statuses: BTreeMap<u16, u64>,
    errors_by_kind: BTreeMap<&'static str, u64>,
    first_error: Option<String>,
    unfinished: u64,
    connections_opened: u64,
    ended: Option<Instant>,
}

impl Tally {
    fn new(empty: &Histogram<u64>) -> Self {
        Self {
            latencies_us: empty.clone(),
            ok: 0,
            statuses: BTreeMap::new(),
            errors_by_kind: BTreeMap::new(),
            first_error: None,
            unfinished: 0,
            connections_opened: 0,
            ended: None,
        }
    }

    fn non_2xx(&self) -> u64 {
        self.statuses.values().sum()
    }

    fn errors(&self) -> u64 {
        self.errors_by_kind.values().sum()
    }

    fn error(&mut self, kind: &'static str, detail: impl std::fmt::Display) {
        *self.errors_by_kind.entry(kind).or_default() += 1;
        self.first_error
            .get_or_insert_with(|| format!("{kind}: {detail}"));
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latencies_us
            .add(&other.latencies_us)
            .context("cannot merge latency histograms")?;
        self.ok += other.ok;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (kind, n) in other.errors_by_kind {
            *self.errors_by_kind.entry(kind).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.unfinished += other.unfinished;
        self.connections_opened += other.connections_opened;
        self.ended = self.ended.max(other.ended);
        Ok(())
    }
}

/// One connection's life: its share of the warm-up, the wait for every other connection,
/// then its share of the measured phase.
async fn connection(
    plan: Arc<Plan>,
    warm: Arc<Barrier>,
    mut start: watch::Receiver<Option<Instant>>,
    warmup_deadline: Instant,
    duration: Duration,
) -> (Tally, Tally) {
    let mut sender = None;
    let mut warmup = Tally::new(&plan.empty);
    while let Some(event) = plan.claim(&plan.warmup_next, plan.warmup_end) {
        if !exchange(&plan, &mut sender, event, warmup_deadline, &mut warmup).await {
            break;
        }
    }
    warm.wait().await;
    let mut measured = Tally::new(&plan.empty);
    let started = match start.wait_for(Option::is_some).await {
        Ok(started) => *started,
        Err(_) => return (warmup, measured),
    };
    let Some(deadline) = started.and_then(|s| s.checked_add(duration)) else {
        return (warmup, measured);
    };
    while let Some(event) = plan.claim(&plan.next, plan.events.len()) {
        if !exchange(&plan, &mut sender, event, deadline, &mut measured).await {
            break;
        }
    }
    measured.ended = Some(Instant::now());
    (warmup, measured)
}

/// Sends one event and waits for its answer, (re)connecting first if needed. Returns false
/// when the phase's deadline has passed.
async fn exchange(
    plan: &Plan,
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    event: &Prepared,
    deadline: Instant,
    tally: &mut Tally,
) -> bool {
    let now = Instant::now();
    if now >= deadline {
        tally.unfinished += 1;
        return false;
    }
    let request_deadline = (now + plan.timeout).min(deadline);
    let cut_by_deadline = request_deadline == deadline;
    let timed_out = |tally: &mut Tally, what: &str| {
        if cut_by_deadline {
            tally.unfinished += 1;
            false
        } else {
            tally.error("timeout", format!("no {what} within {:?}", plan.timeout));
            true
        }
    };

    let s = match sender {
        Some(s) => s,
        None => match tokio::time::timeout_at(request_deadline.into(), connect(plan.addr)).await {
            Ok(Ok(s)) => {
                tally.connections_opened += 1;
                sender.insert(s)
            }
            Ok(Err(e)) => {
                tally.error("connect", format!("{}: {e:#}", plan.addr));
                // Do not spin on a receiver that refuses connections.
                let pause = (Instant::now() + Duration::from_millis(10)).min(deadline);
                tokio::time::sleep_until(pause.into()).await;
                return true;
            }
            Err(_) => return timed_out(tally, "connection"),
        },
    };

    let mut request = Request::post(plan.path.as_str())
        .header(HOST, plan.authority.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(SIGNATURE_HEADER, event.signature.clone())
        .body(Full::new(event.body.clone()))
        .unwrap_or_else(|_| unreachable!("method, path and headers were validated up front"));
    for (name, value) in &plan.extra {
        request.headers_mut().insert(name.clone(), value.clone());
    }

    let started = Instant::now();
    let answer = tokio::time::timeout_at(request_deadline.into(), async {
        s.ready().await?;
        let response = s.send_request(request).await?;
        let status = response.status();
        let closing = response
            .headers()
            .get(CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        response.into_body().collect().await?;
        Ok::<_, hyper::Error>((status, closing))
    })
    .await;
    match answer {
        Ok(Ok((status, closing))) => {
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            tally.latencies_us.saturating_record(us.max(1));
            if status.is_success() {
                tally.ok += 1;
            } else {
                *tally.statuses.entry(status.as_u16()).or_default() += 1;
            }
            if closing {
                *sender = None;
            }
            true
        }
        Ok(Err(e)) => {
            tally.error("http", e);
            *sender = None;
            true
        }
        Err(_) => {
            *sender = None;
            timed_out(tally, "answer")
        }
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Ends when the sender is dropped or the receiver closes the connection.
    tokio::spawn(conn);
    Ok(sender)
}

fn parse_headers(raw: &[String]) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    raw.iter()
        .map(|h| {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("--header `{h}` is not NAME:VALUE"))?;
            Ok((
                HeaderName::from_bytes(name.trim().as_bytes())
                    .with_context(|| format!("--header `{h}`: bad name"))?,
                HeaderValue::from_str(value.trim())
                    .with_context(|| format!("--header `{h}`: bad value"))?,
            ))
        })
        .collect()
}

fn print_report(r: &Report) {
    println!(
        "{} requests over {} connections in {:.2} s (stopped by {}; {}-byte bodies, {} threads)",
        r.requests, r.connections, r.seconds, r.stopped_by, r.body_bytes, r.threads
    );
    println!("  requests/s  {:.0}", r.requests_per_sec);
    println!(
        "  latency     p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms
    );
    let statuses: Vec<_> = r
        .statuses
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect();
    println!(
        "  answers     {} 2xx, {} non-2xx{}",
        r.ok,
        r.non_2xx,
        if statuses.is_empty() {
            String::new()
        } else {
            format!(" ({})", statuses.join(", "))
        }
    );
    let kinds: Vec<_> = r
        .errors_by_kind
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    println!(
        "  errors      {}{}",
        r.errors,
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        }
    );
    if r.unfinished > 0 {
        println!(
            "  unfinished  {} (in flight at the time bound)",
            r.unfinished
        );
    }
    if r.connections_opened > r.connections as u64 {
        println!(
            "  reconnects  {} connections opened for {} slots",
            r.connections_opened, r.connections
        );
    }
    println!(
        "  warm-up     {} requests in {:.2} s, {} non-2xx, {} errors{}",
        r.warmup.requests,
        r.warmup.seconds,
        r.warmup.non_2xx,
        r.warmup.errors,
        if r.warmup.unfinished > 0 {
            format!(", {} unfinished at the time bound", r.warmup.unfinished)
        } else {
            String::new()
        }
    );
}
