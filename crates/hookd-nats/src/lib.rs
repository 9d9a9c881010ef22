//! hookd's clustered storage backend: the storage seam (`hookd_storage`) on NATS JetStream,
//! so that several hookd instances share one event log, one delivery queue per plugin and
//! the plugins' keys, and any of them may die without losing what was acknowledged.
//!
//! # On JetStream
//! - **Events** are messages of the `<prefix>-events` stream (Interest retention, so fan-out
//!   to several plugins works and a message goes once every plugin is done with it), on
//!   `<prefix>.events.<type segments>`. The event id is the `Nats-Msg-Id`, so the stream's
//!   duplicate window answers resends; the `<prefix>-dedup` bucket remembers ids for the rest
//!   of `dedup_window_secs`.
//! - **Deliveries**: one durable pull consumer per plugin, `hookd-<plugin>`, shared by every
//!   instance, its filter derived from the plugin's patterns. A message fetched is leased to
//!   this instance (kept with `Progress`) until its outcome: ack (done), nak with a delay
//!   (retry), term plus a copy in the `<prefix>-dead` stream (dead letter). An instance that
//!   dies leaves its leases to expire after `ack_wait`, and another instance gets them.
//! - **Attempt state** the stream cannot carry (attempts recorded, begun and by whom, when a
//!   retry is due) is in the `<prefix>-deliveries` bucket, written with compare-and-set from
//!   the first claim on, and expiring on its own once it cannot matter.
//! - **Plugin keys**: one bucket per plugin, `<prefix>-kv-<plugin>`, whose stream limits the
//!   number of keys (the quota, checked by the server in the same step as the write).

#![forbid(unsafe_code)]

mod consumers;
mod dead;
mod instances;
mod kv;
mod metrics;
mod names;
mod queue;
mod setup;
mod state;

use std::collections::HashMap;
use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, Context, context::PublishErrorKind, stream};
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use hookd_storage::{
    Appending, AttemptRecord, BackendError, Claim, DeadLetter, DeliveryQueue, DueDelivery,
    EventLog, Ingested, KvOp, KvStore, KvWriteResult, LogHealth, NewEvent, PluginDeliveries,
    ReplaySelector, StorageError,
};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tracing::info;

use crate::consumers::Consumers;
use crate::metrics::NatsMetrics;
use crate::names::{Names, escape_header};
use crate::queue::Held;

pub use crate::instances::{HEARTBEAT_EVERY, INSTANCE_TTL, InstanceRecord, ServedPlugin};
pub use crate::names::is_token as is_valid_prefix;

/// How hookd authenticates to NATS.
#[derive(Clone, Default)]
pub enum NatsAuth {
    #[default]
    None,
    /// The contents of a `.creds` file (a user JWT and its NKey seed).
    Credentials(String),
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a secret in a log line.
        f.write_str(match self {
            NatsAuth::None => "none",
            NatsAuth::Credentials(_) => "credentials",
            NatsAuth::UserPassword { .. } => "user and password",
            NatsAuth::Token(_) => "token",
        })
    }
}

