//! Host CPU per outgoing request: the `http-poster` fixture sending 200 POSTs per delivery,
//! 16 deliveries at once, to a keep-alive HTTP/1.1 server in this process, on a 2-worker
//! runtime. Prints requests per second and CPU microseconds per request (this process: the
//! host, the plugin's guest code and the server together), so changes to the outgoing path
//! can be compared on a noisy machine by CPU rather than by wall time.
//!
//! `cargo bench -p hookd-host --bench outgoing`

use std::sync::Arc;
use std::time::Instant;

use hookd_config::{Origin, PluginSpec};
use hookd_host::{DeliveryEvent, HostSettings, NoKv, Outcome, PluginHost};

const REQUESTS_PER_DELIVERY: usize = 200;
const CONCURRENT: usize = 16;
const ROUNDS: usize = 16;

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        |req: hyper::Request<hyper::body::Incoming>| async move {
                            use http_body_util::BodyExt as _;
                            let _ = req.into_body().collect().await;
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"{}")),
                            ))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });

        let host = Arc::new(PluginHost::new(HostSettings::default(), Arc::new(NoKv)).unwrap());
        let bytes = std::fs::read(hookd_test_plugins::FIXTURE_HTTP_POSTER).unwrap();
        let mut spec = PluginSpec {
            name: "poster".into(),
            wasm: hookd_test_plugins::FIXTURE_HTTP_POSTER.into(),
            source: "bench".into(),
            events: vec![],
            limits: Default::default(),
            retry: Default::default(),
            capabilities: Default::default(),
            config: Default::default(),
        };
        spec.limits.concurrency = CONCURRENT;
        spec.limits.timeout = std::time::Duration::from_secs(60);
        spec.capabilities.http = vec![Origin::parse(&origin).unwrap()];
        spec.config.insert("url".into(), format!("{origin}/bench"));
        spec.config
            .insert("requests".into(), REQUESTS_PER_DELIVERY.to_string());
        let plugin = Arc::new(host.load(spec, &bytes).unwrap());
        let event = DeliveryEvent {
            id: "bench".into(),
            event_type: "message.created".into(),
            payload: "{}".into(),
            received_at_ms: 0,
            attempt: 1,
        };

        let mut measured = None;
        // The first round warms the pool and the allocator up.
        for round in 0..=ROUNDS {
            if round == 1 {
                measured = Some((Instant::now(), cpu_seconds()));
            }
            let mut running = tokio::task::JoinSet::new();
            for _ in 0..CONCURRENT {
                let (host, plugin, event) = (host.clone(), plugin.clone(), event.clone());
                running.spawn(async move { host.deliver(&plugin, &event).await });
            }
            while let Some(done) = running.join_next().await {
                let delivery = done.unwrap();
                assert_eq!(delivery.outcome, Outcome::Ok, "{:?}", delivery.logs);
            }
        }
        let (started, cpu) = measured.unwrap();
        let requests = (ROUNDS * CONCURRENT * REQUESTS_PER_DELIVERY) as f64;
        let seconds = started.elapsed().as_secs_f64();
        let stats = plugin.outgoing_stats();
        println!(
            "outgoing: {requests} requests in {seconds:.2} s: {:.0} req/s, {:.1} µs CPU per \
             request (host, guest and server); {} connections opened, {} requests reused one",
            requests / seconds,
            (cpu_seconds() - cpu) * 1e6 / requests,
            stats.connections_opened,
            stats.requests_reused,
        );
    });
}
