//! Signals that arrive while handoff is still starting: never fatal, never lost.
//!
//! A signal delivered before a process's first instruction takes its default
//! action whatever that program does; only a mask inherited across exec can
//! hold it (measured here: even a static C program that blocks SIGTERM on
//! its first line needs 0.2-6 ms after spawn() returns before it runs). So:
//! * the random test starts its 0-20 ms clock once handoff's first line has
//!   run (its SigBlk shows the handled signals blocked), and covers runtime
//!   start, config, spawning and the proxy's own start-up;
//! * the inherited-mask test sends as soon as a launcher has blocked SIGTERM
//!   and is about to exec handoff, so the signal is pending when handoff's
//!   first instruction runs: it must be read, not lost.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::time::Duration;

use common::{FIXTURE, HANDOFF, Handoff, Lab, SOON};
use nix::sys::signal::Signal::SIGTERM;

/// The child got its stop signal: it logged it and exited 0, or it was
/// killed by it (143) before its own start-up blocked signals.
fn assert_stop_delivered(lab: &Lab, h: &mut Handoff, round: usize) {
    let code = h.code(SOON);
    let log = h.log();
    assert!(
        log.contains("stopping proxy signal=\"SIGTERM\""),
        "round {round}: no stop forwarded:\n{log}"
    );
    match code {
        0 => assert!(
            lab.whats().contains(&"signal SIGTERM".to_string()),
            "round {round}: {:#?}",
            lab.whats()
        ),
        143 => {}
        other => panic!("round {round}: exit {other}:\n{log}"),
    }
}

#[test]
fn f04_sigterm_0_to_20ms_after_start_is_never_fatal_or_lost() {
    // xorshift seeded from the clock; the seed is printed so a failure reproduces.
    let mut seed = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_003,
    )
    .unwrap()
        | 1;
    println!("seed {seed}");
    for round in 0..50 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % 20_000);
        let lab = Lab::new();
        let mut h = lab.run(None, &lab.proxy(&[]));
        h.wait_until_blocked();
        std::thread::sleep(delay);
        h.signal(SIGTERM);
        assert_stop_delivered(&lab, &mut h, round);
    }
}

#[test]
fn sigterm_pending_at_exec_is_delivered() {
    for round in 0..10 {
        let lab = Lab::new();
        let mut cmd = lab.handoff_command(None);
        cmd.env("HANDOFF_CONFIG", lab.base_config());
        // Replace the program: the fixture blocks SIGTERM, then execs handoff.
        let mut launch = std::process::Command::new(FIXTURE);
        launch
            .args(["launch", "--block", "TERM", "--", HANDOFF, "run", "--"])
            .args(lab.proxy(&[]));
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => launch.env(k, v),
                None => launch.env_remove(k),
            };
        }
        cmd = launch;
        let mut h = Handoff::spawn(cmd, lab.path("handoff.stderr"));
        // Same pid before and after the exec: once the launcher has blocked
        // SIGTERM, a SIGTERM stays pending across exec into handoff.
        h.wait_until_blocked();
        h.signal(SIGTERM);
        assert_stop_delivered(&lab, &mut h, round);
    }
}
