//! kill -9 under load: every event that got a 2xx is in the store after a restart.
//!
//! `HOOKD_CRASH_LOOPS=N` runs more loops than the default 20.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Env, event, sign, stored_ids};

#[test]
fn no_acknowledged_event_is_lost_across_kill_9() {
    let loops: usize = std::env::var("HOOKD_CRASH_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let env = Env::new("");
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let next_id = Arc::new(AtomicUsize::new(0));
    let mut rng_state = 0x9e37_79b9_7f4a_7c15_u64;

    for _ in 0..loops {
        let daemon = env.start();
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..8)
            .map(|_| {
                let (url, stop, acked, next_id) =
                    (daemon.url(), stop.clone(), acked.clone(), next_id.clone());
                std::thread::spawn(move || {
                    let client = common::client();
                    while !stop.load(Ordering::Relaxed) {
                        let id = format!("crash-{}", next_id.fetch_add(1, Ordering::Relaxed));
                        let body = event(&id, "message.created");
                        let sent = client
                            .post(&url)
                            .header("x-protocol-signature", sign(&body))
                            .body(body)
                            .send();
                        match sent {
                            Ok(r) if r.status() == 200 => {
                                acked.lock().unwrap().insert(id);
                            }
                            Ok(_) => {}
                            Err(_) => break, // the daemon is gone
                        }
                    }
                })
            })
            .collect();
        // xorshift: a different moment every loop, the same sequence every run.
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        std::thread::sleep(Duration::from_millis(50 + rng_state % 250));
        daemon.kill9();
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            s.join().unwrap();
        }
    }

    // Restart once more so recovery runs, then compare.
    let daemon = env.start();
    let stored = stored_ids(&env.store_dir());
    let acked = acked.lock().unwrap();
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    println!(
        "kill -9 loops: {loops}, acknowledged: {}, stored: {}, lost: {}",
        acked.len(),
        stored.len(),
        lost.len()
    );
    assert!(
        acked.len() > loops,
        "too few events went through to prove anything"
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    drop(daemon);
}

#[test]
fn events_acknowledged_before_a_clean_restart_are_still_there() {
    let env = Env::new("");
    let daemon = env.start();
    for i in 0..50 {
        assert_eq!(
            daemon
                .post(&event(&format!("restart-{i}"), "message.created"))
                .status(),
            200
        );
    }
    assert!(daemon.stop().success());
    let daemon = env.start();
    assert_eq!(stored_ids(&env.store_dir()).len(), 50);
    // And they are still known as duplicates.
    let answer: serde_json::Value = daemon
        .post(&event("restart-7", "message.created"))
        .json()
        .unwrap();
    assert_eq!(answer["duplicate"], true);
}
