//! `hookd status`: what the running daemon's admin listener knows, for a human (or `--json`).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use bytes::Bytes;
use hookd_admin::{Deliveries, Plugin, Status};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::cli::StatusArgs;
use crate::commands::{Threads, runtime};

pub fn run(args: StatusArgs) -> ExitCode {
    let result = admin_address(&args).and_then(|addr| runtime(Threads::One)?.block_on(fetch(addr)));
    match result {
        Ok(status) => {
            if args.json {
                match serde_json::to_string_pretty(&status) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                // The admin API's times are unsigned; a clock before 1970 reads as 0.
                let now_ms = u64::try_from(hookd_storage::now_ms()).unwrap_or(0);
                print!("{}", render(&status, now_ms));
            }
            if status.ready {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--admin`, else `[admin] listen` from the config. Only that key is read, so the command
/// works without access to the secrets the config names.
fn admin_address(args: &StatusArgs) -> anyhow::Result<SocketAddr> {
    if let Some(addr) = args.admin {
        return Ok(addr);
    }
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read `{}`", args.config.display()))?;
    let raw = hookd_config::RawConfig::parse(&text, Some(&args.config))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let listen = raw.admin.listen.get_ref().trim().to_owned();
    anyhow::ensure!(
        !listen.is_empty(),
        "the admin listener is off in `{}` (`[admin] listen = \"\"`)",
        args.config.display()
    );
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("`[admin] listen` = `{listen}` is not an address"))?;
    // A wildcard listen address is reached on loopback.
    Ok(match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        ip if ip.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port())),
        _ => addr,
    })
}

async fn fetch(addr: SocketAddr) -> anyhow::Result<Status> {
    let url = format!("http://{addr}/status");
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(10), client.get(url.parse()?))
            .await
            .with_context(|| format!("no answer from {url} within 10 s"))?
            .with_context(|| {
                format!("cannot reach hookd's admin listener at {addr}; is hookd running?")
            })?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    // A field missing or of another type is an error here, not a `?` in the output: this
    // `hookd` and the daemon answering may be different versions.
    serde_json::from_slice(&body).with_context(|| {
        format!(
            "{url} did not answer the status this hookd ({}) reads",
            env!("CARGO_PKG_VERSION")
        )
    })
}

