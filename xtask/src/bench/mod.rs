//! `cargo xtask bench`: the benchmarks BENCHMARKS.md records, one module per job.
//!
//! - [`ingest`]: the side-by-side ingest table (`cargo xtask bench`), the entry point;
//! - [`systems`]: the systems it measures, each a name, its needs and how to start it;
//! - [`needs`]: building or installing what a system needs ([`Need`], [`provide`]);
//! - [`measure`]: one system at one connection count under `hookd-loadgen`;
//! - [`table`]: the rows, their ratios and the printed table;
//! - [`machine`]: what the figures depend on (CPU, load, filesystem, disk sync, commit);
//! - [`supervise`]: bounded child processes and Ctrl-C;
//! - [`reload`]: `cargo xtask bench reload`, and [`all`]: every figure in turn.
//!
//! **Invariant:** whatever this starts, it stops: on success, on error, on Ctrl-C / SIGTERM
//! (children run in their own process group, so the signal reaches only us and we kill them)
//! and, on Linux, even if this process is killed outright (children get `PR_SET_PDEATHSIG`).
//! Every load is bounded in count and in time.

mod ingest;
mod machine;
mod measure;
mod needs;
pub(crate) mod outgoing;
mod reload;
mod supervise;
mod systems;
mod table;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

pub use ingest::run;
pub(crate) use needs::{HOOKD, Need, provide};
pub use reload::reload;
pub(crate) use supervise::{catch_signals, run_bounded};

/// Where things are.
pub(crate) struct Paths {
    pub(crate) root: PathBuf,
    pub(crate) target: PathBuf,
}

impl Paths {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let root = crate::plugins::root()?;
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        Ok(Self { root, target })
    }

    pub(crate) fn bin(&self, name: &str) -> PathBuf {
        self.target.join("release").join(name)
    }

    /// Where each system's fresh temp dir (config, store, output) is made.
    fn runs(&self) -> PathBuf {
        self.target.join("bench")
    }

    pub(crate) fn plugin(&self, file: &str) -> PathBuf {
        self.root
            .join("plugins/target/wasm32-wasip2/release")
            .join(file)
    }
}

/// `cargo xtask bench all`: every figure BENCHMARKS.md records, one after another: the ingest
/// table, then reload, restart and memory, then the per-delivery host overhead (criterion).
/// Stops at the first that fails.
pub fn all(args: &[String]) -> anyhow::Result<()> {
    if let Some(arg) = args.first() {
        bail!("`bench all` takes no arguments (got `{arg}`)");
    }
    run(&[])?;
    reload(&[])?;
    deliver()
}

/// `cargo bench -p hookd-host --bench deliver`: a fresh sandbox and one `handle` call of the
/// no-op plugin, with the pooling and the on-demand instance allocator.
fn deliver() -> anyhow::Result<()> {
    let paths = Paths::new()?;
    eprintln!("bench: cargo bench -p hookd-host --bench deliver");
    let status = run_bounded(
        crate::plugins::cargo().current_dir(&paths.root).args([
            "bench",
            "--locked",
            "-p",
            "hookd-host",
            "--bench",
            "deliver",
        ]),
        Duration::from_secs(1800),
    )?;
    if !status.success() {
        bail!("the per-delivery benchmark failed: {status}");
    }
    Ok(())
}
