//! Rebuilding the plugin registry: what the catalog (the folder and the config) describes now,
//! reusing what is already loaded, with a refused file, or a folder that cannot be read,
//! keeping the version that serves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hookd_config::catalog::{Folder, FolderError};
use hookd_config::{Catalog, Config, PluginSpec};
use hookd_host::{CodeCache, LoadedPlugin, PluginHost};
use tracing::warn;

use crate::plugins::PluginMap;

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

/// What a rebuild produced.
pub struct Rebuilt {
    /// The registry to swap in.
    pub plugins: PluginMap,
    /// What happened to each plugin.
    pub changes: Vec<Change>,
    /// Set when the plugin folder could not be read: the plugins it may hold kept serving.
    pub folder_refused: Option<FolderRefusal>,
}

/// The plugin folder could not be read (or is gone while plugins from it serve).
#[derive(Debug, Clone)]
pub struct FolderRefusal {
    pub error: FolderError,
    /// The serving plugins kept as they are because the folder could not be seen.
    pub kept: Vec<String>,
}

/// Builds the registry `config` and the plugin folder describe now, reusing what `current`
/// already has: unchanged plugins are kept as they are, refused ones keep their old version,
/// and a folder that cannot be read keeps every plugin it may hold. Reads and compiles: call it
/// off the async threads.
pub fn rebuild(
    host: &PluginHost,
    cache: Option<&CodeCache>,
    current: &PluginMap,
    config: &Config,
    refused_before: &Refusals,
) -> Rebuilt {
    let catalog = Catalog::read(&config.plugins, current.values().map(|p| &*p.spec));
    for s in &catalog.shadowed {
        warn!(plugin = %s.plugin, manifest = %s.manifest.display(),
            "declared in the main config, which takes precedence; this file is ignored");
    }
    let mut next = PluginMap::new();
    let mut changes = Vec::new();

    // Problems with one plugin's files: keep what serves.
    let mut refused: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in catalog.refused {
        refused
            .entry(r.plugin)
            .or_default()
            .push(r.error.to_string());
    }
    // A folder that cannot be read: keep every serving plugin it may hold, each refused with
    // the folder's error (so `/plugins` shows why it did not change).
    let folder_refused = match catalog.folder {
        Folder::Read => None,
        Folder::Absent => {
            warn!(dir = %config.plugins.dir.display(), "the plugin folder does not exist; no plugins from it");
            None
        }
        Folder::Refused { error, kept } => {
            for name in &kept {
                refused
                    .entry(name.clone())
                    .or_default()
                    .push(error.to_string());
            }
            Some(FolderRefusal { error, kept })
        }
    };
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

    for spec in catalog.specs {
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

    // Serving, and neither in the catalog nor kept: gone from the folder or the config.
    for (name, old) in current {
        if !next.contains_key(name) && !refused.contains_key(name) {
            changes.push(Change::new(name, ChangeKind::Removed, Some(old)));
        }
    }
    Rebuilt {
        plugins: next,
        changes,
        folder_refused,
    }
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
