//! `hookd-ceiling`: the reference point for ingest benchmarks. A bare warp endpoint that reads
//! the body, verifies its signature and answers 200; no parsing, no storage, no logging.
//!
//! Whatever hookd does beyond this (parse, dedup, durable commit) is measured against it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use hookd_core::{SIGNATURE_HEADER, Verifier};
use warp::Filter;
use warp::http::{HeaderValue, StatusCode};

#[derive(Parser)]
#[command(about = "Verify-only webhook endpoint: the ingest benchmark's ceiling")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// File holding the webhook secret.
    #[arg(long)]
    secret_file: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = hookd_config::SecretSource::File(args.secret_file.display().to_string())
        .resolve(std::path::Path::new(""))
        .map_err(anyhow::Error::msg)?;
    let verifier = Arc::new(Verifier::new([&secret]).context("no secret")?);
    let route = warp::post()
        .and(warp::path("webhooks"))
        .and(warp::path::end())
        .and(warp::header::optional::<HeaderValue>(SIGNATURE_HEADER))
        .and(warp::body::content_length_limit(1024 * 1024))
        .and(warp::body::bytes())
        .map(move |signature: Option<HeaderValue>, body: Bytes| {
            let verified = verifier.verify(&body, signature.as_ref().map(HeaderValue::as_bytes));
            match verified {
                Ok(()) => warp::reply::with_status(r#"{"ok":true}"#, StatusCode::OK),
                Err(_) => warp::reply::with_status(
                    r#"{"error":"unauthorized"}"#,
                    StatusCode::UNAUTHORIZED,
                ),
            }
        });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    warp::serve(route).incoming(listener).run().await;
    Ok(())
}
