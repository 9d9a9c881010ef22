//! Dead letters: a copy of the event in the dead-letter stream per dead delivery, listed and
//! replayed from there by any instance.

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{self, DeliverPolicy};
use async_nats::jetstream::message::AckKind;
use bytes::Bytes;
use futures_util::StreamExt;
use hookd_storage::{DeadLetter, ReplaySelector, StorageError};
use tracing::warn;

use crate::names::{escape_header, unescape_header};
use crate::queue::{Held, acker, header_num, header_str};
use crate::{Inner, failed, header};

/// Writes the dead letter (idempotent: its id is the delivery's) and ends the message.
pub(crate) async fn bury(
    inner: &Inner,
    plugin: &str,
    seq: i64,
    held: &Held,
    error: &str,
) -> Result<(), StorageError> {
    let mut headers = HeaderMap::new();
    let msg_id = format!("dead.{plugin}.{seq}.{}", held.generation);
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
    headers.insert(header::SEQ, seq.to_string().as_str());
    headers.insert(header::ID, escape_header(&held.event_id).as_str());
    headers.insert(header::TYPE, escape_header(&held.event_type).as_str());
    headers.insert(header::PLUGIN, plugin);
    headers.insert(header::ATTEMPTS, held.state.attempts.to_string().as_str());
    headers.insert(header::ERROR, escape_header(error).as_str());
    headers.insert(
        header::RECEIVED_MS,
        held.received_at_ms.to_string().as_str(),
    );
    headers.insert(
        header::DIED_MS,
        held.state.updated_at_ms.to_string().as_str(),
    );
    let payload = Bytes::from(held.payload.clone().into_bytes());
    async {
        inner
            .js
            .publish_with_headers(inner.names.dead_subject(plugin), headers, payload)
            .await?
            .await
    }
    .await
    .map_err(|e| failed("cannot write a dead letter", e))?;
    acker(inner, &held.reply)
        .double_ack_with(AckKind::Term)
        .await
        .map_err(|e| failed("cannot end a dead delivery", e))
}

/// Dead letters per plugin.
pub(crate) async fn dead_counts(inner: &Inner) -> Result<Vec<(String, u64)>, StorageError> {
    let mut subjects = inner
        .dead
        .info_with_subjects(inner.names.all_dead())
        .await
        .map_err(|e| failed("cannot count dead letters", e))?;
    let mut counts = Vec::new();
    while let Some(entry) = subjects.next().await {
        let (subject, count) = entry.map_err(|e| failed("cannot count dead letters", e))?;
        if let Some(plugin) = inner.names.dead_plugin(&subject) {
            counts.push((plugin.to_owned(), count as u64));
        }
    }
    Ok(counts)
}

/// A dead letter as stored, with what a replay needs.
struct Stored {
    position: u64,
    letter: DeadLetter,
    payload: Bytes,
}

/// Dead letters on `subject` (one plugin's, or all), oldest death first, at most `limit`.
async fn read_dead(
    inner: &Inner,
    subject: String,
    limit: usize,
) -> Result<Vec<Stored>, StorageError> {
    let total: u64 = dead_counts(inner)
        .await?
        .into_iter()
        .filter(|(p, _)| {
            subject == inner.names.all_dead() || subject == inner.names.dead_subject(p)
        })
        .map(|(_, n)| n)
        .sum();
    let want = usize::try_from(total).unwrap_or(usize::MAX).min(limit);
    if want == 0 {
        return Ok(Vec::new());
    }
    let reader = inner
        .dead
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| failed("cannot read dead letters", e))?;
    let mut messages = reader
        .messages()
        .await
        .map_err(|e| failed("cannot read dead letters", e))?;
    let mut letters = Vec::with_capacity(want);
    while letters.len() < want {
        let next = tokio::time::timeout(inner.config.request_timeout, messages.next()).await;
        let message = match next {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(failed("cannot read dead letters", e)),
            Ok(None) | Err(_) => break,
        };
        let (position, pending) = match message.info() {
            Ok(info) => (info.stream_sequence, info.pending),
            Err(e) => return Err(failed("cannot read dead letters", e)),
        };
        let empty = HeaderMap::new();
        let h = message.headers.as_ref().unwrap_or(&empty);
        let letter = (|| {
            Some(DeadLetter {
                event_seq: header_num(h, header::SEQ)?,
                event_id: unescape_header(header_str(h, header::ID)?)?,
                event_type: unescape_header(header_str(h, header::TYPE)?)?,
                plugin: header_str(h, header::PLUGIN)?.to_owned(),
                attempts: header_num(h, header::ATTEMPTS)?,
                last_error: unescape_header(header_str(h, header::ERROR)?)?,
                received_at_ms: header_num(h, header::RECEIVED_MS)?,
                died_at_ms: header_num(h, header::DIED_MS)?,
            })
        })();
        match letter {
            Some(letter) => letters.push(Stored {
                position,
                letter,
                payload: message.payload.clone(),
            }),
            None => warn!(position, "a dead letter hookd did not write; skipped"),
        }
        if pending == 0 {
            break;
        }
    }
    Ok(letters)
}

pub(crate) async fn dead_letters(
    inner: &Inner,
    limit: usize,
) -> Result<Vec<DeadLetter>, StorageError> {
    Ok(read_dead(inner, inner.names.all_dead(), limit)
        .await?
        .into_iter()
        .map(|s| s.letter)
        .collect())
}

pub(crate) async fn replay(
    inner: &Inner,
    selector: ReplaySelector,
    plugin: Option<String>,
    now_ms: i64,
) -> Result<usize, StorageError> {
    let subject = match &plugin {
        Some(p) => inner.names.dead_subject(p),
        None => inner.names.all_dead(),
    };
    let letters = read_dead(inner, subject, usize::MAX).await?;
    let mut replayed = 0;
    for stored in letters {
        let l = &stored.letter;
        if let ReplaySelector::Event(id) = &selector
            && *id != l.event_id
        {
            continue;
        }
        let replay_subject = inner.names.replay_subject(&l.plugin);
        inner
            .consumers
            .ensure(inner, &l.plugin, None, Some(&replay_subject))
            .await?;
        let mut headers = HeaderMap::new();
        let msg_id = format!("replay.{}.{}", l.plugin, stored.position);
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
        headers.insert(header::ID, escape_header(&l.event_id).as_str());
        headers.insert(header::TYPE, escape_header(&l.event_type).as_str());
        headers.insert(header::RECEIVED_MS, l.received_at_ms.to_string().as_str());
        headers.insert(header::SEQ, l.event_seq.to_string().as_str());
        headers.insert(header::GEN, stored.position.to_string().as_str());
        headers.insert(header::DUE_MS, now_ms.to_string().as_str());
        async {
            inner
                .js
                .publish_with_headers(replay_subject, headers, stored.payload.clone())
                .await?
                .await
        }
        .await
        .map_err(|e| failed("cannot replay a dead letter", e))?;
        inner
            .dead
            .delete_message(stored.position)
            .await
            .map_err(|e| failed("cannot remove a replayed dead letter", e))?;
        replayed += 1;
    }
    Ok(replayed)
}
