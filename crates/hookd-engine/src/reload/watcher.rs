//! Noticing changes: the plugin folder's watch (debounced) and SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::EventKind;
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify_debouncer_full::{DebounceEventResult, DebouncedEvent, Debouncer, RecommendedCache};
use tokio::sync::Notify;
use tracing::{error, info, warn};

/// Quiet time after the last change to a file before the folder is read again: a copy in
/// progress keeps resetting it.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Watches the plugin folder and wakes `changed` when a `.wasm` or `.toml` in it changes.
pub struct FolderWatch {
    dir: PathBuf,
    /// Set when the folder itself was removed or renamed: the watch is gone with it (or
    /// follows it elsewhere), and a folder put back at `dir` must be watched anew.
    lost: Arc<AtomicBool>,
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

impl FolderWatch {
    pub fn start(dir: &Path, changed: Arc<Notify>) -> anyhow::Result<FolderWatch> {
        let lost = Arc::new(AtomicBool::new(false));
        let (watched, lost_by_handler) = (dir.to_owned(), lost.clone());
        let handler = move |result: DebounceEventResult| match result {
            Ok(events) => {
                if events.iter().any(|e| is_folder_gone(e, &watched)) {
                    lost_by_handler.store(true, Ordering::Release);
                    changed.notify_one();
                } else if events.iter().any(is_plugin_change) {
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
            lost,
            _debouncer: debouncer,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the folder was removed or renamed since the watch began.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }
}

/// The watched folder itself removed or renamed away.
fn is_folder_gone(event: &DebouncedEvent, dir: &Path) -> bool {
    matches!(
        event.kind,
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    ) && event.paths.iter().any(|p| p == dir)
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
    pub(super) changed: Arc<Notify>,
    pub(super) folder: Option<FolderWatch>,
}

impl Watched {
    /// Watches `dir`; call it before the first [`super::Reloader::load_plugins`].
    pub fn start(dir: &Path) -> Self {
        let changed = Arc::new(Notify::new());
        let folder = watch_folder(dir, &changed);
        Self { changed, folder }
    }
}

pub(super) fn watch_folder(dir: &Path, changed: &Arc<Notify>) -> Option<FolderWatch> {
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
