//! Project automation: `cargo xtask <task>`.
//!
//! - `cargo xtask run`: build the example plugins and run the daemon on `config/hookd.toml`.
//! - `cargo xtask plugins`: build the example plugins into `target/plugins/` (`NAME.wasm` +
//!   `NAME.toml`).
//! - `cargo xtask dist`: the release bundle (binary, unit, production config, example plugins,
//!   INSTALL) in `target/dist/`, and its `.tar.gz`.
//! - `cargo xtask bench [--quick] [--connections N,N...]`: the ingest benchmark, every system
//!   one after another on loopback in the same run, with the same load generator; prints one
//!   table and writes `target/bench/ingest.json`.
//! - `cargo xtask bench outgoing [--quick]`: only its outgoing-HTTP row (a plugin's requests/s
//!   against a plain keep-alive client to the same local server); writes
//!   `target/bench/outgoing.json`.
//! - `cargo xtask bench reload`: plugin reload latency and restart-to-ready time with 20
//!   plugins, cold and with the compiled-code cache; writes `target/bench/reload.json`.
//! - `cargo xtask bench all`: both, then the per-delivery host overhead (criterion): every
//!   figure in BENCHMARKS.md.
//! - `cargo xtask reliability [--loops N]`: 200 kill -9 loops against the release build, then
//!   the negative control (a build that acknowledges before committing must be caught).
//!
//! Every task that builds `plugins/` first adds the `wasm32-wasip2` target to the toolchain
//! when it lacks it ([`toolchain`]).

mod bench;
mod dist;
mod plugins;
mod reliability;
mod toolchain;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") if args.get(1).is_some_and(|a| a == "reload") => bench::reload(&args[2..]),
        Some("bench") if args.get(1).is_some_and(|a| a == "all") => bench::all(&args[2..]),
        Some("bench") if args.get(1).is_some_and(|a| a == "outgoing") => {
            bench::outgoing::run(&args[2..])
        }
        Some("bench") => bench::run(&args[1..]),
        Some("dist") => dist::run(),
        Some("plugins") => plugins::build().map(drop),
        Some("reliability") => reliability::run(&args[1..]),
        Some("run") => plugins::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask run [--nats] | plugins | dist | bench [--quick] [--connections N,N...] | bench outgoing [--quick] | bench reload | bench all | reliability [--loops N]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
