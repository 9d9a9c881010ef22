//! The `[plugins]` ceilings and memory budget bind a folder `NAME.toml` exactly as a
//! `[[plugin]]` entry: the same keys are refused, at their line, with the same message.

use std::path::Path;

use hookd_config::plugin::parse_sidecar_with;
use hookd_config::{Config, ConfigErrors, HOST_BYTES_PER_INSTANCE, PluginsConfig};

const SECRET: &str = "[verify]\nsecrets = [\"0123456789abcdef0123\"]\n";

fn plugins_config(plugins_section: &str) -> PluginsConfig {
    Config::from_toml(
        &format!("{SECRET}[plugins]\n{plugins_section}"),
        Some(Path::new("hookd.toml")),
    )
    .unwrap()
    .plugins
}

/// The sidecar `body` checked within the ceilings of `plugins_section`.
fn sidecar(plugins_section: &str, body: &str) -> Result<hookd_config::PluginSpec, ConfigErrors> {
    let caps = plugins_config(plugins_section).caps();
    parse_sidecar_with(
        body,
        Path::new("plugins/p.toml"),
        Path::new("plugins/p.wasm"),
        &caps,
    )
}

/// The same `body` as a `[[plugin]]` entry of the main config.
fn declared(plugins_section: &str, body: &str) -> Result<Config, ConfigErrors> {
    let entry = body
        .replace("[limits]", "[plugin.limits]")
        .replace("[capabilities]", "[plugin.capabilities]");
    Config::from_toml(
        &format!("{SECRET}[plugins]\n{plugins_section}\n[[plugin]]\nname = \"p\"\n{entry}"),
        Some(Path::new("hookd.toml")),
    )
}

const LOW_CEILINGS: &str = "max_memory_mb = 32
max_instances = 8
max_timeout_ms = 1000
max_kv_keys = 100
max_kv_value_bytes = 512
max_http_timeout_ms = 500
max_http_response_bytes = 4096
";

const OVER_EVERY_CEILING: &str = "events = [\"*\"]
[limits]
memory_mb = 64
concurrency = 9
timeout_ms = 2000
[capabilities]
kv = true
kv_max_keys = 101
kv_max_value_bytes = 1024
http_timeout_ms = 501
http_max_response_bytes = 4097
";

#[test]
fn a_folder_manifest_over_a_ceiling_is_refused_like_a_declared_plugin() {
    // (key, line in the manifest, message)
    let expected = [
        (
            "limits.memory_mb",
            3,
            "64 exceeds `plugins.max_memory_mb` = 32",
        ),
        (
            "limits.concurrency",
            4,
            "9 exceeds `plugins.max_instances` = 8",
        ),
        (
            "limits.timeout_ms",
            5,
            "2000 exceeds `plugins.max_timeout_ms` = 1000",
        ),
        (
            "capabilities.kv_max_keys",
            8,
            "101 exceeds `plugins.max_kv_keys` = 100",
        ),
        (
            "capabilities.kv_max_value_bytes",
            9,
            "1024 exceeds `plugins.max_kv_value_bytes` = 512",
        ),
        (
            "capabilities.http_timeout_ms",
            10,
            "501 exceeds `plugins.max_http_timeout_ms` = 500",
        ),
        (
            "capabilities.http_max_response_bytes",
            11,
            "4097 exceeds `plugins.max_http_response_bytes` = 4096",
        ),
    ];
    let folder = sidecar(LOW_CEILINGS, OVER_EVERY_CEILING).unwrap_err();
    let folder: Vec<String> = folder.iter().map(ToString::to_string).collect();
    let main = declared(LOW_CEILINGS, OVER_EVERY_CEILING).unwrap_err();
    let main: Vec<String> = main.iter().map(ToString::to_string).collect();
    assert_eq!(folder.len(), expected.len(), "{folder:#?}");
    assert_eq!(main.len(), expected.len(), "{main:#?}");
    // The main config has the secret, `[plugins]` and the entry's header before the body.
    let offset = 3 + LOW_CEILINGS.lines().count() + 3;
    for ((key, line, message), (f, m)) in expected.iter().zip(folder.iter().zip(&main)) {
        let tail = format!(
            "{message}, the ceiling for every plugin; lower it, or raise the ceiling in the main \
             config"
        );
        assert!(
            f.starts_with(&format!("plugins/p.toml:{line}:")) && f.contains(&format!("`{key}`")),
            "{f}"
        );
        assert!(f.ends_with(&tail), "{f}");
        assert!(
            m.starts_with(&format!("hookd.toml:{}:", line + offset))
                && m.contains(&format!("`plugin[0].{key}`")),
            "{m}"
        );
        assert!(m.ends_with(&tail), "{m}");
    }
}

#[test]
fn values_within_the_ceilings_are_kept_and_defaults_are_lowered_to_them() {
    let within = "events = [\"*\"]\n[limits]\nmemory_mb = 32\nconcurrency = 8\n";
    let spec = sidecar(LOW_CEILINGS, within).unwrap();
    assert_eq!(spec.limits.memory_bytes, 32 << 20);
    assert_eq!(spec.limits.concurrency, 8);

    // Nothing written: each default is lowered to its ceiling rather than refused.
    let spec = sidecar(LOW_CEILINGS, "events = [\"*\"]\n").unwrap();
    assert_eq!(spec.limits.memory_bytes, 32 << 20);
    assert_eq!(spec.limits.timeout.as_millis(), 1000);
    assert_eq!(spec.capabilities.kv_max_keys, 100);
    assert_eq!(spec.capabilities.kv_max_value_bytes, 512);
    assert_eq!(spec.capabilities.http_timeout.as_millis(), 500);
    assert_eq!(spec.capabilities.http_max_response_bytes, 4096);
    let config = declared(LOW_CEILINGS, "events = [\"*\"]\n").unwrap();
    assert_eq!(config.plugins.declared[0], {
        let mut s = spec;
        s.source = "hookd.toml".into();
        s.wasm = config.plugins.dir.join("p.wasm");
        s
    });
}

