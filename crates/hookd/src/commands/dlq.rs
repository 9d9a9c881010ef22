//! `hookd dlq list|replay`: the dead letters in the store, read and replayed without the
//! daemon's credentials.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use hookd_store::{ReplaySelector, StoreReader};

use crate::cli::{DlqArgs, DlqCommand};
use crate::commands::{fail, report_config_errors};

pub fn run(args: DlqArgs) -> ExitCode {
    let store_dir = match store_dir(&args.config) {
        Ok(dir) => dir,
        Err(result) => return result,
    };
    let result = match args.command {
        DlqCommand::List { limit, json } => dlq_list(&store_dir, limit, json),
        DlqCommand::Replay { id, all, plugin } => {
            let selector = match (id, all) {
                (_, true) => ReplaySelector::All,
                (Some(id), false) => ReplaySelector::Event(id),
                (None, false) => return fail(anyhow::anyhow!("give an event id or --all")),
            };
            hookd_store::replay_dead_letters(
                &store_dir,
                &selector,
                plugin.as_deref(),
                hookd_storage::now_ms(),
            )
            .map(|n| println!("{n} dead letter{} replayed", if n == 1 { "" } else { "s" }))
            .context("cannot replay")
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// `[store] dir` of the config at `path`, and nothing else of it: the store is all `dlq`
/// opens, and the operator running it does not hold the service's credentials (the production
/// config reads its secret from `$CREDENTIALS_DIRECTORY`, which only the service has).
fn store_dir(path: &Path) -> Result<PathBuf, ExitCode> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(anyhow::anyhow!("cannot read `{}`: {e}", path.display())))?;
    let raw = hookd_config::RawConfig::parse(&text, Some(path))
        .map_err(|errors| report_config_errors(&errors))?;
    raw.store_dir(Some(path)).ok_or_else(|| {
        fail(anyhow::anyhow!(
            "`[store] dir` is empty in `{}`",
            path.display()
        ))
    })
}

fn dlq_list(dir: &Path, limit: usize, json: bool) -> anyhow::Result<()> {
    let reader = StoreReader::open(dir)?;
    let letters = reader.dead_letters(limit)?;
    if json {
        for l in &letters {
            println!(
                "{}",
                serde_json::json!({
                    "event_id": l.event_id, "event_type": l.event_type, "plugin": l.plugin,
                    "attempts": l.attempts, "last_error": l.last_error,
                    "received_at_ms": l.received_at_ms, "died_at_ms": l.died_at_ms,
                })
            );
        }
        return Ok(());
    }
    if letters.is_empty() {
        println!("no dead letters");
        return Ok(());
    }
    println!(
        "{:<20} {:<22} {:<16} {:>8}  last error",
        "event", "type", "plugin", "attempts"
    );
    // Escaped: a reason is text a plugin chose, and must not drive the operator's terminal.
    let safe = |text: &str| hookd_host::escape_controls(text, hookd_host::MAX_REASON_BYTES * 2);
    for l in &letters {
        println!(
            "{:<20} {:<22} {:<16} {:>8}  {}",
            safe(&l.event_id),
            safe(&l.event_type),
            l.plugin,
            l.attempts,
            safe(&l.last_error)
        );
    }
    Ok(())
}
