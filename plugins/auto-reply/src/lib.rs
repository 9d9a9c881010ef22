//! `auto-reply`: on `message.created`, posts a reply into the same conversation through the
//! Protocol API.
//!
//! Config: `api_base_url` (e.g. `https://api.protocol.chat`), `api_token`, and optionally
//! `reply_text`. Needs `[capabilities] http` to allow the API's origin.

use hookd_sdk::{Error, Event, Payload, Plugin, config, export_plugin, http, log};

struct AutoReply;

const DEFAULT_REPLY: &str = "Thanks for your message! We'll get back to you soon.";

impl Plugin for AutoReply {
    fn handle(event: Event) -> Result<(), Error> {
        let Payload::Message(message) = event.payload()? else {
            log::debug(&format!(
                "{} is not a message event; nothing to do",
                event.id
            ));
            return Ok(());
        };
        let Some(conversation) = message.conversation_id.as_deref() else {
            return Err(Error::give_up(format!(
                "message event {} has no conversation_id",
                event.id
            )));
        };
        let base = config::require("api_base_url")?;
        let token = config::require("api_token")?;
        let text = config::get("reply_text").unwrap_or_else(|| DEFAULT_REPLY.to_owned());
        let url = format!(
            "{}/conversations/{conversation}/messages",
            base.trim_end_matches('/')
        );
        let auth = format!("Bearer {token}");
        http::post_json(
            &url,
            &[("authorization", &auth)],
            &serde_json::json!({ "message": text }),
        )?
        .into_result("the Protocol API")?;
        log::info(&format!(
            "replied in conversation {conversation} to event {}",
            event.id
        ));
        Ok(())
    }
}

export_plugin!(AutoReply);
