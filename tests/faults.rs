//! Store faults against the real binary: a full disk (a small tmpfs), fsync errors (an
//! `LD_PRELOAD` shim around `fsync`/`fdatasync`), a corrupted or truncated database at start.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hookd_testkit::{Daemon, Env, stored_ids, wait_until};

/// A tmpfs of `size` mounted on `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` where this machine does not let us mount (not root).
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(dir.to_owned()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// An event with a payload of about `size` bytes.
fn big_event(id: &str, size: usize) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","type":"message.created","payload":{{"id":"m-{id}","message":"{}"}}}}"#,
        "x".repeat(size)
    )
    .into_bytes()
}

#[test]
#[ignore = "needs root: mounts a small tmpfs; .ci/run runs it with --ignored"]
fn a_full_disk_gets_503_acknowledges_nothing_unstored_and_recovers_when_space_returns() {
    let env = Env::with_config("", "");
    let mnt = env.dir.path().join("disk");
    let Some(disk) = Tmpfs::mount(&mnt, "3m") else {
        panic!("cannot mount a tmpfs here: this test needs root (and CAP_SYS_ADMIN)");
    };
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        text.replace(
            "dir = \"state\"",
            &format!("dir = \"{}\"", mnt.join("state").display()),
        ),
    )
    .unwrap();
    let daemon = env.start();

    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for i in 0..200 {
        let id = format!("full-{i}");
        let response = daemon.post(&big_event(&id, 64 * 1024));
        match response.status().as_u16() {
            200 => acked.push(id),
            503 => {
                assert!(response.headers().get("retry-after").is_some());
                refused.push(id);
            }
            other => panic!("{id}: unexpected {other}"),
        }
        if refused.len() >= 5 {
            break;
        }
    }
    assert!(!acked.is_empty(), "nothing fitted at all");
    assert!(refused.len() >= 5, "the disk never filled up");
    let health = hookd_testkit::client()
        .get(daemon.admin_url("/healthz"))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200, "a full disk does not stop the writer");
    assert!(
        daemon
            .metrics()
            .contains("hookd_requests_rejected_total{reason=\"store_error\"}"),
    );

    // Space returns: the same events are accepted now.
    disk.resize("64m");
    wait_until("events are accepted again", Duration::from_secs(30), || {
        daemon.post(&big_event(&refused[0], 64 * 1024)).status() == 200
    });
    for id in &refused[1..] {
        assert_eq!(daemon.post(&big_event(id, 64 * 1024)).status(), 200);
    }
    assert!(daemon.stop().success());

    let stored = stored_ids(&mnt.join("state"));
    for id in acked.iter().chain(&refused) {
        assert!(stored.contains(id), "{id} acknowledged but not stored");
    }
    println!(
        "full disk: {} acknowledged before it filled, {} refused with 503, all stored after \
         space returned",
        acked.len(),
        refused.len()
    );
    drop(disk);
}

fn serve_fails(env: &Env) -> (Option<i32>, String) {
    let out = Command::new(hookd_testkit::hookd_binary())
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&env.config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_corrupted_or_truncated_store_is_refused_at_start_and_left_as_it_is() {
    let env = Env::new("");
    let daemon: Daemon = env.start();
    for i in 0..20 {
        assert_eq!(
            daemon
                .post(&hookd_testkit::event(&format!("c-{i}"), "message.created"))
                .status(),
            200
        );
    }
    assert!(daemon.stop().success());
    let db = env.store_dir().join("hookd.db");
    let good = std::fs::read(&db).unwrap();

    // Corrupted: a page in the middle overwritten.
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle..middle + 512].fill(0xa5);
    std::fs::write(&db, &bad).unwrap();
    let (code, stderr) = serve_fails(&env);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("hookd.db"),
        "the message names the file: {stderr}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        bad,
        "the file is left for inspection"
    );

    // Truncated.
    std::fs::write(&db, &good[..good.len() / 3]).unwrap();
    let (code, stderr) = serve_fails(&env);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("hookd.db"), "{stderr}");

    // Restored: it starts, with every event.
    std::fs::write(&db, &good).unwrap();
    let daemon = env.start();
    assert_eq!(stored_ids(&env.store_dir()).len(), 20);
    daemon.stop();
}

/// `fsync` and `fdatasync` fail with EIO while the file named by `HOOKD_FSYNC_FAULT_FILE`
/// exists.
const FSYNC_SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int failing(void) {
    const char *path = getenv("HOOKD_FSYNC_FAULT_FILE");
    return path && access(path, F_OK) == 0;
}

int fsync(int fd) {
    static int (*real)(int);
    if (failing()) { errno = EIO; return -1; }
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (failing()) { errno = EIO; return -1; }
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}
"#;

#[test]
fn fsync_errors_get_503_acknowledge_nothing_and_pass_when_the_disk_recovers() {
    let env = Env::new("");
    let shim_src = env.dir.path().join("fsync_fault.c");
    let shim = env.dir.path().join("libfsync_fault.so");
    std::fs::write(&shim_src, FSYNC_SHIM).unwrap();
    let compiled = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(&shim_src)
        .arg("-ldl")
        .status();
    // The bundled SQLite needs the same C compiler to build at all, so it is there.
    assert!(
        compiled.is_ok_and(|s| s.success()),
        "cannot build the fsync fault shim with the C compiler"
    );
    let trigger = env.dir.path().join("fsync-fails");
    let mut child = Command::new(hookd_testkit::hookd_binary())
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&env.config)
        .env("LD_PRELOAD", &shim)
        .env("HOOKD_FSYNC_FAULT_FILE", &trigger)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let url = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(addr) = line.strip_prefix("ingest listening on ") {
            break format!("http://{addr}/webhooks");
        }
    };
    let post = |id: &str| {
        let body = hookd_testkit::event(id, "message.created");
        hookd_testkit::client()
            .post(&url)
            .header("x-protocol-signature", hookd_testkit::sign(&body))
            .body(body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let mut acked = Vec::new();
    for i in 0..5 {
        assert_eq!(post(&format!("before-{i}")), 200);
        acked.push(format!("before-{i}"));
    }
    std::fs::write(&trigger, b"").unwrap();
    let mut refused = Vec::new();
    for i in 0..5 {
        let id = format!("during-{i}");
        match post(&id) {
            200 => acked.push(id),
            503 => refused.push(id),
            other => panic!("{id}: {other}"),
        }
    }
    assert_eq!(refused.len(), 5, "every commit needs an fsync: all refused");
    std::fs::remove_file(&trigger).unwrap();
    wait_until("commits succeed again", Duration::from_secs(30), || {
        post("after-probe") == 200
    });
    acked.push("after-probe".into());
    for i in 0..5 {
        assert_eq!(post(&format!("after-{i}")), 200);
        acked.push(format!("after-{i}"));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(hookd_testkit::wait_with_timeout(&mut child, Duration::from_secs(30)).success());
    let stored = stored_ids(&env.store_dir());
    for id in &acked {
        assert!(stored.contains(id), "{id} acknowledged but not stored");
    }
    for id in &refused {
        assert!(!stored.contains(id), "{id} refused but stored anyway");
    }
}
