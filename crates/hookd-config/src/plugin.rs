//! Plugin manifests: the `NAME.toml` beside `NAME.wasm`, and `[[plugins.plugin]]` entries in
//! the main config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hookd_core::EventPattern;
use serde::Deserialize;
use toml::Spanned;

use crate::toml_error::{manifest_secrets, parse_error};
use crate::{ConfigError, ConfigErrors, Location};

/// A plugin manifest as written. Its `Debug` leaves out `config`, which may hold secrets.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    /// Only in the main config: the plugin's name (a sidecar's name is its file name).
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// Only in the main config: the component file, relative to the plugin folder.
    #[serde(default)]
    pub wasm: Option<Spanned<String>>,
    pub events: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub retry: RawRetry,
    #[serde(default)]
    pub capabilities: RawCapabilities,
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub timeout_ms: Option<Spanned<u64>>,
    pub memory_mb: Option<Spanned<u64>>,
    pub concurrency: Option<Spanned<u64>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub max_attempts: Option<Spanned<u64>>,
    pub initial_backoff_ms: Option<Spanned<u64>>,
    pub max_backoff_ms: Option<Spanned<u64>>,
    pub max_age_secs: Option<Spanned<u64>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapabilities {
    #[serde(default)]
    pub http: Vec<Spanned<String>>,
    #[serde(default)]
    pub kv: bool,
    pub kv_max_keys: Option<Spanned<u64>>,
    pub kv_max_value_bytes: Option<Spanned<u64>>,
    pub http_timeout_ms: Option<Spanned<u64>>,
    pub http_max_response_bytes: Option<Spanned<u64>>,
    /// Opt-in: names in `http` may resolve to loopback, private and other non-public
    /// addresses (off by default; IP literals and `localhost` never need it).
    pub http_allow_private_addresses: Option<Spanned<bool>>,
}

impl std::fmt::Debug for RawPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawPlugin")
            .field("name", &self.name)
            .field("wasm", &self.wasm)
            .field("events", &self.events)
            .field("limits", &self.limits)
            .field("retry", &self.retry)
            .field("capabilities", &self.capabilities)
            .field("config", &HiddenValues(self.config.keys()))
            .finish()
    }
}

/// The keys of a plugin's `config`, with their values hidden.
struct HiddenValues<I>(I);

impl<'a, I: Iterator<Item = &'a String> + Clone> std::fmt::Debug for HiddenValues<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.clone().map(|k| (k, "<hidden>")))
            .finish()
    }
}

/// A validated plugin definition. Its `Debug` hides the values of `config`, which may hold
/// secrets (API tokens).
#[derive(Clone, PartialEq)]
pub struct PluginSpec {
    pub name: String,
    pub wasm: PathBuf,
    /// The TOML it came from (sidecar or main config), for messages.
    pub source: PathBuf,
    pub events: Vec<EventPattern>,
    pub limits: Limits,
    pub retry: RetryPolicy,
    pub capabilities: Capabilities,
    pub config: BTreeMap<String, String>,
}

impl std::fmt::Debug for PluginSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSpec")
            .field("name", &self.name)
            .field("wasm", &self.wasm)
            .field("source", &self.source)
            .field("events", &self.events)
            .field("limits", &self.limits)
            .field("retry", &self.retry)
            .field("capabilities", &self.capabilities)
            .field("config", &HiddenValues(self.config.keys()))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            concurrency: 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub http: Vec<Origin>,
    pub kv: bool,
    pub kv_max_keys: u64,
    pub kv_max_value_bytes: u64,
    /// Connect and first-byte timeout for outgoing requests.
    pub http_timeout: Duration,
    pub http_max_response_bytes: u64,
    /// Names in `http` may resolve to non-public addresses (loopback, private, ...).
    pub http_allow_private_addresses: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            http: Vec::new(),
            kv: false,
            // At most 10,000 x (1 KiB key + 4 KiB value), about 49 MiB of disk per plugin.
            kv_max_keys: 10_000,
            kv_max_value_bytes: 4 * 1024,
            http_timeout: Duration::from_secs(5),
            http_max_response_bytes: 1 << 20,
            http_allow_private_addresses: false,
        }
    }
}

