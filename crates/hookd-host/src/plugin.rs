//! Loading plugins and running deliveries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use hookd_config::PluginSpec;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::WasiHttpCtx;

use crate::bindings::hookd::plugin::types;
use crate::bindings::{Plugin, PluginPre};
use crate::cache::CodeCache;
use crate::escape::plugin_text;
use crate::http_policy::HttpPolicy;
use crate::output::CappedOutput;
use crate::state::{HostState, KvStore, LogCollector, LogLine, MemoryLimiter};

/// How often the epoch ticks; deadlines are rounded up to it.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Memory of a pooled slot kept resident (reset in place) between instances.
const KEEP_RESIDENT_BYTES: usize = 4 << 20;
/// Decommits of pool slots done together, to make fewer calls into the kernel.
const DECOMMIT_BATCH: usize = 32;
/// Most bytes of stdout plus stderr kept per delivery.
const MAX_CAPTURED_OUTPUT: usize = 64 * 1024;
/// Most entries in a delivery's resource table (wasi:http fields, requests, bodies, streams,
/// pollables): wasmtime's default is a million. A plugin that keeps creating resources gets
/// an error from the call, and its delivery fails.
pub(crate) const MAX_HOST_RESOURCES: usize = 1024;
/// Most bytes one wasi:http `fields` resource may hold (wasmtime's default: 128 KiB). With
/// [`MAX_HOST_RESOURCES`], this bounds the header data a delivery can make the host hold.
pub(crate) const MAX_FIELDS_BYTES: usize = 16 * 1024;
/// What one running instance may make the host hold beyond its linear memories, at most:
/// header fields (resources x bytes per fields), captured output and log text, the outgoing
/// request and response buffers (a one-call request: its body and answer, 1 + 3 MiB).
/// Counted per instance by the memory budget (`hookd check`).
pub const HOST_BYTES_PER_INSTANCE: u64 = (MAX_HOST_RESOURCES * MAX_FIELDS_BYTES
    + MAX_CAPTURED_OUTPUT
    + 2 * 256 * 1024
    + 4 * 1024 * 1024) as u64;
/// Core instances, memories and tables one plugin (a component) may create. Rust components
/// use a handful; components built from Python or JavaScript runtimes a few dozen instances.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 64;
const MAX_MEMORIES_PER_COMPONENT: u32 = 8;
const MAX_TABLES_PER_COMPONENT: u32 = 64;
/// Elements in one table (function tables of interpreters compiled to WebAssembly are large).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Engine-wide settings.
#[derive(Debug, Clone, Copy)]
pub struct HostSettings {
    /// Use the pooling allocator (fast instantiation, memory reserved up front).
    pub pooling: bool,
    /// Plugin instances alive at once, across all plugins (pool size).
    pub max_instances: u32,
    /// Largest linear memory any plugin may have (pool slot size; each plugin's own
    /// `memory_mb` is enforced below it).
    pub max_memory_bytes: u64,
}

impl Default for HostSettings {
    fn default() -> Self {
        Self {
            pooling: true,
            max_instances: 128,
            max_memory_bytes: 256 << 20,
        }
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("`{path}` is not a valid WebAssembly component: {reason}")]
    Compile { path: String, reason: String },
    #[error("`{path}` does not fit the hookd:plugin@0.1 world: {reason}")]
    Link { path: String, reason: String },
}

/// A compiled, pre-instantiated plugin.
pub struct LoadedPlugin {
    pub spec: Arc<PluginSpec>,
    /// Hex SHA-256 of the component's bytes.
    pub content_hash: String,
    pub loaded_at: SystemTime,
    /// How the code was obtained, and how long it took.
    pub load_stats: LoadStats,
    component: Component,
    pre: PluginPre<HostState>,
    permits: Arc<Semaphore>,
    /// The plugin's outgoing HTTP connections, kept alive across its deliveries.
    pub(crate) outgoing: crate::outgoing::OutgoingPool,
}

impl LoadedPlugin {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The plugin's outgoing connections opened, and requests sent on a kept-alive one, since
    /// it was loaded.
    pub fn outgoing_stats(&self) -> crate::outgoing::OutgoingStats {
        self.outgoing.stats()
    }
}

/// How a plugin's native code was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    /// Compiling (or reading from the cache) and linking.
    pub took: Duration,
    /// The code came from the compiled-code cache.
    pub cache_hit: bool,
}

