//! What the systems need before they run, built or installed on demand: binaries of this
//! workspace (release), plugins of `plugins/` (`wasm32-wasip2`), Debian packages.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::bail;

use super::Paths;
use super::supervise::run_bounded;

/// Something a system needs before it can run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Need {
    /// A binary of this workspace, built with `cargo build --release -p PACKAGE`, that must
    /// answer `PROBE... --help` successfully (so a subcommand not written yet is noticed).
    Binary {
        package: &'static str,
        bin: &'static str,
        probe: &'static [&'static str],
    },
    /// A plugin of the `plugins/` workspace, built for `wasm32-wasip2`.
    Plugin {
        package: &'static str,
        file: &'static str,
    },
    /// A program from a Debian package, installed with apt-get when missing.
    Debian {
        package: &'static str,
        binary: &'static str,
    },
}

/// adnanh/webhook, the receiver users would pick instead of hookd.
pub(super) const WEBHOOK: Need = Need::Debian {
    package: "webhook",
    binary: "/usr/bin/webhook",
};
pub(super) const CEILING: Need = Need::Binary {
    package: "hookd-bench",
    bin: "hookd-ceiling",
    probe: &[],
};
pub(super) const LOADGEN: Need = Need::Binary {
    package: "hookd-bench",
    bin: "hookd-loadgen",
    probe: &[],
};
pub(crate) const HOOKD: Need = Need::Binary {
    package: "hookd",
    bin: "hookd",
    probe: &["serve"],
};
pub(super) const RELOAD_BENCH: Need = Need::Binary {
    package: "hookd-bench",
    bin: "hookd-reload-bench",
    probe: &[],
};
pub(super) const NOOP_PLUGIN: Need = Need::Plugin {
    package: "fixture-noop",
    file: "fixture_noop.wasm",
};
pub(super) const CPU_HEAVY_PLUGIN: Need = Need::Plugin {
    package: "fixture-cpu-heavy",
    file: "fixture_cpu_heavy.wasm",
};
/// Builds (or checks) one need. `built` remembers each package's build outcome.
pub(crate) fn provide(
    paths: &Paths,
    need: Need,
    built: &mut Vec<(&'static str, Result<(), String>)>,
) -> Result<(), String> {
    match need {
        Need::Binary {
            package,
            bin,
            probe,
        } => {
            let outcome = match built.iter().find(|(p, _)| *p == package) {
                Some((_, outcome)) => outcome.clone(),
                None => {
                    eprintln!("bench: cargo build --release -p {package}");
                    let outcome = run_bounded(
                        crate::plugins::cargo().current_dir(&paths.root).args([
                            "build",
                            "--release",
                            "-p",
                            package,
                        ]),
                        Duration::from_secs(3600),
                    )
                    .and_then(|status| {
                        if status.success() {
                            Ok(())
                        } else {
                            bail!("{status}")
                        }
                    })
                    .map_err(|e| format!("`cargo build --release -p {package}` failed: {e:#}"));
                    built.push((package, outcome.clone()));
                    outcome
                }
            };
            outcome?;
            let path = paths.bin(bin);
            if !path.is_file() {
                return Err(format!("{} was not built", path.display()));
            }
            let answered = run_bounded(
                Command::new(&path)
                    .args(probe)
                    .arg("--help")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
                Duration::from_secs(10),
            );
            match answered {
                Ok(status) if status.success() => Ok(()),
                _ => Err(format!(
                    "`{} {}--help` does not work yet",
                    path.display(),
                    probe.iter().map(|p| format!("{p} ")).collect::<String>()
                )),
            }
        }
        Need::Debian { package, binary } => {
            if Path::new(binary).is_file() {
                return Ok(());
            }
            eprintln!("bench: apt-get install -y {package}");
            let install = || {
                run_bounded(
                    Command::new("apt-get").args(["install", "-y", "-qq", package]),
                    Duration::from_secs(600),
                )
            };
            let installed = install().is_ok_and(|s| s.success())
                || (run_bounded(
                    Command::new("apt-get").args(["update", "-qq"]),
                    Duration::from_secs(600),
                )
                .is_ok_and(|s| s.success())
                    && install().is_ok_and(|s| s.success()));
            if installed && Path::new(binary).is_file() {
                Ok(())
            } else {
                Err(format!(
                    "cannot install the Debian package `{package}` ({binary})"
                ))
            }
        }
        Need::Plugin { package, file } => {
            crate::toolchain::ensure_wasm_target(&paths.root).map_err(|e| format!("{e:#}"))?;
            eprintln!(
                "bench: cargo build --release --target wasm32-wasip2 -p {package} (plugins/)"
            );
            let status = run_bounded(
                crate::plugins::cargo()
                    .current_dir(paths.root.join("plugins"))
                    .args([
                        "build",
                        "--release",
                        "--target",
                        "wasm32-wasip2",
                        "-p",
                        package,
                    ])
                    .env_remove("CARGO_TARGET_DIR"),
                Duration::from_secs(3600),
            );
            match status {
                Ok(status) if status.success() && paths.plugin(file).is_file() => Ok(()),
                Ok(status) => Err(format!("building the plugin `{package}` failed ({status})")),
                Err(e) => Err(format!("building the plugin `{package}` failed: {e:#}")),
            }
        }
    }
}
