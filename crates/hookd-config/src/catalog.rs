//! The plugin catalog: the one place that says which plugins make up the set. It reads the
//! `[[plugin]]` entries of the main config and the plugin folder's `NAME.wasm` + `NAME.toml`
//! pairs, validates each through the same [`crate::plugin::validate_plugin`] within the
//! `[plugins]` ceilings, and admits the set together within `memory_budget_mb`. A start, every
//! reload and `hookd check` read it ([`Catalog::read`]); the main config's own entries are
//! admitted when the config is validated ([`admit_declared`]).
//!
//! Decisions:
//! - **The main config wins.** A `[[plugin]]` entry takes precedence over a folder `NAME.toml`
//!   of the same name; the folder's is ignored and listed in [`Catalog::shadowed`].
//! - **What cannot be seen is kept.** A folder that cannot be read, or that is gone while
//!   plugins read from it serve, is a refusal ([`Folder::Refused`]): every serving plugin the
//!   catalog could not describe keeps serving, never "no plugins". (Such a plugin may also be
//!   one a new main config stopped declaring: it may have moved into the folder, which cannot
//!   be told until the folder is read again.) A folder that does not exist while nothing from
//!   it serves is only [`Folder::Absent`]: a first start before the folder is made.
//! - **Problems are typed and located.** A manifest's problems are [`ConfigError`]s with their
//!   `file:line:column`; a component without a manifest and a plugin over the budget name
//!   their files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::plugin::{Identity, ManifestText, RawPlugin, load_sidecar_with, validate_plugin};
use crate::{ConfigError, Location, PluginSpec, PluginsConfig};

/// The plugin set the main config and the folder describe now.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The plugins to load: valid, within the ceilings, admitted within the memory budget.
    /// Main-config entries first, then by name.
    pub specs: Vec<PluginSpec>,
    /// Plugins left out, one entry per problem (a manifest may have several).
    pub refused: Vec<Refusal>,
    /// Folder manifests ignored because the main config declares a plugin of that name.
    pub shadowed: Vec<Shadowed>,
    /// What reading the plugin folder found.
    pub folder: Folder,
}

/// One problem that keeps a plugin out of the set.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub plugin: String,
    pub error: PluginError,
}

/// Why a plugin is not in the set.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginError {
    /// Its manifest does not validate, or does not fit a `[plugins]` ceiling.
    #[error("{0}")]
    Manifest(ConfigError),
    /// A `NAME.wasm` in the folder without its `NAME.toml`.
    #[error(
        "`{}` has no `{}` beside it: a plugin needs a manifest with its `events`",
        wasm.display(),
        manifest.display()
    )]
    NoManifest { wasm: PathBuf, manifest: PathBuf },
    /// With it, the plugin set's worst case would exceed `plugins.memory_budget_mb`.
    #[error("{0}")]
    OverBudget(ConfigError),
}

/// A folder manifest the main config overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    pub plugin: String,
    pub manifest: PathBuf,
}

/// What reading the plugin folder found.
#[derive(Debug, Clone)]
pub enum Folder {
    /// Read: each of its plugins is in [`Catalog::specs`] or [`Catalog::refused`].
    Read,
    /// It does not exist, and no serving plugin is missing from the catalog for it: no
    /// plugins from it.
    Absent,
    /// It could not be read, or it is gone while plugins read from it serve. The serving
    /// plugins the catalog could not describe, `kept`, keep serving as they are.
    Refused {
        error: FolderError,
        kept: Vec<String>,
    },
}

/// Why the plugin folder could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FolderError {
    #[error("the plugin folder `{}` does not exist", dir.display())]
    Gone { dir: PathBuf },
    #[error("cannot read the plugin folder `{}`: {cause}", dir.display())]
    Unreadable {
        dir: PathBuf,
        cause: Arc<std::io::Error>,
    },
}

impl Catalog {
    /// Reads the plugin set `plugins` (the main config's `[plugins]` and `[[plugin]]`) and its
    /// folder describe. `serving` is the set serving now (empty at a start): the memory budget
    /// admits what serves first, counts the serving version of a plugin whose new files are
    /// refused (it keeps serving), and a folder that cannot be read keeps what serves.
    pub fn read<'a>(
        plugins: &PluginsConfig,
        serving: impl IntoIterator<Item = &'a PluginSpec>,
    ) -> Catalog {
        let serving: BTreeMap<&str, &PluginSpec> =
            serving.into_iter().map(|s| (s.name.as_str(), s)).collect();
        let mut specs: BTreeMap<String, PluginSpec> = plugins
            .declared
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        let mut refused = Vec::new();
        let mut shadowed = Vec::new();
        let folder = match read_folder(plugins, &mut specs, &mut refused, &mut shadowed) {
            Ok(()) => Folder::Read,
            Err(e) => {
                let kept: Vec<String> = serving
                    .keys()
                    .filter(|name| {
                        !specs.contains_key(**name) && !refused.iter().any(|r| r.plugin == **name)
                    })
                    .map(|name| (*name).to_owned())
                    .collect();
                let dir = plugins.dir.clone();
                match e.kind() {
                    std::io::ErrorKind::NotFound if kept.is_empty() => Folder::Absent,
                    std::io::ErrorKind::NotFound => Folder::Refused {
                        error: FolderError::Gone { dir },
                        kept,
                    },
                    _ => Folder::Refused {
                        error: FolderError::Unreadable {
                            dir,
                            cause: Arc::new(e),
                        },
                        kept,
                    },
                }
            }
        };

        let kept_by_folder: &[String] = match &folder {
            Folder::Refused { kept, .. } => kept,
            Folder::Read | Folder::Absent => &[],
        };
        let kept: Vec<&PluginSpec> = serving
            .iter()
            .filter(|(name, _)| {
                refused.iter().any(|r| r.plugin == **name)
                    || kept_by_folder.iter().any(|k| k == *name)
            })
            .map(|(_, spec)| *spec)
            .collect();
        let (specs, over) =
            plugins.fit_memory_budget(specs.into_values().collect(), &kept, |name| {
                serving.get(name).copied()
            });
        refused.extend(over.into_iter().map(|(plugin, e)| Refusal {
            plugin,
            error: PluginError::OverBudget(e),
        }));
        Catalog {
            specs,
            refused,
            shadowed,
            folder,
        }
    }
}

