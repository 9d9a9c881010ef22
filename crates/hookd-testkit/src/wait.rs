//! Waiting for something observable, with a deadline: the only way the suites synchronise
//! with a daemon. A sleep is never evidence that something happened or did not.

use std::time::{Duration, Instant};

/// How often a condition is polled.
pub(crate) const POLL: Duration = Duration::from_millis(25);

/// Waits until `done` holds, polling every `POLL` (25 ms).
///
/// # Panics
/// With `what` when `timeout` passes first.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    if !poll_until(timeout, POLL, &mut done) {
        panic!("timed out after {timeout:?} waiting for: {what}");
    }
}

/// Waits until `found` returns `Some`, polling every `POLL` (25 ms), and returns what it found.
///
/// # Panics
/// With `what` when `timeout` passes first.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut found: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = found() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `done` every `every` until it holds (`true`) or `timeout` passes (`false`); for tools
/// that report a timeout rather than panic.
pub fn poll_until(timeout: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}
