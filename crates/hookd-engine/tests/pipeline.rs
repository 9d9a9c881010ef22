//! The whole pipeline in one process, through the engine's public API: a [`Daemon`] on the
//! SQLite backend, real signed HTTP to its ingest listener, real plugins built from
//! `plugins/`, the store on disk. What the end-to-end suites (`tests/`) check against the
//! binary, reachable here without spawning it.

use std::time::Duration;

use hookd_config::Config;
use hookd_engine::Daemon;
use hookd_store::StoreReader;
use hookd_testkit::{Env, event, sign, wait_until};

/// Runs the daemon's listeners on this test's runtime, deliveries on a plugin runtime of its
/// own, as `hookd serve` does.
fn plugin_runtime() -> tokio::runtime::Runtime {
    hookd_engine::isolation::plugin_runtime(hookd_config::PluginPriority::Normal)
        .expect("a plugin runtime")
}

async fn start(env: &Env, plugins: &tokio::runtime::Runtime) -> Daemon {
    let config = Config::load(&env.config).expect("the test config is valid");
    Daemon::start(env.config.clone(), config, None, plugins.handle().clone())
        .await
        .expect("the daemon starts")
}

/// POSTs a signed event; returns the status and the body.
async fn post(daemon: &Daemon, body: Vec<u8>) -> (u16, String) {
    let url = format!("http://{}/webhooks", daemon.ingest_addr());
    tokio::task::spawn_blocking(move || {
        let response = hookd_testkit::client()
            .post(url)
            .header(hookd_core::SIGNATURE_HEADER, sign(&body))
            .body(body)
            .send()
            .expect("an answer");
        (
            response.status().as_u16(),
            response.text().unwrap_or_default(),
        )
    })
    .await
    .expect("the request task")
}

fn states(env: &Env, id: &str) -> Vec<(String, String)> {
    StoreReader::open(&env.store_dir())
        .and_then(|r| r.deliveries_of(id))
        .unwrap_or_default()
}

async fn wait_for_states(env: &Env, id: &str, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(p, s)| ((*p).to_owned(), (*s).to_owned()))
        .collect();
    let (env_dir, id) = (env.store_dir(), id.to_owned());
    let check = want.clone();
    tokio::task::spawn_blocking(move || {
        wait_until(
            &format!("deliveries of {id} to be {check:?}"),
            Duration::from_secs(30),
            || {
                StoreReader::open(&env_dir)
                    .and_then(|r| r.deliveries_of(&id))
                    .is_ok_and(|s| s == check)
            },
        );
    })
    .await
    .expect("the wait task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_acknowledged_delivered_retried_and_dead_lettered_in_process() {
    let env = Env::new("");
    env.install_plugin(
        "logger",
        hookd_test_plugins::LOGGER,
        "events = [\"message.*\"]\n",
    );
    env.install_plugin(
        "trap",
        hookd_test_plugins::FIXTURE_TRAP,
        "events = [\"message.created\"]\n[retry]\nmax_attempts = 2\ninitial_backoff_ms = 10\nmax_backoff_ms = 20\n",
    );
    let plugins = plugin_runtime();
    let daemon = start(&env, &plugins).await;
    assert_eq!(daemon.plugin_count(), 2);

    let (status, body) = post(&daemon, event("evt-1", "message.created")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"duplicate\":false"), "{body}");
    let (status, body) = post(&daemon, event("evt-1", "message.created")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"duplicate\":true"), "{body}");
    let (status, _) = post(&daemon, event("evt-2", "contact.deleted")).await;
    assert_eq!(status, 200);

    // The logger takes it; the trapping plugin fails twice and becomes a dead letter.
    wait_for_states(&env, "evt-1", &[("logger", "done"), ("trap", "dead")]).await;
    assert!(
        states(&env, "evt-2").is_empty(),
        "no plugin subscribes to contact.deleted"
    );

    daemon.shutdown().await.expect("a clean stop");

    // Restarted on the same store: the id is still known, the dead letter still there.
    let daemon = start(&env, &plugins).await;
    let (status, body) = post(&daemon, event("evt-1", "message.created")).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"duplicate\":true"), "{body}");
    let letters = StoreReader::open(&env.store_dir())
        .and_then(|r| r.dead_letters(10))
        .expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].plugin, "trap");
    assert_eq!(letters[0].attempts, 2);
    daemon.shutdown().await.expect("a clean stop");
    plugins.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_is_refused_and_nothing_is_stored() {
    let env = Env::new("");
    let plugins = plugin_runtime();
    let daemon = start(&env, &plugins).await;
    let url = format!("http://{}/webhooks", daemon.ingest_addr());
    let status = tokio::task::spawn_blocking(move || {
        hookd_testkit::client()
            .post(url)
            .header(hookd_core::SIGNATURE_HEADER, "sha256=00")
            .body(event("evt-forged", "message.created"))
            .send()
            .expect("an answer")
            .status()
            .as_u16()
    })
    .await
    .expect("the request task");
    assert_eq!(status, 401);
    daemon.shutdown().await.expect("a clean stop");
    let reader = StoreReader::open(&env.store_dir()).expect("the store");
    assert!(reader.event("evt-forged").expect("a read").is_none());
    plugins.shutdown_background();
}
