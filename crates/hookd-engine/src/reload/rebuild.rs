//! Rebuilding the plugin registry: what the folder and the config describe now, reusing what
//! is already loaded, with a refused file keeping the version that serves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hookd_config::{Config, PluginSpec};
use hookd_host::{CodeCache, LoadedPlugin, PluginHost};

use crate::plugins::{PluginMap, discover_with};

/// What happened to one plugin in a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new plugin is serving.
    Added,
    /// New code is serving.
    Updated,
    /// The same code is serving under a new manifest.
    Manifest,
    /// The plugin is gone; its pending deliveries are paused.
    Removed,
    /// The new files were refused; the previous version (if any) keeps serving.
    Failed,
}

impl ChangeKind {
    pub fn label(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Updated => "updated",
            ChangeKind::Manifest => "manifest",
            ChangeKind::Removed => "removed",
            ChangeKind::Failed => "failed",
        }
    }
}

/// One plugin's part of a reload.
#[derive(Debug, Clone)]
pub struct Change {
    pub plugin: String,
    pub kind: ChangeKind,
    pub old_hash: Option<String>,
    pub new_hash: Option<String>,
    /// Compile (or cache read) and link time.
    pub took: Option<Duration>,
    pub cache_hit: bool,
    pub error: Option<String>,
    /// A refusal of the very files refused last time: not compiled, logged or counted again.
    pub repeat: bool,
}

/// The last refusal of each plugin: the content hash of the component refused (when it was
/// read) and the error. Content refused once is refused again without compiling it.
pub type Refusals = BTreeMap<String, (Option<String>, String)>;

impl Change {
    fn new(plugin: &str, kind: ChangeKind, old: Option<&Arc<LoadedPlugin>>) -> Change {
        Change {
            plugin: plugin.to_owned(),
            kind,
            old_hash: old.map(|p| p.content_hash.clone()),
            new_hash: None,
            took: None,
            cache_hit: false,
            error: None,
            repeat: false,
        }
    }

    fn loaded(mut self, plugin: &LoadedPlugin) -> Change {
        self.new_hash = Some(plugin.content_hash.clone());
        self.took = Some(plugin.load_stats.took);
        self.cache_hit = plugin.load_stats.cache_hit;
        self
    }

    fn failed(
        plugin: &str,
        old: Option<&Arc<LoadedPlugin>>,
        error: String,
        refused_hash: Option<String>,
        before: &Refusals,
    ) -> Change {
        let repeat = before
            .get(plugin)
            .is_some_and(|(hash, message)| *hash == refused_hash && *message == error);
        Change {
            error: Some(error),
            new_hash: refused_hash,
            repeat,
            ..Change::new(plugin, ChangeKind::Failed, old)
        }
    }
}

/// Builds the registry `config` and the plugin folder describe now, reusing what `current`
/// already has: unchanged plugins are kept as they are, refused ones keep their old version.
/// Reads and compiles: call it off the async threads.
pub fn rebuild(
    host: &PluginHost,
    cache: Option<&CodeCache>,
    current: &PluginMap,
    config: &Config,
    refused_before: &Refusals,
) -> (PluginMap, Vec<Change>) {
    let (specs, problems) = discover_with(config, current);
    let mut next = PluginMap::new();
    let mut changes = Vec::new();

    // Problems with one plugin's manifest: keep what serves. A problem with the folder itself
    // (unreadable) keeps every plugin it would have listed.
    let mut refused: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in problems {
        refused.entry(p.plugin).or_default().push(p.message);
    }
    let folder_unreadable = refused.contains_key("");
    for (name, messages) in &refused {
        let old = current.get(name);
        if let Some(old) = old {
            next.insert(name.clone(), old.clone());
        }
        changes.push(Change::failed(
            name,
            old,
            messages.join("; "),
            None,
            refused_before,
        ));
    }

    for spec in specs {
        let name = spec.name.clone();
        let old = current.get(&name);
        match load_one(host, cache, old, spec, refused_before) {
            Ok(None) => {
                if let Some(old) = old {
                    next.insert(name, old.clone());
                }
            }
            Ok(Some((plugin, kind))) => {
                changes.push(Change::new(&name, kind, old).loaded(&plugin));
                next.insert(name, Arc::new(plugin));
            }
            Err(LoadFailure::Missing(_)) if old.is_some() => {
                changes.push(Change::new(&name, ChangeKind::Removed, old));
            }
            Err(LoadFailure::Missing(message)) => {
                changes.push(Change::failed(&name, None, message, None, refused_before));
            }
            Err(LoadFailure::Refused { message, hash }) => {
                if let Some(old) = old {
                    next.insert(name.clone(), old.clone());
                }
                changes.push(Change::failed(&name, old, message, hash, refused_before));
            }
        }
    }

    for (name, old) in current {
        if next.contains_key(name) || refused.contains_key(name) {
            continue;
        }
        if folder_unreadable {
            next.insert(name.clone(), old.clone());
        } else {
            changes.push(Change::new(name, ChangeKind::Removed, Some(old)));
        }
    }
    (next, changes)
}

enum LoadFailure {
    /// The component file is gone.
    Missing(String),
    Refused {
        message: String,
        /// The content hash of the component refused, when it could be read.
        hash: Option<String>,
    },
}

/// `Ok(None)`: unchanged.
fn load_one(
    host: &PluginHost,
    cache: Option<&CodeCache>,
    old: Option<&Arc<LoadedPlugin>>,
    spec: PluginSpec,
    refused_before: &Refusals,
) -> Result<Option<(LoadedPlugin, ChangeKind)>, LoadFailure> {
    let bytes = std::fs::read(&spec.wasm).map_err(|e| {
        let message = format!("cannot read `{}`: {e}", spec.wasm.display());
        if e.kind() == std::io::ErrorKind::NotFound {
            LoadFailure::Missing(message)
        } else {
            LoadFailure::Refused {
                message,
                hash: None,
            }
        }
    })?;
    let hash = hookd_host::content_hash(&bytes);
    // Whether code links does not depend on the manifest: refused bytes stay refused.
    if let Some((Some(refused), message)) = refused_before.get(&spec.name)
        && *refused == hash
    {
        return Err(LoadFailure::Refused {
            message: message.clone(),
            hash: Some(hash),
        });
    }
    let refused = |e: hookd_host::LoadError| LoadFailure::Refused {
        message: e.to_string(),
        hash: Some(hash.clone()),
    };
    if let Some(old) = old.filter(|old| old.content_hash == hash) {
        if *old.spec == spec {
            return Ok(None);
        }
        return host
            .relink(old, spec)
            .map(|p| Some((p, ChangeKind::Manifest)))
            .map_err(refused);
    }
    let kind = if old.is_some() {
        ChangeKind::Updated
    } else {
        ChangeKind::Added
    };
    host.load_cached(spec, &bytes, cache)
        .map(|p| Some((p, kind)))
        .map_err(refused)
}
