//! Per-delivery host overhead: a fresh `Store`, instantiation from the pre-instantiated
//! component, and one `handle` call of the no-op fixture, with and without the pooling
//! allocator.
//!
//! `cargo bench -p hookd-host --bench deliver`

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use hookd_host::{DeliveryEvent, HostSettings, NoKv, Outcome, PluginHost};

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bytes = std::fs::read(hookd_test_plugins::FIXTURE_NOOP).unwrap();
    let event = DeliveryEvent {
        id: "bench".into(),
        event_type: "message.created".into(),
        payload: r#"{"id":"m1","conversation_id":"c1","message":"hello"}"#.into(),
        received_at_ms: 0,
        attempt: 1,
    };
    let mut group = c.benchmark_group("deliver_noop");
    for pooling in [true, false] {
        let host = PluginHost::new(
            HostSettings {
                pooling,
                ..HostSettings::default()
            },
            Arc::new(NoKv),
        )
        .unwrap();
        let spec = hookd_config::PluginSpec {
            name: "noop".into(),
            wasm: hookd_test_plugins::FIXTURE_NOOP.into(),
            source: "bench".into(),
            events: vec![],
            limits: Default::default(),
            retry: Default::default(),
            capabilities: Default::default(),
            config: Default::default(),
        };
        let plugin = host.load(spec, &bytes).unwrap();
        let name = if pooling { "pooling" } else { "on_demand" };
        group.bench_function(name, |b| {
            b.iter(|| {
                let delivery = runtime.block_on(host.deliver(&plugin, &event));
                assert_eq!(delivery.outcome, Outcome::Ok);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
