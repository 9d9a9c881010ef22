//! The plugin catalog against real folders: which plugins make up the set, what a folder that
//! is missing, gone or unreadable means, and that both kinds of manifest meet the same ceilings.

use std::path::Path;

use hookd_config::catalog::{Folder, FolderError, PluginError};
use hookd_config::{Catalog, Config, PluginSpec};

const SECRET: &str = "[verify]\nsecrets = [\"0123456789abcdef0123\"]\n";

/// A config in `dir` whose plugin folder is `dir/plugins`, with `tail` appended.
fn config(dir: &Path, tail: &str) -> Config {
    let path = dir.join("hookd.toml");
    std::fs::write(
        &path,
        format!("{SECRET}[plugins]\ndir = \"plugins\"\n{tail}"),
    )
    .unwrap();
    Config::load(&path).unwrap()
}

/// A folder plugin `name` subscribed to everything, with `extra` manifest lines.
fn folder_plugin(dir: &Path, name: &str, extra: &str) {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(
        plugins.join(format!("{name}.wasm")),
        b"not read by the catalog",
    )
    .unwrap();
    std::fs::write(
        plugins.join(format!("{name}.toml")),
        format!("events = [\"*\"]\n{extra}"),
    )
    .unwrap();
}

fn names(specs: &[PluginSpec]) -> Vec<&str> {
    specs.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn the_folder_and_the_main_config_make_one_set_and_the_main_config_wins() {
    let dir = tempfile::tempdir().unwrap();
    folder_plugin(dir.path(), "a", "");
    folder_plugin(dir.path(), "b", "");
    let config = config(
        dir.path(),
        "[[plugin]]\nname = \"b\"\nevents = [\"message.created\"]\n",
    );
    let catalog = Catalog::read(&config.plugins, []);
    assert_eq!(names(&catalog.specs), ["b", "a"], "declared first");
    let b = &catalog.specs[0];
    assert_eq!(b.source, dir.path().join("hookd.toml"));
    assert_eq!(catalog.shadowed.len(), 1);
    assert_eq!(catalog.shadowed[0].plugin, "b");
    assert!(catalog.refused.is_empty(), "{:?}", catalog.refused);
    assert!(matches!(catalog.folder, Folder::Read));
}

#[test]
fn a_folder_manifest_over_a_ceiling_is_refused_at_its_line_like_a_main_config_entry() {
    let dir = tempfile::tempdir().unwrap();
    folder_plugin(dir.path(), "big", "[limits]\nmemory_mb = 64\n");
    let config = config(dir.path(), "max_memory_mb = 32\n");
    let catalog = Catalog::read(&config.plugins, []);
    assert!(catalog.specs.is_empty());
    let [refusal] = &catalog.refused[..] else {
        panic!("{:?}", catalog.refused)
    };
    assert_eq!(refusal.plugin, "big");
    let shown = refusal.error.to_string();
    let at = format!(
        "{}:3:13: `limits.memory_mb`",
        dir.path().join("plugins/big.toml").display()
    );
    assert!(shown.starts_with(&at), "{shown}");
    assert!(shown.contains("`plugins.max_memory_mb` = 32"), "{shown}");

    // The same entry in the main config stops the config, at its own line.
    let path = dir.path().join("declared.toml");
    std::fs::write(
        &path,
        format!(
            "{SECRET}[plugins]\nmax_memory_mb = 32\n[[plugin]]\nname = \"big\"\n\
             events = [\"*\"]\n[plugin.limits]\nmemory_mb = 64\n"
        ),
    )
    .unwrap();
    let errors = Config::load(&path).unwrap_err().to_string();
    let at = format!("{}:9:13: `plugin[0].limits.memory_mb`", path.display());
    assert!(errors.contains(&at), "{errors}");
    assert!(errors.contains("`plugins.max_memory_mb` = 32"), "{errors}");
}

#[test]
fn a_component_without_its_manifest_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    folder_plugin(dir.path(), "a", "");
    std::fs::write(dir.path().join("plugins/orphan.wasm"), b"x").unwrap();
    let config = config(dir.path(), "");
    let catalog = Catalog::read(&config.plugins, []);
    assert_eq!(names(&catalog.specs), ["a"]);
    let [refusal] = &catalog.refused[..] else {
        panic!("{:?}", catalog.refused)
    };
    assert_eq!(refusal.plugin, "orphan");
    assert!(matches!(refusal.error, PluginError::NoManifest { .. }));
}

