//! Shared parts of hookd's benchmark tools: reading the secret file, and making the signed
//! events the load generator sends.
//!
//! Design decisions:
//! - **Realistic, unique events.** Each event is one of the 15 Protocol types, in turn, with
//!   the payload of that type's sample in `examples/events/`, and its own `id`; a receiver
//!   that deduplicates by id cannot short-cut any of them.
//! - **Signed before the clock starts.** [`signed_events`] does all the JSON and HMAC work up
//!   front, so the load generator's measured loop only copies prepared bytes to a socket.
//! - **Exact sizes.** `body_bytes` pads each payload (an extra `padding` string field, kept by
//!   receivers that are forward compatible) to exactly that many bytes, so runs at different
//!   sizes compare what they claim to.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use hookd_core::{EventType, Secret, SecretError};
use serde_json::Value;

macro_rules! sample {
    ($ty:literal) => {
        (
            $ty,
            include_str!(concat!("../../../examples/events/", $ty, ".json")),
        )
    };
}

/// The sample event of each Protocol type, as the project documents them.
const SAMPLES: [(&str, &str); 15] = [
    sample!("attachment.created"),
    sample!("attachment.deleted"),
    sample!("attachment.updated"),
    sample!("contact.created"),
    sample!("contact.deleted"),
    sample!("contact.updated"),
    sample!("conversation.created"),
    sample!("conversation.deleted"),
    sample!("conversation.updated"),
    sample!("group.created"),
    sample!("group.deleted"),
    sample!("group.updated"),
    sample!("message.created"),
    sample!("message.deleted"),
    sample!("message.updated"),
];

/// Why the secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read the secret file `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the secret in `{path}` is unusable: {source}")]
    Invalid { path: PathBuf, source: SecretError },
}

