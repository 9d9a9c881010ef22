//! The store as a storage backend: `hookd_storage`'s traits over the writer (appends, claims,
//! records, key writes) and read connections (due deliveries, counts, keys).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hookd_storage::{
    Appending, AttemptRecord, BackendError, Claim, DeadLetter, DeliveryQueue, DueDelivery,
    EventLog, KvOp, KvStore, KvWriteResult, LogHealth, NewEvent, PluginDeliveries, ReplaySelector,
    StorageError,
};

use crate::{IngestError, Store, StoreError, StoreReader};

impl From<IngestError> for StorageError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::QueueFull => StorageError::QueueFull,
            IngestError::Closed => StorageError::Closed,
            IngestError::Store(e) => {
                let disk_full = e.is_disk_full();
                StorageError::Failed(BackendError::new(e, disk_full))
            }
        }
    }
}

impl From<StoreError> for StorageError {
    fn from(e: StoreError) -> Self {
        IngestError::Store(Arc::new(e)).into()
    }
}

/// Which read connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reader {
    /// The delivery queue's polls and counts.
    Queue,
    /// Plugins' key reads.
    Kv,
}

/// Read connections to the store, each opened at its first use (a store just created has
/// nothing to read, and most tools need none).
#[derive(Default)]
pub(crate) struct Readers {
    queue: Mutex<Option<StoreReader>>,
    kv: Mutex<Option<StoreReader>>,
}

impl Readers {
    /// Runs `read` on the connection `which`, opening it first if needed. Blocks.
    pub(crate) fn with<T>(
        &self,
        which: Reader,
        dir: &Path,
        read: impl FnOnce(&StoreReader) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let slot = match which {
            Reader::Queue => &self.queue,
            Reader::Kv => &self.kv,
        };
        let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            *guard = Some(StoreReader::open(dir)?);
        }
        match guard.as_ref() {
            Some(reader) => read(reader),
            None => Err(StoreError::Missing(dir.to_owned())),
        }
    }
}

impl Store {
    /// Runs a read on a blocking thread, off the async workers.
    async fn read<T: Send + 'static>(
        &self,
        which: Reader,
        read: impl FnOnce(&StoreReader) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.readers.with(which, &shared.dir, read))
            .await
            .map_err(|e| StorageError::Failed(BackendError::new(Arc::new(e), false)))?
            .map_err(StorageError::from)
    }
}

#[async_trait::async_trait]
impl EventLog for Store {
    fn append(&self, event: NewEvent) -> Result<Appending, StorageError> {
        let stored = self.submit(event)?;
        Ok(Box::pin(
            async move { stored.await.map_err(StorageError::from) },
        ))
    }

    fn health(&self) -> LogHealth {
        LogHealth {
            accepting: self.is_running(),
            queued: self.queue_len(),
            queued_bytes: self.queue_bytes(),
        }
    }

    async fn ping(&self, within: Duration) -> bool {
        Store::ping(self, within).await
    }

    async fn close(&self) -> Result<(), StorageError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(|e| StorageError::Failed(BackendError::new(Arc::new(e), false)))?
            .map_err(StorageError::from)
    }
}

#[async_trait::async_trait]
impl DeliveryQueue for Store {
    /// One process owns the database's writer.
    fn exclusive(&self) -> bool {
        true
    }

    async fn due(
        &self,
        now_ms: i64,
        plugins: Vec<String>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<DueDelivery>, StorageError> {
        self.read(Reader::Queue, move |r| {
            let names: Vec<&str> = plugins.iter().map(String::as_str).collect();
            r.due_deliveries_within(now_ms, &names, limit, max_bytes)
        })
        .await
    }

    async fn claim(&self, claims: Vec<Claim>) -> Result<(), StorageError> {
        Ok(Store::claim(self, claims).await?)
    }

    async fn record(&self, records: Vec<AttemptRecord>) -> Result<(), StorageError> {
        Ok(self.record_attempts(records).await?)
    }

    async fn open_deliveries(&self) -> Result<Vec<PluginDeliveries>, StorageError> {
        self.read(Reader::Queue, StoreReader::open_deliveries_by_plugin)
            .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StorageError> {
        self.read(Reader::Queue, move |r| r.dead_letters(limit))
            .await
    }

    async fn replay(
        &self,
        selector: ReplaySelector,
        plugin: Option<String>,
        now_ms: i64,
    ) -> Result<usize, StorageError> {
        // On a connection of its own, as `hookd dlq replay` does from outside: SQLite
        // serialises it with the writer's commits.
        let dir = self.shared.dir.clone();
        tokio::task::spawn_blocking(move || {
            crate::replay_dead_letters(&dir, &selector, plugin.as_deref(), now_ms)
        })
        .await
        .map_err(|e| StorageError::Failed(BackendError::new(Arc::new(e), false)))?
        .map_err(StorageError::from)
    }
}

#[async_trait::async_trait]
impl KvStore for Store {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let (plugin, key) = (plugin.to_owned(), key.to_owned());
        self.read(Reader::Kv, move |r| r.kv_get(&plugin, &key))
            .await
    }

    async fn write(&self, op: KvOp) -> Result<KvWriteResult, StorageError> {
        Ok(self.kv_write(op).await?)
    }
}
