//! What the figures depend on, recorded next to them: the CPU, the load average, the
//! filesystem under the stores and how long it takes to sync, the commit measured.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};

pub(super) fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "load_average_before": load_average(),
    })
}

/// The type of the filesystem holding `path` (the mount with the longest matching prefix).
pub(super) fn filesystem(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, fs) = (fields.next()?, fields.next()?, fields.next()?);
            // Spaces in mount points are written as \040.
            let point = PathBuf::from(point.replace("\\040", " "));
            path.starts_with(&point)
                .then(|| (point.as_os_str().len(), fs.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}

/// How long making 8 KiB durable takes on the filesystem the stores live on (write, then
/// `fdatasync`), p50 and p99 in ms over 300 tries: the floor under a durable commit. With N
/// connections each waiting for the commit that holds its event, durable ingest cannot go
/// faster than N / (commit time) requests/s, whatever the CPU.
pub(super) fn disk_sync_ms(dir: &Path) -> anyhow::Result<(f64, f64)> {
    use std::io::Write as _;
    let mut file = tempfile::tempfile_in(dir)
        .with_context(|| format!("cannot make a file in {}", dir.display()))?;
    let block = [0x5a_u8; 8192];
    let mut took = Vec::with_capacity(300);
    for i in 0..330 {
        if i % 100 == 0 {
            file.seek(SeekFrom::Start(0))?;
        }
        file.write_all(&block)?;
        let started = Instant::now();
        file.sync_data()?;
        if i >= 30 {
            took.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    took.sort_by(f64::total_cmp);
    Ok((took[took.len() / 2], took[took.len() * 99 / 100]))
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews every figure.
pub(super) fn load_average() -> Value {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| {
            s.split_whitespace()
                .take(3)
                .filter_map(|v| v.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .map_or(Value::Null, |v| json!(v))
}

/// The commit measured, `+dirty` if tracked files were changed.
pub(super) fn commit(root: &Path) -> Value {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            json!(if dirty { format!("{head}+dirty") } else { head })
        }
        None => Value::Null,
    }
}
