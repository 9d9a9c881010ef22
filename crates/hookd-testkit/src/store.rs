//! Read-only views of a daemon's store, with SQLite directly: what a test or the crash harness
//! checks is what is on disk, not what the daemon says about it.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// A read-only connection to `hookd.db`.
pub struct StoreView(rusqlite::Connection);

/// A delivery row: (state, attempts, last error).
pub type DeliveryRow = (String, i64, Option<String>);

impl StoreView {
    /// Opens `DIR/hookd.db` read-only.
    pub fn open(store_dir: &Path) -> rusqlite::Result<Self> {
        Self::open_db(&store_dir.join("hookd.db"))
    }

    /// Opens the database file `db` read-only, waiting up to 5 s for the daemon's locks.
    pub fn open_db(db: &Path) -> rusqlite::Result<Self> {
        let conn = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Self(conn))
    }

    /// Every stored event id.
    pub fn event_ids(&self) -> rusqlite::Result<HashSet<String>> {
        let mut stmt = self.0.prepare("SELECT id FROM events")?;
        stmt.query_map([], |row| row.get::<_, String>(0))?.collect()
    }

    /// Deliveries still pending.
    pub fn pending_deliveries(&self) -> rusqlite::Result<i64> {
        self.0.query_row(
            "SELECT count(*) FROM deliveries WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )
    }

    /// Deliveries by (event id, plugin).
    pub fn deliveries(&self) -> rusqlite::Result<BTreeMap<(String, String), DeliveryRow>> {
        let mut stmt = self.0.prepare(
            "SELECT e.id, d.plugin, d.state, d.attempts, d.last_error
             FROM deliveries d JOIN events e ON e.seq = d.event_seq",
        )?;
        stmt.query_map([], |r| {
            Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?, r.get(4)?)))
        })?
        .collect()
    }

    /// Every (key, value) in `plugin`'s key-value store.
    pub fn kv(&self, plugin: &str) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
        let mut stmt = self
            .0
            .prepare("SELECT key, value FROM kv WHERE plugin = ?1")?;
        stmt.query_map([plugin], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
    }

    /// One value of `plugin`'s key-value store.
    fn kv_value(&self, plugin: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        match self.0.query_row(
            "SELECT value FROM kv WHERE plugin = ?1 AND key = ?2",
            [plugin, key],
            |r| r.get(0),
        ) {
            Ok(value) => Ok(Some(value)),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[track_caller]
fn view(store_dir: &Path) -> StoreView {
    StoreView::open(store_dir)
        .unwrap_or_else(|e| panic!("cannot open the store in {}: {e}", store_dir.display()))
}

/// Event ids stored in the store folder `dir`.
#[track_caller]
pub fn stored_ids(dir: &Path) -> HashSet<String> {
    view(dir)
        .event_ids()
        .unwrap_or_else(|e| panic!("cannot read events: {e}"))
}

/// Deliveries by (event id, plugin) -> (state, attempts, last error), read from the store.
#[track_caller]
pub fn deliveries(dir: &Path) -> BTreeMap<(String, String), DeliveryRow> {
    view(dir)
        .deliveries()
        .unwrap_or_else(|e| panic!("cannot read deliveries: {e}"))
}

/// A plugin's counter (an `i64`, little-endian) from its key-value store.
#[track_caller]
pub fn kv_counter(dir: &Path, plugin: &str, key: &str) -> Option<i64> {
    let value = view(dir)
        .kv_value(plugin, key)
        .unwrap_or_else(|e| panic!("cannot read kv: {e}"))?;
    let bytes: [u8; 8] = value.try_into().unwrap_or_else(|v: Vec<u8>| {
        panic!("kv {plugin}/{key} is {} bytes, not a counter", v.len())
    });
    Some(i64::from_le_bytes(bytes))
}
