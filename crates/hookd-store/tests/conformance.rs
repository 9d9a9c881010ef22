//! The SQLite store against the storage seam's conformance suite (`hookd_storage::conformance`),
//! on a real database file. A crash here is the store dropped without a close: every
//! acknowledged write is committed by then, and nothing else is done on its behalf.

use std::sync::Arc;

use hookd_storage::Backend;
use hookd_storage::conformance::{self, Harness};
use hookd_store::{Store, StoreConfig};
use prometheus_client::registry::Registry;

struct Sqlite {
    dir: tempfile::TempDir,
}

#[async_trait::async_trait]
impl Harness for Sqlite {
    async fn open(&self) -> Arc<dyn Backend> {
        let config = StoreConfig {
            dir: self.dir.path().to_owned(),
            ..StoreConfig::default()
        };
        Arc::new(Store::open(config, &mut Registry::default()).expect("opening the store"))
    }

    async fn crash(&self, backend: Arc<dyn Backend>) {
        drop(backend);
    }
}

fn harness() -> Sqlite {
    Sqlite {
        dir: tempfile::tempdir().expect("a temp dir"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_suite_on_one_database() {
    conformance::run_all(&harness()).await;
}
