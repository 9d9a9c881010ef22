//! hookd's engine: everything between the listeners and the plugins. It owns the plugin
//! catalog ([`plugins`]), hot reload ([`reload`]), the dispatcher ([`dispatch`]) and the
//! plugins' threads ([`isolation`]), the plugins' key-value store ([`kv`]), the service
//! manager's protocol ([`notify`]) and logging ([`logging`]); [`Daemon`] starts them all
//! together. The `hookd` binary is its command line.

pub mod daemon;
pub mod dispatch;
pub mod isolation;
pub mod kv;
pub mod logging;
pub mod notify;
pub mod plugins;
pub mod reload;

pub use daemon::{Daemon, run};
