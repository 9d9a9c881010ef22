//! `hookd-ceiling`: the reference point for ingest benchmarks. A bare warp endpoint that reads
//! the body (capped at 1 MiB), verifies its signature and answers 200; no parsing, no
//! storage, no logging.
//!
//! Whatever hookd does beyond this (parse, dedup, durable commit) is measured against it, so
//! it is kept as lean as a well-written verify-only endpoint would be: a multi-threaded
//! runtime, the HMAC key schedule computed once, static answers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use hookd_core::{SIGNATURE_HEADER, Verifier};
use warp::Filter;
use warp::http::header::CONTENT_TYPE;
use warp::http::{HeaderValue, StatusCode};

/// Bodies above this are refused with 413, from their Content-Length, before being read.
const MAX_BODY_BYTES: u64 = 1024 * 1024;

#[derive(Parser)]
#[command(about = "Verify-only webhook endpoint: the ingest benchmark's ceiling")]
struct Args {
    /// Address to listen on; port 0 picks a free port. The first stdout line is
    /// `listening on IP:PORT`.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// File holding the webhook secret (a trailing newline is ignored).
    #[arg(long)]
    secret_file: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = hookd_bench::read_secret(&args.secret_file)?;
    let verifier = Arc::new(Verifier::new([&secret])?);
    let route = warp::post()
        .and(warp::path("webhooks"))
        .and(warp::path::end())
        .and(warp::header::optional::<HeaderValue>(SIGNATURE_HEADER))
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::bytes())
        .map(move |signature: Option<HeaderValue>, body: Bytes| {
            let (status, answer) =
                match verifier.verify(&body, signature.as_ref().map(HeaderValue::as_bytes)) {
                    Ok(()) => (StatusCode::OK, r#"{"ok":true}"#),
                    Err(_) => (StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#),
                };
            warp::reply::with_status(
                warp::reply::with_header(answer, CONTENT_TYPE, "application/json"),
                status,
            )
        });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let bound = listener.local_addr().context("no local address")?;
    // Scripts read the port from this line (picking a free port first would be racy).
    println!("listening on {bound}");
    warp::serve(route).incoming(listener).run().await;
    Ok(())
}