/// Adds the folder's plugins to `specs` (those not declared already) and their problems to
/// `refused`. An error only when the folder itself cannot be listed.
fn read_folder(
    plugins: &PluginsConfig,
    specs: &mut BTreeMap<String, PluginSpec>,
    refused: &mut Vec<Refusal>,
    shadowed: &mut Vec<Shadowed>,
) -> std::io::Result<()> {
    let caps = plugins.caps();
    let mut wasm_files: Vec<PathBuf> = std::fs::read_dir(&plugins.dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .collect();
    wasm_files.sort();
    for wasm in wasm_files {
        let Some(name) = wasm.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        let manifest = wasm.with_extension("toml");
        if specs.contains_key(&name) {
            if manifest.exists() {
                shadowed.push(Shadowed {
                    plugin: name,
                    manifest,
                });
            }
            continue;
        }
        if !manifest.exists() {
            refused.push(Refusal {
                plugin: name,
                error: PluginError::NoManifest { wasm, manifest },
            });
            continue;
        }
        match load_sidecar_with(&manifest, &wasm, &caps) {
            Ok(spec) => {
                specs.insert(name, spec);
            }
            Err(errors) => refused.extend(errors.0.into_iter().map(|e| Refusal {
                plugin: name.clone(),
                error: PluginError::Manifest(e),
            })),
        }
    }
    Ok(())
}

/// Validates the main config's `[[plugin]]` `entries` (read from `text` at `source`) within
/// `plugins`' ceilings and sets them as `plugins.declared`. They are part of the config: any
/// problem, a duplicate name or a set over the memory budget included, is returned as a
/// config error (the config does not start), where a folder plugin would only be left out.
pub(crate) fn admit_declared(
    plugins: &mut PluginsConfig,
    entries: &[RawPlugin],
    text: &str,
    source: &Path,
) -> Vec<ConfigError> {
    let caps = plugins.caps();
    let mut errors = Vec::new();
    let mut declared: Vec<PluginSpec> = Vec::new();
    for (i, raw) in entries.iter().enumerate() {
        let key_prefix = format!("plugin[{i}].");
        let manifest = ManifestText {
            text,
            path: source,
            key_prefix: &key_prefix,
        };
        let identity = Identity::Declared {
            plugin_dir: &plugins.dir,
        };
        match validate_plugin(raw, &manifest, identity, &caps) {
            Ok(spec) => {
                if declared.iter().any(|d| d.name == spec.name) {
                    errors.push(ConfigError::new(
                        Location::file(source),
                        format!("plugin[{i}].name"),
                        format!("plugin `{}` is declared twice", spec.name),
                    ));
                }
                declared.push(spec);
            }
            Err(mut more) => errors.append(&mut more),
        }
    }
    let (declared, over) = plugins.fit_memory_budget(declared, &[], |_| None);
    errors.extend(over.into_iter().map(|(_, e)| e));
    plugins.declared = declared;
    errors
}

/// The spec of one plugin run outside the daemon (`hookd run-plugin`), within the default
/// ceilings: its `manifest`, else the `NAME.toml` beside `wasm` if there is one, else every
/// event and no capabilities.
pub fn standalone(wasm: &Path, manifest: Option<&Path>) -> Result<PluginSpec, StandaloneError> {
    let beside = wasm.with_extension("toml");
    let manifest = manifest.or_else(|| beside.exists().then_some(beside.as_path()));
    match manifest {
        Some(manifest) => crate::plugin::load_sidecar(manifest, wasm).map_err(|errors| {
            StandaloneError::InvalidManifest {
                manifest: manifest.to_owned(),
                errors,
            }
        }),
        None => Ok(ad_hoc(wasm)),
    }
}

/// Why [`standalone`] has no spec.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StandaloneError {
    #[error("{errors}\nthe plugin manifest `{}` is not valid", manifest.display())]
    InvalidManifest {
        manifest: PathBuf,
        errors: crate::ConfigErrors,
    },
}

/// A plugin without a manifest: named after its file, every event, the default limits, no
/// capabilities.
fn ad_hoc(wasm: &Path) -> PluginSpec {
    let name = wasm
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_owned();
    PluginSpec {
        name,
        wasm: wasm.to_owned(),
        source: wasm.to_owned(),
        // `*` always parses.
        events: hookd_core::EventPattern::parse("*").into_iter().collect(),
        limits: Default::default(),
        retry: Default::default(),
        capabilities: Default::default(),
        config: Default::default(),
    }
}
