//! The configuration as written: serde structs with explicit defaults, and their validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::plugin::PluginCaps;
use crate::secrets::SecretSource;
use crate::toml_error::{main_config_secrets, parse_error};
use crate::{
    AdminConfig, Config, ConfigError, ConfigErrors, Location, LogConfig, PluginsConfig,
    ServerConfig, StoreConfig,
};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub verify: VerifySection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub plugins: PluginsSection,
    #[serde(default)]
    pub log: LogSection,
    /// Plugins declared here rather than by a `NAME.toml` in the plugin folder.
    #[serde(default)]
    pub plugin: Vec<crate::plugin::RawPlugin>,
}

/// `[server]`: the ingest listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: Spanned<String>,
    pub path: Spanned<String>,
    pub max_body_bytes: Spanned<u64>,
    pub max_json_depth: Spanned<u64>,
    pub max_connections: Spanned<u64>,
    pub header_read_timeout_ms: Spanned<u64>,
    pub body_read_timeout_ms: Spanned<u64>,
    pub retry_after_secs: Spanned<u64>,
    /// Connection slots one client (an IPv4 address, an IPv6 /64) may hold; by default a
    /// quarter of `max_connections`.
    pub max_connections_per_client: Option<Spanned<u64>>,
    /// Bytes of request bodies being read at once, all clients together.
    pub max_inflight_body_bytes: Spanned<u64>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: unspanned("127.0.0.1:8080".to_owned()),
            path: unspanned("/webhooks".to_owned()),
            max_body_bytes: unspanned(1024 * 1024),
            max_json_depth: unspanned(64),
            max_connections: unspanned(1024),
            header_read_timeout_ms: unspanned(5_000),
            body_read_timeout_ms: unspanned(10_000),
            retry_after_secs: unspanned(1),
            max_connections_per_client: None,
            max_inflight_body_bytes: unspanned(64 << 20),
        }
    }
}

/// `[admin]`: health, readiness, metrics and status, on their own address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub listen: Spanned<String>,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: unspanned("127.0.0.1:9090".to_owned()),
        }
    }
}

/// `[verify]`: the secrets a signature may be made with. Its `Debug` shows how many, never
/// what they are.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifySection {
    pub secrets: Vec<Spanned<String>>,
}

impl std::fmt::Debug for VerifySection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifySection")
            .field("secrets", &format_args!("[{} hidden]", self.secrets.len()))
            .finish()
    }
}

/// `[store]`: the embedded durable store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub dir: Spanned<String>,
    pub dedup_window_secs: Spanned<u64>,
    pub queue_capacity: Spanned<u64>,
    pub max_batch: Spanned<u64>,
    /// Bytes of events waiting for (or in) a commit; beyond it ingest answers 503.
    pub queue_max_bytes: Spanned<u64>,
    /// `"sqlite"` (the default) or `"nats"`.
    pub backend: Spanned<String>,
    pub nats: Option<Spanned<NatsSection>>,
}

/// `[store.nats]`: the JetStream cluster several hookd instances share.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    pub servers: Spanned<Vec<String>>,
    /// A `.creds` file's contents: inline, `env:NAME` or `file:PATH` (as `[verify] secrets`).
    pub credentials: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    /// With `user`: inline, `env:NAME` or `file:PATH`.
    pub password: Option<Spanned<String>>,
    /// Inline, `env:NAME` or `file:PATH`.
    pub token: Option<Spanned<String>>,
    pub prefix: Spanned<String>,
    pub replicas: Spanned<u64>,
    pub connect_timeout_ms: Spanned<u64>,
    pub request_timeout_ms: Spanned<u64>,
    pub ack_wait_secs: Spanned<u64>,
    pub duplicate_window_secs: Spanned<u64>,
    pub max_event_age_secs: Spanned<u64>,
    pub max_stream_bytes: Spanned<u64>,
    pub dead_letter_age_secs: Spanned<u64>,
    pub prefetch: Spanned<u64>,
}

