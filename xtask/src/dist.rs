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

use std::path::{Path, PathBuf};
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

  # 4. Check (the config reads the secret from $CREDENTIALS_DIRECTORY, which systemd sets
  #    for the service; here the secret's own folder stands in for it), start, enable at boot.
  CREDENTIALS_DIRECTORY=/etc/hookd hookd check --config /etc/hookd/hookd.toml
  systemctl daemon-reload
  systemctl enable --now hookd
  systemctl status hookd
  hookd status

Logs: journalctl -u hookd -f  (JSON lines: journalctl -u hookd -o cat | jq)
Reload the configuration (validated first): systemctl reload hookd
Plugins: copy NAME.wasm + NAME.toml into /etc/hookd/plugins/; no restart needed.

Upgrade
  CREDENTIALS_DIRECTORY=/etc/hookd bin/hookd check --config /etc/hookd/hookd.toml
  cp -p /usr/bin/hookd /usr/bin/hookd.prev
  install -m 0755 bin/hookd /usr/bin/hookd
  systemctl restart hookd          # pending deliveries survive; the store is kept
  systemctl is-active hookd && journalctl -u hookd -n 20 --no-pager

Roll back
  install -m 0755 /usr/bin/hookd.prev /usr/bin/hookd
  systemctl restart hookd

The store in /var/lib/hookd/ is kept across upgrades and rollbacks. See docs/systemd.md for
the unit's hardening, secret rotation, metrics and alerts.
"#;

pub fn run() -> anyhow::Result<()> {
    let root = root()?;
    let version = env!("CARGO_PKG_VERSION");
    eprintln!("dist: cargo build --release -p hookd");
    let status = cargo()
        .current_dir(&root)
        .args(["build", "--release", "--locked", "-p", "hookd"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("the release build failed");
    }
    let built_plugins = crate::plugins::build()?;
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let bundle = assemble(
        &Sources {
            root: root.clone(),
            binary: target.join("release/hookd"),
            built_plugins,
        },
        &root.join("target/dist"),
        &bundle_name(version, std::env::consts::ARCH),
        version,
    )?;
    let archive = archive(&bundle)?;
    println!("{}", bundle.display());
    println!("{}", archive.display());
    Ok(())
}

/// `hookd-VERSION-ARCH-linux`: the bundle's folder, and its archive without `.tar.gz`.
pub fn bundle_name(version: &str, arch: &str) -> String {
    format!("hookd-{version}-{arch}-linux")
}

/// What a bundle is made of.
pub struct Sources {
    /// The repository: `config/`, `docs/`, `README.md`, `plugins/NAME/NAME.toml`.
    pub root: PathBuf,
    /// The release `hookd`.
    pub binary: PathBuf,
    /// Where `cargo xtask plugins` put `NAME.wasm`.
    pub built_plugins: PathBuf,
}

/// Lays the bundle out in `dist/NAME/` (replacing an older one) and returns its path.
///
/// The plugin manifests come from `plugins/NAME/NAME.toml`, not from the build folder beside
/// the `.wasm` files: a developer fills API tokens and webhook URLs into those copies (see the
/// README), and they must never travel in a bundle.
pub fn assemble(
    sources: &Sources,
    dist: &Path,
    name: &str,
    version: &str,
) -> anyhow::Result<PathBuf> {
    let root = &sources.root;
    let bundle = dist.join(name);
    if bundle.exists() {
        std::fs::remove_dir_all(&bundle)
            .with_context(|| format!("cannot remove the old {}", bundle.display()))?;
    }
    for dir in ["bin", "plugins", "docs"] {
        std::fs::create_dir_all(bundle.join(dir))
            .with_context(|| format!("cannot create {}", bundle.join(dir).display()))?;
    }
    copy(&sources.binary, &bundle.join("bin/hookd"))?;
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
        let wasm = format!("{plugin}.wasm");
        copy(
            &sources.built_plugins.join(&wasm),
            &bundle.join("plugins").join(&wasm),
        )?;
        let manifest = format!("{plugin}.toml");
        copy(
            &root.join("plugins").join(plugin).join(&manifest),
            &bundle.join("plugins").join(&manifest),
        )?;
    }
    std::fs::write(bundle.join("INSTALL"), INSTALL.replace("VERSION", version))
        .context("cannot write INSTALL")?;
    Ok(bundle)
}

