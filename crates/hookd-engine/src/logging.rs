//! Logging: human on a terminal, JSON for machines; `HOOKD_LOG` sets the filter, and a
//! configuration reload can change `[log] filter` while the daemon runs.
//!
//! Lines are formatted where they are logged and written to standard error by one thread of
//! their own (`hookd-log`), through a buffer flushed whenever that thread has caught up: a
//! busy daemon writes many lines per system call instead of one each from its request
//! workers, and a slow reader of its output (a pipe, journald) slows the workers down rather
//! than losing lines. A `kill -9` can lose the lines not yet written; a clean stop writes
//! them all (see [`LogGuard`]).

use std::io::{BufWriter, IsTerminal as _};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};

use hookd_config::LogFormat;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The environment variable that overrides `[log] filter`.
const FILTER_ENV: &str = "HOOKD_LOG";

/// Changes the log filter of the running daemon.
pub struct LogFilter {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `HOOKD_LOG` was set: it keeps precedence over the configuration.
    from_env: bool,
}

impl LogFilter {
    /// Applies `[log] filter` from a reloaded configuration. Returns `Ok(false)` when
    /// `HOOKD_LOG` overrides it and nothing changed.
    pub fn set(&self, config_filter: &str) -> anyhow::Result<bool> {
        if self.from_env {
            return Ok(false);
        }
        let filter = parse_config_filter(config_filter)?;
        self.handle
            .reload(filter)
            .map_err(|e| anyhow::anyhow!("cannot change the log filter: {e}"))?;
        Ok(true)
    }
}

fn parse_config_filter(filter: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(filter)
        .map(|f| quiet_dependencies(f, filter))
        .map_err(|e| anyhow::anyhow!("`log.filter` = `{filter}` is not a valid filter: {e}"))
}

/// The engine's crates log at `debug` what only their developers want: the compiler's
/// timings (thousands of lines per plugin compiled) and, from wasmtime-wasi, every byte a
/// plugin writes to stdout (which would bypass the per-delivery output cap, and cost a
/// log-flooding plugin seconds of formatting). A filter such as `debug` leaves them at
/// `info`, unless it names them.
const QUIET_AT_DEBUG: [&str; 5] = [
    "cranelift_codegen",
    "wasmtime_internal_cranelift",
    "wasmtime_wasi",
    "wasmtime_wasi_http",
    "regalloc2",
];

fn quiet_dependencies(mut filter: EnvFilter, text: &str) -> EnvFilter {
    for target in QUIET_AT_DEBUG {
        if !text.contains(target)
            && let Ok(directive) = format!("{target}=info").parse()
        {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Lines waiting for the writer thread; when full, the next line waits for room.
const QUEUED_LINES: usize = 16 * 1024;
/// The writer thread's buffer: lines are written in chunks of up to this size.
const WRITE_BUFFER: usize = 64 * 1024;

/// Keep it until the daemon is done: dropping it writes every line still queued.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] WorkerGuard);

pub fn init(format: LogFormat, config_filter: &str) -> anyhow::Result<(LogFilter, LogGuard)> {
    let (filter, from_env) = match std::env::var(FILTER_ENV) {
        Ok(f) if !f.is_empty() => (
            EnvFilter::try_new(&f)
                .map(|filter| quiet_dependencies(filter, &f))
                .map_err(|e| anyhow::anyhow!("{FILTER_ENV}=`{f}` is not a valid filter: {e}"))?,
            true,
        ),
        _ => (parse_config_filter(config_filter)?, false),
    };
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("hookd-log")
        .finish(BufWriter::with_capacity(WRITE_BUFFER, std::io::stderr()));
    let json_layer = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer.clone())
    });
    let human_layer = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(writer)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(json_layer)
        .with(human_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    Ok((LogFilter { handle, from_env }, LogGuard(guard)))
}
