//! Reload's decisions, in process: `hookd_engine::reload::rebuild` against a real plugin host
//! and real components built from `plugins/`, in a temp folder the test changes between
//! rebuilds. What is added, kept as it is (the same loaded plugin), relinked under a new
//! manifest, replaced, refused (the old version kept), refused again without a new compile,
//! removed, and kept when the folder disappears.

use std::sync::Arc;

use hookd_config::Config;
use hookd_engine::plugins::PluginMap;
use hookd_engine::reload::{ChangeKind, Rebuilt, Refusals, rebuild};
use hookd_host::{HostSettings, PluginHost};
use hookd_testkit::Env;

struct Folder {
    env: Env,
    host: PluginHost,
    serving: PluginMap,
    refused: Refusals,
}

impl Folder {
    fn new() -> Self {
        let host = PluginHost::new(
            HostSettings {
                pooling: false,
                ..HostSettings::default()
            },
            Arc::new(hookd_host::MemoryKv::default()),
        )
        .expect("a plugin host");
        Self {
            env: Env::new(""),
            host,
            serving: PluginMap::new(),
            refused: Refusals::new(),
        }
    }

    /// One reload: rebuilds, then keeps what the reloader would (the new map, the refusals).
    fn rebuild(&mut self) -> Rebuilt {
        let config = Config::load(&self.env.config).expect("the test config is valid");
        let rebuilt = rebuild(&self.host, None, &self.serving, &config, &self.refused);
        self.serving = rebuilt.plugins.clone();
        for c in &rebuilt.changes {
            match (&c.kind, &c.error) {
                (ChangeKind::Failed, Some(error)) => {
                    self.refused
                        .insert(c.plugin.clone(), (c.new_hash.clone(), error.clone()));
                }
                _ => {
                    self.refused.remove(&c.plugin);
                }
            }
        }
        rebuilt
    }

    fn kinds(rebuilt: &Rebuilt) -> Vec<(String, ChangeKind, bool)> {
        let mut kinds: Vec<_> = rebuilt
            .changes
            .iter()
            .map(|c| (c.plugin.clone(), c.kind, c.repeat))
            .collect();
        kinds.sort_by(|a, b| a.0.cmp(&b.0));
        kinds
    }
}

fn change(plugin: &str, kind: ChangeKind, repeat: bool) -> (String, ChangeKind, bool) {
    (plugin.to_owned(), kind, repeat)
}

#[test]
fn each_kind_of_change_gets_its_decision() {
    let mut f = Folder::new();
    f.env.install_plugin(
        "logger",
        hookd_test_plugins::LOGGER,
        "events = [\"message.*\"]\n",
    );
    f.env
        .install_plugin("counter", hookd_test_plugins::COUNTER, "events = [\"*\"]\n");
    let r = f.rebuild();
    assert_eq!(
        Folder::kinds(&r),
        [
            change("counter", ChangeKind::Added, false),
            change("logger", ChangeKind::Added, false)
        ]
    );
    assert!(r.folder_refused.is_none());
    let logger = r.plugins["logger"].clone();

    // Nothing changed: no change reported, the very same loaded plugin kept.
    let r = f.rebuild();
    assert!(r.changes.is_empty(), "{:?}", Folder::kinds(&r));
    assert!(
        Arc::ptr_eq(&r.plugins["logger"], &logger),
        "an unchanged plugin was reloaded"
    );

    // A new manifest with the same code: relinked, the same content hash.
    std::fs::write(
        f.env.plugins_dir().join("logger.toml"),
        "events = [\"*\"]\n",
    )
    .unwrap();
    let r = f.rebuild();
    assert_eq!(
        Folder::kinds(&r),
        [change("logger", ChangeKind::Manifest, false)]
    );
    assert_eq!(r.plugins["logger"].content_hash, logger.content_hash);
    assert!(!Arc::ptr_eq(&r.plugins["logger"], &logger));
    let logger = r.plugins["logger"].clone();

    // New code: replaced.
    std::fs::copy(
        hookd_test_plugins::FIXTURE_NOOP,
        f.env.plugins_dir().join("logger.wasm"),
    )
    .unwrap();
    let r = f.rebuild();
    assert_eq!(
        Folder::kinds(&r),
        [change("logger", ChangeKind::Updated, false)]
    );
    assert_ne!(r.plugins["logger"].content_hash, logger.content_hash);
    let logger = r.plugins["logger"].clone();

    // Broken code: refused, the serving version kept; the same broken file again is a repeat
    // (not compiled, logged or counted again).
    std::fs::write(f.env.plugins_dir().join("logger.wasm"), b"\0asm garbage").unwrap();
    let r = f.rebuild();
    assert_eq!(
        Folder::kinds(&r),
        [change("logger", ChangeKind::Failed, false)]
    );
    assert!(
        Arc::ptr_eq(&r.plugins["logger"], &logger),
        "a refused file replaced a plugin"
    );
    let r = f.rebuild();
    assert_eq!(
        Folder::kinds(&r),
        [change("logger", ChangeKind::Failed, true)]
    );
    assert!(Arc::ptr_eq(&r.plugins["logger"], &logger));

    // Removed: gone from the map.
    std::fs::remove_file(f.env.plugins_dir().join("counter.wasm")).unwrap();
    std::fs::remove_file(f.env.plugins_dir().join("counter.toml")).unwrap();
    let r = f.rebuild();
    assert!(
        Folder::kinds(&r).contains(&change("counter", ChangeKind::Removed, false)),
        "{:?}",
        Folder::kinds(&r)
    );
    assert!(!r.plugins.contains_key("counter"));

    // The whole folder gone: a refusal, and every plugin it held keeps serving.
    std::fs::remove_dir_all(f.env.plugins_dir()).unwrap();
    let r = f.rebuild();
    let refusal = r
        .folder_refused
        .as_ref()
        .expect("the lost folder is refused");
    assert_eq!(refusal.kept, ["logger"]);
    assert!(
        Arc::ptr_eq(&r.plugins["logger"], &logger),
        "a lost folder unloaded a plugin"
    );
    assert!(
        !Folder::kinds(&r).iter().any(|c| c.1 == ChangeKind::Removed),
        "{:?}",
        Folder::kinds(&r)
    );
}
