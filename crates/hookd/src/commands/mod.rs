//! One module per subcommand, and what several of them share.

pub mod check;
pub mod dlq;
pub mod run_plugin;
pub mod send;
pub mod serve;
pub mod sign;
pub mod status;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

/// Exit code for a configuration that does not validate.
pub const EXIT_CONFIG: u8 = 2;

/// Reads a file, or standard input for `-`.
pub fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .context("cannot read standard input")?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))
    }
}

/// The async runtime of a command that is a client of the daemon (`send`, `status`): one
/// thread, as such a command does one request at a time and should not start a worker per
/// core to do it.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Prints every problem (one per line) and returns the config-error exit code.
pub fn report_config_errors(errors: &hookd_config::ConfigErrors) -> ExitCode {
    eprintln!("{errors}");
    let n = errors.len();
    eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
    ExitCode::from(EXIT_CONFIG)
}

/// Prints an error with its causes and returns the failure exit code.
pub fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}
