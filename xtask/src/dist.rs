//! `cargo xtask dist`: the release bundle an operator installs from, in `target/dist/`:
//!
//! ```text
//! hookd-VERSION-ARCH-linux/
//!   bin/hookd                  release build
//!   hookd.service              config/hookd.service
//!   hookd.toml                 config/hookd.production.toml
//!   plugins/NAME.wasm + .toml  the example plugins (none is installed by default)
//!   INSTALL                    the install, upgrade and rollback commands
//!   README.md, docs/systemd.md
//! hookd-VERSION-ARCH-linux.tar.gz
//! ```

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::plugins::{EXAMPLES, cargo, root};

const INSTALL: &str = r#"hookd VERSION: install as a systemd service (Debian, Ubuntu)
=============================================================

From this folder, as root:

  # 1. The binary, the unit, the configuration.
  install -m 0755 bin/hookd /usr/bin/hookd
  install -m 0644 hookd.service /etc/systemd/system/hookd.service
  install -d -m 0755 /etc/hookd /etc/hookd/plugins
  install -m 0644 hookd.toml /etc/hookd/hookd.toml

  # 2. The webhook secret Protocol signs with (at least 16 bytes), readable by root only;
  #    systemd hands it to hookd as a credential. Use the one Protocol shows you, or make one
  #    and register it with Protocol:
  (umask 077; openssl rand -hex 32 > /etc/hookd/webhook-secret)

  # 3. Plugins you want (optional): NAME.wasm + NAME.toml. Edit the .toml first.
  install -m 0644 plugins/logger.wasm plugins/logger.toml /etc/hookd/plugins/

  # 4. Check, start, and enable at boot.
  hookd check --config /etc/hookd/hookd.toml   # as root: reads the secret directly
  systemctl daemon-reload
  systemctl enable --now hookd
  systemctl status hookd
  hookd status

Logs: journalctl -u hookd -f  (JSON lines: journalctl -u hookd -o cat | jq)
Reload the configuration (validated first): systemctl reload hookd
Plugins: copy NAME.wasm + NAME.toml into /etc/hookd/plugins/; no restart needed.

Upgrade
  cp /usr/bin/hookd /usr/bin/hookd.prev
  install -m 0755 bin/hookd /usr/bin/hookd
  systemctl restart hookd          # pending deliveries survive; the store is kept

Roll back
  install -m 0755 /usr/bin/hookd.prev /usr/bin/hookd
  systemctl restart hookd

The store in /var/lib/hookd/ is kept across upgrades and rollbacks. See docs/systemd.md for
the unit's hardening, secret rotation, metrics and alerts.
"#;

pub fn run() -> anyhow::Result<()> {
    let root = root()?;
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("hookd-{version}-{}-linux", std::env::consts::ARCH);
    eprintln!("dist: cargo build --release -p hookd");
    let status = cargo()
        .current_dir(&root)
        .args(["build", "--release", "--locked", "-p", "hookd"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("the release build failed");
    }
    let plugins = crate::plugins::build()?;
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let dist = root.join("target/dist");
    let bundle = dist.join(&name);
    if bundle.exists() {
        std::fs::remove_dir_all(&bundle)?;
    }
    for dir in ["bin", "plugins", "docs"] {
        std::fs::create_dir_all(bundle.join(dir))?;
    }
    copy(&target.join("release/hookd"), &bundle.join("bin/hookd"))?;
    copy(
        &root.join("config/hookd.service"),
        &bundle.join("hookd.service"),
    )?;
    copy(
        &root.join("config/hookd.production.toml"),
        &bundle.join("hookd.toml"),
    )?;
    copy(&root.join("README.md"), &bundle.join("README.md"))?;
    copy(
        &root.join("docs/systemd.md"),
        &bundle.join("docs/systemd.md"),
    )?;
    for plugin in EXAMPLES {
        for ext in ["wasm", "toml"] {
            let file = format!("{plugin}.{ext}");
            copy(&plugins.join(&file), &bundle.join("plugins").join(&file))?;
        }
    }
    std::fs::write(bundle.join("INSTALL"), INSTALL.replace("VERSION", version))?;

    let archive = dist.join(format!("{name}.tar.gz"));
    let status = Command::new("tar")
        .current_dir(&dist)
        .arg("czf")
        .arg(&archive)
        .arg(&name)
        .status()
        .context("cannot run tar")?;
    if !status.success() {
        bail!("tar failed");
    }
    println!("{}", bundle.display());
    println!("{}", archive.display());
    Ok(())
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}
