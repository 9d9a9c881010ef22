//! The pure heart of hookd: signature verification and the Protocol event model.
//!
//! Design decisions:
//! - **No I/O, no async, no clock.** Everything here is a function of its inputs, so it is
//!   trivially testable, fuzzable, and compiles to `wasm32-wasip2` for the plugin SDK. Callers
//!   pass time in when they need it.
//! - **Verify before parse.** [`Verifier`] works on the exact bytes received; [`Envelope`] is
//!   only ever built from bytes that already passed verification (the server enforces the
//!   order, this crate makes each step cheap and total).
//! - **Forward compatible.** Unknown event types become [`EventType::Unknown`] and unknown
//!   payload fields are kept in each model's `extra` map; the payload's raw JSON text is kept
//!   verbatim for plugins.
//! - **Total on hostile input.** Parsing is bounded in size and nesting depth and never panics.

#![forbid(unsafe_code)]

pub mod envelope;
pub mod event_type;
pub mod model;
pub mod pattern;
pub mod signature;

pub use envelope::{Envelope, EnvelopeError, Limits};
pub use event_type::{Action, EventType, Resource};
pub use model::Payload;
pub use pattern::{EventPattern, PatternError};
pub use signature::{SIGNATURE_HEADER, Secret, SecretError, SignatureError, Verifier, sign};
