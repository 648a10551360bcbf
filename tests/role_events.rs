//! Event-driven role detection against real keepalived: a VIP that keepalived
//! adds or removes reaches handoff as an address event (rtnetlink), not at
//! its next 1 s poll. Asserted from handoff's own log, where every role
//! change names what saw it (`seen_by`): an "address event" cannot come from
//! the poll. The figures are in docs/benchmarks.md (bench/detect.py).
//!
//! Needs root, `ip` and `keepalived` (the lab of tests/common/netns.rs);
//! under CI they must be there, elsewhere the test skips.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::time::Duration;

use common::{
    Lab, SOON,
    netns::{Cluster, lab_available},
};
use nix::sys::signal::Signal::SIGTERM;

/// The `role` lines handoff logged that say `role`.
fn role_lines(log: &str, role: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" role ") && l.contains(&format!(" role={role} ")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn keepalived_moving_the_vip_is_seen_by_an_address_event() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new();
    // b holds the VIP first; a (250) takes it once its handoff is up, and
    // gives it back on a graceful stop.
    let cluster = Cluster::new(&lab, [-254, 0], "");
    cluster.wait_for_vip("b", Duration::from_secs(15));
    let config = cluster.config(&lab, "a", "");
    let mut h = cluster.handoff(&lab, "a", &config, &lab.proxy(&[]));
    lab.wait_for("start");
    cluster.wait_for_vip("a", Duration::from_secs(15));
    h.wait_log(" role=MASTER ");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert!(cluster.holds_vip("b") && !cluster.holds_vip("a"));

    let log = h.log();
    let gained = role_lines(&log, "MASTER");
    let released = role_lines(&log, "BACKUP");
    println!("gained: {gained:#?}\nreleased: {released:#?}");
    assert!(
        !gained.is_empty() && !released.is_empty(),
        "a never logged MASTER then BACKUP:\n{log}"
    );
    // Each change can also be caught by a poll that happened to run in the
    // microseconds between the address change and its event (the 1 s idle
    // poll at the start, the 50 ms one while the stop awaits the move), so
    // one of the two is asked for, not both.
    let by_event = |lines: &[String]| {
        lines
            .iter()
            .any(|l| l.contains("seen_by=\"address event\""))
    };
    assert!(
        by_event(&gained) || by_event(&released),
        "neither the VIP's arrival nor its departure was seen by an address event:\n{log}"
    );
}
