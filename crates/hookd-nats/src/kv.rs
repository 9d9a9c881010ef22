//! Plugins' keys on JetStream: one bucket per plugin, `<prefix>-kv-<plugin>`. Its stream
//! keeps one message per key and at most `max_keys` messages, refusing new ones past that
//! (discard new): the server checks the quota in the same step as the write, for every
//! instance at once. A delete purges the key's subject, which frees its slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{Operation, Store};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream;
use bytes::Bytes;
use hookd_storage::{KvOp, KvWriteResult, StorageError};

use crate::names::kv_key;
use crate::{Inner, STREAM_STORE_FAILED, failed, jetstream_code, lock};

/// Increments of one key in this process, one at a time.
type Turn = Arc<tokio::sync::Mutex<()>>;

#[derive(Clone)]
struct Bucket {
    store: Store,
    max_messages: i64,
}

/// The buckets this instance has opened, and the local turn-taking of increments.
#[derive(Default)]
pub(crate) struct Buckets {
    open: Mutex<HashMap<String, Bucket>>,
    counters: Mutex<HashMap<(String, String), Turn>>,
}

impl Buckets {
    pub(crate) fn clear(&self) {
        lock(&self.open).clear();
        lock(&self.counters).clear();
    }
}

/// The stream limit for a quota of `max_keys` (JetStream's 0 means no limit, so a quota of
/// 0 is checked before writing).
fn stream_limit(max_keys: u64) -> i64 {
    i64::try_from(max_keys).unwrap_or(-1).max(1)
}

/// `plugin`'s bucket; with `quota`, created if missing and its limit set to it.
async fn bucket(
    inner: &Inner,
    plugin: &str,
    quota: Option<u64>,
) -> Result<Option<Store>, StorageError> {
    let name = inner.names.kv_bucket(plugin);
    let cached = lock(&inner.kv.open).get(&name).cloned();
    let bucket = match cached {
        Some(b) => b,
        None => match inner.js.get_key_value(&name).await {
            Ok(store) => {
                let max_messages = store.stream.cached_info().config.max_messages;
                Bucket {
                    store,
                    max_messages,
                }
            }
            Err(_) if quota.is_none() => return Ok(None),
            Err(_) => create(inner, &name, stream_limit(quota.unwrap_or(0))).await?,
        },
    };
    let bucket = match quota.map(stream_limit) {
        Some(limit) if limit != bucket.max_messages => {
            let mut config = bucket.store.stream.cached_info().config.clone();
            config.max_messages = limit;
            inner
                .js
                .update_stream(&config)
                .await
                .map_err(|e| failed("cannot set a plugin's key quota", e))?;
            Bucket {
                store: bucket.store,
                max_messages: limit,
            }
        }
        _ => bucket,
    };
    lock(&inner.kv.open).insert(name, bucket.clone());
    Ok(Some(bucket.store))
}

