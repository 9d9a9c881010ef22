//! Start, serve, stop: admin endpoints, graceful shutdown, what the logs say.

use hookd_testkit::{Env, event};

#[test]
fn admin_endpoints_report_health_readiness_and_metrics() {
    let env = Env::new("");
    let daemon = env.start();
    let client = hookd_testkit::client();
    let health = client.get(daemon.admin_url("/healthz")).send().unwrap();
    assert_eq!(health.status(), 200);
    let ready = client.get(daemon.admin_url("/readyz")).send().unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        daemon.post(&event("evt-m", "message.created")).status(),
        200
    );
    let metrics = daemon.metrics();
    for name in [
        "hookd_events_received_total 1",
        "hookd_events_duplicate_total 0",
        "hookd_requests_rejected_total",
        "hookd_store_commit_seconds_bucket",
        "hookd_store_queue_depth",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    let missing = client.get(daemon.admin_url("/nope")).send().unwrap();
    assert_eq!(missing.status(), 404);
}

#[test]
fn sigterm_stops_cleanly_and_the_logs_say_so() {
    let env = Env::new("");
    let daemon = env.start();
    assert_eq!(
        daemon.post(&event("evt-bye", "message.created")).status(),
        200
    );
    // Every line, read to the end of the log after the exit.
    let (status, logs) = daemon.stop_with_logs();
    assert!(status.success(), "{status:?}");
    let logs = logs.join("\n");
    assert!(logs.contains("\"event_id\":\"evt-bye\""), "{logs}");
    assert!(
        logs.contains("\"event_type\":\"message.created\""),
        "{logs}"
    );
    assert!(logs.contains("store closed"), "{logs}");
    // Secrets never reach the logs.
    assert!(!logs.contains(hookd_testkit::SECRET), "{logs}");
}

#[test]
fn a_broken_config_refuses_to_start_with_every_problem_listed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookd.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"nowhere\"\n[verify]\nsecrets = [\"short\"]\n",
    )
    .unwrap();
    let output = std::process::Command::new(hookd_testkit::hookd_binary())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`server.listen`"), "{stderr}");
    assert!(stderr.contains("`verify.secrets[0]`"), "{stderr}");
    assert!(stderr.contains("2 problems found"), "{stderr}");
}

#[test]
fn sign_and_send_deliver_an_event_the_daemon_accepts() {
    let env = Env::new("");
    let daemon = env.start();
    let events = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/events");
    let secret_file = env.dir.path().join("secret");
    let sign = std::process::Command::new(hookd_testkit::hookd_binary())
        .args(["sign", "--secret-file"])
        .arg(&secret_file)
        .arg(events.join("message.updated.json"))
        .output()
        .unwrap();
    assert!(sign.status.success());
    let body = std::fs::read(events.join("message.updated.json")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sign.stdout).trim(),
        hookd_testkit::sign(&body)
    );

    let send = |extra: &[&str]| {
        std::process::Command::new(hookd_testkit::hookd_binary())
            .args(["send", "--url", &daemon.url(), "--secret-file"])
            .arg(&secret_file)
            .args(extra)
            .arg(events.join("message.updated.json"))
            .output()
            .unwrap()
    };
    let first = send(&[]);
    assert!(first.status.success(), "{first:?}");
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.starts_with("200 OK"), "{stdout}");
    assert!(
        stdout.contains(r#""id":"a056V7R7NmNRjl70","duplicate":false"#),
        "{stdout}"
    );
    let fresh = send(&["--new-id"]);
    assert!(String::from_utf8_lossy(&fresh.stdout).contains(r#""duplicate":false"#));
    assert_eq!(hookd_testkit::stored_ids(&env.store_dir()).len(), 2);
}

/// The production config reads its secret from `$CREDENTIALS_DIRECTORY`, which only the
/// service has; an operator's `hookd dlq` opens the store all the same.
#[test]
fn dlq_works_without_the_services_credentials() {
    let env = Env::new("");
    let daemon = env.start();
    assert_eq!(
        daemon.post(&event("evt-dlq", "message.created")).status(),
        200
    );
    assert!(daemon.stop().success());
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        text.replace(
            r#"secrets = ["file:secret"]"#,
            r#"secrets = ["file:${CREDENTIALS_DIRECTORY}/webhook-secret"]"#,
        ),
    )
    .unwrap();
    let hookd = |args: &[&str]| {
        std::process::Command::new(hookd_testkit::hookd_binary())
            .args(args)
            .arg("--config")
            .arg(&env.config)
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap()
    };
    let check = hookd(&["check"]);
    assert!(!check.status.success(), "the secret is out of reach");
    let list = hookd(&["dlq", "list"]);
    assert!(list.status.success(), "{list:?}");
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).trim(),
        "no dead letters"
    );
    let replay = hookd(&["dlq", "replay", "--all"]);
    assert!(replay.status.success(), "{replay:?}");
    assert_eq!(
        String::from_utf8_lossy(&replay.stdout).trim(),
        "0 dead letters replayed"
    );
}
