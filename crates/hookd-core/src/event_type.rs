//! Event types: `resource.action`, the 15 this version knows plus any Protocol adds later
//! (kept as text: a type this version does not know still parses).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The resource an event is about; it names the payload's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Contact,
    Conversation,
    Message,
    Group,
    Attachment,
}

/// What happened to the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Created,
    Updated,
    Deleted,
}

impl Resource {
    const ALL: [Resource; 5] = [
        Resource::Contact,
        Resource::Conversation,
        Resource::Message,
        Resource::Group,
        Resource::Attachment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Contact => "contact",
            Resource::Conversation => "conversation",
            Resource::Message => "message",
            Resource::Group => "group",
            Resource::Attachment => "attachment",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl Action {
    const ALL: [Action; 3] = [Action::Created, Action::Updated, Action::Deleted];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// An event's `type`. Types this version does not know are kept verbatim, so they can still be
/// stored and delivered to plugins whose patterns match them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    Known(Resource, Action),
    Unknown(Box<str>),
}

impl EventType {
    /// All 15 types Protocol documents, resource-major.
    pub fn known() -> impl Iterator<Item = EventType> {
        Resource::ALL
            .into_iter()
            .flat_map(|r| Action::ALL.into_iter().map(move |a| EventType::Known(r, a)))
    }

    pub fn parse(s: &str) -> Self {
        s.split_once('.')
            .and_then(|(r, a)| Some(EventType::Known(Resource::parse(r)?, Action::parse(a)?)))
            .unwrap_or_else(|| EventType::Unknown(s.into()))
    }

    pub fn resource(&self) -> Option<Resource> {
        match self {
            EventType::Known(r, _) => Some(*r),
            EventType::Unknown(_) => None,
        }
    }

    pub fn action(&self) -> Option<Action> {
        match self {
            EventType::Known(_, a) => Some(*a),
            EventType::Unknown(_) => None,
        }
    }

    pub fn is_known(&self) -> bool {
        matches!(self, EventType::Known(..))
    }

    /// The wire form, e.g. `message.created`.
    pub fn as_str(&self) -> &str {
        match self {
            EventType::Known(r, a) => known_name(*r, *a),
            EventType::Unknown(s) => s,
        }
    }
}

fn known_name(r: Resource, a: Action) -> &'static str {
    use Action::*;
    use Resource::*;
    match (r, a) {
        (Contact, Created) => "contact.created",
        (Contact, Updated) => "contact.updated",
        (Contact, Deleted) => "contact.deleted",
        (Conversation, Created) => "conversation.created",
        (Conversation, Updated) => "conversation.updated",
        (Conversation, Deleted) => "conversation.deleted",
        (Message, Created) => "message.created",
        (Message, Updated) => "message.updated",
        (Message, Deleted) => "message.deleted",
        (Group, Created) => "group.created",
        (Group, Updated) => "group.updated",
        (Group, Deleted) => "group.deleted",
        (Attachment, Created) => "attachment.created",
        (Attachment, Updated) => "attachment.updated",
        (Attachment, Deleted) => "attachment.deleted",
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(EventType::parse(s))
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(EventType::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifteen_known_types_round_trip() {
        let all: Vec<_> = EventType::known().collect();
        assert_eq!(all.len(), 15);
        for t in all {
            assert!(t.is_known());
            assert_eq!(EventType::parse(t.as_str()), t);
        }
    }

    #[test]
    fn unknown_types_are_kept_verbatim() {
        for s in [
            "reaction.created",
            "message.pinned",
            "message",
            "",
            "Message.Created",
        ] {
            let t = EventType::parse(s);
            assert_eq!(t, EventType::Unknown(s.into()));
            assert_eq!(t.as_str(), s);
        }
    }
}
