//! Why a storage operation did not happen. None of these acknowledges anything: an event
//! refused is the sender's to send again, a record refused is the caller's to retry.

use std::error::Error;
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The backend holds as much unwritten work as it may (count or bytes); try again soon.
    #[error("the ingest queue is full (the store is not keeping up); the event was not accepted")]
    QueueFull,
    /// The backend is stopping or stopped.
    #[error("the store is closed (hookd is shutting down); the event was not accepted")]
    Closed,
    /// The backend tried and failed: a failed commit, an unreachable or slow cluster.
    #[error("the store failed: {0}")]
    Failed(BackendError),
}

impl StorageError {
    /// The disk is full or failing: worth a 503 and an alert, not a crash.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::Failed(e) if e.disk_full)
    }
}

/// A backend's own error, shared (one failed commit answers every write it held).
#[derive(Debug, Clone)]
pub struct BackendError {
    source: Arc<dyn Error + Send + Sync>,
    disk_full: bool,
}

impl BackendError {
    /// `disk_full`: the failure is the disk's (full, or failing I/O).
    pub fn new(source: Arc<dyn Error + Send + Sync>, disk_full: bool) -> Self {
        Self { source, disk_full }
    }

    /// The backend's error itself, for a caller that knows the backend.
    pub fn get(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl Error for BackendError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.source()
    }
}
