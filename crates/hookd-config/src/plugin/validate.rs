//! The one validation of a manifest, folder `NAME.toml` or `[[plugin]]` entry alike: every
//! key checked against its own bounds, then held to the `[plugins]` ceilings ([`super::caps`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hookd_core::EventPattern;
use toml::Spanned;

use super::caps::{PluginCaps, apply_caps};
use super::origin::Origin;
use super::raw::RawPlugin;
use super::spec::{Capabilities, Limits, PluginSpec, RetryPolicy};
use crate::{ConfigError, Location};

/// Where a manifest was read from: its text and file locate every error, and `key_prefix`
/// (`plugin[2].`) names the entry within the main config.
pub(crate) struct ManifestText<'a> {
    pub text: &'a str,
    pub path: &'a Path,
    pub key_prefix: &'a str,
}

/// Where a plugin's name and component come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Identity<'a> {
    /// A folder `NAME.toml`: named by its file, its component the `NAME.wasm` beside it.
    Sidecar { name: &'a str, wasm: &'a Path },
    /// A `[[plugin]]` entry: its `name` key, and its `wasm` key (by default `NAME.wasm`)
    /// relative to the plugin folder.
    Declared { plugin_dir: &'a Path },
}

/// Validates one manifest within `ceilings`, returning every problem found.
pub(crate) fn validate_plugin(
    raw: &RawPlugin,
    source: &ManifestText<'_>,
    identity: Identity<'_>,
    ceilings: &PluginCaps,
) -> Result<PluginSpec, Vec<ConfigError>> {
    let ManifestText {
        text,
        path: source,
        key_prefix,
    } = *source;
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

    // `None` only when a `[[plugin]]` entry has no `name`, which is reported: no spec is made.
    let name: Option<String> = match (identity, &raw.name) {
        (Identity::Sidecar { name, .. }, _) => Some(name.to_owned()),
        (Identity::Declared { .. }, Some(n)) => Some(n.get_ref().clone()),
        (Identity::Declared { .. }, None) => {
            at(
                &mut errors,
                "name",
                0..0,
                "a plugin declared in the main config needs a `name`".into(),
            );
            None
        }
    };
    if let Some(name) = &name
        && !valid_name(name)
    {
        let span = raw.name.as_ref().map_or(0..0, Spanned::span);
        at(
            &mut errors,
            "name",
            span,
            format!("plugin name `{name}` must be lowercase letters, digits, `-` or `_`"),
        );
    }
    let wasm: Option<PathBuf> = match (identity, &raw.wasm, &name) {
        (Identity::Sidecar { wasm, .. }, _, _) => Some(wasm.to_owned()),
        (Identity::Declared { plugin_dir }, Some(w), _) => Some(plugin_dir.join(w.get_ref())),
        (Identity::Declared { plugin_dir }, None, Some(n)) => {
            Some(plugin_dir.join(format!("{n}.wasm")))
        }
        (Identity::Declared { .. }, None, None) => None,
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
    let mut limits = limits;
    let mut capabilities = Capabilities {
        http,
        kv: caps.kv,
        kv_max_keys,
        kv_max_value_bytes,
        http_timeout,
        http_max_response_bytes,
        http_allow_private_addresses,
    };
    apply_caps(
        raw,
        ceilings,
        &mut limits,
        &mut capabilities,
        &mut |key, span, message| at(&mut errors, key, span, message),
    );
    match (name, wasm) {
        (Some(name), Some(wasm)) if errors.is_empty() => Ok(PluginSpec {
            name,
            wasm,
            source: source.to_owned(),
            events,
            limits,
            retry,
            capabilities,
            config,
        }),
        _ => Err(errors),
    }
}

/// Plugin names become metric labels, log fields and store keys: keep them plain.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
