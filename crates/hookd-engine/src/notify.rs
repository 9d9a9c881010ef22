//! The systemd notify protocol (`Type=notify`), through the `sd-notify` crate: `READY=1` once
//! the store is open, the plugins are loaded and the listeners are bound; `RELOADING=1` (with
//! `MONOTONIC_USEC`) then `READY=1` around a SIGHUP reload; `STOPPING=1` on shutdown; `STATUS=`
//! lines for `systemctl status`; and `WATCHDOG=1` pings, sent only while the store writer and
//! the dispatcher are making progress, so a stuck daemon is restarted by systemd.
//!
//! Everything here is a no-op without `NOTIFY_SOCKET` (not started by systemd), and a failure
//! to notify is logged, never fatal.

use std::sync::Arc;
use std::time::Duration;

use hookd_storage::EventLog;
use sd_notify::NotifyState;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::dispatch::Heartbeat;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify the service manager");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading the configuration"),
        ]),
        Err(e) => warn!(error = %e, "cannot read the monotonic clock for RELOADING"),
    }
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing requests in flight"),
    ]);
}

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// What the watchdog checks before each ping.
pub struct Liveness {
    pub log: Arc<dyn EventLog>,
    pub dispatcher: Arc<Heartbeat>,
}

impl Liveness {
    /// `None` when both make progress, else what is stuck.
    async fn stuck(&self, within: Duration) -> Option<&'static str> {
        if !self.log.ping(within).await {
            return Some("the store writer has not committed what is queued");
        }
        // The dispatcher's loop turns at least every 500 ms.
        if self.dispatcher.age() > within.max(Duration::from_secs(2)) {
            return Some("the dispatcher loop has not turned");
        }
        None
    }
}

/// Pings the watchdog at half its interval while `liveness` holds, until `stop`. Returns at
/// once when systemd asked for no watchdog.
pub async fn watchdog(liveness: Liveness, mut stop: watch::Receiver<bool>) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = interval / 2;
    debug!(
        interval_ms = interval.as_millis() as u64,
        "watchdog enabled"
    );
    let mut was_stuck = false;
    loop {
        match liveness.stuck(period / 2).await {
            None => {
                if was_stuck {
                    warn!("progress again: watchdog pings resume");
                    was_stuck = false;
                }
                send(&[NotifyState::Watchdog]);
            }
            Some(what) => {
                if !was_stuck {
                    warn!(
                        problem = what,
                        "not pinging the watchdog: systemd restarts hookd if this lasts"
                    );
                    was_stuck = true;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Sends a `STATUS=` line every `every` until `stop`: what `systemctl status` shows.
pub async fn status_loop(
    every: Duration,
    mut describe: impl FnMut(Duration) -> String + Send,
    mut stop: watch::Receiver<bool>,
) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let now = tokio::time::Instant::now();
        status(&describe(now - last));
        last = now;
    }
}
