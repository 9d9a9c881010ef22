//! The `[plugins]` ceilings every plugin must fit, and how a manifest is held to them.

use std::time::Duration;

use toml::Spanned;

use super::raw::RawPlugin;
use super::spec::{Capabilities, KV_MAX_KEY_BYTES, Limits};

/// The ceilings `[plugins]` sets for every plugin. [`super::validate_plugin`] applies them alike to a
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

/// Applies the `[plugins]` ceilings to the `limits` and `capabilities` validated from `raw`:
/// reports a value written above its ceiling (at its position), lowers a default above it.
pub(super) fn apply_caps(
    raw: &RawPlugin,
    caps: &PluginCaps,
    spec_limits: &mut Limits,
    capabilities: &mut Capabilities,
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

    let mut memory_mb = spec_limits.memory_bytes >> 20;
    let max_memory_mb = caps.max_memory_bytes >> 20;
    // A limit refused already: the budget check below would only repeat it.
    let mut refused = cap(
        "limits.memory_mb",
        &limits.memory_mb,
        &mut memory_mb,
        max_memory_mb,
        "max_memory_mb",
    );
    spec_limits.memory_bytes = memory_mb << 20;
    let mut concurrency = spec_limits.concurrency as u64;
    refused |= cap(
        "limits.concurrency",
        &limits.concurrency,
        &mut concurrency,
        caps.max_instances.into(),
        "max_instances",
    );
    let mut timeout_ms = spec_limits.timeout.as_millis() as u64;
    cap(
        "limits.timeout_ms",
        &limits.timeout_ms,
        &mut timeout_ms,
        caps.max_timeout.as_millis() as u64,
        "max_timeout_ms",
    );
    spec_limits.timeout = Duration::from_millis(timeout_ms);
    let k = capabilities;
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
    let instance = crate::budget::instance_bytes_of(spec_limits);
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
                    spec_limits.memory_bytes >> 20,
                    crate::budget::HOST_BYTES_PER_INSTANCE >> 20,
                    caps.memory_budget_bytes >> 20
                ),
            );
        }
    }
    spec_limits.concurrency = usize::try_from(concurrency).unwrap_or(usize::MAX);
}