#[test]
fn a_folder_that_does_not_exist_at_a_start_is_absent_not_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "[[plugin]]\nname = \"declared\"\nevents = [\"*\"]\n",
    );
    let catalog = Catalog::read(&config.plugins, []);
    assert_eq!(names(&catalog.specs), ["declared"]);
    assert!(
        matches!(catalog.folder, Folder::Absent),
        "{:?}",
        catalog.folder
    );
}

#[test]
fn a_folder_gone_while_its_plugins_serve_is_a_refusal_that_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    folder_plugin(dir.path(), "a", "");
    let config = config(
        dir.path(),
        "[[plugin]]\nname = \"declared\"\nevents = [\"*\"]\n",
    );
    let serving = Catalog::read(&config.plugins, []).specs;
    assert_eq!(names(&serving), ["declared", "a"]);

    std::fs::remove_dir_all(dir.path().join("plugins")).unwrap();
    let catalog = Catalog::read(&config.plugins, &serving);
    // The declared plugin is still described; `a` cannot be seen, so it is kept, not removed.
    assert_eq!(names(&catalog.specs), ["declared"]);
    match &catalog.folder {
        Folder::Refused {
            error: FolderError::Gone { dir: gone },
            kept,
        } => {
            assert_eq!(gone, &config.plugins.dir);
            assert_eq!(kept, &["a"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unreadable_folder_keeps_what_serves_and_counts_it_in_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    // 4 x (256 + 24) MiB = 1,120 MiB of a 1,536 MiB budget.
    folder_plugin(dir.path(), "a", "[limits]\nmemory_mb = 256\n");
    let config = config(dir.path(), "");
    let serving = Catalog::read(&config.plugins, []).specs;
    assert_eq!(names(&serving), ["a"]);

    // A file where the folder was: listing it fails (for root too, unlike a chmod).
    std::fs::remove_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::write(dir.path().join("plugins"), b"").unwrap();
    // A new main-config plugin that fits alone but not beside the kept `a`.
    let config = self::config(
        dir.path(),
        "[[plugin]]\nname = \"b\"\nevents = [\"*\"]\n[plugin.limits]\nmemory_mb = 256\n",
    );
    let catalog = Catalog::read(&config.plugins, &serving);
    match &catalog.folder {
        Folder::Refused {
            error: error @ FolderError::Unreadable { .. },
            kept,
        } => {
            assert_eq!(kept, &["a"]);
            let shown = error.to_string();
            assert!(
                shown.starts_with(&format!(
                    "cannot read the plugin folder `{}`: ",
                    config.plugins.dir.display()
                )),
                "{shown}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(catalog.specs.is_empty(), "{:?}", names(&catalog.specs));
    let [refusal] = &catalog.refused[..] else {
        panic!("{:?}", catalog.refused)
    };
    assert_eq!(refusal.plugin, "b");
    assert!(matches!(refusal.error, PluginError::OverBudget(_)));
}

#[test]
fn a_main_config_plugin_named_empty_is_an_error_not_a_plugin() {
    let errors = Config::from_toml(
        &format!("{SECRET}[[plugin]]\nname = \"\"\nevents = [\"*\"]\n"),
        Some(Path::new("hookd.toml")),
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("hookd.toml:4:8: `plugin[0].name`: plugin name `` must be"),
        "{errors}"
    );
}
