//! The daemon: the store, the plugin host and catalog, the listeners, the dispatcher and the
//! reload loop, started together and stopped in order. [`run`] is `hookd serve`; [`Daemon`]
//! is the same daemon started from code (the in-process tests), on runtimes the caller owns.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use hookd_config::{Config, NatsCredentials, NatsStoreConfig, StoreBackend};
use hookd_core::Verifier;
use hookd_host::{CodeCache, HostSettings, PluginHost};
use hookd_server::{AdminState, IngestMetrics, IngestState, ListenerSettings};
use hookd_storage::Backend;
use hookd_store::Store;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::dispatch::{BacklogBytes, DeliveryMetrics, Dispatcher, Heartbeat, Routes};
use crate::kv::BackendKv;
use crate::logging::LogFilter;
use crate::notify;
use crate::plugins::PluginRegistry;
use crate::reload::{PluginsInfo, ReloadMetrics, ReloadPhase, Reloader};

/// The compiled-code cache, inside the store's folder.
const CODE_CACHE_DIR: &str = "code-cache";
/// How often `systemctl status` gets a new status line.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// `hookd serve`: builds the runtimes, starts the daemon, serves until SIGTERM or SIGINT, and
/// stops it cleanly. Logging must be set up by the caller; `log_filter` lets a configuration
/// reload change it.
pub fn run(
    config_path: PathBuf,
    config: Config,
    log_filter: Option<LogFilter>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hookd-worker")
        .build()
        .context("cannot start the async runtime")?;
    let plugin_runtime = crate::isolation::plugin_runtime(config.plugins.priority)
        .context("cannot start the plugin runtime")?;
    let plugins = plugin_runtime.handle().clone();
    let result = runtime.block_on(async move {
        let daemon = Daemon::start(config_path, config, log_filter, plugins).await?;
        // Also on stdout, whatever the log filter, so scripts can find a port picked by the OS.
        println!("ingest listening on {}", daemon.ingest_addr());
        if let Some(admin) = daemon.admin_addr() {
            println!("admin listening on {admin}");
        }
        notify::ready(&format!("ready: {} plugins loaded", daemon.plugin_count()));
        let signal = wait_for_shutdown_signal().await?;
        info!(
            signal,
            "shutting down: no longer accepting, finishing in-flight requests"
        );
        notify::stopping();
        daemon.shutdown().await
    });
    // Deliveries still running were given their grace by the dispatcher; their claims are
    // taken back.
    plugin_runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

/// A running daemon. Dropping it without [`Daemon::shutdown`] leaves its tasks running until
/// their runtime stops.
pub struct Daemon {
    ingest_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    ready: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    backend: Arc<dyn Backend>,
    registry: Arc<PluginRegistry>,
    tasks: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// Opens the store, loads the plugins and binds the listeners (`[server] listen` and
    /// `[admin] listen`, port 0 for one the system picks); returns once it answers requests.
    /// Listeners run on the current runtime, deliveries and reloads on `plugins`
    /// (see [`crate::isolation::plugin_runtime`]).
    pub async fn start(
        config_path: PathBuf,
        config: Config,
        log_filter: Option<LogFilter>,
        plugins: tokio::runtime::Handle,
    ) -> anyhow::Result<Daemon> {
        let started = std::time::Instant::now();
        let hup = crate::reload::watch_sighup();
        let mut registry = Registry::default();
        let (backend, nats) = open_backend(&config, &mut registry).await?;

        let host = Arc::new(
            PluginHost::new(
                HostSettings {
                    pooling: config.plugins.pooling,
                    max_instances: config.plugins.max_instances,
                    max_memory_bytes: config.plugins.max_memory_bytes,
                },
                Arc::new(BackendKv::new(backend.clone())),
            )
            .context("cannot start the plugin host")?,
        );
        let cache = match CodeCache::open(&config.store.dir.join(CODE_CACHE_DIR), host.engine()) {
            Ok(cache) => Some(cache),
            // Its entries are run as native code: one someone else can write stops the start.
            Err(e) if e.is_insecure() => return Err(e.into()),
            Err(e) => {
                warn!(error = %e, "no compiled-code cache: every start compiles every plugin");
                None
            }
        };
        let plugin_registry = Arc::new(PluginRegistry::default());
        let member = nats.map(|nats| {
            Arc::new(crate::cluster::ClusterMember::new(
                nats,
                plugin_registry.clone(),
                hostname().unwrap_or_default(),
            ))
        });
        let plugins_info = Arc::new(PluginsInfo::new(
            plugin_registry.clone(),
            backend.clone(),
            member.clone(),
        ));
        let (hints_tx, hints_rx) = tokio::sync::mpsc::channel(65_536);
        let backlog_bytes = Arc::new(BacklogBytes::default());
        let delivery_metrics = DeliveryMetrics::register(&mut registry);
        let reload_metrics = ReloadMetrics::register(&mut registry);

        let ingest_metrics = IngestMetrics::register(&mut registry);
        let verifier = Verifier::new(&config.secrets).context("no webhook secret is configured")?;
        let ingest = Arc::new(IngestState {
            limits: ArcSwap::from_pointee(crate::reload::ingest_limits(&config)),
            verifier: ArcSwap::from_pointee(verifier),
            log: backend.clone(),
            subscriptions: Arc::new(Routes {
                registry: plugin_registry.clone(),
                hinting: backend.exclusive(),
                hints: hints_tx,
                backlog_bytes: backlog_bytes.clone(),
            }),
            metrics: ingest_metrics.clone(),
            inflight_bodies: Default::default(),
        });

        let reloader = Reloader {
            config_path,
            config: config.clone(),
            host: host.clone(),
            cache: cache.clone(),
            registry: plugin_registry.clone(),
            info: plugins_info.clone(),
            ingest: ingest.clone(),
            log_filter,
            metrics: reload_metrics,
            queue: backend.clone(),
        };
        // Watch first, then read: a plugin landing while hookd starts is not missed.
        let watched = crate::reload::Watched::start(&config.plugins.dir);
        reloader.load_plugins().await;
        if let Some(cache) = &cache {
            let in_use = plugin_registry
                .snapshot()
                .values()
                .map(|p| p.content_hash.clone())
                .collect();
            let removed = cache.prune(&in_use);
            if removed > 0 {
                info!(removed, "old compiled-code cache entries removed");
            }
        }

        let ingest_listener = bind(config.server.listen, "ingest").await?;
        let admin_listener = match config.admin.listen {
            Some(addr) => Some(bind(addr, "admin").await?),
            None => None,
        };
        let ingest_addr = ingest_listener.local_addr().context("no local address")?;
        let admin_addr = match &admin_listener {
            Some(l) => Some(l.local_addr().context("no local address")?),
            None => None,
        };

        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let ready = Arc::new(AtomicBool::new(false));
        let registry = Arc::new(registry);

        let ingest_task = tokio::spawn(hookd_server::serve(
            ingest_listener,
            hookd_server::ingest_routes(ingest),
            ListenerSettings {
                header_read_timeout: config.server.header_read_timeout,
                max_connections: config.server.max_connections,
                max_connections_per_client: config.server.max_connections_per_client,
                shutdown_grace: SHUTDOWN_GRACE,
                metrics: Some(ingest_metrics.clone()),
            },
            stopped(stop_rx.clone()),
        ));
        let admin_task = admin_listener.map(|listener| {
            let state = Arc::new(AdminState {
                registry: registry.clone(),
                log: backend.clone(),
                ready: ready.clone(),
                info: plugins_info.clone(),
                ingest: ingest_metrics.clone(),
                started,
            });
            tokio::spawn(hookd_server::serve(
                listener,
                hookd_server::admin_routes(state),
                ListenerSettings {
                    header_read_timeout: Duration::from_secs(5),
                    max_connections: 64,
                    max_connections_per_client: 64,
                    shutdown_grace: Duration::from_secs(1),
                    metrics: None,
                },
                stopped(stop_rx.clone()),
            ))
        });

        if let Some(member) = member {
            tokio::spawn(member.heartbeat(stop_rx.clone()));
        }
        let heartbeat = Arc::new(Heartbeat::default());
        let dispatcher = Dispatcher {
            queue: backend.clone(),
            host: host.clone(),
            registry: plugin_registry.clone(),
            hints: hints_rx,
            metrics: delivery_metrics,
            // More deliveries in flight than instances: each waits for two commits (its claim,
            // then its outcome) besides running, and the host's instance semaphore bounds what
            // runs at once. The payloads they hold stay bounded (in flight x max body).
            max_in_flight: (config.plugins.max_instances as usize * 4).max(64),
            heartbeat: heartbeat.clone(),
            backlog_bytes,
            run_id: rand::random(),
        };
        // Ingest first: deliveries (and the compiling of reloaded plugins) run on their own,
        // lower-priority threads, never on the listeners' (see `isolation`).
        let dispatch_task = plugins.spawn(dispatcher.run(stop_rx.clone(), SHUTDOWN_GRACE));
        let reload_task = plugins.spawn(crate::reload::run(
            reloader,
            watched,
            hup,
            stop_rx.clone(),
            |phase| match phase {
                ReloadPhase::Started => notify::reloading(),
                ReloadPhase::Finished { applied: true } => {
                    notify::ready("ready: configuration reloaded")
                }
                ReloadPhase::Finished { applied: false } => notify::ready(
                    "ready: configuration reload refused, the running one is kept (see the journal)",
                ),
            },
        ));
        tokio::spawn(notify::watchdog(
            notify::Liveness {
                log: backend.clone(),
                dispatcher: heartbeat,
            },
            stop_rx.clone(),
        ));
        let received = ingest_metrics.events_received.clone();
        let (status_log, status_registry) = (backend.clone(), plugin_registry.clone());
        let mut received_before = received.get();
        tokio::spawn(notify::status_loop(
            STATUS_EVERY,
            move |elapsed| {
                let now = received.get();
                let rate = (now - received_before) as f64 / elapsed.as_secs_f64().max(0.001);
                received_before = now;
                format!(
                    "ready: {rate:.1} events/s, {} waiting for the disk, {} plugins loaded",
                    status_log.health().queued,
                    status_registry.snapshot().len()
                )
            },
            stop_rx.clone(),
        ));

        ready.store(true, Ordering::Release);
        info!(version = env!("CARGO_PKG_VERSION"), "hookd ready");
        let mut tasks = vec![ingest_task, dispatch_task, reload_task];
        tasks.extend(admin_task);
        Ok(Daemon {
            ingest_addr,
            admin_addr,
            ready,
            stop: stop_tx,
            backend,
            registry: plugin_registry,
            tasks,
        })
    }

    /// Where the ingest listener listens.
    pub fn ingest_addr(&self) -> SocketAddr {
        self.ingest_addr
    }

    /// Where the admin listener listens, if it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// How many plugins are loaded now.
    pub fn plugin_count(&self) -> usize {
        self.registry.snapshot().len()
    }

    /// Stops accepting, finishes in-flight requests and deliveries (each within its grace),
    /// takes back unfinished claims and closes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.ready.store(false, Ordering::Release);
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.backend
            .close()
            .await
            .context("cannot close the store cleanly")?;
        info!("store closed; bye");
        Ok(())
    }
}

