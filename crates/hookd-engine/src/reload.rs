//! Hot reload. The plugin folder is watched; SIGHUP re-reads the main config. Both rebuild the
//! plugin registry off the request and delivery paths and swap it in whole.
//!
//! Rules an operator can rely on:
//! - **A broken file never replaces a working plugin.** A `NAME.wasm` that does not compile
//!   (half-copied, garbage, wrong world) or a `NAME.toml` that does not validate leaves the
//!   previous version serving and is tried again when the file changes again.
//! - **Unchanged content is not recompiled.** Files are compared by SHA-256; a manifest-only
//!   change links the same code again under the new settings.
//! - **In-flight deliveries finish on the version they started with**; the next delivery uses
//!   the new one.
//! - **A removed plugin gets no new deliveries**; its pending deliveries stay in the store,
//!   paused, and resume if a plugin of that name comes back.
//! - **A config reload is all or nothing**: it is validated first, and a config with any error
//!   changes nothing. Settings that cannot change live are reported and keep their running
//!   values until a restart.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hookd_config::{Config, PluginSpec};
use hookd_core::Verifier;
use hookd_host::{CodeCache, LoadedPlugin, PluginHost};
use hookd_server::{AdminInfo, IngestLimits, IngestState};
use hookd_store::StoreReader;
use notify::EventKind;
use notify::event::{AccessKind, AccessMode};
use notify_debouncer_full::{DebounceEventResult, DebouncedEvent, Debouncer, RecommendedCache};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use crate::logging::LogFilter;
use crate::plugins::{PluginMap, PluginRegistry, discover_with};

/// Quiet time after the last change to a file before the folder is read again: a copy in
/// progress keeps resetting it.
const DEBOUNCE: Duration = Duration::from_millis(100);

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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    kind: &'static str,
    outcome: &'static str,
}

/// `hookd_reloads_total{kind, outcome}`: `kind` is `plugin` (outcome added, updated,
/// manifest, removed, failed) or `config` (outcome ok, failed).
#[derive(Clone)]
pub struct ReloadMetrics {
    reloads: Family<ReloadLabel, Counter>,
}

impl ReloadMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            reloads: Family::default(),
        };
        registry.sub_registry_with_prefix("hookd").register(
            "reloads",
            "Reloads of plugins (added, updated, manifest, removed, failed) and of the main \
             config (ok, failed)",
            m.reloads.clone(),
        );
        m
    }

    fn count(&self, kind: &'static str, outcome: &'static str) {
        self.reloads
            .get_or_create(&ReloadLabel { kind, outcome })
            .inc();
    }
}

/// The last refusal of a plugin's files, kept until a version of it loads.
#[derive(Debug, Clone)]
struct LastError {
    message: String,
    /// The content hash of the component refused, when it was read.
    content_hash: Option<String>,
    at: SystemTime,
}

/// What `/plugins` shows: the registry, and the last refusal of each plugin.
pub struct PluginsInfo {
    registry: Arc<PluginRegistry>,
    errors: Mutex<BTreeMap<String, LastError>>,
    store_dir: PathBuf,
    /// Opened at the first `GET /status`.
    reader: Mutex<Option<StoreReader>>,
}

impl PluginsInfo {
    pub fn new(registry: Arc<PluginRegistry>, store_dir: PathBuf) -> Self {
        Self {
            registry,
            errors: Mutex::default(),
            store_dir,
            reader: Mutex::default(),
        }
    }

