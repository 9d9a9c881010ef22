//! Per-delivery host state: the WASI context, the HTTP policy, limits, and the `hookd:plugin`
//! imports (log, config, kv).

use std::sync::Arc;

use hookd_config::PluginSpec;
use tracing::{debug, error, info, trace, warn};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::hookd::plugin::{config, kv, log, types};
use crate::escape::escape_controls;
use crate::http_policy::HttpPolicy;

/// Longest key a plugin may use in its key-value store: the size the kv quota's disk bound
/// counts per key (`kv_max_keys` x (key + value) within `[plugins] max_kv_mb`).
const MAX_KV_KEY_BYTES: usize = hookd_config::KV_MAX_KEY_BYTES as usize;
/// Most log text one delivery may send to the daemon's log; the rest is counted and dropped.
pub(crate) const MAX_LOG_BYTES_PER_DELIVERY: usize = 256 * 1024;
/// Longest single log message kept.
const MAX_LOG_MESSAGE_BYTES: usize = 16 * 1024;

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("storage failed: {0}")]
    Storage(String),
}

/// Durable per-plugin key-value storage, provided by the daemon.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync + 'static {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Stores `value`; refuses a new key when the plugin already has `max_keys` keys.
    async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        max_keys: u64,
    ) -> Result<(), KvError>;
    async fn delete(&self, plugin: &str, key: &str) -> Result<(), KvError>;
    /// Adds `delta` to the little-endian i64 at `key` (0 if absent) and returns the sum.
    async fn increment(
        &self,
        plugin: &str,
        key: &str,
        delta: i64,
        max_keys: u64,
    ) -> Result<i64, KvError>;
}

/// No storage at all: every call fails as storage unavailable.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoKv;

#[async_trait::async_trait]
impl KvStore for NoKv {
    async fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, KvError> {
        Err(KvError::Storage("no key-value store is configured".into()))
    }
    async fn set(&self, _: &str, _: &str, _: Vec<u8>, _: u64) -> Result<(), KvError> {
        Err(KvError::Storage("no key-value store is configured".into()))
    }
    async fn delete(&self, _: &str, _: &str) -> Result<(), KvError> {
        Err(KvError::Storage("no key-value store is configured".into()))
    }
    async fn increment(&self, _: &str, _: &str, _: i64, _: u64) -> Result<i64, KvError> {
        Err(KvError::Storage("no key-value store is configured".into()))
    }
}

/// Caps what a plugin's instances may allocate, all together: the sum of its linear memories
/// (not each alone), the sum of its tables' elements, and how many instances, memories and
/// tables it may create. Remembers whether it refused memory, so the failure is reported as a
/// memory-limit hit rather than a generic trap.
pub(crate) struct MemoryLimiter {
    max_memory_bytes: usize,
    max_table_elements: usize,
    max_instances: usize,
    max_memories: usize,
    max_tables: usize,
    memory_bytes: usize,
    table_elements: usize,
    pub hit: bool,
}

impl MemoryLimiter {
    pub fn new(
        max_memory_bytes: usize,
        max_table_elements: usize,
        max_instances: usize,
        max_memories: usize,
        max_tables: usize,
    ) -> Self {
        Self {
            max_memory_bytes,
            max_table_elements,
            max_instances,
            max_memories,
            max_tables,
            memory_bytes: 0,
            table_elements: 0,
            hit: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A new memory grows from 0 to its initial size; memories never shrink.
        let total = self
            .memory_bytes
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.max_memory_bytes {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "memory limit of {} MiB exceeded (all of the plugin's memories together)",
                self.max_memory_bytes >> 20
            ));
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .table_elements
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.max_table_elements {
            return Ok(false);
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.max_instances
    }

    fn memories(&self) -> usize {
        self.max_memories
    }

    fn tables(&self) -> usize {
        self.max_tables
    }
}

/// One line a plugin logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// Log lines of one delivery, capped.
#[derive(Default)]
pub(crate) struct LogCollector {
    pub lines: Vec<LogLine>,
    pub bytes: usize,
    pub dropped: u64,
}

pub(crate) struct HostState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub policy: HttpPolicy,
    pub limiter: MemoryLimiter,
    pub spec: Arc<PluginSpec>,
    pub kv: Arc<dyn KvStore>,
    pub event_id: String,
    pub logs: LogCollector,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.policy,
        }
    }
}

