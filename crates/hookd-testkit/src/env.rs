//! A temp folder with a config, a secret and a plugin folder for one daemon, which can be
//! started, killed and started again on the same store.

use std::path::PathBuf;

use crate::daemon::Daemon;

/// The webhook secret every [`Env`] is configured with (file `secret`).
pub const SECRET: &str = "hookd-test-secret-0123456789abcdef";

/// One daemon's folder: `hookd.toml`, `secret`, `state/` (the store), `plugins/`.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Env {
    /// `server_extra` is appended inside `[server]` (or opens its own section).
    ///
    /// # Panics
    /// When the temp folder cannot be written.
    pub fn new(server_extra: &str) -> Self {
        Self::with_config(server_extra, "")
    }

    /// [`Env::new`], with `tail` appended at the end of the config.
    ///
    /// # Panics
    /// When the temp folder cannot be written.
    pub fn with_config(server_extra: &str, tail: &str) -> Self {
        Self::with_store(server_extra, "", tail)
    }

    /// [`Env::with_config`], with `store_extra` appended inside `[store]` (e.g.
    /// `backend = "nats"`; a `[store.nats]` table goes in `tail`).
    ///
    /// # Panics
    /// When the temp folder cannot be written.
    pub fn with_store(server_extra: &str, store_extra: &str, tail: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot make a temp dir: {e}"));
        let write = |path: PathBuf, text: &str| {
            std::fs::write(&path, text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        };
        write(dir.path().join("secret"), SECRET);
        let config = dir.path().join("hookd.toml");
        write(
            config.clone(),
            &format!(
                r#"[server]
listen = "127.0.0.1:0"
{server_extra}

[admin]
listen = "127.0.0.1:0"

[verify]
secrets = ["file:secret"]

[store]
dir = "state"
{store_extra}

[plugins]
dir = "plugins"

[log]
filter = "debug"
{tail}
"#
            ),
        );
        Env { dir, config }
    }

    /// The store folder (`state/`).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The plugin folder (`plugins/`; made by [`Env::install_plugin`]).
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Starts the daemon under test on this config.
    #[track_caller]
    pub fn start(&self) -> Daemon {
        Daemon::start(&self.config)
    }

    /// Puts plugin `name` (component `wasm`, manifest text `toml`) into the plugin folder.
    ///
    /// # Panics
    /// When the files cannot be copied or written.
    pub fn install_plugin(&self, name: &str, wasm: &str, toml: &str) {
        let dir = self.plugins_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        std::fs::copy(wasm, dir.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("cannot copy {wasm}: {e}"));
        std::fs::write(dir.join(format!("{name}.toml")), toml)
            .unwrap_or_else(|e| panic!("cannot write {name}.toml: {e}"));
    }
}

/// Puts plugin `name` into `env`'s plugin folder ([`Env::install_plugin`]).
pub fn install_plugin(env: &Env, name: &str, wasm: &str, toml: &str) {
    env.install_plugin(name, wasm, toml);
}
