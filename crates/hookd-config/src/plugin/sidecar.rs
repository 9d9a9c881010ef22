//! A folder manifest (`NAME.toml` beside `NAME.wasm`): read, named by its file, validated.

use std::path::Path;

use super::caps::PluginCaps;
use super::raw::RawPlugin;
use super::spec::PluginSpec;
use super::validate::{Identity, ManifestText, valid_name, validate_plugin};
use crate::toml_error::{manifest_secrets, parse_error};
use crate::{ConfigError, ConfigErrors, Location};

/// Reads and validates the sidecar `toml` of plugin `name` whose component is `wasm`, within
/// the default ceilings (for `hookd run-plugin`, which has no main config; the daemon and
/// `hookd check` read the folder through [`crate::catalog`], within the config's).
pub fn load_sidecar(toml_path: &Path, wasm: &Path) -> Result<PluginSpec, ConfigErrors> {
    load_sidecar_with(toml_path, wasm, &PluginCaps::default())
}

/// Reads and validates the sidecar `toml` of plugin `name` whose component is `wasm`, within
/// `caps` (the main config's `[plugins]` ceilings, as for `[[plugin]]` entries).
pub(crate) fn load_sidecar_with(
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
    let source = ManifestText {
        text,
        path: toml_path,
        key_prefix: "",
    };
    let identity = Identity::Sidecar { name: &name, wasm };
    match validate_plugin(&raw, &source, identity, caps) {
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
