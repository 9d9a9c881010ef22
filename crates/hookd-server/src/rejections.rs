//! Refused requests and connections, logged in aggregate: at most one line per reason per
//! second, carrying how many there were.
//!
//! A flood of forged or oversized requests must neither drown the journal (journald's rate
//! limit would then drop the warnings that matter) nor block request workers on the log
//! writer, which slows its callers down rather than dropping lines. So a worker only bumps an
//! atomic counter for the reason (and notes the client's address and the request's size as a
//! sample); a thread of its own, `hookd-rejections`, writes the lines. The first rejection
//! after a quiet second is written at once, with `count = 1`; the rest of a burst is summed
//! into one line per reason per second. The metrics (`hookd_requests_rejected_total`) are
//! counted per request elsewhere and stay exact.
//!
//! **Invariant:** a line carries the reason, the count, the last client's address and the
//! largest size seen: nothing of an unauthenticated request's content.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

/// At most one line per reason this often.
const INTERVAL: Duration = Duration::from_secs(1);

/// Every reason logged here, and whether it is worth a warning. Requests to another path or
/// with another method are routine scanner noise: `debug`.
const REASONS: [(&str, bool); 13] = [
    ("missing_signature", true),
    ("bad_signature", true),
    ("too_large", true),
    ("body_timeout", true),
    ("body_budget", true),
    ("body_error", false),
    ("not_found", false),
    ("method_not_allowed", false),
    ("queue_full", true),
    ("store_error", true),
    ("shutting_down", true),
    ("too_many_connections", true),
    ("other", true),
];

/// The aggregated rejection log. Cheap to clone; the writer thread starts with the first
/// rejection and ends once the last clone is dropped, writing what is still counted.
#[derive(Clone, Default)]
pub struct RejectionLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RejectionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RejectionLog").finish_non_exhaustive()
    }
}

struct Inner {
    tallies: [Tally; REASONS.len()],
    /// The writer thread, started on first use; `None` if it could not be started.
    writer: OnceLock<Option<Thread>>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            tallies: REASONS.map(|(reason, warn)| Tally {
                reason,
                warn,
                count: AtomicU64::new(0),
                max_size: AtomicU64::new(0),
                last_peer: Mutex::new(None),
            }),
            writer: OnceLock::new(),
        }
    }
}

/// What was refused for one reason since its last line.
struct Tally {
    reason: &'static str,
    warn: bool,
    count: AtomicU64,
    /// The largest size seen (declared or read), 0 if none was known.
    max_size: AtomicU64,
    /// A sample: the client of a recent rejection.
    last_peer: Mutex<Option<SocketAddr>>,
}

impl RejectionLog {
    /// Counts one rejection for the log. Never blocks: a contended sample is skipped.
    pub fn record(&self, reason: &'static str, peer: Option<SocketAddr>, size: Option<u64>) {
        let tallies = &self.inner.tallies;
        let Some(tally) = tallies
            .iter()
            .find(|t| t.reason == reason)
            .or_else(|| tallies.last())
        else {
            return;
        };
        if let Some(size) = size {
            tally.max_size.fetch_max(size, Ordering::Relaxed);
        }
        if let Some(peer) = peer
            && let Ok(mut last) = tally.last_peer.try_lock()
        {
            *last = Some(peer);
        }
        // Only the first rejection since the last line wakes the writer: under a flood, one
        // wake-up per line, not per request.
        if tally.count.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(writer) = self.writer()
        {
            writer.unpark();
        }
    }

    fn writer(&self) -> Option<&Thread> {
        self.inner
            .writer
            .get_or_init(|| {
                let inner = Arc::downgrade(&self.inner);
                match std::thread::Builder::new()
                    .name("hookd-rejections".into())
                    .spawn(move || write_lines(&inner))
                {
                    Ok(handle) => Some(handle.thread().clone()),
                    Err(e) => {
                        // The metrics still count every rejection.
                        warn!(error = %e, "cannot start the rejection log thread; rejections are counted but not logged");
                        None
                    }
                }
            })
            .as_ref()
    }
}

/// The writer thread: writes each reason's line when it is due, sleeps until the next one is.
fn write_lines(inner: &Weak<Inner>) {
    let mut last_line: [Option<Instant>; REASONS.len()] = [None; REASONS.len()];
    loop {
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let mut next_due: Option<Instant> = None;
        for (tally, last) in inner.tallies.iter().zip(last_line.iter_mut()) {
            if tally.count.load(Ordering::Acquire) == 0 {
                continue;
            }
            let due = last.map_or(now, |at| at + INTERVAL);
            if due <= now {
                tally.write_line();
                *last = Some(now);
            } else {
                next_due = Some(next_due.map_or(due, |n| n.min(due)));
            }
        }
        // Not held while asleep, so that the last handle's drop can end this thread.
        drop(inner);
        match next_due {
            Some(at) => std::thread::park_timeout(at.saturating_duration_since(Instant::now())),
            None => std::thread::park_timeout(Duration::from_secs(60)),
        }
    }
}

impl Tally {
    /// Writes what was counted since the last line, if anything, and starts counting anew.
    fn write_line(&self) {
        let count = self.count.swap(0, Ordering::AcqRel);
        if count == 0 {
            return;
        }
        let max_size = match self.max_size.swap(0, Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        };
        let peer = self
            .last_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .map(tracing::field::display);
        let reason = self.reason;
        if self.warn {
            warn!(reason, count, peer, max_size, "requests rejected");
        } else {
            debug!(reason, count, peer, max_size, "requests rejected");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The daemon is stopping: write what the last second counted.
        for tally in &self.tallies {
            tally.write_line();
        }
        if let Some(Some(writer)) = self.writer.get() {
            writer.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_the_server_refuses_for_has_its_own_tally() {
        for reason in crate::metrics::REASONS {
            let logged = REASONS.iter().any(|(r, _)| *r == reason);
            // Rejections of signed requests (bad envelopes) are logged one by one, with
            // their detail: only a sender holding the secret can make them.
            let authenticated = matches!(reason, "bad_json" | "too_deep" | "bad_envelope");
            assert!(logged || authenticated, "{reason} has no tally");
        }
    }

    #[test]
    fn a_burst_is_counted_for_one_line() {
        let log = RejectionLog::default();
        // No writer thread: what is counted stays counted.
        assert!(log.inner.writer.set(None).is_ok());
        let peer: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        for size in [10, 300, 20] {
            log.record("bad_signature", Some(peer), Some(size));
        }
        let tally = &log.inner.tallies[1];
        assert_eq!(tally.reason, "bad_signature");
        assert_eq!(tally.count.load(Ordering::Acquire), 3);
        assert_eq!(tally.max_size.load(Ordering::Relaxed), 300);
    }
}
