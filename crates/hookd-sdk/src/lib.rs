//! Write hookd plugins in Rust.
//!
//! A plugin is a type implementing [`Plugin`], exported with [`export_plugin!`], built with
//! `cargo build --release --target wasm32-wasip2`:
//!
//! ```ignore
//! use hookd_sdk::{Event, Plugin, Error, log};
//!
//! struct Logger;
//!
//! impl Plugin for Logger {
//!     fn handle(event: Event) -> Result<(), Error> {
//!         log::info(&format!("{} {}", event.event_type, event.id));
//!         Ok(())
//!     }
//! }
//!
//! hookd_sdk::export_plugin!(Logger);
//! ```
//!
//! Design decisions:
//! - **Typed events come from `hookd-core`.** The daemon and plugins share one model of
//!   Protocol's events ([`model`], [`Payload`]); unknown fields are kept.
//! - **Synchronous handler.** `handle` is a plain function; [`http::post_json`] blocks on
//!   its request, so a plugin that never does I/O pays nothing for it.
//! - **Outgoing HTTP is standard `wasi:http`.** The host polices it with the plugin's
//!   allow-list; no hookd-specific ABI. [`http::post_json`] calls `wasi:http` directly (the
//!   fewest host calls a request can take, a `Content-Length` body); `wstd`'s client is
//!   re-exported for anything else.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "hookd_sdk::bindings",
    });
}

use bindings::hookd::plugin::types;

pub use hookd_core::{EventType, Payload, model};

/// One event delivered to the plugin.
#[derive(Debug, Clone)]
pub struct Event {
    /// Protocol's event id; the same on every retry (delivery is at least once).
    pub id: String,
    pub event_type: EventType,
    /// The payload's JSON text, exactly as Protocol sent it.
    pub payload_json: String,
    /// When hookd received the event, Unix milliseconds.
    pub received_at_ms: u64,
    /// 1 on the first delivery.
    pub attempt: u32,
}

impl Event {
    /// The payload typed by the event's resource (`message.*` gives [`Payload::Message`]...).
    pub fn payload(&self) -> Result<Payload, Error> {
        Payload::parse(&self.event_type, &self.payload_json)
            .map_err(|e| Error::give_up(format!("payload of {} is not valid: {e}", self.id)))
    }
}

/// A failed delivery: retry later, or give up (dead letter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Retry(String),
    GiveUp(String),
}

impl Error {
    pub fn retry(message: impl Into<String>) -> Self {
        Error::Retry(message.into())
    }

    pub fn give_up(message: impl Into<String>) -> Self {
        Error::GiveUp(message.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Retry(m) => write!(f, "retry: {m}"),
            Error::GiveUp(m) => write!(f, "give up: {m}"),
        }
    }
}

/// A hookd plugin.
pub trait Plugin {
    /// Handles one event. `Ok` marks the delivery done.
    fn handle(event: Event) -> Result<(), Error>;
}

/// Exports `$plugin` (a type implementing [`Plugin`]) as the component's handler.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __HookdExport;

        impl $crate::bindings::Guest for __HookdExport {
            fn handle(
                event: $crate::bindings::hookd::plugin::types::Event,
            ) -> ::core::result::Result<(), $crate::bindings::hookd::plugin::types::HandleError>
            {
                $crate::__dispatch::<$plugin>(event)
            }
        }

        $crate::bindings::export!(__HookdExport);
    };
}

#[doc(hidden)]
pub fn __dispatch<P: Plugin>(event: types::Event) -> Result<(), types::HandleError> {
    let event = Event {
        id: event.id,
        event_type: EventType::parse(&event.event_type),
        payload_json: event.payload,
        received_at_ms: event.received_at_ms,
        attempt: event.attempt,
    };
    P::handle(event).map_err(|e| match e {
        Error::Retry(m) => types::HandleError::Retry(m),
        Error::GiveUp(m) => types::HandleError::GiveUp(m),
    })
}

/// Logging into the daemon's log; the host attaches the plugin name and the event.
pub mod log {
    use crate::bindings::hookd::plugin::log::{Level, log};

    pub fn trace(message: &str) {
        log(Level::Trace, message);
    }
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// The plugin's `[config]` table.
pub mod config {
    use crate::Error;
    use crate::bindings::hookd::plugin::config as host;

    pub fn get(key: &str) -> Option<String> {
        host::get(key)
    }

    /// The value of `key`, or a give-up error naming the missing key.
    pub fn require(key: &str) -> Result<String, Error> {
        host::get(key).ok_or_else(|| Error::give_up(format!("config key `{key}` is not set")))
    }