/// Longest key a plugin may use in its key-value store; the host refuses longer ones. Counted
/// in the disk a plugin's store may take (`kv_max_keys` x (this + `kv_max_value_bytes`)).
pub const KV_MAX_KEY_BYTES: u64 = 1024;

/// The ceilings `[plugins]` sets for every plugin. [`validate_plugin`] applies them alike to a
/// folder `NAME.toml` and a `[[plugin]]` entry: a key written above its ceiling is an error at
/// its line; a key left out takes its default, lowered to the ceiling if need be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginCaps {
    /// `plugins.max_instances`: instances of all plugins alive at once; also the ceiling of
    /// `limits.concurrency`.
    pub max_instances: u32,
    /// `plugins.max_memory_mb`, ceiling of `limits.memory_mb`.
    pub max_memory_bytes: u64,
    /// `plugins.memory_budget_mb`: the plugins' worst case together (see [`crate::budget`]),
    /// and so any one plugin's, must fit it.
    pub memory_budget_bytes: u64,
    /// `plugins.max_timeout_ms`, ceiling of `limits.timeout_ms`.
    pub max_timeout: Duration,
    /// `plugins.max_kv_keys`, ceiling of `capabilities.kv_max_keys`.
    pub max_kv_keys: u64,
    /// `plugins.max_kv_value_bytes`, ceiling of `capabilities.kv_max_value_bytes`.
    pub max_kv_value_bytes: u64,
    /// `plugins.max_kv_mb`: the most disk one plugin's key-value store may take,
    /// `kv_max_keys` x ([`KV_MAX_KEY_BYTES`] + `kv_max_value_bytes`).
    pub max_kv_bytes: u64,
    /// `plugins.max_http_timeout_ms`, ceiling of `capabilities.http_timeout_ms`.
    pub max_http_timeout: Duration,
    /// `plugins.max_http_response_bytes`, ceiling of `capabilities.http_max_response_bytes`.
    pub max_http_response_bytes: u64,
}

impl Default for PluginCaps {
    /// The `[plugins]` defaults. With them every plugin at its default limits fits, and the
    /// worst case of any plugin set, 16 instances x (64 MiB + host allowance), fits the budget
    /// (see `memory_budget_bytes`).
    fn default() -> Self {
        Self {
            max_instances: 16,
            max_memory_bytes: 256 << 20,
            // The unit's MemoryMax=2G less 512 MiB for hookd itself: the store, ingest
            // buffers, compiled code and the compiler while plugins (re)load.
            memory_budget_bytes: 1536 << 20,
            max_timeout: Duration::from_secs(60),
            max_kv_keys: 1_000_000,
            max_kv_value_bytes: 1 << 20,
            max_kv_bytes: 1 << 30,
            max_http_timeout: Duration::from_secs(60),
            max_http_response_bytes: 16 << 20,
        }
    }
}

/// An allow-listed origin: `https://api.example.com`, `https://*.slack.com`,
/// `http://127.0.0.1:8080`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    /// Lowercase host; a leading `*.` matches any subdomain (not the bare domain).
    pub host: String,
    /// The explicit port, or the scheme's default.
    pub port: u16,
}

