//! The delivery queue: what is due, recording attempts, dead letters, replay; and the
//! per-plugin key-value store.

use rusqlite::{Connection, OptionalExtension, Transaction, params, params_from_iter};

use crate::StoreError;
use hookd_storage::{
    AttemptRecord, AttemptResult, Claim, DeadLetter, DueDelivery, KvOp, KvWriteResult,
    ReplaySelector,
};

/// Due pending deliveries for the named plugins, oldest first: at most `limit` of them, and no
/// more once their payloads add up to `max_bytes` (at least one is always returned).
pub(crate) fn due(
    conn: &Connection,
    now_ms: i64,
    plugins: &[&str],
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<DueDelivery>, StoreError> {
    if plugins.is_empty() {
        return Ok(Vec::new());
    }
    // Numbered from ?3: ?1 is the time, ?2 the limit. The text depends only on how many
    // plugins there are, so the cached statement is reused.
    let marks = (3..3 + plugins.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "SELECT d.event_seq, d.plugin, d.attempts, e.id, e.type, e.payload, e.received_at_ms,
                d.updated_at_ms, d.started, d.claimed_by
         FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE d.state = 'pending' AND d.next_attempt_at_ms <= ?1 AND d.plugin IN ({marks})
         ORDER BY d.next_attempt_at_ms, d.event_seq
         LIMIT ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut values: Vec<rusqlite::types::Value> = vec![
        now_ms.into(),
        i64::try_from(limit).unwrap_or(i64::MAX).into(),
    ];
    values.extend(
        plugins
            .iter()
            .map(|p| rusqlite::types::Value::Text((*p).to_owned())),
    );
    let rows = stmt.query_map(params_from_iter(values), |r| {
        Ok(DueDelivery {
            event_seq: r.get(0)?,
            plugin: r.get(1)?,
            attempts: u32::try_from(r.get::<_, i64>(2)?).unwrap_or(u32::MAX),
            event_id: r.get(3)?,
            event_type: r.get(4)?,
            payload: r.get(5)?,
            received_at_ms: r.get(6)?,
            updated_at_ms: r.get(7)?,
            started: u32::try_from(r.get::<_, i64>(8)?).unwrap_or(u32::MAX),
            claimed_by: r.get(9)?,
        })
    })?;
    let mut due = Vec::new();
    let mut bytes = 0usize;
    for row in rows {
        let row = row?;
        bytes = bytes.saturating_add(row.payload.len());
        due.push(row);
        if bytes >= max_bytes {
            break;
        }
    }
    Ok(due)
}

/// The earliest `next_attempt_at_ms` among pending deliveries of the named plugins.
pub(crate) fn next_due_at(conn: &Connection, plugins: &[&str]) -> Result<Option<i64>, StoreError> {
    if plugins.is_empty() {
        return Ok(None);
    }
    let marks = vec!["?"; plugins.len()].join(",");
    let sql = format!(
        "SELECT min(next_attempt_at_ms) FROM deliveries WHERE state = 'pending' AND plugin IN ({marks})"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params_from_iter(plugins.iter()), |r| r.get(0))?)
}

pub(crate) fn record(tx: &Transaction<'_>, records: &[AttemptRecord]) -> Result<(), StoreError> {
    let mut done = tx.prepare_cached(
        "UPDATE deliveries SET state = 'done', attempts = attempts + 1, started = attempts + 1,
         last_error = NULL, updated_at_ms = ?3 WHERE event_seq = ?1 AND plugin = ?2 AND state = 'pending'",
    )?;
    let mut retry = tx.prepare_cached(
        "UPDATE deliveries SET attempts = attempts + 1, started = attempts + 1,
         next_attempt_at_ms = ?3, last_error = ?4, updated_at_ms = ?5 WHERE event_seq = ?1 AND plugin = ?2 AND state = 'pending'",
    )?;
    let mut dead = tx.prepare_cached(
        "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, started = attempts + 1,
         last_error = ?3, updated_at_ms = ?4 WHERE event_seq = ?1 AND plugin = ?2 AND state = 'pending'",
    )?;
    for r in records {
        match &r.result {
            AttemptResult::Done => {
                done.execute(params![r.event_seq, r.plugin, r.at_ms])?;
            }
            AttemptResult::Retry {
                next_attempt_at_ms,
                error,
            } => {
                retry.execute(params![
                    r.event_seq,
                    r.plugin,
                    next_attempt_at_ms,
                    error,
                    r.at_ms
                ])?;
            }
            AttemptResult::Dead { error } => {
                dead.execute(params![r.event_seq, r.plugin, error, r.at_ms])?;
            }
        }
    }
    Ok(())
}

/// Writes claims. `updated_at_ms` is left alone: it tells the dispatcher which copies of a row
/// were read before an attempt was recorded.
pub(crate) fn claim(tx: &Transaction<'_>, claims: &[Claim]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "UPDATE deliveries SET started = ?3, claimed_by = ?4
         WHERE event_seq = ?1 AND plugin = ?2 AND state = 'pending'",
    )?;
    for c in claims {
        stmt.execute(params![c.event_seq, c.plugin, c.started, c.by])?;
    }
    Ok(())
}