impl Default for NatsSection {
    fn default() -> Self {
        Self {
            servers: unspanned(vec!["nats://127.0.0.1:4222".to_owned()]),
            credentials: None,
            user: None,
            password: None,
            token: None,
            prefix: unspanned("hookd".to_owned()),
            replicas: unspanned(1),
            connect_timeout_ms: unspanned(5_000),
            request_timeout_ms: unspanned(5_000),
            ack_wait_secs: unspanned(30),
            duplicate_window_secs: unspanned(600),
            max_event_age_secs: unspanned(14 * 24 * 3600),
            max_stream_bytes: unspanned(0),
            dead_letter_age_secs: unspanned(30 * 24 * 3600),
            prefetch: unspanned(256),
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            dir: unspanned("/var/lib/hookd".to_owned()),
            dedup_window_secs: unspanned(7 * 24 * 3600),
            queue_capacity: unspanned(4096),
            max_batch: unspanned(512),
            queue_max_bytes: unspanned(64 << 20),
            backend: unspanned("sqlite".to_owned()),
            nats: None,
        }
    }
}

/// `[plugins]`: where plugins live and how many may run at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsSection {
    pub dir: Spanned<String>,
    /// Plugin instances alive at once, across all plugins (the pooling allocator's size).
    pub max_instances: Spanned<u64>,
    /// Upper bound for any plugin's `limits.memory_mb`.
    pub max_memory_mb: Spanned<u64>,
    /// What the plugins' worst case together may hold: instances alive at once x (their
    /// `memory_mb` + the host's allowance per instance).
    pub memory_budget_mb: Spanned<u64>,
    /// Upper bound for any plugin's `limits.timeout_ms`.
    pub max_timeout_ms: Spanned<u64>,
    /// Upper bound for any plugin's `capabilities.kv_max_keys`.
    pub max_kv_keys: Spanned<u64>,
    /// Upper bound for any plugin's `capabilities.kv_max_value_bytes`.
    pub max_kv_value_bytes: Spanned<u64>,
    /// The most disk one plugin's key-value store may take.
    pub max_kv_mb: Spanned<u64>,
    /// Upper bound for any plugin's `capabilities.http_timeout_ms`.
    pub max_http_timeout_ms: Spanned<u64>,
    /// Upper bound for any plugin's `capabilities.http_max_response_bytes`.
    pub max_http_response_bytes: Spanned<u64>,
    /// Pre-allocate instance slots (fast instantiation); off trades speed for less reserved
    /// address space.
    pub pooling: bool,
    /// How the threads running plugins are scheduled against the listeners' (ingest first).
    pub priority: PluginPriority,
}

impl Default for PluginsSection {
    fn default() -> Self {
        let c = PluginCaps::default();
        Self {
            dir: unspanned("/etc/hookd/plugins".to_owned()),
            max_instances: unspanned(c.max_instances.into()),
            max_memory_mb: unspanned(c.max_memory_bytes >> 20),
            memory_budget_mb: unspanned(c.memory_budget_bytes >> 20),
            max_timeout_ms: unspanned(c.max_timeout.as_millis() as u64),
            max_kv_keys: unspanned(c.max_kv_keys),
            max_kv_value_bytes: unspanned(c.max_kv_value_bytes),
            max_kv_mb: unspanned(c.max_kv_bytes >> 20),
            max_http_timeout_ms: unspanned(c.max_http_timeout.as_millis() as u64),
            max_http_response_bytes: unspanned(c.max_http_response_bytes),
            pooling: true,
            priority: PluginPriority::default(),
        }
    }
}

/// `[log]`: how the daemon logs. `HOOKD_LOG` and `--log-format` override these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub format: LogFormat,
    pub filter: Spanned<String>,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            filter: unspanned("info".to_owned()),
        }
    }
}

