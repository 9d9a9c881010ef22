//! `hookd-crash`: kill -9 loops against the real daemon under signed load, with a plugin
//! subscribed; prints what was acknowledged, lost, delivered and delivered twice.
//!
//! Exit status: 0 when nothing acknowledged was lost and everything stored was delivered;
//! 1 otherwise. With `--expect-loss` (the negative control, against a build whose durability
//! is broken on purpose) the other way round: 0 only if the harness caught a loss.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hookd_reliability::{CrashSettings, crash_loops};

#[derive(Debug, Parser)]
#[command(about = "kill -9 loops against hookd under signed load")]
struct Args {
    /// The hookd binary.
    #[arg(long)]
    hookd: PathBuf,
    /// The `version-a` fixture component (plugins/fixtures/version-a).
    #[arg(long)]
    plugin: PathBuf,
    /// A fresh folder for the config and the store (made if missing; must be empty).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 200)]
    loops: usize,
    /// Connections sending at once.
    #[arg(long, default_value_t = 8)]
    senders: usize,
    /// Shortest run before the kill, in milliseconds.
    #[arg(long, default_value_t = 50)]
    min_run_ms: u64,
    /// Longest run before the kill, in milliseconds.
    #[arg(long, default_value_t = 300)]
    max_run_ms: u64,
    /// Set HOOKD_FAULT_ACK_BEFORE_COMMIT=1 for the daemon and succeed only if losses are
    /// found (needs a hookd built with `--features fault-injection`).
    #[arg(long)]
    expect_loss: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if std::fs::read_dir(&args.dir).is_ok_and(|mut d| d.next().is_some()) {
        eprintln!("error: {} is not empty", args.dir.display());
        return ExitCode::FAILURE;
    }
    let settings = CrashSettings {
        hookd: args.hookd,
        plugin: args.plugin,
        dir: args.dir,
        loops: args.loops,
        senders: args.senders,
        run_ms: (args.min_run_ms, args.max_run_ms.max(args.min_run_ms + 1)),
        env: if args.expect_loss {
            vec![("HOOKD_FAULT_ACK_BEFORE_COMMIT".into(), "1".into())]
        } else {
            Vec::new()
        },
    };
    let report = match crash_loops(&settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    report.print();
    match (args.expect_loss, report.lost > 0, report.held()) {
        (false, _, true) => ExitCode::SUCCESS,
        (false, _, false) => {
            eprintln!("FAILED: acknowledged events were lost or never delivered");
            ExitCode::FAILURE
        }
        (true, true, _) => {
            println!("negative control: the harness caught the losses of the broken build");
            ExitCode::SUCCESS
        }
        (true, false, _) => {
            eprintln!(
                "FAILED: the broken build lost nothing the harness could see (is it built with \
                 --features fault-injection?)"
            );
            ExitCode::FAILURE
        }
    }
}