    pub fn keys() -> Vec<String> {
        host::keys()
    }
}

/// The plugin's durable key-value store (needs `kv = true` under `[capabilities]`).
pub mod kv {
    use crate::Error;
    use crate::bindings::hookd::plugin::kv as host;

    pub use host::Error as KvError;

    fn convert(e: KvError) -> Error {
        match e {
            KvError::Denied => Error::give_up("the kv capability is not granted"),
            KvError::QuotaExceeded(m) => Error::give_up(format!("kv quota exceeded: {m}")),
            KvError::Storage(m) => Error::retry(format!("kv storage failed: {m}")),
        }
    }

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        host::get(key).map_err(convert)
    }

    pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
        host::set(key, value).map_err(convert)
    }

    pub fn delete(key: &str) -> Result<(), Error> {
        host::delete(key).map_err(convert)
    }

    /// Adds `delta` to the counter at `key` (0 if absent) and returns the new value.
    pub fn increment(key: &str, delta: i64) -> Result<i64, Error> {
        host::increment(key, delta).map_err(convert)
    }
}

/// Outgoing HTTP over `wasi:http`, limited by the plugin's `[capabilities] http` allow-list.
pub mod http {
    use crate::Error;

    pub use wstd::http::{Body, Client, Method, Request, Response, StatusCode};

    /// A finished response: status and the whole body.
    #[derive(Debug, Clone)]
    pub struct Answer {
        pub status: u16,
        pub body: Vec<u8>,
    }

    impl Answer {
        /// Maps the status to a delivery outcome: 2xx is fine, 429 and 5xx are worth a retry,
        /// any other status is permanent.
        pub fn into_result(self, what: &str) -> Result<Answer, Error> {
            match self.status {
                200..=299 => Ok(self),
                429 | 500..=599 => Err(Error::retry(format!("{what}: HTTP {}", self.status))),
                s => Err(Error::give_up(format!("{what}: HTTP {s}"))),
            }
        }
    }

    /// POSTs `json` to `url` with extra `headers`; blocks until the whole answer arrived.
    /// A refused or failed connection is a retry.
    ///
    /// The body goes with a `Content-Length` (the server reads a plain body, not chunks), and
    /// the request is made with `wasi:http` directly, in about two dozen host calls: no
    /// executor, no header map copied in or out. `content-length` and `transfer-encoding` in
    /// `headers` are ignored (the body's framing is this function's).
    pub fn post_json(
        url: &str,
        headers: &[(&str, &str)],
        json: &serde_json::Value,
    ) -> Result<Answer, Error> {
        let body = serde_json::to_vec(json).map_err(|e| Error::give_up(e.to_string()))?;
        raw::post(url, "application/json", headers, &body)
    }

    /// The `wasi:http` calls behind [`post_json`].
    mod raw {
        use crate::Error;
        use wasip2::http::outgoing_handler;
        use wasip2::http::types::{
            ErrorCode, Fields, FutureIncomingResponse, IncomingResponse, Method, OutgoingBody,
            OutgoingRequest, Scheme,
        };
        use wasip2::io::streams::{OutputStream, StreamError};

        /// Bodies up to this size are written and finished before the request is handed to
        /// the host, so its head and body leave in one write. It is the most one
        /// `blocking-write-and-flush` takes, and fits the host's body buffer with nobody
        /// reading it yet.
        const SMALL_BODY: usize = 4096;
        /// Bytes asked for per read of the answer: most answers arrive in one.
        const READ_CHUNK: u64 = 64 * 1024;

