//! Finding plugins (the folder's `NAME.wasm` + `NAME.toml`, and `[[plugin]]` in the main
//! config), compiling them, and answering "who wants this event?".
//!
//! Precedence: a plugin declared in the main config wins over a `NAME.toml` of the same name
//! in the folder; the sidecar is then ignored, with a warning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use hookd_config::{Config, PluginSpec};
use hookd_core::EventType;
use hookd_host::{LoadedPlugin, PluginHost};

/// A problem with one plugin; the others still load.
#[derive(Debug, Clone)]
pub struct PluginProblem {
    pub plugin: String,
    pub message: String,
}

/// Every plugin the configuration and the folder define, validated but not compiled, within
/// the memory budget (for `hookd check` and a start: nothing serves yet).
pub fn discover(config: &Config) -> (Vec<PluginSpec>, Vec<PluginProblem>) {
    discover_with(config, &PluginMap::new())
}

/// [`discover`] for a reload: the memory budget admits what serves in `current` first, and
/// counts the serving version of a plugin whose new files are refused (it keeps serving).
pub fn discover_with(
    config: &Config,
    current: &PluginMap,
) -> (Vec<PluginSpec>, Vec<PluginProblem>) {
    let (specs, mut problems) = discover_all(config);
    let folder_unreadable = problems.iter().any(|p| p.plugin.is_empty());
    let kept: Vec<&PluginSpec> = current
        .iter()
        .filter(|(name, _)| {
            problems.iter().any(|p| p.plugin == **name)
                || (folder_unreadable && !specs.iter().any(|s| s.name == **name))
        })
        .map(|(_, p)| &*p.spec)
        .collect();
    let (specs, over) = config
        .plugins
        .fit_memory_budget(specs, &kept, |name| current.get(name).map(|p| &*p.spec));
    problems.extend(over.into_iter().map(|(plugin, e)| PluginProblem {
        plugin,
        message: e.to_string(),
    }));
    (specs, problems)
}

fn discover_all(config: &Config) -> (Vec<PluginSpec>, Vec<PluginProblem>) {
    let mut specs: BTreeMap<String, PluginSpec> = config
        .plugins
        .declared
        .iter()
        .map(|s| (s.name.clone(), s.clone()))
        .collect();
    let mut problems = Vec::new();
    let dir = &config.plugins.dir;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(dir = %dir.display(), "the plugin folder does not exist; no plugins from it");
            return (specs.into_values().collect(), problems);
        }
        Err(e) => {
            problems.push(PluginProblem {
                plugin: String::new(),
                message: format!("cannot read the plugin folder `{}`: {e}", dir.display()),
            });
            return (specs.into_values().collect(), problems);
        }
    };
    let mut wasm_files: Vec<PathBuf> = entries
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
                tracing::warn!(plugin = %name, manifest = %manifest.display(),
                    "declared in the main config, which takes precedence; this file is ignored");
            }
            continue;
        }
        if !manifest.exists() {
            problems.push(PluginProblem {
                plugin: name.clone(),
                message: format!(
                    "`{}` has no `{}` beside it: a plugin needs a manifest with its `events`",
                    wasm.display(),
                    manifest.display()
                ),
            });
            continue;
        }
        match hookd_config::plugin::load_sidecar_with(&manifest, &wasm, &config.plugins.caps()) {
            Ok(spec) => {
                specs.insert(name, spec);
            }
            Err(errors) => {
                for e in errors.iter() {
                    problems.push(PluginProblem {
                        plugin: name.clone(),
                        message: e.to_string(),
                    });
                }
            }
        }
    }
    (specs.into_values().collect(), problems)
}

/// Reads and compiles one plugin (for `hookd check` and `hookd run-plugin`; the daemon loads
/// through [`crate::reload`]).
pub fn compile(host: &PluginHost, spec: PluginSpec) -> Result<LoadedPlugin, PluginProblem> {
    let name = spec.name.clone();
    let bytes = std::fs::read(&spec.wasm).map_err(|e| PluginProblem {
        plugin: name.clone(),
        message: format!("cannot read `{}`: {e}", spec.wasm.display()),
    })?;
    host.load(spec, &bytes).map_err(|e| PluginProblem {
        plugin: name,
        message: e.to_string(),
    })
}

/// The plugins serving, by name.
pub type PluginMap = BTreeMap<String, Arc<LoadedPlugin>>;

/// The plugins currently serving. Readers take a snapshot (a lock-free load); a reload builds
/// a whole new map, plugins and subscriptions together, and swaps it in at once. A delivery
/// that started on the old snapshot finishes on the plugin version it holds.
#[derive(Default)]
pub struct PluginRegistry {
    current: ArcSwap<PluginMap>,
}

impl PluginRegistry {
    pub fn snapshot(&self) -> Arc<PluginMap> {
        self.current.load_full()
    }

    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.current.load().get(name).cloned()
    }

    /// Replaces every plugin at once.
    pub fn swap(&self, plugins: PluginMap) {
        self.current.store(Arc::new(plugins));
    }

    /// Names of the loaded plugins whose patterns match `event_type`.
    pub fn subscribers(&self, event_type: &EventType) -> Vec<Arc<str>> {
        self.current
            .load()
            .values()
            .filter(|p| {
                p.spec
                    .events
                    .iter()
                    .any(|pattern| pattern.matches(event_type))
            })
            .map(|p| Arc::from(p.spec.name.as_str()))
            .collect()
    }
}

/// The spec `hookd run-plugin` uses when no manifest is given: every event, no capabilities.
pub fn ad_hoc_spec(wasm: &Path) -> PluginSpec {
    let name = wasm
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_owned();
    PluginSpec {
        name,
        wasm: wasm.to_owned(),
        source: wasm.to_owned(),
        events: vec![hookd_core::EventPattern::parse("*").unwrap_or_else(|_| unreachable!())],
        limits: Default::default(),
        retry: Default::default(),
        capabilities: Default::default(),
        config: Default::default(),
    }
}
