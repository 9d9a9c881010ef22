//! A delivery's attempt state, kept in the deliveries bucket under `<plugin>.<seq>.<gen>`
//! from its first claim until it ends (then it expires by its TTL): what the stream's own
//! redelivery count cannot say, such as attempts recorded, attempts begun and by whom, and
//! when a retry comes due.

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use hookd_storage::{StorageError, now_ms};
use serde::{Deserialize, Serialize};

use crate::{Inner, failed};

/// How long attempt state outlives the moment it stops mattering.
const STATE_MARGIN: Duration = Duration::from_secs(24 * 3600);

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

/// A delivery's state and its revision, as last written (none: never claimed).
pub(crate) async fn read_state(
    inner: &Inner,
    key: &str,
) -> Result<(Option<DeliveryState>, u64), StorageError> {
    let entry = inner
        .deliveries
        .entry(key)
        .await
        .map_err(|e| failed("cannot read a delivery's state", e))?;
    Ok(match entry {
        Some(e) if e.operation == async_nats::jetstream::kv::Operation::Put => {
            (serde_json::from_slice(&e.value).ok(), e.revision)
        }
        Some(e) => (None, e.revision),
        None => (None, 0),
    })
}

pub(crate) enum WriteState {
    Written(u64),
    /// Someone else wrote it since we read it: the delivery is no longer ours.
    Conflict,
}

/// Writes a delivery's state if it is still at `revision`, with a TTL past the moment it can
/// matter.
pub(crate) async fn write_state(
    inner: &Inner,
    key: &str,
    state: &DeliveryState,
    revision: u64,
) -> Result<WriteState, StorageError> {
    let until_due = Duration::from_millis(u64::try_from(state.next_at_ms - now_ms()).unwrap_or(0));
    let ttl = (until_due + inner.config.ack_wait + STATE_MARGIN)
        .min(inner.config.max_event_age + STATE_MARGIN);
    let body = serde_json::to_vec(state).map_err(|e| failed("a delivery's state", e))?;
    let subject = format!("{}{key}", inner.deliveries.prefix);
    let publish = PublishMessage::build()
        .payload(Bytes::from(body))
        .expected_last_subject_sequence(revision)
        .ttl(ttl);
    let acked = async { inner.js.send_publish(subject, publish).await?.await }.await;
    match acked {
        Ok(ack) => Ok(WriteState::Written(ack.sequence)),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(WriteState::Conflict),
        Err(e) => Err(failed("cannot write a delivery's state", e)),
    }
}
