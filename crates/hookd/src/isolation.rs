//! Ingest first: the threads plugins run on, apart from the listeners' and below them.
//!
//! The durable queue exists so that a sender is answered at disk speed while plugins catch up.
//! That only holds if plugins cannot take the CPU the listeners need, so:
//! - **Their own runtime.** The dispatcher, every delivery and the compiling of reloaded
//!   plugins run on a second tokio runtime (`hookd-plugin` threads); the ingest and admin
//!   listeners keep the main runtime's workers to themselves. A busy plugin never sits on a
//!   worker that a request is queued behind.
//! - **Lower priority.** Those threads (and the compiler's rayon threads) lower their own
//!   scheduling priority (`nice` +10, a per-thread setting on Linux): when both want the CPU,
//!   the kernel gives listener threads about ten times the share of plugin threads, and when
//!   ingest is idle, plugins get all of it. Only raising priority needs privilege, so this
//!   works as any user and under the systemd unit (whose system call filter allows
//!   `setpriority`).
//! - **Cooperative.** A running plugin yields its thread every epoch tick (10 ms; see
//!   `hookd_host`), so a CPU-heavy delivery never holds up the dispatcher or other deliveries.
//!
//! Under overload the backlog grows in the durable queue, visible as `hookd_deliveries_pending`
//! and in `/status`; the sender is not slowed.

use std::io;

/// How much lower than the listeners plugin threads run (`nice` is 0 for the listeners).
pub const PLUGIN_NICE: i32 = 10;

/// The runtime deliveries run on: one worker per core, each at [`PLUGIN_NICE`].
pub fn plugin_runtime() -> io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // wasmtime compiles on rayon's global pool: start it now, at the same lower priority.
    // (An error means it was started already, e.g. by a test harness: nothing to do.)
    let _ = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("hookd-compile-{i}"))
        .start_handler(|_| lower_this_thread())
        .build_global();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("hookd-plugin")
        .on_thread_start(lower_this_thread)
        .enable_all()
        .build()
}

/// Lowers the calling thread's priority to [`PLUGIN_NICE`]. On Linux, `setpriority` with
/// `PRIO_PROCESS` and id 0 applies to the calling thread alone.
fn lower_this_thread() {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, PLUGIN_NICE) };
    if result != 0 {
        tracing::warn!(
            error = %io::Error::last_os_error(),
            "cannot lower the priority of a plugin thread; plugins compete with ingest for the CPU"
        );
    }
}

/// The calling thread's nice value (for tests and `/status`).
#[cfg(test)]
fn this_thread_nice() -> i32 {
    // SAFETY: as above; getpriority may return -1 legitimately, errno tells.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_threads_run_below_the_listeners() {
        let before = this_thread_nice();
        let rt = plugin_runtime().unwrap();
        let inside =
            rt.block_on(async { tokio::spawn(async { this_thread_nice() }).await.unwrap() });
        assert_eq!(inside, before + PLUGIN_NICE);
        assert_eq!(
            this_thread_nice(),
            before,
            "the caller's priority is untouched"
        );
    }
}
