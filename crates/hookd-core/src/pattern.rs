//! Subscription patterns: `message.created`, `message.*`, `*.deleted`, `*`.
//!
//! A pattern is dot-separated segments, each a literal or `*` (one whole segment). A lone `*`
//! matches every type, including types this version does not know.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::EventType;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventPattern {
    text: Box<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("an event pattern cannot be empty")]
    Empty,
    #[error(
        "event pattern `{0}` is not valid: use segments of lowercase letters, digits, `_` or `-`, \
         separated by dots, where a segment may be `*` (e.g. `message.created`, `message.*`, `*`)"
    )]
    Invalid(String),
}

impl EventPattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let valid_segment = |seg: &str| {
            seg == "*"
                || (!seg.is_empty()
                    && seg.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    }))
        };
        if text.split('.').all(valid_segment) {
            Ok(Self { text: text.into() })
        } else {
            Err(PatternError::Invalid(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, event_type: &EventType) -> bool {
        self.matches_str(event_type.as_str())
    }

    fn matches_str(&self, event_type: &str) -> bool {
        if &*self.text == "*" {
            return true;
        }
        let mut pattern = self.text.split('.');
        let mut subject = event_type.split('.');
        loop {
            match (pattern.next(), subject.next()) {
                (None, None) => return true,
                (Some(p), Some(s)) if p == "*" || p == s => continue,
                _ => return false,
            }
        }
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for EventPattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for EventPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for EventPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_table() {
        let cases = [
            ("*", "message.created", true),
            ("*", "reaction.added", true),
            ("message.*", "message.created", true),
            ("message.*", "message.deleted", true),
            ("message.*", "contact.created", false),
            ("message.*", "message", false),
            ("*.deleted", "group.deleted", true),
            ("*.deleted", "group.created", false),
            ("message.created", "message.created", true),
            ("message.created", "message.updated", false),
            ("reaction.added", "reaction.added", true),
        ];
        for (p, t, want) in cases {
            let pat = EventPattern::parse(p).unwrap();
            assert_eq!(pat.matches(&EventType::parse(t)), want, "{p} vs {t}");
        }
    }

    #[test]
    fn invalid_patterns_are_refused() {
        for bad in [
            "",
            "message.",
            ".created",
            "message.cre*",
            "Message.created",
            "a b",
            "**",
        ] {
            assert!(EventPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
