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
//! - **Lower priority.** The plugin threads lower their own scheduling (`[plugins] priority`,
//!   a per-thread setting on Linux). By default they take `SCHED_IDLE`: they run only on CPU
//!   nothing else wants, and a listener or writer thread that wakes takes the CPU from them
//!   at once (a nice value alone lets a plugin finish its slice first, milliseconds added to
//!   every request; measured in BENCHMARKS.md). `low` is `nice` 10 instead, `normal` leaves
//!   them as they are. Only raising priority needs privilege, so this works as any user and
//!   under the systemd unit (whose system call filter allows `setpriority` and
//!   `sched_setscheduler` back). The cost: on a machine whose CPU other work keeps busy,
//!   plugins wait, and their wall-clock deadlines run while they wait.
//! - **Cooperative.** A running plugin yields its thread every epoch tick (10 ms; see
//!   `hookd_host`), so a CPU-heavy delivery never holds up the dispatcher or other deliveries.
//!
//! Under overload the backlog grows in the durable queue, visible as `hookd_deliveries_pending`
//! and in `/status`; the sender is not slowed.

use std::io;

use hookd_config::PluginPriority;

/// The runtime deliveries run on: one worker per core, each scheduled per `priority`
/// (`[plugins] priority`; the listeners keep the default policy).
pub fn plugin_runtime(priority: PluginPriority) -> io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("hookd-plugin")
        .on_thread_start(move || lower_this_thread(priority))
        .enable_all()
        .build()
}

/// Lowers the calling thread's scheduling: on Linux both calls apply to the calling thread
/// alone (id 0), and lowering needs no privilege.
fn lower_this_thread(priority: PluginPriority) {
    // SAFETY: both calls take plain integers or a pointer to a local, and keep nothing.
    let result = match priority {
        PluginPriority::Normal => return,
        PluginPriority::Low => unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) },
        PluginPriority::Idle => {
            let param = libc::sched_param { sched_priority: 0 };
            unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) }
        }
    };
    if result != 0 {
        tracing::warn!(
            error = %io::Error::last_os_error(),
            ?priority,
            "cannot lower the priority of a plugin thread; plugins compete with ingest for the CPU"
        );
    }
}

/// The calling thread's nice value and scheduling policy (for tests).
#[cfg(test)]
fn this_thread_scheduling() -> (i32, i32) {
    // SAFETY: plain reads of the calling thread's settings.
    unsafe {
        (
            libc::getpriority(libc::PRIO_PROCESS, 0),
            libc::sched_getscheduler(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_threads_run_below_the_listeners() {
        let before = this_thread_scheduling();
        for (priority, expected) in [
            (PluginPriority::Idle, (before.0, libc::SCHED_IDLE)),
            (PluginPriority::Low, (before.0 + 10, before.1)),
            (PluginPriority::Normal, before),
        ] {
            let rt = plugin_runtime(priority).unwrap();
            let inside = rt.block_on(async {
                tokio::spawn(async { this_thread_scheduling() })
                    .await
                    .unwrap()
            });
            assert_eq!(inside, expected, "{priority:?}");
        }
        assert_eq!(this_thread_scheduling(), before, "the caller is untouched");
    }
}