impl HostState {
    pub fn record_log(&mut self, level: log::Level, message: &str) {
        if self.logs.bytes >= MAX_LOG_BYTES_PER_DELIVERY {
            self.logs.dropped += 1;
            return;
        }
        // Escaped: the lines reach terminals (`hookd run-plugin`, a human-format log).
        let escaped = escape_controls(message, MAX_LOG_MESSAGE_BYTES);
        let text = escaped.as_str();
        // Each line costs its text plus its bookkeeping, so a flood of empty lines is capped too.
        self.logs.bytes += text.len() + std::mem::size_of::<LogLine>();
        let plugin = self.spec.name.as_str();
        let event_id = self.event_id.as_str();
        match level {
            log::Level::Trace => trace!(target: "plugin", plugin, event_id, "{text}"),
            log::Level::Debug => debug!(target: "plugin", plugin, event_id, "{text}"),
            log::Level::Info => info!(target: "plugin", plugin, event_id, "{text}"),
            log::Level::Warn => warn!(target: "plugin", plugin, event_id, "{text}"),
            log::Level::Error => error!(target: "plugin", plugin, event_id, "{text}"),
        }
        self.logs.lines.push(LogLine {
            level: match level {
                log::Level::Trace => "trace",
                log::Level::Debug => "debug",
                log::Level::Info => "info",
                log::Level::Warn => "warn",
                log::Level::Error => "error",
            },
            message: text.to_owned(),
        });
    }

    fn kv_allowed(&self) -> Result<(), kv::Error> {
        if self.spec.capabilities.kv {
            Ok(())
        } else {
            Err(kv::Error::Denied)
        }
    }

    fn check_key(key: &str) -> Result<(), kv::Error> {
        if key.len() > MAX_KV_KEY_BYTES {
            return Err(kv::Error::QuotaExceeded(format!(
                "keys are limited to {MAX_KV_KEY_BYTES} bytes"
            )));
        }
        Ok(())
    }
}

fn kv_error(e: KvError) -> kv::Error {
    match e {
        KvError::QuotaExceeded(m) => kv::Error::QuotaExceeded(m),
        KvError::Storage(m) => kv::Error::Storage(m),
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) {
        self.record_log(level, &message);
    }
}

impl config::Host for HostState {
    async fn get(&mut self, key: String) -> Option<String> {
        self.spec.config.get(&key).cloned()
    }

    async fn keys(&mut self) -> Vec<String> {
        self.spec.config.keys().cloned().collect()
    }
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::Error> {
        self.kv_allowed()?;
        Self::check_key(&key)?;
        self.kv.get(&self.spec.name, &key).await.map_err(kv_error)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), kv::Error> {
        self.kv_allowed()?;
        Self::check_key(&key)?;
        let caps = &self.spec.capabilities;
        if value.len() as u64 > caps.kv_max_value_bytes {
            return Err(kv::Error::QuotaExceeded(format!(
                "values are limited to {} bytes",
                caps.kv_max_value_bytes
            )));
        }
        self.kv
            .set(&self.spec.name, &key, value, caps.kv_max_keys)
            .await
            .map_err(kv_error)
    }

    async fn delete(&mut self, key: String) -> Result<(), kv::Error> {
        self.kv_allowed()?;
        Self::check_key(&key)?;
        self.kv
            .delete(&self.spec.name, &key)
            .await
            .map_err(kv_error)
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, kv::Error> {
        self.kv_allowed()?;
        Self::check_key(&key)?;
        self.kv
            .increment(
                &self.spec.name,
                &key,
                delta,
                self.spec.capabilities.kv_max_keys,
            )
            .await
            .map_err(kv_error)
    }
}
