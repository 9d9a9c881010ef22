//! hookd's engine: everything between the listeners and the plugins. It owns the plugin
//! catalog ([`plugins`]), hot reload ([`reload`]), the dispatcher (`dispatch`) and the
//! plugins' threads ([`isolation`]), the plugins' key-value store (`kv`), the service
//! manager's protocol (`notify`) and logging ([`logging`]); [`Daemon`] starts them all
//! together. The `hookd` binary is its command line.
//!
//! Public are the modules something outside uses: the daemon, the plugin catalog and reload
//! (the `hookd` commands, the in-process tests), the plugins' runtime and logging; the
//! dispatcher, the kv and notify are wired up by [`Daemon`] alone.

pub mod cluster;
pub mod daemon;
mod dispatch;
pub mod isolation;
mod kv;
pub mod logging;
mod notify;
pub mod plugins;
pub mod reload;

pub use daemon::{Daemon, connect_nats, run};
