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
//! - **Synchronous handler, async inside when needed.** `handle` is a plain function; the
//!   [`http`] helpers run `wstd`'s executor for the duration of a request, so a plugin that
//!   never does I/O pays nothing for it.
//! - **Outgoing HTTP is standard `wasi:http`.** Through `wstd`, which the host polices with the
//!   plugin's allow-list; no hookd-specific ABI.

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
    pub fn post_json(
        url: &str,
        headers: &[(&str, &str)],
        json: &serde_json::Value,
    ) -> Result<Answer, Error> {
        let body = serde_json::to_vec(json).map_err(|e| Error::give_up(e.to_string()))?;
        let mut request = Request::post(url).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Body::from(body))
            .map_err(|e| Error::give_up(format!("bad request to {url}: {e}")))?;
        wstd::runtime::block_on(async move {
            let response = Client::new()
                .send(request)
                .await
                .map_err(|e| Error::retry(format!("POST {url} failed: {e}")))?;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let body = body
                .contents()
                .await
                .map_err(|e| Error::retry(format!("reading the answer of {url} failed: {e}")))?
                .to_vec();
            Ok(Answer { status, body })
        })
    }
}