/// How the threads that run plugins are scheduled (`[plugins] priority`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginPriority {
    /// Linux's `SCHED_IDLE`: plugins get only the CPU nothing else wants; a listener thread
    /// that wakes takes the CPU from a plugin at once.
    #[default]
    Idle,
    /// `nice` 10: plugins get about a tenth of the CPU a listener thread gets when both want
    /// it.
    Low,
    /// The same as the listeners.
    Normal,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    #[default]
    Auto,
    Human,
    Json,
}

fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

/// Collects problems with their locations while validating.
pub(crate) struct Problems<'a> {
    text: &'a str,
    path: Option<&'a Path>,
    errors: Vec<ConfigError>,
}

impl Problems<'_> {
    pub(crate) fn at<T>(&mut self, key: &str, value: &Spanned<T>, message: impl Into<String>) {
        let span = value.span();
        let location = if span.is_empty() {
            // A default value: it has no place in the file.
            Location {
                file: self.path.map(Path::to_owned),
                line_col: None,
            }
        } else {
            Location::span(self.path, self.text, span)
        };
        self.errors.push(ConfigError::new(location, key, message));
    }

    /// `value` as a usize within `min..=max`.
    pub(crate) fn bounded(&mut self, key: &str, value: &Spanned<u64>, min: u64, max: u64) -> usize {
        let v = *value.get_ref();
        if v < min || v > max {
            self.at(
                key,
                value,
                format!("must be between {min} and {max}, got {v}"),
            );
        }
        usize::try_from(v.clamp(min, max)).unwrap_or(usize::MAX)
    }
}

impl RawConfig {
    /// Parses TOML text; shape errors (unknown keys, wrong types) come back located.
    /// A value on a key that may hold a secret is never quoted back (see `toml_error`).
    pub fn parse(text: &str, path: Option<&Path>) -> Result<RawConfig, ConfigErrors> {
        toml::from_str(text)
            .map_err(|e| ConfigErrors::single(parse_error(&e, text, path, main_config_secrets)))
    }

    /// `[store] dir`, resolved as [`RawConfig::validate`] resolves it (relative to the config
    /// file's folder), with nothing else validated and no secret read: for tools that only open
    /// the store, run by an operator who does not hold the service's credentials. `None` when
    /// it is empty.
    pub fn store_dir(&self, path: Option<&Path>) -> Option<PathBuf> {
        let dir = self.store.dir.get_ref();
        (!dir.is_empty()).then(|| config_folder(path).join(dir))
    }

    /// `[store]` alone, checked, with the NATS credentials it names read: for tools that
    /// open the store without running the daemon (`hookd dlq`), run by an operator who may not
    /// hold the webhook secrets.
    pub fn store_only(&self, text: &str, path: Option<&Path>) -> Result<StoreConfig, ConfigErrors> {
        let mut p = Problems {
            text,
            path,
            errors: Vec::new(),
        };
        let max_body_bytes = p.bounded(
            "server.max_body_bytes",
            &self.server.max_body_bytes,
            64,
            64 << 20,
        );
        let store =
            crate::store::store_config(&mut p, &self.store, &config_folder(path), max_body_bytes);
        if p.errors.is_empty() {
            Ok(store)
        } else {
            Err(ConfigErrors(p.errors))
        }
    }

