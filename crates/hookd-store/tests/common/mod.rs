//! Helpers shared by the store's integration tests: a store in a temp dir and sample events.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hookd_store::{NewEvent, Store, StoreConfig};
use prometheus_client::registry::Registry;

/// A receive time an hour ago: well inside the default dedup window, so the writer's own
/// pruning (which runs at open) leaves the event alone.
pub fn recent_ms() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(now.as_millis()).unwrap() - 3_600_000
}

pub fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        dir: dir.to_owned(),
        ..StoreConfig::default()
    }
}

pub fn open(config: StoreConfig) -> Store {
    Store::open(config, &mut Registry::default()).unwrap()
}

/// The payload stored for `id`: odd spacing, so that a re-serialisation would show.
pub fn payload(id: &str) -> String {
    format!(r#"{{"id": "p-{id}",  "text" : "spacing kept", "n": 1.50}}"#)
}

pub fn event(id: &str, plugins: &[&str]) -> NewEvent {
    NewEvent {
        id: id.to_owned(),
        event_type: "message.created".to_owned(),
        payload: payload(id),
        received_at_ms: recent_ms(),
        deliveries: plugins.iter().map(|p| Arc::from(*p)).collect(),
    }
}

pub fn event_at(id: &str, plugins: &[&str], received_at_ms: i64) -> NewEvent {
    NewEvent {
        received_at_ms,
        ..event(id, plugins)
    }
}
