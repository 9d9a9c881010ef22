//! The one harness for running the real `hookd` binary, shared by the end-to-end suites
//! (`tests/`), the crash harness (`hookd-reliability`), the benchmarks (`hookd-bench`) and
//! `xtask`.
//!
//! Design decisions:
//! - **The real binary, built from this workspace.** [`hookd_binary`] builds `hookd` once per
//!   test process with the test's own profile and target folder (`HOOKD_BIN` overrides), so a
//!   suite never runs a stale daemon and never a mock of it.
//! - **OS-picked ports.** Every daemon listens on `127.0.0.1:0`; [`Daemon`] reads the
//!   addresses it prints, never guesses a free port.
//! - **Deadlines, not sleeps.** [`wait_until`], [`wait_for`] and [`Daemon::wait_for_log`]
//!   poll an observable condition and fail with what they were waiting for.
//! - **Light by default for tools.** The process, HTTP and waiting parts need only `std` and
//!   `libc`; the reqwest client (`client`), the SQLite views (`store`) and the fake API
//!   (`fake-api`) are features, on by default, that xtask leaves off.

mod binary;
mod daemon;
mod env;
pub mod http;
pub mod process;
mod wait;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "fake-api")]
pub mod fake_api;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "store")]
mod store;

pub use binary::{BinaryError, hookd_binary};
pub use daemon::{Daemon, DaemonError, Launch, proc_status_kib, wait_with_timeout};
pub use env::{Env, SECRET, install_plugin};
pub use wait::{poll_until, wait_for, wait_until};

#[cfg(feature = "client")]
pub use client::{client, event, secret, sign};
#[cfg(feature = "store")]
pub use store::{DeliveryRow, StoreView, deliveries, kv_counter, stored_ids};
