//! Logging: human on a terminal, JSON for machines; `HOOKD_LOG` sets the filter.

use std::io::IsTerminal as _;

use hookd_config::LogFormat;
use tracing_subscriber::EnvFilter;

/// The environment variable that overrides `[log] filter`.
pub const FILTER_ENV: &str = "HOOKD_LOG";

pub fn init(format: LogFormat, config_filter: &str) -> anyhow::Result<()> {
    let filter = match std::env::var(FILTER_ENV) {
        Ok(f) if !f.is_empty() => EnvFilter::try_new(&f)
            .map_err(|e| anyhow::anyhow!("{FILTER_ENV}=`{f}` is not a valid filter: {e}"))?,
        _ => EnvFilter::try_new(config_filter).map_err(|e| {
            anyhow::anyhow!("`log.filter` = `{config_filter}` is not a valid filter: {e}")
        })?,
    };
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.with_target(false).try_init()
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}
