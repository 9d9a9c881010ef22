//! `hookd serve`: the daemon, until SIGTERM or SIGINT (see [`hookd_engine::daemon`]).

use std::process::ExitCode;

use hookd_config::Config;
use tracing::error;

use crate::cli::ServeArgs;
use crate::commands::report_config_errors;

pub fn run(args: ServeArgs) -> ExitCode {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(errors) => return report_config_errors(&errors),
    };
    let format = args.log_format.map_or(config.log.format, Into::into);
    // Declared first so it is dropped last: every line logged until the end is written.
    let (log_filter, _log_guard) = match hookd_engine::logging::init(format, &config.log.filter) {
        Ok(logging) => logging,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match hookd_engine::run(args.config, config, Some(log_filter)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "hookd stopped on an error");
            ExitCode::FAILURE
        }
    }
}