/// The event as a plugin receives it.
#[derive(Debug, Clone)]
pub struct DeliveryEvent {
    pub id: String,
    pub event_type: String,
    pub payload: String,
    pub received_at_ms: i64,
    pub attempt: u32,
}

/// What kind of failure ended an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Trap,
    Timeout,
    MemoryLimit,
    /// hookd itself could not run the plugin (instantiation, pool exhausted...).
    Host,
    /// The daemon died (killed, crashed, out of memory) while the attempt ran; found at the
    /// next start.
    Interrupted,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::MemoryLimit => "memory_limit",
            FailureKind::Host => "host_error",
            FailureKind::Interrupted => "interrupted",
        }
    }
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The plugin asked to be retried.
    Retry(String),
    /// The plugin gave up: dead-letter it.
    GiveUp(String),
    /// The attempt failed; retried per policy.
    Failed(FailureKind, String),
}

impl Outcome {
    /// Low-cardinality label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Retry(_) => "retry",
            Outcome::GiveUp(_) => "give_up",
            Outcome::Failed(kind, _) => kind.as_str(),
        }
    }
}

/// A finished attempt.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub outcome: Outcome,
    pub duration: Duration,
    pub logs: Vec<LogLine>,
    /// Log lines beyond the per-delivery cap, counted and dropped.
    pub logs_dropped: u64,
}

/// Hex SHA-256 of a component's bytes: how plugins and cache entries are identified.
pub fn content_hash(wasm: &[u8]) -> String {
    hex::encode(Sha256::digest(wasm))
}

/// The engine, the linker, and the epoch ticker shared by every plugin.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<HostState>,
    kv: Arc<dyn KvStore>,
    instances: Arc<Semaphore>,
    ticker_stop: Arc<AtomicBool>,
}

