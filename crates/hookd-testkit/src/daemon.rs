//! A real `hookd serve` process: started on a config, its OS-picked addresses read from what it
//! prints, awaited until `/readyz` answers, signalled, stopped or killed with SIGKILL.
//!
//! The daemon prints `ingest listening on ADDR` and `admin listening on ADDR` on stdout
//! whatever its log settings; that is how the port picked for `127.0.0.1:0` is found (picking
//! a free port first is racy). Its logs (stderr) are kept in memory when asked for, one line
//! each, so a test can wait for a line.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::http;

/// Why a daemon could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("hookd exited before announcing its addresses ({status:?}); logs:\n{logs}")]
    ExitedEarly {
        status: Option<ExitStatus>,
        logs: String,
    },
    #[error("hookd did not announce its addresses within {limit:?}; logs:\n{logs}")]
    NoAddresses { limit: Duration, logs: String },
    #[error("hookd announced an address that does not parse: `{0}`")]
    BadAddress(String),
    #[error("hookd was not ready within {limit:?}; logs:\n{logs}")]
    NotReady { limit: Duration, logs: String },
    #[error("hookd did not exit within {0:?}")]
    NoExit(Duration),
    #[error("cannot check on hookd: {0}")]
    Wait(std::io::Error),
}

/// How to start a daemon.
#[derive(Debug, Clone)]
pub struct Launch {
    pub binary: PathBuf,
    pub config: PathBuf,
    /// Extra environment (`HOOKD_LOG` is always removed, so the config's filter holds).
    pub env: Vec<(String, String)>,
    /// Keep the daemon's stderr lines (as JSON: `--log-format json` is passed) for
    /// [`Daemon::logs`] and [`Daemon::wait_for_log`]; otherwise stderr is discarded and the
    /// config's log format holds.
    pub keep_logs: bool,
    /// How long from spawn to `/readyz` answering 200.
    pub startup_limit: Duration,
    /// How often `/readyz` is asked while starting.
    pub ready_poll: Duration,
}

impl Launch {
    /// `binary serve --config config`, logs kept, 30 s to be ready, polled every 20 ms.
    pub fn new(binary: impl Into<PathBuf>, config: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            config: config.into(),
            env: Vec::new(),
            keep_logs: true,
            startup_limit: Duration::from_secs(30),
            ready_poll: Duration::from_millis(20),
        }
    }
}

/// A running `hookd serve`; killed with SIGKILL when dropped.
pub struct Daemon {
    pub child: Child,
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// The thread reading stderr into `logs`; it ends when the daemon's stderr closes.
    log_reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts the daemon under test (see [`crate::hookd_binary`]) on `config`.
    ///
    /// # Panics
    /// When it does not start and become ready: the test fails with its logs.
    #[track_caller]
    pub fn start(config: &Path) -> Daemon {
        Self::start_watching(config, |_| {})
    }