    /// Checks every value and resolves secrets, returning every problem found.
    pub fn validate(&self, text: &str, path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let mut p = Problems {
            text,
            path,
            errors: Vec::new(),
        };
        let base = config_folder(path);

        let s = &self.server;
        let listen = socket_addr(&mut p, "server.listen", &s.listen);
        let route = s.path.get_ref();
        if !route.starts_with('/') || route.contains(['?', '#', ' ']) {
            p.at(
                "server.path",
                &s.path,
                format!("must be a URL path starting with `/`, got `{route}`"),
            );
        }
        let max_body_bytes = p.bounded("server.max_body_bytes", &s.max_body_bytes, 64, 64 << 20);
        let max_connections = p.bounded("server.max_connections", &s.max_connections, 1, 1 << 20);
        let edge = edge_limits(&mut p, s, max_body_bytes, max_connections);
        let server = ServerConfig {
            listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            path: route.clone(),
            max_body_bytes,
            max_json_depth: p.bounded("server.max_json_depth", &s.max_json_depth, 2, 128),
            max_connections,
            max_connections_per_client: edge.max_connections_per_client,
            max_inflight_body_bytes: edge.max_inflight_body_bytes,
            max_inflight_body_bytes_per_client: edge.max_inflight_body_bytes_per_client,
            header_read_timeout: millis(p.bounded(
                "server.header_read_timeout_ms",
                &s.header_read_timeout_ms,
                10,
                600_000,
            )),
            body_read_timeout: millis(p.bounded(
                "server.body_read_timeout_ms",
                &s.body_read_timeout_ms,
                10,
                600_000,
            )),
            retry_after: Duration::from_secs(p.bounded(
                "server.retry_after_secs",
                &s.retry_after_secs,
                1,
                3600,
            ) as u64),
        };

        let admin_listen = if self.admin.listen.get_ref().is_empty() {
            None
        } else {
            socket_addr(&mut p, "admin.listen", &self.admin.listen)
        };
        if let (Some(a), Some(b)) = (admin_listen, listen)
            && a == b
            && a.port() != 0
        {
            p.at(
                "admin.listen",
                &self.admin.listen,
                format!("must differ from `server.listen` (both are {a})"),
            );
        }

        let mut secrets = Vec::new();
        if self.verify.secrets.is_empty() {
            p.errors.push(ConfigError::new(
                Location {
                    file: path.map(Path::to_owned),
                    line_col: None,
                },
                "verify.secrets",
                "at least one secret is required: an inline value, `env:NAME` or `file:PATH`",
            ));
        }
        for (i, entry) in self.verify.secrets.iter().enumerate() {
            let key = format!("verify.secrets[{i}]");
            match SecretSource::parse(entry.get_ref()).resolve(&base) {
                Ok(secret) => secrets.push(secret),
                Err(message) => p.at(&key, entry, message),
            }
        }

        let store = crate::store::store_config(&mut p, &self.store, &base, max_body_bytes);
        let plugin_dir = dir(&mut p, "plugins.dir", &self.plugins.dir, &base);
        let caps = plugin_caps(&mut p, &self.plugins);
        let mut plugins = PluginsConfig {
            dir: plugin_dir,
            max_instances: caps.max_instances,
            max_memory_bytes: caps.max_memory_bytes,
            memory_budget_bytes: caps.memory_budget_bytes,
            max_timeout: caps.max_timeout,
            max_kv_keys: caps.max_kv_keys,
            max_kv_value_bytes: caps.max_kv_value_bytes,
            max_kv_bytes: caps.max_kv_bytes,
            max_http_timeout: caps.max_http_timeout,
            max_http_response_bytes: caps.max_http_response_bytes,
            pooling: self.plugins.pooling,
            priority: self.plugins.priority,
            declared: Vec::new(),
        };
        let source = path.map_or_else(|| PathBuf::from("config"), Path::to_owned);
        p.errors.extend(crate::catalog::admit_declared(
            &mut plugins,
            &self.plugin,
            text,
            &source,
        ));
        let log = LogConfig {
            format: self.log.format,
            filter: self.log.filter.get_ref().clone(),
        };

        if !p.errors.is_empty() {
            return Err(ConfigErrors(p.errors));
        }
        Ok(Config {
            source: path.map(Path::to_owned),
            server,
            admin: AdminConfig {
                listen: admin_listen,
            },
            secrets,
            store,
            plugins,
            log,
        })
    }
}

/// What one client, and all of them together, may hold at the edge.
struct EdgeLimits {
    max_connections_per_client: usize,
    max_inflight_body_bytes: usize,
    max_inflight_body_bytes_per_client: usize,
}