/// The storage backend the configuration names: the SQLite store in `[store] dir`, or the
/// JetStream cluster of `[store.nats]` (waiting for it as long as it takes, with systemd's
/// status line saying so: hookd is not ready without its store).
async fn open_backend(
    config: &Config,
    registry: &mut Registry,
) -> anyhow::Result<(Arc<dyn Backend>, Option<hookd_nats::NatsBackend>)> {
    if let StoreBackend::Nats(nats) = &config.store.backend {
        let backend = connect_nats(nats, &config.store, registry, |why| {
            notify::status(why);
            info!("{why}");
        })
        .await?;
        // Headers and the envelope ride with the body in one message.
        let needed = config.server.max_body_bytes + 16 * 1024;
        if backend.max_payload() < needed {
            anyhow::bail!(
                "the NATS servers take messages of at most {} bytes, and `[server] max_body_bytes` \
                 needs {needed}: raise `max_payload` in the nats-server config (8MB is what \
                 docs/cluster.md uses) or lower `max_body_bytes`",
                backend.max_payload()
            );
        }
        return Ok((Arc::new(backend.clone()), Some(backend)));
    }
    let store = Store::open(
        hookd_store::StoreConfig {
            dir: config.store.dir.clone(),
            dedup_window: config.store.dedup_window,
            queue_capacity: config.store.queue_capacity,
            max_batch: config.store.max_batch,
            queue_max_bytes: config.store.queue_max_bytes,
        },
        registry,
    )
    .with_context(|| format!("cannot open the store in `{}`", config.store.dir.display()))?;
    info!(dir = %config.store.dir.display(), "store open");
    Ok((Arc::new(store), None))
}

