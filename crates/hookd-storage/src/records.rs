//! The records the storage seam exchanges: events on their way in, deliveries on their way
//! out, attempts, dead letters, key-value writes.

use std::sync::Arc;

/// An event to store, with the plugins that must receive it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub event_type: String,
    /// The payload's raw JSON text, stored verbatim.
    pub payload: String,
    /// Unix milliseconds, passed in by the caller.
    pub received_at_ms: i64,
    /// Plugins subscribed to this event: one pending delivery each, if the event is new.
    pub deliveries: Vec<Arc<str>>,
}

impl NewEvent {
    /// What the event holds in memory while it waits to be written, as counted against
    /// a backend's in-memory bound.
    pub fn queued_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.id.len()
            + self.event_type.len()
            + self.payload.len()
            + self.deliveries.iter().map(|d| d.len() + 16).sum::<usize>()
    }
}

/// What storing an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// The event's position in the log: the new one, or the existing one for a duplicate.
    pub seq: i64,
    pub duplicate: bool,
}

/// A delivery that is due now, with its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub event_seq: i64,
    pub plugin: String,
    /// Attempts already made (0 for a first delivery).
    pub attempts: u32,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    pub received_at_ms: i64,
    /// When the delivery row last changed (created, attempted, replayed).
    pub updated_at_ms: i64,
    /// Attempts begun: one more than `attempts` while an attempt runs, or after the daemon
    /// died during one.
    pub started: u32,
    /// The daemon run (see [`Claim::by`]) that began the last attempt, if any.
    pub claimed_by: Option<i64>,
}

impl DueDelivery {
    /// Whether an attempt was begun by another daemon run and never recorded: that run died
    /// (killed, crashed, out of memory) while the plugin ran.
    pub fn interrupted(&self, this_run: i64) -> bool {
        self.started > self.attempts && self.claimed_by != Some(this_run)
    }
}

/// An attempt about to begin, committed before the plugin runs, so that a daemon that dies
/// during it still counts it (a plugin that kills the process cannot retry forever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub event_seq: i64,
    pub plugin: String,
    /// Attempts begun after this one: `attempts + 1` to begin one, `attempts` to take a claim
    /// back (a graceful stop that interrupted the attempt itself).
    pub started: u32,
    /// A number that identifies the daemon run, chosen at random when it starts.
    pub by: i64,
}

/// The result of one attempt, to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub event_seq: i64,
    pub plugin: String,
    pub result: AttemptResult,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    Done,
    /// Try again at `next_attempt_at_ms`.
    Retry {
        next_attempt_at_ms: i64,
        error: String,
    },
    /// Give up: a dead letter.
    Dead {
        error: String,
    },
}

/// A dead letter, for `hookd dlq list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub event_seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub plugin: String,
    pub attempts: u32,
    pub last_error: String,
    pub received_at_ms: i64,
    pub died_at_ms: i64,
}

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaySelector {
    All,
    /// Every dead delivery of one event (by Protocol id).
    Event(String),
}

/// One plugin's open deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDeliveries {
    pub plugin: String,
    pub pending: u64,
    pub dead: u64,
    /// When the longest-waiting pending delivery came (or comes) due: `now - oldest_due_ms`
    /// is how far the plugin lags behind.
    pub oldest_due_ms: Option<i64>,
}

/// The outcome of a key-value write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvWriteResult {
    Stored,
    /// For an increment: the new value.
    Counter(i64),
    QuotaExceeded,
}

/// A key-value write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    /// Stores `value` at `key`; a new key needs room under `max_keys`.
    Set {
        plugin: String,
        key: String,
        value: Vec<u8>,
        max_keys: u64,
    },
    Delete {
        plugin: String,
        key: String,
    },
    /// Adds `delta` (wrapping) to the counter at `key` and answers the new value. A counter is
    /// stored as its 8 bytes, little-endian; a missing key or one holding anything else counts
    /// as 0.
    Increment {
        plugin: String,
        key: String,
        delta: i64,
        max_keys: u64,
    },
}
