//! Typed payloads for Protocol's five resources.
//!
//! Every field is optional (Protocol may omit any of them) and fields this version does not
//! know are kept in `extra`, so a model read and written back loses nothing. Timestamps are
//! Unix seconds, ids opaque strings.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{EventType, Resource};

/// Unknown fields, kept as they came.
pub type Extra = Map<String, Value>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_pinned: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_muted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_opened_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    /// The message text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Reactions; their model is not published, so they stay untyped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactions: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Attachment>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<Vec<Conversation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<Contact>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A payload typed by its event's resource. Unknown resources stay plain JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Contact(Contact),
    Conversation(Conversation),
    Message(Message),
    Group(Group),
    Attachment(Attachment),
    Unknown(Value),
}

impl Payload {
    /// Parses `json` as the model `event_type` names.
    pub fn parse(event_type: &EventType, json: &str) -> Result<Self, serde_json::Error> {
        Ok(match event_type.resource() {
            Some(Resource::Contact) => Payload::Contact(serde_json::from_str(json)?),
            Some(Resource::Conversation) => Payload::Conversation(serde_json::from_str(json)?),
            Some(Resource::Message) => Payload::Message(serde_json::from_str(json)?),
            Some(Resource::Group) => Payload::Group(serde_json::from_str(json)?),
            Some(Resource::Attachment) => Payload::Attachment(serde_json::from_str(json)?),
            None => Payload::Unknown(serde_json::from_str(json)?),
        })
    }

    /// The resource's own id, when the payload has one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Payload::Contact(c) => c.id.as_deref(),
            Payload::Conversation(c) => c.id.as_deref(),
            Payload::Message(m) => m.id.as_deref(),
            Payload::Group(g) => g.id.as_deref(),
            Payload::Attachment(a) => a.id.as_deref(),
            Payload::Unknown(v) => v.get("id").and_then(Value::as_str),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let json = r#"{"id":"c1","username":"kevin","mood":"festive","tags":[1,2]}"#;
        let contact: Contact = serde_json::from_str(json).unwrap();
        assert_eq!(contact.username.as_deref(), Some("kevin"));
        assert_eq!(contact.extra["mood"], "festive");
        let back: Value = serde_json::to_value(&contact).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(json).unwrap());
    }

    #[test]
    fn every_field_is_optional() {
        for t in EventType::known() {
            assert!(Payload::parse(&t, "{}").is_ok(), "{t}");
        }
    }
}
