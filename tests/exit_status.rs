//! Exit status: the proxy's code passes through, deaths by signal become
//! 128+N, `exit_code_map` remaps, and spawn failures are 126/127.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Lab, SOON};

#[test]
fn exit_codes_pass_through() {
    for code in [0, 1, 42, 255] {
        let lab = Lab::new();
        let code_arg = code.to_string();
        let mut h = lab.run(
            None,
            &lab.proxy(&["--exit-after", "10ms", "--code", &code_arg]),
        );
        assert_eq!(h.code(SOON), code, "proxy exit {code}; log:\n{}", h.log());
    }
}

#[test]
fn death_by_signal_is_128_plus_n() {
    for (signal, code) in [("KILL", 137), ("SEGV", 139)] {
        let lab = Lab::new();
        let mut h = lab.run(None, &lab.proxy(&["--die", signal]));
        assert_eq!(h.code(SOON), code, "{signal}; log:\n{}", h.log());
        assert!(lab.whats().iter().any(|w| w == &format!("die {signal}")));
    }
}

#[test]
fn exit_code_map_remaps() {
    let lab = Lab::new();
    let config = lab.config("[proxy]\nexit_code_map = { 42 = 0, 137 = 3 }\n");
    let mut h = lab.run(
        Some(&config),
        &lab.proxy(&["--exit-after", "10ms", "--code", "42"]),
    );
    assert_eq!(h.code(SOON), 0);
    let lab = Lab::new();
    let config = lab.config("[proxy]\nexit_code_map = { 42 = 0, 137 = 3 }\n");
    let mut h = lab.run(Some(&config), &lab.proxy(&["--die", "KILL"]));
    assert_eq!(h.code(SOON), 3);
}

#[test]
fn missing_proxy_exits_127_and_never_promotes() {
    let lab = Lab::new();
    let config = lab.config(&lab.command_backend("BACKUP", ""));
    let mut h = lab.run(Some(&config), &["/nonexistent/edge-proxy".to_string()]);
    assert_eq!(h.code(SOON), 127, "{}", h.log());
    let whats = lab.whats();
    assert!(
        whats.iter().any(|w| w == "demote"),
        "reconciled to down first: {whats:?}"
    );
    assert!(
        !whats.iter().any(|w| w == "promote"),
        "never promoted: {whats:?}"
    );
    h.assert_logged("/nonexistent/edge-proxy");
}

#[test]
fn not_executable_exits_126() {
    let lab = Lab::new();
    let script = lab.path("proxy.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut h = lab.run(None, &[script.display().to_string()]);
    assert_eq!(h.code(SOON), 126, "{}", h.log());
}

#[test]
fn f01_a_crashed_proxy_is_restarted_per_policy_and_a_stop_ends_it() {
    let lab = Lab::new();
    let config = lab.config("[proxy]\nrestart = \"on-failure\"\n");
    let mut h = lab.run(
        Some(&config),
        &lab.proxy(&["--exit-after", "50ms", "--code", "3"]),
    );
    // First start, crash, restart after the 1 s backoff.
    lab.wait_for_count("start", 2);
    h.wait_log("decision=Restarting");
    h.signal(nix::sys::signal::Signal::SIGTERM);
    let code = h.code(SOON);
    assert!(code == 0 || code == 3, "exit {code}; log:\n{}", h.log());
    assert!(lab.count("start") >= 2);
}
