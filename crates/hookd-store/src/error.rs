//! Store errors, worded for an operator.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store directory `{path}`: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database `{path}`: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the database `{path}` is damaged ({detail}); hookd will not start on it, so that no \
         stored event is silently dropped. Restore it from a backup or move it aside"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("no database at `{0}`; has hookd ever run with this store directory?")]
    Missing(PathBuf),
    #[error(
        "the database `{path}` has schema version {found}, newer than this hookd knows ({known})"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot start the store writer thread: {0}")]
    Thread(std::io::Error),
    #[error("the store writer thread panicked")]
    WriterPanicked,
}

impl StoreError {
    /// The disk is full or failing: worth a 503 and an alert, not a crash.
    pub fn is_disk_full(&self) -> bool {
        use rusqlite::ErrorCode::{DiskFull, SystemIoFailure};
        match self {
            StoreError::Sql(e) | StoreError::Open { source: e, .. } => matches!(
                e.sqlite_error_code(),
                Some(DiskFull) | Some(SystemIoFailure)
            ),
            _ => false,
        }
    }
}

/// Why an event was not stored. None of these acknowledges the event.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the ingest queue is full")]
    QueueFull,
    #[error("the store is closed")]
    Closed,
    #[error("the event could not be committed: {0}")]
    Store(#[source] Arc<StoreError>),
}

use std::sync::Arc;