fn ago(now_ms: u64, at_ms: u64) -> String {
    duration(now_ms.saturating_sub(at_ms) / 1000) + " ago"
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The human form.
pub fn render(s: &Status, now_ms: u64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "hookd {}, up {}, {}",
        s.version,
        duration(s.uptime_secs),
        if s.ready { "ready" } else { "NOT READY" }
    );
    let _ = writeln!(
        out,
        "store: writer {}, {} events ({} KiB) waiting to be committed",
        if s.store.writer_running {
            "running"
        } else {
            "STOPPED"
        },
        s.store.queue_depth,
        s.store.queue_bytes / 1024
    );
    if s.connections_refused > 0 {
        let _ = writeln!(
            out,
            "connections refused (one client over its share of the slots): {}",
            s.connections_refused
        );
    }
    let _ = writeln!(
        out,
        "events: {} received since start ({} duplicates, {} with no subscriber)",
        s.events.received, s.events.duplicate, s.events.unrouted
    );
    match &s.deliveries {
        Deliveries::Unreadable { error } => {
            let _ = writeln!(out, "deliveries: cannot read the store: {error}");
        }
        Deliveries::Counted {
            pending,
            dead,
            by_plugin,
        } => {
            let _ = writeln!(out, "deliveries: {pending} pending, {dead} dead");
            for p in by_plugin {
                let _ = writeln!(
                    out,
                    "  {:<20} {} pending, {} dead, {:.1} s behind{}",
                    p.plugin,
                    p.pending,
                    p.dead,
                    p.lag_seconds,
                    if p.paused {
                        " (paused: plugin not loaded)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    if s.rejected.is_empty() {
        out.push_str("rejected: none since start\n");
    } else {
        let list: Vec<String> = s.rejected.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "rejected since start: {}", list.join(", "));
    }
    if !s.recent_rejections.is_empty() {
        out.push_str("recent rejections (newest last):\n");
        let skip = s.recent_rejections.len().saturating_sub(5);
        for r in &s.recent_rejections[skip..] {
            let _ = writeln!(out, "  {:<12} {}", ago(now_ms, r.at_ms), r.reason);
        }
    }
    if let Some(cluster) = &s.cluster {
        render_cluster(&mut out, cluster, now_ms);
    }
    let _ = writeln!(out, "plugins: {}", s.plugins.len());
    for p in &s.plugins {
        let name = p.name();
        match p {
            Plugin::Loaded(p) => {
                let _ = writeln!(
                    out,
                    "  {name:<20} {}  events: {}  loaded {}",
                    p.content_hash.get(..12).unwrap_or(&p.content_hash),
                    p.events.join(", "),
                    ago(now_ms, p.loaded_at_ms)
                );
            }
            Plugin::Refused(_) => {
                let _ = writeln!(out, "  {name:<20} NOT LOADED");
            }
        }
        if let Some((error, at_ms)) = p.last_error() {
            let _ = writeln!(
                out,
                "  {:<20} last reload refused {}: {error}",
                "",
                ago(now_ms, at_ms)
            );
        }
    }
    out
}

/// The instances sharing a clustered store, and the plugins they do not serve alike.
fn render_cluster(out: &mut String, c: &hookd_admin::Cluster, now_ms: u64) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "cluster: {} instance{} sharing the store",
        c.instances.len(),
        if c.instances.len() == 1 { "" } else { "s" }
    );
    if let Some(error) = &c.error {
        let _ = writeln!(
            out,
            "  cannot read the other instances' heartbeats: {error}"
        );
    }
    for i in &c.instances {
        let _ = writeln!(
            out,
            "  {}{} on {}, hookd {}, {} plugins, seen {}",
            i.id,
            if i.id == c.this_instance {
                " (this one)"
            } else {
                ""
            },
            i.host,
            i.version,
            i.plugins,
            ago(now_ms, i.heartbeat_ms)
        );
    }
    for skew in &c.skew {
        let _ = writeln!(
            out,
            "  VERSION SKEW: plugin {} is not served alike:",
            skew.plugin
        );
        for v in &skew.variants {
            let what = if v.content_hash.is_empty() {
                "not loaded".to_owned()
            } else {
                format!(
                    "{} events: {}",
                    v.content_hash.get(..12).unwrap_or(&v.content_hash),
                    v.events.join(", ")
                )
            };
            let _ = writeln!(out, "    {what:<40} on {}", v.instances.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    //! The human form, rendered from typed answers: one case per state an operator meets.

    use std::collections::BTreeMap;

    use hookd_admin::{
        EventCounts, LoadedFlag, LoadedPlugin, PluginDeliveries, PluginLimits, RefusedPlugin,
        Rejection, RetrySettings, StoreStatus,
    };

    use super::*;

    const NOW_MS: u64 = 1_800_000_000_000;

    fn quiet() -> Status {
        Status {
            version: "0.1.0".into(),
            uptime_secs: 3_725,
            ready: true,
            store: StoreStatus {
                writer_running: true,
                queue_depth: 0,
                queue_bytes: 0,
            },
            connections_refused: 0,
            events: EventCounts {
                received: 0,
                duplicate: 0,
                unrouted: 0,
            },
            rejected: BTreeMap::new(),
            recent_rejections: Vec::new(),
            deliveries: Deliveries::Counted {
                pending: 0,
                dead: 0,
                by_plugin: Vec::new(),
            },
            plugins: Vec::new(),
            cluster: None,
        }
    }

    fn loaded(name: &str, events: &[&str], last_error: Option<(&str, u64)>) -> Plugin {
        Plugin::Loaded(LoadedPlugin {
            name: name.into(),
            loaded: LoadedFlag,
            content_hash: "e93424dfd08a9691147cab0dec096446e36449cd6b38dac61248ecf679aa4b40".into(),
            loaded_at_ms: NOW_MS - 90_000,
            load_ms: 441.3,
            cache_hit: true,
            wasm: format!("plugins/{name}.wasm"),
            manifest: format!("plugins/{name}.toml"),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            limits: PluginLimits {
                timeout_ms: 5_000,
                memory_bytes: 64 << 20,
                concurrency: 4,
            },
            retry: RetrySettings {
                max_attempts: 8,
                initial_backoff_ms: 1_000,
                max_backoff_ms: 300_000,
                max_age_secs: 86_400,
            },
            http_origins: Vec::new(),
            kv: false,
            last_error: last_error.map(|(e, _)| e.to_owned()),
            last_error_at_ms: last_error.map(|(_, at)| at),
        })
    }

    fn backlog(plugin: &str, pending: u64, dead: u64, lag_seconds: f64) -> PluginDeliveries {
        PluginDeliveries {
            plugin: plugin.into(),
            pending,
            dead,
            lag_seconds,
            paused: false,
        }
    }

    #[test]
    fn renders_each_state_an_operator_meets() {
        let instance = |id: &str, host: &str, seen_s: u64| hookd_admin::ClusterInstance {
            id: id.into(),
            host: host.into(),
            version: "0.1.0".into(),
            started_ms: NOW_MS - 600_000,
            heartbeat_ms: NOW_MS - seen_s * 1000,
            plugins: 1,
        };
        let cases: Vec<(&str, Status, &str)> = vec![
            (
                "in a cluster, during a deploy",
                Status {
                    cluster: Some(hookd_admin::Cluster {
                        this_instance: "a1".into(),
                        instances: vec![instance("a1", "web-1", 0), instance("b2", "web-2", 7)],
                        skew: vec![hookd_admin::PluginSkew {
                            plugin: "auto-reply".into(),
                            variants: vec![
                                hookd_admin::SkewVariant {
                                    content_hash: "e93424dfd08a9691".into(),
                                    events: vec!["message.created".into()],
                                    instances: vec!["a1".into()],
                                },
                                hookd_admin::SkewVariant {
                                    content_hash: "77aa00bb11cc22dd".into(),
                                    events: vec!["message.*".into()],
                                    instances: vec!["b2".into()],
                                },
                            ],
                        }],
                        error: None,
                    }),
                    ..quiet()
                },
                "\
hookd 0.1.0, up 1h 2m, ready
store: writer running, 0 events (0 KiB) waiting to be committed
events: 0 received since start (0 duplicates, 0 with no subscriber)
deliveries: 0 pending, 0 dead
rejected: none since start
cluster: 2 instances sharing the store
  a1 (this one) on web-1, hookd 0.1.0, 1 plugins, seen 0s ago
  b2 on web-2, hookd 0.1.0, 1 plugins, seen 7s ago
  VERSION SKEW: plugin auto-reply is not served alike:
    e93424dfd08a events: message.created     on a1
    77aa00bb11cc events: message.*           on b2
plugins: 0
",
            ),
            (
                "quiet and ready",
                quiet(),
                "\
hookd 0.1.0, up 1h 2m, ready
store: writer running, 0 events (0 KiB) waiting to be committed
events: 0 received since start (0 duplicates, 0 with no subscriber)
deliveries: 0 pending, 0 dead
rejected: none since start
plugins: 0
",
            ),
            (
                "not ready: the store's writer stopped and the store cannot be read",
                Status {
                    uptime_secs: 4,
                    ready: false,
                    store: StoreStatus {
                        writer_running: false,
                        queue_depth: 17,
                        queue_bytes: 40_960,
                    },
                    deliveries: Deliveries::Unreadable {
                        error: "unable to open database file".into(),
                    },
                    ..quiet()
                },
                "\
hookd 0.1.0, up 4s, NOT READY
store: writer STOPPED, 17 events (40 KiB) waiting to be committed
events: 0 received since start (0 duplicates, 0 with no subscriber)
deliveries: cannot read the store: unable to open database file
rejected: none since start
plugins: 0
",
            ),
            (
                "refusals: totals by reason, the latest five, connections over a client's share",
                Status {
                    connections_refused: 12,
                    events: EventCounts {
                        received: 1_000,
                        duplicate: 3,
                        unrouted: 40,
                    },
                    rejected: BTreeMap::from([
                        ("bad_signature".to_owned(), 6),
                        ("too_large".to_owned(), 1),
                    ]),
                    recent_rejections: (0..7)
                        .map(|i| Rejection {
                            at_ms: NOW_MS - 70_000 + i * 10_000,
                            reason: if i == 3 { "too_large" } else { "bad_signature" }.into(),
                        })
                        .collect(),
                    ..quiet()
                },
                "\
hookd 0.1.0, up 1h 2m, ready
store: writer running, 0 events (0 KiB) waiting to be committed
connections refused (one client over its share of the slots): 12
events: 1000 received since start (3 duplicates, 40 with no subscriber)
deliveries: 0 pending, 0 dead
rejected since start: bad_signature 6, too_large 1
recent rejections (newest last):
  50s ago      bad_signature
  40s ago      too_large
  30s ago      bad_signature
  20s ago      bad_signature
  10s ago      bad_signature
plugins: 0
",
            ),
            (
                "lag, dead letters, and deliveries paused for a plugin that is gone",
                Status {
                    deliveries: Deliveries::Counted {
                        pending: 250,
                        dead: 3,
                        by_plugin: vec![
                            backlog("always-fails", 0, 3, 0.0),
                            backlog("slow", 200, 0, 12.345),
                            PluginDeliveries {
                                paused: true,
                                ..backlog("removed", 50, 0, 7_200.0)
                            },
                        ],
                    },
                    plugins: vec![
                        loaded("always-fails", &["contact.*"], None),
                        loaded("slow", &["message.*", "contact.created"], None),
                    ],
                    ..quiet()
                },
                "\
hookd 0.1.0, up 1h 2m, ready
store: writer running, 0 events (0 KiB) waiting to be committed
events: 0 received since start (0 duplicates, 0 with no subscriber)
deliveries: 250 pending, 3 dead
  always-fails         0 pending, 3 dead, 0.0 s behind
  slow                 200 pending, 0 dead, 12.3 s behind
  removed              50 pending, 0 dead, 7200.0 s behind (paused: plugin not loaded)
rejected: none since start
plugins: 2
  always-fails         e93424dfd08a  events: contact.*  loaded 1m 30s ago
  slow                 e93424dfd08a  events: message.*, contact.created  loaded 1m 30s ago
",
            ),
            (
                "reload refusals: new files refused while the old version serves, and a plugin \
                 that never loaded",
                Status {
                    plugins: vec![
                        loaded(
                            "noop",
                            &["message.*"],
                            Some(("manifest: unknown field `evnts`", NOW_MS - 5_000)),
                        ),
                        Plugin::Refused(RefusedPlugin {
                            name: "garbage".into(),
                            loaded: LoadedFlag,
                            last_error: "not a WebAssembly file".into(),
                            last_error_at_ms: NOW_MS - 2 * 86_400_000 - 3_600_000,
                        }),
                    ],
                    ..quiet()
                },
                "\
hookd 0.1.0, up 1h 2m, ready
store: writer running, 0 events (0 KiB) waiting to be committed
events: 0 received since start (0 duplicates, 0 with no subscriber)
deliveries: 0 pending, 0 dead
rejected: none since start
plugins: 2
  noop                 e93424dfd08a  events: message.*  loaded 1m 30s ago
                       last reload refused 5s ago: manifest: unknown field `evnts`
  garbage              NOT LOADED
                       last reload refused 2d 1h ago: not a WebAssembly file
",
            ),
        ];
        for (case, status, expected) in cases {
            assert_eq!(render(&status, NOW_MS), expected, "case: {case}");
        }
    }

    /// A clock behind the daemon's (another host's time) reads as "0s ago", never as an
    /// underflow.
    #[test]
    fn a_time_after_now_reads_as_just_now() {
        let status = Status {
            recent_rejections: vec![Rejection {
                at_ms: NOW_MS + 60_000,
                reason: "bad_signature".into(),
            }],
            ..quiet()
        };
        assert!(render(&status, NOW_MS).contains("  0s ago       bad_signature\n"));
    }
}