impl Origin {
    pub fn parse(text: &str) -> Result<Origin, String> {
        let bad = |why: &str| {
            format!(
                "`{text}` is not an origin ({why}); write `https://host`, `https://*.domain` or \
                 `http://host:port`"
            )
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
            return Err(bad("only scheme, host and port are allowed"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
                let port: u16 = p.parse().map_err(|_| bad("the port is not a number"))?;
                (h, port)
            }
            _ => (rest, default_port),
        };
        let host = host.to_ascii_lowercase();
        let wildcard_ok = host.strip_prefix("*.").unwrap_or(&host);
        if wildcard_ok.is_empty()
            || wildcard_ok.contains('*')
            || !wildcard_ok
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
        {
            return Err(bad("the host is not valid"));
        }
        Ok(Origin { scheme, host, port })
    }

    /// Whether a request to `scheme://host:port` is allowed by this origin.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if !self.scheme.eq_ignore_ascii_case(scheme) || self.port != port {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match self.host.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
            None => self.host == host,
        }
    }

    /// Whether this origin names an IP literal or `localhost` explicitly: only then may
    /// requests reach loopback or private addresses without
    /// `capabilities.http_allow_private_addresses`. Any other name, plain or wildcard, is
    /// checked after resolution: whoever controls its DNS could point it anywhere.
    pub fn names_host_literally(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok()
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Validates one manifest, folder `NAME.toml` or `[[plugin]]` entry alike, within `caps`.
/// `name` and `wasm` come from the file names for a sidecar.
#[allow(clippy::too_many_arguments)]
pub fn validate_plugin(
    raw: &RawPlugin,
    text: &str,
    source: &Path,
    key_prefix: &str,
    name: Option<&str>,
    wasm: Option<PathBuf>,
    plugin_dir: &Path,
    ceilings: &PluginCaps,
) -> Result<PluginSpec, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let at =
        |errors: &mut Vec<ConfigError>, key: &str, span: std::ops::Range<usize>, msg: String| {
            let location = if span.is_empty() {
                Location::file(source)
            } else {
                Location::span(Some(source), text, span)
            };
            errors.push(ConfigError::new(
                location,
                format!("{key_prefix}{key}"),
                msg,
            ));
        };

    let name = match (name, &raw.name) {
        (Some(n), _) => n.to_owned(),
        (None, Some(n)) => n.get_ref().clone(),
        (None, None) => {
            at(
                &mut errors,
                "name",
                0..0,
                "a plugin declared in the main config needs a `name`".into(),
            );
            String::new()
        }
    };
    if !name.is_empty() && !valid_name(&name) {
        let span = raw.name.as_ref().map_or(0..0, Spanned::span);
        at(
            &mut errors,
            "name",
            span,
            format!("plugin name `{name}` must be lowercase letters, digits, `-` or `_`"),
        );
    }
    let wasm = match (wasm, &raw.wasm) {
        (Some(w), _) => w,
        (None, Some(w)) => plugin_dir.join(w.get_ref()),
        (None, None) => plugin_dir.join(format!("{name}.wasm")),
    };

    let mut events = Vec::new();
    if raw.events.get_ref().is_empty() {
        at(
            &mut errors,
            "events",
            raw.events.span(),
            "subscribe to at least one event pattern, e.g. `events = [\"message.created\"]`".into(),
        );
    }
    for (i, pattern) in raw.events.get_ref().iter().enumerate() {
        match EventPattern::parse(pattern.get_ref()) {
            Ok(p) => events.push(p),
            Err(e) => at(
                &mut errors,
                &format!("events[{i}]"),
                pattern.span(),
                e.to_string(),
            ),
        }
    }

    let mut bounded =
        |key: &str, value: &Option<Spanned<u64>>, default: u64, min: u64, max: u64| match value {
            Some(v) if *v.get_ref() < min || *v.get_ref() > max => {
                at(
                    &mut errors,
                    key,
                    v.span(),
                    format!("must be between {min} and {max}, got {}", v.get_ref()),
                );
                default
            }
            Some(v) => *v.get_ref(),
            None => default,
        };
    let d = Limits::default();
    let limits = Limits {
        timeout: Duration::from_millis(bounded(
            "limits.timeout_ms",
            &raw.limits.timeout_ms,
            d.timeout.as_millis() as u64,
            1,
            600_000,
        )),
        memory_bytes: bounded(
            "limits.memory_mb",
            &raw.limits.memory_mb,
            d.memory_bytes >> 20,
            1,
            4096,
        ) << 20,
        concurrency: bounded(
            "limits.concurrency",
            &raw.limits.concurrency,
            d.concurrency as u64,
            1,
            1024,
        ) as usize,
    };
    let r = RetryPolicy::default();
    let retry = RetryPolicy {
        max_attempts: bounded(
            "retry.max_attempts",
            &raw.retry.max_attempts,
            r.max_attempts.into(),
            1,
            1000,
        ) as u32,
        initial_backoff: Duration::from_millis(bounded(
            "retry.initial_backoff_ms",
            &raw.retry.initial_backoff_ms,
            r.initial_backoff.as_millis() as u64,
            1,
            86_400_000,
        )),
        max_backoff: Duration::from_millis(bounded(
            "retry.max_backoff_ms",
            &raw.retry.max_backoff_ms,
            r.max_backoff.as_millis() as u64,
            1,
            86_400_000,
        )),
        max_age: Duration::from_secs(bounded(
            "retry.max_age_secs",
            &raw.retry.max_age_secs,
            r.max_age.as_secs(),
            1,
            30 * 86_400,
        )),
    };
    let c = Capabilities::default();
    let caps = &raw.capabilities;
    let kv_max_keys = bounded(
        "capabilities.kv_max_keys",
        &caps.kv_max_keys,
        c.kv_max_keys,
        1,
        10_000_000,
    );
    let kv_max_value_bytes = bounded(
        "capabilities.kv_max_value_bytes",
        &caps.kv_max_value_bytes,
        c.kv_max_value_bytes,
        1,
        16 << 20,
    );
    let http_timeout = Duration::from_millis(bounded(
        "capabilities.http_timeout_ms",
        &caps.http_timeout_ms,
        c.http_timeout.as_millis() as u64,
        1,
        600_000,
    ));
    let http_max_response_bytes = bounded(
        "capabilities.http_max_response_bytes",
        &caps.http_max_response_bytes,
        c.http_max_response_bytes,
        1,
        256 << 20,
    );
    if retry.initial_backoff > retry.max_backoff {
        let span = raw
            .retry
            .initial_backoff_ms
            .as_ref()
            .map_or(0..0, Spanned::span);
        at(
            &mut errors,
            "retry.initial_backoff_ms",
            span,
            "must not exceed `retry.max_backoff_ms`".into(),
        );
    }
    let http_allow_private_addresses = match &caps.http_allow_private_addresses {
        Some(v) if *v.get_ref() && caps.http.is_empty() => {
            at(
                &mut errors,
                "capabilities.http_allow_private_addresses",
                v.span(),
                "has no effect without origins in `capabilities.http`; remove it".into(),
            );
            false
        }
        Some(v) => *v.get_ref(),
        None => false,
    };
    let mut http = Vec::new();
    for (i, origin) in caps.http.iter().enumerate() {
        match Origin::parse(origin.get_ref()) {
            Ok(o) => http.push(o),
            Err(e) => at(
                &mut errors,
                &format!("capabilities.http[{i}]"),
                origin.span(),
                e,
            ),
        }
    }
    let mut config = BTreeMap::new();
    for (key, value) in &raw.config {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                at(
                    &mut errors,
                    &format!("config.{key}"),
                    0..0,
                    "config values must be strings, numbers or booleans".into(),
                );
                continue;
            }
        };
        config.insert(key.clone(), text);
    }
    let mut spec = PluginSpec {
        name,
        wasm,
        source: source.to_owned(),
        events,
        limits,
        retry,
        capabilities: Capabilities {
            http,
            kv: caps.kv,
            kv_max_keys,
            kv_max_value_bytes,
            http_timeout,
            http_max_response_bytes,
            http_allow_private_addresses,
        },
        config,
    };
    apply_caps(raw, ceilings, &mut spec, &mut |key, span, message| {
        at(&mut errors, key, span, message)
    });
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(spec)
}