    /// The refusals a rebuild compares against.
    fn refusals(&self) -> Refusals {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, e)| (name.clone(), (e.content_hash.clone(), e.message.clone())))
            .collect()
    }

    fn open_deliveries(
        &self,
    ) -> Result<Vec<hookd_store::PluginDeliveries>, hookd_store::StoreError> {
        let mut reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        if reader.is_none() {
            *reader = Some(StoreReader::open(&self.store_dir)?);
        }
        reader
            .as_ref()
            .map_or(Ok(Vec::new()), StoreReader::open_deliveries_by_plugin)
    }

    fn record(&self, changes: &[Change]) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        // Every rebuild looks at every plugin, so an error stays exactly as long as its plugin
        // is still refused: fixed files (even back to the content already serving, which is
        // no change) clear it, and so does removing the plugin.
        let refused_now: HashSet<&str> = changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Failed)
            .map(|c| c.plugin.as_str())
            .collect();
        errors.retain(|name, _| refused_now.contains(name.as_str()));
        for c in changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Failed && !c.repeat)
        {
            errors.insert(
                c.plugin.clone(),
                LastError {
                    message: c.error.clone().unwrap_or_default(),
                    content_hash: c.new_hash.clone(),
                    at: SystemTime::now(),
                },
            );
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl AdminInfo for PluginsInfo {
    fn plugins(&self) -> serde_json::Value {
        let loaded = self.registry.snapshot();
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut out = Vec::new();
        for (name, p) in loaded.iter() {
            let spec = &p.spec;
            let error = errors.get(name);
            out.push(json!({
                "name": name,
                "loaded": true,
                "content_hash": p.content_hash,
                "loaded_at_ms": unix_ms(p.loaded_at),
                "load_ms": p.load_stats.took.as_secs_f64() * 1000.0,
                "cache_hit": p.load_stats.cache_hit,
                "wasm": spec.wasm,
                "manifest": spec.source,
                "events": spec.events.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
                "limits": {
                    "timeout_ms": spec.limits.timeout.as_millis() as u64,
                    "memory_bytes": spec.limits.memory_bytes,
                    "concurrency": spec.limits.concurrency,
                },
                "retry": {
                    "max_attempts": spec.retry.max_attempts,
                    "initial_backoff_ms": spec.retry.initial_backoff.as_millis() as u64,
                    "max_backoff_ms": spec.retry.max_backoff.as_millis() as u64,
                    "max_age_secs": spec.retry.max_age.as_secs(),
                },
                "http_origins": spec.capabilities.http.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "kv": spec.capabilities.kv,
                "last_error": error.map(|e| e.message.clone()),
                "last_error_at_ms": error.map(|e| unix_ms(e.at)),
            }));
        }
        for (name, error) in errors.iter().filter(|(n, _)| !loaded.contains_key(*n)) {
            out.push(json!({
                "name": name,
                "loaded": false,
                "last_error": error.message,
                "last_error_at_ms": unix_ms(error.at),
            }));
        }
        serde_json::Value::Array(out)
    }

    fn deliveries(&self) -> serde_json::Value {
        let rows = match self.open_deliveries() {
            Ok(rows) => rows,
            Err(e) => return json!({ "error": e.to_string() }),
        };
        let loaded = self.registry.snapshot();
        let (pending, dead) = rows
            .iter()
            .fold((0, 0), |(p, d), r| (p + r.pending, d + r.dead));
        let now = unix_ms(SystemTime::now()) as i64;
        let by_plugin: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                // How long the longest-waiting due delivery has waited: the plugin's lag
                // behind ingest (0 when nothing is overdue).
                let lag_ms = r.oldest_due_ms.map_or(0, |due| (now - due).max(0));
                json!({
                    "plugin": r.plugin,
                    "pending": r.pending,
                    "dead": r.dead,
                    "lag_seconds": lag_ms as f64 / 1000.0,
                    // Pending deliveries of a plugin that is not loaded wait for it (paused).
                    "paused": !loaded.contains_key(&r.plugin) && r.pending > 0,
                })
            })
            .collect();
        json!({ "pending": pending, "dead": dead, "by_plugin": by_plugin })
    }
}

