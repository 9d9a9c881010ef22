//! Builds every plugin in `plugins/` for `wasm32-wasip2`, so tests run real components built
//! from source (never checked-in binaries), and writes their paths into `OUT_DIR/plugins.rs`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("workspace root");
    let plugins = root.join("plugins");
    for watched in [
        "plugins",
        "crates/hookd-sdk",
        "crates/hookd-core/src",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--locked",
        ])
        .arg("--target-dir")
        .arg(plugins.join("target"));
    // The outer build's settings are for the host, not for the guests.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        build.env_remove(var);
    }
    let status = build.status().expect("cannot run cargo for the plugins");
    assert!(
        status.success(),
        "building plugins/ for wasm32-wasip2 failed"
    );

    let out_dir = plugins.join("target/wasm32-wasip2/release");
    let mut constants = String::new();
    for name in [
        "logger",
        "auto_reply",
        "forwarder",
        "counter",
        "fixture_noop",
        "fixture_trap",
        "fixture_infinite_loop",
        "fixture_memory_bomb",
        "fixture_stack_overflow",
        "fixture_log_flood",
        "fixture_panic",
        "fixture_flaky",
        "fixture_wrong_import",
        "fixture_version_a",
        "fixture_version_b",
        "fixture_kv_filler",
        "fixture_kv_heavy",
        "fixture_http_poster",
        "fixture_http_flood",
        "fixture_cpu_heavy",
        "fixture_host_resources",
        "fixture_huge_retry",
        "fixture_killed_mid_delivery",
        "fixture_plugin_0_1_0",
        "fixture_http_call",
    ] {
        let path = out_dir.join(format!("{name}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        constants.push_str(&format!(
            "pub const {}: &str = {:?};\n",
            name.to_uppercase(),
            path.display().to_string()
        ));
    }
    // Fixtures no Rust toolchain can produce (several core instances and memories in one
    // component) are written by hand in the WebAssembly text format and assembled here.
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    #[allow(clippy::single_element_loop)] // more fixtures in WAT belong in this list
    for name in ["many-memories"] {
        let source = plugins.join("fixtures-wat").join(format!("{name}.wat"));
        let binary =
            wat::parse_file(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        let path = out.join(format!("fixture_{}.wasm", name.replace('-', "_")));
        std::fs::write(&path, binary).expect("write an assembled fixture");
        constants.push_str(&format!(
            "pub const FIXTURE_{}: &str = {:?};\n",
            name.replace('-', "_").to_uppercase(),
            path.display().to_string()
        ));
    }
    let dest = out.join("plugins.rs");
    std::fs::write(dest, constants).expect("write plugins.rs");
}