pub(crate) fn dead_letters(conn: &Connection, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.event_seq, e.id, e.type, d.plugin, d.attempts, coalesce(d.last_error, ''),
                e.received_at_ms, d.updated_at_ms
         FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE d.state = 'dead' ORDER BY d.updated_at_ms, d.event_seq LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
        Ok(DeadLetter {
            event_seq: r.get(0)?,
            event_id: r.get(1)?,
            event_type: r.get(2)?,
            plugin: r.get(3)?,
            attempts: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(u32::MAX),
            last_error: r.get(5)?,
            received_at_ms: r.get(6)?,
            died_at_ms: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Moves dead letters back to pending with a fresh attempt budget. Returns how many.
pub(crate) fn replay(
    tx: &Transaction<'_>,
    selector: &ReplaySelector,
    plugin: Option<&str>,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let base = "UPDATE deliveries SET state = 'pending', attempts = 0, started = 0, claimed_by = NULL,
                next_attempt_at_ms = ?1, updated_at_ms = ?1 WHERE state = 'dead' AND (?2 IS NULL OR plugin = ?2)";
    Ok(match selector {
        ReplaySelector::All => tx.execute(base, params![now_ms, plugin])?,
        ReplaySelector::Event(id) => tx.execute(
            &format!("{base} AND event_seq = (SELECT seq FROM events WHERE id = ?3)"),
            params![now_ms, plugin, id],
        )?,
    })
}

pub(crate) fn kv_get(
    conn: &Connection,
    plugin: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM kv WHERE plugin = ?1 AND key = ?2")?
        .query_row(params![plugin, key], |r| r.get(0))
        .optional()?)
}

/// Whether `plugin` may add one more key.
fn kv_has_room(
    tx: &Transaction<'_>,
    plugin: &str,
    key: &str,
    max_keys: u64,
) -> Result<bool, StoreError> {
    if kv_get(tx, plugin, key)?.is_some() {
        return Ok(true);
    }
    let count: i64 = tx
        .prepare_cached("SELECT count(*) FROM kv WHERE plugin = ?1")?
        .query_row(params![plugin], |r| r.get(0))?;
    Ok(u64::try_from(count).unwrap_or(0) < max_keys)
}

pub(crate) fn kv_write(tx: &Transaction<'_>, op: &KvOp) -> Result<KvWriteResult, StoreError> {
    match op {
        KvOp::Set {
            plugin,
            key,
            value,
            max_keys,
        } => {
            if !kv_has_room(tx, plugin, key, *max_keys)? {
                return Ok(KvWriteResult::QuotaExceeded);
            }
            tx.prepare_cached(
                "INSERT INTO kv (plugin, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![plugin, key, value])?;
            Ok(KvWriteResult::Stored)
        }
        KvOp::Delete { plugin, key } => {
            tx.prepare_cached("DELETE FROM kv WHERE plugin = ?1 AND key = ?2")?
                .execute(params![plugin, key])?;
            Ok(KvWriteResult::Stored)
        }
        KvOp::Increment {
            plugin,
            key,
            delta,
            max_keys,
        } => {
            let current = match kv_get(tx, plugin, key)? {
                Some(bytes) => match <[u8; 8]>::try_from(bytes.as_slice()) {
                    Ok(b) => i64::from_le_bytes(b),
                    Err(_) => 0,
                },
                None => {
                    if !kv_has_room(tx, plugin, key, *max_keys)? {
                        return Ok(KvWriteResult::QuotaExceeded);
                    }
                    0
                }
            };
            let next = current.wrapping_add(*delta);
            tx.prepare_cached(
                "INSERT INTO kv (plugin, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![plugin, key, next.to_le_bytes().to_vec()])?;
            Ok(KvWriteResult::Counter(next))
        }
    }
}
