//! `cargo xtask reliability [--loops N] [--fuzz-seconds S]`: the whole suite RELIABILITY.md
//! reports, with its figures.
//!
//! 1. `hookd-crash`: N (default 200) kill -9 loops against the release daemon under signed
//!    load with a plugin subscribed; reports acknowledged, lost, delivered, duplicates and
//!    restart-to-ready.
//!    Then `hookd-cluster`: three nats-server nodes and three release instances under signed
//!    load, each failure (kill -9 of an instance, of one node of three, of the whole NATS
//!    cluster) injected 10 times; reports acknowledged, lost, delivered per plugin,
//!    duplicates and the longest time without a 2xx.
//! 2. The negative control: the crash test against a build that acknowledges before it
//!    commits (`--features fault-injection`), which must report losses.
//! 3. The fault, hostile-request, hostile-plugin and reload suites of `tests/` (`--nocapture`,
//!    so their figures print; as root with the tests that need root).
//! 4. The fuzzers, S seconds each (default 60; 0 skips them), when a nightly toolchain is
//!    installed.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::bench::{HOOKD, Need, Paths, catch_signals, provide, run_bounded};

const CRASH: Need = Need::Binary {
    package: "hookd-reliability",
    bin: "hookd-crash",
    probe: &[],
};
const RECORDER: Need = Need::Plugin {
    package: "fixture-version-a",
    file: "fixture_version_a.wasm",
};
const CLUSTER: Need = Need::Binary {
    package: "hookd-reliability",
    bin: "hookd-cluster",
    probe: &[],
};
const POSTER: Need = Need::Plugin {
    package: "fixture-http-poster",
    file: "fixture_http_poster.wasm",
};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut loops = 200usize;
    let mut fuzz_seconds = 60u64;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--loops" => {
                loops = args
                    .next()
                    .context("--loops needs a number")?
                    .parse()
                    .context("--loops needs a number")?;
            }
            "--fuzz-seconds" => {
                fuzz_seconds = args
                    .next()
                    .context("--fuzz-seconds needs a number")?
                    .parse()
                    .context("--fuzz-seconds needs a number")?;
            }
            other => bail!(
                "unknown argument `{other}`; usage: cargo xtask reliability [--loops N] \
                 [--fuzz-seconds S]"
            ),
        }
    }
    catch_signals();
    let paths = Paths::new()?;
    let mut built = Vec::new();
    for need in [HOOKD, CRASH, RECORDER, CLUSTER, POSTER] {
        provide(&paths, need, &mut built).map_err(anyhow::Error::msg)?;
    }
    let dir = paths.target.join("reliability/crash");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    println!("\n== kill -9 loops ({loops}) against the release build");
    let status = run_bounded(
        Command::new(paths.bin("hookd-crash"))
            .arg("--hookd")
            .arg(paths.bin("hookd"))
            .arg("--plugin")
            .arg(paths.plugin("fixture_version_a.wasm"))
            .arg("--dir")
            .arg(&dir)
            .args(["--loops", &loops.to_string()]),
        Duration::from_secs(3600),
    )?;
    if !status.success() {
        bail!("the crash loops failed: {status}");
    }

    for failure in [
        "kill-hookd",
        "kill-nats-node",
        "restart-nats-cluster",
        "restart-everything",
    ] {
        println!(
            "\n== cluster on NATS JetStream, {failure} x 10: three nats-server nodes (R3), \
             three instances, six senders (release build)"
        );
        let dir = paths.target.join(format!("reliability/cluster-{failure}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let status = run_bounded(
            Command::new(paths.bin("hookd-cluster"))
                .arg("--hookd")
                .arg(paths.bin("hookd"))
                .arg("--poster")
                .arg(paths.plugin("fixture_http_poster.wasm"))
                .arg("--dir")
                .arg(&dir)
                .args(["--failure", failure, "--rounds", "10"]),
            Duration::from_secs(1800),
        )?;
        if !status.success() {
            bail!("the cluster harness ({failure}) failed: {status}");
        }
    }

    println!("\n== negative control: a build that acknowledges before committing");
    let status = run_bounded(
        crate::plugins::cargo().current_dir(&paths.root).args([
            "test",
            "-p",
            "hookd-tests",
            "--features",
            "fault-injection",
            "--test",
            "crash",
            "--",
            "--nocapture",
            "harness_catches",
        ]),
        Duration::from_secs(3600),
    )?;
    if !status.success() {
        bail!("the negative control failed: the harness did not catch the broken build");
    }

    println!("\n== store faults, hostile requests, hostile plugins, reload faults");
    for (package, test) in [
        ("hookd-tests", "faults"),
        ("hookd-tests", "hostile_requests"),
        ("hookd-tests", "http_contract"),
        ("hookd-tests", "reload"),
        ("hookd-tests", "plugins"),
        ("hookd-host", "sandbox"),
    ] {
        let mut command = crate::plugins::cargo();
        command.current_dir(&paths.root).args([
            "test",
            "-p",
            package,
            "--test",
            test,
            "--",
            "--nocapture",
        ]);
        // The full-disk fault needs root (a tmpfs); without it, it stays ignored and says so.
        if is_root() {
            command.arg("--include-ignored");
        }
        let status = run_bounded(&mut command, Duration::from_secs(1800))?;
        if !status.success() {
            bail!("`cargo test -p {package} --test {test}` failed");
        }
    }

    if fuzz_seconds > 0 {
        println!("\n== fuzzing, {fuzz_seconds} s per target");
        let nightly = Command::new("rustup")
            .args(["run", "nightly", "rustc", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if nightly {
            let status = run_bounded(
                Command::new(paths.root.join("fuzz/run.sh")).arg(fuzz_seconds.to_string()),
                Duration::from_secs(fuzz_seconds * 10 + 1800),
            )?;
            if !status.success() {
                bail!("a fuzz target failed; its input is in fuzz/artifacts/");
            }
        } else {
            println!("skipped: no nightly toolchain (rustup toolchain install nightly)");
        }
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