/// `NAME.tar.gz` beside the bundle folder, its files owned by root in the archive, so that
/// unpacking it as root gives root-owned files.
pub fn archive(bundle: &Path) -> anyhow::Result<PathBuf> {
    let dist = bundle.parent().context("the bundle has a parent folder")?;
    let name = bundle
        .file_name()
        .context("the bundle has a name")?
        .to_string_lossy()
        .into_owned();
    let archive = dist.join(format!("{name}.tar.gz"));
    let status = Command::new("tar")
        .current_dir(dist)
        .args(["--owner=0", "--group=0", "--numeric-owner", "-czf"])
        .arg(&archive)
        .arg(&name)
        .status()
        .context("cannot run tar")?;
    if !status.success() {
        bail!("tar failed with {status}");
    }
    Ok(archive)
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle from the repository's files, with a stand-in binary and stand-in plugin builds
    /// (a release build takes minutes); the build folder also holds edited manifests, as a
    /// developer's does.
    fn bundle_in(dist: &Path) -> (PathBuf, PathBuf) {
        let root = root().unwrap();
        let scratch = dist.join("scratch");
        let built = scratch.join("plugins");
        std::fs::create_dir_all(&built).unwrap();
        let binary = scratch.join("hookd");
        std::fs::write(&binary, "#!/bin/sh\n").unwrap();
        for plugin in EXAMPLES {
            std::fs::write(built.join(format!("{plugin}.wasm")), plugin).unwrap();
            std::fs::write(
                built.join(format!("{plugin}.toml")),
                "[config]\napi_token = \"a developer's token\"\n",
            )
            .unwrap();
        }
        let sources = Sources {
            root: root.clone(),
            binary,
            built_plugins: built,
        };
        let bundle = assemble(&sources, dist, &bundle_name("9.9.9", "x86_64"), "9.9.9").unwrap();
        (root, bundle)
    }

    #[test]
    fn the_bundle_holds_what_install_names() {
        let dist = tempfile::tempdir().unwrap();
        let (root, bundle) = bundle_in(dist.path());
        assert_eq!(bundle, dist.path().join("hookd-9.9.9-x86_64-linux"));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(
            read(&bundle.join("hookd.toml")),
            read(&root.join("config/hookd.production.toml"))
        );
        assert_eq!(
            read(&bundle.join("hookd.service")),
            read(&root.join("config/hookd.service"))
        );
        assert!(bundle.join("bin/hookd").is_file());
        assert!(bundle.join("docs/systemd.md").is_file());
        for plugin in EXAMPLES {
            assert_eq!(read(&bundle.join(format!("plugins/{plugin}.wasm"))), plugin);
            // The manifest as shipped, never the developer's edited copy.
            assert_eq!(
                read(&bundle.join(format!("plugins/{plugin}.toml"))),
                read(&root.join(format!("plugins/{plugin}/{plugin}.toml")))
            );
        }
        let install = read(&bundle.join("INSTALL"));
        assert!(install.starts_with("hookd 9.9.9:"), "{install}");
        // Every file INSTALL copies out of the bundle is in it.
        let mut named = 0;
        for line in install.lines().map(str::trim) {
            if let Some(args) = line.strip_prefix("install -m ") {
                for file in args.split_whitespace().skip(1) {
                    if !file.starts_with('/') {
                        named += 1;
                        assert!(bundle.join(file).is_file(), "INSTALL names missing {file}");
                    }
                }
            }
        }
        assert!(named >= 4, "{install}");
    }

    #[test]
    fn the_archive_holds_the_bundle_owned_by_root() {
        let dist = tempfile::tempdir().unwrap();
        let (_, bundle) = bundle_in(dist.path());
        let archive = archive(&bundle).unwrap();
        assert_eq!(archive, dist.path().join("hookd-9.9.9-x86_64-linux.tar.gz"));
        let listing = Command::new("tar")
            .arg("-tvzf")
            .arg(&archive)
            .output()
            .unwrap();
        assert!(listing.status.success());
        let listing = String::from_utf8(listing.stdout).unwrap();
        for file in ["bin/hookd", "hookd.service", "hookd.toml", "INSTALL"] {
            let entry = format!("hookd-9.9.9-x86_64-linux/{file}");
            let line = listing
                .lines()
                .find(|l| l.ends_with(&entry))
                .unwrap_or_else(|| panic!("{entry} not in:\n{listing}"));
            assert!(line.contains(" 0/0 "), "not owned by root: {line}");
        }
        // Only the bundle: nothing from beside it.
        assert!(!listing.contains("scratch"), "{listing}");
    }
}
