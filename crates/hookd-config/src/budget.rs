//! The plugins' memory budget: the most memory the plugin set can make hookd hold at once,
//! checked against `[plugins] memory_budget_mb` before a plugin set is loaded.
//!
//! The worst case is counted in instances, because that is what holds memory: a plugin runs at
//! most `limits.concurrency` instances at once, and all plugins together at most
//! `plugins.max_instances`. Each instance may hold its `limits.memory_mb` of linear memory
//! plus [`HOST_BYTES_PER_INSTANCE`] on the host's side. The worst case takes the largest
//! instances first: the `max_instances` biggest slots that the plugins' concurrencies allow.
//!
//! A set that does not fit is not refused whole: plugins are admitted one at a time, those
//! already serving (and those declared in the main config) first, and a plugin that would
//! take the set over the budget is left out with a message that says what to change.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::{ConfigError, Location, PluginSpec, PluginsConfig};

/// What one running instance may make the host hold beyond its linear memory (resource
/// table entries, wasi:http header fields and bodies, captured output and log lines), at
/// most. The host enforces its own caps below this; the budget counts this much per
/// instance. `hookd` checks at compile time that the host's own figure
/// (`hookd_host::HOST_BYTES_PER_INSTANCE`) does not exceed it.
pub const HOST_BYTES_PER_INSTANCE: u64 = 24 << 20;

/// What one plugin adds to the worst case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    pub plugin: String,
    /// Instances of it counted (its `concurrency`, or fewer once `max_instances` is reached).
    pub instances: u64,
    /// Linear memory plus the host allowance, per instance.
    pub instance_bytes: u64,
}

impl Contribution {
    pub fn bytes(&self) -> u64 {
        self.instances.saturating_mul(self.instance_bytes)
    }
}

/// The worst case of a plugin set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorstCase {
    pub bytes: u64,
    pub instances: u64,
    /// Largest first; plugins that get no instance counted are left out.
    pub contributions: Vec<Contribution>,
}

/// Bytes one instance of `spec` may hold.
pub fn instance_bytes(spec: &PluginSpec) -> u64 {
    instance_bytes_of(&spec.limits)
}

/// Bytes one instance of a plugin with `limits` may hold.
pub(crate) fn instance_bytes_of(limits: &crate::Limits) -> u64 {
    limits.memory_bytes.saturating_add(HOST_BYTES_PER_INSTANCE)
}