/// `[store.nats]`, resolved.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:port` URLs of the cluster's servers (any subset: the client learns the rest).
    pub servers: Vec<String>,
    pub auth: NatsAuth,
    /// Names every stream, bucket and subject: `[a-z0-9_-]`.
    pub prefix: String,
    /// Copies of every stream and bucket (1, 3 or 5).
    pub replicas: usize,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How long JetStream may take to acknowledge a publish or answer a request: past it,
    /// ingest answers 503.
    pub request_timeout: Duration,
    /// How long a fetched delivery stays leased to an instance that stopped renewing it.
    pub ack_wait: Duration,
    /// The stream's own duplicate window.
    pub duplicate_window: Duration,
    /// `[store] dedup_window_secs`: how long an id stays a duplicate.
    pub dedup_window: Duration,
    /// How long an event may wait for its plugins before the stream drops it.
    pub max_event_age: Duration,
    /// The stream's size limit; past it, ingest answers 503 (nothing is dropped).
    pub max_stream_bytes: Option<u64>,
    /// How long dead letters are kept.
    pub dead_letter_age: Duration,
    /// Deliveries one instance holds per plugin at most.
    pub prefetch: usize,
    /// Appends admitted and not yet acknowledged, at most (count, bytes).
    pub queue_capacity: usize,
    pub queue_max_bytes: usize,
    /// This instance's name in the server's connection list.
    pub client_name: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            servers: vec!["nats://127.0.0.1:4222".into()],
            auth: NatsAuth::None,
            prefix: "hookd".into(),
            replicas: 1,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            ack_wait: Duration::from_secs(30),
            duplicate_window: Duration::from_secs(600),
            dedup_window: Duration::from_secs(7 * 24 * 3600),
            max_event_age: Duration::from_secs(14 * 24 * 3600),
            max_stream_bytes: None,
            dead_letter_age: Duration::from_secs(30 * 24 * 3600),
            prefetch: 256,
            queue_capacity: 65_536,
            queue_max_bytes: 256 << 20,
            client_name: "hookd".into(),
        }
    }
}

/// Headers hookd writes on its messages.
pub(crate) mod header {
    pub const ID: &str = "Hookd-Id";
    pub const TYPE: &str = "Hookd-Type";
    pub const RECEIVED_MS: &str = "Hookd-Received-Ms";
    pub const PLUGINS: &str = "Hookd-Plugins";
    pub const PLUGIN: &str = "Hookd-Plugin";
    /// A replay's (and a dead letter's) original event position.
    pub const SEQ: &str = "Hookd-Seq";
    /// A replay's generation: the dead letter's position.
    pub const GEN: &str = "Hookd-Gen";
    pub const DUE_MS: &str = "Hookd-Due-Ms";
    pub const ATTEMPTS: &str = "Hookd-Attempts";
    pub const ERROR: &str = "Hookd-Error";
    pub const DIED_MS: &str = "Hookd-Died-Ms";
}

/// What went wrong, for a [`StorageError::Failed`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NatsError(pub String);

pub(crate) fn failed(context: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Failed(BackendError::new(
        Arc::new(NatsError(format!("{context}: {e}"))),
        false,
    ))
}

/// `work`, or an error once it has taken longer than a few request timeouts: a client cut off
/// from NATS holds what it sends in a buffer, and a caller (the dispatcher, a plugin's key
/// write) must get an answer it can retry rather than wait for the connection.
pub(crate) async fn bounded<T>(
    inner: &Inner,
    what: &str,
    work: impl std::future::Future<Output = Result<T, StorageError>>,
) -> Result<T, StorageError> {
    match tokio::time::timeout(inner.config.request_timeout * 3, work).await {
        Ok(result) => result,
        Err(_) => Err(failed(what, "JetStream did not answer in time")),
    }
}

/// JetStream's own error code inside an async-nats error, if it carries one.
pub(crate) fn jetstream_code(e: &(dyn Error + 'static)) -> Option<u64> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(js) = err.downcast_ref::<jetstream::Error>() {
            return Some(js.error_code().0);
        }
        cur = err.source();
    }
    None
}

/// "maximum messages exceeded" and the like: a stream at its limits.
pub(crate) const STREAM_STORE_FAILED: u64 = 10077;
/// The account or server is out of JetStream storage.
const INSUFFICIENT_RESOURCES: u64 = 10023;
const STORAGE_RESOURCES_EXCEEDED: u64 = 10047;

