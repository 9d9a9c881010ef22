//! hookd among other instances on a shared (JetStream) store: this instance's heartbeat with
//! the plugins it serves, and the view `/status` gives of every live instance and of the
//! plugins they do not serve alike.

use std::collections::BTreeMap;
use std::sync::Arc;

use hookd_admin as admin;
use hookd_nats::{HEARTBEAT_EVERY, InstanceRecord, NatsBackend, ServedPlugin};
use hookd_storage::now_ms;
use tokio::sync::watch;
use tracing::warn;

use crate::plugins::PluginRegistry;

/// This instance in the cluster.
pub struct ClusterMember {
    backend: NatsBackend,
    registry: Arc<PluginRegistry>,
    id: String,
    host: String,
    started_ms: i64,
}

impl ClusterMember {
    pub fn new(backend: NatsBackend, registry: Arc<PluginRegistry>, host: String) -> Self {
        Self {
            backend,
            registry,
            id: format!("{:016x}", rand::random::<u64>()),
            host,
            started_ms: now_ms(),
        }
    }

    fn record(&self) -> InstanceRecord {
        let plugins = self
            .registry
            .snapshot()
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    ServedPlugin {
                        content_hash: p.content_hash.clone(),
                        events: p
                            .spec
                            .events
                            .iter()
                            .map(|e| e.as_str().to_owned())
                            .collect(),
                    },
                )
            })
            .collect();
        InstanceRecord {
            id: self.id.clone(),
            host: self.host.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_ms: self.started_ms,
            heartbeat_ms: now_ms(),
            plugins,
        }
    }

    /// Writes the heartbeat every [`HEARTBEAT_EVERY`] until `stop`.
    pub async fn heartbeat(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut failing = false;
        loop {
            match self.backend.announce(&self.record()).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    warn!(error = %e, "cannot write this instance's heartbeat; other instances will not list it");
                }
                Err(_) => {}
            }
            tokio::select! {
                () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// The live instances and the plugins they serve differently.
    pub async fn view(&self) -> admin::Cluster {
        let (instances, error) = match self.backend.instances().await {
            Ok(mut list) => {
                // This instance is live whatever its last write said.
                list.retain(|i| i.id != self.id);
                list.push(self.record());
                (list, None)
            }
            Err(e) => (vec![self.record()], Some(e.to_string())),
        };
        admin::Cluster {
            this_instance: self.id.clone(),
            skew: skew(&instances),
            instances: instances
                .iter()
                .map(|i| admin::ClusterInstance {
                    id: i.id.clone(),
                    host: i.host.clone(),
                    version: i.version.clone(),
                    started_ms: u64::try_from(i.started_ms).unwrap_or(0),
                    heartbeat_ms: u64::try_from(i.heartbeat_ms).unwrap_or(0),
                    plugins: i.plugins.len(),
                })
                .collect(),
            error,
        }
    }
}

/// Plugins not served alike by every instance in `instances`.
fn skew(instances: &[InstanceRecord]) -> Vec<admin::PluginSkew> {
    let names: std::collections::BTreeSet<&String> =
        instances.iter().flat_map(|i| i.plugins.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let mut variants: BTreeMap<Option<&ServedPlugin>, Vec<String>> = BTreeMap::new();
        for i in instances {
            variants
                .entry(i.plugins.get(name))
                .or_default()
                .push(i.id.clone());
        }
        if variants.len() > 1 {
            out.push(admin::PluginSkew {
                plugin: name.clone(),
                variants: variants
                    .into_iter()
                    .map(|(served, instances)| admin::SkewVariant {
                        content_hash: served.map(|s| s.content_hash.clone()).unwrap_or_default(),
                        events: served.map(|s| s.events.clone()).unwrap_or_default(),
                        instances,
                    })
                    .collect(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, plugins: &[(&str, &str, &[&str])]) -> InstanceRecord {
        InstanceRecord {
            id: id.into(),
            host: "h".into(),
            version: "0.1.0".into(),
            started_ms: 0,
            heartbeat_ms: 0,
            plugins: plugins
                .iter()
                .map(|(n, h, e)| {
                    (
                        n.to_string(),
                        ServedPlugin {
                            content_hash: h.to_string(),
                            events: e.iter().map(|s| s.to_string()).collect(),
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn skew_names_each_variant_and_who_serves_it() {
        let all = [
            instance("a", &[("p", "h1", &["*"]), ("q", "h9", &["x.y"])]),
            instance("b", &[("p", "h2", &["*"]), ("q", "h9", &["x.y"])]),
            instance("c", &[("p", "h1", &["message.*"]), ("q", "h9", &["x.y"])]),
            instance("d", &[("q", "h9", &["x.y"])]),
        ];
        let skew = skew(&all);
        assert_eq!(skew.len(), 1, "q is served alike: {skew:?}");
        assert_eq!(skew[0].plugin, "p");
        let by_hash: Vec<(String, Vec<String>, Vec<String>)> = skew[0]
            .variants
            .iter()
            .map(|v| {
                (
                    v.content_hash.clone(),
                    v.events.clone(),
                    v.instances.clone(),
                )
            })
            .collect();
        assert_eq!(
            by_hash,
            [
                ("".into(), vec![], vec!["d".into()]),
                ("h1".into(), vec!["*".into()], vec!["a".into()]),
                ("h1".into(), vec!["message.*".into()], vec!["c".into()]),
                ("h2".into(), vec!["*".into()], vec!["b".into()]),
            ]
        );
        assert!(super::skew(&all[3..]).is_empty());
    }
}
