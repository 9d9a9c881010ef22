//! hookd's configuration: the TOML schema, its defaults, and one validation pass.
//!
//! Design decisions:
//! - **Two stages.** [`RawConfig`] is what serde reads (`deny_unknown_fields`, explicit
//!   defaults, names with units such as `max_body_bytes`); [`RawConfig::validate`] turns it into
//!   a [`Config`] of checked, resolved values or returns *every* problem at once. `hookd check`
//!   and `hookd serve` run the same code.
//! - **Errors point at the source.** Every problem names the key, and the `file:line:column`
//!   when the value came from a file.
//! - **One plugin catalog.** [`Catalog`] is the one place that says which plugins make up the
//!   set: the `[[plugin]]` entries and the plugin folder's `NAME.wasm` + `NAME.toml`, each
//!   through the same validation within the `[plugins]` ceilings ([`PluginCaps`]), the set
//!   admitted within `memory_budget_mb` ([`budget`]). A start, a reload and `hookd check` read
//!   it; a folder that cannot be read is a refusal that keeps what serves.
//! - **Secrets never transit argv or logs.** A secret entry is inline, `env:NAME` or
//!   `file:PATH` (systemd credentials: `file:${CREDENTIALS_DIRECTORY}/webhook-secret`); resolved
//!   secrets are [`hookd_core::Secret`]s, whose `Debug` is redacted. A value that fails to
//!   parse on a key that may hold a secret is not quoted back in the error, and the raw
//!   structs' `Debug` hides secrets and plugin `config` values.
//! - **Relative paths are relative to the config file's folder**, not to the working
//!   directory, so a config means the same thing whoever starts the daemon.

#![forbid(unsafe_code)]

pub mod budget;
pub mod catalog;
mod error;
pub mod plugin;
mod raw;
mod secrets;
mod store;
mod toml_error;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use budget::HOST_BYTES_PER_INSTANCE;
pub use catalog::Catalog;
pub use error::{ConfigError, ConfigErrors, Location};
pub use plugin::{
    Capabilities, KV_MAX_KEY_BYTES, Limits, Origin, PluginCaps, PluginSpec, RetryPolicy,
};
pub use raw::{
    AdminSection, LogFormat, LogSection, NatsSection, PluginPriority, PluginsSection, RawConfig,
    ServerSection, StoreSection, VerifySection,
};
pub use secrets::SecretSource;

use hookd_core::Secret;

/// A validated configuration, every value checked and every secret resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration was read from, if from a file.
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub secrets: Vec<Secret>,
    pub store: StoreConfig,
    pub plugins: PluginsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub path: String,
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    pub max_connections: usize,
    /// Connection slots one client (an IPv4 address, an IPv6 /64) may hold.
    pub max_connections_per_client: usize,
    /// Bytes of request bodies being read at once, all clients together.
    pub max_inflight_body_bytes: usize,
    /// The part of `max_inflight_body_bytes` one client may hold: the same share as of the
    /// connection slots, and at least `max_body_bytes`.
    pub max_inflight_body_bytes_per_client: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub retry_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `None` when the admin listener is switched off (`listen = ""`).
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub dir: PathBuf,
    pub dedup_window: Duration,
    pub queue_capacity: usize,
    pub max_batch: usize,
    /// Bytes of events waiting for (or in) a commit before ingest answers 503.
    pub queue_max_bytes: usize,
    /// Where events, deliveries and keys are kept: SQLite in `dir` (the default), or a NATS
    /// JetStream cluster shared by several hookd instances. `dir` keeps the compiled-code
    /// cache either way.
    pub backend: StoreBackend,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreBackend {
    #[default]
    Sqlite,
    Nats(Box<NatsStoreConfig>),
}

/// `[store.nats]`, validated, its credentials read.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsStoreConfig {
    pub servers: Vec<String>,
    pub auth: NatsCredentials,
    pub prefix: String,
    pub replicas: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub ack_wait: Duration,
    pub duplicate_window: Duration,
    pub max_event_age: Duration,
    /// 0: no limit but the server's.
    pub max_stream_bytes: u64,
    pub dead_letter_age: Duration,
    pub prefetch: usize,
}

impl std::fmt::Debug for NatsStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStoreConfig")
            .field("servers", &self.servers)
            .field("auth", &self.auth.kind())
            .field("prefix", &self.prefix)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

/// How hookd logs in to NATS, the secrets read.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum NatsCredentials {
    #[default]
    None,
    /// A `.creds` file's contents (user JWT and NKey seed).
    Creds(String),
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
}

impl std::fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl NatsCredentials {
    /// What kind, for logs: never the secret.
    pub fn kind(&self) -> &'static str {
        match self {
            NatsCredentials::None => "none",
            NatsCredentials::Creds(_) => "credentials file",
            NatsCredentials::UserPassword { .. } => "user and password",
            NatsCredentials::Token(_) => "token",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PluginsConfig {
    pub dir: PathBuf,
    pub max_instances: u32,
    pub max_memory_bytes: u64,
    /// The ceilings every plugin must fit, with the two above: see [`PluginCaps`], which
    /// [`PluginsConfig::caps`] puts together.
    pub memory_budget_bytes: u64,
    pub max_timeout: Duration,
    pub max_kv_keys: u64,
    pub max_kv_value_bytes: u64,
    pub max_kv_bytes: u64,
    pub max_http_timeout: Duration,
    pub max_http_response_bytes: u64,
    pub pooling: bool,
    /// How the threads that run plugins are scheduled against the listeners'.
    pub priority: PluginPriority,
    /// Plugins declared in the main config (`[[plugin]]`); they take precedence over a
    /// `NAME.toml` of the same name in the folder.
    pub declared: Vec<PluginSpec>,
}

impl PluginsConfig {
    /// The ceilings every plugin must fit, folder manifest or `[[plugin]]` entry alike.
    pub fn caps(&self) -> PluginCaps {
        PluginCaps {
            max_instances: self.max_instances,
            max_memory_bytes: self.max_memory_bytes,
            memory_budget_bytes: self.memory_budget_bytes,
            max_timeout: self.max_timeout,
            max_kv_keys: self.max_kv_keys,
            max_kv_value_bytes: self.max_kv_value_bytes,
            max_kv_bytes: self.max_kv_bytes,
            max_http_timeout: self.max_http_timeout,
            max_http_response_bytes: self.max_http_response_bytes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::single(ConfigError::new(
                Location::file(path),
                "",
                format!("cannot read the config file: {e}"),
            ))
        })?;
        Self::from_toml(&text, Some(path))
    }

    /// Parses and validates TOML text. `path` is used for messages and for resolving relative
    /// paths; without it they are relative to the working directory.
    pub fn from_toml(text: &str, path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let raw = RawConfig::parse(text, path)?;
        raw.validate(text, path)
    }
}
