//! The plugin folder going away under a running daemon: removed, replaced by a file, or made
//! unreadable, it is a refusal (logged, counted, shown as each kept plugin's `last_error`)
//! that keeps the plugins serving, never "no plugins"; put back and reloaded, it serves and is
//! watched as before.

use std::path::Path;
use std::time::Duration;

use hookd_test_plugins as wasm;
use hookd_testkit::{Daemon, Env, client, event, install_plugin, kv_counter, wait_until};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(30);
const MANIFEST: &str = "events = [\"*\"]\n[capabilities]\nkv = true\n";
const FOLDER_FAILED: &str = "hookd_reloads_total{kind=\"folder\",outcome=\"failed\"}";
const REMOVED: &str = "hookd_reloads_total{kind=\"plugin\",outcome=\"removed\"}";

fn versioned(daemon: &Daemon) -> Option<serde_json::Value> {
    client()
        .get(daemon.admin_url("/plugins"))
        .send()
        .unwrap()
        .json::<Vec<serde_json::Value>>()
        .unwrap()
        .into_iter()
        .find(|p| p["name"] == "versioned")
}

fn last_error(daemon: &Daemon) -> Option<String> {
    versioned(daemon).and_then(|p| p["last_error"].as_str().map(str::to_owned))
}

fn serving_hash(daemon: &Daemon) -> Option<String> {
    versioned(daemon)
        .filter(|p| p["loaded"] == true)
        .and_then(|p| p["content_hash"].as_str().map(str::to_owned))
}

/// Posts event `id` and waits until version `v` (`a` or `b`) of the plugin handled it.
fn delivered_by(daemon: &Daemon, store: &Path, id: &str, v: char) {
    assert_eq!(daemon.post(&event(id, "message.created")).status(), 200);
    wait_until(&format!("{id} handled by version {v}"), WAIT, || {
        kv_counter(store, "versioned", &format!("{v}:{id}:1")).is_some()
    });
}

/// Copies the plugin folder's files into `to`.
fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_plugin_folder_that_goes_away_keeps_its_plugins_serving_until_it_is_back() {
    let env = Env::new("");
    install_plugin(&env, "versioned", wasm::FIXTURE_VERSION_A, MANIFEST);
    let dir = env.plugins_dir();
    let store = env.store_dir();
    let saved = env.dir.path().join("saved");
    copy_folder(&dir, &saved);
    let daemon = env.start();
    wait_until("versioned loaded", WAIT, || serving_hash(&daemon).is_some());
    delivered_by(&daemon, &store, "before", 'a');

    // Removed: the files' deletion wakes a reload, which finds no folder.
    std::fs::remove_dir_all(&dir).unwrap();
    wait_until("the gone folder is refused", WAIT, || {
        last_error(&daemon).is_some_and(|e| e.contains("does not exist"))
    });
    assert!(daemon.metric(FOLDER_FAILED) >= 1);
    assert_eq!(daemon.metric(REMOVED), 0, "no plugin was removed");
    let shown = versioned(&daemon).unwrap();
    assert_eq!(shown["loaded"], true, "{shown}");
    delivered_by(&daemon, &store, "while-gone", 'a');
    daemon.wait_for_log("the folder's refusal", WAIT, |l| {
        l.contains("plugin folder refused")
    });

    // Put back and reloaded: the refusal clears, and the folder is watched again (a new
    // version dropped in is served without another signal).
    copy_folder(&saved, &dir);
    daemon.signal(libc::SIGHUP);
    wait_until("the restored folder clears the refusal", WAIT, || {
        versioned(&daemon).is_some_and(|p| p["last_error"].is_null())
    });
    let staged = dir.join("versioned.wasm.part");
    std::fs::copy(wasm::FIXTURE_VERSION_B, &staged).unwrap();
    std::fs::rename(&staged, dir.join("versioned.wasm")).unwrap();
    let b = hex::encode(Sha256::digest(
        std::fs::read(wasm::FIXTURE_VERSION_B).unwrap(),
    ));
    wait_until("version b lands through the new watch", WAIT, || {
        serving_hash(&daemon).as_deref() == Some(b.as_str())
    });
    delivered_by(&daemon, &store, "back", 'b');

    // Unreadable: a file where the folder was (listing it fails for root too).
    let aside = env.dir.path().join("aside");
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::write(&dir, b"not a folder").unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until("the unreadable folder is refused", WAIT, || {
        last_error(&daemon).is_some_and(|e| e.contains("cannot read the plugin folder"))
    });
    assert_eq!(serving_hash(&daemon).as_deref(), Some(b.as_str()));
    delivered_by(&daemon, &store, "while-unreadable", 'b');
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&aside, &dir).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until("the folder back clears the refusal", WAIT, || {
        versioned(&daemon).is_some_and(|p| p["last_error"].is_null())
    });

    // Unreadable by permissions: root reads through them, so only another user can see it.
    if is_root() {
        eprintln!("SKIPPED: chmod 000 does not stop root from reading the folder");
    } else {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o000)).unwrap();
        daemon.signal(libc::SIGHUP);
        wait_until("the folder without permissions is refused", WAIT, || {
            last_error(&daemon).is_some_and(|e| e.contains("cannot read the plugin folder"))
        });
        delivered_by(&daemon, &store, "while-denied", 'b');
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        daemon.signal(libc::SIGHUP);
        wait_until("the permissions back clear the refusal", WAIT, || {
            versioned(&daemon).is_some_and(|p| p["last_error"].is_null())
        });
    }
    assert_eq!(daemon.metric(REMOVED), 0, "no plugin was removed");
    daemon.stop();
}
