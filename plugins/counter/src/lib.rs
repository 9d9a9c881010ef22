//! `counter`: counts events per type in its key-value store and logs the running totals.

use hookd_sdk::{Error, Event, Plugin, export_plugin, kv, log};

struct Counter;

impl Plugin for Counter {
    fn handle(event: Event) -> Result<(), Error> {
        let of_type = kv::increment(&format!("count:{}", event.event_type), 1)?;
        let total = kv::increment("count:*", 1)?;
        log::info(&format!(
            "{} #{of_type} ({total} events in all)",
            event.event_type
        ));
        Ok(())
    }
}

export_plugin!(Counter);