impl PluginHost {
    pub fn new(settings: HostSettings, kv: Arc<dyn KvStore>) -> Result<PluginHost, LoadError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        if settings.pooling {
            let n = settings.max_instances.max(1);
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(n)
                .total_core_instances(n * 8)
                .total_memories(n * 2)
                .total_tables(n * 4)
                .total_stacks(n)
                // Per plugin: explicit maxima instead of wasmtime's unbounded defaults, so one
                // component cannot take every slot of the pool.
                .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
                .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
                .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
                .max_memories_per_module(1)
                .max_tables_per_module(4)
                .table_elements(MAX_TABLE_ELEMENTS)
                .max_component_instance_size(1 << 20)
                .max_core_instance_size(1 << 20)
                .max_memory_size(usize::try_from(settings.max_memory_bytes).unwrap_or(usize::MAX))
                // Reset a finished instance's memory by rewriting the pages it dirtied (found
                // with PAGEMAP_SCAN where the kernel has it) instead of madvise: every madvise
                // is a TLB shootdown across cores, which dominated profiles under load.
                .pagemap_scan(wasmtime::Enabled::Auto)
                .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .table_keep_resident(64 * 1024)
                .async_stack_keep_resident(64 * 1024)
                .decommit_batch_size(DECOMMIT_BATCH);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        Plugin::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(e.to_string()))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (weak, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("hookd-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| LoadError::Engine(e.to_string()))?;

        Ok(PluginHost {
            engine,
            linker,
            kv,
            instances: Arc::new(Semaphore::new(settings.max_instances.max(1) as usize)),
            ticker_stop,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `wasm` and checks it against the world. CPU-heavy: call it off the async
    /// threads (`spawn_blocking`).
    pub fn load(&self, spec: PluginSpec, wasm: &[u8]) -> Result<LoadedPlugin, LoadError> {
        self.load_cached(spec, wasm, None)
    }

    /// Like [`PluginHost::load`], reading the native code from `cache` when it has it and
    /// storing it there after compiling.
    pub fn load_cached(
        &self,
        spec: PluginSpec,
        wasm: &[u8],
        cache: Option<&CodeCache>,
    ) -> Result<LoadedPlugin, LoadError> {
        let started = Instant::now();
        let content_hash = content_hash(wasm);
        if let Some(component) = cache.and_then(|c| c.get(&self.engine, &content_hash)) {
            return self.prepare(spec, component, content_hash, started, true);
        }
        let component = self.compile(&spec, wasm)?;
        if let Some(cache) = cache
            && let Err(e) = cache.put(&content_hash, &component)
        {
            tracing::warn!(plugin = %spec.name, cache = %cache.dir().display(), error = %e,
                "cannot write the compiled-code cache; the next start compiles this plugin again");
        }
        self.prepare(spec, component, content_hash, started, false)
    }

    /// The same code under a new manifest (subscriptions, limits, config): links again, does
    /// not compile.
    pub fn relink(
        &self,
        plugin: &LoadedPlugin,
        spec: PluginSpec,
    ) -> Result<LoadedPlugin, LoadError> {
        let started = Instant::now();
        self.prepare(
            spec,
            plugin.component.clone(),
            plugin.content_hash.clone(),
            started,
            plugin.load_stats.cache_hit,
        )
    }

    fn compile(&self, spec: &PluginSpec, wasm: &[u8]) -> Result<Component, LoadError> {
        let path = spec.wasm.display().to_string();
        let compile_error = |reason: String| LoadError::Compile {
            path: path.clone(),
            reason,
        };
        match wasm.get(..8) {
            Some([0, b'a', b's', b'm', 0x0d, 0, 0x01, 0]) => {}
            Some([0, b'a', b's', b'm', 0x01, 0, 0, 0]) => {
                return Err(compile_error(
                    "it is a core WebAssembly module, not a component; build the plugin with \
                     `cargo build --target wasm32-wasip2`"
                        .into(),
                ));
            }
            _ => {
                return Err(compile_error(
                    "it is not a WebAssembly file (no `\\0asm` component header); is the copy \
                     complete?"
                        .into(),
                ));
            }
        }
        Component::new(&self.engine, wasm).map_err(|e| compile_error(first_line(&format!("{e:#}"))))
    }

    fn prepare(
        &self,
        spec: PluginSpec,
        component: Component,
        content_hash: String,
        started: Instant,
        cache_hit: bool,
    ) -> Result<LoadedPlugin, LoadError> {
        let path = spec.wasm.display().to_string();
        let link = |e: wasmtime::Error| LoadError::Link {
            path: path.clone(),
            reason: explain_link_error(&format!("{e:#}")),
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(link)?;
        let pre = PluginPre::new(instance_pre).map_err(link)?;
        let concurrency = spec.limits.concurrency;
        let name = spec.name.clone();
        Ok(LoadedPlugin {
            spec: Arc::new(spec),
            content_hash,
            loaded_at: SystemTime::now(),
            load_stats: LoadStats {
                took: started.elapsed(),
                cache_hit,
            },
            component,
            pre,
            permits: Arc::new(Semaphore::new(concurrency)),
            outgoing: crate::outgoing::OutgoingPool::new(&name),
        })
    }

    /// Runs one delivery of `event` to `plugin`, in a fresh sandbox. Never fails: every
    /// problem is an [`Outcome`].
    pub async fn deliver(&self, plugin: &LoadedPlugin, event: &DeliveryEvent) -> Delivery {
        let started = Instant::now();
        // Both permits are released when this function returns.
        let _plugin_permit = plugin.permits.acquire().await;
        let _instance_permit = self.instances.acquire().await;

        let spec = plugin.spec.clone();
        let stdout = CappedOutput::new(MAX_CAPTURED_OUTPUT);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stdout.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_BYTES);
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HOST_RESOURCES);
        let state = HostState {
            wasi,
            http,
            table,
            policy: HttpPolicy::new(&spec, &plugin.outgoing),
            limiter: MemoryLimiter::new(
                usize::try_from(spec.limits.memory_bytes).unwrap_or(usize::MAX),
                MAX_TABLE_ELEMENTS * 4,
                MAX_CORE_INSTANCES_PER_COMPONENT as usize,
                MAX_MEMORIES_PER_COMPONENT as usize,
                MAX_TABLES_PER_COMPONENT as usize,
            ),
            spec: spec.clone(),
            kv: self.kv.clone(),
            event_id: event.id.clone(),
            logs: LogCollector::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Every epoch tick, a running plugin gives its thread back to the runtime (so other
        // deliveries, the dispatcher and host calls get their turn) and is stopped once its
        // deadline has passed.
        let deadline = Instant::now() + spec.limits.timeout;
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store.set_epoch_deadline(1);

        let input = types::Event {
            id: event.id.clone(),
            event_type: event.event_type.clone(),
            payload: event.payload.clone(),
            received_at_ms: u64::try_from(event.received_at_ms).unwrap_or(0),
            attempt: event.attempt,
        };
        let call = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            instance.call_handle(&mut store, &input).await
        };
        // The epoch stops CPU-bound code; this stops a plugin parked in a host call.
        let grace = spec.limits.timeout + EPOCH_TICK * 5;
        let result = tokio::time::timeout(grace, call).await;

        let outcome = match result {
            Err(_) => Outcome::Failed(
                FailureKind::Timeout,
                format!("no answer within {} ms", spec.limits.timeout.as_millis()),
            ),
            Ok(Ok(Ok(()))) => Outcome::Ok,
            Ok(Ok(Err(types::HandleError::Retry(m)))) => Outcome::Retry(plugin_text(&m)),
            Ok(Ok(Err(types::HandleError::GiveUp(m)))) => Outcome::GiveUp(plugin_text(&m)),
            Ok(Err(e)) => classify(&e, store.data().limiter.hit, &spec),
        };

        let state = store.data_mut();
        let captured = stdout.take();
        if !captured.bytes.is_empty() {
            for line in String::from_utf8_lossy(&captured.bytes).lines() {
                state.record_log(crate::bindings::hookd::plugin::log::Level::Info, line);
            }
        }
        if captured.dropped > 0 {
            state.logs.dropped += 1;
        }
        let logs = std::mem::take(&mut state.logs);
        if logs.dropped > 0 {
            tracing::warn!(
                plugin = %spec.name,
                event_id = %event.id,
                dropped = logs.dropped,
                "plugin output over the per-delivery cap was dropped"
            );
        }
        Delivery {
            outcome,
            duration: started.elapsed(),
            logs: logs.lines,
            logs_dropped: logs.dropped,
        }
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn classify(e: &wasmtime::Error, memory_limit_hit: bool, spec: &PluginSpec) -> Outcome {
    if memory_limit_hit {
        return Outcome::Failed(
            FailureKind::MemoryLimit,
            format!(
                "memory limit of {} MiB exceeded",
                spec.limits.memory_bytes >> 20
            ),
        );
    }
    if e.downcast_ref::<wasmtime::component::ResourceTableError>()
        .is_some_and(|t| matches!(t, wasmtime::component::ResourceTableError::Full))
        || format!("{e:#}").contains("resource table has no free keys")
    {
        return Outcome::Failed(
            FailureKind::MemoryLimit,
            format!("too many host resources held at once (at most {MAX_HOST_RESOURCES})"),
        );
    }
    if let Some(
        fields @ (wasmtime_wasi_http::FieldMapError::TotalSizeTooBig
        | wasmtime_wasi_http::FieldMapError::TooManyFields),
    ) = e.downcast_ref::<wasmtime_wasi_http::FieldMapError>()
    {
        return Outcome::Failed(
            FailureKind::MemoryLimit,
            format!("wasi:http fields over the host's cap of {MAX_FIELDS_BYTES} bytes: {fields}"),
        );
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Outcome::Failed(
            FailureKind::Timeout,
            format!(
                "deadline of {} ms exceeded",
                spec.limits.timeout.as_millis()
            ),
        ),
        Some(trap) => Outcome::Failed(FailureKind::Trap, format!("trap: {trap}")),
        None => {
            let text = format!("{e:#}");
            let kind = if text.contains("wasm trap") || text.contains("wasm backtrace") {
                FailureKind::Trap
            } else {
                FailureKind::Host
            };
            Outcome::Failed(kind, first_line(&text))
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect()
}

/// Turns wasmtime's link errors into advice for a plugin author.
fn explain_link_error(raw: &str) -> String {
    let imported = ["imports instance `", "import `"]
        .iter()
        .find_map(|marker| raw.split(marker).nth(1))
        .and_then(|rest| rest.split('`').next());
    if let Some(name) = imported {
        return format!(
            "it imports `{name}`, which hookd does not provide. A plugin may import the \
             hookd:plugin@0.1.x interfaces (log, config, kv, http), WASI 0.2 (cli, io, clocks, \
             random) and wasi:http outgoing-handler; rebuild it against hookd-sdk. ({raw})"
        );
    }
    if raw.contains("handle") {
        return format!(
            "it does not export `handle: func(event) -> result<_, handle-error>` from \
             hookd:plugin@0.1; export it with `hookd_sdk::export_plugin!`. ({raw})"
        );
    }
    raw.to_owned()
}