#[test]
fn the_default_ceilings_grant_the_default_plugin() {
    let config = plugins_config("");
    assert_eq!(config.max_instances, 16);
    assert_eq!(config.memory_budget_bytes, 1536 << 20);
    let spec = sidecar("", "events = [\"*\"]\n").unwrap();
    assert_eq!(spec.limits.memory_bytes, 64 << 20);
    assert_eq!(spec.limits.concurrency, 4);
    assert_eq!(spec.capabilities.kv_max_keys, 10_000);
    assert_eq!(spec.capabilities.kv_max_value_bytes, 4096);
    // Any number of default plugins fits: 16 instances x (64 MiB + the host's allowance).
    let worst = 16 * ((64 << 20) + HOST_BYTES_PER_INSTANCE);
    assert!(worst <= config.memory_budget_bytes, "{}", worst >> 20);
}

#[test]
fn a_key_value_store_larger_than_max_kv_mb_is_refused() {
    let ceilings = "max_kv_mb = 10\n";
    // 10,000 keys x (1 KiB + 4 KiB) is about 49 MiB: the default number of keys is lowered.
    let spec = sidecar(ceilings, "events = [\"*\"]\n[capabilities]\nkv = true\n").unwrap();
    assert_eq!(spec.capabilities.kv_max_keys, (10 << 20) / (1024 + 4096));

    let body = "events = [\"*\"]\n[capabilities]\nkv = true\nkv_max_keys = 5000\n";
    let folder = sidecar(ceilings, body).unwrap_err().to_string();
    assert_eq!(
        folder,
        "error: plugins/p.toml:4:15: `capabilities.kv_max_keys`: `kv_max_keys` x (1024 B key + \
         `kv_max_value_bytes`) = 25 MiB exceeds `plugins.max_kv_mb` = 10, the most disk one \
         plugin's key-value store may take; lower either, or raise the ceiling"
    );
    let main = declared(ceilings, body).unwrap_err().to_string();
    assert!(
        main.contains("`plugin[0].capabilities.kv_max_keys`: `kv_max_keys` x"),
        "{main}"
    );
}

#[test]
fn one_plugin_whose_own_worst_case_exceeds_the_budget_is_refused_at_its_line() {
    let ceilings = "memory_budget_mb = 1000\n";
    let body = "events = [\"*\"]\n[limits]\nmemory_mb = 200\nconcurrency = 8\n";
    let folder = sidecar(ceilings, body).unwrap_err().to_string();
    let host = HOST_BYTES_PER_INSTANCE >> 20;
    assert_eq!(
        folder,
        format!(
            "error: plugins/p.toml:4:15: `limits.concurrency`: this plugin alone may hold {} MiB \
             at once (8 instances x (200 MiB `limits.memory_mb` + {host} MiB host allowance)), \
             over `plugins.memory_budget_mb` = 1000; lower `limits.concurrency` or \
             `limits.memory_mb`, or raise `plugins.memory_budget_mb`",
            8 * (200 + host)
        )
    );
    assert!(declared(ceilings, body).is_err());
    // Concurrency left out is lowered to what fits.
    let spec = sidecar(ceilings, "events = [\"*\"]\n[limits]\nmemory_mb = 200\n").unwrap();
    assert_eq!(spec.limits.concurrency as u64, 1000 / (200 + host));
}

#[test]
fn declared_plugins_that_do_not_fit_the_budget_together_do_not_start() {
    let plugin = |name: &str| {
        format!(
            "[[plugin]]\nname = \"{name}\"\nevents = [\"*\"]\n[plugin.limits]\nmemory_mb = 200\n"
        )
    };
    let text = format!(
        "{SECRET}[plugins]\nmemory_budget_mb = 2000\n{}{}{}",
        plugin("a"),
        plugin("b"),
        plugin("c")
    );
    let errors = Config::from_toml(&text, Some(Path::new("hookd.toml"))).unwrap_err();
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let host = HOST_BYTES_PER_INSTANCE >> 20;
    let each = 4 * (200 + host);
    assert_eq!(
        errors[0],
        format!(
            "hookd.toml: plugin `c` is not loaded: with it, the plugins' worst case is {} MiB \
             (12 instances alive at once, of at most `plugins.max_instances` = 16, each its \
             `limits.memory_mb` plus {host} MiB host allowance), over \
             `plugins.memory_budget_mb` = 2000; largest: `a` 4 x {} MiB = {each} MiB, `b` 4 x \
             {} MiB = {each} MiB, `c` 4 x {} MiB = {each} MiB. To fit, lower a plugin's \
             `limits.concurrency` or `limits.memory_mb`, lower `plugins.max_instances`, or raise \
             `plugins.memory_budget_mb` (keep it below the service's MemoryMax= with room for \
             hookd itself, see docs/systemd.md)",
            3 * each,
            200 + host,
            200 + host,
            200 + host,
        )
    );
}

#[test]
fn the_ceilings_themselves_are_bounded() {
    let errors = Config::from_toml(
        &format!("{SECRET}[plugins]\nmax_kv_keys = 0\nmemory_budget_mb = 0\n"),
        Some(Path::new("hookd.toml")),
    )
    .unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains("hookd.toml:4:15: `plugins.max_kv_keys`: must be between 1"),
        "{text}"
    );
    assert!(
        text.contains("`plugins.memory_budget_mb`: must be between 1"),
        "{text}"
    );
}
