//! Role-change hooks and master-only duties through the real binary, with
//! the fixture proxy and a command backend whose role is a file the
//! promote and demote commands write (promote: MASTER; demote: BACKUP).
//! Ordering is asserted from the append-only event log each hook and duty
//! writes to (`fixture record`), never from sleeps.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{Lab, SOON};
use nix::sys::signal::Signal::SIGTERM;

/// A command backend whose promote and demote move the role, plus `extra`
/// (hooks, duties).
fn config(lab: &Lab, extra: &str) -> std::path::PathBuf {
    std::fs::write(lab.path("state"), "BACKUP\n").unwrap();
    lab.config(&format!(
        "[failover]\nbackend = \"command\"\nfailover_timeout = \"5s\"\n\
         [failover.command]\n\
         promote = [\"sh\", \"-c\", \"echo MASTER > {{dir}}/state\"]\n\
         demote = [\"sh\", \"-c\", \"echo BACKUP > {{dir}}/state\"]\n\
         state = [\"cat\", \"{{dir}}/state\"]\n{extra}"
    ))
}

/// `[hooks.NAME]` recording `hook NAME ROLE PREVIOUS REASON` in the event log.
fn hook(name: &str, extra: &str) -> String {
    format!(
        "[hooks.{name}]\ncommand = [\"sh\", \"-c\", \"{{fixture}} record --log {{log}} \\\"hook {name} $HANDOFF_ROLE $HANDOFF_PREVIOUS_ROLE $HANDOFF_REASON\\\"\"]\n{extra}"
    )
}

fn hooks_seen(lab: &Lab) -> Vec<String> {
    lab.whats()
        .into_iter()
        .filter(|w| w.starts_with("hook "))
        .collect()
}

#[test]
fn the_start_reconciles_once_and_a_planned_stop_runs_on_stop_then_backup() {
    let lab = Lab::new();
    let extra = [
        hook("on_master", ""),
        hook("on_backup", ""),
        hook("on_fault", ""),
        hook("on_stop", ""),
    ]
    .concat();
    let config = config(&lab, &extra);
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("hook on_master");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert_eq!(
        hooks_seen(&lab),
        [
            "hook on_master master unknown start",
            "hook on_stop stopping master stop",
            "hook on_backup backup stopping role",
        ],
        "{}",
        h.log()
    );
}

#[test]
fn a_slow_hook_is_killed_with_its_children_and_never_holds_the_stop() {
    let lab = Lab::new();
    let pid_file = lab.path("child.pid");
    let slow = format!(
        "[hooks.on_master]\ncommand = [\"sh\", \"-c\", \"sleep 60 & echo $! > {}; wait\"]\ntimeout = \"1s\"\n",
        pid_file.display()
    );
    let config = config(
        &lab,
        &[slow, hook("on_backup", ""), hook("on_stop", "")].concat(),
    );
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    // The slow hook runs once its child wrote its pid.
    let deadline = Instant::now() + SOON;
    while std::fs::read_to_string(&pid_file).map_or(true, |t| t.trim().is_empty()) {
        assert!(
            Instant::now() < deadline,
            "the slow hook never ran: {}",
            h.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the stop waited for the hook: {:?}",
        started.elapsed()
    );
    let child: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        common::wait_gone(child, SOON),
        "the slow hook's child (pid {child}) outlived it"
    );
    let log = h.log();
    assert!(log.contains("timed out") || log.contains("killed"), "{log}");
    // Changes piled up behind it: on_stop and on_backup queued; the newest
    // (the role after the move) ran last, the one before was skipped.
    let seen = hooks_seen(&lab);
    assert_eq!(
        seen.last().map(String::as_str),
        Some("hook on_backup backup stopping role"),
        "{seen:?}\n{log}"
    );
}

#[test]
fn a_duty_runs_only_while_master_at_up_and_stops_at_once_when_it_is_not() {
    let lab = Lab::new();
    let duty = "[[duty]]\nname = \"tick\"\nevery = \"1s\"\n\
                command = [\"sh\", \"-c\", \"{fixture} record --log {log} duty-start; exec sleep 30\"]\n\
                timeout = \"1m\"\n";
    let config = config(&lab, duty);
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("duty-start");
    let status = lab.status_json(&config);
    let duties = &status["duties"];
    assert_eq!(duties[0]["name"], "tick", "{status}");
    assert_eq!(duties[0]["running"], true, "{status}");
    // `handoff demote`: the level leaves up, and the duty stops at once.
    let out = lab
        .handoff_command(Some(&config))
        .args(["demote", "--no-wait"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.wait_log("duty stopped");
    let deadline = Instant::now() + SOON;
    loop {
        let status = lab.status_json(&config);
        if status["duties"][0]["running"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "the duty kept running: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let starts = lab.count("duty-start");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        lab.count("duty-start"),
        starts,
        "no run while in maintenance"
    );
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
}

#[test]
fn hook_keys_are_checked_where_they_stand() {
    let lab = Lab::new();
    let bad = lab.config(
        "[hooks.on_master]\ncommand = [\"x\"]\nuser = \"no-such-user-here\"\n\
         [[duty]]\nname = \"Bad Name\"\ncommand = [\"x\"]\nevery = \"1h\"\n",
    );
    let (code, _, err) = common::output(lab.handoff_command(Some(&bad)).arg("check"));
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains(":3:8") && err.contains("user `no-such-user-here` does not exist"),
        "{err}"
    );
    assert!(
        err.contains(":5:8") && err.contains("duty name `Bad Name`"),
        "{err}"
    );
}
