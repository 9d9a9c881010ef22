//! Each plugin's durable pull consumer on the events stream, shared by every instance: opened
//! or created, and its filters widened (never narrowed) to what the plugin's versions want.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PullConsumer};
use hookd_storage::StorageError;
use tokio::sync::OnceCell;
use tracing::debug;

use crate::names::{covered, reduce};
use crate::{Inner, failed, lock};

/// Messages JetStream may hand out to one plugin's consumer without an ack, cluster-wide;
/// retries waiting for their time count too.
const MAX_ACK_PENDING: i64 = 100_000;

/// A plugin's consumer, and the filters it is known to have.
pub(crate) struct ConsumerHandle {
    pub(crate) consumer: PullConsumer,
    filters: Mutex<Vec<String>>,
    widening: tokio::sync::Mutex<()>,
}

/// The consumers this instance has opened, by plugin.
#[derive(Default)]
pub(crate) struct Consumers {
    map: Mutex<HashMap<String, Arc<OnceCell<Arc<ConsumerHandle>>>>>,
}

pub(crate) fn configured_filters(config: &consumer::Config) -> Vec<String> {
    let mut filters = config.filter_subjects.clone();
    if !config.filter_subject.is_empty() {
        filters.push(config.filter_subject.clone());
    }
    filters
}

fn consumer_config(inner: &Inner, plugin: &str, filters: Vec<String>) -> consumer::pull::Config {
    let name = inner.names.consumer(plugin);
    consumer::pull::Config {
        durable_name: Some(name.clone()),
        name: Some(name),
        description: Some(format!("hookd: deliveries to plugin {plugin}")),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: inner.config.ack_wait,
        max_deliver: -1,
        max_ack_pending: MAX_ACK_PENDING,
        filter_subjects: filters,
        ..Default::default()
    }
}

impl Consumers {
    fn slot(&self, plugin: &str) -> Arc<OnceCell<Arc<ConsumerHandle>>> {
        lock(&self.map)
            .entry(plugin.to_owned())
            .or_default()
            .clone()
    }

    pub(crate) fn clear(&self) {
        lock(&self.map).clear();
    }

    /// The consumer of `plugin`, created if it does not exist, its filters widened to cover
    /// `patterns` (when known) and `subject` (an event about to be published for it). A
    /// filter is never narrowed here: instances serving different versions of a plugin only
    /// ever add what theirs wants, so the consumer's configuration does not flip between them.
    pub(crate) async fn ensure(
        &self,
        inner: &Inner,
        plugin: &str,
        patterns: Option<&[String]>,
        subject: Option<&str>,
    ) -> Result<Arc<ConsumerHandle>, StorageError> {
        let slot = self.slot(plugin);
        let wanted_at_creation = inner
            .names
            .consumer_filters(plugin, patterns.unwrap_or_default());
        let handle = slot
            .get_or_try_init(|| open(inner, plugin, wanted_at_creation))
            .await?
            .clone();
        let mut wanted: Vec<String> = patterns
            .map(|p| inner.names.consumer_filters(plugin, p))
            .unwrap_or_default();
        wanted.extend(subject.map(str::to_owned));
        let missing = {
            let filters = lock(&handle.filters);
            wanted.iter().any(|w| !covered(&filters, w))
        };
        if missing {
            widen(inner, plugin, &handle, wanted).await?;
        }
        Ok(handle)
    }

    /// The consumer of `plugin` if one exists (polling for a plugin creates nothing).
    pub(crate) async fn existing(
        &self,
        inner: &Inner,
        plugin: &str,
    ) -> Result<Option<Arc<ConsumerHandle>>, StorageError> {
        let slot = self.slot(plugin);
        if let Some(handle) = slot.get() {
            return Ok(Some(handle.clone()));
        }
        let name = inner.names.consumer(plugin);
        match inner.events.consumer_info(&name).await {
            Ok(_) => {}
            Err(e)
                if e.kind() == async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound =>
            {
                return Ok(None);
            }
            Err(e) => return Err(failed("cannot read a plugin's consumer", e)),
        }
        let handle = slot
            .get_or_try_init(|| open(inner, plugin, Vec::new()))
            .await?;
        Ok(Some(handle.clone()))
    }
}

/// Opens `plugin`'s consumer, creating it with `filters` if it does not exist.
async fn open(
    inner: &Inner,
    plugin: &str,
    filters: Vec<String>,
) -> Result<Arc<ConsumerHandle>, StorageError> {
    let name = inner.names.consumer(plugin);
    let consumer: PullConsumer = match inner.events.get_consumer(&name).await {
        Ok(c) => c,
        Err(_) if !filters.is_empty() => {
            match inner
                .events
                .create_consumer_strict(consumer_config(inner, plugin, filters))
                .await
            {
                Ok(c) => c,
                // Another instance created it meanwhile.
                Err(create) => inner.events.get_consumer(&name).await.map_err(|e| {
                    failed(
                        &format!("cannot create the consumer of plugin {plugin} ({create})"),
                        e,
                    )
                })?,
            }
        }
        Err(e) => return Err(failed("cannot open a plugin's consumer", e)),
    };
    let filters = configured_filters(&consumer.cached_info().config);
    Ok(Arc::new(ConsumerHandle {
        consumer,
        filters: Mutex::new(filters),
        widening: tokio::sync::Mutex::new(()),
    }))
}

/// Adds `wanted` to the consumer's filters, reading the configuration first so that what
/// other instances added stays.
async fn widen(
    inner: &Inner,
    plugin: &str,
    handle: &ConsumerHandle,
    wanted: Vec<String>,
) -> Result<(), StorageError> {
    let _one_at_a_time = handle.widening.lock().await;
    let name = inner.names.consumer(plugin);
    let info = inner
        .events
        .consumer_info(&name)
        .await
        .map_err(|e| failed("cannot read a plugin's consumer", e))?;
    let current = configured_filters(&info.config);
    if wanted.iter().all(|w| covered(&current, w)) {
        *lock(&handle.filters) = current;
        return Ok(());
    }
    let filters = reduce(current.iter().cloned().chain(wanted).collect());
    debug!(plugin, ?filters, "widening a plugin's consumer");
    let mut config = info.config.clone();
    config.filter_subject = String::new();
    config.filter_subjects = filters.clone();
    inner
        .events
        .update_consumer(config)
        .await
        .map_err(|e| failed("cannot update a plugin's consumer", e))?;
    *lock(&handle.filters) = filters;
    Ok(())
}