        pub(super) fn post(
            url: &str,
            content_type: &str,
            headers: &[(&str, &str)],
            body: &[u8],
        ) -> Result<super::Answer, Error> {
            let bad = |what: &dyn std::fmt::Display| {
                Error::give_up(format!("bad request to {url}: {what}"))
            };
            let uri: wstd::http::Uri = url.parse().map_err(|e| bad(&e))?;
            let scheme = match uri.scheme_str() {
                Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
                Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
                Some(s) => Scheme::Other(s.to_owned()),
                None => return Err(bad(&"the URL has no scheme")),
            };
            let authority = uri
                .authority()
                .ok_or_else(|| bad(&"the URL has no host"))?
                .as_str();
            let path = uri.path_and_query().map_or("/", |p| p.as_str());

            let length = body.len().to_string();
            let mut fields: Vec<(String, Vec<u8>)> = Vec::with_capacity(headers.len() + 2);
            fields.push(("content-type".into(), content_type.as_bytes().to_vec()));
            fields.push(("content-length".into(), length.into_bytes()));
            for (name, value) in headers {
                if name.eq_ignore_ascii_case("content-length")
                    || name.eq_ignore_ascii_case("transfer-encoding")
                {
                    continue;
                }
                fields.push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
            }
            let fields = Fields::from_list(&fields).map_err(|e| bad(&format!("{e:?}")))?;
            let request = OutgoingRequest::new(fields);
            request
                .set_method(&Method::Post)
                .and_then(|()| request.set_scheme(Some(&scheme)))
                .and_then(|()| request.set_authority(Some(authority)))
                .and_then(|()| request.set_path_with_query(Some(path)))
                .map_err(|()| bad(&"the host refused its method, scheme, host or path"))?;
            let outgoing = request
                .body()
                .map_err(|()| bad(&"the host refused its body"))?;
            let failed = |what: String| Error::retry(format!("POST {url} failed: {what}"));

            let answer = if body.len() <= SMALL_BODY {
                write_body(&outgoing, body).map_err(&failed)?;
                OutgoingBody::finish(outgoing, None).map_err(|e| failed(describe(&e)))?;
                outgoing_handler::handle(request, None).map_err(|e| failed(describe(&e)))?
            } else {
                let answer =
                    outgoing_handler::handle(request, None).map_err(|e| failed(describe(&e)))?;
                // A write fails when the host dropped the request (refused, or the
                // connection failed): the answer then says why.
                if let Err(what) = write_body(&outgoing, body) {
                    drop(outgoing);
                    return Err(failed(refusal(&answer).unwrap_or(what)));
                }
                if let Err(e) = OutgoingBody::finish(outgoing, None) {
                    return Err(failed(refusal(&answer).unwrap_or_else(|| describe(&e))));
                }
                answer
            };

            let response = wait(&answer).map_err(|e| failed(describe(&e)))?;
            drop(answer);
            let status = response.status();
            let body = read_body(&response).map_err(|what| {
                Error::retry(format!("reading the answer of {url} failed: {what}"))
            })?;
            Ok(super::Answer { status, body })
        }

        /// Writes all of `bytes` to the body, as fast as the host takes them.
        fn write_body(outgoing: &OutgoingBody, bytes: &[u8]) -> Result<(), String> {
            let stream = outgoing
                .write()
                .map_err(|()| "the body was already taken".to_owned())?;
            let result = if bytes.len() <= SMALL_BODY {
                if bytes.is_empty() {
                    Ok(())
                } else {
                    stream.blocking_write_and_flush(bytes)
                }
            } else {
                write_all(&stream, bytes)
            };
            // The stream must be gone before the body is finished.
            drop(stream);
            result.map_err(|e| stream_error(&e))
        }

        fn write_all(stream: &OutputStream, mut bytes: &[u8]) -> Result<(), StreamError> {
            let mut ready = None;
            while !bytes.is_empty() {
                let room = stream.check_write()?;
                if room == 0 {
                    ready.get_or_insert_with(|| stream.subscribe()).block();
                    continue;
                }
                let n = bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX));
                stream.write(&bytes[..n])?;
                bytes = &bytes[n..];
            }
            Ok(())
        }

        /// The error the host answered with, if it already did.
        fn refusal(answer: &FutureIncomingResponse) -> Option<String> {
            match answer.get() {
                Some(Ok(Err(e))) => Some(describe(&e)),
                _ => None,
            }
        }

        fn wait(answer: &FutureIncomingResponse) -> Result<IncomingResponse, ErrorCode> {
            loop {
                match answer.get() {
                    Some(Ok(result)) => return result,
                    // Taken twice: cannot happen, as this is the only `get` after a ready one.
                    Some(Err(())) => return Err(ErrorCode::InternalError(None)),
                    None => answer.subscribe().block(),
                }
            }
        }

        fn read_body(response: &IncomingResponse) -> Result<Vec<u8>, String> {
            let body = response
                .consume()
                .map_err(|()| "the body was already taken".to_owned())?;
            let stream = body
                .stream()
                .map_err(|()| "the body stream was already taken".to_owned())?;
            let mut out = Vec::new();
            let result = loop {
                match stream.blocking_read(READ_CHUNK) {
                    Ok(chunk) if out.is_empty() => out = chunk,
                    Ok(chunk) => out.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break Ok(out),
                    Err(e) => break Err(stream_error(&e)),
                }
            };
            drop(stream);
            result
        }

        fn stream_error(e: &StreamError) -> String {
            match e {
                StreamError::Closed => "the stream was closed".to_owned(),
                StreamError::LastOperationFailed(error) => {
                    match wasip2::http::types::http_error_code(error) {
                        Some(code) => describe(&code),
                        None => error.to_debug_string(),
                    }
                }
            }
        }

        fn describe(code: &ErrorCode) -> String {
            format!("{code:?}")
        }
    }
}
