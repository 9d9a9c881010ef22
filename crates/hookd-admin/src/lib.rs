//! The admin listener's JSON contract: what `GET /status` and `GET /plugins` answer, as serde
//! types that the daemon serializes and `hookd status` deserializes.
//!
//! **Boundary:** this crate is the contract and nothing else: no HTTP, no store, no clock; it
//! depends on `serde` alone, so a client (the CLI, a test, a future operator console) reads the
//! admin API without linking the server's HTTP stack or the engine.
//!
//! Design decisions:
//! - **One definition for both ends.** A field renamed here is renamed for the server and the
//!   client at once, or the build fails; there is no string key to drift.
//! - **The wire format is the one operators' scripts already read** (README, "Operating"):
//!   field names, nesting, and numbers (integers for counts, bytes and milliseconds; floats
//!   for `load_ms` and `lag_seconds`) are pinned by the tests below against a recorded answer.
//! - **Readers tolerate additions, not losses.** Unknown fields are ignored, so an older
//!   `hookd status` reads a newer daemon; a missing or renamed field is an error rather than a
//!   silent zero.
//! - **States are variants, not optional fields.** A plugin whose files were refused before it
//!   ever loaded has no content hash; [`Plugin::Refused`] says so instead of a loaded plugin
//!   with empty fields. On the wire the two are told apart by `"loaded": true | false`.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `GET /status`: what `hookd status` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's version (`CARGO_PKG_VERSION`).
    pub version: String,
    pub uptime_secs: u64,
    /// Serving: false while starting and once stopping (as `GET /readyz`).
    pub ready: bool,
    pub store: StoreStatus,
    /// Connections reset at once because their client held its share of the slots.
    pub connections_refused: u64,
    pub events: EventCounts,
    /// Refused requests since start, by reason (`bad_signature`, `too_large`, ...); reasons
    /// not seen yet are left out.
    pub rejected: BTreeMap<String, u64>,
    /// The latest refused requests, oldest first (at most 20).
    pub recent_rejections: Vec<Rejection>,
    pub deliveries: Deliveries,
    /// As `GET /plugins`.
    pub plugins: Vec<Plugin>,
    /// With a store shared by several instances (NATS JetStream): who shares it, and where
    /// they do not serve the same plugins. Absent with an embedded store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
}

/// The instances sharing a clustered store, as their heartbeats say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// The instance answering.
    pub this_instance: String,
    pub instances: Vec<ClusterInstance>,
    /// Plugins that live instances do not serve alike: a different code hash or event
    /// patterns, or loaded on some and not others (a deploy under way, a forgotten node).
    pub skew: Vec<PluginSkew>,
    /// Set when the heartbeats could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInstance {
    pub id: String,
    pub host: String,
    pub version: String,
    pub started_ms: u64,
    pub heartbeat_ms: u64,
    pub plugins: usize,
}

/// One plugin served differently across instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSkew {
    pub plugin: String,
    /// Each variant served, with the instances serving it; `content_hash` empty for the
    /// instances that do not load it.
    pub variants: Vec<SkewVariant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkewVariant {
    pub content_hash: String,
    pub events: Vec<String>,
    pub instances: Vec<String>,
}

/// The store's writer and the events waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub writer_running: bool,
    /// Events accepted by the listener and not yet committed.
    pub queue_depth: u64,
    pub queue_bytes: u64,
}

/// Events since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    /// Acknowledged with a 2xx, duplicates included.
    pub received: u64,
    pub duplicate: u64,
    /// New events no plugin subscribed to (stored, nothing to deliver).
    pub unrouted: u64,
}

/// One refused request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub reason: String,
}

/// Pending and dead deliveries, read from the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Deliveries {
    Counted {
        pending: u64,
        dead: u64,
        /// Plugins with pending or dead deliveries, by name.
        by_plugin: Vec<PluginDeliveries>,
    },
    /// The store could not be read; the rest of the status still holds.
    Unreadable { error: String },
}

/// One plugin's deliveries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginDeliveries {
    pub plugin: String,
    pub pending: u64,
    pub dead: u64,
    /// How long its longest-waiting due delivery has waited: its lag behind ingest (0 when
    /// nothing is overdue).
    pub lag_seconds: f64,
    /// It has pending deliveries but is not loaded: they wait for it.
    pub paused: bool,
}

/// A plugin as `GET /plugins` lists it: serving, or refused before it ever loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every entry is the large variant: boxing would add an allocation each and save nothing"
)]
pub enum Plugin {
    Loaded(LoadedPlugin),
    Refused(RefusedPlugin),
}

impl Plugin {
    pub fn name(&self) -> &str {
        match self {
            Plugin::Loaded(p) => &p.name,
            Plugin::Refused(p) => &p.name,
        }
    }

