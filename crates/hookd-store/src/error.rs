//! Store errors, worded for an operator, with the SQLite error kept as the source.

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::ErrorCode;

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
        "the database `{path}` is damaged or not a hookd database ({detail}); hookd will not \
         start on it, so that no stored event is silently dropped. Restore it from a backup or \
         move it aside"
    )]
    Corrupt {
        path: PathBuf,
        detail: String,
        /// The SQLite error, when the check itself failed (e.g. "file is not a database").
        source: Option<rusqlite::Error>,
    },
    /// The store folder is not hookd's alone (see `files`).
    #[error(
        "refusing the store directory `{path}`: {problem}. It holds the events and compiled \
         plugin code that hookd runs, so it must belong to the user hookd runs as and be \
         writable by no one else; fix it with `{fix}`"
    )]
    Insecure {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    #[error("cannot make `{path}` private to hookd (mode 0600): {source}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no database at `{0}`; has hookd ever run with this store directory?")]
    Missing(PathBuf),
    #[error(
        "the database `{path}` has schema version {found}, newer than this hookd knows ({known}); \
         run a newer hookd or restore a backup"
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
    /// The disk is full or failing (`SQLITE_FULL`, `ENOSPC`, `SQLITE_IOERR`): worth a 503 and an
    /// alert, not a crash.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Sql(e) | StoreError::Open { source: e, .. } => matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::DiskFull | ErrorCode::SystemIoFailure)
            ),
            StoreError::CreateDir { source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
            }
            _ => false,
        }
    }
}

/// Why an event was not stored. None of these acknowledges the event: the sender should retry.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the ingest queue is full (the store is not keeping up); the event was not accepted")]
    QueueFull,
    #[error("the store is closed (hookd is shutting down); the event was not accepted")]
    Closed,
    /// Shared by every request of the failed batch, hence the `Arc`.
    #[error("the event was not stored because its commit failed: {0}")]
    Store(#[source] Arc<StoreError>),
}

impl IngestError {
    /// See [`StoreError::is_disk_full`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self, IngestError::Store(e) if e.is_disk_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_database_is_reported_as_a_full_disk() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        // A real SQLITE_FULL: the database may not grow past a few pages.
        conn.execute_batch("CREATE TABLE t (v BLOB); PRAGMA max_page_count = 4;")
            .unwrap();
        let full = conn
            .execute("INSERT INTO t VALUES (zeroblob(100000))", [])
            .unwrap_err();
        assert!(StoreError::Sql(full).is_disk_full());
        let e = IngestError::Store(Arc::new(StoreError::CreateDir {
            path: "/var/lib/hookd".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        }));
        assert!(e.is_disk_full());
        assert!(!IngestError::QueueFull.is_disk_full());
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(!StoreError::Sql(busy).is_disk_full());
    }
}