/// Applies the `[plugins]` ceilings to `spec`, validated from `raw`: reports a value written
/// above its ceiling (at its position), lowers a default above it.
fn apply_caps(
    raw: &RawPlugin,
    caps: &PluginCaps,
    spec: &mut PluginSpec,
    report: &mut dyn FnMut(&str, std::ops::Range<usize>, String),
) {
    // Returns whether it refused the value.
    let mut cap = |key: &str,
                   written: &Option<Spanned<u64>>,
                   value: &mut u64,
                   ceiling: u64,
                   ceiling_key: &str| {
        if *value <= ceiling {
            return false;
        }
        match written {
            // Out of its own bounds: already reported, and `value` is the default.
            Some(v) if *v.get_ref() != *value => *value = ceiling,
            Some(v) => {
                report(
                    key,
                    v.span(),
                    format!(
                        "{} exceeds `plugins.{ceiling_key}` = {ceiling}, the ceiling for every \
                         plugin; lower it, or raise the ceiling in the main config",
                        v.get_ref()
                    ),
                );
                return true;
            }
            None => *value = ceiling,
        }
        false
    };
    let (limits, c) = (&raw.limits, &raw.capabilities);

    let mut memory_mb = spec.limits.memory_bytes >> 20;
    let max_memory_mb = caps.max_memory_bytes >> 20;
    // A limit refused already: the budget check below would only repeat it.
    let mut refused = cap(
        "limits.memory_mb",
        &limits.memory_mb,
        &mut memory_mb,
        max_memory_mb,
        "max_memory_mb",
    );
    spec.limits.memory_bytes = memory_mb << 20;
    let mut concurrency = spec.limits.concurrency as u64;
    refused |= cap(
        "limits.concurrency",
        &limits.concurrency,
        &mut concurrency,
        caps.max_instances.into(),
        "max_instances",
    );
    let mut timeout_ms = spec.limits.timeout.as_millis() as u64;
    cap(
        "limits.timeout_ms",
        &limits.timeout_ms,
        &mut timeout_ms,
        caps.max_timeout.as_millis() as u64,
        "max_timeout_ms",
    );
    spec.limits.timeout = Duration::from_millis(timeout_ms);
    let k = &mut spec.capabilities;
    cap(
        "capabilities.kv_max_keys",
        &c.kv_max_keys,
        &mut k.kv_max_keys,
        caps.max_kv_keys,
        "max_kv_keys",
    );
    cap(
        "capabilities.kv_max_value_bytes",
        &c.kv_max_value_bytes,
        &mut k.kv_max_value_bytes,
        caps.max_kv_value_bytes,
        "max_kv_value_bytes",
    );
    let mut http_timeout_ms = k.http_timeout.as_millis() as u64;
    cap(
        "capabilities.http_timeout_ms",
        &c.http_timeout_ms,
        &mut http_timeout_ms,
        caps.max_http_timeout.as_millis() as u64,
        "max_http_timeout_ms",
    );
    k.http_timeout = Duration::from_millis(http_timeout_ms);
    cap(
        "capabilities.http_max_response_bytes",
        &c.http_max_response_bytes,
        &mut k.http_max_response_bytes,
        caps.max_http_response_bytes,
        "max_http_response_bytes",
    );

    // The disk one plugin's key-value store may take.
    let per_key = KV_MAX_KEY_BYTES + k.kv_max_value_bytes;
    if k.kv_max_keys.saturating_mul(per_key) > caps.max_kv_bytes {
        match (&c.kv_max_keys, &c.kv_max_value_bytes) {
            (None, _) if caps.max_kv_bytes >= per_key => {
                k.kv_max_keys = caps.max_kv_bytes / per_key;
            }
            (written_keys, written_value) => {
                let span = written_keys
                    .as_ref()
                    .or(written_value.as_ref())
                    .map_or(0..0, Spanned::span);
                let key = if written_keys.is_some() {
                    "capabilities.kv_max_keys"
                } else {
                    "capabilities.kv_max_value_bytes"
                };
                report(
                    key,
                    span,
                    format!(
                        "`kv_max_keys` x ({KV_MAX_KEY_BYTES} B key + `kv_max_value_bytes`) = \
                         {} MiB exceeds `plugins.max_kv_mb` = {}, the most disk one plugin's \
                         key-value store may take; lower either, or raise the ceiling",
                        crate::budget::mib(k.kv_max_keys.saturating_mul(per_key)),
                        caps.max_kv_bytes >> 20
                    ),
                );
            }
        }
    }

    // Its own worst case must fit the memory budget, whatever else is loaded.
    let instance = crate::budget::instance_bytes(spec);
    let fitting = caps.memory_budget_bytes / instance.max(1);
    if !refused && concurrency.min(caps.max_instances.into()) > fitting {
        if limits.concurrency.is_none() && fitting >= 1 {
            concurrency = fitting;
        } else {
            let (key, span) = match (&limits.concurrency, &limits.memory_mb) {
                (Some(v), _) => ("limits.concurrency", v.span()),
                (None, Some(v)) => ("limits.memory_mb", v.span()),
                (None, None) => ("limits.memory_mb", 0..0),
            };
            let n = concurrency.min(caps.max_instances.into());
            report(
                key,
                span,
                format!(
                    "this plugin alone may hold {} MiB at once ({n} instances x ({} MiB \
                     `limits.memory_mb` + {} MiB host allowance)), over \
                     `plugins.memory_budget_mb` = {}; lower `limits.concurrency` or \
                     `limits.memory_mb`, or raise `plugins.memory_budget_mb`",
                    crate::budget::mib(n.saturating_mul(instance)),
                    spec.limits.memory_bytes >> 20,
                    crate::budget::HOST_BYTES_PER_INSTANCE >> 20,
                    caps.memory_budget_bytes >> 20
                ),
            );
        }
    }
    spec.limits.concurrency = usize::try_from(concurrency).unwrap_or(usize::MAX);
}