    /// The refusal of its latest files, and when (Unix ms), while it lasts.
    pub fn last_error(&self) -> Option<(&str, u64)> {
        match self {
            Plugin::Loaded(p) => p.last_error.as_deref().zip(p.last_error_at_ms),
            Plugin::Refused(p) => Some((&p.last_error, p.last_error_at_ms)),
        }
    }
}

/// A plugin that serves. When its latest files were refused, the version that loaded before
/// still serves and `last_error` says why the new one did not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadedPlugin {
    pub name: String,
    /// Always `true` on the wire.
    pub loaded: LoadedFlag<true>,
    /// Hex SHA-256 of the component's bytes.
    pub content_hash: String,
    /// Unix time in milliseconds.
    pub loaded_at_ms: u64,
    /// Compiling (or reading the compiled-code cache) and linking, in milliseconds.
    pub load_ms: f64,
    /// The code came from the compiled-code cache.
    pub cache_hit: bool,
    /// The component's path.
    pub wasm: String,
    /// The TOML it was declared in (its `NAME.toml`, or the main config).
    pub manifest: String,
    /// Subscription patterns (`message.*`).
    pub events: Vec<String>,
    pub limits: PluginLimits,
    pub retry: RetrySettings,
    /// Origins it may call over HTTP.
    pub http_origins: Vec<String>,
    /// It may use the key-value store.
    pub kv: bool,
    /// `null` unless its latest files were refused.
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<u64>,
}

/// A plugin whose files were refused and that has no earlier version serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedPlugin {
    pub name: String,
    /// Always `false` on the wire.
    pub loaded: LoadedFlag<false>,
    pub last_error: String,
    /// Unix time in milliseconds.
    pub last_error_at_ms: u64,
}

/// Per-delivery limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginLimits {
    pub timeout_ms: u64,
    pub memory_bytes: u64,
    /// Deliveries at once.
    pub concurrency: u64,
}

/// When a failed delivery is tried again, and when it becomes a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub max_age_secs: u64,
}

/// The `loaded` field of a plugin entry: a boolean that can only be `LOADED`, so that the
/// variant a client reads back is the one the server meant (and an entry cannot claim both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LoadedFlag<const LOADED: bool>;

impl<const LOADED: bool> Serialize for LoadedFlag<LOADED> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(LOADED)
    }
}

