//! The plugins' key-value store: kept in the storage backend, namespaced per plugin.
//!
//! Writes go to the backend under a budget (with SQLite, through the store's one writer, in
//! the same group commits as ingested events): at most [`KV_WRITES_IN_FLIGHT`] writes and [`KV_WRITE_BYTES_IN_FLIGHT`]
//! bytes of keys and values queued for or inside a commit, all plugins together. A plugin
//! that writes as fast as it can therefore adds at most that much to any commit an event
//! waits for; beyond it, its writes wait their turn (first come, first served), on the
//! plugin's own deadline. How much a plugin may keep is its quota (`kv_max_keys` x
//! (1 KiB key + `kv_max_value_bytes`), bounded by `[plugins] max_kv_mb`).

use std::sync::Arc;

use hookd_host::{KvError, KvStore};
use hookd_storage::{KvOp, KvWriteResult};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Key-value writes queued for or inside a commit at once, all plugins together.
pub const KV_WRITES_IN_FLIGHT: usize = 32;
/// Bytes of keys and values queued for or inside a commit at once, all plugins together. A
/// larger single write (`kv_max_value_bytes` may be raised to 16 MiB) takes all of it, alone.
pub const KV_WRITE_BYTES_IN_FLIGHT: usize = 1 << 20;

/// Plugins' keys in the storage backend, writes within the budget above.
pub struct BackendKv {
    backend: Arc<dyn hookd_storage::KvStore>,
    writes: Semaphore,
    bytes: Semaphore,
}

impl BackendKv {
    pub fn new(backend: Arc<dyn hookd_storage::KvStore>) -> Self {
        Self {
            backend,
            writes: Semaphore::new(KV_WRITES_IN_FLIGHT),
            bytes: Semaphore::new(KV_WRITE_BYTES_IN_FLIGHT),
        }
    }

    /// Waits for room for a write of `bytes`, then applies it; resolves once it is committed.
    async fn write(&self, bytes: usize, op: KvOp) -> Result<KvWriteResult, KvError> {
        let _permits = self.room(bytes).await?;
        self.backend.write(op).await.map_err(storage)
    }

    async fn room(
        &self,
        bytes: usize,
    ) -> Result<(SemaphorePermit<'_>, SemaphorePermit<'_>), KvError> {
        let write = self.writes.acquire().await.map_err(storage)?;
        // Counted in whole bytes; a write larger than the budget waits for all of it.
        let n = u32::try_from(bytes.clamp(1, KV_WRITE_BYTES_IN_FLIGHT)).unwrap_or(u32::MAX);
        let bytes = self.bytes.acquire_many(n).await.map_err(storage)?;
        Ok((write, bytes))
    }

    /// Writes waiting for or inside a commit now (for tests and metrics).
    #[cfg(test)]
    fn in_flight(&self) -> (usize, usize) {
        (
            KV_WRITES_IN_FLIGHT - self.writes.available_permits(),
            KV_WRITE_BYTES_IN_FLIGHT - self.bytes.available_permits(),
        )
    }
}

fn storage(e: impl std::fmt::Display) -> KvError {
    KvError::Storage(e.to_string())
}

fn quota(max_keys: u64) -> KvError {
    KvError::QuotaExceeded(format!("at most {max_keys} keys"))
}

#[async_trait::async_trait]
impl KvStore for BackendKv {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.backend.get(plugin, key).await.map_err(storage)
    }

    async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        max_keys: u64,
    ) -> Result<(), KvError> {
        let bytes = key.len() + value.len();
        let op = KvOp::Set {
            plugin: plugin.to_owned(),
            key: key.to_owned(),
            value,
            max_keys,
        };
        match self.write(bytes, op).await? {
            KvWriteResult::QuotaExceeded => Err(quota(max_keys)),
            _ => Ok(()),
        }
    }

    async fn delete(&self, plugin: &str, key: &str) -> Result<(), KvError> {
        let op = KvOp::Delete {
            plugin: plugin.to_owned(),
            key: key.to_owned(),
        };
        self.write(key.len(), op).await.map(drop)
    }

    async fn increment(
        &self,
        plugin: &str,
        key: &str,
        delta: i64,
        max_keys: u64,
    ) -> Result<i64, KvError> {
        let op = KvOp::Increment {
            plugin: plugin.to_owned(),
            key: key.to_owned(),
            delta,
            max_keys,
        };
        match self.write(key.len() + 8, op).await? {
            KvWriteResult::Counter(n) => Ok(n),
            KvWriteResult::QuotaExceeded => Err(quota(max_keys)),
            KvWriteResult::Stored => Err(storage("increment stored no counter")),
        }
    }
}

#[cfg(test)]
mod tests {
    use hookd_store::Store;

    use super::*;

    fn store(dir: &std::path::Path) -> Store {
        Store::open(
            hookd_store::StoreConfig {
                dir: dir.to_owned(),
                ..Default::default()
            },
            &mut prometheus_client::registry::Registry::default(),
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_commit_carries_more_than_the_budget_of_kv_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let kv = Arc::new(BackendKv::new(Arc::new(store.clone())));
        let before = store.commit_count();
        // 64 writes of 256 KiB at once: 16 MiB. Unbudgeted, the writer takes what is queued
        // into one commit (a few commits in all); within 1 MiB in flight it takes at most 4.
        let writers: Vec<_> = (0..64)
            .map(|i| {
                let kv = kv.clone();
                tokio::spawn(async move {
                    kv.set("p", &format!("k{i}"), vec![7; 256 << 10], 1000)
                        .await
                        .unwrap()
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let commits = store.commit_count() - before;
        assert!(commits >= 16, "64 x 256 KiB in {commits} commits");
        assert_eq!(kv.in_flight(), (0, 0));
        // One write larger than the whole budget takes all of it, alone, and lands.
        kv.set("p", "big", vec![1; 3 << 20], 1000).await.unwrap();
        assert_eq!(
            kv.get("p", "big").await.unwrap().map(|v| v.len()),
            Some(3 << 20)
        );
        assert_eq!(
            kv.get("p", "k63").await.unwrap().map(|v| v.len()),
            Some(256 << 10)
        );
    }
}