/// Plugin names become metric labels, log fields and store keys: keep them plain.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Reads and validates the sidecar `toml` of plugin `name` whose component is `wasm`, within
/// the default ceilings (for `hookd run-plugin`, which has no main config; the daemon and
/// `hookd check` use [`load_sidecar_with`] and the config's).
pub fn load_sidecar(toml_path: &Path, wasm: &Path) -> Result<PluginSpec, ConfigErrors> {
    load_sidecar_with(toml_path, wasm, &PluginCaps::default())
}

/// Reads and validates the sidecar `toml` of plugin `name` whose component is `wasm`, within
/// `caps` (the main config's `[plugins]` ceilings, as for `[[plugin]]` entries).
pub fn load_sidecar_with(
    toml_path: &Path,
    wasm: &Path,
    caps: &PluginCaps,
) -> Result<PluginSpec, ConfigErrors> {
    let text = std::fs::read_to_string(toml_path).map_err(|e| {
        ConfigErrors::single(ConfigError::new(
            Location::file(toml_path),
            "",
            format!("cannot read the plugin manifest: {e}"),
        ))
    })?;
    parse_sidecar_with(&text, toml_path, wasm, caps)
}

/// Validates sidecar manifest `text`, as if read from `toml_path` (which names the plugin and
/// locates errors), within the default ceilings; touches no file.
pub fn parse_sidecar(
    text: &str,
    toml_path: &Path,
    wasm: &Path,
) -> Result<PluginSpec, ConfigErrors> {
    parse_sidecar_with(text, toml_path, wasm, &PluginCaps::default())
}

