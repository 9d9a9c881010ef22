//! Real components built from `plugins/`, run in the real host: each fixture's outcome.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookd_config::{Capabilities, Limits, Origin, PluginSpec, RetryPolicy};
use hookd_host::{
    DeliveryEvent, FailureKind, HostSettings, KvStore, LoadError, LoadedPlugin, NoKv, Outcome,
    PluginHost,
};
use hookd_test_plugins as wasm;

fn spec(name: &str, path: &str) -> PluginSpec {
    PluginSpec {
        name: name.to_owned(),
        wasm: path.into(),
        source: Path::new("test.toml").to_owned(),
        events: vec![],
        limits: Limits::default(),
        retry: RetryPolicy::default(),
        capabilities: Capabilities::default(),
        config: BTreeMap::new(),
    }
}

fn event(attempt: u32) -> DeliveryEvent {
    DeliveryEvent {
        id: "evt-1".into(),
        event_type: "message.created".into(),
        payload: r#"{"id":"m1","conversation_id":"c42","message":"hello"}"#.into(),
        received_at_ms: 1_700_000_000_000,
        attempt,
    }
}

fn host_with(kv: Arc<dyn KvStore>) -> PluginHost {
    PluginHost::new(HostSettings::default(), kv).unwrap()
}

fn load(host: &PluginHost, spec: PluginSpec) -> LoadedPlugin {
    let bytes = std::fs::read(&spec.wasm).unwrap();
    host.load(spec, &bytes).unwrap()
}

#[tokio::test]
async fn a_noop_plugin_succeeds() {
    let host = host_with(Arc::new(NoKv));
    let plugin = load(&host, spec("noop", wasm::FIXTURE_NOOP));
    let delivery = host.deliver(&plugin, &event(1)).await;
    assert_eq!(delivery.outcome, Outcome::Ok);
}

#[tokio::test]
async fn traps_and_panics_are_failed_attempts() {
    let host = host_with(Arc::new(NoKv));
    for (name, path) in [("trap", wasm::FIXTURE_TRAP), ("panic", wasm::FIXTURE_PANIC)] {
        let plugin = load(&host, spec(name, path));
        let delivery = host.deliver(&plugin, &event(1)).await;
        assert!(
            matches!(delivery.outcome, Outcome::Failed(FailureKind::Trap, _)),
            "{name}: {:?}",
            delivery.outcome
        );
    }
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_by_the_deadline() {
    let host = host_with(Arc::new(NoKv));
    let mut s = spec("spin", wasm::FIXTURE_INFINITE_LOOP);
    s.limits.timeout = Duration::from_millis(200);
    let plugin = load(&host, s);
    let delivery = host.deliver(&plugin, &event(1)).await;
    assert!(
        matches!(delivery.outcome, Outcome::Failed(FailureKind::Timeout, _)),
        "{:?}",
        delivery.outcome
    );
}

#[tokio::test]
async fn a_memory_bomb_hits_its_limit() {
    let host = host_with(Arc::new(NoKv));
    let mut s = spec("bomb", wasm::FIXTURE_MEMORY_BOMB);
    s.limits.memory_bytes = 16 << 20;
    let plugin = load(&host, s);
    let delivery = host.deliver(&plugin, &event(1)).await;
    assert!(
        matches!(
            delivery.outcome,
            Outcome::Failed(FailureKind::MemoryLimit, _)
        ),
        "{:?}",
        delivery.outcome
    );
}

#[tokio::test]
async fn a_stack_overflow_is_a_trap() {
    let host = host_with(Arc::new(NoKv));
    let plugin = load(&host, spec("deep", wasm::FIXTURE_STACK_OVERFLOW));
    let delivery = host.deliver(&plugin, &event(1)).await;
    // Rust keeps its stack in linear memory: running off its end is a memory-access trap.
    assert!(
        matches!(delivery.outcome, Outcome::Failed(FailureKind::Trap, _)),
        "{:?}",
        delivery.outcome
    );
}

#[tokio::test]
async fn a_log_flood_is_capped() {
    let host = host_with(Arc::new(NoKv));
    let plugin = load(&host, spec("flood", wasm::FIXTURE_LOG_FLOOD));
    let delivery = host.deliver(&plugin, &event(1)).await;
    assert_eq!(delivery.outcome, Outcome::Ok);
    let kept: usize = delivery.logs.iter().map(|l| l.message.len()).sum();
    assert!(kept <= 300 * 1024, "kept {kept} bytes of logs");
    assert!(delivery.logs_dropped > 0);
}

#[tokio::test]
async fn a_flaky_plugin_asks_for_retries_then_succeeds() {
    let host = host_with(Arc::new(NoKv));
    let plugin = load(&host, spec("flaky", wasm::FIXTURE_FLAKY));
    assert!(matches!(
        host.deliver(&plugin, &event(1)).await.outcome,
        Outcome::Retry(_)
    ));
    assert!(matches!(
        host.deliver(&plugin, &event(2)).await.outcome,
        Outcome::Retry(_)
    ));
    assert_eq!(host.deliver(&plugin, &event(3)).await.outcome, Outcome::Ok);
}

#[tokio::test]
async fn the_logger_logs_the_event() {
    let host = host_with(Arc::new(NoKv));
    let plugin = load(&host, spec("logger", wasm::LOGGER));
    let delivery = host.deliver(&plugin, &event(1)).await;
    assert_eq!(delivery.outcome, Outcome::Ok);
    assert!(
        delivery
            .logs
            .iter()
            .any(|l| l.message.contains("evt-1") && l.message.contains("hello")),
        "{:?}",
        delivery.logs
    );
}

#[tokio::test]
async fn the_counter_needs_the_kv_capability() {
    let kv = Arc::new(hookd_host::MemoryKv::default());
    let host = host_with(kv.clone());
    let denied = load(&host, spec("counter", wasm::COUNTER));
    assert!(matches!(
        host.deliver(&denied, &event(1)).await.outcome,
        Outcome::GiveUp(_)
    ));

    let mut s = spec("counter", wasm::COUNTER);
    s.capabilities.kv = true;
    let counter = load(&host, s);
    for _ in 0..3 {
        assert_eq!(host.deliver(&counter, &event(1)).await.outcome, Outcome::Ok);
    }
    let stored = kv.value("counter", "count:message.created");
    assert_eq!(stored, Some(3i64.to_le_bytes().to_vec()));
}

/// A one-route HTTP server standing in for the Protocol API; records what it received.
async fn fake_api() -> (String, Arc<Mutex<Vec<(String, String, String, String)>>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let record = record.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let record = record.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_owned();
                            let auth = req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            record.lock().unwrap().push((
                                method,
                                path,
                                auth,
                                String::from_utf8_lossy(&body).into_owned(),
                            ));
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"{}")),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://127.0.0.1:{}", addr.port()), seen)
}