/// Everything a reload touches.
pub struct Reloader {
    pub config_path: PathBuf,
    /// The configuration in force: the last one that validated, with the settings that need a
    /// restart kept at their running values.
    pub config: Config,
    pub host: Arc<PluginHost>,
    pub cache: Option<CodeCache>,
    pub registry: Arc<PluginRegistry>,
    pub info: Arc<PluginsInfo>,
    pub ingest: Arc<IngestState>,
    /// Set when hookd set up logging: a reload then applies `[log] filter`.
    pub log_filter: Option<LogFilter>,
    pub metrics: ReloadMetrics,
}

impl Reloader {
    /// Loads the plugins the configuration describes (at start, the registry is empty).
    pub async fn load_plugins(&self) {
        debug!(dir = %self.config.plugins.dir.display(), "reading the plugins");
        let host = self.host.clone();
        let cache = self.cache.clone();
        let current = self.registry.snapshot();
        let config = self.config.clone();
        let refused_before = self.info.refusals();
        let started = Instant::now();
        let built = tokio::task::spawn_blocking(move || {
            rebuild(&host, cache.as_ref(), &current, &config, &refused_before)
        })
        .await;
        let (next, changes) = match built {
            Ok(built) => built,
            Err(e) => {
                error!(error = %e, "the plugin reload task failed; the plugins serving are unchanged");
                self.metrics.count("plugin", "failed");
                return;
            }
        };
        if changes.iter().any(|c| c.took.is_some() && !c.cache_hit) {
            release_compiler_memory();
        }
        let swapped = changes.iter().any(|c| c.kind != ChangeKind::Failed);
        if swapped {
            self.registry.swap(next);
        }
        self.info.record(&changes);
        for change in changes.iter().filter(|c| !c.repeat) {
            self.metrics.count("plugin", change.kind.label());
            log_change(change);
        }
        if swapped {
            let loaded = self.registry.snapshot();
            info!(
                plugins = loaded.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "plugin registry swapped"
            );
        }
    }

    /// SIGHUP: re-reads the main config; applies it all or changes nothing. Returns whether it
    /// was applied.
    pub async fn reload_config(&mut self) -> bool {
        info!(config = %self.config_path.display(), "reloading the configuration");
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
        let mut new = match loaded {
            Ok(Ok(config)) => config,
            Ok(Err(errors)) => {
                for e in errors.iter() {
                    error!(problem = %e, "configuration reload refused");
                }
                error!(
                    errors = errors.iter().count(),
                    "the new configuration does not validate; the running one is kept"
                );
                self.metrics.count("config", "failed");
                return false;
            }
            Err(e) => {
                error!(error = %e, "the configuration reload task failed; the running configuration is kept");
                self.metrics.count("config", "failed");
                return false;
            }
        };
        let verifier = match Verifier::new(&new.secrets) {
            Ok(v) => v,
            Err(e) => {
                error!(error = %e, "configuration reload refused; the running one is kept");
                self.metrics.count("config", "failed");
                return false;
            }
        };
        if let Some(Err(e)) = self.log_filter.as_ref().map(|f| f.set(&new.log.filter)) {
            // Validation checks the filter, so this is not expected; the rest still applies.
            warn!(error = %e, "the log filter was not changed");
        }
        let restart = keep_running_settings(&mut new, &self.config);
        self.ingest.verifier.store(Arc::new(verifier));
        self.ingest.limits.store(Arc::new(ingest_limits(&new)));
        let secrets = new.secrets.len();
        self.config = new;
        self.metrics.count("config", "ok");
        info!(
            secrets,
            path = %self.config.server.path,
            "configuration reloaded: secrets, ingest limits, log filter and plugins applied"
        );
        if !restart.is_empty() {
            warn!(
                settings = restart.join(", "),
                "these settings changed but only take effect after a restart; they keep their running values"
            );
        }
        self.load_plugins().await;
        true
    }
}