/// [`parse_sidecar`] within `caps`.
pub fn parse_sidecar_with(
    text: &str,
    toml_path: &Path,
    wasm: &Path,
    caps: &PluginCaps,
) -> Result<PluginSpec, ConfigErrors> {
    let name = toml_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    let raw: RawPlugin = toml::from_str(text).map_err(|e| {
        ConfigErrors::single(parse_error(&e, text, Some(toml_path), manifest_secrets))
    })?;
    let dir = toml_path.parent().unwrap_or(Path::new("."));
    let mut errors = Vec::new();
    if !valid_name(&name) {
        errors.push(ConfigError::new(
            Location::file(toml_path),
            "",
            format!("plugin file name `{name}` must be lowercase letters, digits, `-` or `_`"),
        ));
    }
    if raw.name.is_some() || raw.wasm.is_some() {
        errors.push(ConfigError::new(
            Location::file(toml_path),
            "",
            "`name` and `wasm` come from the file names in a plugin folder; remove them".to_owned(),
        ));
    }
    match validate_plugin(
        &raw,
        text,
        toml_path,
        "",
        Some(&name),
        Some(wasm.to_owned()),
        dir,
        caps,
    ) {
        Ok(spec) if errors.is_empty() => Ok(spec),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(mut more) => {
            errors.append(&mut more);
            Err(ConfigErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_and_match() {
        let o = Origin::parse("https://api.example.com").unwrap();
        assert!(o.allows("https", "api.example.com", 443));
        assert!(o.allows("https", "API.example.com", 443));
        assert!(!o.allows("http", "api.example.com", 443));
        assert!(!o.allows("https", "api.example.com", 8443));
        assert!(!o.allows("https", "evil.api.example.com", 443));

        let w = Origin::parse("https://*.slack.com").unwrap();
        assert!(w.allows("https", "hooks.slack.com", 443));
        assert!(w.allows("https", "a.b.slack.com", 443));
        assert!(!w.allows("https", "slack.com", 443));
        assert!(!w.allows("https", "evilslack.com", 443));

        let local = Origin::parse("http://127.0.0.1:8080").unwrap();
        assert!(local.allows("http", "127.0.0.1", 8080));
        assert!(!local.allows("http", "127.0.0.1", 8081));

        for bad in [
            "api.example.com",
            "ftp://x",
            "https://a/b",
            "https://*",
            "https://a.*.com",
            "https://u@h",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_ip_literals_and_localhost_are_named_literally() {
        for (origin, literal) in [
            ("http://127.0.0.1:8080", true),
            ("http://[::1]:8080", true),
            ("http://localhost:8080", true),
            ("http://internal.example:8080", false),
            ("http://localhost.:8080", false),
            ("https://*.example.com", false),
        ] {
            let o = Origin::parse(origin).unwrap();
            assert_eq!(o.names_host_literally(), literal, "{origin}");
        }
    }

    #[test]
    fn private_addresses_are_an_explicit_opt_in() {
        let parse = |text: &str| parse_sidecar(text, Path::new("p/x.toml"), Path::new("p/x.wasm"));
        let on = "events = [\"*\"]\n[capabilities]\nhttp = [\"http://internal.example:80\"]\n\
                  http_allow_private_addresses = true\n";
        assert!(parse(on).unwrap().capabilities.http_allow_private_addresses);
        let off = "events = [\"*\"]\n[capabilities]\nhttp = [\"http://internal.example:80\"]\n";
        assert!(
            !parse(off)
                .unwrap()
                .capabilities
                .http_allow_private_addresses
        );
        let useless = "events = [\"*\"]\n[capabilities]\nhttp_allow_private_addresses = true\n";
        let errors = parse(useless).unwrap_err().to_string();
        assert!(
            errors.contains("capabilities.http_allow_private_addresses"),
            "{errors}"
        );
    }
}
