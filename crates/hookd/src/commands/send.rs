//! `hookd send`: sign an event and POST it, the way Protocol would; print the answer.

use std::process::ExitCode;

use anyhow::Context as _;
use bytes::Bytes;
use hookd_core::SIGNATURE_HEADER;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng as _;

use crate::cli::SendArgs;
use crate::commands::{Threads, fail, read_input, runtime};

pub fn run(args: SendArgs) -> ExitCode {
    let runtime = match runtime(Threads::One) {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    match runtime.block_on(send(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Returns whether the answer was a 2xx.
async fn send(args: SendArgs) -> anyhow::Result<bool> {
    let secret = args.secret.load()?;
    let mut body = read_input(&args.body_file)?;
    if args.new_id {
        body = with_fresh_id(&body)?;
    }
    let signature = hookd_core::sign(&secret, &body);
    let request = hyper::Request::post(&args.url)
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, signature)
        .body(Full::new(Bytes::from(body)))
        .with_context(|| format!("`{}` is not a usable URL", args.url))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(request)
        .await
        .with_context(|| format!("cannot reach {}", args.url))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("the answer's body broke off")?
        .to_bytes();
    println!("{status}");
    println!("{}", String::from_utf8_lossy(&body));
    Ok(status.is_success())
}

fn with_fresh_id(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut event: serde_json::Value =
        serde_json::from_slice(body).context("--new-id needs the body to be a JSON object")?;
    let object = event
        .as_object_mut()
        .context("--new-id needs the body to be a JSON object")?;
    let id: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(16)
        .map(char::from)
        .collect();
    object.insert("id".to_owned(), serde_json::Value::String(id));
    Ok(serde_json::to_vec_pretty(&event)?)
}