/// The most memory `specs` can hold at once when at most `max_instances` instances are alive.
pub fn worst_case<'a>(
    specs: impl IntoIterator<Item = &'a PluginSpec>,
    max_instances: u32,
) -> WorstCase {
    let mut specs: Vec<&PluginSpec> = specs.into_iter().collect();
    // Largest instances first: they are the worst case for any given number of instances.
    specs.sort_by(|a, b| {
        instance_bytes(b)
            .cmp(&instance_bytes(a))
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut left = u64::from(max_instances);
    let mut worst = WorstCase::default();
    for spec in specs {
        let instances = (spec.limits.concurrency as u64).min(left);
        if instances == 0 {
            break;
        }
        left -= instances;
        let c = Contribution {
            plugin: spec.name.clone(),
            instances,
            instance_bytes: instance_bytes(spec),
        };
        worst.bytes = worst.bytes.saturating_add(c.bytes());
        worst.instances += instances;
        worst.contributions.push(c);
    }
    worst.contributions.sort_by(|a, b| {
        b.bytes()
            .cmp(&a.bytes())
            .then_with(|| a.plugin.cmp(&b.plugin))
    });
    worst
}

/// `n` bytes in MiB, rounded up, for messages.
pub(crate) fn mib(n: u64) -> u64 {
    n.div_ceil(1 << 20)
}

/// The explanation of a worst case over the budget: the figures, the largest contributors,
/// and what to change.
pub fn over_budget_message(worst: &WorstCase, budget_bytes: u64, max_instances: u32) -> String {
    let mut m = format!(
        "the plugins' worst case is {} MiB ({} instances alive at once, of at most \
         `plugins.max_instances` = {max_instances}, each its `limits.memory_mb` plus {} MiB \
         host allowance), over `plugins.memory_budget_mb` = {}; largest:",
        mib(worst.bytes),
        worst.instances,
        mib(HOST_BYTES_PER_INSTANCE),
        mib(budget_bytes),
    );
    for (i, c) in worst.contributions.iter().take(5).enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        let _ = write!(
            m,
            "{sep}`{}` {} x {} MiB = {} MiB",
            c.plugin,
            c.instances,
            mib(c.instance_bytes),
            mib(c.bytes())
        );
    }
    if worst.contributions.len() > 5 {
        let _ = write!(m, ", and {} more", worst.contributions.len() - 5);
    }
    m.push_str(
        ". To fit, lower a plugin's `limits.concurrency` or `limits.memory_mb`, lower \
         `plugins.max_instances`, or raise `plugins.memory_budget_mb` (keep it below the \
         service's MemoryMax= with room for hookd itself, see docs/systemd.md)",
    );
    m
}

impl PluginsConfig {
    /// Which of `specs` load within `memory_budget_bytes`, and an error for each one left out.
    ///
    /// `kept` are versions that keep serving whatever happens (a plugin whose new files were
    /// refused); `running(name)` is the version of a plugin serving now, which keeps serving
    /// if its new spec is left out. Plugins are admitted in this order: unchanged from what
    /// serves (always: leaving them out would change nothing), changed, then new; within each,
    /// those declared in the main config first, then by name. A plugin is admitted when the
    /// set with it (and with the serving versions of those not yet looked at) fits.
    pub fn fit_memory_budget<'a>(
        &self,
        specs: Vec<PluginSpec>,
        kept: &[&'a PluginSpec],
        running: impl Fn(&str) -> Option<&'a PluginSpec>,
    ) -> (Vec<PluginSpec>, Vec<(String, ConfigError)>) {
        let declared: BTreeSet<&str> = self.declared.iter().map(|s| s.name.as_str()).collect();
        let rank = |spec: &PluginSpec| {
            let group = match running(&spec.name) {
                Some(old) if *old == *spec => 0,
                Some(_) => 1,
                None => 2,
            };
            (
                group,
                !declared.contains(spec.name.as_str()),
                spec.name.clone(),
            )
        };
        let mut order: Vec<(PluginSpec, Option<&'a PluginSpec>)> = specs
            .into_iter()
            .map(|s| {
                let old = running(&s.name);
                (s, old)
            })
            .collect();
        order.sort_by_cached_key(|(s, _)| rank(s));

        let mut settled: Vec<PluginSpec> = kept.iter().map(|s| (*s).clone()).collect();
        let mut admitted = Vec::new();
        let mut refused = Vec::new();
        for i in 0..order.len() {
            let (spec, old) = &order[i];
            let unchanged = old.is_some_and(|o| o == spec);
            let later_old = order[i + 1..].iter().filter_map(|(_, o)| *o);
            let worst = worst_case(
                settled.iter().chain(std::iter::once(spec)).chain(later_old),
                self.max_instances,
            );
            if unchanged || worst.bytes <= self.memory_budget_bytes {
                settled.push(spec.clone());
                admitted.push(spec.clone());
                continue;
            }
            let what = match old {
                Some(_) => "the new version of plugin",
                None => "plugin",
            };
            let kept_note = if old.is_some() {
                "; the version serving now keeps serving"
            } else {
                ""
            };
            refused.push((
                spec.name.clone(),
                ConfigError::new(
                    Location::file(&spec.source),
                    "",
                    format!(
                        "{what} `{}` is not loaded{kept_note}: with it, {}",
                        spec.name,
                        over_budget_message(&worst, self.memory_budget_bytes, self.max_instances)
                    ),
                ),
            ));
            if let Some(old) = old {
                settled.push((*old).clone());
            }
        }
        (admitted, refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec(name: &str, memory_mb: u64, concurrency: usize) -> PluginSpec {
        PluginSpec {
            name: name.into(),
            wasm: PathBuf::from(format!("{name}.wasm")),
            source: PathBuf::from(format!("plugins/{name}.toml")),
            events: Vec::new(),
            limits: crate::Limits {
                memory_bytes: memory_mb << 20,
                concurrency,
                ..Default::default()
            },
            retry: Default::default(),
            capabilities: Default::default(),
            config: Default::default(),
        }
    }

    const HOST: u64 = HOST_BYTES_PER_INSTANCE >> 20;

    #[test]
    fn the_worst_case_takes_the_largest_instances_up_to_max_instances() {
        // (plugins as (name, memory_mb, concurrency), max_instances) -> (MiB, instances)
        type Plugins<'a> = &'a [(&'a str, u64, usize)];
        let cases: &[(Plugins, u32, u64, u64)] = &[
            (&[], 16, 0, 0),
            (&[("a", 64, 4)], 16, 4 * (64 + HOST), 4),
            (&[("a", 64, 4), ("b", 64, 4)], 16, 8 * (64 + HOST), 8),
            // max_instances binds: the 3 largest slots.
            (
                &[("a", 64, 4), ("b", 256, 2)],
                3,
                2 * (256 + HOST) + (64 + HOST),
                3,
            ),
            (&[("a", 16, 100)], 16, 16 * (16 + HOST), 16),
        ];
        for (plugins, max_instances, mib_expected, instances) in cases {
            let specs: Vec<PluginSpec> = plugins.iter().map(|(n, m, c)| spec(n, *m, *c)).collect();
            let worst = worst_case(&specs, *max_instances);
            assert_eq!(
                (worst.bytes >> 20, worst.instances),
                (*mib_expected, *instances),
                "{plugins:?} with max_instances {max_instances}"
            );
        }
    }

    fn plugins(budget_mb: u64, max_instances: u32) -> PluginsConfig {
        let text = format!(
            "[plugins]\nmemory_budget_mb = {budget_mb}\nmax_instances = {max_instances}\n\
             [verify]\nsecrets = [\"0123456789abcdef\"]\n"
        );
        let raw = crate::RawConfig::parse(&text, None).unwrap();
        raw.validate(&text, None).unwrap().plugins
    }

    #[test]
    fn new_plugins_over_the_budget_are_left_out_and_serving_ones_kept() {
        let config = plugins(4 * (64 + HOST) * 2, 16);
        // Fresh start: a and b fit, c does not.
        let (admitted, refused) = config.fit_memory_budget(
            vec![spec("a", 64, 4), spec("b", 64, 4), spec("c", 64, 4)],
            &[],
            |_| None,
        );
        let names: Vec<&str> = admitted.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(refused.len(), 1);
        let message = refused[0].1.to_string();
        assert!(
            message.starts_with("plugins/c.toml: plugin `c` is not loaded"),
            "{message}"
        );
        for part in [
            "`plugins.memory_budget_mb`",
            "`limits.concurrency`",
            "`a` 4 x",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }

        // Reload: `a` serves; a new `z` sorting first by name does not push `a` out.
        let a = spec("a", 64, 4);
        let b = spec("b", 64, 4);
        let (admitted, refused) =
            config.fit_memory_budget(vec![spec("0z", 64, 4), a.clone(), b.clone()], &[], |name| {
                match name {
                    "a" => Some(&a),
                    "b" => Some(&b),
                    _ => None,
                }
            });
        let names: Vec<&str> = admitted.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(refused[0].0, "0z");

        // A serving plugin that grows past the budget keeps its old version.
        let (admitted, refused) =
            config.fit_memory_budget(vec![spec("a", 64, 8), b.clone()], &[], |name| match name {
                "a" => Some(&a),
                "b" => Some(&b),
                _ => None,
            });
        let names: Vec<&str> = admitted.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b"]);
        assert!(
            refused[0]
                .1
                .message
                .contains("version serving now keeps serving"),
            "{}",
            refused[0].1
        );

        // Versions kept whatever happens count against the budget.
        let (admitted, _) = config.fit_memory_budget(vec![spec("c", 64, 4)], &[&a, &b], |_| None);
        assert!(admitted.is_empty());
    }
}