/// The kernel's queue of connections not yet accepted (capped by `net.core.somaxconn`). A
/// connection flood fills the default 128 in a moment, and a SYN dropped meanwhile costs any
/// other client a 1 s retransmission; the accept loop drains this many in a few milliseconds.
const ACCEPT_BACKLOG: u32 = 1024;

async fn bind(addr: SocketAddr, name: &'static str) -> anyhow::Result<TcpListener> {
    let listener = (|| {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As std and tokio do: a restart may bind while old connections are in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(ACCEPT_BACKLOG)
    })()
    .with_context(|| format!("cannot listen on {addr} ({name} listener)"))?;
    let bound = listener.local_addr().context("no local address")?;
    info!(listener = name, addr = %bound, "listening on {bound}");
    Ok(listener)
}

async fn wait_for_shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Connects to the JetStream cluster `[store.nats]` names; `waiting` hears why it waits.
pub async fn connect_nats(
    nats: &NatsStoreConfig,
    store: &hookd_config::StoreConfig,
    registry: &mut Registry,
    waiting: impl Fn(&str),
) -> anyhow::Result<hookd_nats::NatsBackend> {
    let auth = match &nats.auth {
        NatsCredentials::None => hookd_nats::NatsAuth::None,
        NatsCredentials::Creds(c) => hookd_nats::NatsAuth::Credentials(c.clone()),
        NatsCredentials::UserPassword { user, password } => hookd_nats::NatsAuth::UserPassword {
            user: user.clone(),
            password: password.clone(),
        },
        NatsCredentials::Token(t) => hookd_nats::NatsAuth::Token(t.clone()),
    };
    let config = hookd_nats::NatsConfig {
        servers: nats.servers.clone(),
        auth,
        prefix: nats.prefix.clone(),
        replicas: nats.replicas,
        connect_timeout: nats.connect_timeout,
        request_timeout: nats.request_timeout,
        ack_wait: nats.ack_wait,
        duplicate_window: nats.duplicate_window,
        dedup_window: store.dedup_window,
        max_event_age: nats.max_event_age,
        max_stream_bytes: (nats.max_stream_bytes > 0).then_some(nats.max_stream_bytes),
        dead_letter_age: nats.dead_letter_age,
        prefetch: nats.prefetch,
        queue_capacity: store.queue_capacity,
        queue_max_bytes: store.queue_max_bytes,
        client_name: format!(
            "hookd {} on {}",
            env!("CARGO_PKG_VERSION"),
            hostname().unwrap_or_else(|| "an unnamed host".into())
        ),
    };
    let servers = nats.servers.join(", ");
    hookd_nats::NatsBackend::connect(config, registry, waiting)
        .await
        .with_context(|| format!("cannot open the JetStream store at {servers}"))
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}
