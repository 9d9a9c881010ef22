//! The `[plugins]` ceilings and memory budget against the real binary: `hookd check` and
//! `hookd serve` leave out a folder plugin over a ceiling or over the budget, say why and how
//! to fix it, and keep what serves on a reload; a secret in a config that does not parse is
//! printed by neither.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hookd_config::HOST_BYTES_PER_INSTANCE;
use hookd_test_plugins as wasm;
use hookd_testkit::{Daemon, Env, client, install_plugin, wait_until};

const WAIT: Duration = Duration::from_secs(30);
/// Two plugins of 2 instances x (64 MiB + the host allowance) fit; a third does not.
const BUDGET_MB: u64 = 400;
const TWO_INSTANCES: &str = "events = [\"*\"]\n[limits]\nconcurrency = 2\n";

fn instance_mb() -> u64 {
    64 + (HOST_BYTES_PER_INSTANCE >> 20)
}

fn budget_env() -> Env {
    let env = Env::with_config("", "");
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        text.replace(
            "dir = \"plugins\"",
            &format!("dir = \"plugins\"\nmemory_budget_mb = {BUDGET_MB}"),
        ),
    )
    .unwrap();
    env
}

fn plugin(daemon: &Daemon, name: &str) -> serde_json::Value {
    daemon
        .plugins()
        .into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or_default()
}

