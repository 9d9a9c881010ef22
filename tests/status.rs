//! `hookd status` against the real daemon's admin listener.

use std::process::Command;
use std::time::Duration;

use hookd_test_plugins as wasm;
use hookd_testkit::{Env, event, install_plugin, wait_until};

fn status(admin: std::net::SocketAddr, json: bool) -> (Option<i32>, String) {
    let mut cmd = Command::new(hookd_testkit::hookd_binary());
    cmd.args(["status", "--admin", &admin.to_string()]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn status_shows_plugins_deliveries_and_rejections() {
    let env = Env::new("");
    install_plugin(
        &env,
        "noop",
        wasm::FIXTURE_NOOP,
        "events = [\"message.*\"]\n",
    );
    install_plugin(
        &env,
        "always-fails",
        wasm::FIXTURE_TRAP,
        "events = [\"contact.*\"]\n[retry]\nmax_attempts = 1\n",
    );
    // A component that does not compile: listed as not loaded, with why.
    let plugins = env.dir.path().join("plugins");
    std::fs::write(plugins.join("garbage.wasm"), b"not wasm").unwrap();
    std::fs::write(plugins.join("garbage.toml"), "events = [\"*\"]\n").unwrap();
    let daemon = env.start();

    assert_eq!(daemon.post(&event("st-1", "message.created")).status(), 200);
    assert_eq!(daemon.post(&event("st-2", "contact.created")).status(), 200);
    assert_eq!(
        daemon
            .post_with(&event("st-3", "message.created"), Some("00"))
            .status(),
        401
    );
    wait_until(
        "the failing delivery is dead",
        Duration::from_secs(30),
        || {
            let (_, json) = status(daemon.admin, true);
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            v["deliveries"]["dead"] == 1
        },
    );

    let (code, json) = status(daemon.admin, true);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ready"], true);
    assert_eq!(v["events"]["received"], 2);
    assert_eq!(v["rejected"]["bad_signature"], 1);
    assert_eq!(v["recent_rejections"][0]["reason"], "bad_signature");
    assert_eq!(v["plugins"].as_array().unwrap().len(), 3);

    let (code, text) = status(daemon.admin, false);
    assert_eq!(code, Some(0));
    for expected in [
        "ready",
        "events: 2 received",
        "deliveries: 0 pending, 1 dead",
        "always-fails",
        "rejected since start: bad_signature 1",
        "noop",
        "events: message.*",
        "garbage              NOT LOADED",
        "not a WebAssembly file",
    ] {
        assert!(
            text.contains(expected),
            "`{expected}` missing from:\n{text}"
        );
    }
    daemon.stop();
}

#[test]
fn status_explains_an_unreachable_daemon() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let out = Command::new(hookd_testkit::hookd_binary())
        .args(["status", "--admin", &addr.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is hookd running?"), "{err}");
}
