//! Measures durable ingest throughput: events/s and events per commit for 1 submitter waiting
//! on each commit, then for N concurrent submitters sharing group commits.
//!
//! `cargo run --release -p hookd-store --example ingest_throughput [EVENTS] [SUBMITTERS...]`
//! (defaults: 5000 events, submitters 1 16 64 256), then times pruning the last run's events. It writes to a temp dir on the same disk
//! as the system's temp dir: that disk's fsync is what is being measured.

use std::error::Error;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hookd_store::{NewEvent, Store, StoreConfig};
use prometheus_client::registry::Registry;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5_000);
    let mut submitters: Vec<usize> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    if submitters.is_empty() {
        submitters = vec![1, 16, 64, 256];
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    println!("{events} events of ~400 bytes, one delivery each, synchronous=FULL");
    println!(
        "{:>10} {:>12} {:>10} {:>16}",
        "submitters", "events/s", "commits", "events/commit"
    );
    let last = submitters.last().copied();
    for n in submitters {
        let dir = tempfile::tempdir()?;
        let store = Store::open(
            StoreConfig {
                dir: dir.path().to_owned(),
                ..StoreConfig::default()
            },
            &mut Registry::default(),
        )?;
        let started = Instant::now();
        runtime.block_on(run(&store, events, n.max(1)))?;
        let elapsed = started.elapsed().as_secs_f64();
        let commits = store.commit_count();
        println!(
            "{n:>10} {:>12.0} {commits:>10} {:>16.1}",
            events as f64 / elapsed,
            events as f64 / commits.max(1) as f64
        );
        if Some(n) == last {
            // Mark every delivery done, then prune as of the far future, when all of it is past
            // the dedup window: how fast the writer deletes (the daemon does 5,000 per round).
            let finished: Vec<_> = store
                .reader()?
                .due_deliveries(i64::MAX, &["logger"], events)?
                .into_iter()
                .map(|d| hookd_store::AttemptRecord {
                    event_seq: d.event_seq,
                    plugin: d.plugin,
                    result: hookd_store::AttemptResult::Done,
                    at_ms: d.received_at_ms,
                })
                .collect();
            runtime.block_on(store.record_attempts(finished))?;
            let started = Instant::now();
            let removed = runtime.block_on(store.prune(i64::MAX))?;
            let elapsed = started.elapsed();
            println!(
                "pruned {removed} events (with their done deliveries) in {:.1} ms",
                elapsed.as_secs_f64() * 1e3
            );
        }
        store.close()?;
    }
    Ok(())
}

/// `submitters` tasks, each ingesting its share of `events` one after another.
async fn run(store: &Store, events: usize, submitters: usize) -> Result<(), Box<dyn Error>> {
    let received_at_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let plugin: Arc<str> = Arc::from("logger");
    let payload = format!(r#"{{"message": {{"text": "{}"}}}}"#, "x".repeat(360));
    let tasks: Vec<_> = (0..submitters)
        .map(|s| {
            let store = store.clone();
            let plugin = plugin.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                for i in (s..events).step_by(submitters) {
                    let event = NewEvent {
                        id: format!("evt_{i:08}"),
                        event_type: "message.created".to_owned(),
                        payload: payload.clone(),
                        received_at_ms,
                        deliveries: vec![plugin.clone()],
                    };
                    store.ingest(event).await?;
                }
                Ok::<_, hookd_store::IngestError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}
