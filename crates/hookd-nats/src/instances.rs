//! Who shares the cluster: each instance writes a heartbeat with the plugins it serves to
//! the `<prefix>-instances` bucket, whose entries expire on their own, so what is in it is
//! the live instances (give or take [`INSTANCE_TTL`]).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use hookd_storage::StorageError;
use serde::{Deserialize, Serialize};

use crate::{NatsBackend, failed};

/// How long a heartbeat keeps an instance listed.
pub const INSTANCE_TTL: Duration = Duration::from_secs(30);
/// How often an instance should write one.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// One instance, as its last heartbeat said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Chosen at random when the instance starts.
    pub id: String,
    pub host: String,
    pub version: String,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    /// The plugins it serves, by name.
    pub plugins: BTreeMap<String, ServedPlugin>,
}

/// What an instance serves of one plugin.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServedPlugin {
    pub content_hash: String,
    pub events: Vec<String>,
}

impl NatsBackend {
    /// Writes this instance's heartbeat.
    pub async fn announce(&self, me: &InstanceRecord) -> Result<(), StorageError> {
        let body = serde_json::to_vec(me).map_err(|e| failed("a heartbeat", e))?;
        self.inner
            .instances
            .put(&me.id, Bytes::from(body))
            .await
            .map(drop)
            .map_err(|e| failed("cannot write this instance's heartbeat", e))
    }

    /// The instances whose heartbeat is still fresh, this one included.
    pub async fn instances(&self) -> Result<Vec<InstanceRecord>, StorageError> {
        let bucket = &self.inner.instances;
        let mut keys = bucket
            .keys()
            .await
            .map_err(|e| failed("cannot list the instances", e))?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            names.push(key.map_err(|e| failed("cannot list the instances", e))?);
        }
        let mut out = Vec::new();
        for name in names {
            let value = bucket
                .get(&name)
                .await
                .map_err(|e| failed("cannot read an instance's heartbeat", e))?;
            if let Some(record) = value.and_then(|v| serde_json::from_slice(&v).ok()) {
                out.push(record);
            }
        }
        out.sort_by(|a: &InstanceRecord, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
