//! The plugins' key-value store: kept in the daemon's store, namespaced per plugin.

use std::collections::HashMap;
use std::sync::Mutex;

use hookd_host::{KvError, KvStore};
use hookd_store::{KvOp, KvWriteResult, Store};

/// Key-value storage in the daemon's SQLite store; writes share the group commit.
pub struct StoreKv(pub Store);

fn storage(e: impl std::fmt::Display) -> KvError {
    KvError::Storage(e.to_string())
}

fn quota(max_keys: u64) -> KvError {
    KvError::QuotaExceeded(format!("at most {max_keys} keys"))
}

#[async_trait::async_trait]
impl KvStore for StoreKv {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let (store, plugin, key) = (self.0.clone(), plugin.to_owned(), key.to_owned());
        tokio::task::spawn_blocking(move || store.kv_get(&plugin, &key))
            .await
            .map_err(storage)?
            .map_err(storage)
    }

    async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        max_keys: u64,
    ) -> Result<(), KvError> {
        let op = KvOp::Set {
            plugin: plugin.to_owned(),
            key: key.to_owned(),
            value,
            max_keys,
        };
        match self.0.kv_write(op).await.map_err(storage)? {
            KvWriteResult::QuotaExceeded => Err(quota(max_keys)),
            _ => Ok(()),
        }
    }

    async fn delete(&self, plugin: &str, key: &str) -> Result<(), KvError> {
        let op = KvOp::Delete {
            plugin: plugin.to_owned(),
            key: key.to_owned(),
        };
        self.0.kv_write(op).await.map_err(storage).map(drop)
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
        match self.0.kv_write(op).await.map_err(storage)? {
            KvWriteResult::Counter(n) => Ok(n),
            KvWriteResult::QuotaExceeded => Err(quota(max_keys)),
            KvWriteResult::Stored => Err(storage("increment stored no counter")),
        }
    }
}

/// A throwaway in-memory store for `hookd run-plugin`: the plugin sees a working key-value
/// store for the one run, and nothing is written anywhere.
#[derive(Default)]
pub struct ScratchKv(Mutex<HashMap<(String, String), Vec<u8>>>);

impl ScratchKv {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Vec<u8>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl KvStore for ScratchKv {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self
            .map()
            .get(&(plugin.to_owned(), key.to_owned()))
            .cloned())
    }

    async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        max_keys: u64,
    ) -> Result<(), KvError> {
        let mut map = self.map();
        let k = (plugin.to_owned(), key.to_owned());
        if !map.contains_key(&k)
            && map.keys().filter(|(p, _)| p == plugin).count() as u64 >= max_keys
        {
            return Err(quota(max_keys));
        }
        map.insert(k, value);
        Ok(())
    }

    async fn delete(&self, plugin: &str, key: &str) -> Result<(), KvError> {
        self.map().remove(&(plugin.to_owned(), key.to_owned()));
        Ok(())
    }

    async fn increment(
        &self,
        plugin: &str,
        key: &str,
        delta: i64,
        max_keys: u64,
    ) -> Result<i64, KvError> {
        let current = match self.get(plugin, key).await? {
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice()).map_or(0, i64::from_le_bytes),
            None => 0,
        };
        let next = current.wrapping_add(delta);
        self.set(plugin, key, next.to_le_bytes().to_vec(), max_keys)
            .await?;
        Ok(next)
    }
}
