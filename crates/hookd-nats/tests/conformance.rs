//! The JetStream backend against the storage seam's conformance suite
//! (`hookd_storage::conformance`), unchanged, on a real nats-server. A crash here is the
//! backend abandoned: its leases are left to expire (no nak), its connection closed, and, when
//! it held deliveries, the harness waits for their `ack_wait` as a killed process's peers
//! would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookd_nats::{NatsBackend, NatsConfig};
use hookd_storage::conformance::{self, Harness};
use hookd_storage::{Backend, KvOp, KvStore as _, KvWriteResult};
use hookd_testkit::nats::NatsServer;
use prometheus_client::registry::Registry;

const ACK_WAIT: Duration = Duration::from_secs(1);

struct Nats {
    server: NatsServer,
    prefix: String,
    open: Mutex<Vec<NatsBackend>>,
}

#[async_trait::async_trait]
impl Harness for Nats {
    async fn open(&self) -> Arc<dyn Backend> {
        let config = NatsConfig {
            servers: vec![self.server.url()],
            prefix: self.prefix.clone(),
            ack_wait: ACK_WAIT,
            duplicate_window: Duration::from_secs(120),
            ..NatsConfig::default()
        };
        let backend = NatsBackend::connect(config, &mut Registry::default(), |_| {})
            .await
            .expect("connecting to nats-server");
        self.open.lock().unwrap().push(backend.clone());
        Arc::new(backend)
    }

    async fn crash(&self, backend: Arc<dyn Backend>) {
        drop(backend);
        let abandoned = self.open.lock().unwrap().pop().expect("an open backend");
        if abandoned.abandon().await {
            tokio::time::sleep(ACK_WAIT + Duration::from_millis(300)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_suite_on_one_nats_server() {
    let harness = Nats {
        server: NatsServer::start(),
        prefix: "conformance".into(),
        open: Mutex::default(),
    };
    conformance::run_all(&harness).await;
}

/// Increments from two instances (two connections, each with its own turn-taking) interleave
/// without losing or repeating one: the compare-and-set on the server decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_are_atomic_across_instances() {
    let server = NatsServer::start();
    let open = || async {
        let config = NatsConfig {
            servers: vec![server.url()],
            prefix: "two".into(),
            ..NatsConfig::default()
        };
        NatsBackend::connect(config, &mut Registry::default(), |_| {})
            .await
            .expect("connecting to nats-server")
    };
    let (a, b) = (open().await, open().await);
    let increment = |backend: NatsBackend| async move {
        backend
            .write(KvOp::Increment {
                plugin: "p".into(),
                key: "n".into(),
                delta: 1,
                max_keys: 10,
            })
            .await
    };
    let writes = (0..40).map(|i| increment(if i % 2 == 0 { a.clone() } else { b.clone() }));
    let mut seen: Vec<i64> = futures_util::future::join_all(writes)
        .await
        .into_iter()
        .map(|r| match r.expect("an increment") {
            KvWriteResult::Counter(n) => n,
            other => panic!("an increment answered {other:?}"),
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=40).collect::<Vec<_>>(),
        "lost or repeated increments"
    );
}
