//! A delivery's attempt state, kept in the deliveries bucket under `<plugin>.<seq>.<gen>`
//! from its first claim until it ends (then it expires by its TTL): what the stream's own
//! redelivery count cannot say, such as attempts recorded, attempts begun and by whom, and
//! when a retry comes due.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeliveryState {
    /// Attempts recorded.
    pub attempts: u32,
    /// Attempts begun (claims).
    pub started: u32,
    /// The daemon run that began the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<i64>,
    /// When it is due (Unix ms).
    pub next_at_ms: i64,
    pub updated_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Given up: its dead letter is (or is being) written, and the message is to be ended.
    #[serde(default)]
    pub dead: bool,
}

impl DeliveryState {
    /// A delivery never claimed: due from `due_ms`.
    pub(crate) fn fresh(due_ms: i64) -> Self {
        Self {
            attempts: 0,
            started: 0,
            by: None,
            next_at_ms: due_ms,
            updated_at_ms: due_ms,
            last_error: None,
            dead: false,
        }
    }
}

/// The key of a delivery's state: `gen` is 0 for a first delivery, the dead letter's
/// position for a replay (which starts counting again).
pub(crate) fn state_key(plugin: &str, seq: u64, generation: u64) -> String {
    format!("{plugin}.{seq}.{generation}")
}
