//! A validated plugin definition ([`PluginSpec`]) and its parts, with their defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hookd_core::EventPattern;

use super::origin::Origin;

/// The keys of a plugin's `config`, with their values hidden.
pub(super) struct HiddenValues<I>(pub(super) I);

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