fn last_error(daemon: &Daemon, name: &str) -> String {
    plugin(daemon, name)["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn check(config: &Path) -> (i32, String, String) {
    let output = Command::new(hookd_testkit::hookd_binary())
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn hookd_check_leaves_out_the_plugin_over_the_memory_budget_and_says_how_to_fix_it() {
    let env = budget_env();
    for name in ["a", "b", "c"] {
        install_plugin(&env, name, wasm::LOGGER, TWO_INSTANCES);
    }
    let (code, stdout, stderr) = check(&env.config);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let each = 2 * instance_mb();
    assert!(
        stdout.contains(&format!(
            "memory:  worst case {} MiB of the {BUDGET_MB} MiB budget (4 instances at most)",
            2 * each
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("plugin a: ok") && stdout.contains("plugin b: ok"),
        "{stdout}"
    );
    assert!(!stdout.contains("plugin c: ok"), "{stdout}");
    let manifest = env.dir.path().join("plugins/c.toml");
    let expected = format!(
        "error: plugin `c`: {}: plugin `c` is not loaded: with it, the plugins' worst case is {} \
         MiB (6 instances alive at once, of at most `plugins.max_instances` = 16, each its \
         `limits.memory_mb` plus {} MiB host allowance), over `plugins.memory_budget_mb` = \
         {BUDGET_MB}; largest: `a` 2 x {m} MiB = {each} MiB, `b` 2 x {m} MiB = {each} MiB, `c` 2 \
         x {m} MiB = {each} MiB. To fit, lower a plugin's `limits.concurrency` or \
         `limits.memory_mb`, lower `plugins.max_instances`, or raise `plugins.memory_budget_mb`",
        manifest.display(),
        3 * each,
        HOST_BYTES_PER_INSTANCE >> 20,
        m = instance_mb(),
    );
    assert!(stderr.contains(&expected), "{expected}\n---\n{stderr}");
}

#[test]
fn serve_keeps_the_plugins_that_fit_and_refuses_what_would_not_at_start_and_on_reload() {
    let env = budget_env();
    for name in ["a", "b", "c"] {
        install_plugin(&env, name, wasm::LOGGER, TWO_INSTANCES);
    }
    let daemon = env.start();

    // At start: a and b fit, c is left out (the others serve).
    assert_eq!(plugin(&daemon, "a")["loaded"], true);
    assert_eq!(plugin(&daemon, "b")["loaded"], true);
    assert_eq!(plugin(&daemon, "c")["loaded"], false);
    assert!(
        last_error(&daemon, "c").contains("plugin `c` is not loaded: with it"),
        "{}",
        last_error(&daemon, "c")
    );

    // Reload: a serving plugin's manifest that would break the budget is refused; the version
    // serving now keeps serving, with its limits.
    let dir = env.dir.path().join("plugins");
    std::fs::write(
        dir.join("a.toml"),
        "events = [\"*\"]\n[limits]\nconcurrency = 3\n",
    )
    .unwrap();
    wait_until("a's new manifest is refused", WAIT, || {
        last_error(&daemon, "a").contains("version serving now keeps serving")
    });
    let a = plugin(&daemon, "a");
    assert_eq!(a["loaded"], true);
    assert_eq!(a["limits"]["concurrency"], 2);

    // Reload: a folder manifest over a ceiling is refused at its line, naming the key.
    install_plugin(
        &env,
        "d",
        wasm::LOGGER,
        "events = [\"*\"]\n[limits]\nmemory_mb = 512\n",
    );
    let manifest = dir.join("d.toml");
    let expected = format!(
        "{}:3:13: `limits.memory_mb`: 512 exceeds `plugins.max_memory_mb` = 256, the ceiling for \
         every plugin; lower it, or raise the ceiling in the main config",
        manifest.display()
    );
    wait_until("d is refused", WAIT, || {
        last_error(&daemon, "d") == expected
    });
    assert_eq!(plugin(&daemon, "d")["loaded"], false);

    // Events still reach the plugins that serve.
    assert_eq!(
        daemon
            .post(&hookd_testkit::event("caps-1", "message.created"))
            .status(),
        200
    );
    wait_until("a and b delivered", WAIT, || {
        let rows = hookd_testkit::deliveries(&env.store_dir());
        ["a", "b"].iter().all(|p| {
            rows.get(&("caps-1".to_owned(), (*p).to_owned()))
                .is_some_and(|(state, _, _)| state == "done")
        }) && rows.len() == 2
    });

    // Room is made (a back to its serving manifest, b removed): the next reload loads c,
    // whose files did not change.
    std::fs::write(dir.join("a.toml"), TWO_INSTANCES).unwrap();
    wait_until("a's error is cleared", WAIT, || {
        last_error(&daemon, "a").is_empty()
    });
    assert_eq!(plugin(&daemon, "c")["loaded"], false);
    std::fs::remove_file(dir.join("b.wasm")).unwrap();
    wait_until("c loads once it fits", WAIT, || {
        plugin(&daemon, "c")["loaded"] == true
    });
    assert!(daemon.stop().success());
}

#[test]
fn a_secret_in_a_config_that_does_not_parse_is_printed_neither_at_start_nor_on_reload() {
    const LEAK: &str = "s3cr3t-serve-must-not-print-it";
    let env = Env::new("");
    let good = std::fs::read_to_string(&env.config).unwrap();
    let bad = good.replace(
        "secrets = [\"file:secret\"]",
        &format!("secrets = \"{LEAK}\""),
    );
    assert_ne!(good, bad);

    // At start: refused, exit 2, the position and what was expected, not the value.
    std::fs::write(&env.config, &bad).unwrap();
    let output = Command::new(hookd_testkit::hookd_binary())
        .args(["serve", "--config"])
        .arg(&env.config)
        .output()
        .unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(
        shown.contains("invalid type: string (value not shown: this key may hold a secret), expected a sequence"),
        "{shown}"
    );
    let (code, stdout, stderr) = check(&env.config);
    assert_eq!(code, 2);
    assert!(!format!("{stdout}{stderr}").contains("s3cr3t"), "{stderr}");

    // On SIGHUP: refused and logged, without the value.
    std::fs::write(&env.config, &good).unwrap();
    std::fs::create_dir_all(env.dir.path().join("plugins")).unwrap();
    let daemon = env.start();
    std::fs::write(&env.config, &bad).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until("the reload is refused", WAIT, || {
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("configuration reload refused"))
    });
    // A plugin's token written where a table belongs, dropped into the folder.
    install_plugin(
        &env,
        "leaky",
        wasm::LOGGER,
        &format!("events = [\"*\"]\nconfig = \"{LEAK}\"\n"),
    );
    wait_until("the manifest is refused", WAIT, || {
        last_error(&daemon, "leaky").contains("value not shown")
    });
    let status = client()
        .get(daemon.admin_url("/plugins"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!status.contains("s3cr3t"), "{status}");
    let (status, logs) = daemon.stop_with_logs();
    let logs = logs.join("\n");
    assert!(!logs.contains("s3cr3t"), "{logs}");
    assert!(status.success());
}
