//! `cargo xtask bench reload`: plugin reload latency and restart-to-ready time, measured by
//! `hookd-reload-bench`.

use std::process::Command;
use std::time::Duration;

use anyhow::bail;

use super::Paths;
use super::needs::{HOOKD, NOOP_PLUGIN, RELOAD_BENCH, provide};
use super::supervise::{catch_signals, run_bounded};

/// `cargo xtask bench reload [ARGS]`: plugin reload latency and restart-to-ready time, from
/// `hookd-reload-bench` (ARGS are passed to it; `--help` lists them). Writes
/// `target/bench/reload.json`.
pub fn reload(args: &[String]) -> anyhow::Result<()> {
    catch_signals();
    let paths = Paths::new()?;
    let mut built = Vec::new();
    for need in [HOOKD, RELOAD_BENCH, NOOP_PLUGIN] {
        provide(&paths, need, &mut built).map_err(anyhow::Error::msg)?;
    }
    std::fs::create_dir_all(paths.runs())?;
    let status = run_bounded(
        Command::new(paths.bin("hookd-reload-bench"))
            .arg("--hookd")
            .arg(paths.bin("hookd"))
            .arg("--plugin")
            .arg(paths.plugin("fixture_noop.wasm"))
            .arg("--dir")
            .arg(paths.runs())
            .arg("--json")
            .arg(paths.runs().join("reload.json"))
            .args(args),
        Duration::from_secs(1800),
    )?;
    if !status.success() {
        bail!("hookd-reload-bench failed: {status}");
    }
    Ok(())
}
