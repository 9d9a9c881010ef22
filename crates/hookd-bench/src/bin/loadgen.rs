//! `hookd-loadgen`: a closed-loop HTTP/1.1 load generator for webhook receivers.
//!
//! Every request carries a unique event (fresh `id`) with its own valid signature, all made
//! before the clock starts, so no receiver can short-cut on duplicates and signing costs the
//! generator nothing while it measures. Each connection is one task that sends its next
//! request as soon as the previous answer arrived. Bounded in count and in time.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use hookd_core::{EventType, SIGNATURE_HEADER};
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use serde::Serialize;

#[derive(Parser, Clone)]
#[command(about = "Send uniquely signed webhook events as fast as a receiver answers them")]
struct Args {
    /// Target URL, e.g. http://127.0.0.1:8080/webhooks
    #[arg(long)]
    url: String,
    /// File holding the webhook secret (never on the command line).
    #[arg(long)]
    secret_file: PathBuf,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured requests (the run also stops at --duration).
    #[arg(long, default_value_t = 50_000)]
    requests: usize,
    /// Upper bound on the measured phase, in seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Requests sent before measuring (connections, caches, page faults).
    #[arg(long, default_value_t = 2_000)]
    warmup_requests: usize,
    /// Pad each event's payload to about this many bytes.
    #[arg(long, default_value_t = 0)]
    body_bytes: usize,
    /// Prefix of the generated event ids; make it unique per run against a persistent store.
    #[arg(long, default_value = "bench")]
    id_prefix: String,
    /// Extra request header `NAME:VALUE` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Runtime worker threads for the generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// The measured outcome of one run.
#[derive(Debug, Serialize)]
struct Report {
    url: String,
    connections: usize,
    requests: u64,
    ok: u64,
    non_2xx: u64,
    errors: u64,
    seconds: f64,
    requests_per_sec: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

struct Prepared {
    body: Bytes,
    signature: HeaderValue,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(args.clone()))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} requests over {} connections in {:.2}s: {:.0} req/s, p50 {:.2} ms, p90 {:.2} ms, \
             p99 {:.2} ms, max {:.2} ms; {} non-2xx, {} errors",
            report.requests,
            report.connections,
            report.seconds,
            report.requests_per_sec,
            report.p50_ms,
            report.p90_ms,
            report.p99_ms,
            report.max_ms,
            report.non_2xx,
            report.errors
        );
    }
    if report.non_2xx > 0 || report.errors > 0 {
        eprintln!(
            "warning: {} non-2xx answers and {} errors",
            report.non_2xx, report.errors
        );
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<Report> {
    let secret = hookd_config::SecretSource::File(args.secret_file.display().to_string())
        .resolve(std::path::Path::new(""))
        .map_err(anyhow::Error::msg)?;
    let uri: hyper::Uri = args.url.parse().context("--url is not a URL")?;
    let authority = uri
        .authority()
        .context("--url needs a host:port")?
        .to_string();
    let extra = parse_headers(&args.headers)?;

    let total = args.warmup_requests + args.requests;
    let types: Vec<EventType> = EventType::known().collect();
    let padding = "x".repeat(args.body_bytes.saturating_sub(400));
    let prepared: Arc<Vec<Prepared>> = Arc::new(
        (0..total)
            .map(|i| {
                let body = format!(
                    r#"{{"id":"{prefix}-{i}","type":"{ty}","payload":{{"id":"m{i}","conversation_id":"xgQQXg3hrtjh7AvZ","contact":{{"id":"WAz8eIbvDR60rouK","username":"KevinMcCallister"}},"message":"Has anyone seen my toothbrush?{padding}","reactions":[],"attachments":[],"created_at":692233200}}}}"#,
                    prefix = args.id_prefix,
                    ty = types[i % types.len()],
                );
                let signature = HeaderValue::from_str(&hookd_core::sign(&secret, body.as_bytes()))
                    .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
                Prepared {
                    body: Bytes::from(body),
                    signature,
                }
            })
            .collect(),
    );

    let target = Arc::new(Target {
        uri,
        authority,
        extra,
    });
    // Warm-up: same path, not recorded.
    let next = Arc::new(AtomicUsize::new(0));
    phase(
        &target,
        &prepared,
        &next,
        args.warmup_requests,
        args.connections,
        None,
    )
    .await?;
    // Tasks overshoot the warm-up's end by one index each; measure from exactly there.
    next.store(args.warmup_requests, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let started = Instant::now();
    let results = phase(
        &target,
        &prepared,
        &next,
        total,
        args.connections,
        Some(deadline),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();

    let mut histogram = Histogram::<u64>::new(3)?;
    let (mut ok, mut non_2xx, mut errors) = (0, 0, 0);
    for r in results {
        histogram.add(&r.latencies_us)?;
        ok += r.ok;
        non_2xx += r.non_2xx;
        errors += r.errors;
    }
    let requests = ok + non_2xx;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(Report {
        url: args.url,
        connections: args.connections,
        requests,
        ok,
        non_2xx,
        errors,
        seconds,
        requests_per_sec: requests as f64 / seconds,
        p50_ms: ms(0.50),
        p90_ms: ms(0.90),
        p99_ms: ms(0.99),
        max_ms: histogram.max() as f64 / 1000.0,
    })
}

struct Target {
    uri: hyper::Uri,
    authority: String,
    extra: Vec<(HeaderName, HeaderValue)>,
}

struct ConnectionResult {
    latencies_us: Histogram<u64>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
}

/// Sends requests `next..end` over `connections` connections until done or `deadline`.
async fn phase(
    target: &Arc<Target>,
    prepared: &Arc<Vec<Prepared>>,
    next: &Arc<AtomicUsize>,
    end: usize,
    connections: usize,
    deadline: Option<Instant>,
) -> anyhow::Result<Vec<ConnectionResult>> {
    let tasks: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let (target, prepared, next) = (target.clone(), prepared.clone(), next.clone());
            tokio::spawn(async move { connection(&target, &prepared, &next, end, deadline).await })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await??);
    }
    Ok(results)
}

async fn connection(
    target: &Target,
    prepared: &[Prepared],
    next: &AtomicUsize,
    end: usize,
    deadline: Option<Instant>,
) -> anyhow::Result<ConnectionResult> {
    let mut result = ConnectionResult {
        latencies_us: Histogram::new(3)?,
        ok: 0,
        non_2xx: 0,
        errors: 0,
    };
    let mut sender = None;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(event) = prepared.get(index).filter(|_| index < end) else {
            break;
        };
        if sender.is_none() {
            match connect(&target.authority).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    result.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let mut request = Request::post(target.uri.path())
            .header(HOST, &target.authority)
            .header(CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, event.signature.clone())
            .body(Full::new(event.body.clone()))?;
        for (name, value) in &target.extra {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let started = Instant::now();
        let answer = async {
            let response = s.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        }
        .await;
        match answer {
            Ok(status) => {
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                result.latencies_us.record(us.max(1))?;
                if status.is_success() {
                    result.ok += 1;
                } else {
                    result.non_2xx += 1;
                }
            }
            Err(_) => {
                result.errors += 1;
                sender = None; // reconnect
            }
        }
    }
    Ok(result)
}

async fn connect(
    authority: &str,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
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
                HeaderName::from_bytes(name.trim().as_bytes())?,
                HeaderValue::from_str(value.trim())?,
            ))
        })
        .collect()
}