impl<'de, const LOADED: bool> Deserialize<'de> for LoadedFlag<LOADED> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if bool::deserialize(deserializer)? == LOADED {
            Ok(LoadedFlag)
        } else {
            Err(serde::de::Error::custom(format_args!(
                "expected `loaded` to be {LOADED}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A `GET /status` answer recorded from hookd before these types existed (built with
    /// `json!`): two plugins serving, one refused, a dead letter, a rejection.
    const RECORDED_STATUS: &str = r#"{"connections_refused":0,"deliveries":{"by_plugin":[{"dead":1,"lag_seconds":0.0,"paused":false,"pending":0,"plugin":"always-fails"}],"dead":1,"pending":0},"events":{"duplicate":0,"received":2,"unrouted":0},"plugins":[{"cache_hit":false,"content_hash":"7cb602bdc2176a8d28a7cb3e405c1410d61c55a6fff5b1b92f626692aeee0a54","events":["contact.*"],"http_origins":[],"kv":false,"last_error":null,"last_error_at_ms":null,"limits":{"concurrency":4,"memory_bytes":67108864,"timeout_ms":5000},"load_ms":535.625619,"loaded":true,"loaded_at_ms":1796176476691,"manifest":"plugins/always-fails.toml","name":"always-fails","retry":{"initial_backoff_ms":1000,"max_age_secs":86400,"max_attempts":1,"max_backoff_ms":300000},"wasm":"plugins/always-fails.wasm"},{"cache_hit":false,"content_hash":"e93424dfd08a9691147cab0dec096446e36449cd6b38dac61248ecf679aa4b40","events":["message.*"],"http_origins":[],"kv":false,"last_error":null,"last_error_at_ms":null,"limits":{"concurrency":4,"memory_bytes":67108864,"timeout_ms":5000},"load_ms":441.374347,"loaded":true,"loaded_at_ms":1796176477135,"manifest":"plugins/noop.toml","name":"noop","retry":{"initial_backoff_ms":1000,"max_age_secs":86400,"max_attempts":8,"max_backoff_ms":300000},"wasm":"plugins/noop.wasm"},{"last_error":"`plugins/garbage.wasm` is not a valid WebAssembly component: it is not a WebAssembly file (no `\\0asm` component header); is the copy complete?","last_error_at_ms":1796176477136,"loaded":false,"name":"garbage"}],"ready":true,"recent_rejections":[{"at_ms":1796176477327,"reason":"missing_signature"}],"rejected":{"missing_signature":1},"store":{"queue_bytes":0,"queue_depth":0,"writer_running":true},"uptime_secs":1,"version":"0.1.0"}"#;

    fn round_trip<T: Serialize + for<'de> Deserialize<'de>>(recorded: &Value) -> (T, Value) {
        let typed: T = serde_json::from_value(recorded.clone()).unwrap();
        let again = serde_json::to_value(&typed).unwrap();
        (typed, again)
    }

    #[test]
    fn the_recorded_status_reads_into_the_types_and_serializes_back_unchanged() {
        let recorded: Value = serde_json::from_str(RECORDED_STATUS).unwrap();
        let (status, again) = round_trip::<Status>(&recorded);
        // Same names, nesting, nulls, and integers against floats (`Value` equality tells
        // `0` from `0.0`).
        assert_eq!(again, recorded);
        assert!(matches!(status.plugins[0], Plugin::Loaded(_)));
        assert!(matches!(status.plugins[2], Plugin::Refused(_)));
        assert_eq!(
            status.plugins[2].last_error().map(|(_, at)| at),
            Some(1796176477136)
        );
        assert!(matches!(
            status.deliveries,
            Deliveries::Counted { dead: 1, .. }
        ));
        let lag = &recorded["deliveries"]["by_plugin"][0]["lag_seconds"];
        assert!(lag.is_f64(), "{lag}");
        assert!(again["plugins"][0]["load_ms"].is_f64());
        assert!(again["uptime_secs"].is_u64());
    }

    #[test]
    fn an_unreadable_store_is_its_own_form_of_deliveries() {
        let recorded = json!({ "error": "unable to open database file" });
        let (deliveries, again) = round_trip::<Deliveries>(&recorded);
        assert_eq!(
            deliveries,
            Deliveries::Unreadable {
                error: "unable to open database file".into()
            }
        );
        assert_eq!(again, recorded);
    }

    #[test]
    fn a_loaded_plugin_whose_new_files_were_refused_keeps_its_details() {
        let mut recorded: Value = serde_json::from_str(RECORDED_STATUS).unwrap();
        let entry = &mut recorded["plugins"][1];
        entry["last_error"] = json!("manifest: unknown field `evnts`");
        entry["last_error_at_ms"] = json!(1796176479000_u64);
        let (plugin, again) = round_trip::<Plugin>(entry);
        assert_eq!(&again, entry);
        let Plugin::Loaded(p) = &plugin else {
            panic!("{plugin:?}")
        };
        assert_eq!(p.name, "noop");
        assert_eq!(
            plugin.last_error(),
            Some(("manifest: unknown field `evnts`", 1796176479000))
        );
    }

    /// What string keys let through silently: a field the reader expects and the answer lacks
    /// (renamed, removed) is an error, not a zero or a `?`.
    #[test]
    fn a_missing_field_is_an_error_and_an_added_one_is_ignored() {
        let recorded: Value = serde_json::from_str(RECORDED_STATUS).unwrap();
        for (path, key) in [
            ("/store", "queue_depth"),
            ("/events", "received"),
            ("/deliveries/by_plugin/0", "lag_seconds"),
            ("/plugins/0", "content_hash"),
            ("/plugins/2", "last_error"),
            ("", "ready"),
        ] {
            let mut broken = recorded.clone();
            broken
                .pointer_mut(path)
                .and_then(Value::as_object_mut)
                .unwrap()
                .remove(key);
            assert!(
                serde_json::from_value::<Status>(broken).is_err(),
                "{path}/{key} missing was accepted"
            );
        }

        let mut newer = recorded.clone();
        newer["store"]["a_field_from_a_newer_daemon"] = json!(1);
        newer["plugins"][2]["a_field_from_a_newer_daemon"] = json!(1);
        let status: Status = serde_json::from_value(newer).unwrap();
        assert!(matches!(status.plugins[2], Plugin::Refused(_)));
    }

    #[test]
    fn loaded_tells_the_two_plugin_forms_apart() {
        let refused_claiming_loaded = json!({
            "name": "x", "loaded": true, "last_error": "no", "last_error_at_ms": 1
        });
        assert!(serde_json::from_value::<Plugin>(refused_claiming_loaded).is_err());
        let refused = json!({
            "name": "x", "loaded": false, "last_error": "no", "last_error_at_ms": 1
        });
        assert!(matches!(
            serde_json::from_value::<Plugin>(refused),
            Ok(Plugin::Refused(_))
        ));
    }
}
