//! `hookd`: the daemon (`serve`) and the operator's tools (`check`, `sign`, `send`).

mod cli;
mod dispatch;
mod kv;
mod logging;
mod notify;
mod plugins;
mod reload;
mod send;
mod serve;
mod status;
mod tools;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve(args) => serve::run(args),
        cli::Command::Check(args) => cli::check(args),
        cli::Command::Sign(args) => cli::sign(args),
        cli::Command::Send(args) => send::run(args),
        cli::Command::RunPlugin(args) => tools::run_plugin(args),
        cli::Command::Dlq(args) => tools::dlq(args),
        cli::Command::Status(args) => status::run(args),
    }
}
