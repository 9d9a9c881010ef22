//! Project automation: `cargo xtask <task>`.
//!
//! - `cargo xtask bench [--quick]`: the ingest benchmark, every system one after another on
//!   loopback in the same run, with the same load generator; prints one table and writes
//!   `target/bench/ingest.json`.

mod bench;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::run(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask bench [--quick]");
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
