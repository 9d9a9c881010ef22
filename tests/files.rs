//! The store's files are hookd's alone, against the real binary: a store folder or
//! compiled-code cache that another user owns or that group or others can write stops the
//! start with a message naming the path and the fix; the database and its journal files are
//! 0600 whatever the umask of whoever starts hookd.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hookd_testkit::{Env, wait_until};

/// A manual start with the usual login umask (the unit's `UMask=0077` does not apply).
fn loose_umask() {
    // SAFETY: umask only sets this process's file creation mask; the daemons these tests start
    // inherit it, as they would from a shell.
    unsafe { libc::umask(0o022) };
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `hookd serve` to its exit (it must not start); returns its exit code and stderr.
fn serve_refused(env: &Env) -> (i32, String) {
    let mut child = Command::new(hookd_testkit::hookd_binary())
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&env.config)
        .env_remove("HOOKD_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = hookd_testkit::wait_with_timeout(&mut child, Duration::from_secs(30));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code().unwrap_or(-1), stderr)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o777
}

#[test]
fn a_store_folder_writable_by_group_stops_the_start_and_says_how_to_fix_it() {
    loose_umask();
    let env = Env::new("");
    let state = env.store_dir();
    std::fs::create_dir(&state).unwrap();
    chmod(&state, 0o770);
    let (code, stderr) = serve_refused(&env);
    assert_eq!(code, 1, "{stderr}");
    let path = state.display().to_string();
    for part in [
        format!("refusing the store directory `{path}`"),
        "writable by group or others (mode 770)".to_owned(),
        format!("fix it with `chmod go-w {path}`"),
    ] {
        assert!(stderr.contains(&part), "{part}\n{stderr}");
    }
    assert!(
        !state.join("hookd.db").exists(),
        "nothing was created in it"
    );

    // Fixed as the message says: hookd starts.
    chmod(&state, 0o750);
    let daemon = env.start();
    assert!(daemon.stop().success());
}

#[test]
#[ignore = "needs root: gives the store folder to another user; .ci/run runs it with --ignored"]
fn a_store_folder_owned_by_another_user_stops_the_start() {
    loose_umask();
    let env = Env::new("");
    let state = env.store_dir();
    std::fs::create_dir(&state).unwrap();
    chmod(&state, 0o700);
    // Only root can give a folder away.
    if let Err(e) = std::os::unix::fs::chown(&state, Some(65534), Some(65534)) {
        panic!("cannot chown to nobody ({e}): this test needs root");
    }
    let (code, stderr) = serve_refused(&env);
    assert_eq!(code, 1, "{stderr}");
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    for part in [
        format!("refusing the store directory `{}`", state.display()),
        format!("owned by uid 65534, not by uid {euid} that hookd runs as"),
        format!("`chown -R {euid} {}`", state.display()),
    ] {
        assert!(stderr.contains(&part), "{part}\n{stderr}");
    }
}

#[test]
fn a_code_cache_writable_by_others_stops_the_start() {
    loose_umask();
    let env = Env::new("");
    let cache = env.store_dir().join("code-cache");
    std::fs::create_dir_all(&cache).unwrap();
    chmod(&env.store_dir(), 0o700);
    chmod(&cache, 0o777);
    let (code, stderr) = serve_refused(&env);
    assert_eq!(code, 1, "{stderr}");
    let path = cache.display().to_string();
    for part in [
        format!("refusing the compiled-code cache `{path}`"),
        "writable by group or others (mode 777)".to_owned(),
        "loaded as native code".to_owned(),
        format!("fix it with `chmod go-w {path}`"),
    ] {
        assert!(stderr.contains(&part), "{part}\n{stderr}");
    }
}

#[test]
fn the_database_and_its_journal_files_are_private_whatever_the_umask() {
    loose_umask();
    let env = Env::new("");
    let daemon = env.start();
    let body = hookd_testkit::event("files-1", "message.created");
    assert_eq!(daemon.post(&body).status(), 200);
    let state = env.store_dir();
    for file in ["hookd.db", "hookd.db-wal", "hookd.db-shm"] {
        let path = state.join(file);
        wait_until(&format!("{file} exists"), Duration::from_secs(10), || {
            path.exists()
        });
        assert_eq!(mode(&path), 0o600, "{file}");
    }
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("code-cache")), 0o700);
    assert!(daemon.stop().success());

    // A database an older hookd (or a copy) left readable by others is made private again.
    chmod(&state.join("hookd.db"), 0o644);
    let daemon = env.start();
    assert_eq!(mode(&state.join("hookd.db")), 0o600);
    daemon.wait_for_log("the repair is logged", Duration::from_secs(30), |l| {
        l.contains("the store file was readable by others; made it 0600")
    });
    assert!(daemon.stop().success());
}

#[test]
fn a_cache_entry_others_could_have_written_is_never_loaded() {
    loose_umask();
    let env = Env::new("");
    hookd_testkit::install_plugin(
        &env,
        "logger",
        hookd_test_plugins::LOGGER,
        "events = [\"*\"]\n",
    );
    let daemon = env.start();
    assert!(daemon.stop().success());
    let cache = env.store_dir().join("code-cache");
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(mode(&entries[0]), 0o600);
    chmod(&entries[0], 0o666);

    let daemon = env.start();
    let plugins: Vec<serde_json::Value> = hookd_testkit::client()
        .get(daemon.admin_url("/plugins"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(plugins[0]["loaded"], true);
    assert_eq!(plugins[0]["cache_hit"], false, "the entry was not used");
    daemon.wait_for_log(
        "the refused entry is logged",
        Duration::from_secs(30),
        |l| l.contains("compiled-code cache entry not written by hookd"),
    );
    // Compiled again and written afresh, private.
    assert!(daemon.stop().success());
    assert_eq!(mode(&entries[0]), 0o600);
}
