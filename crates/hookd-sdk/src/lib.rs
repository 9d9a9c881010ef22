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
//! - **Outgoing HTTP in one host call.** [`http::send`] (and [`http::post_json`], [`http::get`])
//!   hand the whole request to `hookd:plugin/http` and get the whole answer back: one call
//!   where `wasi:http` takes a couple of dozen, under the same policy (allow-list, address
//!   checks, pooled connections, caps). `wstd`'s `wasi:http` client is re-exported for
//!   streamed bodies.

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

/// Outgoing HTTP, limited by the plugin's `[capabilities] http` allow-list.
///
/// [`send`], [`get`] and [`post_json`] make the whole request in one host call
/// (`hookd:plugin/http`): the body up to 1 MiB, the answer read whole up to the manifest's
/// `http_max_response_bytes`. `wstd`'s client (re-exported here) speaks `wasi:http`, under the
/// same policy, for streamed bodies.
pub mod http {
    use crate::Error;
    use crate::bindings::hookd::plugin::http as host;

    pub use wstd::http::{Body, Client, Method, Request, Response, StatusCode};

    /// A finished response: status, headers (names in lowercase) and the whole body.
    #[derive(Debug, Clone, Default)]
    #[non_exhaustive]
    pub struct Answer {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Answer {
        /// An answer with `status` and `body` and no headers (for tests of a plugin's logic).
        pub fn new(status: u16, body: Vec<u8>) -> Answer {
            Answer {
                status,
                headers: Vec::new(),
                body,
            }
        }

        /// The first value of header `name` (any case).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

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

    /// Sends `method url` with `headers` and `body` (sent with a `Content-Length`), and
    /// waits for the whole answer, within the manifest's `http_timeout_ms`.
    ///
    /// A refused origin or address and a failed exchange are a retry (a fixed manifest, a
    /// server back up, let it pass); a request that cannot be sent as written, or an answer
    /// over the size cap, gives up. `content-length`, `transfer-encoding`, `connection` and
    /// `host` in `headers` are ignored: they are the host's.
    pub fn send(
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, Error> {
        let request = host::Request {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_vec(),
            timeout_ms: None,
        };
        match host::send(&request) {
            Ok(r) => Ok(Answer {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(host::Error::Denied(m)) => {
                Err(Error::retry(format!("{method} {url} refused: {m}")))
            }
            Err(host::Error::Failed(m)) => Err(Error::retry(format!("{method} {url} failed: {m}"))),
            Err(host::Error::Invalid(m)) => {
                Err(Error::give_up(format!("bad request {method} {url}: {m}")))
            }
            Err(host::Error::ResponseTooLarge(limit)) => Err(Error::give_up(format!(
                "{method} {url}: the answer is over the {limit} bytes this plugin may receive"
            ))),
        }
    }

    /// GETs `url` with `headers`; see [`send`].
    pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Answer, Error> {
        send("GET", url, headers, &[])
    }

    /// POSTs `json` to `url` with extra `headers` (and `content-type: application/json`,
    /// unless `headers` names one); see [`send`].
    pub fn post_json(
        url: &str,
        headers: &[(&str, &str)],
        json: &serde_json::Value,
    ) -> Result<Answer, Error> {
        let body = serde_json::to_vec(json).map_err(|e| Error::give_up(e.to_string()))?;
        if headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            return send("POST", url, headers, &body);
        }
        let mut all = Vec::with_capacity(headers.len() + 1);
        all.push(("content-type", "application/json"));
        all.extend_from_slice(headers);
        send("POST", url, &all, &body)
    }
}
