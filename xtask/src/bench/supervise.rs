//! Child processes that end: every command runs bounded in time, and Ctrl-C or SIGTERM makes
//! every wait unwind, which kills the children and removes the temp dirs on the way out.

use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hookd_testkit::process::ProcessGroup;

/// Set by SIGINT / SIGTERM; every wait in here checks it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C or SIGTERM came: the waits poll this to stop early.
pub(super) fn stop_requested() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

pub(super) fn interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}
/// Runs `command` to completion, killing it after `limit` or on Ctrl-C.
pub(crate) fn run_bounded(command: &mut Command, limit: Duration) -> anyhow::Result<ExitStatus> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = ProcessGroup(
        command
            .spawn()
            .with_context(|| format!("cannot start {program}"))?,
    );
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.0.try_wait()? {
            return Ok(status);
        }
        interrupted()?;
        if Instant::now() > deadline {
            bail!("{program} took longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
/// SIGINT and SIGTERM set [`INTERRUPTED`]; the waits notice it and unwind, which kills every
/// child and removes every temp dir on the way out.
pub(crate) fn catch_signals() {
    extern "C" fn on_signal(_: libc::c_int) {
        INTERRUPTED.store(true, Ordering::Relaxed);
    }
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(signal, handler as libc::sighandler_t);
        }
    }
}
