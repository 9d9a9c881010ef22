//! `hookd sign`: the signature Protocol would send with a body.

use std::process::ExitCode;

use crate::cli::SignArgs;
use crate::commands::read_input;

pub fn run(args: SignArgs) -> ExitCode {
    let run = || -> anyhow::Result<String> {
        let secret = args.secret.load()?;
        let body = read_input(&args.body_file)?;
        Ok(hookd_core::sign(&secret, &body))
    };
    match run() {
        Ok(signature) => {
            println!("{signature}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
