//! How long the floating IP takes to move when handoff stops the master,
//! through real keepalived in network namespaces: from SIGINT to handoff
//! until the VIP is on the peer, for graceful and fast handover, at
//! advert_int 1 (VRRPv2) and 0.1 (VRRPv3). Prints the median and min-max of
//! several runs; it never fails on noise. Needs root, ip and keepalived.
//!
//!     cargo bench --bench move_times

#![allow(clippy::unwrap_used)] // a bench: a panic is a failed run

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{
    Lab,
    netns::{Cluster, DEFAULT_TIMING, FAST_TIMING, Timing, lab_available},
};
use nix::sys::signal::Signal::SIGINT;

const RUNS: usize = 5;

fn main() {
    if !lab_available() {
        return;
    }
    println!(
        "handoff move times (keepalived {}), {RUNS} runs each",
        keepalived_version()
    );
    println!(
        "{:<22} {:<9} {:>10} {:>20}",
        "timing", "handover", "median", "min - max"
    );
    for timing in [DEFAULT_TIMING, FAST_TIMING] {
        for handover in ["graceful", "fast"] {
            let mut runs = measure(timing, handover);
            runs.sort();
            println!(
                "{:<22} {:<9} {:>8.0}ms {:>9.0}ms - {:.0}ms",
                format!(
                    "advert_int {} (v{})",
                    timing.advert_int, timing.vrrp_version
                ),
                handover,
                ms(runs[runs.len() / 2]),
                ms(runs[0]),
                ms(runs[runs.len() - 1])
            );
        }
    }
}

fn measure(timing: Timing, handover: &str) -> Vec<Duration> {
    let lab = Lab::new();
    let cluster = Cluster::with_timing(&lab, [-254, 0], "", timing);
    let config = cluster.config(&lab, "a", "");
    let text = std::fs::read_to_string(&config).unwrap() + &format!("handover = \"{handover}\"\n");
    std::fs::write(&config, text).unwrap();
    (0..RUNS)
        .map(|run| {
            let mut h = cluster.handoff(&lab, "a", &config, &lab.proxy(&[]));
            lab.wait_for_count("start", run + 1);
            // Healthy and up: a (250) takes the VIP back from b; wait until b
            // has let go too, or the next move would be measured from "both".
            cluster.wait_for_vip("a", Duration::from_secs(20));
            let deadline = Instant::now() + Duration::from_secs(20);
            while cluster.holds_vip("b") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let sent = Instant::now();
            h.signal(SIGINT);
            let moved = cluster.wait_for_vip("b", Duration::from_secs(20));
            let _ = h.wait(Duration::from_secs(20));
            assert!(sent.elapsed() >= moved);
            moved
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn keepalived_version() -> String {
    let out = std::process::Command::new("keepalived")
        .arg("--version")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find(|w| w.starts_with('v'))
        .unwrap_or("?")
        .to_owned()
}