/// Reads a webhook secret from a file, the way hookd reads `file:` secrets: the whole file,
/// minus a trailing newline (`echo secret > file` adds one).
pub fn read_secret(path: &Path) -> Result<Secret, SecretFileError> {
    let mut bytes = std::fs::read(path).map_err(|source| SecretFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Secret::new(bytes).map_err(|source| SecretFileError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// One request's worth of event: the exact body and its `x-protocol-signature` value.
#[derive(Debug, Clone)]
pub struct SignedEvent {
    pub body: Bytes,
    pub signature: String,
}

/// Why events could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("no sample event for type `{0}` in examples/events/")]
    MissingSample(String),
    #[error("the sample event for `{ty}` is not a JSON envelope with an object payload: {why}")]
    BadSample { ty: &'static str, why: String },
}

/// A JSON object: an event's payload.
type Object = serde_json::Map<String, Value>;

/// The payload of each known type's sample, in [`EventType::known`] order.
fn payloads() -> Result<Vec<(EventType, Object)>, EventError> {
    EventType::known()
        .map(|ty| {
            let (name, text) = SAMPLES
                .iter()
                .find(|(name, _)| *name == ty.as_str())
                .ok_or_else(|| EventError::MissingSample(ty.as_str().to_owned()))?;
            let bad = |why: String| EventError::BadSample { ty: name, why };
            let mut sample: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
            match sample.get_mut("payload").map(Value::take) {
                Some(Value::Object(payload)) => Ok((ty, payload)),
                _ => Err(bad("`payload` is not an object".into())),
            }
        })
        .collect()
}

/// Makes `count` signed events with ids `{id_prefix}-0`, `{id_prefix}-1`, …, types cycling
/// through the 15 Protocol types. With `body_bytes` > 0 every body is padded to exactly that
/// size (bodies already larger stay as they are).
pub fn signed_events(
    secret: &Secret,
    id_prefix: &str,
    count: usize,
    body_bytes: usize,
) -> Result<Vec<SignedEvent>, EventError> {
    let templates = payloads()?;
    let mut events = Vec::with_capacity(count);
    for n in 0..count {
        let (ty, payload) = &templates[n % templates.len()];
        let id = Value::String(format!("{id_prefix}-{n}"));
        let mut body = envelope(&id, ty, payload, None);
        if body.len() < body_bytes {
            // Measure with an empty padding field first: its name and quotes count too.
            let bare = envelope(&id, ty, payload, Some(0)).len();
            body = envelope(&id, ty, payload, Some(body_bytes.saturating_sub(bare)));
        }
        let signature = hookd_core::sign(secret, body.as_bytes());
        events.push(SignedEvent {
            body: Bytes::from(body),
            signature,
        });
    }
    Ok(events)
}

/// `{"id":…,"type":…,"payload":{…}}` in the order senders write it, with `padding` bytes of
/// filler in the payload when asked.
fn envelope(id: &Value, ty: &EventType, payload: &Object, padding: Option<usize>) -> String {
    let payload = match padding {
        None => Value::Object(payload.clone()),
        Some(n) => {
            let mut padded = payload.clone();
            padded.insert("padding".into(), Value::String("x".repeat(n)));
            Value::Object(padded)
        }
    };
    format!(
        r#"{{"id":{id},"type":{ty},"payload":{payload}}}"#,
        ty = Value::String(ty.as_str().to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use hookd_core::{Envelope, Limits, SIGNATURE_HEADER, Verifier};

    use super::*;

    fn secret() -> Secret {
        Secret::new("hookd-bench-test-secret-0123456789").expect("a 34-byte secret is valid")
    }

    #[test]
    fn every_event_is_unique_signed_and_a_valid_envelope() {
        let secret = secret();
        let verifier = Verifier::new([&secret]).expect("one secret");
        let events = signed_events(&secret, "bench-t", 45, 0).expect("samples are valid");
        let mut ids = HashSet::new();
        let mut types = HashSet::new();
        for event in &events {
            verifier
                .verify(&event.body, Some(event.signature.as_bytes()))
                .unwrap_or_else(|e| panic!("{SIGNATURE_HEADER} does not verify: {e}"));
            let envelope =
                Envelope::parse(&event.body, Limits::default()).expect("the body is an envelope");
            envelope
                .payload()
                .expect("the payload is the typed model of its type");
            assert!(envelope.event_type.is_known());
            assert!(ids.insert(envelope.id), "duplicate id");
            types.insert(envelope.event_type);
        }
        assert_eq!(types.len(), 15, "all Protocol types are sent");
        let message_created = events
            .iter()
            .filter_map(|e| std::str::from_utf8(&e.body).ok())
            .find(|body| body.contains(r#""type":"message.created""#))
            .and_then(|body| body.strip_prefix(r#"{"id":"bench-t-"#))
            .and_then(|body| body.split_once(','))
            .map(|(_, rest)| rest);
        assert_eq!(
            message_created,
            Some(
                r#""type":"message.created","payload":{"attachments":[],"contact":{"avatar_url":"https://assets.protocol.chat/avatars/kevin.jpg","created_at":692233200,"id":"WAz8eIbvDR60rouK","last_active_at":705103200,"phone_number":"1-800-759-3000","username":"KevinMcCallister"},"conversation_id":"xgQQXg3hrtjh7AvZ","created_at":692233200,"id":"SIuAFUNKdSYHZF2w","message":"Has anyone seen my toothbrush?","reactions":[],"updated_at":692233200}}"#
            )
        );
    }

    #[test]
    fn bodies_are_padded_to_exactly_the_asked_size() {
        let secret = secret();
        for (asked, expected_min) in [(0, 60), (200, 200), (1024, 1024), (16 * 1024, 16 * 1024)] {
            let events = signed_events(&secret, "bench-p", 30, asked).expect("samples are valid");
            for event in &events {
                if asked > 0 && event.body.len() <= asked {
                    assert_eq!(event.body.len(), asked);
                }
                assert!(event.body.len() >= expected_min);
                Envelope::parse(&event.body, Limits::default())
                    .expect("a padded body is still an envelope")
                    .payload()
                    .expect("padding is an unknown field, kept");
            }
        }
        // Bodies larger than asked are left alone, never truncated.
        let small = signed_events(&secret, "bench-p", 15, 64).expect("samples are valid");
        assert!(small.iter().any(|e| e.body.len() > 64));
    }

    #[test]
    fn secret_file_loses_its_trailing_newline_only() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "hookd-bench-test-secret-0123456789\n").expect("written");
        assert_eq!(read_secret(&path).ok(), Some(secret()));
        std::fs::write(&path, "short\n").expect("written");
        assert!(matches!(
            read_secret(&path),
            Err(SecretFileError::Invalid { .. })
        ));
        assert!(matches!(
            read_secret(&dir.path().join("missing")),
            Err(SecretFileError::Read { .. })
        ));
    }
}
