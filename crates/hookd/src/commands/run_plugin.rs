//! `hookd run-plugin`: one event through one plugin, outside the daemon, for plugin authors.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use hookd_core::{Envelope, Limits};
use hookd_host::{DeliveryEvent, HostSettings, Outcome, PluginHost};

use crate::cli::RunPluginArgs;
use crate::commands::fail;
use crate::commands::{Threads, runtime};

pub fn run(args: RunPluginArgs) -> ExitCode {
    match run_plugin_inner(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => fail(e),
    }
}

/// Returns whether the outcome was `ok`.
fn run_plugin_inner(args: &RunPluginArgs) -> anyhow::Result<bool> {
    let spec = hookd_config::catalog::standalone(&args.wasm, args.plugin_config.as_deref())?;
    let body = std::fs::read(&args.event)
        .with_context(|| format!("cannot read the event `{}`", args.event.display()))?;
    let envelope = Envelope::parse(&body, Limits::default())
        .with_context(|| format!("`{}` is not a webhook event", args.event.display()))?;

    let runtime = runtime(Threads::PerCore)?;
    runtime.block_on(async {
        let host = PluginHost::new(
            HostSettings {
                pooling: false,
                ..HostSettings::default()
            },
            Arc::new(hookd_host::MemoryKv::default()),
        )?;
        let plugin = hookd_engine::plugins::compile(&host, spec)?;
        let event = DeliveryEvent {
            id: envelope.id.clone(),
            event_type: envelope.event_type.to_string(),
            payload: envelope.payload_json().to_owned(),
            received_at_ms: hookd_storage::now_ms(),
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