/// Compiling a plugin leaves tens of megabytes freed but still held by the allocator (in the
/// arenas of the threads that compiled). Hand them back to the system, so a daemon that
/// compiled 10 plugins idles at the size of one that read them from the cache: jemalloc's
/// arenas (Rust's allocations, see `main.rs`) and the C library's (SQLite's).
fn release_compiler_memory() {
    // `arena.<MALLCTL_ARENAS_ALL>.purge`: every arena returns its unused dirty pages now
    // rather than after the decay time, which only passes while an arena is in use.
    // SAFETY: a purge takes and returns no value (null pointers, zero length, as the
    // command requires); it only releases free memory and is safe to call at any time.
    let purged = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if purged != 0 {
        debug!(
            error = purged,
            "the allocator could not release the compiler's memory"
        );
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The ingest limits a configuration sets.
pub fn ingest_limits(config: &Config) -> IngestLimits {
    IngestLimits {
        path: config.server.path.clone(),
        max_body_bytes: config.server.max_body_bytes,
        max_json_depth: config.server.max_json_depth,
        body_read_timeout: config.server.body_read_timeout,
        retry_after: config.server.retry_after,
        max_inflight_body_bytes: config.server.max_inflight_body_bytes,
        max_inflight_body_bytes_per_client: config.server.max_inflight_body_bytes_per_client,
    }
}

/// Puts the settings that cannot change without a restart back to their running values, and
/// names those that differed.
fn keep_running_settings(new: &mut Config, running: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($field:ident).+, $key:literal) => {
            if new.$($field).+ != running.$($field).+ {
                changed.push($key);
                new.$($field).+ = running.$($field).+.clone();
            }
        };
    }
    keep!(server.listen, "server.listen");
    keep!(server.max_connections, "server.max_connections");
    keep!(
        server.max_connections_per_client,
        "server.max_connections_per_client"
    );
    keep!(server.header_read_timeout, "server.header_read_timeout_ms");
    keep!(admin.listen, "admin.listen");
    keep!(store.dir, "store.dir");
    keep!(store.dedup_window, "store.dedup_window_secs");
    keep!(store.queue_capacity, "store.queue_capacity");
    keep!(store.max_batch, "store.max_batch");
    keep!(store.queue_max_bytes, "store.queue_max_bytes");
    keep!(plugins.max_instances, "plugins.max_instances");
    keep!(plugins.max_memory_bytes, "plugins.max_memory_mb");
    keep!(plugins.memory_budget_bytes, "plugins.memory_budget_mb");
    keep!(plugins.pooling, "plugins.pooling");
    keep!(plugins.priority, "plugins.priority");
    keep!(log.format, "log.format");
    changed
}

fn log_change(c: &Change) {
    let took_ms = c.took.map(|t| t.as_secs_f64() * 1000.0);
    let old = c.old_hash.as_deref().map(short_hash);
    let new = c.new_hash.as_deref().map(short_hash);
    match c.kind {
        ChangeKind::Added => {
            info!(plugin = %c.plugin, new_hash = new, took_ms, cache_hit = c.cache_hit, "plugin loaded")
        }
        ChangeKind::Updated => {
            info!(plugin = %c.plugin, old_hash = old, new_hash = new, took_ms, cache_hit = c.cache_hit, "plugin reloaded: new code serving")
        }
        ChangeKind::Manifest => {
            info!(plugin = %c.plugin, content_hash = new, took_ms, "plugin manifest reloaded: same code, new settings")
        }
        ChangeKind::Removed => {
            warn!(plugin = %c.plugin, old_hash = old, "plugin removed: no new deliveries; its pending ones wait in the store until it comes back")
        }
        ChangeKind::Failed if c.old_hash.is_some() => {
            error!(plugin = %c.plugin, old_hash = old, error = c.error.as_deref().unwrap_or(""), "plugin reload refused; the previous version keeps serving")
        }
        ChangeKind::Failed => {
            error!(plugin = %c.plugin, error = c.error.as_deref().unwrap_or(""), "plugin not loaded")
        }
    }
}

fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Watches the plugin folder and wakes `changed` when a `.wasm` or `.toml` in it changes.
pub struct FolderWatch {
    dir: PathBuf,
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

impl FolderWatch {
    pub fn start(dir: &Path, changed: Arc<Notify>) -> anyhow::Result<FolderWatch> {
        let handler = move |result: DebounceEventResult| match result {
            Ok(events) => {
                if events.iter().any(is_plugin_change) {
                    changed.notify_one();
                }
            }
            Err(errors) => {
                for e in errors {
                    warn!(error = %e, "plugin folder watch error; reading the folder again");
                }
                changed.notify_one();
            }
        };
        let mut debouncer = notify_debouncer_full::new_debouncer(DEBOUNCE, None, handler)?;
        debouncer.watch(dir, notify::RecursiveMode::NonRecursive)?;
        Ok(FolderWatch {
            dir: dir.to_owned(),
            _debouncer: debouncer,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A change that can alter a plugin: not the daemon's own reads, not other files.
fn is_plugin_change(event: &DebouncedEvent) -> bool {
    if event.need_rescan() {
        return true;
    }
    let relevant_kind = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    relevant_kind
        && event.paths.iter().any(|p| {
            p.extension()
                .is_some_and(|ext| ext == "wasm" || ext == "toml")
        })
}

/// Starts catching SIGHUP: from here on one is recorded for [`run`] instead of ending the
/// process, which is SIGHUP's default action. Call it first thing, well before announcing
/// readiness: `systemctl reload` may signal at once after `READY=1`, before `run` is polled.
pub fn watch_sighup() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            error!(error = %e, "cannot watch SIGHUP; configuration reload is off");
            None
        }
    }
}

/// The plugin folder's watch, started before the folder is first read: a file that lands
/// while hookd starts (or between a read and the watch) would otherwise go unnoticed until
/// the next change.
pub struct Watched {
    changed: Arc<Notify>,
    folder: Option<FolderWatch>,
}

impl Watched {
    /// Watches `dir`; call it before the first [`Reloader::load_plugins`].
    pub fn start(dir: &Path) -> Self {
        let changed = Arc::new(Notify::new());
        let folder = watch_folder(dir, &changed);
        Self { changed, folder }
    }
}

/// Serves reload requests until `stop`: folder changes (seen by `watched`) and SIGHUP (caught
/// by `hup`, from [`watch_sighup`]), one at a time.
pub async fn run(
    mut reloader: Reloader,
    watched: Watched,
    mut hup: Option<tokio::signal::unix::Signal>,
    mut stop: watch::Receiver<bool>,
    mut on_config_reload: impl FnMut(ReloadPhase),
) {
    let Watched {
        changed,
        mut folder,
    } = watched;
    loop {
        tokio::select! {
            () = changed.notified() => reloader.load_plugins().await,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                on_config_reload(ReloadPhase::Started);
                let applied = reloader.reload_config().await;
                let dir = &reloader.config.plugins.dir;
                if folder.as_ref().is_none_or(|f| f.dir() != dir) {
                    folder = watch_folder(dir, &changed);
                    // The reload read the folder before this watch began: read it once more,
                    // so nothing that landed in between is missed.
                    changed.notify_one();
                }
                on_config_reload(ReloadPhase::Finished { applied });
            }
            _ = stop.changed() => break,
        }
    }
}

/// Where a configuration reload is, for the service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadPhase {
    Started,
    /// `applied` is false when the new configuration was refused and the running one kept.
    Finished {
        applied: bool,
    },
}

fn watch_folder(dir: &Path, changed: &Arc<Notify>) -> Option<FolderWatch> {
    match FolderWatch::start(dir, changed.clone()) {
        Ok(w) => {
            info!(dir = %dir.display(), "watching the plugin folder");
            Some(w)
        }
        Err(e) => {
            warn!(dir = %dir.display(), error = %e,
                "cannot watch the plugin folder; plugins change only on SIGHUP (create the folder, then reload)");
            None
        }
    }
}
