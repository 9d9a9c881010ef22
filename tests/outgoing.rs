//! Outgoing HTTP from plugins, end to end: the real daemon, real plugins from
//! `plugins/fixtures/`, local keep-alive HTTP servers that count the connections they accept.
//! A name that resolves to loopback is refused unless the manifest opts in; connections are
//! reused across deliveries; a request flood is capped while the daemon keeps serving.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookd_test_plugins as wasm;
use hookd_testkit::{Env, deliveries, event, install_plugin, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// What a [`CountingServer`] saw.
#[derive(Default)]
struct Seen {
    /// TCP connections accepted.
    accepted: AtomicUsize,
    requests: AtomicUsize,
    /// Requests being answered right now, and the most at once.
    active: AtomicUsize,
    max_active: AtomicUsize,
}

/// A keep-alive HTTP/1.1 server on its own runtime, answering `{}` after `delay`.
struct CountingServer {
    addr: SocketAddr,
    seen: Arc<Seen>,
    _runtime: tokio::runtime::Runtime,
}

impl CountingServer {
    fn start(ip: IpAddr, delay: Duration) -> CountingServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind((ip, 0)))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let counts = seen.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counts.accepted.fetch_add(1, Ordering::SeqCst);
                let counts = counts.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let counts = counts.clone();
                            async move {
                                use http_body_util::BodyExt as _;
                                let now = counts.active.fetch_add(1, Ordering::SeqCst) + 1;
                                counts.max_active.fetch_max(now, Ordering::SeqCst);
                                let _ = req.into_body().collect().await;
                                tokio::time::sleep(delay).await;
                                counts.active.fetch_sub(1, Ordering::SeqCst);
                                counts.requests.fetch_add(1, Ordering::SeqCst);
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
        CountingServer {
            addr,
            seen,
            _runtime: runtime,
        }
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

fn state_of(env: &Env, id: &str, plugin: &str) -> Option<(String, i64, Option<String>)> {
    deliveries(&env.store_dir())
        .get(&(id.to_owned(), plugin.to_owned()))
        .cloned()
}

#[test]
fn a_name_resolving_to_loopback_is_refused_unless_the_manifest_opts_in() {
    let (name, ip) = loopback_name();
    let server = CountingServer::start(ip, Duration::ZERO);
    let origin = format!("http://{name}:{}", server.addr.port());
    let manifest = |extra: &str| {
        format!(
            "events = [\"*\"]\n[capabilities]\nhttp = [\"{origin}\"]\n{extra}\
             [retry]\nmax_attempts = 1\n[config]\nurl = \"{origin}/hook\"\n"
        )
    };
    let env = Env::new("");
    install_plugin(&env, "plain", wasm::FIXTURE_HTTP_POSTER, &manifest(""));
    install_plugin(
        &env,
        "opted-in",
        wasm::FIXTURE_HTTP_POSTER,
        &manifest("http_allow_private_addresses = true\n"),
    );
    let daemon = env.start();
    assert_eq!(
        daemon
            .post(&event("to-loopback", "message.created"))
            .status(),
        200
    );

    wait_until("both deliveries are finished", WAIT, || {
        let dead = state_of(&env, "to-loopback", "plain").is_some_and(|(s, _, _)| s == "dead");
        let done = state_of(&env, "to-loopback", "opted-in").is_some_and(|(s, _, _)| s == "done");
        dead && done
    });
    let (_, _, error) = state_of(&env, "to-loopback", "plain").unwrap();
    assert!(
        error.as_deref().unwrap_or_default().contains("POST"),
        "{error:?}"
    );
    // Only the opted-in plugin's request arrived.
    assert_eq!(server.requests(), 1, "`{name}` resolves to {ip}");
    assert_eq!(server.accepted(), 1);
    daemon.wait_for_log("the refusal is logged with its address class", WAIT, |l| {
        l.contains("outgoing request refused: resolves to a non-public address")
            && l.contains(r#""class":"loopback""#)
    });
}

#[test]
fn connections_are_reused_across_deliveries() {
    let server = CountingServer::start([127, 0, 0, 1].into(), Duration::ZERO);
    let origin = format!("http://{}", server.addr);
    let env = Env::new("");
    install_plugin(
        &env,
        "poster",
        wasm::FIXTURE_HTTP_POSTER,
        &format!(
            "events = [\"*\"]\n[capabilities]\nhttp = [\"{origin}\"]\n\
             [config]\nurl = \"{origin}/hook\"\nrequests = \"20\"\n"
        ),
    );
    let daemon = env.start();
    for n in 0..25 {
        assert_eq!(
            daemon
                .post(&event(&format!("reuse-{n}"), "message.created"))
                .status(),
            200
        );
    }
    wait_until("500 requests arrived", WAIT, || server.requests() >= 500);
    wait_until("all 25 deliveries done", WAIT, || {
        let d = deliveries(&env.store_dir());
        d.len() == 25 && d.values().all(|(s, _, _)| s == "done")
    });
    let (requests, connections) = (server.requests(), server.accepted());
    assert_eq!(requests, 500);
    let reused = 1.0 - connections as f64 / requests as f64;
    eprintln!(
        "{requests} requests over 25 deliveries on {connections} connections: {:.1}% reused",
        reused * 100.0
    );
    assert!(
        reused >= 0.9,
        "{connections} connections for {requests} requests: {:.1}% reused",
        reused * 100.0
    );
    // The same counts, as the metrics show them (refreshed every few seconds).
    let (requests, connections) = (requests as u64, connections as u64);
    wait_until(
        "the outgoing metrics match the server's counts",
        WAIT,
        || {
            daemon.metric("hookd_plugin_outgoing_connections{plugin=\"poster\"}") == connections
                && daemon.metric("hookd_plugin_outgoing_requests_reused{plugin=\"poster\"}")
                    == requests - connections
        },
    );
    drop(daemon);
}

#[test]
fn a_request_flood_is_capped_and_the_daemon_keeps_serving() {
    // Slow answers, so requests pile up as far as the caps let them.
    let server = CountingServer::start([127, 0, 0, 1].into(), Duration::from_millis(50));
    let origin = format!("http://{}", server.addr);
    let env = Env::new("");
    install_plugin(
        &env,
        "flood",
        wasm::FIXTURE_HTTP_FLOOD,
        &format!(
            "events = [\"flood.*\"]\n[limits]\nconcurrency = 8\ntimeout_ms = 60000\n\
             [capabilities]\nhttp = [\"{origin}\"]\nhttp_timeout_ms = 30000\n\
             [config]\nurl = \"{origin}/flood\"\nrequests = \"500\"\n"
        ),
    );
    install_plugin(&env, "logger", wasm::LOGGER, "events = [\"*\"]\n");
    let daemon = env.start();
    for n in 0..16 {
        assert_eq!(
            daemon
                .post(&event(&format!("flood-{n}"), "flood.go"))
                .status(),
            200
        );
    }
    // Meanwhile: a signed sender keeps getting 200s, the daemon stays ready, and the other
    // plugin keeps delivering.
    for n in 0..50 {
        assert_eq!(
            daemon
                .post(&event(&format!("calm-{n}"), "message.created"))
                .status(),
            200
        );
        let ready = hookd_testkit::client()
            .get(daemon.admin_url("/readyz"))
            .send()
            .unwrap()
            .status();
        assert_eq!(ready, 200);
    }
    wait_until("every delivery is done", WAIT, || {
        let d = deliveries(&env.store_dir());
        // 16 floods (flood + logger) and 50 calm events (logger).
        d.len() == 16 * 2 + 50 && d.values().all(|(s, _, _)| s == "done")
    });
    // Each delivery got 64 requests out (16 at a time), and the rest refused at once.
    assert_eq!(server.requests(), 16 * 64);
    // Every delivery logged its summary before it was recorded done, but the log thread
    // writes lines a little later: wait for all 16, then see that there are no more.
    let summaries = |daemon: &hookd_testkit::Daemon| {
        daemon
            .logs()
            .iter()
            .filter(|l| {
                l.contains("flood: 500 sent, 64 answered, 436 refused at the cap, 0 failed")
            })
            .count()
    };
    wait_until("16 summaries are logged", WAIT, || summaries(&daemon) >= 16);
    assert_eq!(summaries(&daemon), 16, "{}", daemon.logs().join("\n"));
    let max = server.seen.max_active.load(Ordering::SeqCst);
    eprintln!(
        "{} requests over {} connections, at most {max} at once",
        server.requests(),
        server.accepted()
    );
    assert!(max <= 64, "{max} requests of one plugin at once");
    // Answers the plugin dropped unread kept their connections: at most the 64 in use and
    // the 64 idle were ever opened.
    assert!(
        server.accepted() <= 128,
        "{} connections",
        server.accepted()
    );
    // The refusals are logged once per delivery, not once per request.
    let refusals = |daemon: &hookd_testkit::Daemon| {
        daemon
            .logs()
            .iter()
            .filter(|l| l.contains("too many requests at once in one delivery"))
            .count()
    };
    wait_until("16 refusal lines", WAIT, || refusals(&daemon) >= 16);
    assert_eq!(refusals(&daemon), 16);
}
