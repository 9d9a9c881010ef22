//! The edge under attack, against the real binary: one address opening connections as fast as
//! it can, slow bodies declaring a mebibyte each, a flood of unsigned requests. Meanwhile a
//! well-behaved signed sender, from another loopback address (127.0.0.2: all of 127/8 is
//! loopback on Linux), must keep getting 200s, the daemon's memory must stay bounded, and the
//! log must stay readable.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hookd_core::SIGNATURE_HEADER;
use hookd_testkit::{Daemon, Env, event, sign, wait_until};

/// Where the well-behaved sender connects from: another client than the attacker (127.0.0.1).
const SENDER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// How long one signed request may take, connecting included, before it counts as starved.
/// (A connection flood can fill the kernel's accept queue for a moment: a dropped SYN is sent
/// again after 1 s, then 2 s more.)
const PATIENCE: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(30);

/// What the signed sender saw.
#[derive(Default)]
struct Sent {
    ok: usize,
    failures: Vec<String>,
    slowest: Duration,
}

impl Sent {
    fn add(&mut self, more: Sent) {
        self.ok += more.ok;
        self.failures.extend(more.failures);
        self.slowest = self.slowest.max(more.slowest);
    }

    fn count(&self) -> usize {
        self.ok + self.failures.len()
    }

    /// Sends rounds of 10 until `enough` says so (or one fails, or the test's time is up).
    fn rounds(daemon: &Daemon, prefix: &str, mut enough: impl FnMut(&Sent) -> bool) -> Sent {
        let mut sent = Sent::default();
        let deadline = Instant::now() + WAIT;
        for round in 0.. {
            if enough(&sent) || !sent.failures.is_empty() || Instant::now() > deadline {
                break;
            }
            sent.add(send_signed(daemon, &format!("{prefix}-{round}"), 10));
        }
        sent
    }
}

/// Sends `n` signed events from [`SENDER`], each on a new connection (as many webhook senders
/// do, and so that a connection opened before the attack cannot hide a starved accept loop).
fn send_signed(daemon: &Daemon, prefix: &str, n: usize) -> Sent {
    let client = reqwest::blocking::Client::builder()
        .local_address(SENDER)
        .pool_max_idle_per_host(0)
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let mut sent = Sent::default();
    for i in 0..n {
        let body = event(&format!("{prefix}-{i}"), "message.created");
        let started = Instant::now();
        let answer = client
            .post(daemon.url())
            .header(SIGNATURE_HEADER, sign(&body))
            .body(body)
            .send();
        sent.slowest = sent.slowest.max(started.elapsed());
        match answer {
            Ok(r) if r.status() == 200 => sent.ok += 1,
            Ok(r) => sent.failures.push(format!("#{i}: {}", r.status())),
            Err(e) => sent.failures.push(format!("#{i}: {e}")),
        }
    }
    sent
}

fn assert_all_acknowledged(sent: &Sent, at_least: usize) {
    assert!(
        sent.failures.is_empty() && sent.ok >= at_least,
        "the signed sender got {} of {} acknowledged; failures: {:?}",
        sent.ok,
        sent.count(),
        sent.failures
    );
}

/// A counter or gauge from `/metrics`, summed over its label sets matching `labels`.
fn metric(daemon: &Daemon, name: &str, labels: &str) -> f64 {
    daemon
        .metrics()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A field of `/proc/PID/status`, in KiB (`VmRSS`: resident now, `VmHWM`: the peak so far).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The daemon's aggregated rejection lines for `reason`, as `count`s (`None` for a line that
/// carries none).
fn rejection_lines(daemon: &Daemon, reason: &str) -> Vec<Option<u64>> {
    daemon
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["reason"] == reason)
        .map(|l| l["count"].as_u64())
        .collect()
}

