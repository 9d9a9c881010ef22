//! The plugins' compilation target on the pinned toolchain: every task that builds `plugins/`
//! adds `wasm32-wasip2` itself when it is missing.
//!
//! `rust-toolchain.toml` lists the target, but rustup adds a listed target only when it
//! installs the toolchain: a machine that already had 1.95.0 (from another project, or an
//! earlier checkout) has it without `wasm32-wasip2`, and the first plugin build fails with
//! "can't find crate for `core`". rustup is asked in the workspace root, so the answer is
//! about the toolchain cargo uses there: `RUSTUP_TOOLCHAIN` (set by `cargo +TOOLCHAIN` and by
//! rustup's proxies for the processes they start) or else the pinned one.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context as _, bail};

/// What the plugins are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// Makes sure the toolchain cargo uses in `root` can build for [`WASM_TARGET`]: adds it with
/// `rustup target add` when missing. Asks rustup once per process; a no-op (with a hint on
/// what to install) without rustup, and when rustup cannot list the toolchain's targets (a
/// linked toolchain), where cargo's own error will say what is missing.
pub fn ensure_wasm_target(root: &Path) -> anyhow::Result<()> {
    static CHECKED: Mutex<bool> = Mutex::new(false);
    let mut checked = CHECKED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !*checked {
        ensure_target(|| Command::new("rustup"), root, WASM_TARGET)?;
        *checked = true;
    }
    Ok(())
}

/// [`ensure_wasm_target`] with the way to run rustup and the target given, for the tests.
fn ensure_target(rustup: impl Fn() -> Command, root: &Path, target: &str) -> anyhow::Result<()> {
    let listed = rustup()
        .current_dir(root)
        .args(["target", "list", "--installed"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let listed = match listed {
        Ok(listed) => listed,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "xtask: rustup not found, so the `{target}` target cannot be checked or added; \
                 building the plugins needs it: with rustup (https://rustup.rs), `rustup target \
                 add {target}`; otherwise your Rust distribution's standard library for {target}"
            );
            return Ok(());
        }
        Err(e) => return Err(e).context("cannot run rustup"),
    };
    if !listed.status.success() {
        eprintln!(
            "xtask: `rustup target list --installed` failed ({}); not checking for `{target}`",
            listed.status
        );
        return Ok(());
    }
    if is_listed(&String::from_utf8_lossy(&listed.stdout), target) {
        return Ok(());
    }
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").map_or_else(
        |_| "pinned in rust-toolchain.toml".to_owned(),
        |t| format!("`{t}`"),
    );
    eprintln!(
        "xtask: the toolchain {toolchain} has no `{target}` target, which the plugins are \
         built for (rustup adds the listed targets only when it installs a toolchain); \
         running `rustup target add {target}`"
    );
    let status = rustup()
        .current_dir(root)
        .args(["target", "add", target])
        .stdin(Stdio::null())
        .status()
        .context("cannot run rustup")?;
    if !status.success() {
        bail!("`rustup target add {target}` failed ({status}); add the target, then try again");
    }
    Ok(())
}

/// Whether `rustup target list --installed`'s output (one target a line) names `target`.
fn is_listed(installed: &str, target: &str) -> bool {
    installed.lines().any(|line| line.trim() == target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for rustup in `dir`: lists `installed`, and appends each call's arguments
    /// to `calls`. Run by `sh` rather than executed, so a file just written is never "text
    /// file busy" when another test forks.
    fn fake_rustup(dir: &Path, installed: &str, add_exits_with: u8) -> impl Fn() -> Command {
        let script = dir.join("rustup.sh");
        let calls = dir.join("calls");
        std::fs::write(
            &script,
            format!(
                "echo \"$*\" >> '{}'\n\
                 if [ \"$1 $2\" = 'target list' ]; then printf '{installed}'; fi\n\
                 if [ \"$1 $2\" = 'target add' ]; then exit {add_exits_with}; fi\n",
                calls.display()
            ),
        )
        .unwrap();
        move || {
            let mut command = Command::new("sh");
            command.arg(&script);
            command
        }
    }

    fn calls(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("calls")).unwrap_or_default()
    }

    #[test]
    fn a_missing_target_is_added() {
        let dir = tempfile::tempdir().unwrap();
        let rustup = fake_rustup(dir.path(), "x86_64-unknown-linux-gnu\\n", 0);
        ensure_target(rustup, dir.path(), WASM_TARGET).unwrap();
        assert_eq!(
            calls(dir.path()),
            "target list --installed\ntarget add wasm32-wasip2\n"
        );
    }

    #[test]
    fn an_installed_target_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let rustup = fake_rustup(dir.path(), "wasm32-wasip2\\nx86_64-unknown-linux-gnu\\n", 0);
        ensure_target(rustup, dir.path(), WASM_TARGET).unwrap();
        assert_eq!(calls(dir.path()), "target list --installed\n");
    }

    #[test]
    fn a_failed_add_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let rustup = fake_rustup(dir.path(), "", 1);
        let error = ensure_target(rustup, dir.path(), WASM_TARGET).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("rustup target add wasm32-wasip2"),
            "{error:#}"
        );
    }

    #[test]
    fn without_rustup_it_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-rustup-here");
        assert!(ensure_target(|| Command::new(&missing), dir.path(), WASM_TARGET).is_ok());
    }

    #[test]
    fn a_target_is_listed_only_by_its_whole_name() {
        assert!(is_listed("wasm32-wasip1\nwasm32-wasip2\n", "wasm32-wasip2"));
        assert!(!is_listed(
            "wasm32-wasip1\nwasm32-wasip2-threads\n",
            "wasm32-wasip2"
        ));
        assert!(!is_listed("", "wasm32-wasip2"));
    }
}
