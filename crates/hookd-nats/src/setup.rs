//! Opening the store: the client's options, and the streams and buckets hookd relies on,
//! created if missing.

use std::time::Duration;

use async_nats::ConnectOptions;
use async_nats::jetstream::{self, Context, stream};
use hookd_storage::StorageError;
use tracing::{info, warn};

use crate::instances::INSTANCE_TTL;
use crate::metrics::NatsMetrics;
use crate::names::Names;
use crate::{NatsAuth, NatsConfig, failed};

/// How long a start waits for JetStream to hold (or create) hookd's streams and buckets.
pub(crate) const SETUP_PATIENCE: Duration = Duration::from_secs(120);

/// The client's options: the login, timeouts, reconnecting forever once connected, and the
/// connection events logged and counted.
pub(crate) fn connect_options(
    config: &NatsConfig,
    metrics: &NatsMetrics,
) -> Result<ConnectOptions, StorageError> {
    let options = match &config.auth {
        NatsAuth::None => ConnectOptions::new(),
        NatsAuth::Credentials(creds) => ConnectOptions::new()
            .credentials(creds)
            .map_err(|e| failed("the NATS credentials cannot be read", e))?,
        NatsAuth::UserPassword { user, password } => {
            ConnectOptions::new().user_and_password(user.clone(), password.clone())
        }
        NatsAuth::Token(token) => ConnectOptions::new().token(token.clone()),
    };
    let gauge = metrics.connected.clone();
    Ok(options
        .name(&config.client_name)
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .ping_interval(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(move |event| {
            let gauge = gauge.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        gauge.set(1);
                        info!("connected to NATS");
                    }
                    async_nats::Event::Disconnected => {
                        gauge.set(0);
                        warn!("disconnected from NATS; ingest answers 503 until it is back");
                    }
                    other => info!(event = %other, "NATS connection"),
                }
            }
        }))
}

/// Creates (or finds) the streams and buckets, with the settings hookd relies on.
pub(crate) async fn setup(
    js: &Context,
    names: &Names,
    config: &NatsConfig,
) -> Result<
    (
        stream::Stream,
        stream::Stream,
        jetstream::kv::Store,
        jetstream::kv::Store,
        jetstream::kv::Store,
    ),
    StorageError,
> {
    let events = js
        .get_or_create_stream(stream::Config {
            name: names.events_stream(),
            description: Some("hookd: events, kept until every subscribed plugin is done".into()),
            subjects: vec![names.all_events(), names.replays()],
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            max_age: config.max_event_age,
            max_bytes: config
                .max_stream_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            discard: stream::DiscardPolicy::New,
            duplicate_window: config.duplicate_window,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(|e| failed("cannot create the events stream", e))?;
    let dead = js
        .get_or_create_stream(stream::Config {
            name: names.dead_stream(),
            description: Some("hookd: dead letters, with their events".into()),
            subjects: vec![names.all_dead()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            max_age: config.dead_letter_age,
            duplicate_window: config.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(|e| failed("cannot create the dead-letter stream", e))?;
    let dedup = kv_bucket(
        js,
        jetstream::kv::Config {
            bucket: names.dedup_bucket(),
            description: "hookd: event ids seen, for the dedup window".into(),
            history: 1,
            max_age: config.dedup_window,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            ..Default::default()
        },
        Reads::AnyReplica,
    )
    .await?;
    let deliveries = kv_bucket(
        js,
        jetstream::kv::Config {
            bucket: names.deliveries_bucket(),
            description: "hookd: attempt state of deliveries under way".into(),
            history: 1,
            // Every entry has its own TTL; this bounds anything left behind.
            max_age: config.max_event_age + Duration::from_secs(24 * 3600),
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            limit_markers: Some(Duration::from_secs(60)),
            ..Default::default()
        },
        Reads::OwnWrites,
    )
    .await?;
    let instances = kv_bucket(
        js,
        jetstream::kv::Config {
            bucket: names.instances_bucket(),
            description: "hookd: the instances sharing this store, by heartbeat".into(),
            history: 1,
            max_age: INSTANCE_TTL,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            ..Default::default()
        },
        Reads::OwnWrites,
    )
    .await?;
    Ok((events, dead, dedup, deliveries, instances))
}

/// Whether a bucket's reads must see the writes just made.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// From the stream's leader (through the JetStream API): attempt state, heartbeats.
    OwnWrites,
    /// Direct gets, which any replica answers without the JetStream API's queue: the dedup
    /// check, which matters only for ids older than the stream's own duplicate window, long
    /// replicated by then.
    AnyReplica,
}

/// A bucket of hookd's, created if missing, read as `reads` says.
async fn kv_bucket(
    js: &Context,
    config: jetstream::kv::Config,
    reads: Reads,
) -> Result<jetstream::kv::Store, StorageError> {
    let bucket = config.bucket.clone();
    if let Ok(store) = js.get_key_value(&bucket).await {
        return Ok(store);
    }
    js.create_key_value(config)
        .await
        .map_err(|e| failed(&format!("cannot create the `{bucket}` bucket"), e))?;
    let mut stream_config = js
        .get_stream(format!("KV_{bucket}"))
        .await
        .map_err(|e| failed(&format!("cannot open the `{bucket}` bucket"), e))?
        .cached_info()
        .config
        .clone();
    let direct = reads == Reads::AnyReplica;
    if stream_config.allow_direct != direct {
        stream_config.allow_direct = direct;
        js.update_stream(&stream_config)
            .await
            .map_err(|e| failed(&format!("cannot configure the `{bucket}` bucket"), e))?;
    }
    js.get_key_value(&bucket)
        .await
        .map_err(|e| failed(&format!("cannot open the `{bucket}` bucket"), e))
}