#[tokio::test]
async fn auto_reply_calls_the_api_only_when_its_origin_is_allowed() {
    let (base, seen) = fake_api().await;
    let host = host_with(Arc::new(NoKv));
    let mut s = spec("auto-reply", wasm::AUTO_REPLY);
    s.config.insert("api_base_url".into(), base.clone());
    s.config.insert("api_token".into(), "t0ken".into());
    s.config.insert("reply_text".into(), "We got it".into());

    // Not allowed: refused before any connection, a failed attempt.
    let refused = load(&host, s.clone());
    let delivery = host.deliver(&refused, &event(1)).await;
    assert!(
        matches!(delivery.outcome, Outcome::Retry(_)),
        "{:?}",
        delivery.outcome
    );
    assert!(seen.lock().unwrap().is_empty());

    s.capabilities.http = vec![Origin::parse(&base).unwrap()];
    let allowed = load(&host, s);
    let delivery = host.deliver(&allowed, &event(1)).await;
    assert_eq!(delivery.outcome, Outcome::Ok, "{:?}", delivery.logs);
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.as_slice(),
        [(
            "POST".to_owned(),
            "/conversations/c42/messages".to_owned(),
            "Bearer t0ken".to_owned(),
            r#"{"message":"We got it"}"#.to_owned()
        )]
    );
}

#[test]
fn a_module_that_is_not_a_component_is_refused_with_a_clear_error() {
    let host = host_with(Arc::new(NoKv));
    let err = match host.load(spec("junk", "junk.wasm"), b"\0asm\x01\0\0\0garbage") {
        Err(e) => e,
        Ok(_) => panic!("garbage loaded"),
    };
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
    assert!(err.to_string().contains("junk.wasm"), "{err}");
}

#[test]
fn an_import_hookd_does_not_provide_is_explained() {
    let host = host_with(Arc::new(NoKv));
    let bytes = std::fs::read(wasm::FIXTURE_WRONG_IMPORT).unwrap();
    let err = match host.load(spec("wrong", wasm::FIXTURE_WRONG_IMPORT), &bytes) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a plugin with an unknown import loaded"),
    };
    assert!(
        err.contains("it imports `fixture:wrong/extra`, which hookd does not provide"),
        "{err}"
    );
    assert!(err.contains("rebuild it against hookd-sdk"), "{err}");
}

