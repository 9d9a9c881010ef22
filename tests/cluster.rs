//! hookd on NATS JetStream (`[store] backend = "nats"`), end to end: real `nats-server`
//! processes, real hookd binaries sharing them, real signed HTTP, real plugins. Deliveries are
//! counted where they land (a local HTTP server the `http-poster` fixture posts each event id
//! to), so a hookd instance killed with `kill -9` cannot take its counts with it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hookd_reliability::cluster::{ClusterSettings, Failure, cluster_failures};
use hookd_test_plugins as wasm;
use hookd_testkit::fake_api::FakeApi;
use hookd_testkit::nats::NatsServer;
use hookd_testkit::{Daemon, Env, event, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// An instance's folder, configured for the JetStream store at `servers` under `prefix`.
fn nats_env(servers: &[String], prefix: &str) -> Env {
    let list = servers
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    Env::with_store(
        "",
        "backend = \"nats\"",
        &format!(
            "\n[store.nats]\nservers = [{list}]\nprefix = \"{prefix}\"\nack_wait_secs = 2\n\
             request_timeout_ms = 2000\n"
        ),
    )
}

/// Installs the `http-poster` fixture as `name`, posting each event it gets to `api`.
fn install_poster(env: &Env, name: &str, events: &str, api: &FakeApi) {
    env.install_plugin(
        name,
        wasm::FIXTURE_HTTP_POSTER,
        &format!(
            "events = [{events}]\n[capabilities]\nhttp = [\"{base}\"]\n[config]\nurl = \"{base}/{name}\"\n",
            base = api.base
        ),
    );
}

/// How many times each event id reached plugin `name` and was taken (a 2xx), as the API saw it.
fn delivered(api: &FakeApi, name: &str) -> HashMap<String, usize> {
    let path = format!("/{name}");
    let mut counts = HashMap::new();
    for seen in api.accepted() {
        if seen.path != path {
            continue;
        }
        let body: serde_json::Value =
            serde_json::from_str(&seen.body).expect("the poster's JSON body");
        let id = body["event"].as_str().expect("an event id").to_owned();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

fn answer(daemon: &Daemon, body: &[u8]) -> (u16, serde_json::Value, Option<String>) {
    let response = daemon.post(body);
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let json = response.json().unwrap_or(serde_json::Value::Null);
    (status, json, retry_after)
}

#[test]
fn events_reach_their_plugins_through_jetstream_and_duplicates_are_answered() {
    let nats = NatsServer::start();
    let api = FakeApi::start();
    let env = nats_env(&[nats.url()], "single");
    install_poster(&env, "messages", "\"message.*\"", &api);
    install_poster(&env, "everything", "\"*\"", &api);
    let daemon = env.start();

    let (status, body, _) = answer(&daemon, &event("n-1", "message.created"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicate"], false);
    let (status, body, _) = answer(&daemon, &event("n-2", "contact.deleted"));
    assert_eq!((status, &body["duplicate"]), (200, &false.into()));
    let (status, body, _) = answer(&daemon, &event("n-1", "message.created"));
    assert_eq!(
        (status, &body["duplicate"]),
        (200, &true.into()),
        "a resend is a duplicate"
    );

    wait_until("both events delivered where they belong", WAIT, || {
        delivered(&api, "messages").len() == 1 && delivered(&api, "everything").len() == 2
    });
    assert_eq!(
        delivered(&api, "messages"),
        HashMap::from([("n-1".to_owned(), 1)])
    );
    assert_eq!(
        delivered(&api, "everything"),
        HashMap::from([("n-1".to_owned(), 1), ("n-2".to_owned(), 1)])
    );
    let metrics = daemon.metrics();
    assert!(
        metrics.contains("hookd_nats_publish_seconds_count"),
        "the publish latency is measured"
    );
    assert!(metrics.contains("hookd_nats_connected 1"));
}

#[test]
fn without_jetstream_ingest_answers_503_and_is_not_ready_then_recovers() {
    let mut nats = NatsServer::start();
    let api = FakeApi::start();
    let env = nats_env(&[nats.url()], "outage");
    install_poster(&env, "p", "\"*\"", &api);
    let daemon = env.start();
    assert_eq!(answer(&daemon, &event("o-1", "message.created")).0, 200);

    nats.node.kill();
    let started = Instant::now();
    let mut answers = Vec::new();
    wait_until("ingest to refuse while NATS is down", WAIT, || {
        let (status, _, retry_after) = answer(
            &daemon,
            &event(&format!("o-x{}", answers.len()), "message.created"),
        );
        answers.push((status, retry_after.clone()));
        status == 503 && retry_after.is_some()
    });
    assert!(
        answers.iter().all(|(s, _)| *s == 503 || *s == 200),
        "only 200 (stored before the loss was noticed) or 503: {answers:?}"
    );
    let (status, _) = daemon.admin_get("/readyz").expect("/readyz answers");
    assert_eq!(status, 503, "not ready without its store");
    eprintln!(
        "NATS down: 503 after {:?} ({} requests)",
        started.elapsed(),
        answers.len()
    );

    nats.node.start();
    wait_until("ingest to take events again", WAIT, || {
        answer(&daemon, &event("o-2", "message.created")).0 == 200
    });
    assert_eq!(daemon.admin_get("/readyz").map(|r| r.0), Some(200));
    // What was acknowledged on either side of the outage is delivered.
    let mut acked = vec!["o-1".to_owned(), "o-2".to_owned()];
    for (i, (status, _)) in answers.iter().enumerate() {
        if *status == 200 {
            acked.push(format!("o-x{i}"));
        }
    }
    wait_until("every acknowledged event delivered", WAIT, || {
        let got = delivered(&api, "p");
        acked.iter().all(|id| got.contains_key(id))
    });
}

#[test]
fn two_instances_share_each_plugin_and_take_over_from_one_killed_mid_delivery() {
    let nats = NatsServer::start();
    let api = FakeApi::start();
    let (a_env, b_env) = (
        nats_env(&[nats.url()], "pair"),
        nats_env(&[nats.url()], "pair"),
    );
    for env in [&a_env, &b_env] {
        install_poster(env, "shared", "\"message.*\"", &api);
    }
    let a = a_env.start();
    let b = b_env.start();
    // The API stalls: deliveries start (claimed) and hang in both instances.
    api.status.store(503, std::sync::atomic::Ordering::SeqCst);
    let ids: Vec<String> = (0..40).map(|i| format!("pair-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let to = if i % 2 == 0 { &a } else { &b };
        assert_eq!(answer(to, &event(id, "message.created")).0, 200);
    }
    wait_until("both instances to have tried deliveries", WAIT, || {
        let m = (a.metrics(), b.metrics());
        [m.0, m.1].iter().all(|m| m.contains("outcome=\"retry\""))
    });
    a.kill9();
    api.status.store(200, std::sync::atomic::Ordering::SeqCst);
    wait_until("every event delivered by the instance left", WAIT, || {
        let got = delivered(&api, "shared");
        ids.iter().all(|id| got.contains_key(id))
    });
    let got = delivered(&api, "shared");
    let extra: usize = got.values().map(|n| n - 1).sum();
    eprintln!("40 events, 1 of 2 instances killed: {extra} delivered twice or more");
}

/// The failure harness (`hookd_reliability::cluster`): three nats-server nodes (R3), three
/// hookd instances, six signed senders spread over them, the failure injected `rounds` times.
fn survive(failure: Failure, rounds: usize) {
    // One at a time: each is three nats-server nodes and three instances under load.
    static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_CLUSTER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("a temp dir");
    let report = cluster_failures(&ClusterSettings {
        hookd: hookd_testkit::hookd_binary(),
        poster: wasm::FIXTURE_HTTP_POSTER.into(),
        dir: dir.path().to_owned(),
        instances: 3,
        senders: 6,
        failure,
        rounds,
        interval: Duration::from_secs(3),
    })
    .expect("the cluster harness ran");
    report.print();
    if std::env::var_os("HOOKD_CLUSTER_LOGS").is_some() {
        println!("logs kept in {}", dir.keep().display());
    }
    assert!(report.acknowledged > 0);
    assert_eq!(report.lost, 0, "acknowledged events were lost: {report:?}");
    for (plugin, n) in &report.delivered {
        assert!(
            *n >= report.acknowledged,
            "{plugin} got {n} of {} events",
            report.acknowledged
        );
    }
}

#[test]
fn killing_hookd_instances_loses_nothing() {
    survive(Failure::KillHookd, 3);
}

#[test]
fn killing_one_nats_node_of_three_loses_nothing() {
    survive(Failure::KillNatsNode, 3);
}

#[test]
fn restarting_the_whole_nats_cluster_loses_nothing() {
    survive(Failure::RestartNatsCluster, 3);
}

#[test]
fn restarting_every_instance_and_node_at_once_loses_nothing() {
    // Each round restarts three instances against a cluster recovering from disk.
    survive(Failure::RestartEverything, 2);
}

/// `hookd dlq` against the cluster: a dead letter made by one instance is listed and replayed
/// from another instance's config (without its webhook secret), and the replay delivers.
#[test]
fn dead_letters_are_listed_and_replayed_cluster_wide() {
    let nats = NatsServer::start();
    let api = FakeApi::start();
    api.status.store(500, std::sync::atomic::Ordering::SeqCst);
    let (a_env, b_env) = (
        nats_env(&[nats.url()], "dead"),
        nats_env(&[nats.url()], "dead"),
    );
    for env in [&a_env, &b_env] {
        env.install_plugin(
            "p",
            wasm::FIXTURE_HTTP_POSTER,
            &format!(
                "events = [\"*\"]\n[retry]\nmax_attempts = 2\ninitial_backoff_ms = 100\n\
                 [capabilities]\nhttp = [\"{base}\"]\n[config]\nurl = \"{base}/p\"\n",
                base = api.base
            ),
        );
    }
    let a = a_env.start();
    assert_eq!(answer(&a, &event("dl-1", "message.created")).0, 200);
    let b_config = std::fs::read_to_string(&b_env.config).unwrap();
    std::fs::write(
        &b_env.config,
        b_config.replace(
            r#"secrets = ["file:secret"]"#,
            r#"secrets = ["file:${CREDENTIALS_DIRECTORY}/webhook-secret"]"#,
        ),
    )
    .unwrap();
    let hookd = |args: &[&str]| {
        let out = std::process::Command::new(hookd_testkit::hookd_binary())
            .args(args)
            .arg("--config")
            .arg(&b_env.config)
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        assert!(out.status.success(), "hookd {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = wait_for_letter(&hookd);
    assert_eq!(listed["plugin"], "p");
    assert_eq!(listed["attempts"], 2);
    assert!(
        listed["last_error"].as_str().unwrap().contains("500"),
        "{listed}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&a.admin_get("/status").expect("/status answers").1).unwrap();
    assert!(
        status.to_string().contains("\"dead\":1"),
        "/status counts the dead letter: {status}"
    );

    api.status.store(200, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        hookd(&["dlq", "replay", "dl-1"]).trim(),
        "1 dead letter replayed"
    );
    wait_until("the replayed letter delivered", WAIT, || {
        delivered(&api, "p").contains_key("dl-1")
    });
    assert_eq!(hookd(&["dlq", "list"]).trim(), "no dead letters");
}

fn wait_for_letter(hookd: &dyn Fn(&[&str]) -> String) -> serde_json::Value {
    let mut found = None;
    wait_until("the dead letter listed", WAIT, || {
        found = hookd(&["dlq", "list", "--json"])
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["event_id"] == "dl-1");
        found.is_some()
    });
    found.expect("listed")
}

/// Two instances serving different versions of a plugin (here: other event patterns, as in a
/// deploy under way): `/status` and `hookd status` name the skew, and every event either
/// version wants is delivered, since the shared consumer's filter only ever widens.
#[test]
fn version_skew_is_reported_and_the_consumer_serves_both_versions() {
    let nats = NatsServer::start();
    let api = FakeApi::start();
    let (a_env, b_env) = (
        nats_env(&[nats.url()], "skew"),
        nats_env(&[nats.url()], "skew"),
    );
    install_poster(&a_env, "p", "\"message.*\"", &api);
    install_poster(&b_env, "p", "\"message.*\", \"contact.*\"", &api);
    let a = a_env.start();
    let b = b_env.start();
    for (i, ty) in ["message.created", "contact.created"].iter().enumerate() {
        assert_eq!(answer(&b, &event(&format!("sk-{i}"), ty)).0, 200);
    }
    wait_until("both events delivered", WAIT, || {
        delivered(&api, "p").len() == 2
    });

    let mut status = serde_json::Value::Null;
    wait_until("a's /status to list both instances", WAIT, || {
        status = serde_json::from_str(&a.admin_get("/status").expect("/status").1).unwrap();
        status["cluster"]["instances"].as_array().map(Vec::len) == Some(2)
    });
    let skew = &status["cluster"]["skew"];
    assert_eq!(skew.as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(skew[0]["plugin"], "p");
    let patterns: Vec<String> = skew[0]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["events"].to_string())
        .collect();
    assert!(
        patterns.contains(&r#"["message.*"]"#.to_owned())
            && patterns.contains(&r#"["message.*","contact.*"]"#.to_owned()),
        "{patterns:?}"
    );
    let out = std::process::Command::new(hookd_testkit::hookd_binary())
        .args(["status", "--admin", &a.admin.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cluster: 2 instances") && text.contains("VERSION SKEW: plugin p"),
        "{text}"
    );
    // The older version starting again does not narrow what the consumer takes.
    drop(a);
    let _a = a_env.start();
    assert_eq!(answer(&b, &event("sk-2", "contact.deleted")).0, 200);
    wait_until("the contact event delivered after a restart", WAIT, || {
        delivered(&api, "p").contains_key("sk-2")
    });
}

/// A NATS server with a user and password: the right password (read from a file) serves; a
/// wrong one stops hookd at start with a message that says so, instead of waiting forever.
#[test]
fn a_login_refused_by_nats_stops_the_start_with_a_clear_error() {
    let nats = NatsServer::start_with(
        "authorization { users: [ { user: hookd, password: \"s3cret-pass\" } ] }",
    );
    let api = FakeApi::start();
    let with_password = |password: &str| {
        let env = nats_env(&[nats.url()], "auth");
        std::fs::write(env.dir.path().join("nats-password"), password).unwrap();
        let text = std::fs::read_to_string(&env.config).unwrap();
        std::fs::write(
            &env.config,
            text.replace(
                "[store.nats]\n",
                "[store.nats]\nuser = \"hookd\"\npassword = \"file:nats-password\"\n",
            ),
        )
        .unwrap();
        env
    };
    let good = with_password("s3cret-pass\n");
    install_poster(&good, "p", "\"*\"", &api);
    let daemon = good.start();
    assert_eq!(answer(&daemon, &event("auth-1", "message.created")).0, 200);
    wait_until("delivered", WAIT, || {
        delivered(&api, "p").contains_key("auth-1")
    });

    let bad = with_password("wrong");
    let started = Instant::now();
    let out = std::process::Command::new(hookd_testkit::hookd_binary())
        .args(["serve", "--config"])
        .arg(&bad.config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("refused hookd's login"), "{stderr}");
    assert!(
        !stderr.contains("wrong"),
        "the password is never printed: {stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}
