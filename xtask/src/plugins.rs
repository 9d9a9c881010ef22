//! `cargo xtask plugins`: builds the example plugins for `wasm32-wasip2` and collects each
//! `NAME.wasm` with its sample `NAME.toml` into `target/plugins/`, ready to copy into a
//! plugin folder. `cargo xtask run` does that, then starts the daemon on `config/hookd.toml`.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The example plugins: folder (= plugin name) under `plugins/`.
pub const EXAMPLES: [&str; 4] = ["logger", "auto-reply", "forwarder", "counter"];

pub fn root() -> anyhow::Result<PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the workspace")?
        .to_owned())
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub fn build() -> anyhow::Result<PathBuf> {
    let root = root()?;
    let plugins = root.join("plugins");
    crate::toolchain::ensure_wasm_target(&root)?;
    let status = cargo()
        .current_dir(&plugins)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building the plugins failed");
    }
    let out = root.join("target/plugins");
    std::fs::create_dir_all(&out)?;
    for name in EXAMPLES {
        let wasm = plugins
            .join("target/wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let manifest = plugins.join(name).join(format!("{name}.toml"));
        // Write to a temporary name and rename, so a running daemon never sees half a file.
        let dest = out.join(format!("{name}.wasm"));
        let tmp = out.join(format!(".{name}.wasm.tmp"));
        std::fs::copy(&wasm, &tmp).with_context(|| format!("copying {}", wasm.display()))?;
        std::fs::rename(&tmp, &dest)?;
        let dest_toml = out.join(format!("{name}.toml"));
        if !dest_toml.exists() {
            std::fs::copy(&manifest, &dest_toml)
                .with_context(|| format!("copying {}", manifest.display()))?;
        }
        eprintln!("  {} + {name}.toml", dest.display());
    }
    Ok(out)
}

/// `cargo xtask run`: the example plugins, then `hookd serve` on the development config from
/// a release build, whose binary the README's next steps (`send`, `dlq`) use rather than
/// starting a debug build of their own.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let nats = match args {
        [] => false,
        [flag] if flag == "--nats" => true,
        _ => bail!("usage: cargo xtask run [--nats]"),
    };
    build()?;
    let root = root()?;
    let status = cargo()
        .current_dir(&root)
        .args(["build", "--release", "-p", "hookd"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building hookd failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    let hookd = target.join("release/hookd");
    let config = if nats {
        start_nats(&target)?;
        "config/hookd.nats.toml"
    } else {
        "config/hookd.toml"
    };
    // Printed once the build is done, so it is not lost in cargo's progress; relative to the
    // workspace when it is inside, as the README writes it.
    let shown = hookd.strip_prefix(&root).unwrap_or(&hookd).display();
    eprintln!("xtask: {shown} serve --config {config}");
    eprintln!("xtask: from another terminal: {shown} send ... (see README.md)");
    // hookd takes this process's place: the shell waits for its graceful stop on Ctrl-C, and
    // its exit status is this command's.
    let error = Command::new(&hookd)
        .current_dir(&root)
        .args(["serve", "--config", config])
        .exec();
    Err(error).with_context(|| format!("cannot start {}", hookd.display()))
}

/// A one-node JetStream server for `cargo xtask run --nats`, on 127.0.0.1:4222 with its store
/// in `target/hookd-dev/nats/`; it stops with the daemon that takes this process's place.
fn start_nats(target: &Path) -> anyhow::Result<()> {
    let dir = target.join("hookd-dev/nats");
    std::fs::create_dir_all(dir.join("store"))?;
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:4222\nhttp: 127.0.0.1:8222\nmax_payload: 8MB\n\
             jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
            dir.join("store").display()
        ),
    )?;
    let binary = hookd_testkit::nats::nats_server_binary();
    let log = std::fs::File::create(dir.join("log"))?;
    let mut command = Command::new(&binary);
    command
        .arg("-c")
        .arg(&conf)
        .stdout(log.try_clone()?)
        .stderr(log);
    hookd_testkit::process::own_group_and_die_with_us(&mut command);
    command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    eprintln!(
        "xtask: nats-server (JetStream) on 127.0.0.1:4222, store in {}, log in {}",
        dir.join("store").display(),
        dir.join("log").display()
    );
    Ok(())
}