#[tokio::test]
async fn a_plugin_blocked_in_a_host_call_is_cut_off_by_its_deadline() {
    // A server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            keep.lock().unwrap().push(stream);
        }
    });
    let host = host_with(Arc::new(NoKv));
    let mut s = spec("auto-reply", wasm::AUTO_REPLY);
    s.config.insert("api_base_url".into(), base.clone());
    s.config.insert("api_token".into(), "t0ken".into());
    s.capabilities.http = vec![Origin::parse(&base).unwrap()];
    // The HTTP timeout would wait far longer than the plugin's own deadline.
    s.capabilities.http_timeout = Duration::from_secs(60);
    s.limits.timeout = Duration::from_millis(300);
    let plugin = load(&host, s);
    let started = std::time::Instant::now();
    let delivery = host.deliver(&plugin, &event(1)).await;
    assert!(
        matches!(delivery.outcome, Outcome::Failed(FailureKind::Timeout, _)),
        "{:?}",
        delivery.outcome
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off after {:?}",
        started.elapsed()
    );
    assert_eq!(
        held.lock().unwrap().len(),
        1,
        "the request did reach the server"
    );
}

#[test]
fn a_component_that_fails_validation_is_refused() {
    let host = host_with(Arc::new(NoKv));
    // A component header, then bytes that are no valid section.
    let err = match host.load(
        spec("invalid", "invalid.wasm"),
        b"\0asm\x0d\0\x01\0\xff\xff\xff\xff garbage",
    ) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an invalid component loaded"),
    };
    assert!(
        err.contains("is not a valid WebAssembly component"),
        "{err}"
    );
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_faults_leave_the_hosts_memory_flat() {
    let host = host_with(Arc::new(NoKv));
    let plugins: Vec<LoadedPlugin> = [
        ("trap", wasm::FIXTURE_TRAP),
        ("panic", wasm::FIXTURE_PANIC),
        ("stack", wasm::FIXTURE_STACK_OVERFLOW),
    ]
    .into_iter()
    .map(|(name, path)| load(&host, spec(name, path)))
    .collect();
    let mut bomb = spec("bomb", wasm::FIXTURE_MEMORY_BOMB);
    bomb.limits.memory_bytes = 16 << 20;
    let bomb = load(&host, bomb);
    let run = async |n: usize| {
        for i in 0..n {
            let plugin = if i % 10 == 9 {
                &bomb
            } else {
                &plugins[i % plugins.len()]
            };
            let outcome = host.deliver(plugin, &event(1)).await.outcome;
            assert!(matches!(outcome, Outcome::Failed(..)), "{outcome:?}");
        }
    };
    run(500).await; // warm-up: pools, caches, allocator arenas
    let before = rss_bytes();
    run(3000).await;
    let after = rss_bytes();
    let growth_mb = (after as f64 - before as f64) / f64::from(1 << 20);
    println!(
        "3000 faults: RSS {:.1} MiB -> {:.1} MiB ({growth_mb:+.1} MiB)",
        before as f64 / f64::from(1 << 20),
        after as f64 / f64::from(1 << 20)
    );
    assert!(growth_mb < 16.0, "RSS grew by {growth_mb:.1} MiB");
}

#[tokio::test]
async fn a_plugin_built_against_the_first_wit_still_loads_and_runs() {
    // Built from the frozen `hookd:plugin@0.1.0` WIT: it imports log, config and kv at 0.1.0,
    // which the host's 0.1.1 provides.
    let kv = Arc::new(hookd_host::MemoryKv::default());
    let host = host_with(kv.clone());
    let mut s = spec("old", wasm::FIXTURE_PLUGIN_0_1_0);
    s.capabilities.kv = true;
    s.config.insert("count".into(), "true".into());
    let plugin = load(&host, s.clone());
    let delivery = host.deliver(&plugin, &event(1)).await;
    assert_eq!(delivery.outcome, Outcome::Ok, "{:?}", delivery.logs);
    assert!(
        delivery
            .logs
            .iter()
            .any(|l| l.message == "0.1.0 plugin got message.created evt-1"),
        "{:?}",
        delivery.logs
    );
    assert_eq!(kv.value("old", "seen"), Some(1i64.to_le_bytes().to_vec()));

    for (answer, expected) in [
        ("retry", Outcome::Retry("asked to retry".into())),
        ("give-up", Outcome::GiveUp("asked to give up".into())),
    ] {
        let mut s = s.clone();
        s.config.insert("answer".into(), answer.into());
        let plugin = load(&host, s);
        assert_eq!(host.deliver(&plugin, &event(1)).await.outcome, expected);
    }
}
