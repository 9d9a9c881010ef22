//! `hookd dlq list|replay`: the dead letters in the store, read and replayed without the
//! daemon's webhook secrets. With SQLite, the store file is opened directly; on a JetStream
//! cluster, `[store.nats]`'s servers, with its credentials (so the operator needs those).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use hookd_config::{StoreBackend, StoreConfig};
use hookd_storage::{DeadLetter, DeliveryQueue as _, ReplaySelector};
use hookd_store::StoreReader;

use crate::cli::{DlqArgs, DlqCommand};
use crate::commands::{Threads, fail, report_config_errors, runtime};

/// How long `hookd dlq` waits for a JetStream cluster before giving up.
const NATS_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

pub fn run(args: DlqArgs) -> ExitCode {
    let store = match store_config(&args.config) {
        Ok(store) => store,
        Err(result) => return result,
    };
    let result = match args.command {
        DlqCommand::List { limit, json } => {
            dead_letters(&store, limit).map(|letters| print_letters(&letters, json))
        }
        DlqCommand::Replay { id, all, plugin } => {
            let selector = match (id, all) {
                (_, true) => ReplaySelector::All,
                (Some(id), false) => ReplaySelector::Event(id),
                (None, false) => return fail(anyhow::anyhow!("give an event id or --all")),
            };
            replay(&store, selector, plugin)
                .map(|n| println!("{n} dead letter{} replayed", if n == 1 { "" } else { "s" }))
                .context("cannot replay")
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// `[store]` of the config at `path`, and nothing else of it: the store is all `dlq` opens,
/// and the operator running it does not hold the webhook secrets (the production config reads
/// its secret from `$CREDENTIALS_DIRECTORY`, which only the service has).
fn store_config(path: &Path) -> Result<StoreConfig, ExitCode> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(anyhow::anyhow!("cannot read `{}`: {e}", path.display())))?;
    let raw = hookd_config::RawConfig::parse(&text, Some(path))
        .map_err(|errors| report_config_errors(&errors))?;
    raw.store_only(&text, Some(path))
        .map_err(|errors| report_config_errors(&errors))
}

/// Runs `work` on the JetStream store `[store.nats]` names.
fn on_nats<T>(
    store: &StoreConfig,
    nats: &hookd_config::NatsStoreConfig,
    work: impl AsyncFnOnce(&hookd_nats::NatsBackend) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    runtime(Threads::One)?.block_on(async {
        let mut registry = prometheus_client::registry::Registry::default();
        let backend = tokio::time::timeout(
            NATS_WAIT,
            hookd_engine::connect_nats(nats, store, &mut registry, |_| {}),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer from JetStream at {} within {NATS_WAIT:?}",
                nats.servers.join(", ")
            )
        })??;
        let result = work(&backend).await;
        let _ = hookd_storage::EventLog::close(&backend).await;
        result
    })
}

fn dead_letters(store: &StoreConfig, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
    match &store.backend {
        StoreBackend::Sqlite => Ok(StoreReader::open(&store.dir)?.dead_letters(limit)?),
        StoreBackend::Nats(nats) => {
            on_nats(store, nats, async |b| Ok(b.dead_letters(limit).await?))
        }
    }
}

fn replay(
    store: &StoreConfig,
    selector: ReplaySelector,
    plugin: Option<String>,
) -> anyhow::Result<usize> {
    let now = hookd_storage::now_ms();
    match &store.backend {
        StoreBackend::Sqlite => Ok(hookd_store::replay_dead_letters(
            &store.dir,
            &selector,
            plugin.as_deref(),
            now,
        )?),
        StoreBackend::Nats(nats) => on_nats(store, nats, async |b| {
            Ok(b.replay(selector, plugin, now).await?)
        }),
    }
}

fn print_letters(letters: &[DeadLetter], json: bool) {
    if json {
        for l in letters {
            println!(
                "{}",
                serde_json::json!({
                    "event_id": l.event_id, "event_type": l.event_type, "plugin": l.plugin,
                    "attempts": l.attempts, "last_error": l.last_error,
                    "received_at_ms": l.received_at_ms, "died_at_ms": l.died_at_ms,
                })
            );
        }
        return;
    }
    if letters.is_empty() {
        println!("no dead letters");
        return;
    }
    println!(
        "{:<20} {:<22} {:<16} {:>8}  last error",
        "event", "type", "plugin", "attempts"
    );
    // Escaped: a reason is text a plugin chose, and must not drive the operator's terminal.
    let safe = |text: &str| hookd_host::escape_controls(text, hookd_host::MAX_REASON_BYTES * 2);
    for l in letters {
        println!(
            "{:<20} {:<22} {:<16} {:>8}  {}",
            safe(&l.event_id),
            safe(&l.event_type),
            l.plugin,
            l.attempts,
            safe(&l.last_error)
        );
    }
}
