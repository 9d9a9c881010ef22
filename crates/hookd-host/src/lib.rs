//! hookd's WebAssembly plugin host.
//!
//! **Boundary:** the only crate that knows wasmtime. It narrows it to what hookd needs: compile
//! a plugin, run one delivery in a sandbox, report the outcome.
//!
//! Design decisions:
//! - **One [`wasmtime::Engine`], a fresh `Store` per delivery.** Nothing a plugin does in one
//!   delivery survives into the next; the pooling allocator makes a fresh instance cheap
//!   (tens of microseconds). Each plugin is pre-instantiated once (`PluginPre`), at load.
//! - **Every failure is a value.** A trap, a deadline, a memory-limit hit or a host error
//!   comes back as [`Outcome::Failed`]; nothing a plugin does can fail the daemon.
//! - **Deadlines twice.** Epoch interruption (a ticker thread) stops a plugin burning CPU;
//!   a tokio timeout around the whole call stops one blocked in a host call (an HTTP server
//!   that never answers).
//! - **Deny by default.** WASI gets no filesystem, environment, arguments or sockets;
//!   stdout/stderr are captured (capped) into the log. Outgoing HTTP goes through the standard
//!   `wasi:http` interface, checked against the plugin's allow-list; a name must resolve to
//!   public addresses only (unless the origin is an IP literal or `localhost`, or the manifest
//!   sets `http_allow_private_addresses`), and the connection goes to the address that was
//!   checked, kept alive in the plugin's own pool (`outgoing`).
//! - **Key-value storage is a seam.** [`KvStore`] is implemented by the daemon over its store,
//!   namespaced per plugin.

mod address;
mod cache;
mod escape;
mod http_call;
mod http_policy;
mod memory_kv;
mod outgoing;
mod output;
mod plugin;
mod state;

pub use cache::{CacheError, CodeCache};
pub use escape::{MAX_REASON_BYTES, escape_controls};
pub use memory_kv::MemoryKv;
pub use outgoing::OutgoingStats;
pub use plugin::{
    Delivery, DeliveryEvent, FailureKind, HOST_BYTES_PER_INSTANCE, HostSettings, LoadError,
    LoadStats, LoadedPlugin, Outcome, PluginHost, content_hash,
};
pub use state::{KvError, KvStore, LogLine, NoKv};

/// The WIT world, as Rust bindings.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}
