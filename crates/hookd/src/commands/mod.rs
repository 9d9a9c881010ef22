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

/// Where a command's async tasks run.
pub enum Threads {
    /// On the calling thread: a client of the daemon (`send`, `status`) does one request at a
    /// time and needs no worker per core.
    One,
    /// On a worker per core, as plugins run in the daemon: `run-plugin`, whose host spawns
    /// tasks (a plugin's outgoing connections) beside the plugin that runs.
    PerCore,
}

/// The async runtime of a command, built in one place so every command gets the same
/// drivers (I/O and time).
pub fn runtime(threads: Threads) -> anyhow::Result<tokio::runtime::Runtime> {
    match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        Threads::PerCore => tokio::runtime::Builder::new_multi_thread(),
    }
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
