//! What reloads leave for the operator: `hookd_reloads_total`, the last refusal of each
//! plugin, and the `/plugins` and deliveries answers of the admin listener.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use hookd_admin as admin;
use hookd_server::AdminInfo;
use hookd_storage::{DeliveryQueue, now_ms, unix_ms};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::rebuild::{Change, ChangeKind, Refusals};
use crate::plugins::PluginRegistry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    kind: &'static str,
    outcome: &'static str,
}

/// `hookd_reloads_total{kind, outcome}`: `kind` is `plugin` (outcome added, updated,
/// manifest, removed, failed) or `config` (outcome ok, failed).
#[derive(Clone)]
pub struct ReloadMetrics {
    reloads: Family<ReloadLabel, Counter>,
}

impl ReloadMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            reloads: Family::default(),
        };
        registry.sub_registry_with_prefix("hookd").register(
            "reloads",
            "Reloads of plugins (added, updated, manifest, removed, failed), of the plugin \
             folder (failed) and of the main config (ok, failed)",
            m.reloads.clone(),
        );
        m
    }

    pub(super) fn count(&self, kind: &'static str, outcome: &'static str) {
        self.reloads
            .get_or_create(&ReloadLabel { kind, outcome })
            .inc();
    }
}

/// The last refusal of a plugin's files, kept until a version of it loads.
#[derive(Debug, Clone)]
struct LastError {
    message: String,
    /// The content hash of the component refused, when it was read.
    content_hash: Option<String>,
    at: SystemTime,
}

/// What `/plugins` shows: the registry, and the last refusal of each plugin.
pub struct PluginsInfo {
    registry: Arc<PluginRegistry>,
    errors: Mutex<BTreeMap<String, LastError>>,
    /// Where the deliveries' counts come from.
    queue: Arc<dyn DeliveryQueue>,
    /// This instance among others, on a shared store.
    cluster: Option<Arc<crate::cluster::ClusterMember>>,
}

impl PluginsInfo {
    pub fn new(
        registry: Arc<PluginRegistry>,
        queue: Arc<dyn DeliveryQueue>,
        cluster: Option<Arc<crate::cluster::ClusterMember>>,
    ) -> Self {
        Self {
            registry,
            errors: Mutex::default(),
            queue,
            cluster,
        }
    }

    /// The refusals a rebuild compares against.
    pub(super) fn refusals(&self) -> Refusals {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, e)| (name.clone(), (e.content_hash.clone(), e.message.clone())))
            .collect()
    }

    pub(super) fn record(&self, changes: &[Change]) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        // Every rebuild looks at every plugin, so an error stays exactly as long as its plugin
        // is still refused: fixed files (even back to the content already serving, which is
        // no change) clear it, and so does removing the plugin.
        let refused_now: HashSet<&str> = changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Failed)
            .map(|c| c.plugin.as_str())
            .collect();
        errors.retain(|name, _| refused_now.contains(name.as_str()));
        for c in changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Failed && !c.repeat)
        {
            errors.insert(
                c.plugin.clone(),
                LastError {
                    message: c.error.clone().unwrap_or_default(),
                    content_hash: c.new_hash.clone(),
                    at: SystemTime::now(),
                },
            );
        }
    }
}

/// `t` as the admin API writes times: Unix milliseconds, unsigned (the storage clock's
/// `i64`, 0 before 1970).
fn admin_ms(t: SystemTime) -> u64 {
    u64::try_from(unix_ms(t)).unwrap_or(0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait::async_trait]
impl AdminInfo for PluginsInfo {
    fn plugins(&self) -> Vec<admin::Plugin> {
        let loaded = self.registry.snapshot();
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut out = Vec::with_capacity(loaded.len() + errors.len());
        for (name, p) in loaded.iter() {
            let spec = &p.spec;
            let error = errors.get(name);
            out.push(admin::Plugin::Loaded(admin::LoadedPlugin {
                name: name.clone(),
                loaded: admin::LoadedFlag,
                content_hash: p.content_hash.clone(),
                loaded_at_ms: admin_ms(p.loaded_at),
                load_ms: p.load_stats.took.as_secs_f64() * 1000.0,
                cache_hit: p.load_stats.cache_hit,
                // Lossy rather than an error: a path that is not UTF-8 still names the file.
                wasm: spec.wasm.to_string_lossy().into_owned(),
                manifest: spec.source.to_string_lossy().into_owned(),
                events: spec.events.iter().map(|e| e.as_str().to_owned()).collect(),
                limits: admin::PluginLimits {
                    timeout_ms: millis(spec.limits.timeout),
                    memory_bytes: spec.limits.memory_bytes,
                    concurrency: spec.limits.concurrency as u64,
                },
                retry: admin::RetrySettings {
                    max_attempts: spec.retry.max_attempts,
                    initial_backoff_ms: millis(spec.retry.initial_backoff),
                    max_backoff_ms: millis(spec.retry.max_backoff),
                    max_age_secs: spec.retry.max_age.as_secs(),
                },
                http_origins: spec
                    .capabilities
                    .http
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                kv: spec.capabilities.kv,
                last_error: error.map(|e| e.message.clone()),
                last_error_at_ms: error.map(|e| admin_ms(e.at)),
            }));
        }
        for (name, error) in errors.iter().filter(|(n, _)| !loaded.contains_key(*n)) {
            out.push(admin::Plugin::Refused(admin::RefusedPlugin {
                name: name.clone(),
                loaded: admin::LoadedFlag,
                last_error: error.message.clone(),
                last_error_at_ms: admin_ms(error.at),
            }));
        }
        out
    }

    async fn cluster(&self) -> Option<admin::Cluster> {
        match &self.cluster {
            Some(member) => Some(member.view().await),
            None => None,
        }
    }

    async fn deliveries(&self) -> admin::Deliveries {
        let rows = match self.queue.open_deliveries().await {
            Ok(rows) => rows,
            Err(e) => {
                return admin::Deliveries::Unreadable {
                    error: e.to_string(),
                };
            }
        };
        let loaded = self.registry.snapshot();
        let (pending, dead) = rows
            .iter()
            .fold((0, 0), |(p, d), r| (p + r.pending, d + r.dead));
        let now = now_ms();
        let by_plugin = rows
            .into_iter()
            .map(|r| {
                // How long the longest-waiting due delivery has waited: the plugin's lag
                // behind ingest (0 when nothing is overdue).
                let lag_ms = r.oldest_due_ms.map_or(0, |due| (now - due).max(0));
                admin::PluginDeliveries {
                    // Pending deliveries of a plugin that is not loaded wait for it (paused).
                    paused: !loaded.contains_key(&r.plugin) && r.pending > 0,
                    plugin: r.plugin,
                    pending: r.pending,
                    dead: r.dead,
                    lag_seconds: lag_ms as f64 / 1000.0,
                }
            })
            .collect();
        admin::Deliveries::Counted {
            pending,
            dead,
            by_plugin,
        }
    }
}