fn edge_limits(
    p: &mut Problems<'_>,
    s: &ServerSection,
    max_body_bytes: usize,
    max_connections: usize,
) -> EdgeLimits {
    let max_connections_per_client = match &s.max_connections_per_client {
        Some(value) => p.bounded(
            "server.max_connections_per_client",
            value,
            1,
            max_connections as u64,
        ),
        None => (max_connections / 4).max(1),
    };
    let max_inflight_body_bytes = at_least_one_body(
        p,
        "server.max_inflight_body_bytes",
        &s.max_inflight_body_bytes,
        max_body_bytes,
    );
    // A client holds the same share of the body budget as of the connection slots, and at
    // least one whole body, so a single client can always send its largest event.
    let share = (max_inflight_body_bytes as u128 * max_connections_per_client as u128
        / max_connections.max(1) as u128) as usize;
    EdgeLimits {
        max_connections_per_client,
        max_inflight_body_bytes,
        max_inflight_body_bytes_per_client: share.max(max_body_bytes).min(max_inflight_body_bytes),
    }
}

/// A byte budget that must hold at least one body of `max_body_bytes`, or no such body could
/// ever be taken.
pub(crate) fn at_least_one_body(
    p: &mut Problems<'_>,
    key: &str,
    value: &Spanned<u64>,
    max_body_bytes: usize,
) -> usize {
    let v = *value.get_ref();
    let max = 1u64 << 40;
    if v < max_body_bytes as u64 {
        p.at(
            key,
            value,
            format!(
                "must be at least `server.max_body_bytes` ({max_body_bytes}), or a body that \
                 size could never be taken; got {v}"
            ),
        );
    } else if v > max {
        p.at(key, value, format!("must be at most {max}, got {v}"));
    }
    usize::try_from(v.clamp(max_body_bytes as u64, max)).unwrap_or(usize::MAX)
}

/// The `[plugins]` ceilings every plugin must fit.
fn plugin_caps(p: &mut Problems<'_>, s: &PluginsSection) -> PluginCaps {
    let mut v = |key: &str, value: &Spanned<u64>, max: u64| {
        p.bounded(&format!("plugins.{key}"), value, 1, max) as u64
    };
    PluginCaps {
        max_instances: v("max_instances", &s.max_instances, 10_000) as u32,
        max_memory_bytes: v("max_memory_mb", &s.max_memory_mb, 4096) << 20,
        memory_budget_bytes: v("memory_budget_mb", &s.memory_budget_mb, 1 << 20) << 20,
        max_timeout: Duration::from_millis(v("max_timeout_ms", &s.max_timeout_ms, 600_000)),
        max_kv_keys: v("max_kv_keys", &s.max_kv_keys, 10_000_000),
        max_kv_value_bytes: v("max_kv_value_bytes", &s.max_kv_value_bytes, 16 << 20),
        max_kv_bytes: v("max_kv_mb", &s.max_kv_mb, 1 << 20) << 20,
        max_http_timeout: Duration::from_millis(v(
            "max_http_timeout_ms",
            &s.max_http_timeout_ms,
            600_000,
        )),
        max_http_response_bytes: v(
            "max_http_response_bytes",
            &s.max_http_response_bytes,
            256 << 20,
        ),
    }
}

fn millis(ms: usize) -> Duration {
    Duration::from_millis(ms as u64)
}

fn socket_addr(p: &mut Problems<'_>, key: &str, value: &Spanned<String>) -> Option<SocketAddr> {
    match value.get_ref().parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            p.at(
                key,
                value,
                format!(
                    "`{}` is not an IP address and port, such as `127.0.0.1:8080` or `[::]:8080`",
                    value.get_ref()
                ),
            );
            None
        }
    }
}

/// What relative paths in the config are relative to: the file's folder, else the working
/// directory.
fn config_folder(path: Option<&Path>) -> PathBuf {
    path.and_then(Path::parent)
        .map(Path::to_owned)
        .unwrap_or_default()
}

pub(crate) fn dir(
    p: &mut Problems<'_>,
    key: &str,
    value: &Spanned<String>,
    base: &Path,
) -> PathBuf {
    let raw = value.get_ref();
    if raw.is_empty() {
        p.at(key, value, "must not be empty");
    }
    base.join(raw)
}
