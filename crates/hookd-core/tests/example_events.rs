//! Each of the 15 Protocol event types parses from its example in `examples/events/`.

use std::path::Path;

use hookd_core::{Envelope, EventType, Limits, Payload};

#[test]
fn every_known_type_has_a_parsing_example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/events");
    for event_type in EventType::known() {
        let path = dir.join(format!("{event_type}.json"));
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let env = Envelope::parse(&body, Limits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(env.event_type, event_type, "{}", path.display());
        let payload = env
            .payload()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let matches_resource = matches!(
            (&payload, event_type.resource().unwrap()),
            (Payload::Contact(_), hookd_core::Resource::Contact)
                | (Payload::Conversation(_), hookd_core::Resource::Conversation)
                | (Payload::Message(_), hookd_core::Resource::Message)
                | (Payload::Group(_), hookd_core::Resource::Group)
                | (Payload::Attachment(_), hookd_core::Resource::Attachment)
        );
        assert!(matches_resource, "{}: {payload:?}", path.display());
        assert!(
            payload.id().is_some(),
            "{}: payload has no id",
            path.display()
        );
    }
}
