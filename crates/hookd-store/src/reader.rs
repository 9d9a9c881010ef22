//! Read-only access: for the admin listener, the CLI, and tests; works beside a running daemon.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;
use crate::deliveries;
use crate::schema::{BUSY_TIMEOUT, db_path, open_read_only};
use hookd_storage::{DeadLetter, DueDelivery, PluginDeliveries, ReplaySelector};

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub id: String,
    pub event_type: String,
    pub payload: String,
    pub received_at_ms: i64,
}

/// Deliveries by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub pending: u64,
    pub done: u64,
    pub dead: u64,
}

/// A read-only connection to a store: cheap to open, one per thread (it is `Send`, not
/// `Sync`). Each query sees the latest committed state.
pub struct StoreReader {
    conn: Connection,
}

impl StoreReader {
    /// Opens the store in `dir`; an error if there is no database there.
    pub fn open(dir: &Path) -> Result<StoreReader, StoreError> {
        Ok(StoreReader {
            conn: open_read_only(dir)?,
        })
    }

    /// The event with Protocol id `id`, if stored (and not yet pruned).
    pub fn event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT seq, id, type, payload, received_at_ms FROM events WHERE id = ?1",
            )?
            .query_row(params![id], |r| {
                Ok(StoredEvent {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    event_type: r.get(2)?,
                    payload: r.get(3)?,
                    received_at_ms: r.get(4)?,
                })
            })
            .optional()?)
    }

    /// How many events are stored.
    pub fn event_count(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM events", [], |r| count(r, 0))?)
    }

    /// Deliveries by state, all plugins together.
    pub fn delivery_counts(&self) -> Result<DeliveryCounts, StoreError> {
        let mut counts = DeliveryCounts::default();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, count(*) FROM deliveries GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, count(r, 1)?)))?;
        for row in rows {
            let (state, n) = row?;
            match state.as_str() {
                "pending" => counts.pending = n,
                "done" => counts.done = n,
                "dead" => counts.dead = n,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// Pending and dead deliveries per plugin, by plugin name.
    pub(crate) fn open_deliveries_by_plugin(&self) -> Result<Vec<PluginDeliveries>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT plugin, sum(state = 'pending'), sum(state = 'dead'),
                    min(CASE WHEN state = 'pending' THEN next_attempt_at_ms END)
             FROM deliveries
             WHERE state IN ('pending', 'dead') GROUP BY plugin ORDER BY plugin",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(PluginDeliveries {
                plugin: r.get(0)?,
                pending: count(r, 1)?,
                dead: count(r, 2)?,
                oldest_due_ms: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Pending deliveries per plugin, by plugin name.
    pub fn pending_by_plugin(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT plugin, count(*) FROM deliveries WHERE state = 'pending'
             GROUP BY plugin ORDER BY plugin",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, count(r, 1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Pending deliveries due at `now_ms` for the named plugins, oldest first.
    pub fn due_deliveries(
        &self,
        now_ms: i64,
        plugins: &[&str],
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        deliveries::due(&self.conn, now_ms, plugins, limit, usize::MAX)
    }

    /// Like [`StoreReader::due_deliveries`], stopping once the payloads read add up to
    /// `max_bytes` (at least one delivery is returned when any is due).
    pub fn due_deliveries_within(
        &self,
        now_ms: i64,
        plugins: &[&str],
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        deliveries::due(&self.conn, now_ms, plugins, limit, max_bytes)
    }

    /// When the next pending delivery of the named plugins comes due.
    pub fn next_due_at(&self, plugins: &[&str]) -> Result<Option<i64>, StoreError> {
        deliveries::next_due_at(&self.conn, plugins)
    }

    /// Dead letters, the oldest death first.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        deliveries::dead_letters(&self.conn, limit)
    }

    /// One key of a plugin's key-value store.
    pub fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        deliveries::kv_get(&self.conn, plugin, key)
    }

    /// Plugins with a delivery of event `id`, and each delivery's state.
    pub fn deliveries_of(&self, id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT d.plugin, d.state FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE e.id = ?1 ORDER BY d.plugin",
        )?;
        let rows = stmt.query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// SQLite counts are i64; they are never negative.
fn count(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(index)?).unwrap_or(0))
}

/// Moves dead letters back to pending (attempts reset), from outside the daemon: the CLI's
/// `hookd dlq replay`. Safe while the daemon runs (SQLite serializes the writers). Returns how
/// many deliveries were revived.
pub fn replay_dead_letters(
    dir: &Path,
    selector: &ReplaySelector,
    plugin: Option<&str>,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let path = db_path(dir);
    if !path.exists() {
        return Err(StoreError::Missing(path));
    }
    let mut conn = Connection::open(&path).map_err(|source| StoreError::Open {
        path: path.clone(),
        source,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT * 5)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let n = deliveries::replay(&tx, selector, plugin, now_ms)?;
    tx.commit()?;
    Ok(n)
}
