//! A plugin can neither slow ingest nor make the host hold what its limits do not allow: the
//! real daemon, hostile fixtures from `plugins/fixtures/`, real signed HTTP.

use std::process::Command;
use std::time::Duration;

use hookd_test_plugins as wasm;
use hookd_testkit::{Daemon, Env, deliveries, event, install_plugin, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// A value from `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
fn status_kib(daemon: &Daemon, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc status"))
}

fn delivery(env: &Env, id: &str, plugin: &str) -> Option<(String, i64, Option<String>)> {
    deliveries(&env.store_dir())
        .get(&(id.to_owned(), plugin.to_owned()))
        .cloned()
}

fn wait_for_state(env: &Env, id: &str, plugin: &str, state: &str) -> (i64, String) {
    wait_until(&format!("{plugin} on {id} is {state}"), WAIT, || {
        delivery(env, id, plugin).is_some_and(|(s, _, _)| s == state)
    });
    let (_, attempts, error) = delivery(env, id, plugin).unwrap();
    (attempts, error.unwrap_or_default())
}

fn ready(daemon: &Daemon) -> bool {
    hookd_testkit::client()
        .get(daemon.admin_url("/readyz"))
        .send()
        .is_ok_and(|r| r.status() == 200)
}

/// The name and scheduling policy (5: `SCHED_IDLE`, 0: the default) of every thread of `pid`.
fn threads(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
        // pid (comm) state ppid ...: the policy is the 41st field of the line, the 39th
        // after the name.
        let (name, rest) = stat.split_once(" (").unwrap().1.rsplit_once(") ").unwrap();
        let policy = rest.split(' ').nth(38).unwrap().parse().unwrap();
        out.push((name.to_owned(), policy));
    }
    out
}

#[test]
fn plugins_run_on_their_own_lower_priority_threads() {
    let env = Env::new("");
    install_plugin(
        &env,
        "busy",
        wasm::FIXTURE_CPU_HEAVY,
        "events = [\"*\"]\n[config]\niterations = \"2000000\"\n",
    );
    let daemon = env.start();
    for i in 0..200 {
        assert_eq!(
            daemon
                .post(&event(&format!("busy-{i}"), "message.created"))
                .status(),
            200
        );
    }
    let all = threads(daemon.child.id());
    let plugin: Vec<_> = all
        .iter()
        .filter(|(n, _)| n.starts_with("hookd-plugin"))
        .collect();
    let ingest: Vec<_> = all
        .iter()
        .filter(|(n, _)| n.starts_with("hookd-worker"))
        .collect();
    assert!(!plugin.is_empty(), "no plugin threads in {all:?}");
    assert!(!ingest.is_empty(), "no listener threads in {all:?}");
    assert!(
        plugin.iter().all(|(_, policy)| *policy == 5),
        "plugin threads run as SCHED_IDLE: {all:?}"
    );
    assert!(
        ingest.iter().all(|(_, policy)| *policy == 0),
        "listener threads keep the default policy: {all:?}"
    );
    // The lag is visible as a metric for every loaded plugin.
    wait_until("the lag metric is published", WAIT, || {
        daemon
            .metrics()
            .contains("hookd_delivery_lag_seconds{plugin=\"busy\"}")
    });
    // Whatever the plugin costs, everything acknowledged is delivered afterwards.
    wait_until("200 deliveries done", WAIT, || {
        let d = deliveries(&env.store_dir());
        d.len() == 200 && d.values().all(|(s, _, _)| s == "done")
    });
}

#[test]
fn a_delivery_cut_short_by_the_daemon_dying_counts_as_an_attempt() {
    let env = Env::new("");
    install_plugin(
        &env,
        "stall",
        wasm::FIXTURE_KILLED_MID_DELIVERY,
        "events = [\"*\"]\n[limits]\ntimeout_ms = 60000\n\
         [retry]\nmax_attempts = 3\ninitial_backoff_ms = 20\nmax_backoff_ms = 40\n",
    );
    install_plugin(&env, "logger", wasm::LOGGER, "events = [\"*\"]\n");
    // Each start: the attempt begins, and the daemon is killed inside it (as the kernel's
    // out-of-memory killer or a crash would). Without claims, the attempt never counted and
    // this went on forever.
    for attempt in 1..=3 {
        let daemon = env.start();
        if attempt == 1 {
            assert_eq!(
                daemon.post(&event("doomed", "message.created")).status(),
                200
            );
        }
        let started = format!("attempt {attempt} started");
        wait_until(&started, WAIT, || {
            daemon.logs().iter().any(|l| l.contains(&started))
        });
        daemon.kill9();
    }
    let daemon = env.start();
    let (attempts, error) = wait_for_state(&env, "doomed", "stall", "dead");
    assert_eq!(attempts, 3);
    assert!(
        error.contains("interrupted") && error.contains("after 3 attempts"),
        "{error}"
    );
    // The daemon serves on, and other plugins were not held back.
    assert_eq!(delivery(&env, "doomed", "logger").unwrap().0, "done");
    assert!(ready(&daemon));
    // The attempt the plugin ran in the last start was counted once, not twice.
    let listed = Command::new(hookd_testkit::hookd_binary())
        .args(["dlq", "list", "--config"])
        .arg(&env.config)
        .output()
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("doomed") && listed.contains("interrupted"),
        "{listed}"
    );
}

