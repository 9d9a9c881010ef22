//! The plugin author's and operator's tools: `run-plugin`, `dlq list|replay`, and plugin
//! compilation for `check`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use hookd_config::Config;
use hookd_core::{Envelope, Limits};
use hookd_host::{DeliveryEvent, HostSettings, Outcome, PluginHost};
use hookd_store::{ReplaySelector, StoreReader};

use crate::cli::{DlqArgs, DlqCommand, RunPluginArgs, report_config_errors};
use crate::kv::ScratchKv;

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

pub fn run_plugin(args: RunPluginArgs) -> ExitCode {
    match run_plugin_inner(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => fail(e),
    }
}

/// Returns whether the outcome was `ok`.
fn run_plugin_inner(args: &RunPluginArgs) -> anyhow::Result<bool> {
    let manifest = args
        .plugin_config
        .clone()
        .or_else(|| Some(args.wasm.with_extension("toml")).filter(|p| p.exists()));
    let spec = match &manifest {
        Some(path) => hookd_config::plugin::load_sidecar(path, &args.wasm).map_err(|errors| {
            anyhow::anyhow!(
                "{errors}\nthe plugin manifest `{}` is not valid",
                path.display()
            )
        })?,
        None => crate::plugins::ad_hoc_spec(&args.wasm),
    };
    let body = std::fs::read(&args.event)
        .with_context(|| format!("cannot read the event `{}`", args.event.display()))?;
    let envelope = Envelope::parse(&body, Limits::default())
        .with_context(|| format!("`{}` is not a webhook event", args.event.display()))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let host = PluginHost::new(
            HostSettings {
                pooling: false,
                ..HostSettings::default()
            },
            Arc::new(ScratchKv::default()),
        )?;
        let plugin =
            crate::plugins::compile(&host, spec).map_err(|p| anyhow::anyhow!(p.message))?;
        let event = DeliveryEvent {
            id: envelope.id.clone(),
            event_type: envelope.event_type.to_string(),
            payload: envelope.payload_json().to_owned(),
            received_at_ms: crate::dispatch::now_ms(),
            attempt: args.attempt,
        };
        let subscribed = plugin
            .spec
            .events
            .iter()
            .any(|p| p.matches(&envelope.event_type));
        if !subscribed {
            println!(
                "note: {} is not subscribed to {}; running it anyway",
                plugin.spec.name, envelope.event_type
            );
        }
        let delivery = host.deliver(&plugin, &event).await;
        for line in &delivery.logs {
            println!("[{}] {}", line.level, line.message);
        }
        if delivery.logs_dropped > 0 {
            println!(
                "({} log lines over the cap were dropped)",
                delivery.logs_dropped
            );
        }
        let verdict = match &delivery.outcome {
            Outcome::Ok => "ok".to_owned(),
            Outcome::Retry(m) => format!("retry: {m}"),
            Outcome::GiveUp(m) => format!("give up: {m}"),
            Outcome::Failed(kind, m) => format!("failed ({}): {m}", kind.as_str()),
        };
        let verdict = hookd_host::escape_controls(&verdict, hookd_host::MAX_REASON_BYTES * 2);
        println!(
            "{} on {} {}: {verdict} ({:.1} ms)",
            plugin.spec.name,
            envelope.event_type,
            envelope.id,
            delivery.duration.as_secs_f64() * 1000.0
        );
        Ok(delivery.outcome == Outcome::Ok)
    })
}

pub fn dlq(args: DlqArgs) -> ExitCode {
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
                crate::dispatch::now_ms(),
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

/// For `hookd check`: compiles every plugin; prints one line each. Returns whether all are ok.
pub fn check_plugins(config: &Config) -> bool {
    let (specs, problems) = crate::plugins::discover(config);
    for p in &problems {
        eprintln!("error: plugin `{}`: {}", p.plugin, p.message);
    }
    let Some(compile_failures) = check_compile(specs) else {
        return false;
    };
    let failed = problems.len() + compile_failures;
    if failed > 0 {
        eprintln!(
            "{failed} plugin problem{} found",
            if failed == 1 { "" } else { "s" }
        );
    }
    failed == 0
}

/// Compiles each plugin; returns how many failed, or `None` if no engine could be made.
fn check_compile(specs: Vec<hookd_config::PluginSpec>) -> Option<usize> {
    if specs.is_empty() {
        println!("  plugins: none loaded");
        return Some(0);
    }
    let host = match PluginHost::new(
        HostSettings {
            pooling: false,
            ..HostSettings::default()
        },
        Arc::new(ScratchKv::default()),
    ) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    let mut failed = 0;
    for spec in specs {
        let name = spec.name.clone();
        let events: Vec<String> = spec.events.iter().map(ToString::to_string).collect();
        match crate::plugins::compile(&host, spec) {
            Ok(_) => println!("  plugin {name}: ok ({})", events.join(", ")),
            Err(p) => {
                failed += 1;
                eprintln!("error: plugin `{name}`: {}", p.message);
            }
        }
    }
    Some(failed)
}
