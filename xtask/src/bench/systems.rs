//! The systems `cargo xtask bench` measures: each one's name, what it needs, how it is
//! started in a fresh temp dir, and how its readiness and completed work are read.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde_json::json;

use super::Paths;
use super::needs::{CEILING, CPU_HEAVY_PLUGIN, HOOKD, NOOP_PLUGIN, Need, WEBHOOK};

/// The webhook secret every system is configured with, written to `secret` in its temp dir.
pub(super) const SECRET: &str = "hookd-bench-secret-0123456789abcdef";

/// A system under test. Adding one (another webhook receiver, hookd with other settings) is
/// one entry in [`SYSTEMS`].
pub(super) struct System {
    pub(super) name: &'static str,
    /// What must be built or installed first; if any is missing the system is skipped.
    pub(super) needs: &'static [Need],
    /// Writes the system's files into its fresh `dir` (which already holds the webhook
    /// secret in `secret`) and returns the command that starts it there.
    pub(super) start: fn(&Paths, &Path) -> anyhow::Result<Command>,
    /// The text right before the ingest address in the stdout or stderr line announcing it.
    pub(super) ready: &'static str,
    /// The ingest path, appended to the address.
    pub(super) path: &'static str,
    /// For a system with plugins: the plugin whose completed deliveries are awaited after the
    /// load, read from `hookd_deliveries_total` on the admin listener.
    pub(super) delivered_by: Option<&'static str>,
    /// For a system that runs a command per event in the background: the file each run
    /// appends a line to, counted after the load (commands that really ran).
    pub(super) commands_counted_in: Option<&'static str>,
}
/// adnanh/webhook in `dir`: one hook `protocol` whose rule checks `X-Protocol-Signature` as
/// an HMAC-SHA256 of the body, answering 401 when it does not match. `sync`: runs `/bin/true`
/// and answers with its output (the command's completion is in the answer); otherwise the
/// default: answer at once, run the command in the background, here a script that appends a
/// line to `ran` so the runs can be counted.
fn webhook_serve(dir: &Path, sync: bool) -> anyhow::Result<Command> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let command = if sync {
        "/bin/true".to_owned()
    } else {
        let script = dir.join("ran.sh");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho x >> '{}'\n", dir.join("ran").display()),
        )?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        script.display().to_string()
    };
    let hooks = json!([{
        "id": "protocol",
        "execute-command": command,
        "include-command-output-in-response": sync,
        "trigger-rule-mismatch-http-response-code": 401,
        "trigger-rule": {
            "match": {
                "type": "payload-hmac-sha256",
                "secret": SECRET,
                "parameter": { "source": "header", "name": "X-Protocol-Signature" }
            }
        }
    }]);
    std::fs::write(
        dir.join("hooks.json"),
        serde_json::to_string_pretty(&hooks)?,
    )?;
    let mut c = Command::new("/usr/bin/webhook");
    c.arg("-hooks")
        .arg(dir.join("hooks.json"))
        .args(["-ip", "127.0.0.1", "-port", &port.to_string()])
        // Without -verbose it prints nothing, not even the address it serves on. It then logs
        // each request, as hookd logs each event.
        .arg("-verbose");
    Ok(c)
}
/// The row the CPU-heavy one is compared with: ingest with nothing subscribed.
pub(super) const INGEST_BASELINE: &str = "hookd durable ingest";
pub(super) const INGEST_CPU_HEAVY: &str = "hookd + CPU-heavy plugin, ingest";

