//! Ingest first: the threads plugins run on, apart from the listeners' and below them.
//!
//! The durable queue exists so that a sender is answered at disk speed while plugins catch up.
//! That only holds if plugins cannot take the CPU the listeners need, so:
//! - **Their own runtime.** The dispatcher, every delivery and the reloading of plugins run
//!   on a second tokio runtime (`hookd-plugin` threads); the ingest and admin listeners keep
//!   the main runtime's workers to themselves. A busy plugin never sits on a worker that a
//!   request is queued behind. (Compiling itself runs on wasmtime's rayon threads at normal
//!   priority: at start it must not wait behind other processes of the machine, and a reload
//!   is rare; it still never runs on a listener's worker.)
//! - **Lower priority.** The plugin threads lower their own scheduling priority (`nice` +10
//!   by default, `[plugins] nice`; a per-thread setting on Linux): when both want the CPU,
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

/// The runtime deliveries run on: one worker per core, each at nice `nice` (`[plugins] nice`,
/// 10 by default; the listeners stay at 0).
pub fn plugin_runtime(nice: i32) -> io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("hookd-plugin")
        .on_thread_start(move || lower_this_thread(nice))
        .enable_all()
        .build()
}

/// Lowers the calling thread's priority to `nice`. On Linux, `setpriority` with
/// `PRIO_PROCESS` and id 0 applies to the calling thread alone.
fn lower_this_thread(nice: i32) {
    if nice == 0 {
        return;
    }
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
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
        let rt = plugin_runtime(10).unwrap();
        let inside =
            rt.block_on(async { tokio::spawn(async { this_thread_nice() }).await.unwrap() });
        assert_eq!(inside, before + 10);
        assert_eq!(
            this_thread_nice(),
            before,
            "the caller's priority is untouched"
        );
    }
}
