//! The ingest route in process, through `warp::test`, in front of an in-memory event log: every
//! answer of the HTTP contract, and what reaches the log for each (nothing, unless signed and
//! well formed). The log is a second implementation of `hookd_storage::EventLog`, not a
//! stand-in for the route: it keeps events in a map and can be told to refuse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hookd_core::{EventType, SIGNATURE_HEADER, Secret, Verifier};
use hookd_server::{IngestLimits, IngestMetrics, IngestState, Subscriptions, ingest_routes};
use hookd_storage::{
    Appending, BackendError, EventLog, Ingested, LogHealth, NewEvent, StorageError,
};
use prometheus_client::registry::Registry;

/// What the log does with the next appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Store,
    Full,
    DiskFull,
}

/// Events by id, with their order of arrival.
struct MemoryLog {
    mode: Mutex<Mode>,
    events: Mutex<HashMap<String, (i64, NewEvent)>>,
}

impl MemoryLog {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            mode: Mutex::new(Mode::Store),
            events: Mutex::default(),
        })
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn get(&self, id: &str) -> Option<NewEvent> {
        self.events.lock().unwrap().get(id).map(|(_, e)| e.clone())
    }

    fn len(&self) -> usize {
        self.events.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl EventLog for MemoryLog {
    fn append(&self, event: NewEvent) -> Result<Appending, StorageError> {
        let result = match *self.mode.lock().unwrap() {
            Mode::Full => return Err(StorageError::QueueFull),
            Mode::DiskFull => Err(StorageError::Failed(BackendError::new(
                Arc::new(std::io::Error::from(std::io::ErrorKind::StorageFull)),
                true,
            ))),
            Mode::Store => {
                let mut events = self.events.lock().unwrap();
                let next = events.len() as i64 + 1;
                match events.get(&event.id) {
                    Some((seq, _)) => Ok(Ingested {
                        seq: *seq,
                        duplicate: true,
                    }),
                    None => {
                        events.insert(event.id.clone(), (next, event));
                        Ok(Ingested {
                            seq: next,
                            duplicate: false,
                        })
                    }
                }
            }
        };
        Ok(Box::pin(async move { result }))
    }

    fn health(&self) -> LogHealth {
        LogHealth {
            accepting: true,
            ..LogHealth::default()
        }
    }

    async fn ping(&self, _within: Duration) -> bool {
        true
    }

    async fn close(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// `logger` takes every `message.*`; the events it was told were stored.
#[derive(Default)]
struct Plugins {
    stored: Mutex<Vec<(i64, String)>>,
}

impl Subscriptions for Plugins {
    fn subscribers(&self, event_type: &EventType) -> Vec<Arc<str>> {
        if event_type.as_str().starts_with("message.") {
            vec![Arc::from("logger")]
        } else {
            Vec::new()
        }
    }

    fn stored(&self, seq: i64, event: &NewEvent) {
        self.stored.lock().unwrap().push((seq, event.id.clone()));
    }
}

const SECRET: &str = "ingest-filter-test-secret-0123456789";

struct Route {
    log: Arc<MemoryLog>,
    plugins: Arc<Plugins>,
    state: Arc<IngestState>,
}

fn route(max_body_bytes: usize) -> Route {
    let log = MemoryLog::new();
    let plugins = Arc::new(Plugins::default());
    let secret = Secret::new(SECRET).unwrap();
    let state = Arc::new(IngestState {
        limits: ArcSwap::from_pointee(IngestLimits {
            path: "/webhooks".into(),
            max_body_bytes,
            max_json_depth: 32,
            body_read_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(7),
            max_inflight_body_bytes: 64 << 20,
            max_inflight_body_bytes_per_client: 16 << 20,
        }),
        verifier: ArcSwap::from_pointee(Verifier::new([&secret]).unwrap()),
        log: log.clone(),
        subscriptions: plugins.clone(),
        metrics: IngestMetrics::register(&mut Registry::default()),
        inflight_bodies: Default::default(),
    });
    Route {
        log,
        plugins,
        state,
    }
}

fn event(id: &str, event_type: &str) -> Vec<u8> {
    format!(r#"{{"id":"{id}","type":"{event_type}","payload":{{"text":"hi"}}}}"#).into_bytes()
}

fn sign(body: &[u8]) -> String {
    hookd_core::sign(&Secret::new(SECRET).unwrap(), body)
}

async fn post(
    r: &Route,
    path: &str,
    body: &[u8],
    signature: Option<&str>,
) -> (u16, String, http::HeaderMap) {
    let mut request = warp::test::request().method("POST").path(path).body(body);
    if let Some(sig) = signature {
        request = request.header(SIGNATURE_HEADER, sig);
    }
    let response = request.reply(&ingest_routes(r.state.clone())).await;
    (
        response.status().as_u16(),
        String::from_utf8_lossy(response.body()).into_owned(),
        response.headers().clone(),
    )
}

async fn post_signed(r: &Route, body: &[u8]) -> (u16, String, http::HeaderMap) {
    post(r, "/webhooks", body, Some(&sign(body))).await
}

#[tokio::test]
async fn a_signed_event_is_appended_with_its_deliveries_and_answered_once_stored() {
    let r = route(1 << 20);
    let body = event("evt-1", "message.created");
    let (status, text, _) = post_signed(&r, &body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, r#"{"id":"evt-1","duplicate":false}"#);
    let stored = r.log.get("evt-1").expect("the event reached the log");
    assert_eq!(stored.event_type, "message.created");
    assert_eq!(
        stored.payload, r#"{"text":"hi"}"#,
        "the payload's text, verbatim"
    );
    assert_eq!(stored.deliveries, vec![Arc::<str>::from("logger")]);
    assert_eq!(*r.plugins.stored.lock().unwrap(), [(1, "evt-1".to_owned())]);

    let (status, text, _) = post_signed(&r, &body).await;
    assert_eq!(status, 200);
    assert_eq!(text, r#"{"id":"evt-1","duplicate":true}"#);
    assert_eq!(
        r.plugins.stored.lock().unwrap().len(),
        1,
        "a duplicate is not hinted"
    );
    assert_eq!(r.state.metrics.events_duplicate.get(), 1);
}

#[tokio::test]
async fn an_event_no_plugin_wants_is_stored_and_counted_unrouted() {
    let r = route(1 << 20);
    let (status, _, _) = post_signed(&r, &event("evt-u", "contact.deleted")).await;
    assert_eq!(status, 200);
    assert!(r.log.get("evt-u").unwrap().deliveries.is_empty());
    assert!(r.plugins.stored.lock().unwrap().is_empty());
    assert_eq!(r.state.metrics.events_unrouted.get(), 1);
}

#[tokio::test]
async fn nothing_unsigned_or_malformed_reaches_the_log() {
    let r = route(1 << 20);
    let body = event("evt-x", "message.created");
    assert_eq!(
        post(&r, "/webhooks", &body, None).await.0,
        401,
        "no signature"
    );
    assert_eq!(
        post(&r, "/webhooks", &body, Some("sha256=00ff")).await.0,
        401,
        "a wrong signature"
    );
    let tampered = event("evt-y", "message.created");
    assert_eq!(
        post(&r, "/webhooks", &tampered, Some(&sign(&body))).await.0,
        401,
        "another body's signature"
    );
    let (status, text, _) = post_signed(&r, b"{\"id\":\"evt-z\"}").await;
    assert_eq!(status, 400, "signed but not an envelope: {text}");
    assert!(text.contains("bad envelope"), "{text}");
    let (status, _, _) = post_signed(&r, b"not json").await;
    assert_eq!(status, 400);
    assert_eq!(r.log.len(), 0);
}

#[tokio::test]
async fn other_paths_methods_and_oversized_bodies_are_refused() {
    let r = route(256);
    let body = event("evt-p", "message.created");
    assert_eq!(post(&r, "/other", &body, Some(&sign(&body))).await.0, 404);
    let response = warp::test::request()
        .method("GET")
        .path("/webhooks")
        .reply(&ingest_routes(r.state.clone()))
        .await;
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let big = format!(
        r#"{{"id":"evt-big","type":"message.created","payload":{{"text":"{}"}}}}"#,
        "a".repeat(400)
    );
    let (status, _, _) = post_signed(&r, big.as_bytes()).await;
    assert_eq!(status, 413);
    assert_eq!(r.log.len(), 0);
}

#[tokio::test]
async fn a_log_that_refuses_or_fails_is_a_503_with_retry_after() {
    let r = route(1 << 20);
    for (mode, detail) in [
        (Mode::Full, "the ingest queue is full"),
        (Mode::DiskFull, "the store cannot take the event"),
    ] {
        r.log.set(mode);
        let (status, text, headers) = post_signed(&r, &event("evt-503", "message.created")).await;
        assert_eq!(status, 503, "{mode:?}: {text}");
        assert_eq!(headers["retry-after"], "7");
        assert!(text.contains(detail), "{mode:?}: {text}");
    }
    assert_eq!(r.log.len(), 0);
    assert!(
        r.plugins.stored.lock().unwrap().is_empty(),
        "nothing stored, nothing hinted"
    );
    // The same event, sent again once the log takes it, is new: nothing was acknowledged.
    r.log.set(Mode::Store);
    let (status, text, _) = post_signed(&r, &event("evt-503", "message.created")).await;
    assert_eq!(status, 200);
    assert_eq!(text, r#"{"id":"evt-503","duplicate":false}"#);
}
