//! Supervising any program under test (hookd, the ceiling, adnanh/webhook): its output in a
//! log file, its address read from that output, and a guarantee that it dies with us.
//!
//! **Invariant:** whatever is started here is stopped: dropping a [`ProcessGroup`] kills the
//! child's whole process group, and on Linux the kernel kills the child if this process dies
//! without the chance (`PR_SET_PDEATHSIG`).

use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Why a supervised program could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("cannot create {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot check on {name}: {source}")]
    Wait {
        name: String,
        source: std::io::Error,
    },
    #[error(
        "{name} exited before printing `{marker}<address>` ({status}); its last lines:\n{tail}"
    )]
    ExitedEarly {
        name: String,
        marker: String,
        status: ExitStatus,
        tail: String,
    },
    #[error("{name} printed no `{marker}<address>` line within {limit:?}; its last lines:\n{tail}")]
    NoAddress {
        name: String,
        marker: String,
        limit: Duration,
        tail: String,
    },
    #[error("interrupted")]
    Interrupted,
}

/// Puts the child in its own process group (a Ctrl-C on the terminal reaches only us, and we
/// stop it) and, on Linux, has the kernel kill it if we die without getting the chance.
pub fn own_group_and_die_with_us(command: &mut Command) {
    command.process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs between fork and exec; prctl is async-signal-safe and
    // touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A child process (leader of its own process group) that is killed, with its whole group,
/// when dropped.
pub struct ProcessGroup(pub Child);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // Not yet reaped, so the group id (= its pid) cannot have been reused.
            if let Ok(pid) = i32::try_from(self.0.id()) {
                // SAFETY: kill(2) with a negative pid signals that process group; no memory
                // is involved.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A program under test: its process, with stdout and stderr going to one log file. Nothing
/// reads that file while a load runs, so watching the program costs no CPU it could have used.
pub struct Supervised {
    child: ProcessGroup,
    name: String,
    log: PathBuf,
}

impl Supervised {
    /// Starts `command` in its own process group, its output appended to `log`.
    pub fn spawn(mut command: Command, name: &str, log: PathBuf) -> Result<Self, SuperviseError> {
        let file = std::fs::File::create(&log).map_err(|source| SuperviseError::Log {
            path: log.clone(),
            source,
        })?;
        // Both descriptors share one file offset, so lines from the two streams never
        // overwrite each other.
        let copy = file.try_clone().map_err(|source| SuperviseError::Log {
            path: log.clone(),
            source,
        })?;
        command.stdout(copy).stderr(file);
        own_group_and_die_with_us(&mut command);
        let child = command.spawn().map_err(|source| SuperviseError::Spawn {
            name: name.to_owned(),
            source,
        })?;
        Ok(Self {
            child: ProcessGroup(child),
            name: name.to_owned(),
            log,
        })
    }

    /// Waits for a line with `marker` followed by an address, and returns the address;
    /// gives up when `interrupted` says so.
    pub fn wait_for_addr(
        &mut self,
        marker: &str,
        limit: Duration,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<String, SuperviseError> {
        let deadline = Instant::now() + limit;
        loop {
            // Startup output is short; read it all each time.
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(addr) = text.lines().find_map(|l| address_after(l, marker)) {
                return Ok(addr);
            }
            if interrupted() {
                return Err(SuperviseError::Interrupted);
            }
            if let Some(status) = self.exited()? {
                return Err(SuperviseError::ExitedEarly {
                    name: self.name.clone(),
                    marker: marker.to_owned(),
                    status,
                    tail: self.tail(),
                });
            }
            if Instant::now() > deadline {
                return Err(SuperviseError::NoAddress {
                    name: self.name.clone(),
                    marker: marker.to_owned(),
                    limit,
                    tail: self.tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, if the program has exited.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>, SuperviseError> {
        self.child
            .0
            .try_wait()
            .map_err(|source| SuperviseError::Wait {
                name: self.name.clone(),
                source,
            })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The last lines of the program's output, indented, for error messages.
    pub fn tail(&self) -> String {
        const BYTES: u64 = 4096;
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let len = file.metadata().map_or(0, |m| m.len());
            let _ = file.seek(SeekFrom::Start(len.saturating_sub(BYTES)));
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        let lines: Vec<&str> = text.lines().collect();
        // The first line may be cut; 20 lines is enough to see why.
        lines[lines.len().saturating_sub(20)..]
            .iter()
            .map(|l| format!("  {l}\n"))
            .collect()
    }
}

/// The `IP:PORT` right after `marker` in `line`, e.g. in `ingest listening on 127.0.0.1:8080`
/// or in a JSON log line `…"listening on 127.0.0.1:8080"…`.
fn address_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    let addr = &rest[..end];
    addr.parse::<SocketAddr>().ok().map(|_| addr.to_owned())
}

#[cfg(test)]
mod tests {
    use super::address_after;

    #[test]
    fn addresses_are_found_in_plain_and_json_lines() {
        for (line, marker, expected) in [
            (
                "listening on 127.0.0.1:4242",
                "listening on ",
                Some("127.0.0.1:4242"),
            ),
            (
                "ingest listening on 127.0.0.1:80",
                "ingest listening on ",
                Some("127.0.0.1:80"),
            ),
            (
                "admin listening on 127.0.0.1:9",
                "ingest listening on ",
                None,
            ),
            (
                r#"{"level":"INFO","message":"listening on [::1]:8080","listener":"ingest"}"#,
                "listening on ",
                Some("[::1]:8080"),
            ),
            ("listening on somewhere", "listening on ", None),
        ] {
            assert_eq!(address_after(line, marker).as_deref(), expected, "{line}");
        }
    }
}