#[test]
fn a_graceful_stop_does_not_count_the_attempt_it_cut_short() {
    let env = Env::new("");
    install_plugin(
        &env,
        "stall",
        wasm::FIXTURE_KILLED_MID_DELIVERY,
        "events = [\"*\"]\n[limits]\ntimeout_ms = 60000\n[retry]\nmax_attempts = 2\n",
    );
    let daemon = env.start();
    assert_eq!(
        daemon.post(&event("patient", "message.created")).status(),
        200
    );
    wait_until("the attempt starts", WAIT, || {
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("attempt 1 started"))
    });
    // While it runs, /status shows the plugin behind by the time the delivery has waited.
    let status: serde_json::Value = hookd_testkit::client()
        .get(daemon.admin_url("/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let stall = &status["deliveries"]["by_plugin"][0];
    assert_eq!(stall["plugin"], "stall", "{status}");
    assert_eq!(stall["pending"], 1, "{status}");
    assert!(
        stall["lag_seconds"].as_f64().is_some_and(|s| s >= 0.0),
        "{status}"
    );
    assert!(daemon.stop().success());
    let (state, attempts, _) = delivery(&env, "patient", "stall").unwrap();
    assert_eq!((state.as_str(), attempts), ("pending", 0));
    // Started again, the plugin sees attempt 1 once more.
    let daemon = env.start();
    wait_until("attempt 1 again", WAIT, || {
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("attempt 1 started"))
    });
}

#[test]
fn a_plugins_memories_count_together() {
    let env = Env::new("");
    // Four memories of 8 MiB: each under the limit, 32 MiB together.
    install_plugin(
        &env,
        "memories",
        wasm::FIXTURE_MANY_MEMORIES,
        "events = [\"*\"]\n[limits]\nmemory_mb = 16\n[retry]\nmax_attempts = 1\n",
    );
    // The same component with room for all four: the fixture itself is sound.
    install_plugin(
        &env,
        "roomy",
        wasm::FIXTURE_MANY_MEMORIES,
        "events = [\"*\"]\n[limits]\nmemory_mb = 40\n",
    );
    let daemon = env.start();
    assert_eq!(
        daemon.post(&event("mem-1", "message.created")).status(),
        200
    );
    let (_, error) = wait_for_state(&env, "mem-1", "memories", "dead");
    assert!(error.starts_with("memory_limit"), "{error}");
    wait_for_state(&env, "mem-1", "roomy", "done");
    assert!(ready(&daemon));
}

