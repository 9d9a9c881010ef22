//! An in-memory key-value store for the host's `KvStore` seam.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::state::{KvError, KvStore};

/// Keys in memory only: `hookd run-plugin` and `hookd check` (a plugin sees a working store for
/// the run, and nothing is written anywhere) and tests. Same quota and counter encoding as the
/// daemon's backends.
#[derive(Default)]
pub struct MemoryKv(Mutex<HashMap<(String, String), Vec<u8>>>);

impl MemoryKv {
    /// One key's value now.
    pub fn value(&self, plugin: &str, key: &str) -> Option<Vec<u8>> {
        self.map()
            .get(&(plugin.to_owned(), key.to_owned()))
            .cloned()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Vec<u8>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl KvStore for MemoryKv {
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

fn quota(max_keys: u64) -> KvError {
    KvError::QuotaExceeded(format!("at most {max_keys} keys"))
}
