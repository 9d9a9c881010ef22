//! Paths of hookd's example plugins and test fixtures, built from `plugins/` by this crate's
//! build script. Tests depend on this crate to get real components built from source.

#![forbid(unsafe_code)]

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

/// The sample manifest (`NAME.toml`) of an example plugin, from `plugins/NAME/`.
pub fn example_manifest(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins")
        .join(name)
        .join(format!("{name}.toml"))
}
