//! `hookd:plugin/http`: an outgoing request in one host call, the answer whole.
//!
//! Design decisions:
//! - **The same policy, one call.** The request goes through [`HttpPolicy::route`] (the
//!   allow-list, the address rule) and the plugin's [`crate::outgoing`] pool (checked and
//!   pinned addresses, kept-alive connections, the plugin's request slots), exactly as a
//!   `wasi:http` request; only the way the guest hands it over differs. A request through
//!   `wasi:http` takes a couple of dozen host calls (fields, request, body, stream, future,
//!   pollables) and two tasks in `wasmtime-wasi-http`; this takes one call and none.
//! - **Whole bodies, bounded.** The request body is at most [`MAX_CALL_BODY_BYTES`] (larger
//!   ones stream through `wasi:http`), headers at most [`crate::plugin::MAX_FIELDS_BYTES`]
//!   like a `wasi:http` `fields`, and the answer's body is read up to the manifest's
//!   `http_max_response_bytes` (at most [`MAX_CALL_ANSWER_BYTES`]), refused as soon as its
//!   declared length or its bytes pass it.
//!   What the host holds for one call is within `HOST_BYTES_PER_INSTANCE`.
//! - **One deadline.** `timeout-ms` (capped by, and defaulting to, `http_timeout_ms`) bounds
//!   the whole exchange: waiting for a slot, connecting, the answer and its body.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use tracing::warn;
use wasmtime_wasi_http::Error;

use crate::bindings::hookd::plugin::http as wit;
use crate::http_policy::HttpPolicy;
use crate::outgoing::Timeouts;
use crate::plugin::MAX_FIELDS_BYTES;
use crate::state::HostState;

/// Largest request body `send` takes; larger ones go through `wasi:http`, streamed.
pub(crate) const MAX_CALL_BODY_BYTES: usize = 1 << 20;
/// Largest answer body `send` holds for the guest, whatever the manifest's
/// `http_max_response_bytes` (up to 16 MiB) allows: with the request body, within the
/// outgoing buffers `HOST_BYTES_PER_INSTANCE` counts. Larger answers stream through
/// `wasi:http`.
pub(crate) const MAX_CALL_ANSWER_BYTES: u64 = 3 << 20;

/// Headers the host sets itself (framing, the connection, the authority).
const HOST_HEADERS: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "host",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

impl wit::Host for HostState {
    async fn send(&mut self, request: wit::Request) -> Result<wit::Response, wit::Error> {
        send(&self.policy, request).await
    }
}

async fn send(policy: &HttpPolicy, request: wit::Request) -> Result<wit::Response, wit::Error> {
    let limit = request.timeout_ms.map_or(policy.timeout(), |ms| {
        Duration::from_millis(ms.into()).min(policy.timeout())
    });
    let (target, request) = build(policy, request)?;
    // Only messages need the origin as text: formatted when one is written, not per request.
    let url = || {
        format!(
            "{}://{}:{}",
            if target.tls { "https" } else { "http" },
            target.host,
            target.port
        )
    };
    let failed = |e: Error| match e {
        Error::DestinationIpProhibited => wit::Error::Denied(format!(
            "{} resolves to a non-public address, which this plugin may not reach \
             (`http_allow_private_addresses`)",
            url()
        )),
        e => wit::Error::Failed(describe(&e, &url())),
    };
    let exchange = async {
        let Some(delivery_slot) = policy.delivery_slot().await else {
            return Err(failed(Error::ConnectionLimitReached));
        };
        let Some(plugin_slot) = policy.pool().request_slot().await else {
            return Err(failed(Error::ConnectionLimitReached));
        };
        let timeouts = Timeouts {
            connect: limit,
            first_byte: limit,
            between_bytes: limit,
        };
        let response = policy
            .pool()
            .send(&target, request, timeouts, plugin_slot)
            .await
            .map_err(failed)?;
        let (head, mut body) = response.into_parts();
        let cap = policy.max_response_bytes().min(MAX_CALL_ANSWER_BYTES);
        let too_large = || {
            warn!(plugin = %policy.plugin(), url = %url(), limit = cap,
                "outgoing answer refused: body over the size cap");
            wit::Error::ResponseTooLarge(cap)
        };
        if http_body::Body::size_hint(&body).lower() > cap {
            return Err(too_large());
        }
        let mut bytes: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| failed(Error::Hyper(e)))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() as u64 + data.len() as u64 > cap {
                    return Err(too_large());
                }
                if bytes.is_empty() {
                    bytes = Vec::from(data);
                } else {
                    bytes.extend_from_slice(&data);
                }
            }
        }
        drop(delivery_slot);
        let headers = head
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        Ok(wit::Response {
            status: head.status.as_u16(),
            headers,
            body: bytes,
        })
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(wit::Error::Failed(format!(
            "{}: no complete answer within {} ms",
            url(),
            limit.as_millis()
        ))),
    }
}