#[test]
fn host_memory_a_plugin_causes_stays_within_its_limits() {
    let env = Env::new("");
    // 100 KiB values: refused outright (a fields resource holds at most 16 KiB): the call
    // traps, the delivery ends as memory_limit.
    install_plugin(
        &env,
        "big",
        wasm::FIXTURE_HOST_RESOURCES,
        "events = [\"message.created\"]\n[limits]\nmemory_mb = 16\ntimeout_ms = 60000\n\
         [retry]\nmax_attempts = 1\n",
    );
    // 8 KiB values, kept: the resource table fills (1,024 entries) and the delivery ends.
    install_plugin(
        &env,
        "many",
        wasm::FIXTURE_HOST_RESOURCES,
        "events = [\"contact.created\"]\n[limits]\nmemory_mb = 16\ntimeout_ms = 60000\n\
         [retry]\nmax_attempts = 1\n\
         [config]\nvalue_bytes = \"8192\"\n",
    );
    install_plugin(&env, "logger", wasm::LOGGER, "events = [\"*\"]\n");
    let daemon = env.start();
    assert_eq!(
        daemon.post(&event("warm-up", "reaction.added")).status(),
        200
    );
    wait_for_state(&env, "warm-up", "logger", "done");
    let before = status_kib(&daemon, "VmRSS");

    for i in 0..4 {
        assert_eq!(
            daemon
                .post(&event(&format!("big-{i}"), "message.created"))
                .status(),
            200
        );
        assert_eq!(
            daemon
                .post(&event(&format!("many-{i}"), "contact.created"))
                .status(),
            200
        );
    }
    for i in 0..4 {
        let (_, error) = wait_for_state(&env, &format!("big-{i}"), "big", "dead");
        assert!(
            error.starts_with("memory_limit") && error.contains("fields"),
            "{error}"
        );
        let (_, error) = wait_for_state(&env, &format!("many-{i}"), "many", "dead");
        assert!(
            error.starts_with("memory_limit") && error.contains("resources"),
            "{error}"
        );
        wait_for_state(&env, &format!("many-{i}"), "logger", "done");
    }
    // Peak resident memory while it ran: within the deliveries' allowance (each instance at
    // most memory_mb in linear memory plus hookd_config::HOST_BYTES_PER_INSTANCE on the host;
    // up to 8 ran at once here), nowhere near the gigabytes this took before.
    let peak = status_kib(&daemon, "VmHWM");
    let allowance_kib = 8 * ((16 << 10) + hookd_config::HOST_BYTES_PER_INSTANCE / 1024);
    assert!(
        peak.saturating_sub(before) < allowance_kib,
        "peak RSS {peak} KiB, {before} KiB before: more than {allowance_kib} KiB"
    );
    assert!(ready(&daemon));
}

#[test]
fn a_plugins_reasons_are_cut_and_print_no_escape_sequences() {
    let env = Env::new("");
    install_plugin(
        &env,
        "shout",
        wasm::FIXTURE_HUGE_RETRY,
        "events = [\"*\"]\n[retry]\nmax_attempts = 1\n",
    );
    let daemon = env.start();
    assert_eq!(daemon.post(&event("loud", "message.created")).status(), 200);
    let (_, error) = wait_for_state(&env, "loud", "shout", "dead");
    assert!(
        error.len() < 4 * 1024,
        "stored reason is {} bytes",
        error.len()
    );
    assert!(
        !error.contains('\u{1b}') && !error.contains('\u{7}'),
        "{error:?}"
    );
    assert!(
        error.contains("PWNED") && error.contains("\\u{1b}"),
        "{error}"
    );

    let listed = Command::new(hookd_testkit::hookd_binary())
        .args(["dlq", "list", "--config"])
        .arg(&env.config)
        .output()
        .unwrap();
    assert!(listed.status.success());
    assert!(!listed.stdout.contains(&0x1b) && !listed.stdout.contains(&0x07));
    drop(daemon);

    // `hookd run-plugin` prints the outcome escaped too.
    let sample = env.dir.path().join("event.json");
    std::fs::write(&sample, event("loud-2", "message.created")).unwrap();
    let ran = Command::new(hookd_testkit::hookd_binary())
        .args(["run-plugin"])
        .arg(env.dir.path().join("plugins/shout.wasm"))
        .arg("--event")
        .arg(&sample)
        .output()
        .unwrap();
    let out = [ran.stdout, ran.stderr].concat();
    assert!(
        String::from_utf8_lossy(&out).contains("PWNED"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(!out.contains(&0x1b) && !out.contains(&0x07));
}

/// At `debug`, wasmtime-wasi logged every byte a plugin wrote to stdout, past the output cap
/// (a log-flooding plugin took seconds of formatting and filled the journal); the engine's
/// crates stay at `info` unless the filter names them.
#[test]
fn a_plugins_stdout_reaches_the_log_only_through_the_capped_capture() {
    let env = Env::new(""); // the harness logs at `debug`
    install_plugin(&env, "flood", wasm::FIXTURE_LOG_FLOOD, "events = [\"*\"]\n");
    let daemon = env.start();
    assert_eq!(
        daemon.post(&event("loud-out", "message.created")).status(),
        200
    );
    wait_for_state(&env, "loud-out", "flood", "done");
    let logs = daemon.logs();
    let engine_lines = logs
        .iter()
        .filter(|l| {
            l.contains("\"target\":\"wasmtime_wasi") || l.contains("\"target\":\"cranelift")
        })
        .count();
    assert_eq!(engine_lines, 0, "the engine's debug lines reached the log");
    let bytes: usize = logs.iter().map(String::len).sum();
    assert!(bytes < 2 << 20, "{bytes} bytes of log for one delivery");
}