async fn create(inner: &Inner, name: &str, max_messages: i64) -> Result<Bucket, StorageError> {
    let config = stream::Config {
        name: format!("KV_{name}"),
        description: Some("hookd: one plugin's keys".into()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_messages,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        // Reads go to the leader: a plugin reads its own writes.
        allow_direct: false,
        storage: stream::StorageType::File,
        num_replicas: inner.config.replicas,
        ..Default::default()
    };
    // Another instance may create it at the same moment; either way it exists after.
    let _ = inner.js.create_stream(config).await;
    let store = inner
        .js
        .get_key_value(name)
        .await
        .map_err(|e| failed("cannot create a plugin's key bucket", e))?;
    let max_messages = store.stream.cached_info().config.max_messages;
    Ok(Bucket {
        store,
        max_messages,
    })
}

enum Put {
    Stored,
    Quota,
    Conflict,
}

async fn put(
    inner: &Inner,
    store: &Store,
    key: &str,
    value: Bytes,
    revision: Option<u64>,
) -> Result<Put, StorageError> {
    let mut publish = PublishMessage::build().payload(value);
    if let Some(rev) = revision {
        publish = publish.expected_last_subject_sequence(rev);
    }
    let subject = format!("{}{key}", store.prefix);
    match async { inner.js.send_publish(subject, publish).await?.await }.await {
        Ok(_) => Ok(Put::Stored),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(Put::Conflict),
        Err(e) if jetstream_code(&e) == Some(STREAM_STORE_FAILED) => Ok(Put::Quota),
        Err(e) => Err(failed("cannot write a plugin's key", e)),
    }
}

/// A key's value and revision (0 and `None`: absent).
async fn entry(store: &Store, key: &str) -> Result<(Option<Bytes>, u64), StorageError> {
    let entry = store
        .entry(key)
        .await
        .map_err(|e| failed("cannot read a plugin's key", e))?;
    Ok(match entry {
        Some(e) if e.operation == Operation::Put => (Some(e.value), e.revision),
        Some(e) => (None, e.revision),
        None => (None, 0),
    })
}

/// `plugin`'s bucket, made if missing, its quota `max_keys`, and `key` as its key there.
async fn writable(
    inner: &Inner,
    plugin: &str,
    key: &str,
    max_keys: u64,
) -> Result<(Store, String), StorageError> {
    match bucket(inner, plugin, Some(max_keys)).await? {
        Some(store) => Ok((store, kv_key(key))),
        None => Err(failed("a plugin's key bucket", "was not created")),
    }
}

pub(crate) async fn get(
    inner: &Inner,
    plugin: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, StorageError> {
    let Some(store) = bucket(inner, plugin, None).await? else {
        return Ok(None);
    };
    Ok(entry(&store, &kv_key(key)).await?.0.map(|v| v.to_vec()))
}

pub(crate) async fn write(inner: &Inner, op: KvOp) -> Result<KvWriteResult, StorageError> {
    match op {
        KvOp::Set {
            plugin,
            key,
            value,
            max_keys,
        } => {
            let (store, key) = writable(inner, &plugin, &key, max_keys).await?;
            if max_keys == 0 && entry(&store, &key).await?.0.is_none() {
                return Ok(KvWriteResult::QuotaExceeded);
            }
            Ok(
                match put(inner, &store, &key, Bytes::from(value), None).await? {
                    Put::Stored | Put::Conflict => KvWriteResult::Stored,
                    Put::Quota => KvWriteResult::QuotaExceeded,
                },
            )
        }
        KvOp::Delete { plugin, key } => {
            if let Some(store) = bucket(inner, &plugin, None).await? {
                store
                    .stream
                    .purge()
                    .filter(format!("{}{}", store.prefix, kv_key(&key)))
                    .await
                    .map_err(|e| failed("cannot delete a plugin's key", e))?;
            }
            Ok(KvWriteResult::Stored)
        }
        KvOp::Increment {
            plugin,
            key,
            delta,
            max_keys,
        } => {
            let (store, key) = writable(inner, &plugin, &key, max_keys).await?;
            // Callers in this process take turns; other instances are kept out by the
            // compare-and-set below.
            let turn = lock(&inner.kv.counters)
                .entry((plugin.clone(), key.clone()))
                .or_default()
                .clone();
            let _turn = turn.lock().await;
            loop {
                let (value, revision) = entry(&store, &key).await?;
                if value.is_none() && max_keys == 0 {
                    return Ok(KvWriteResult::QuotaExceeded);
                }
                let current = value
                    .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
                    .map_or(0, i64::from_le_bytes);
                let next = current.wrapping_add(delta);
                let bytes = Bytes::copy_from_slice(&next.to_le_bytes());
                match put(inner, &store, &key, bytes, Some(revision)).await? {
                    Put::Stored => return Ok(KvWriteResult::Counter(next)),
                    Put::Quota => return Ok(KvWriteResult::QuotaExceeded),
                    Put::Conflict => continue,
                }
            }
        }
    }
}
