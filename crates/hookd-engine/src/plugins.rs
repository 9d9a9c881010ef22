//! The plugins serving ([`PluginRegistry`]: "who wants this event?") and compiling one. Which
//! plugins make up the set (the folder's `NAME.wasm` + `NAME.toml`, and `[[plugin]]` in the
//! main config) is [`hookd_config::Catalog`]'s answer; [`crate::reload`] loads it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use hookd_config::PluginSpec;
use hookd_core::EventType;
use hookd_host::{LoadedPlugin, PluginHost};

/// Why one plugin could not be compiled.
#[derive(Debug)]
pub enum CompileError {
    Read {
        wasm: PathBuf,
        cause: std::io::Error,
    },
    Load(hookd_host::LoadError),
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompileError::Read { wasm, cause } => {
                write!(f, "cannot read `{}`: {cause}", wasm.display())
            }
            CompileError::Load(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CompileError {}

/// Reads and compiles one plugin (for `hookd check` and `hookd run-plugin`; the daemon loads
/// through [`crate::reload`]).
pub fn compile(host: &PluginHost, spec: PluginSpec) -> Result<LoadedPlugin, CompileError> {
    let bytes = std::fs::read(&spec.wasm).map_err(|cause| CompileError::Read {
        wasm: spec.wasm.clone(),
        cause,
    })?;
    host.load(spec, &bytes).map_err(CompileError::Load)
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