/// What failed, for the plugin's message.
fn describe(e: &Error, url: &str) -> String {
    match e {
        Error::Connect(_)
        | Error::ConnectionRefused
        | Error::ConnectionTimeout
        | Error::DnsError { .. }
        | Error::DnsTimeout
        | Error::DestinationNotFound
        | Error::Tls(_) => format!("cannot connect to {url}: {e}"),
        Error::ConnectionLimitReached => format!("no free request slot for {url}"),
        _ => format!("request to {url} failed: {e}"),
    }
}

/// Checks `request` against the policy and the caps, and turns it into what the pool sends.
fn build(
    policy: &HttpPolicy,
    request: wit::Request,
) -> Result<
    (
        crate::outgoing::Target,
        http::Request<wasmtime_wasi_http::WasiBody>,
    ),
    wit::Error,
> {
    let invalid = |what: String| wit::Error::Invalid(what);
    let uri: http::Uri = request
        .url
        .parse()
        .map_err(|e| invalid(format!("`{}` is not a URL: {e}", request.url)))?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        Some(s) => return Err(invalid(format!("scheme `{s}` is not http or https"))),
        None => return Err(invalid(format!("`{}` has no scheme", request.url))),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| invalid(format!("`{}` has no host", request.url)))?
        .clone();
    if authority.as_str().contains('@') {
        return Err(invalid(
            "credentials in the URL are not sent; use a header".into(),
        ));
    }
    let target = policy.route(&uri).map_err(|d| {
        wit::Error::Denied(format!(
            "{}://{}:{} is not in the plugin's `[capabilities] http` allow-list",
            d.scheme, d.host, d.port
        ))
    })?;
    let method = if request.method.bytes().any(|b| b.is_ascii_lowercase()) {
        http::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
    } else {
        http::Method::from_bytes(request.method.as_bytes())
    }
    .map_err(|_| invalid(format!("`{}` is not an HTTP method", request.method)))?;
    if request.body.len() > MAX_CALL_BODY_BYTES {
        return Err(invalid(format!(
            "a body of {} bytes is over the {MAX_CALL_BODY_BYTES} bytes one call sends; \
             stream it through wasi:http",
            request.body.len()
        )));
    }

    let mut headers = http::HeaderMap::with_capacity(request.headers.len() + 2);
    let mut header_bytes = 0usize;
    for (name, value) in &request.headers {
        header_bytes += name.len() + value.len();
        if header_bytes > MAX_FIELDS_BYTES {
            return Err(invalid(format!(
                "the headers are over the host's cap of {MAX_FIELDS_BYTES} bytes"
            )));
        }
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("`{name}` is not a header name")))?;
        if HOST_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| invalid(format!("the value of `{name}` is not a valid header value")))?;
        headers.append(name, value);
    }
    let host = http::HeaderValue::from_str(authority.as_str())
        .map_err(|_| invalid(format!("`{authority}` is not a valid host")))?;
    headers.insert(http::header::HOST, host);
    let sends_length = !request.body.is_empty()
        || matches!(
            method,
            http::Method::POST | http::Method::PUT | http::Method::PATCH
        );
    if sends_length {
        headers.insert(http::header::CONTENT_LENGTH, request.body.len().into());
    }

    let path: http::Uri = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|_| invalid(format!("`{}` has an invalid path", request.url)))?;
    let body = http_body_util::Full::new(Bytes::from(request.body))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut out = http::Request::new(body);
    *out.method_mut() = method;
    *out.uri_mut() = path;
    *out.headers_mut() = headers;
    Ok((target, out))
}