    /// [`Daemon::start`], calling `on_line` with each log line as soon as it is read (from
    /// the thread reading them), to act at a precise moment of the start.
    #[track_caller]
    pub fn start_watching(config: &Path, on_line: impl Fn(&str) + Send + 'static) -> Daemon {
        let launch = Launch::new(crate::hookd_binary(), config);
        match Self::launch_watching(&launch, on_line) {
            Ok((daemon, _)) => daemon,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts a daemon as `launch` says and waits until it is ready; also returns how long
    /// that took from spawn.
    pub fn launch(launch: &Launch) -> Result<(Daemon, Duration), DaemonError> {
        Self::launch_watching(launch, |_| {})
    }

    /// [`Daemon::launch`] with `on_line` called for each log line as it is read.
    fn launch_watching(
        launch: &Launch,
        on_line: impl Fn(&str) + Send + 'static,
    ) -> Result<(Daemon, Duration), DaemonError> {
        let started = Instant::now();
        let mut command = Command::new(&launch.binary);
        command.arg("serve");
        if launch.keep_logs {
            command.args(["--log-format", "json"]);
        }
        command
            .arg("--config")
            .arg(&launch.config)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env_remove("HOOKD_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if launch.keep_logs {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = command.spawn().map_err(|source| DaemonError::Spawn {
            binary: launch.binary.clone(),
            source,
        })?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut log_reader = None;
        if let Some(stderr) = child.stderr.take() {
            let sink = logs.clone();
            log_reader = Some(std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    on_line(&line);
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            }));
        }
        // Addresses from stdout, read on a thread of its own so the wait has a deadline; the
        // thread then drains stdout so the daemon never blocks writing to it.
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            });
        }
        let joined = |logs: &Arc<Mutex<Vec<String>>>| {
            logs.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
        };
        let (mut ingest, mut admin) = (None, None);
        let deadline = started + launch.startup_limit;
        while ingest.is_none() || admin.is_none() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(remaining) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    return Err(DaemonError::ExitedEarly {
                        status,
                        logs: joined(&logs),
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(DaemonError::NoAddresses {
                        limit: launch.startup_limit,
                        logs: joined(&logs),
                    });
                }
            };
            for (prefix, slot) in [
                ("ingest listening on ", &mut ingest),
                ("admin listening on ", &mut admin),
            ] {
                if let Some(addr) = line.strip_prefix(prefix) {
                    let addr = addr.trim();
                    *slot = Some(
                        addr.parse()
                            .map_err(|_| DaemonError::BadAddress(addr.to_owned()))?,
                    );
                }
            }
        }
        let (Some(ingest), Some(admin)) = (ingest, admin) else {
            unreachable!("the loop ends only with both addresses");
        };
        let daemon = Daemon {
            child,
            ingest,
            admin,
            logs,
            log_reader,
        };
        let ready = crate::wait::poll_until(
            deadline.saturating_duration_since(Instant::now()),
            launch.ready_poll,
            || matches!(http::get(daemon.admin, "/readyz"), Some((200, _))),
        );
        if !ready {
            return Err(DaemonError::NotReady {
                limit: launch.startup_limit,
                logs: joined(&daemon.logs),
            });
        }
        Ok((daemon, started.elapsed()))
    }

    /// The ingest URL (`/webhooks`).
    pub fn url(&self) -> String {
        format!("http://{}/webhooks", self.ingest)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `GET path` on the admin listener (no client library): status and body.
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        http::get(self.admin, path)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the daemon.
    ///
    /// # Panics
    /// When the process cannot be signalled (it was reaped).
    #[track_caller]
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: sending a signal to our own child process; no memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// SIGTERM, then wait for a clean exit.
    ///
    /// # Panics
    /// When it has not exited within 30 s.
    #[track_caller]
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        match wait_exit(&mut self.child, Duration::from_secs(30)) {
            Ok(status) => status,
            Err(e) => panic!("{e}"),
        }
    }

    /// SIGTERM, wait for a clean exit, and return every line the daemon logged: the only
    /// complete view, for checking that something was never logged.
    ///
    /// # Panics
    /// When it has not exited within 30 s.
    #[track_caller]
    pub fn stop_with_logs(mut self) -> (ExitStatus, Vec<String>) {
        self.signal(libc::SIGTERM);
        let status = match wait_exit(&mut self.child, Duration::from_secs(30)) {
            Ok(status) => status,
            Err(e) => panic!("{e}"),
        };
        if let Some(reader) = self.log_reader.take() {
            // The daemon has exited, so its stderr is at its end and the reader finishes.
            let _ = reader.join();
        }
        (status, self.logs())
    }

    /// SIGTERM, then wait up to `limit` for the exit; for tools.
    pub fn terminate(mut self, limit: Duration) -> Result<ExitStatus, DaemonError> {
        // SAFETY: signalling our own child; no memory is involved.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        wait_exit(&mut self.child, limit)
    }

    /// SIGKILL, and reap it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for a log line that `matches`, and returns it: lines are written by the daemon's
    /// log thread some time after what they report, so a test never looks only once.
    ///
    /// # Panics
    /// With `what` and the logs when no such line came within `timeout`.
    #[track_caller]
    pub fn wait_for_log(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let found = || self.logs().into_iter().find(|l| matches(l));
        if crate::wait::poll_until(timeout, crate::wait::POLL, || found().is_some())
            && let Some(line) = found()
        {
            return line;
        }
        panic!(
            "timed out after {timeout:?} waiting for a log line: {what}; logs:\n{}",
            self.logs().join("\n")
        );
    }

    /// `field` (`VmRSS`, `VmHWM`, ...) of the daemon's `/proc/PID/status`, in KiB.
    pub fn proc_status_kib(&self, field: &str) -> Option<u64> {
        proc_status_kib(self.pid(), field)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `field` of `/proc/PID/status`, in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix(" kB")?
            .parse()
            .ok()
    })
}

/// Waits for `child` to exit; kills it after `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> Result<ExitStatus, DaemonError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(DaemonError::Wait)? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(DaemonError::NoExit(timeout));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for `child` to exit.
///
/// # Panics
/// When `child` has not exited within `timeout` (it is killed first).
#[track_caller]
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    match wait_exit(child, timeout) {
        Ok(status) => status,
        Err(e) => panic!("{e}"),
    }
}
