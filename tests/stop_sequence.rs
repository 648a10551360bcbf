//! The stop sequence against the command backend, asserted from the event
//! log that the fixture proxy and the backend commands share.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{Lab, SOON};
use nix::sys::signal::Signal::{SIGINT, SIGTERM};

fn pos(lab: &Lab, prefix: &str) -> usize {
    lab.position(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in {:#?}", lab.whats()))
}

/// Position of the last event starting with `prefix`.
fn last_pos(lab: &Lab, prefix: &str) -> usize {
    lab.whats()
        .iter()
        .rposition(|w| w.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?}"))
}

#[test]
fn demote_comes_before_the_stop_signal_and_backup_skips_the_wait() {
    let lab = Lab::new();
    // A 60 s failover_timeout: if the wait were not skipped, the test would time out.
    let config = lab.config(&lab.command_backend("BACKUP\n", "failover_timeout = \"60s\""));
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("promote"); // healthy after 1 s: up
    // A role poll that finished after the promotion: the second `state` run
    // after `promote` (polls run one at a time) says the node is BACKUP.
    let promote = lab.position("promote").unwrap();
    let deadline = Instant::now() + SOON;
    while lab.whats()[promote..]
        .iter()
        .filter(|w| *w == "state")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no role polls after the promotion"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    let stop_took = started.elapsed();
    let demote = last_pos(&lab, "demote");
    let stop = pos(&lab, "signal SIGTERM");
    assert!(
        pos(&lab, "promote") < demote && demote < stop,
        "{:#?}",
        lab.whats()
    );
    h.assert_logged("decision=NotMaster");
    assert!(
        stop_took < Duration::from_secs(10),
        "the wait was not skipped: {stop_took:?}"
    );
}

#[test]
fn master_waits_until_the_state_says_backup() {
    let lab = Lab::new();
    let config = lab.config(&lab.command_backend("MASTER\n", "failover_timeout = \"60s\""));
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("promote");
    h.wait_log("role=MASTER");
    h.signal(SIGTERM);
    // The node still says MASTER after the demote: no stop signal yet.
    h.wait_log("setting level level=down");
    lab.wait_for_count("demote", 2);
    let polls_before = lab.count("state");
    lab.wait_for_count("state", polls_before + 3);
    assert_eq!(
        lab.count("signal SIGTERM"),
        0,
        "stopped before the IP moved: {:#?}",
        lab.whats()
    );
    // The peer takes over: the state command now says BACKUP.
    std::fs::write(lab.path("state"), "BACKUP\n").unwrap();
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    h.assert_logged("decision=MoveConfirmed");
    assert!(last_pos(&lab, "demote") < pos(&lab, "signal SIGTERM"));
}

#[test]
fn f11_with_no_peer_the_wait_ends_at_failover_timeout() {
    let lab = Lab::new();
    let config = lab.config(&lab.command_backend("MASTER\n", "failover_timeout = \"1s\""));
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("promote");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    let events = lab.events();
    let demote = events
        .iter()
        .rfind(|e| e.what == "demote")
        .expect("demote")
        .ns;
    let stop = events
        .iter()
        .find(|e| e.what == "signal SIGTERM")
        .expect("stop")
        .ns;
    // The deadline is armed at the stop signal, just before demote runs.
    assert!(
        stop - demote >= 900_000_000,
        "stopped {} ms after demote",
        (stop - demote) / 1_000_000
    );
    // ...and never waits past it (a generous bound: 2 x failover_timeout).
    assert!(
        stop - demote < 2_000_000_000,
        "waited {} ms, past failover_timeout",
        (stop - demote) / 1_000_000
    );
    h.assert_logged("decision=MoveTimedOut");
}

#[test]
fn second_stop_signal_skips_the_wait() {
    let lab = Lab::new();
    let config = lab.config(&lab.command_backend("MASTER\n", "failover_timeout = \"60s\""));
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("promote");
    h.signal(SIGTERM);
    lab.wait_for_count("demote", 2);
    h.signal(SIGINT);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    h.assert_logged("decision=WaitSkipped");
    assert!(last_pos(&lab, "demote") < pos(&lab, "signal SIGTERM"));
}

#[test]
fn f02_a_proxy_that_ignores_its_stop_signal_is_killed_after_stop_timeout_within_the_budget() {
    let lab = Lab::new();
    let config = lab.config("[proxy]\nstop_timeout = \"500ms\"\n");
    let mut h = lab.run(Some(&config), &lab.proxy(&["--ignore-stop"]));
    lab.wait_for("start");
    let started = Instant::now();
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 137, "{}", h.log());
    // The budget: failover_timeout (no wait: not master) + stop_timeout
    // 0.5 s + DOWN_GRACE 1 s.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "the stop took {took:?}");
    assert_eq!(lab.count("signal SIGTERM"), 1);
    assert_eq!(lab.count("exit"), 0, "it never exited by itself");
    h.assert_logged("decision=StopTimedOut");
}

#[test]
fn the_third_stop_signal_kills_at_once() {
    let lab = Lab::new();
    let config = lab.config("[proxy]\nstop_timeout = \"60s\"\n");
    let mut h = lab.run(Some(&config), &lab.proxy(&["--ignore-stop"]));
    lab.wait_for("start");
    h.signal(SIGTERM);
    lab.wait_for("signal SIGTERM");
    h.signal(SIGTERM);
    h.wait_log("decision=AlreadyStopping");
    h.signal(SIGINT);
    assert_eq!(h.code(SOON), 137, "{}", h.log());
    h.assert_logged("decision=KillRequested");
}

#[test]
fn f08_a_hanging_backend_tool_does_not_hold_the_stop_past_its_deadlines() {
    let lab = Lab::new();
    let mut text = lab.command_backend("MASTER\n", "failover_timeout = \"1s\"");
    text = text.replace("\"demote\"]", "\"demote\", \"--hang-if\", \"{dir}/hang\"]")
        + "timeout = \"300ms\"\n";
    let config = lab.config(&text);
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("promote");
    // From now on every demote hangs and is killed after 300 ms.
    std::fs::write(lab.path("hang"), "").unwrap();
    let started = Instant::now();
    h.signal(SIGTERM);
    // failover_timeout 1 s, the proxy's exit, DOWN_GRACE 1 s: then exit 75,
    // since down was never confirmed (the proxy's 0 gives way).
    assert_eq!(h.code(SOON), 75, "{}", h.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(
        lab.position("signal SIGTERM").is_some(),
        "{:#?}",
        lab.whats()
    );
    h.assert_logged("did not finish within 300ms");
    h.assert_logged("this node may still hold the floating IP");
}

#[test]
fn f08_a_demote_that_hangs_at_start_spawns_nothing() {
    let lab = Lab::new();
    let mut text = lab.command_backend("MASTER\n", "failover_timeout = \"1s\"");
    text =
        text.replace("\"demote\"]", "\"demote\", \"--sleep\", \"60s\"]") + "timeout = \"300ms\"\n";
    let config = lab.config(&text);
    let started = Instant::now();
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    assert_eq!(h.code(SOON), 75, "{}", h.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        lab.count("start"),
        0,
        "a proxy was started: {:#?}",
        lab.whats()
    );
    h.assert_logged("could not take this node down at start");
}

#[test]
fn a_crash_demotes_before_exit() {
    let lab = Lab::new();
    let config = lab.config(&lab.command_backend("MASTER\n", ""));
    let mut h = lab.run(
        Some(&config),
        &lab.proxy(&["--exit-after", "1500ms", "--code", "4"]),
    );
    assert_eq!(h.code(SOON), 4, "{}", h.log());
    let exit = pos(&lab, "exit 4");
    assert!(pos(&lab, "promote") < exit, "{:#?}", lab.whats());
    assert!(
        last_pos(&lab, "demote") > exit,
        "demoted after the crash: {:#?}",
        lab.whats()
    );
}

#[test]
fn start_up_demotes_before_anything_else() {
    let lab = Lab::new();
    let config = lab.config(&lab.command_backend("BACKUP\n", ""));
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("promote");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    let whats = lab.whats();
    assert_eq!(whats[0], "demote", "down comes first: {whats:#?}");
    assert!(pos(&lab, "demote") < pos(&lab, "start"), "{whats:#?}");
    assert!(
        pos(&lab, "start") < pos(&lab, "promote"),
        "promoted only once the proxy ran: {whats:#?}"
    );
}

#[test]
fn with_a_probe_the_proxy_is_stopped_only_once_the_peer_answers() {
    let lab = Lab::new();
    // A free port, closed again: nothing answers until the test listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = format!("failover_timeout = \"30s\"\nprobe = \"tcp://127.0.0.1:{port}\"");
    let config = lab.config(&lab.command_backend("MASTER\n", &extra));
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("promote");
    h.wait_log("role=MASTER");
    h.signal(SIGTERM);
    lab.wait_for_count("demote", 2);
    // The peer took over: the state says BACKUP; now the probe must pass too.
    std::fs::write(lab.path("state"), "BACKUP\n").unwrap();
    h.wait_log("probing the VIP until the peer answers");
    let polls = lab.count("state");
    lab.wait_for_count("state", polls + 5);
    assert_eq!(
        lab.count("signal SIGTERM"),
        0,
        "stopped while nobody answered: {:#?}",
        lab.whats()
    );
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    common::append_event(&lab.log, "listening");
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    drop(listener);
    assert!(
        pos(&lab, "listening") < pos(&lab, "signal SIGTERM"),
        "{:#?}",
        lab.whats()
    );
    h.assert_logged("probe through the VIP succeeded");
    h.assert_logged("moved_after_ms=");
}
