//! `hookd check`: validates a configuration and compiles its plugins, as `serve` would.

use std::process::ExitCode;
use std::sync::Arc;

use hookd_config::Config;
use hookd_config::catalog::{Catalog, Folder};
use hookd_host::{HostSettings, PluginHost};

use crate::cli::CheckArgs;
use crate::commands::report_config_errors;

// The memory budget counts `hookd_config::HOST_BYTES_PER_INSTANCE` per instance for what the
// host may hold beside linear memory; the host's own caps must fit it.
const _: () = assert!(hookd_host::HOST_BYTES_PER_INSTANCE <= hookd_config::HOST_BYTES_PER_INSTANCE);

pub fn run(args: CheckArgs) -> ExitCode {
    match Config::load(&args.config) {
        Ok(config) => {
            println!("{}: config ok", args.config.display());
            println!(
                "  ingest:  http://{}{}",
                config.server.listen, config.server.path
            );
            match config.admin.listen {
                Some(a) => println!("  admin:   http://{a}/"),
                None => println!("  admin:   off"),
            }
            println!("  secrets: {}", config.secrets.len());
            match &config.store.backend {
                hookd_config::StoreBackend::Sqlite => {
                    println!("  store:   {}", config.store.dir.display());
                }
                hookd_config::StoreBackend::Nats(nats) => {
                    println!(
                        "  store:   NATS JetStream at {} (prefix `{}`, {} replica{}, login: {}; \
                         not contacted by `check`)\n  cache:   {}",
                        nats.servers.join(", "),
                        nats.prefix,
                        nats.replicas,
                        if nats.replicas == 1 { "" } else { "s" },
                        nats.auth.kind(),
                        config.store.dir.display()
                    );
                }
            }
            println!("  plugins: {}", config.plugins.dir.display());
            let catalog = Catalog::read(&config.plugins, []);
            let worst =
                hookd_config::budget::worst_case(&catalog.specs, config.plugins.max_instances);
            println!(
                "  memory:  worst case {} MiB of the {} MiB budget ({} instances at most)",
                worst.bytes.div_ceil(1 << 20),
                config.plugins.memory_budget_bytes >> 20,
                worst.instances
            );
            if check_plugins(catalog) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(errors) => report_config_errors(&errors),
    }
}

/// For `hookd check`: reports the catalog's problems and compiles every plugin in it; prints
/// one line each. Returns whether all are ok.
fn check_plugins(catalog: Catalog) -> bool {
    let mut problems = catalog.refused.len();
    if let Folder::Refused { error, .. } = &catalog.folder {
        eprintln!("error: {error}");
        problems += 1;
    }
    for r in &catalog.refused {
        eprintln!("error: plugin `{}`: {}", r.plugin, r.error);
    }
    let Some(compile_failures) = check_compile(catalog.specs) else {
        return false;
    };
    let failed = problems + compile_failures;
    if failed > 0 {
        eprintln!(
            "{failed} plugin problem{} found",
            if failed == 1 { "" } else { "s" }
        );
    }
    failed == 0
}

/// Compiles each plugin; returns how many failed, or `None` if no engine could be made.
fn check_compile(specs: Vec<hookd_config::PluginSpec>) -> Option<usize> {
    if specs.is_empty() {
        println!("  plugins: none loaded");
        return Some(0);
    }
    let host = match PluginHost::new(
        HostSettings {
            pooling: false,
            ..HostSettings::default()
        },
        Arc::new(hookd_host::MemoryKv::default()),
    ) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    let mut failed = 0;
    for spec in specs {
        let name = spec.name.clone();
        let events: Vec<String> = spec.events.iter().map(ToString::to_string).collect();
        match hookd_engine::plugins::compile(&host, spec) {
            Ok(_) => println!("  plugin {name}: ok ({})", events.join(", ")),
            Err(e) => {
                failed += 1;
                eprintln!("error: plugin `{name}`: {e}");
            }
        }
    }
    Some(failed)
}