/// The systems, in the order they run at each connection count. The first is the ceiling.
pub(super) const SYSTEMS: &[System] = &[
    System {
        name: "ceiling (warp, verify only)",
        needs: &[CEILING],
        start: |paths, dir| {
            let mut c = Command::new(paths.bin("hookd-ceiling"));
            c.args(["--listen", "127.0.0.1:0", "--secret-file"])
                .arg(dir.join("secret"));
            Ok(c)
        },
        ready: "listening on ",
        path: "/webhooks",
        delivered_by: None,
        commands_counted_in: None,
    },
    System {
        name: "adnanh/webhook 2.8, sync /bin/true",
        needs: &[WEBHOOK],
        start: |_, dir| webhook_serve(dir, true),
        ready: "serving hooks on http://",
        path: "/hooks/protocol",
        delivered_by: None,
        commands_counted_in: None,
    },
    System {
        name: "adnanh/webhook 2.8, async (runs counted)",
        needs: &[WEBHOOK],
        start: |_, dir| webhook_serve(dir, false),
        ready: "serving hooks on http://",
        path: "/hooks/protocol",
        delivered_by: None,
        commands_counted_in: Some("ran"),
    },
    System {
        name: "hookd durable ingest",
        needs: &[HOOKD],
        start: |paths, dir| {
            std::fs::create_dir_all(dir.join("plugins"))?;
            hookd_serve(paths, dir, "")
        },
        ready: "ingest listening on ",
        path: "/webhooks",
        delivered_by: None,
        commands_counted_in: None,
    },
    // A plugin that computes for a few milliseconds on every event (as one in Python or
    // JavaScript does): the sender must still be answered at disk speed. Its deliveries
    // lag behind in the durable queue and are not awaited here (the isolation tests check
    // that they all complete).
    System {
        name: INGEST_CPU_HEAVY,
        needs: &[HOOKD, CPU_HEAVY_PLUGIN],
        start: |paths, dir| {
            let plugins = dir.join("plugins");
            std::fs::create_dir_all(&plugins)?;
            let wasm = paths.plugin("fixture_cpu_heavy.wasm");
            std::fs::copy(&wasm, plugins.join("busy.wasm"))
                .with_context(|| format!("cannot copy {}", wasm.display()))?;
            std::fs::write(plugins.join("busy.toml"), "events = [\"*\"]\n")?;
            hookd_serve(paths, dir, "")
        },
        ready: "ingest listening on ",
        path: "/webhooks",
        delivered_by: None,
        commands_counted_in: None,
    },
    System {
        name: "hookd + no-op plugin, delivered",
        needs: &[HOOKD, NOOP_PLUGIN],
        start: |paths, dir| {
            let plugins = dir.join("plugins");
            std::fs::create_dir_all(&plugins)?;
            let wasm = paths.plugin("fixture_noop.wasm");
            std::fs::copy(&wasm, plugins.join("noop.wasm"))
                .with_context(|| format!("cannot copy {}", wasm.display()))?;
            std::fs::write(plugins.join("noop.toml"), "events = [\"*\"]\n")?;
            hookd_serve(paths, dir, "127.0.0.1:0")
        },
        ready: "ingest listening on ",
        path: "/webhooks",
        delivered_by: Some("noop"),
        commands_counted_in: None,
    },
];

/// `hookd serve` on a config in `dir`: defaults everywhere except the addresses (OS-picked)
/// and the paths (inside `dir`), JSON logs at `info` as a service would have.
fn hookd_serve(paths: &Paths, dir: &Path, admin: &str) -> anyhow::Result<Command> {
    let config = dir.join("hookd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npath = \"/webhooks\"\n\
             [admin]\nlisten = \"{admin}\"\n\
             [verify]\nsecrets = [\"file:secret\"]\n\
             [store]\ndir = \"state\"\n\
             [plugins]\ndir = \"plugins\"\n\
             [log]\nformat = \"json\"\nfilter = \"info\"\n"
        ),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    let mut c = Command::new(paths.bin("hookd"));
    c.args(["serve", "--config"]).arg(&config);
    Ok(c)
}

/// The row the "vs webhook" column compares with.
pub(super) const WEBHOOK_BASELINE: &str = "adnanh/webhook 2.8, sync /bin/true";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_system_is_the_ceiling_and_names_are_unique() {
        assert!(SYSTEMS[0].needs.contains(&CEILING));
        for (i, a) in SYSTEMS.iter().enumerate() {
            assert!(SYSTEMS[i + 1..].iter().all(|b| b.name != a.name));
        }
    }
}
