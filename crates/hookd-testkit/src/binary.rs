//! Which `hookd` binary the suites run, built once per test process from this workspace.
//!
//! The suites live in their own package (`tests/`), and cargo builds only the binaries of the
//! package under test, not those of other packages. So the first test that needs the daemon
//! runs `cargo build -p hookd` (a no-op when it is current) into the target folder the test
//! itself was built in, with the same profile: a suite never runs a stale binary. cargo holds
//! no lock while tests run, so this nested build does not wait for the outer one.
//! `HOOKD_BIN=/path/to/hookd` skips the build and runs that file instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Why the binary under test could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error(
        "cannot tell the target folder from this test's path `{0}` (expected TARGET/PROFILE/deps/NAME); set HOOKD_BIN"
    )]
    UnknownLayout(PathBuf),
    #[error("cannot run cargo to build hookd: {0}")]
    Cargo(std::io::Error),
    #[error("`{0}` failed; its output is above")]
    Build(String),
    #[error("cargo built hookd but `{0}` is missing")]
    Missing(PathBuf),
}

/// The `hookd` binary with its default features; built on first use.
///
/// # Panics
/// When it cannot be built: every test that needs the daemon fails with the reason.
pub fn hookd_binary() -> PathBuf {
    build(&[]).unwrap_or_else(|e| panic!("{e}"))
}

/// The features the crate itself was asked for (`fault-injection`), added to every build so a
/// suite compiled with them runs a daemon compiled with them.
fn implied_features() -> &'static [&'static str] {
    if cfg!(feature = "fault-injection") {
        &["fault-injection"]
    } else {
        &[]
    }
}

/// Builds once per feature set and process; later calls answer from memory.
fn build(features: &[&str]) -> Result<PathBuf, BinaryError> {
    if let Some(path) = std::env::var_os("HOOKD_BIN") {
        return Ok(PathBuf::from(path));
    }
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut all: Vec<&str> = features.iter().chain(implied_features()).copied().collect();
    all.sort_unstable();
    all.dedup();
    let key = all.join(",");
    // Held across the build: concurrent tests wait for one build instead of starting several.
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get_or_insert_with(HashMap::new).get(&key) {
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().map_err(BinaryError::Cargo)?;
    let (target, profile_dir) =
        layout(&exe).ok_or_else(|| BinaryError::UnknownLayout(exe.clone()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "hookd",
            "--bin",
            "hookd",
            "--target-dir",
        ])
        .arg(target);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(other) => {
            command.args(["--profile", other]);
        }
        None => return Err(BinaryError::UnknownLayout(exe)),
    }
    if !key.is_empty() {
        command.args(["--features", &key]);
    }
    let shown = format!(
        "cargo build -p hookd{}",
        if key.is_empty() {
            String::new()
        } else {
            format!(" --features {key}")
        }
    );
    let status = command.status().map_err(BinaryError::Cargo)?;
    if !status.success() {
        return Err(BinaryError::Build(shown));
    }
    let path = profile_dir.join("hookd");
    if !path.is_file() {
        return Err(BinaryError::Missing(path));
    }
    built
        .get_or_insert_with(HashMap::new)
        .insert(key, path.clone());
    Ok(path)
}

/// `TARGET/PROFILE/deps/NAME` -> (`TARGET`, `TARGET/PROFILE`).
fn layout(exe: &Path) -> Option<(PathBuf, PathBuf)> {
    let deps = exe.parent()?;
    if deps.file_name()? != "deps" {
        return None;
    }
    let profile = deps.parent()?;
    let target = profile.parent()?;
    Some((target.to_owned(), profile.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_binary_path_names_its_target_folder_and_profile() {
        assert_eq!(
            layout(Path::new("/w/target/debug/deps/reload-0123")),
            Some((PathBuf::from("/w/target"), PathBuf::from("/w/target/debug")))
        );
        assert_eq!(layout(Path::new("/usr/bin/reload")), None);
    }
}
