//! kill -9 under load: every event that got a 2xx is in the store after a restart.
//!
//! The loops are `hookd_reliability::crash_loops`, with a plugin subscribed:
//! `HOOKD_CRASH_LOOPS=N` runs more than the default 20.

use hookd_reliability::{CrashSettings, crash_loops};
use hookd_test_plugins as wasm;
use hookd_testkit::{Env, event, stored_ids};

fn crash_settings(loops: usize, env: Vec<(String, String)>) -> (tempfile::TempDir, CrashSettings) {
    let dir = tempfile::tempdir().unwrap();
    let settings = CrashSettings {
        hookd: hookd_testkit::hookd_binary(),
        plugin: wasm::FIXTURE_VERSION_A.into(),
        dir: dir.path().to_owned(),
        loops,
        senders: 8,
        run_ms: (50, 300),
        env,
    };
    (dir, settings)
}

/// The CI-sized run of the harness `hookd-crash` runs 200 times (`cargo xtask reliability`).
#[test]
fn no_acknowledged_event_is_lost_across_kill_9() {
    let loops: usize = std::env::var("HOOKD_CRASH_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (_dir, settings) = crash_settings(loops, Vec::new());
    let report = crash_loops(&settings).unwrap();
    report.print();
    assert!(
        report.acknowledged > loops,
        "too few events went through to prove anything"
    );
    assert_eq!(report.lost, 0, "acknowledged events were lost");
    assert_eq!(report.undelivered, 0, "stored events were never delivered");
}

/// The negative control: a build that acknowledges before committing must be caught.
/// `cargo test -p hookd --features fault-injection --test crash -- harness_catches`
#[cfg(feature = "fault-injection")]
#[test]
fn the_harness_catches_a_build_that_acknowledges_before_committing() {
    let (_dir, settings) = crash_settings(
        10,
        vec![("HOOKD_FAULT_ACK_BEFORE_COMMIT".into(), "1".into())],
    );
    let report = crash_loops(&settings).unwrap();
    report.print();
    assert!(report.lost > 0, "the broken build lost nothing: {report:?}");
}

#[test]
fn events_acknowledged_before_a_clean_restart_are_still_there() {
    let env = Env::new("");
    let daemon = env.start();
    for i in 0..50 {
        assert_eq!(
            daemon
                .post(&event(&format!("restart-{i}"), "message.created"))
                .status(),
            200
        );
    }
    assert!(daemon.stop().success());
    let daemon = env.start();
    assert_eq!(stored_ids(&env.store_dir()).len(), 50);
    // And they are still known as duplicates.
    let answer: serde_json::Value = daemon
        .post(&event("restart-7", "message.created"))
        .json()
        .unwrap();
    assert_eq!(answer["duplicate"], true);
}
