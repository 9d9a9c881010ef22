//! `hookd-cluster`: the cluster failure harness (`hookd_reliability::cluster`) against real
//! nats-server nodes and hookd instances; prints what was acknowledged, lost, delivered per
//! plugin and delivered twice, and how long ingest answered no 2xx at all.
//!
//! Exit status: 0 when nothing acknowledged was lost, 1 otherwise.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hookd_reliability::cluster::{ClusterSettings, Failure, cluster_failures};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Inject {
    /// kill -9 one hookd instance, then start it again
    KillHookd,
    /// kill -9 one nats-server node of three, then start it again
    KillNatsNode,
    /// kill -9 every nats-server node, then start them again
    RestartNatsCluster,
    /// kill -9 every hookd instance and every nats-server node, then start them again
    RestartEverything,
}

#[derive(Debug, Parser)]
#[command(about = "failures injected into a NATS-backed hookd cluster under signed load")]
struct Args {
    /// The hookd binary.
    #[arg(long)]
    hookd: PathBuf,
    /// The `http-poster` fixture component (plugins/fixtures/http-poster).
    #[arg(long)]
    poster: PathBuf,
    /// A fresh folder for the instances' configs (made if missing; must be empty).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, value_enum)]
    failure: Inject,
    /// How many times the failure is injected.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// Connections sending at once, spread over the instances.
    #[arg(long, default_value_t = 6)]
    senders: usize,
    /// Seconds of load between two failures (and how long a killed part stays down).
    #[arg(long, default_value_t = 3)]
    interval_secs: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if std::fs::read_dir(&args.dir).is_ok_and(|mut d| d.next().is_some()) {
        eprintln!("error: {} is not empty", args.dir.display());
        return ExitCode::FAILURE;
    }
    let settings = ClusterSettings {
        hookd: args.hookd,
        poster: args.poster,
        dir: args.dir,
        instances: args.instances,
        senders: args.senders,
        failure: match args.failure {
            Inject::KillHookd => Failure::KillHookd,
            Inject::KillNatsNode => Failure::KillNatsNode,
            Inject::RestartNatsCluster => Failure::RestartNatsCluster,
            Inject::RestartEverything => Failure::RestartEverything,
        },
        rounds: args.rounds,
        interval: Duration::from_secs(args.interval_secs),
    };
    match cluster_failures(&settings) {
        Ok(report) => {
            report.print();
            if report.held() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