#[test]
fn one_address_opening_connections_as_fast_as_it_can_leaves_slots_for_a_signed_sender() {
    // 64 slots, 16 per client (the default quarter); an idle connection would hold its slot
    // for 20 s.
    let env = Env::new("max_connections = 64\nheader_read_timeout_ms = 20000");
    let daemon = env.start();
    let target = daemon.ingest;
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    // Two threads connect in a loop from 127.0.0.1 and keep their last 1,000 connections open,
    // never sending a byte.
    let attackers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, opened) = (stop.clone(), opened.clone());
            std::thread::spawn(move || {
                let mut held = VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(c) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
                        held.push_back(c);
                        if held.len() > 1000 {
                            held.pop_front();
                        }
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // More than all the slots.
    wait_until("the flood of connections is under way", WAIT, || {
        opened.load(Ordering::Relaxed) >= 100
    });

    // At least 30 events, while the flood opens at least 5,000 more connections.
    let started = Instant::now();
    let from = opened.load(Ordering::Relaxed);
    let sent = Sent::rounds(&daemon, "conn-flood", |sent| {
        sent.count() >= 30 && opened.load(Ordering::Relaxed) - from >= 5000
    });
    let flood = opened.load(Ordering::Relaxed) - from;
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    println!(
        "connection flood: {flood} connections from one address in {secs:.1} s; the signed \
         sender got {}/{} (slowest {:?})",
        sent.ok,
        sent.count(),
        sent.slowest
    );
    assert_all_acknowledged(&sent, 30);
    let refused = metric(&daemon, "hookd_connections_refused_total", "");
    assert!(refused > 0.0, "no connection was refused");
    // Refusals are logged in aggregate too.
    wait_until("an aggregated line for refused connections", WAIT, || {
        rejection_lines(&daemon, "too_many_connections")
            .iter()
            .any(|c| c.is_some_and(|c| c > 1))
    });
    println!("connection flood: {refused} connections refused");
}

#[test]
fn slow_bodies_declaring_a_mebibyte_hold_bounded_memory_and_leave_room_for_a_signed_sender() {
    // 16 MiB of bodies at once, 4 MiB of it per client (the same quarter as the slots).
    let env = Env::new("max_inflight_body_bytes = 16777216");
    let daemon = env.start();
    let pid = daemon.child.id();
    assert_all_acknowledged(&send_signed(&daemon, "warm", 5), 5);
    let before = proc_kib(pid, "VmRSS");

    // 300 connections from 127.0.0.1, each declaring 1 MiB (the body limit): it sends all
    // but the last few KiB at once, then a byte every 200 ms; answered or cut off, it comes
    // back a second later.
    const CONNECTIONS: usize = 300;
    const DECLARED: usize = 1 << 20;
    let stop = Arc::new(AtomicBool::new(false));
    let offered = Arc::new(AtomicU64::new(0));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let target = daemon.ingest;
    for _ in 0..CONNECTIONS {
        let (stop, offered) = (stop.clone(), offered.clone());
        runtime.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = slow_body(target, DECLARED, &stop, &offered).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    wait_until("the slow bodies have sent 100 MB", WAIT, || {
        offered.load(Ordering::Relaxed) >= 100_000_000
    });

    // At least 50 events, while the slow bodies offer 500 MB more.
    let mut peak_rss = 0;
    let from = offered.load(Ordering::Relaxed);
    let sent = Sent::rounds(&daemon, "slow-bodies", |sent| {
        peak_rss = peak_rss.max(proc_kib(pid, "VmRSS"));
        sent.count() >= 50 && offered.load(Ordering::Relaxed) - from >= 500_000_000
    });
    let offered = offered.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    runtime.shutdown_background();
    let peak = proc_kib(pid, "VmHWM").max(peak_rss);
    let grown_mib = peak.saturating_sub(before) / 1024;
    println!(
        "slow bodies: {CONNECTIONS} connections offered {} MB; RSS {} MiB before, peak {} MiB \
         (+{grown_mib} MiB); the signed sender got {}/{} (slowest {:?})",
        offered / 1_000_000,
        before / 1024,
        peak / 1024,
        sent.ok,
        sent.count(),
        sent.slowest
    );
    assert_all_acknowledged(&sent, 50);
    // The budget is 16 MiB; hyper's read buffers (64 KiB each) and the allocator's slack come
    // on top. Without the budget, the bodies alone held 300 MiB.
    assert!(
        grown_mib < 96,
        "the daemon grew by {grown_mib} MiB under slow bodies"
    );
    assert!(
        metric(
            &daemon,
            "hookd_requests_rejected_total",
            "reason=\"body_budget\""
        ) > 0.0,
        "no body was refused for the budget"
    );
}

/// One connection that declares `declared` bytes, sends nearly all of them at once, then
/// trickles. Ends when the daemon answers or cuts it off.
async fn slow_body(
    target: SocketAddr,
    declared: usize,
    stop: &AtomicBool,
    offered: &AtomicU64,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut c = tokio::net::TcpStream::connect(target).await?;
    let head = format!(
        "POST /webhooks HTTP/1.1\r\nhost: x\r\ncontent-length: {declared}\r\n\
         x-protocol-signature: sha256=00\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await?;
    let chunk = vec![b'x'; 64 * 1024];
    let mut left = declared - 16 * 1024;
    while left > 0 {
        let n = left.min(chunk.len());
        c.write_all(&chunk[..n]).await?;
        offered.fetch_add(n as u64, Ordering::Relaxed);
        left -= n;
    }
    while !stop.load(Ordering::Relaxed) {
        c.write_all(b"x").await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[test]
fn a_flood_of_unsigned_requests_is_logged_in_aggregate_while_a_signed_sender_gets_through() {
    let env = Env::new("");
    let daemon = env.start();
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let url = daemon.url();
    let flood_started = Instant::now();
    // Four keep-alive clients from 127.0.0.1, as fast as they can, with a marker in every
    // body that must never reach the log.
    let flooders: Vec<_> = (0..4)
        .map(|t| {
            let (stop, refused, url) = (stop.clone(), refused.clone(), url.clone());
            std::thread::spawn(move || {
                let client = hookd_testkit::client();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!(
                        r#"{{"id":"FORGED-MARKER-{t}-{i}","type":"message.created","payload":{{}}}}"#
                    );
                    i += 1;
                    let answer = client
                        .post(&url)
                        .header(SIGNATURE_HEADER, format!("sha256={}", "0".repeat(64)))
                        .body(body)
                        .send();
                    if answer.is_ok_and(|r| r.status() == 401) {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    wait_until("the unsigned flood is under way", WAIT, || {
        refused.load(Ordering::Relaxed) >= 1000
    });
    // At least 50 events, while the flood sends at least 10,000 more.
    let from = refused.load(Ordering::Relaxed);
    let sent = Sent::rounds(&daemon, "unsigned-flood", |sent| {
        sent.count() >= 50 && refused.load(Ordering::Relaxed) - from >= 10_000
    });
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    let flood_secs = flood_started.elapsed().as_secs_f64();
    let refused = refused.load(Ordering::Relaxed);
    assert_all_acknowledged(&sent, 50);

    // The metrics are exact, per request.
    let counted = metric(
        &daemon,
        "hookd_requests_rejected_total",
        "reason=\"bad_signature\"",
    );
    assert_eq!(counted as u64, refused);
    // The log sums to the same, in a few lines that each carry a count.
    wait_until("the aggregated lines to add up to the flood", WAIT, || {
        let lines = rejection_lines(&daemon, "bad_signature");
        lines.iter().map(|c| c.unwrap_or(1)).sum::<u64>() >= refused
    });
    let lines = rejection_lines(&daemon, "bad_signature");
    assert!(
        lines.iter().all(Option::is_some),
        "a rejection line without a count: one line per request"
    );
    let sum: u64 = lines.iter().flatten().sum();
    assert_eq!(sum, refused, "the lines' counts add up to the flood");
    assert!(lines.iter().flatten().any(|&c| c > 1));
    // One line per second at most, from the flood's first request to its last line (the
    // first of a burst comes at once, the rest a second apart).
    let seconds = flood_started.elapsed().as_secs();
    assert!(
        lines.len() as u64 <= seconds + 2,
        "{} lines for {refused} rejections in {seconds} s",
        lines.len()
    );
    let (_, logs) = daemon.stop_with_logs();
    assert!(
        !logs.iter().any(|l| l.contains("FORGED-MARKER")),
        "unauthenticated content reached the log"
    );
    println!(
        "unsigned flood: {refused} requests refused in {flood_secs:.1} s, in {} log lines; the \
         signed sender got {}/{} (slowest {:?})",
        lines.len(),
        sent.ok,
        sent.count(),
        sent.slowest
    );
}
