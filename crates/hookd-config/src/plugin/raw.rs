//! A plugin manifest as written: what serde reads from a folder `NAME.toml` or a `[[plugin]]`
//! entry, before validation.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::spec::HiddenValues;

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