/// The JetStream storage backend. Cheap to clone; every clone is the same connection.
#[derive(Clone)]
pub struct NatsBackend {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub client: Client,
    pub js: Context,
    pub names: Names,
    pub config: NatsConfig,
    pub events: stream::Stream,
    pub dead: stream::Stream,
    pub dedup: jetstream::kv::Store,
    pub deliveries: jetstream::kv::Store,
    pub instances: jetstream::kv::Store,
    pub consumers: Consumers,
    pub held: Mutex<HashMap<(String, i64), Held>>,
    pub kv: kv::Buckets,
    pub metrics: NatsMetrics,
    closed: AtomicBool,
    queued: AtomicUsize,
    queued_bytes: AtomicUsize,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The dispatcher's wake-up, called after an append that made deliveries.
    arrival: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NatsBackend {
    /// Connects to the cluster and makes sure hookd's streams and buckets exist. Waits for the
    /// first connection as long as it takes, calling `waiting` now and then with why it waits
    /// (for systemd's status line); a refused login or a cluster that cannot hold the streams
    /// is an error.
    pub async fn connect(
        config: NatsConfig,
        registry: &mut Registry,
        waiting: impl Fn(&str),
    ) -> Result<NatsBackend, StorageError> {
        if !names::is_token(&config.prefix) {
            return Err(failed(
                "store.nats.prefix",
                format!(
                    "`{}` is not valid: use lowercase letters, digits, `_` and `-`",
                    config.prefix
                ),
            ));
        }
        let metrics = NatsMetrics::register(registry);
        let servers = config.servers.join(", ");
        let mut attempt = 0u32;
        let client = loop {
            match setup::connect_options(&config, &metrics)?
                .connect(config.servers.clone())
                .await
            {
                Ok(client) => break client,
                // Waiting cannot fix a refused login: say so and stop.
                Err(e)
                    if matches!(
                        e.kind(),
                        async_nats::ConnectErrorKind::AuthorizationViolation
                            | async_nats::ConnectErrorKind::Authentication
                    ) =>
                {
                    return Err(failed(
                        &format!(
                            "NATS at {servers} refused hookd's login ({:?}; see [store.nats] user, password, token or credentials)",
                            config.auth
                        ),
                        e,
                    ));
                }
                Err(e) => {
                    attempt += 1;
                    if attempt == 1 || attempt.is_multiple_of(10) {
                        waiting(&format!("waiting for NATS at {servers}: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        metrics.connected.set(1);
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client.clone());
        // A cluster still electing its JetStream leader answers with errors for a moment.
        let mut attempt = 0u32;
        loop {
            match js.query_account().await {
                Ok(_) => break,
                Err(e) => {
                    attempt += 1;
                    if attempt.is_multiple_of(10) {
                        waiting(&format!("waiting for JetStream at {servers}: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let max_payload = client.server_info().max_payload;
        let names = Names::new(&config.prefix);
        // A cluster that just restarted answers the account before it has recovered its
        // streams: keep trying for a while (systemd restarts hookd after that).
        let recovering = Instant::now();
        let (events, dead, dedup, deliveries, instances) = loop {
            match setup::setup(&js, &names, &config).await {
                Ok(found) => break found,
                Err(e) if recovering.elapsed() < setup::SETUP_PATIENCE => {
                    waiting(&format!(
                        "waiting for JetStream's streams at {servers}: {e}"
                    ));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        };
        info!(
            servers = %servers,
            stream = %names.events_stream(),
            replicas = config.replicas,
            max_payload,
            "JetStream store open"
        );
        let inner = Arc::new(Inner {
            client,
            js,
            names,
            config,
            events,
            dead,
            dedup,
            deliveries,
            instances,
            consumers: Consumers::default(),
            held: Mutex::default(),
            kv: kv::Buckets::default(),
            metrics,
            closed: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            tasks: Mutex::default(),
            arrival: Mutex::default(),
        });
        let leases = tokio::spawn(queue::keep_leases(Arc::downgrade(&inner)));
        lock(&inner.tasks).push(leases);
        Ok(NatsBackend { inner })
    }

    /// The server's largest message: a body larger than this cannot be stored.
    pub fn max_payload(&self) -> usize {
        self.inner.client.server_info().max_payload
    }

    /// Ends this backend the way a killed process would, for tests: its leases are left to
    /// expire (no nak), nothing in flight is finished, and the connection is closed.
    #[doc(hidden)]
    pub async fn abandon(&self) -> bool {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        for task in lock(&inner.tasks).drain(..) {
            task.abort();
        }
        let held = {
            let mut held = lock(&inner.held);
            let n = held.len();
            held.clear();
            n
        };
        inner.consumers.clear();
        inner.kv.clear();
        let _ = tokio::time::timeout(Duration::from_secs(2), inner.client.drain()).await;
        held > 0
    }
}

/// The dedup bucket's key for an event id.
fn dedup_key(id: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(id.as_bytes()))
}

impl Inner {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Stores one event: its plugins' consumers first (an Interest stream keeps only what a
    /// consumer wants), then the dedup check, the publish, and the id remembered.
    async fn append(self: Arc<Self>, event: NewEvent) -> Result<Ingested, StorageError> {
        let subject = self.names.event_subject(&event.event_type);
        let key = dedup_key(&event.id);
        let consumers = futures_util::future::try_join_all(
            event
                .deliveries
                .iter()
                .map(|p| self.consumers.ensure(&self, p, None, Some(&subject))),
        );
        let (_, seen) = tokio::try_join!(consumers, async {
            self.dedup
                .get(&key)
                .await
                .map_err(|e| failed("cannot read the dedup bucket", e))
        })?;
        if let Some(seq) = seen.and_then(|v| std::str::from_utf8(&v).ok()?.parse::<i64>().ok()) {
            return Ok(Ingested {
                seq,
                duplicate: true,
            });
        }
        let mut headers = HeaderMap::new();
        let id = escape_header(&event.id);
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        headers.insert(header::ID, id.as_str());
        headers.insert(header::TYPE, escape_header(&event.event_type).as_str());
        headers.insert(
            header::RECEIVED_MS,
            event.received_at_ms.to_string().as_str(),
        );
        let plugins = event
            .deliveries
            .iter()
            .map(|p| &**p)
            .collect::<Vec<_>>()
            .join(",");
        headers.insert(header::PLUGINS, plugins.as_str());
        let makes_deliveries = !event.deliveries.is_empty();
        let started = Instant::now();
        let published = async {
            self.js
                .publish_with_headers(subject, headers, Bytes::from(event.payload))
                .await?
                .await
        }
        .await;
        let ack = match published {
            Ok(ack) => ack,
            Err(e) => {
                self.metrics.publish_errors.inc();
                let disk_full = e.kind() == PublishErrorKind::Other
                    && matches!(
                        jetstream_code(&e),
                        Some(
                            STREAM_STORE_FAILED
                                | INSUFFICIENT_RESOURCES
                                | STORAGE_RESOURCES_EXCEEDED
                        )
                    );
                return Err(StorageError::Failed(BackendError::new(
                    Arc::new(NatsError(format!("JetStream did not store the event: {e}"))),
                    disk_full,
                )));
            }
        };
        self.metrics
            .publish_seconds
            .observe(started.elapsed().as_secs_f64());
        let seq = i64::try_from(ack.sequence).unwrap_or(i64::MAX);
        // Also for a duplicate: it repairs an earlier run that died between the two steps.
        self.dedup
            .put(&key, Bytes::from(seq.to_string()))
            .await
            .map_err(|e| failed("cannot remember the event id", e))?;
        if !ack.duplicate
            && makes_deliveries
            && let Some(wake) = &*lock(&self.arrival)
        {
            wake();
        }
        Ok(Ingested {
            seq,
            duplicate: ack.duplicate,
        })
    }
}

/// Gives back an admitted append's share of the in-memory bound when it ends.
struct Admitted {
    inner: Arc<Inner>,
    bytes: usize,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.inner.queued.fetch_sub(1, Ordering::AcqRel);
        self.inner
            .queued_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[async_trait::async_trait]
impl EventLog for NatsBackend {
    fn append(&self, event: NewEvent) -> Result<Appending, StorageError> {
        let inner = &self.inner;
        if inner.is_closed() {
            return Err(StorageError::Closed);
        }
        if !inner.connected() {
            return Err(failed("NATS", "not connected"));
        }
        let bytes = event.queued_bytes();
        let queued = inner.queued.fetch_add(1, Ordering::AcqRel);
        let queued_bytes = inner.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        let admitted = Admitted {
            inner: inner.clone(),
            bytes,
        };
        if queued >= inner.config.queue_capacity
            || queued_bytes.saturating_add(bytes) > inner.config.queue_max_bytes
        {
            return Err(StorageError::QueueFull);
        }
        let task = tokio::spawn(async move {
            let inner = admitted.inner.clone();
            let result = bounded(
                &inner,
                "cannot store the event",
                inner.clone().append(event),
            )
            .await;
            drop(admitted);
            result
        });
        Ok(Box::pin(async move {
            task.await
                .unwrap_or_else(|e| Err(failed("the append task ended", e)))
        }))
    }

    fn health(&self) -> LogHealth {
        let inner = &self.inner;
        LogHealth {
            accepting: !inner.is_closed() && inner.connected(),
            queued: inner.queued.load(Ordering::Acquire),
            queued_bytes: inner.queued_bytes.load(Ordering::Acquire),
        }
    }

    /// Whether the connected server answers a JetStream request within `within`. Without a
    /// connection there is nothing to probe: the client reconnects by itself (ingest answers
    /// 503 meanwhile), and restarting hookd would not bring NATS back, so that is not stuck.
    async fn ping(&self, within: Duration) -> bool {
        let inner = &self.inner;
        if !inner.connected() {
            return true;
        }
        tokio::time::timeout(within, inner.events.get_info())
            .await
            .is_ok_and(|info| info.is_ok())
    }

    async fn close(&self) -> Result<(), StorageError> {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let deadline = Instant::now() + inner.config.request_timeout * 2;
        while inner.queued.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        queue::release_held(inner, |_| true).await;
        for task in lock(&inner.tasks).drain(..) {
            task.abort();
        }
        inner
            .client
            .drain()
            .await
            .map_err(|e| failed("cannot close the NATS connection", e))
    }
}

#[async_trait::async_trait]
impl DeliveryQueue for NatsBackend {
    /// Every instance reads the same consumers: deliveries come only through `due`.
    fn exclusive(&self) -> bool {
        false
    }

    fn on_arrival(&self, wake: Box<dyn Fn() + Send + Sync>) {
        *lock(&self.inner.arrival) = Some(wake);
    }

    async fn subscribe(&self, plugin: &str, patterns: &[String]) -> Result<(), StorageError> {
        let inner = &self.inner;
        inner
            .consumers
            .ensure(inner, plugin, Some(patterns), None)
            .await
            .map(|_| ())
    }

    async fn due(
        &self,
        now_ms: i64,
        plugins: Vec<String>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<DueDelivery>, StorageError> {
        let inner = &self.inner;
        bounded(
            inner,
            "cannot read due deliveries",
            queue::due(inner, now_ms, plugins, limit, max_bytes),
        )
        .await
    }

    async fn claim(&self, claims: Vec<Claim>) -> Result<(), StorageError> {
        let inner = &self.inner;
        bounded(
            inner,
            "cannot claim deliveries",
            queue::claim(inner, claims),
        )
        .await
    }

    async fn record(&self, records: Vec<AttemptRecord>) -> Result<(), StorageError> {
        let inner = &self.inner;
        bounded(
            inner,
            "cannot record deliveries",
            queue::record(inner, records),
        )
        .await
    }

    async fn open_deliveries(&self) -> Result<Vec<PluginDeliveries>, StorageError> {
        let inner = &self.inner;
        bounded(
            inner,
            "cannot count deliveries",
            queue::open_deliveries(inner),
        )
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StorageError> {
        dead::dead_letters(&self.inner, limit).await
    }

    async fn replay(
        &self,
        selector: ReplaySelector,
        plugin: Option<String>,
        now_ms: i64,
    ) -> Result<usize, StorageError> {
        dead::replay(&self.inner, selector, plugin, now_ms).await
    }
}

#[async_trait::async_trait]
impl KvStore for NatsBackend {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let inner = &self.inner;
        bounded(
            inner,
            "cannot read a plugin's key",
            kv::get(inner, plugin, key),
        )
        .await
    }

    async fn write(&self, op: KvOp) -> Result<KvWriteResult, StorageError> {
        let inner = &self.inner;
        bounded(inner, "cannot write a plugin's key", kv::write(inner, op)).await
    }
}
