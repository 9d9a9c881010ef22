//! `logger`: logs every event it receives, with a one-line summary of its payload.

use hookd_sdk::{Error, Event, Payload, Plugin, export_plugin, log};

struct Logger;

impl Plugin for Logger {
    fn handle(event: Event) -> Result<(), Error> {
        let summary = match event.payload() {
            Ok(Payload::Message(m)) => format!(
                "message {} in {}: {:?}",
                m.id.as_deref().unwrap_or("?"),
                m.conversation_id.as_deref().unwrap_or("?"),
                m.message.as_deref().unwrap_or("")
            ),
            Ok(Payload::Contact(c)) => {
                format!(
                    "contact {} ({})",
                    c.id.as_deref().unwrap_or("?"),
                    c.username.as_deref().unwrap_or("?")
                )
            }
            Ok(payload) => format!("{} {}", event.event_type, payload.id().unwrap_or("?")),
            Err(_) => format!(
                "{} with a payload this plugin cannot read",
                event.event_type
            ),
        };
        log::info(&format!(
            "event {} ({}, attempt {}): {summary}",
            event.id, event.event_type, event.attempt
        ));
        Ok(())
    }
}

export_plugin!(Logger);
