//! The webhook envelope: `{"id": "...", "type": "...", "payload": {...}}`.
//!
//! Only `id` and `type` are interpreted; `payload` is kept as its exact JSON text so plugins
//! see what Protocol sent, byte for byte. Unknown top-level fields are ignored.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::EventType;
use crate::model::Payload;

/// Bounds that keep hostile JSON cheap to refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of arrays and objects accepted (the envelope itself is depth 1).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024,
            max_depth: 64,
        }
    }
}

/// Longest event id accepted, in bytes.
const MAX_ID_BYTES: usize = 256;
/// Longest event type accepted, in bytes.
const MAX_TYPE_BYTES: usize = 128;

/// Why a body is not an envelope. Messages are safe to return to the (authenticated) sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("JSON nesting is deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body is not a JSON object")]
    NotAnObject,
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `{0}` must be a string")]
    NotAString(&'static str),
    #[error("field `{0}` must not be empty")]
    Empty(&'static str),
    #[error("field `{field}` is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("field `{0}` must contain only printable ASCII characters")]
    BadCharacters(&'static str),
}

impl EnvelopeError {
    /// A stable, low-cardinality label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::TooDeep { .. } => "too_deep",
            Self::Json(_) | Self::NotAnObject => "bad_json",
            _ => "bad_envelope",
        }
    }
}

/// A parsed, not yet typed, webhook event.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    pub event_type: EventType,
    payload: Box<RawValue>,
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.event_type == other.event_type
            && self.payload_json() == other.payload_json()
    }
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

impl Envelope {
    /// Parses `body` within `limits`. Never panics, whatever the bytes.
    pub fn parse(body: &[u8], limits: Limits) -> Result<Self, EnvelopeError> {
        if body.len() > limits.max_bytes {
            return Err(EnvelopeError::TooLarge {
                len: body.len(),
                max: limits.max_bytes,
            });
        }
        check_depth(body, limits.max_depth)?;
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Err(e) => Err(EnvelopeError::Json(e.to_string())),
                Ok(_) => Err(EnvelopeError::NotAnObject),
            };
        }
        let wire: Wire<'_> =
            serde_json::from_slice(body).map_err(|e| EnvelopeError::Json(e.to_string()))?;
        let id = text_field("id", wire.id, MAX_ID_BYTES)?;
        let event_type = text_field("type", wire.event_type, MAX_TYPE_BYTES)?;
        let payload = match wire.payload {
            Some(raw) => raw.to_owned(),
            None => RawValue::from_string("null".to_owned())
                .map_err(|e| EnvelopeError::Json(e.to_string()))?,
        };
        Ok(Self {
            id,
            event_type: EventType::parse(&event_type),
            payload,
        })
    }

    /// The payload exactly as received (`null` when the envelope had none).
    pub fn payload_json(&self) -> &str {
        self.payload.get()
    }

    /// The payload as the typed model its event type names.
    pub fn payload(&self) -> Result<Payload, serde_json::Error> {
        Payload::parse(&self.event_type, self.payload_json())
    }
}

fn text_field(
    name: &'static str,
    raw: Option<&RawValue>,
    max: usize,
) -> Result<String, EnvelopeError> {
    let raw = raw.ok_or(EnvelopeError::Missing(name))?;
    let value: String =
        serde_json::from_str(raw.get()).map_err(|_| EnvelopeError::NotAString(name))?;
    if value.is_empty() {
        return Err(EnvelopeError::Empty(name));
    }
    if value.len() > max {
        return Err(EnvelopeError::TooLong { field: name, max });
    }
    // Ids and types end up in logs, metrics labels and SQL; keep them plain.
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(EnvelopeError::BadCharacters(name));
    }
    Ok(value)
}

/// Rejects nesting deeper than `max` with one pass over the bytes, before any parser recurses.
fn check_depth(body: &[u8], max: usize) -> Result<(), EnvelopeError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(EnvelopeError::TooDeep { max });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Envelope, EnvelopeError> {
        Envelope::parse(s.as_bytes(), Limits::default())
    }

    #[test]
    fn payload_text_is_kept_verbatim() {
        let body = r#"{"id":"a1","type":"message.created","payload": {"b" : 1,  "a":[ ]}}"#;
        let env = parse(body).unwrap();
        assert_eq!(env.id, "a1");
        assert_eq!(env.event_type.as_str(), "message.created");
        assert_eq!(env.payload_json(), r#"{"b" : 1,  "a":[ ]}"#);
    }

    #[test]
    fn envelope_errors_table() {
        let cases: &[(&str, EnvelopeError)] = &[
            (
                "",
                EnvelopeError::Json("EOF while parsing a value at line 1 column 0".into()),
            ),
            ("[1]", EnvelopeError::NotAnObject),
            ("\"x\"", EnvelopeError::NotAnObject),
            (r#"{"type":"a.b"}"#, EnvelopeError::Missing("id")),
            (r#"{"id":"x"}"#, EnvelopeError::Missing("type")),
            (r#"{"id":1,"type":"a.b"}"#, EnvelopeError::NotAString("id")),
            (r#"{"id":"x","type":null}"#, EnvelopeError::Missing("type")),
            (
                r#"{"id":"x","type":["a"]}"#,
                EnvelopeError::NotAString("type"),
            ),
            (r#"{"id":"","type":"a.b"}"#, EnvelopeError::Empty("id")),
            (
                r#"{"id":"a b","type":"a.b"}"#,
                EnvelopeError::BadCharacters("id"),
            ),
            (
                r#"{"id":"x","type":"a\nb"}"#,
                EnvelopeError::BadCharacters("type"),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(&parse(body).unwrap_err(), want, "{body}");
        }
    }

    #[test]
    fn duplicate_keys_are_refused() {
        // Two ids would make dedup ambiguous.
        let err = parse(r#"{"id":"a","id":"b","type":"a.b"}"#).unwrap_err();
        assert!(matches!(err, EnvelopeError::Json(_)), "{err:?}");
    }

    #[test]
    fn missing_payload_is_null() {
        assert_eq!(
            parse(r#"{"id":"x","type":"a.b"}"#).unwrap().payload_json(),
            "null"
        );
    }

    #[test]
    fn depth_is_bounded_before_parsing() {
        let deep = format!(
            r#"{{"id":"x","type":"a.b","payload":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            parse(&deep).unwrap_err(),
            EnvelopeError::TooDeep { max: 64 }
        );
        // Brackets inside strings do not count.
        let quoted = format!(
            r#"{{"id":"x","type":"a.b","payload":"{}"}}"#,
            "[".repeat(1000)
        );
        assert!(parse(&quoted).is_ok());
    }

    #[test]
    fn size_is_bounded() {
        let limits = Limits {
            max_bytes: 10,
            max_depth: 8,
        };
        let err = Envelope::parse(br#"{"id":"x","type":"a.b"}"#, limits).unwrap_err();
        assert_eq!(err, EnvelopeError::TooLarge { len: 23, max: 10 });
    }

    #[test]
    fn invalid_utf8_is_a_json_error() {
        let err = Envelope::parse(b"{\"id\":\"\xff\",\"type\":\"a.b\"}", Limits::default());
        assert!(matches!(
            err,
            Err(EnvelopeError::Json(_)) | Err(EnvelopeError::NotAString(_))
        ));
    }
}
