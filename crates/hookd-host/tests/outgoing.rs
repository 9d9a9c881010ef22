//! Outgoing HTTP in the real host with real plugins: names that resolve to loopback, the
//! opt-in, connection reuse across deliveries, the request caps against a flood, and the
//! request body cap. The servers are local keep-alive HTTP/1.1 servers that count what they
//! accept.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookd_config::{Capabilities, Limits, Origin, PluginSpec, RetryPolicy};
use hookd_host::{DeliveryEvent, HostSettings, LoadedPlugin, NoKv, Outcome, PluginHost};
use hookd_test_plugins as wasm;

/// What a [`CountingServer`] saw.
#[derive(Default)]
struct Seen {
    /// TCP connections accepted.
    accepted: AtomicUsize,
    /// Requests received whole (head and body).
    requests: AtomicUsize,
    /// Requests being answered right now, and the most at once.
    active: AtomicUsize,
    max_active: AtomicUsize,
    /// Connections open right now, and the most at once.
    open: AtomicUsize,
    max_open: AtomicUsize,
}

/// A keep-alive HTTP/1.1 server answering every request with `{}` after `delay`.
struct CountingServer {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

impl CountingServer {
    async fn start(ip: IpAddr, delay: Duration) -> CountingServer {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let counts = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counts.accepted.fetch_add(1, Ordering::SeqCst);
                let open = counts.open.fetch_add(1, Ordering::SeqCst) + 1;
                counts.max_open.fetch_max(open, Ordering::SeqCst);
                let counts = counts.clone();
                tokio::spawn(async move {
                    let served = counts.clone();
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let counts = counts.clone();
                            async move {
                                use http_body_util::BodyExt as _;
                                let now = counts.active.fetch_add(1, Ordering::SeqCst) + 1;
                                counts.max_active.fetch_max(now, Ordering::SeqCst);
                                let whole = req.into_body().collect().await.is_ok();
                                tokio::time::sleep(delay).await;
                                counts.active.fetch_sub(1, Ordering::SeqCst);
                                if whole {
                                    counts.requests.fetch_add(1, Ordering::SeqCst);
                                }
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from_static(b"{}")),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                    served.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        CountingServer { addr, seen }
    }

    fn accepted(&self) -> usize {
        self.seen.accepted.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }
}

/// A name this machine resolves to loopback addresses only, other than `localhost` itself:
/// Debian's /etc/hosts maps the machine's own name to 127.0.1.1 and `ip6-localhost` to ::1.
/// Panics, saying so, on a machine that has none of them.
fn loopback_name() -> (String, IpAddr) {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let candidates = [
        hostname.as_str(),
        "ip6-localhost",
        "ip6-loopback",
        "localhost.",
    ];
    for name in candidates.iter().filter(|n| !n.is_empty()) {
        let Ok(addrs) = (*name, 80).to_socket_addrs() else {
            continue;
        };
        let addrs: Vec<_> = addrs.collect();
        if !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()) {
            return ((*name).to_owned(), addrs[0].ip());
        }
    }
    panic!(
        "this test needs a name other than `localhost` that resolves to loopback only, and \
         this machine resolves none of {candidates:?} so; a Debian /etc/hosts has \
         `127.0.1.1 <hostname>` and `::1 ip6-localhost`"
    );
}

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

fn event(n: u32) -> DeliveryEvent {
    DeliveryEvent {
        id: format!("evt-{n}"),
        event_type: "message.created".into(),
        payload: r#"{"id":"m1","conversation_id":"c42","message":"hello"}"#.into(),
        received_at_ms: 1_700_000_000_000,
        attempt: 1,
    }
}

fn host() -> Arc<PluginHost> {
    Arc::new(PluginHost::new(HostSettings::default(), Arc::new(NoKv)).unwrap())
}

fn load(host: &PluginHost, spec: PluginSpec) -> Arc<LoadedPlugin> {
    let bytes = std::fs::read(&spec.wasm).unwrap();
    Arc::new(host.load(spec, &bytes).unwrap())
}

/// The poster plugin sending `requests` POSTs per delivery to `url`, allowed `origin`.
fn poster(origin: &str, url: &str, requests: u32) -> PluginSpec {
    let mut s = spec("poster", wasm::FIXTURE_HTTP_POSTER);
    s.capabilities.http = vec![Origin::parse(origin).unwrap()];
    s.config.insert("url".into(), url.to_owned());
    s.config.insert("requests".into(), requests.to_string());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_is_refused_unless_the_manifest_opts_in() {
    let (name, ip) = loopback_name();
    let server = CountingServer::start(ip, Duration::ZERO).await;
    let origin = format!("http://{name}:{}", server.addr.port());
    let host = host();

    // Through one call (the SDK's `post_json`) and through wasi:http (the chunked mode).
    for chunked in ["false", "true"] {
        let mut s = poster(&origin, &format!("{origin}/hook"), 1);
        s.config.insert("chunked".into(), chunked.into());
        let refused = load(&host, s);
        let delivery = host.deliver(&refused, &event(1)).await;
        assert!(
            matches!(&delivery.outcome, Outcome::Retry(m) if m.contains("POST")),
            "`{name}` resolves to {ip} (chunked: {chunked}): {:?}",
            delivery.outcome
        );
        assert_eq!(server.accepted(), 0, "a connection reached {ip}");
    }

    let mut opted_in = poster(&origin, &format!("{origin}/hook"), 1);
    opted_in.capabilities.http_allow_private_addresses = true;
    let allowed = load(&host, opted_in);
    let delivery = host.deliver(&allowed, &event(2)).await;
    assert_eq!(delivery.outcome, Outcome::Ok, "{:?}", delivery.logs);
    assert_eq!(server.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_literal_in_the_origin_needs_no_opt_in() {
    let server = CountingServer::start([127, 0, 0, 1].into(), Duration::ZERO).await;
    let origin = format!("http://{}", server.addr);
    let host = host();
    let plugin = load(&host, poster(&origin, &format!("{origin}/hook"), 1));
    let delivery = host.deliver(&plugin, &event(1)).await;
    assert_eq!(delivery.outcome, Outcome::Ok, "{:?}", delivery.logs);
    assert_eq!(server.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_kept_alive_across_deliveries() {
    let server = CountingServer::start([127, 0, 0, 1].into(), Duration::ZERO).await;
    let origin = format!("http://{}", server.addr);
    let host = host();
    let plugin = load(&host, poster(&origin, &format!("{origin}/hook"), 10));
    for n in 0..20 {
        let delivery = host.deliver(&plugin, &event(n)).await;
        assert_eq!(delivery.outcome, Outcome::Ok, "{:?}", delivery.logs);
    }
    let (requests, connections) = (server.requests(), server.accepted());
    assert_eq!(requests, 200);
    let reused = 1.0 - connections as f64 / requests as f64;
    assert!(
        reused >= 0.9,
        "{connections} connections for {requests} requests: {:.0}% reused",
        reused * 100.0
    );
    let stats = plugin.outgoing_stats();
    assert_eq!(stats.connections_opened as usize, connections);
    assert_eq!(stats.requests_reused as usize, requests - connections);

    // Another plugin, to the same server: its own connections, never this one's.
    let other = load(&host, poster(&origin, &format!("{origin}/hook"), 1));
    assert_eq!(host.deliver(&other, &event(99)).await.outcome, Outcome::Ok);
    assert_eq!(other.outgoing_stats().connections_opened, 1);
    assert_eq!(server.accepted(), connections + 1);
}

/// The summary line the flood fixture logs.
fn flood_summary(logs: &[hookd_host::LogLine]) -> String {
    logs.iter()
        .map(|l| l.message.clone())
        .find(|m| m.starts_with("flood:"))
        .unwrap_or_else(|| panic!("no summary in {logs:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_is_capped_per_delivery_and_per_plugin() {
    // Slow answers, so requests pile up as far as the caps let them.
    let server = CountingServer::start([127, 0, 0, 1].into(), Duration::from_millis(50)).await;
    let origin = format!("http://{}", server.addr);
    let host = host();
    let mut s = spec("flood", wasm::FIXTURE_HTTP_FLOOD);
    s.capabilities.http = vec![Origin::parse(&origin).unwrap()];
    s.config.insert("url".into(), format!("{origin}/flood"));
    s.config.insert("requests".into(), "500".into());
    s.limits.timeout = Duration::from_secs(60);
    s.limits.concurrency = 8;
    s.capabilities.http_timeout = Duration::from_secs(30);
    let plugin = load(&host, s);

    // One delivery: 64 requests outstanding at most, 16 of them in flight.
    let delivery = host.deliver(&plugin, &event(1)).await;
    assert_eq!(delivery.outcome, Outcome::Ok, "{:?}", delivery.logs);
    assert_eq!(
        flood_summary(&delivery.logs),
        "flood: 500 sent, 64 answered, 436 refused at the cap, 0 failed"
    );
    let max = server.seen.max_active.load(Ordering::SeqCst);
    assert!(
        (1..=16).contains(&max),
        "{max} requests at once in one delivery"
    );

    // Eight deliveries at once: 8 x 16 would be 128 in flight; the plugin's cap is 64.
    server.seen.max_active.store(0, Ordering::SeqCst);
    let mut running = tokio::task::JoinSet::new();
    for n in 0..8 {
        let (host, plugin) = (host.clone(), plugin.clone());
        running.spawn(async move { host.deliver(&plugin, &event(10 + n)).await });
    }
    while let Some(done) = running.join_next().await {
        let delivery = done.unwrap();
        assert_eq!(delivery.outcome, Outcome::Ok, "{:?}", delivery.logs);
        assert!(flood_summary(&delivery.logs).contains("436 refused at the cap"));
    }
    let max = server.seen.max_active.load(Ordering::SeqCst);
    assert!(
        (17..=64).contains(&max),
        "{max} requests at once over eight deliveries"
    );
    // Bounded sockets: connections in use (64) plus idle ones (64).
    let open = server.seen.max_open.load(Ordering::SeqCst);
    assert!(open <= 128, "{open} connections open at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_request_body_over_the_cap_is_cut_off() {
    // Through wasi:http with no declared length: the cap counts the bytes. (One call refuses
    // a body over its own, smaller cap before sending: `one_call_refuses_what_the_policy_refuses`.)
    let server = CountingServer::start([127, 0, 0, 1].into(), Duration::ZERO).await;
    let origin = format!("http://{}", server.addr);
    let host = host();
    let mut s = poster(&origin, &format!("{origin}/hook"), 1);
    s.config.insert("pad_bytes".into(), (9 << 20).to_string());
    s.config.insert("chunked".into(), "true".into());
    s.limits.memory_bytes = 128 << 20;
    let plugin = load(&host, s);
    let delivery = host.deliver(&plugin, &event(1)).await;
    assert!(
        matches!(&delivery.outcome, Outcome::Retry(m) if m.contains("POST")),
        "{:?}",
        delivery.outcome
    );
    assert_eq!(server.requests(), 0, "the whole body arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_that_stalls_times_out_between_bytes() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // Answers the head and one byte of a 100-byte body, then nothing, keeping the socket.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0; 64 * 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{")
                .await;
            held.push(stream);
        }
    });
    let host = host();
    // wasi:http (the chunked mode) stops it between bytes; one call by its whole deadline.
    for (chunked, says) in [
        ("true", "reading the answer"),
        ("false", "no complete answer"),
    ] {
        let mut s = poster(&origin, &format!("{origin}/hook"), 1);
        s.config.insert("chunked".into(), chunked.into());
        s.capabilities.http_timeout = Duration::from_millis(300);
        s.limits.timeout = Duration::from_secs(30);
        let plugin = load(&host, s);
        let started = std::time::Instant::now();
        let delivery = host.deliver(&plugin, &event(1)).await;
        assert!(
            matches!(&delivery.outcome, Outcome::Retry(m) if m.contains(says)),
            "chunked: {chunked}: {:?}",
            delivery.outcome
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "cut off after {:?}, not by the HTTP timeout",
            started.elapsed()
        );
    }
}

/// A keep-alive HTTP/1.1 server that answers what it received: the method, `host`,
/// `content-length` and `x-test` headers as `x-seen-*` headers, the body echoed back; a path
/// of `/big/N` answers N bytes instead.
async fn echo_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        use http_body_util::BodyExt as _;
                        let seen = |name: &str| {
                            req.headers()
                                .get(name)
                                .map(|v| v.to_str().unwrap_or("?").to_owned())
                                .unwrap_or_else(|| "-".into())
                        };
                        let mut answer = hyper::Response::builder()
                            .header("x-seen-method", req.method().as_str())
                            .header("x-seen-host", seen("host"))
                            .header("x-seen-length", seen("content-length"))
                            .header("x-seen-test", seen("x-test"));
                        let big = req
                            .uri()
                            .path()
                            .strip_prefix("/big/")
                            .and_then(|n| n.parse::<usize>().ok());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let body = match big {
                            Some(n) => {
                                answer = answer.header("content-length", n);
                                bytes::Bytes::from(vec![b'x'; n])
                            }
                            None => body,
                        };
                        Ok::<_, std::convert::Infallible>(
                            answer.body(http_body_util::Full::new(body)).unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The `http-call` fixture allowed `origin`, calling `url`, with `config` on top.
fn caller(origin: &str, url: &str, config: &[(&str, &str)]) -> PluginSpec {
    let mut s = spec("caller", wasm::FIXTURE_HTTP_CALL);
    s.capabilities.http = vec![Origin::parse(origin).unwrap()];
    s.config.insert("url".into(), url.to_owned());
    for (k, v) in config {
        s.config.insert((*k).to_owned(), (*v).to_owned());
    }
    s
}

fn logged(delivery: &hookd_host::Delivery) -> Vec<String> {
    delivery.logs.iter().map(|l| l.message.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_sends_method_headers_and_body_and_returns_the_whole_answer() {
    let addr = echo_server().await;
    let origin = format!("http://{addr}");
    let host = host();
    let plugin = load(
        &host,
        caller(
            &origin,
            &format!("{origin}/echo?q=1"),
            &[
                ("method", "put"),
                ("body", "hello, host"),
                ("header.x-test", "on the wire"),
                // The host's own headers are not the plugin's to set.
                ("header.host", "somewhere.else"),
                ("header.content-length", "3"),
            ],
        ),
    );
    let delivery = host.deliver(&plugin, &event(1)).await;
    assert_eq!(delivery.outcome, Outcome::Ok, "{:?}", delivery.logs);
    let lines = logged(&delivery);
    for expected in [
        "status=200".to_owned(),
        "header x-seen-method=PUT".to_owned(),
        format!("header x-seen-host={addr}"),
        "header x-seen-length=11".to_owned(),
        "header x-seen-test=on the wire".to_owned(),
        "body=hello, host".to_owned(),
    ] {
        assert!(lines.contains(&expected), "no `{expected}` in {lines:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_refuses_what_the_policy_refuses() {
    let addr = echo_server().await;
    let origin = format!("http://{addr}");
    let host = host();
    let outcome = |config: Vec<(&'static str, String)>, url: String| {
        let host = host.clone();
        let origin = origin.clone();
        async move {
            let config: Vec<(&str, &str)> = config.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let plugin = load(&host, caller(&origin, &url, &config));
            host.deliver(&plugin, &event(1)).await.outcome
        }
    };

    // Another port of the same host is another origin: refused, a retry (the manifest may
    // be fixed).
    let other = format!("http://127.0.0.1:{}/x", addr.port() + 1);
    let refused = outcome(vec![], other).await;
    assert!(
        matches!(&refused, Outcome::Retry(m) if m.contains("allow-list")),
        "{refused:?}"
    );
    // Not http(s), a body over one call's cap, a bad header: the request is wrong, give up.
    let wrong_scheme = outcome(vec![], format!("ftp://{addr}/x")).await;
    assert!(
        matches!(&wrong_scheme, Outcome::GiveUp(m) if m.contains("scheme")),
        "{wrong_scheme:?}"
    );
    let too_big = outcome(
        vec![
            ("method", "POST".into()),
            ("body_bytes", (2 << 20).to_string()),
        ],
        format!("{origin}/x"),
    )
    .await;
    assert!(
        matches!(&too_big, Outcome::GiveUp(m) if m.contains("wasi:http")),
        "{too_big:?}"
    );
    let bad_header = outcome(
        vec![("header.x-test", "line\nbreak".into())],
        format!("{origin}/x"),
    )
    .await;
    assert!(
        matches!(&bad_header, Outcome::GiveUp(m) if m.contains("x-test")),
        "{bad_header:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_stops_an_answer_over_the_size_cap() {
    let addr = echo_server().await;
    let origin = format!("http://{addr}");
    let host = host();
    let mut s = caller(&origin, &format!("{origin}/big/{}", 300 * 1024), &[]);
    s.capabilities.http_max_response_bytes = 256 * 1024;
    let plugin = load(&host, s);
    let delivery = host.deliver(&plugin, &event(1)).await;
    assert!(
        matches!(&delivery.outcome, Outcome::GiveUp(m) if m.contains("262144 bytes")),
        "{:?}",
        delivery.outcome
    );
    // Just under the cap goes through whole.
    let mut s = caller(&origin, &format!("{origin}/big/{}", 256 * 1024), &[]);
    s.capabilities.http_max_response_bytes = 256 * 1024;
    let plugin = load(&host, s);
    let delivery = host.deliver(&plugin, &event(2)).await;
    assert_eq!(delivery.outcome, Outcome::Ok, "{:?}", delivery.outcome);
    let lines = logged(&delivery);
    assert!(
        lines.contains(&format!("body_bytes={}", 256 * 1024)),
        "{lines:?}"
    );

    // A manifest may allow more than one call holds (3 MiB): that answer streams through
    // wasi:http instead.
    let mut s = caller(&origin, &format!("{origin}/big/{}", 4 << 20), &[]);
    s.capabilities.http_max_response_bytes = 8 << 20;
    s.limits.memory_bytes = 64 << 20;
    let plugin = load(&host, s);
    let delivery = host.deliver(&plugin, &event(3)).await;
    assert!(
        matches!(&delivery.outcome, Outcome::GiveUp(m) if m.contains(&(3u64 << 20).to_string())),
        "{:?}",
        delivery.outcome
    );
}
