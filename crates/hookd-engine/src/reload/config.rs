//! A new main configuration (SIGHUP): validated whole, applied whole or not at all; settings
//! that need a restart keep their running values.

use std::sync::Arc;

use hookd_config::Config;
use hookd_core::Verifier;
use hookd_server::IngestLimits;
use tracing::{error, info, warn};

use super::Reloader;

impl Reloader {
    /// SIGHUP: re-reads the main config; applies it all or changes nothing. Returns whether it
    /// was applied.
    pub async fn reload_config(&mut self) -> bool {
        info!(config = %self.config_path.display(), "reloading the configuration");
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
        let mut new = match loaded {
            Ok(Ok(config)) => config,
            Ok(Err(errors)) => {
                for e in errors.iter() {
                    error!(problem = %e, "configuration reload refused");
                }
                error!(
                    errors = errors.iter().count(),
                    "the new configuration does not validate; the running one is kept"
                );
                self.metrics.count("config", "failed");
                return false;
            }
            Err(e) => {
                error!(error = %e, "the configuration reload task failed; the running configuration is kept");
                self.metrics.count("config", "failed");
                return false;
            }
        };
        let verifier = match Verifier::new(&new.secrets) {
            Ok(v) => v,
            Err(e) => {
                error!(error = %e, "configuration reload refused; the running one is kept");
                self.metrics.count("config", "failed");
                return false;
            }
        };
        if let Some(Err(e)) = self.log_filter.as_ref().map(|f| f.set(&new.log.filter)) {
            // Validation checks the filter, so this is not expected; the rest still applies.
            warn!(error = %e, "the log filter was not changed");
        }
        let restart = keep_running_settings(&mut new, &self.config);
        self.ingest.verifier.store(Arc::new(verifier));
        self.ingest.limits.store(Arc::new(ingest_limits(&new)));
        let secrets = new.secrets.len();
        self.config = new;
        self.metrics.count("config", "ok");
        info!(
            secrets,
            path = %self.config.server.path,
            "configuration reloaded: secrets, ingest limits, log filter and plugins applied"
        );
        if !restart.is_empty() {
            warn!(
                settings = restart.join(", "),
                "these settings changed but only take effect after a restart; they keep their running values"
            );
        }
        self.load_plugins().await;
        true
    }
}

/// The ingest limits a configuration sets.
pub fn ingest_limits(config: &Config) -> IngestLimits {
    IngestLimits {
        path: config.server.path.clone(),
        max_body_bytes: config.server.max_body_bytes,
        max_json_depth: config.server.max_json_depth,
        body_read_timeout: config.server.body_read_timeout,
        retry_after: config.server.retry_after,
        max_inflight_body_bytes: config.server.max_inflight_body_bytes,
        max_inflight_body_bytes_per_client: config.server.max_inflight_body_bytes_per_client,
    }
}

/// Puts the settings that cannot change without a restart back to their running values, and
/// names those that differed.
fn keep_running_settings(new: &mut Config, running: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($field:ident).+, $key:literal) => {
            if new.$($field).+ != running.$($field).+ {
                changed.push($key);
                new.$($field).+ = running.$($field).+.clone();
            }
        };
    }
    keep!(server.listen, "server.listen");
    keep!(server.max_connections, "server.max_connections");
    keep!(
        server.max_connections_per_client,
        "server.max_connections_per_client"
    );
    keep!(server.header_read_timeout, "server.header_read_timeout_ms");
    keep!(admin.listen, "admin.listen");
    keep!(store.dir, "store.dir");
    keep!(store.dedup_window, "store.dedup_window_secs");
    keep!(store.queue_capacity, "store.queue_capacity");
    keep!(store.max_batch, "store.max_batch");
    keep!(store.queue_max_bytes, "store.queue_max_bytes");
    keep!(plugins.max_instances, "plugins.max_instances");
    keep!(plugins.max_memory_bytes, "plugins.max_memory_mb");
    keep!(plugins.memory_budget_bytes, "plugins.memory_budget_mb");
    keep!(plugins.pooling, "plugins.pooling");
    keep!(plugins.priority, "plugins.priority");
    keep!(log.format, "log.format");
    changed
}
