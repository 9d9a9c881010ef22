//! The configuration as written: serde structs with explicit defaults, and their validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::secrets::SecretSource;
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

/// `[verify]`: the secrets a signature may be made with.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifySection {
    pub secrets: Vec<Spanned<String>>,
}

/// `[store]`: the embedded durable store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub dir: Spanned<String>,
    pub dedup_window_secs: Spanned<u64>,
    pub queue_capacity: Spanned<u64>,
    pub max_batch: Spanned<u64>,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            dir: unspanned("/var/lib/hookd".to_owned()),
            dedup_window_secs: unspanned(7 * 24 * 3600),
            queue_capacity: unspanned(4096),
            max_batch: unspanned(512),
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
    /// Pre-allocate instance slots (fast instantiation); off trades speed for less reserved
    /// address space.
    pub pooling: bool,
}

impl Default for PluginsSection {
    fn default() -> Self {
        Self {
            dir: unspanned("/etc/hookd/plugins".to_owned()),
            max_instances: unspanned(128),
            max_memory_mb: unspanned(256),
            pooling: true,
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
struct Problems<'a> {
    text: &'a str,
    path: Option<&'a Path>,
    errors: Vec<ConfigError>,
}

impl Problems<'_> {
    fn at<T>(&mut self, key: &str, value: &Spanned<T>, message: impl Into<String>) {
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
    fn bounded(&mut self, key: &str, value: &Spanned<u64>, min: u64, max: u64) -> usize {
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
    pub fn parse(text: &str, path: Option<&Path>) -> Result<RawConfig, ConfigErrors> {
        toml::from_str(text).map_err(|e| {
            let location = match e.span() {
                Some(span) => Location::span(path, text, span),
                None => Location {
                    file: path.map(Path::to_owned),
                    line_col: None,
                },
            };
            ConfigErrors::single(ConfigError::new(
                location,
                "",
                e.message().trim().to_owned(),
            ))
        })
    }

    /// `[store] dir`, resolved as [`RawConfig::validate`] resolves it (relative to the config
    /// file's folder), with nothing else validated and no secret read: for tools that only open
    /// the store, run by an operator who does not hold the service's credentials. `None` when
    /// it is empty.
    pub fn store_dir(&self, path: Option<&Path>) -> Option<PathBuf> {
        let dir = self.store.dir.get_ref();
        (!dir.is_empty()).then(|| config_folder(path).join(dir))
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
        let server = ServerConfig {
            listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            path: route.clone(),
            max_body_bytes: p.bounded("server.max_body_bytes", &s.max_body_bytes, 64, 64 << 20),
            max_json_depth: p.bounded("server.max_json_depth", &s.max_json_depth, 2, 128),
            max_connections: p.bounded("server.max_connections", &s.max_connections, 1, 1 << 20),
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

        let st = &self.store;
        let store = StoreConfig {
            dir: dir(&mut p, "store.dir", &st.dir, &base),
            dedup_window: Duration::from_secs(p.bounded(
                "store.dedup_window_secs",
                &st.dedup_window_secs,
                1,
                366 * 24 * 3600,
            ) as u64),
            queue_capacity: p.bounded("store.queue_capacity", &st.queue_capacity, 1, 1 << 20),
            max_batch: p.bounded("store.max_batch", &st.max_batch, 1, 1 << 16),
        };
        let plugin_dir = dir(&mut p, "plugins.dir", &self.plugins.dir, &base);
        let max_memory_mb = p.bounded(
            "plugins.max_memory_mb",
            &self.plugins.max_memory_mb,
            1,
            4096,
        ) as u64;
        let max_instances = p.bounded(
            "plugins.max_instances",
            &self.plugins.max_instances,
            1,
            10_000,
        ) as u32;
        let mut declared: Vec<crate::PluginSpec> = Vec::new();
        let source = path.map_or_else(|| std::path::PathBuf::from("config"), Path::to_owned);
        for (i, raw) in self.plugin.iter().enumerate() {
            match crate::plugin::validate_plugin(
                raw,
                text,
                &source,
                &format!("plugin[{i}]."),
                None,
                None,
                &plugin_dir,
            ) {
                Ok(spec) => {
                    if spec.limits.memory_bytes > max_memory_mb << 20 {
                        p.errors.push(ConfigError::new(
                            Location::file(&source),
                            format!("plugin[{i}].limits.memory_mb"),
                            format!("exceeds `plugins.max_memory_mb` ({max_memory_mb})"),
                        ));
                    }
                    if declared.iter().any(|d| d.name == spec.name) {
                        p.errors.push(ConfigError::new(
                            Location::file(&source),
                            format!("plugin[{i}].name"),
                            format!("plugin `{}` is declared twice", spec.name),
                        ));
                    }
                    declared.push(spec);
                }
                Err(mut errors) => p.errors.append(&mut errors),
            }
        }
        let plugins = PluginsConfig {
            dir: plugin_dir,
            max_instances,
            max_memory_bytes: max_memory_mb << 20,
            pooling: self.plugins.pooling,
            declared,
        };
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

fn dir(p: &mut Problems<'_>, key: &str, value: &Spanned<String>, base: &Path) -> PathBuf {
    let raw = value.get_ref();
    if raw.is_empty() {
        p.at(key, value, "must not be empty");
    }
    base.join(raw)
}
