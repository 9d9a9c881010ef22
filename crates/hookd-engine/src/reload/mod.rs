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

//!
//! By job: [`rebuild`] works out the registry the folder and config describe now; [`watch`]
//! notices changes (the folder's watch, SIGHUP); [`config`] applies a new main configuration;
//! [`info`] keeps the refusal log and answers `/plugins`; this module runs them, one reload at
//! a time.

mod config;
mod info;
mod rebuild;
mod watcher;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use hookd_config::Config;
use hookd_host::{CodeCache, PluginHost};
use hookd_server::IngestState;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::logging::LogFilter;
use crate::plugins::PluginRegistry;

pub(crate) use config::ingest_limits;
pub(crate) use info::{PluginsInfo, ReloadMetrics};
pub use rebuild::{Change, ChangeKind, FolderRefusal, Rebuilt, Refusals, rebuild};
pub(crate) use watcher::{Watched, watch_sighup};

use watcher::watch_folder;

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
    /// The delivery queue, told each plugin's patterns as it is loaded.
    pub queue: Arc<dyn hookd_storage::DeliveryQueue>,
}

impl Reloader {
    /// Tells the delivery queue the patterns of every plugin new or changed in `next`, before
    /// events are routed to it (a queue shared by a cluster routes by pattern). A failure is
    /// logged, not fatal: appending an event makes sure of its plugins' routes again.
    async fn subscribe(&self, next: &crate::plugins::PluginMap) {
        let current = self.registry.snapshot();
        for (name, plugin) in next {
            if current
                .get(name)
                .is_some_and(|old| old.spec.events == plugin.spec.events)
            {
                continue;
            }
            let patterns: Vec<String> = plugin
                .spec
                .events
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect();
            if let Err(e) = self.queue.subscribe(name, &patterns).await {
                warn!(plugin = %name, error = %e, "cannot tell the store this plugin's patterns yet; its events still reach it");
            }
        }
    }

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
        let Rebuilt {
            plugins: next,
            changes,
            folder_refused,
        } = match built {
            Ok(built) => built,
            Err(e) => {
                error!(error = %e, "the plugin reload task failed; the plugins serving are unchanged");
                self.metrics.count("plugin", "failed");
                return;
            }
        };
        if let Some(refusal) = &folder_refused {
            self.metrics.count("folder", "failed");
            error!(error = %refusal.error, kept = refusal.kept.join(", "),
                "plugin folder refused; the plugins read from it keep serving (restore the folder, then reload)");
        }
        if changes.iter().any(|c| c.took.is_some() && !c.cache_hit) {
            release_compiler_memory();
        }
        let swapped = changes.iter().any(|c| c.kind != ChangeKind::Failed);
        if swapped {
            self.subscribe(&next).await;
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
                // A folder removed or renamed away took its watch with it: one put back is
                // watched anew.
                if folder.as_ref().is_none_or(|f| f.dir() != dir || f.is_lost()) {
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
