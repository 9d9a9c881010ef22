//! Hot reload end to end: plugins replaced, added and removed under signed load, the main
//! config reloaded on SIGHUP, the compiled-code cache across restarts.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookd_core::{SIGNATURE_HEADER, Secret};
use hookd_test_plugins as wasm;
use hookd_testkit::{Daemon, Env, client, deliveries, event, install_plugin, wait_until};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(30);
const VERSIONED_TOML: &str =
    "events = [\"*\"]\n[limits]\nconcurrency = 16\n[capabilities]\nkv = true\n";

fn hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn plugin(daemon: &Daemon, name: &str) -> Option<serde_json::Value> {
    daemon.plugins().into_iter().find(|p| p["name"] == name)
}

fn serving_hash(daemon: &Daemon, name: &str) -> Option<String> {
    plugin(daemon, name)
        .filter(|p| p["loaded"] == true)
        .and_then(|p| p["content_hash"].as_str().map(str::to_owned))
}

/// Every key-value row of `plugin`: key -> counter value.
fn kv_rows(store: &Path, plugin: &str) -> BTreeMap<String, i64> {
    let conn = rusqlite::Connection::open_with_flags(
        store.join("hookd.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT key, value FROM kv WHERE plugin = ?1")
        .unwrap();
    stmt.query_map([plugin], |r| {
        let value: Vec<u8> = r.get(1)?;
        Ok((
            r.get::<_, String>(0)?,
            i64::from_le_bytes(value.try_into().unwrap()),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Which version handled attempt 1 of `id`, once it did.
fn handled_by(store: &Path, id: &str) -> Option<char> {
    let rows = kv_rows(store, "versioned");
    ['a', 'b']
        .into_iter()
        .find(|v| rows.contains_key(&format!("{v}:{id}:1")))
}

/// Signed events posted continuously from one thread until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicU64::new(0));
        let (s, a, r) = (stop.clone(), acked.clone(), refused.clone());
        let thread = std::thread::spawn(move || {
            let client = client();
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("load-{n}");
                let body = event(&id, "message.created");
                let response = client
                    .post(&url)
                    .header(SIGNATURE_HEADER, hookd_testkit::sign(&body))
                    .body(body)
                    .send();
                match response {
                    Ok(resp) if resp.status() == 200 => a.lock().unwrap().push(id),
                    _ => {
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Load {
            stop,
            acked,
            refused,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (Vec<String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        (acked, self.refused.load(Ordering::Relaxed))
    }
}

/// How a new version lands in the folder.
#[derive(Debug, Clone, Copy)]
enum Landing {
    /// Written to a temporary name, then renamed over the plugin (what `install` and most
    /// deploy tools do).
    Rename,
    /// Truncated and rewritten in place (`cp` over the file, editors without safe-save).
    Overwrite,
}

fn land(path: &Path, bytes: &[u8], how: Landing) {
    match how {
        Landing::Rename => {
            let tmp = path.with_extension("wasm.part");
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        Landing::Overwrite => std::fs::write(path, bytes).unwrap(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[test]
fn fifty_swaps_under_load_lose_nothing_and_each_attempt_runs_one_version() {
    let env = Env::new("");
    install_plugin(&env, "versioned", wasm::FIXTURE_VERSION_A, VERSIONED_TOML);
    let target = env.dir.path().join("plugins/versioned.wasm");
    let a = std::fs::read(wasm::FIXTURE_VERSION_A).unwrap();
    let b = std::fs::read(wasm::FIXTURE_VERSION_B).unwrap();
    let (hash_a, hash_b) = (hash(&a), hash(&b));
    assert_ne!(hash_a, hash_b);
    let daemon = env.start();
    assert_eq!(serving_hash(&daemon, "versioned"), Some(hash_a.clone()));

    let load = Load::start(daemon.url());
    let mut latencies = Vec::new();
    let mut broken_landed = 0;
    let mut current = 'a';
    for i in 0..52 {
        let how = if i % 2 == 0 {
            Landing::Rename
        } else {
            Landing::Overwrite
        };
        // Every fourth swap, first a broken file: half a component, then garbage. The
        // serving version must stay, with the refusal visible.
        if i % 4 == 3 {
            let serving = if current == 'a' { &a } else { &b };
            let broken: &[u8] = if i % 8 == 3 {
                &serving[..serving.len() / 2]
            } else {
                b"this is not a component"
            };
            let failed_before =
                daemon.metric("hookd_reloads_total{kind=\"plugin\",outcome=\"failed\"}");
            land(&target, broken, how);
            broken_landed += 1;
            wait_until("the broken file is refused", WAIT, || {
                daemon.metric("hookd_reloads_total{kind=\"plugin\",outcome=\"failed\"}")
                    > failed_before
            });
            let shown = plugin(&daemon, "versioned").unwrap();
            assert_eq!(
                shown["content_hash"],
                hash(serving),
                "the old version serves"
            );
            assert!(shown["last_error"].is_string(), "{shown}");
        }

        let (next, bytes, expected) = if current == 'a' {
            ('b', &b, &hash_b)
        } else {
            ('a', &a, &hash_a)
        };
        let landed = Instant::now();
        land(&target, bytes, how);
        wait_until(&format!("swap {i} ({how:?}) to {next}"), WAIT, || {
            serving_hash(&daemon, "versioned").as_ref() == Some(expected)
        });
        latencies.push(landed.elapsed());
        current = next;

        // The next event is handled by the new version.
        let probe = format!("probe-{i}");
        assert_eq!(daemon.post(&event(&probe, "contact.created")).status(), 200);
        wait_until(&format!("{probe} handled"), WAIT, || {
            handled_by(&env.store_dir(), &probe).is_some()
        });
        assert_eq!(
            handled_by(&env.store_dir(), &probe),
            Some(next),
            "{probe} was handled by the old version after the swap"
        );
        assert!(plugin(&daemon, "versioned").unwrap()["last_error"].is_null());
    }
    let (acked, refused) = load.finish();
    assert_eq!(refused, 0, "requests refused during the swaps");
    assert!(acked.len() > 100, "too little load: {} events", acked.len());

    let expected = acked.len() + 52;
    wait_until("every delivery done", Duration::from_secs(120), || {
        let d = deliveries(&env.store_dir());
        d.len() == expected && d.values().all(|(state, _, _)| state == "done")
    });
    for ((id, _), (_, attempts, error)) in deliveries(&env.store_dir()) {
        assert_eq!(attempts, 1, "{id} needed {attempts} attempts: {error:?}");
    }
    let rows = kv_rows(&env.store_dir(), "versioned");
    let mut by_version: BTreeMap<char, usize> = BTreeMap::new();
    for id in &acked {
        let ran: Vec<(char, i64)> = ['a', 'b']
            .into_iter()
            .filter_map(|v| rows.get(&format!("{v}:{id}:1")).map(|n| (v, *n)))
            .collect();
        assert!(
            matches!(ran.as_slice(), [(_, 1)]),
            "{id}: one attempt, one version, once; got {ran:?}"
        );
        *by_version.entry(ran[0].0).or_default() += 1;
    }
    assert_eq!(
        rows.len(),
        expected,
        "no attempt beyond the first, no unknown key"
    );
    let metrics = daemon.metrics();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("hookd_deliveries_total")
                && !l.contains("outcome=\"ok\"")
                && !l.ends_with(" 0")),
        "failed deliveries:\n{metrics}"
    );
    assert!(daemon.metric("hookd_reloads_total{kind=\"plugin\",outcome=\"updated\"}") >= 52);

    latencies.sort();
    println!(
        "{} swaps ({} broken files refused), {} events under load ({by_version:?} by version): \
         file landed -> new version serving p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        broken_landed,
        acked.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
    daemon.stop();
}

#[test]
fn plugins_come_and_go_live_and_a_removed_plugins_deliveries_wait() {
    let env = Env::new("");
    let dir = env.dir.path().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let daemon = env.start();
    assert!(daemon.plugins().is_empty());

    // Added live (component, then manifest).
    install_plugin(&env, "versioned", wasm::FIXTURE_VERSION_A, VERSIONED_TOML);
    wait_until("versioned loaded", WAIT, || {
        serving_hash(&daemon, "versioned").is_some()
    });
    assert_eq!(
        daemon.post(&event("live-1", "message.created")).status(),
        200
    );
    wait_until("live-1 handled", WAIT, || {
        handled_by(&env.store_dir(), "live-1") == Some('a')
    });

    // A component without a manifest is refused, and named in /plugins.
    std::fs::copy(wasm::FIXTURE_NOOP, dir.join("orphan.wasm")).unwrap();
    wait_until("orphan refused", WAIT, || {
        plugin(&daemon, "orphan").is_some_and(|p| p["loaded"] == false)
    });
    let orphan = plugin(&daemon, "orphan").unwrap();
    assert!(
        orphan["last_error"].as_str().unwrap().contains("manifest"),
        "{orphan}"
    );
    let orphan_reports = |daemon: &Daemon| {
        daemon
            .logs()
            .iter()
            .filter(|l| l.contains("plugin not loaded") && l.contains("orphan"))
            .count()
    };
    // Logged by the log thread soon after /plugins shows it.
    wait_until("the orphan's refusal is logged", WAIT, || {
        orphan_reports(&daemon) >= 1
    });
    let reported = orphan_reports(&daemon);
    // Lines are written in order, so the swap line of the next reload comes after any
    // refusal that reload logs.
    let swaps = |daemon: &Daemon| {
        daemon
            .logs()
            .iter()
            .filter(|l| l.contains("plugin registry swapped"))
            .count()
    };
    let swaps_before = swaps(&daemon);

    // A manifest-only change: new subscriptions, same code, not compiled again.
    let hash_before = serving_hash(&daemon, "versioned").unwrap();
    std::fs::write(
        dir.join("versioned.toml"),
        VERSIONED_TOML.replace("[\"*\"]", "[\"contact.*\"]"),
    )
    .unwrap();
    wait_until("new subscriptions", WAIT, || {
        plugin(&daemon, "versioned")
            .is_some_and(|p| p["events"] == serde_json::json!(["contact.*"]))
    });
    assert_eq!(serving_hash(&daemon, "versioned"), Some(hash_before));
    assert_eq!(
        daemon.post(&event("live-2", "message.created")).status(),
        200
    );
    assert_eq!(
        daemon.post(&event("live-3", "contact.deleted")).status(),
        200
    );
    wait_until("live-3 handled", WAIT, || {
        handled_by(&env.store_dir(), "live-3").is_some()
    });
    assert_eq!(handled_by(&env.store_dir(), "live-2"), None, "unsubscribed");
    // That reload read the folder again: the orphan, unchanged, was not reported again.
    wait_until("the manifest reload is logged", WAIT, || {
        swaps(&daemon) > swaps_before
    });
    assert_eq!(
        orphan_reports(&daemon),
        reported,
        "the same refusal was logged twice"
    );
    std::fs::remove_file(dir.join("orphan.wasm")).unwrap();
    wait_until("the orphan is forgotten", WAIT, || {
        plugin(&daemon, "orphan").is_none()
    });

    // A plugin removed while its delivery waits for a retry: the delivery stays pending,
    // untouched, and resumes when the plugin comes back.
    install_plugin(
        &env,
        "flaky",
        wasm::FIXTURE_FLAKY,
        "events = [\"reaction.*\"]\n[retry]\ninitial_backoff_ms = 300\nmax_backoff_ms = 300\n",
    );
    wait_until("flaky loaded", WAIT, || {
        serving_hash(&daemon, "flaky").is_some()
    });
    assert_eq!(
        daemon.post(&event("paused-1", "reaction.added")).status(),
        200
    );
    let flaky_state = || {
        deliveries(&env.store_dir())
            .get(&("paused-1".to_owned(), "flaky".to_owned()))
            .cloned()
    };
    wait_until("the first attempt asked for a retry", WAIT, || {
        flaky_state().is_some_and(|(_, attempts, _)| attempts >= 1)
    });
    std::fs::remove_file(dir.join("flaky.wasm")).unwrap();
    wait_until("flaky removed", WAIT, || plugin(&daemon, "flaky").is_none());
    let attempts_at_removal = flaky_state().unwrap().1;
    // Evidence that the dispatcher had its chance: a witness's retry, due after the paused
    // one (the store hands out due deliveries oldest due first), has been run.
    install_plugin(
        &env,
        "witness",
        wasm::FIXTURE_FLAKY,
        "events = [\"group.*\"]\n[retry]\ninitial_backoff_ms = 300\nmax_backoff_ms = 300\n",
    );
    wait_until("witness loaded", WAIT, || {
        serving_hash(&daemon, "witness").is_some()
    });
    assert_eq!(
        daemon
            .post(&event("paused-witness", "group.created"))
            .status(),
        200
    );
    wait_until("the witness's retry ran", WAIT, || {
        deliveries(&env.store_dir())
            .get(&("paused-witness".to_owned(), "witness".to_owned()))
            .is_some_and(|(_, attempts, _)| *attempts >= 2)
    });
    let (state, attempts, _) = flaky_state().unwrap();
    assert_eq!(state, "pending");
    assert_eq!(attempts, attempts_at_removal, "no attempt while removed");
    std::fs::copy(wasm::FIXTURE_FLAKY, dir.join("flaky.wasm")).unwrap();
    wait_until("the paused delivery resumes and succeeds", WAIT, || {
        flaky_state().is_some_and(|(state, attempts, _)| state == "done" && attempts == 3)
    });
    assert!(daemon.metric("hookd_reloads_total{kind=\"plugin\",outcome=\"removed\"}") >= 1);
    daemon.stop();
}

fn rewrite_config(config: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains(from), "{from} not in the config");
    std::fs::write(config, text.replacen(from, to, 1)).unwrap();
}

fn post_signed_with(daemon: &Daemon, secret: &str, id: &str) -> u16 {
    let body = event(id, "message.created");
    let signature = hookd_core::sign(&Secret::new(secret).unwrap(), &body);
    daemon.post_with(&body, Some(&signature)).status().as_u16()
}

#[test]
fn sighup_rotates_secrets_live_and_a_broken_config_keeps_the_old_one() {
    let env = Env::new("");
    let new_secret = "rotated-secret-0123456789abcdef";
    std::fs::write(env.dir.path().join("new-secret"), new_secret).unwrap();
    let daemon = env.start();
    let ok = "hookd_reloads_total{kind=\"config\",outcome=\"ok\"}";
    let failed = "hookd_reloads_total{kind=\"config\",outcome=\"failed\"}";
    assert_eq!(
        post_signed_with(&daemon, hookd_testkit::SECRET, "rot-1"),
        200
    );
    assert_eq!(post_signed_with(&daemon, new_secret, "rot-2"), 401);

    // Broken: a syntax error. Nothing changes; every error is logged.
    let good = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("{good}\n[server\nlisten = 1\n")).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until("the broken config is refused", WAIT, || {
        daemon.metric(failed) == 1
    });
    // The log line is written by the log thread some time after the metric moved.
    daemon.wait_for_log("the refusal is logged", WAIT, |l| {
        l.contains("configuration reload refused")
    });
    assert_eq!(
        post_signed_with(&daemon, hookd_testkit::SECRET, "rot-3"),
        200
    );
    // Broken: validates as TOML, not as a config (an unknown key).
    std::fs::write(&env.config, good.replace("[store]", "[store]\nsize = 3")).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until("the invalid config is refused", WAIT, || {
        daemon.metric(failed) == 2
    });
    assert_eq!(
        post_signed_with(&daemon, hookd_testkit::SECRET, "rot-4"),
        200
    );

    // Rotation, step 1: both secrets. Also a listen address change, which needs a restart.
    std::fs::write(&env.config, &good).unwrap();
    rewrite_config(
        &env.config,
        "secrets = [\"file:secret\"]",
        "secrets = [\"file:secret\", \"file:new-secret\"]",
    );
    rewrite_config(
        &env.config,
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:1\"",
    );
    daemon.signal(libc::SIGHUP);
    wait_until("the new config is applied", WAIT, || daemon.metric(ok) == 1);
    daemon.wait_for_log("the listen change is reported", WAIT, |l| {
        l.contains("after a restart") && l.contains("server.listen")
    });
    assert_eq!(
        post_signed_with(&daemon, hookd_testkit::SECRET, "rot-5"),
        200
    );
    assert_eq!(post_signed_with(&daemon, new_secret, "rot-6"), 200);

    // Step 2: the old secret removed.
    rewrite_config(
        &env.config,
        "secrets = [\"file:secret\", \"file:new-secret\"]",
        "secrets = [\"file:new-secret\"]",
    );
    daemon.signal(libc::SIGHUP);
    wait_until("the old secret is dropped", WAIT, || daemon.metric(ok) == 2);
    assert_eq!(post_signed_with(&daemon, new_secret, "rot-7"), 200);
    assert_eq!(
        post_signed_with(&daemon, hookd_testkit::SECRET, "rot-8"),
        401
    );
    assert_eq!(daemon.stop().code(), Some(0));
}

fn cache_entries(store: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(store.join("code-cache"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn a_restart_reads_compiled_code_from_the_cache_and_survives_a_damaged_entry() {
    let env = Env::new("");
    install_plugin(&env, "versioned", wasm::FIXTURE_VERSION_A, VERSIONED_TOML);
    install_plugin(&env, "noop", wasm::FIXTURE_NOOP, "events = [\"*\"]\n");
    let cache_hit = |daemon: &Daemon| -> HashSet<String> {
        daemon
            .plugins()
            .into_iter()
            .filter(|p| p["cache_hit"] == true)
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };

    let daemon = env.start();
    assert!(cache_hit(&daemon).is_empty(), "cold start compiles");
    daemon.stop();
    let entries = cache_entries(&env.store_dir());
    assert_eq!(entries.len(), 2, "{entries:?}");

    let daemon = env.start();
    assert_eq!(cache_hit(&daemon).len(), 2, "warm start reads the cache");
    daemon.stop();

    // Damage one entry: it is detected, dropped, compiled again; the plugin still serves.
    let victim = &entries[0];
    let mut bytes = std::fs::read(victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(victim, &bytes).unwrap();
    let daemon = env.start();
    assert_eq!(daemon.plugins().len(), 2);
    assert_eq!(cache_hit(&daemon).len(), 1, "the damaged entry is a miss");
    daemon.wait_for_log("the damaged entry is reported", WAIT, |l| {
        l.contains("damaged compiled-code cache entry")
    });
    assert_eq!(
        daemon.post(&event("cached-1", "message.created")).status(),
        200
    );
    wait_until("delivered by both", WAIT, || {
        let d = deliveries(&env.store_dir());
        d.len() == 2 && d.values().all(|(s, _, _)| s == "done")
    });
    daemon.stop();
}

/// The rotation procedure of docs/systemd.md under continuous signed load: add the new secret,
/// reload, switch the sender, remove the old secret, reload. No genuine event is refused.
#[test]
fn secret_rotation_under_load_refuses_no_genuine_event() {
    let env = Env::new("");
    let new_secret = "rotated-secret-fedcba9876543210";
    std::fs::write(env.dir.path().join("new-secret"), new_secret).unwrap();
    let daemon = env.start();
    let ok = "hookd_reloads_total{kind=\"config\",outcome=\"ok\"}";

    let sender_secret = Arc::new(Mutex::new(hookd_testkit::SECRET.to_owned()));
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, refused) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let load = {
        let (url, sender_secret, stop, acked, refused) = (
            daemon.url(),
            sender_secret.clone(),
            stop.clone(),
            acked.clone(),
            refused.clone(),
        );
        std::thread::spawn(move || {
            let client = client();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = event(&format!("rot-load-{n}"), "message.created");
                let secret = sender_secret.lock().unwrap().clone();
                let signature = hookd_core::sign(&Secret::new(secret.as_str()).unwrap(), &body);
                let status = client
                    .post(&url)
                    .header(SIGNATURE_HEADER, signature)
                    .body(body)
                    .send()
                    .unwrap()
                    .status();
                if status == 200 {
                    acked.fetch_add(1, Ordering::Relaxed);
                } else {
                    refused.lock().unwrap().push((n, status.as_u16()));
                }
            }
        })
    };
    // Each phase lasts until the sender has had more events answered (or one refused), so
    // every phase is really exercised under load, however slow the machine.
    let settle = || {
        let from = acked.load(Ordering::Relaxed);
        wait_until("the sender gets 20 more events answered", WAIT, || {
            acked.load(Ordering::Relaxed) >= from + 20 || !refused.lock().unwrap().is_empty()
        });
    };
    settle();

    // 1. Both secrets.
    rewrite_config(
        &env.config,
        "secrets = [\"file:secret\"]",
        "secrets = [\"file:secret\", \"file:new-secret\"]",
    );
    daemon.signal(libc::SIGHUP);
    wait_until("both secrets in force", WAIT, || daemon.metric(ok) == 1);
    settle();
    // 2. The sender switches.
    *sender_secret.lock().unwrap() = new_secret.to_owned();
    settle();
    // 3. The old secret goes.
    rewrite_config(
        &env.config,
        "secrets = [\"file:secret\", \"file:new-secret\"]",
        "secrets = [\"file:new-secret\"]",
    );
    daemon.signal(libc::SIGHUP);
    wait_until("only the new secret", WAIT, || daemon.metric(ok) == 2);
    settle();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let refused = refused.lock().unwrap();
    assert!(refused.is_empty(), "genuine events refused: {refused:?}");
    assert!(acked.load(Ordering::Relaxed) > 50, "too little load");
    assert_eq!(
        post_signed_with(&daemon, hookd_testkit::SECRET, "rot-old"),
        401
    );
    println!(
        "secret rotation under load: {} events acknowledged, none refused",
        acked.load(Ordering::Relaxed)
    );
    daemon.stop();
}

/// Restoring a refused manifest to the content already serving is no change to the plugin,
/// yet it must clear the refusal: a last error kept only until the plugin changes would stay
/// in `/plugins` for good.
#[test]
fn fixing_a_refused_manifest_clears_the_plugins_last_error() {
    let env = Env::new("");
    install_plugin(&env, "versioned", wasm::FIXTURE_VERSION_A, VERSIONED_TOML);
    let dir = env.dir.path().join("plugins");
    let daemon = env.start();
    let failed = "hookd_reloads_total{kind=\"plugin\",outcome=\"failed\"}";
    let good_manifest = std::fs::read_to_string(dir.join("versioned.toml")).unwrap();
    std::fs::write(
        dir.join("versioned.toml"),
        "events = [\"contact.*\"\n[limits\n",
    )
    .unwrap();
    // (An in-place write may be seen half-done, and refused twice: once empty, once broken.)
    wait_until("the broken manifest is refused", WAIT, || {
        daemon.metric(failed) >= 1
    });
    let shown = plugin(&daemon, "versioned").unwrap();
    assert_eq!(
        shown["events"],
        serde_json::json!(["*"]),
        "old settings serve: {shown}"
    );
    assert!(
        shown["last_error"]
            .as_str()
            .unwrap()
            .contains("versioned.toml"),
        "{shown}"
    );
    std::fs::write(dir.join("versioned.toml"), good_manifest).unwrap();
    wait_until("the fixed manifest clears the error", WAIT, || {
        plugin(&daemon, "versioned").is_some_and(|p| p["last_error"].is_null())
    });
    daemon.stop();
}

/// A plugin file that lands while hookd starts, right after it read the folder, is served:
/// the folder is watched before it is first read. A watch begun after `READY` would miss a
/// file landing in between until the next change (`cargo xtask bench reload` lands files
/// exactly then, and found it about one run in three).
#[test]
fn a_plugin_landing_while_hookd_starts_is_not_missed() {
    let env = Env::new("");
    let b = std::fs::read(wasm::FIXTURE_VERSION_B).unwrap();
    for round in 0..4 {
        install_plugin(&env, "versioned", wasm::FIXTURE_VERSION_A, VERSIONED_TOML);
        let target = env.dir.path().join("plugins/versioned.wasm");
        let staged = env.dir.path().join("plugins/versioned.wasm.part");
        std::fs::write(&staged, &b).unwrap();
        // Renamed into place from the log reader, the moment the first registry is in place:
        // after the initial read, before the listeners and READY.
        let landed = Arc::new(AtomicBool::new(false));
        let daemon = {
            let (landed, staged, target) = (landed.clone(), staged.clone(), target.clone());
            Daemon::start_watching(&env.config, move |line| {
                if line.contains("plugin registry swapped") && !landed.swap(true, Ordering::SeqCst)
                {
                    std::fs::rename(&staged, &target).unwrap();
                }
            })
        };
        assert!(landed.load(Ordering::SeqCst), "round {round}: not landed");
        wait_until(
            &format!("round {round}: version b served"),
            Duration::from_secs(10),
            || serving_hash(&daemon, "versioned").as_deref() == Some(hash(&b).as_str()),
        );
        daemon.stop();
    }
}
