//! A value that fails to parse never echoes a secret: not in error messages (whatever the
//! shape of the mistake), not in `Debug` output.

use std::path::Path;

use hookd_config::plugin::parse_sidecar;
use hookd_config::{Config, RawConfig, SecretSource};

const SECRET: &str = "s3cr3t-do-not-print-0123456789";

#[test]
fn a_secret_written_the_wrong_way_is_not_quoted_back() {
    // (config text, the message it gives, with the secret's place marked)
    let cases = [
        (
            format!("[verify]\nsecrets = \"{SECRET}\"\n"),
            "hookd.toml:2:11: invalid type: string (value not shown: this key may hold a \
             secret), expected a sequence",
        ),
        (
            format!("verify.secrets = \"{SECRET}\"\n"),
            "hookd.toml:1:18: invalid type: string (value not shown: this key may hold a \
             secret), expected a sequence",
        ),
        (
            format!("verify = {{ secrets = \"{SECRET}\" }}\n"),
            "hookd.toml:1:22: invalid type: string (value not shown: this key may hold a \
             secret), expected a sequence",
        ),
        (
            format!("[verify]\nsecrets = [[\"{SECRET}\"]]\n"),
            "hookd.toml:2:12: invalid type: sequence (value not shown: this key may hold a \
             secret), expected a string",
        ),
        (
            format!("[verify]\nsecrets = [\"{SECRET}\", 5]\n"),
            "hookd.toml:2:46: invalid type: integer (value not shown: this key may hold a \
             secret), expected a string",
        ),
        (
            format!("[verify]\nsecrets = [\"{SECRET}]\n"),
            "hookd.toml:2:44: unclosed array, expected `]`",
        ),
        (
            format!("[verify]\nsecrets = [{SECRET}]\n"),
            "hookd.toml:2:12: string values must be quoted, expected literal string",
        ),
        (
            format!(
                "[verify]\nsecrets = [\"0123456789abcdef\"]\n[[plugin]]\nname = \"p\"\n\
                 events = [\"*\"]\nconfig = \"{SECRET}\"\n"
            ),
            "hookd.toml:6:10: invalid type: string (value not shown: this key may hold a \
             secret), expected a map",
        ),
    ];
    for (text, expected) in &cases {
        let errors = Config::from_toml(text, Some(Path::new("hookd.toml"))).unwrap_err();
        let shown = errors.to_string();
        assert!(!shown.contains(SECRET), "{text}\n{shown}");
        assert!(!shown.contains("s3cr3t"), "{text}\n{shown}");
        assert_eq!(shown, format!("error: {expected}"), "{text}");
    }
}

#[test]
fn a_plugin_manifest_config_value_is_not_quoted_back() {
    let manifest = Path::new("plugins/p.toml");
    let wasm = Path::new("plugins/p.wasm");
    for text in [
        format!("events = [\"*\"]\nconfig = \"{SECRET}\"\n"),
        format!("events = [\"*\"]\n[config]\ntoken = {{ v = \"{SECRET}\" }}\n"),
        format!("events = [\"*\"]\n[config]\ntoken = [\"{SECRET}\"]\n"),
        format!("events = [\"*\"]\n[config]\ntoken = \"{SECRET}\nx = 1\n"),
    ] {
        let shown = parse_sidecar(&text, manifest, wasm)
            .unwrap_err()
            .to_string();
        assert!(!shown.contains("s3cr3t"), "{text}\n{shown}");
        assert!(shown.starts_with("error: plugins/p.toml:"), "{shown}");
    }
}

#[test]
fn values_of_other_keys_are_still_quoted() {
    // Only keys that may hold secrets lose their value: elsewhere it helps find the mistake.
    let errors = Config::from_toml(
        "[server]\nmax_body_bytes = \"1 MiB\"\n",
        Some(Path::new("hookd.toml")),
    )
    .unwrap_err();
    assert_eq!(
        errors.to_string(),
        "error: hookd.toml:2:18: invalid type: string \"1 MiB\", expected u64"
    );
}

#[test]
fn debug_output_hides_secrets_and_plugin_config_values() {
    let text = format!(
        "[verify]\nsecrets = [\"{SECRET}\"]\n[[plugin]]\nname = \"p\"\nevents = [\"*\"]\n\
         [plugin.config]\napi_token = \"{SECRET}\"\n"
    );
    let raw = RawConfig::parse(&text, None).unwrap();
    let shown = format!("{raw:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("api_token"), "{shown}");
    let config = Config::from_toml(&text, None).unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    let source = format!("{:?}", SecretSource::parse(SECRET));
    assert_eq!(source, "Inline(<hidden>)");
}
