//! `forwarder`: posts a short text about each event to a Slack-style chat webhook
//! (`{"text": "..."}`).
//!
//! Config: `webhook_url`, and optionally `prefix`. Which events are forwarded is chosen with
//! `events = [...]` in the plugin's TOML.

use hookd_sdk::{Error, Event, Payload, Plugin, config, export_plugin, http};

struct Forwarder;

fn describe(event: &Event) -> String {
    match event.payload() {
        Ok(Payload::Message(m)) => {
            let who = m
                .contact
                .as_ref()
                .and_then(|c| c.username.as_deref())
                .unwrap_or("someone");
            match m.message.as_deref() {
                Some(text) => format!("{} by {who}: {}", event.event_type, shorten(text, 200)),
                None => format!("{} by {who}", event.event_type),
            }
        }
        Ok(Payload::Contact(c)) => {
            format!(
                "{}: {}",
                event.event_type,
                c.username.as_deref().or(c.id.as_deref()).unwrap_or("?")
            )
        }
        Ok(Payload::Group(g)) => {
            format!(
                "{}: {}",
                event.event_type,
                g.name.as_deref().or(g.id.as_deref()).unwrap_or("?")
            )
        }
        Ok(payload) => format!("{}: {}", event.event_type, payload.id().unwrap_or("?")),
        Err(_) => event.event_type.to_string(),
    }
}

fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

impl Plugin for Forwarder {
    fn handle(event: Event) -> Result<(), Error> {
        let url = config::require("webhook_url")?;
        let text = match config::get("prefix") {
            Some(prefix) => format!("{prefix} {}", describe(&event)),
            None => describe(&event),
        };
        http::post_json(&url, &[], &serde_json::json!({ "text": text }))?
            .into_result("the chat webhook")?;
        Ok(())
    }
}

export_plugin!(Forwarder);
