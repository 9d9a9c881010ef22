//! Opening the database: pragmas, integrity check, schema migrations.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::{DB_FILE, StoreError};

/// The schema version this code writes.
pub(crate) const SCHEMA_VERSION: i64 = 2;

/// How long a statement waits for another connection's lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

const SCHEMA_V1: &str = "
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY,
    id             TEXT    NOT NULL UNIQUE,
    type           TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL
);
CREATE INDEX events_received ON events(received_at_ms);

CREATE TABLE deliveries (
    event_seq          INTEGER NOT NULL REFERENCES events(seq),
    plugin             TEXT    NOT NULL,
    state              TEXT    NOT NULL CHECK (state IN ('pending', 'done', 'dead')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error         TEXT,
    created_at_ms      INTEGER NOT NULL,
    updated_at_ms      INTEGER NOT NULL,
    PRIMARY KEY (event_seq, plugin)
) WITHOUT ROWID;
CREATE INDEX deliveries_due ON deliveries(next_attempt_at_ms, event_seq) WHERE state = 'pending';
CREATE INDEX deliveries_dead ON deliveries(plugin, event_seq) WHERE state = 'dead';

CREATE TABLE kv (
    plugin TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  BLOB NOT NULL,
    PRIMARY KEY (plugin, key)
) WITHOUT ROWID;
";

/// Version 2: a delivery's claim. `started` is the number of attempts begun (the attempt being
/// run is `attempts + 1`), written and committed before a plugin runs; `claimed_by` is the
/// daemon run that began it. A row whose `started` is ahead of `attempts` and whose claim is
/// another run's was cut short by the daemon dying: it counts as an attempt.
const SCHEMA_V2: &str = "
ALTER TABLE deliveries ADD COLUMN started INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN claimed_by INTEGER;
UPDATE deliveries SET started = attempts;
";

pub(crate) fn db_path(dir: &Path) -> PathBuf {
    dir.join(DB_FILE)
}

/// Opens the database for the writer, creating the directory and schema as needed.
pub(crate) fn open_read_write(dir: &Path) -> Result<Connection, StoreError> {
    create_dir(dir)?;
    let path = db_path(dir);
    let open_err = |source| StoreError::Open {
        path: path.clone(),
        source,
    };
    let mut conn = Connection::open(&path).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    check_integrity(&conn, &path)?;
    // WAL: readers never block the writer; FULL: a commit is fsync'd before it returns.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt {
            path,
            detail: format!("cannot switch to WAL journaling (got `{mode}`)"),
            source: None,
        });
    }
    // journal_size_limit: after a burst, a checkpoint shrinks the WAL file back instead of
    // keeping it at its high-water mark.
    conn.execute_batch(
        "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;
         PRAGMA journal_size_limit=67108864;",
    )
    .map_err(open_err)?;
    migrate(&mut conn, &path)?;
    Ok(conn)
}

/// Creates the store directory (and missing parents) owner-only: events can hold personal data.
fn create_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| StoreError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

/// Opens an existing database read-only.
pub(crate) fn open_read_only(dir: &Path) -> Result<Connection, StoreError> {
    let path = db_path(dir);
    if !path.exists() {
        return Err(StoreError::Missing(path));
    }
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.clone(),
        source,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

fn check_integrity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    // A file that is not a database fails here, on the first read. quick_check reads every
    // page (O(size)) but skips the index cross-checks of integrity_check: seconds on a large
    // store, once per start, to never run on a damaged file.
    let result: Result<String, _> = conn.query_row("PRAGMA quick_check", [], |r| r.get(0));
    match result {
        Ok(ok) if ok == "ok" => Ok(()),
        Ok(problem) => Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: problem,
            source: None,
        }),
        Err(e)
            if matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
            ) =>
        {
            Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail: e.to_string(),
                source: Some(e),
            })
        }
        // Locked, unreadable, I/O failure: a problem opening the file, not a damaged file.
        Err(source) => Err(StoreError::Open {
            path: path.to_owned(),
            source,
        }),
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        tx.execute_batch(SCHEMA_V1)?;
    }
    if version < 2 {
        tx.execute_batch(SCHEMA_V2)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}
