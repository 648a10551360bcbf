//! Signal forwarding through the real binary: each forwardable signal arrives
//! exactly once, translated per preset or config; dropped ones never arrive;
//! a reload never restarts the proxy.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use common::{Lab, SOON};
use nix::sys::signal::Signal::{self, *};

/// Sends each signal and waits for the fixture to log it before the next,
/// so the kernel never coalesces two of them.
fn send_each(lab: &Lab, h: &common::Handoff, pairs: &[(Signal, Signal)]) {
    for (sent, arrives) in pairs {
        let before = lab.count(&format!("signal {}", arrives.as_str()));
        h.signal(*sent);
        lab.wait_for_count(&format!("signal {}", arrives.as_str()), before + 1);
    }
}

#[test]
fn each_forwardable_signal_arrives_exactly_once() {
    let lab = Lab::new();
    let mut h = lab.run(None, &lab.proxy(&[]));
    let pid = common::proxy_pid(&lab);
    let pass = [SIGUSR1, SIGUSR2, SIGWINCH, SIGTTIN, SIGTTOU, SIGQUIT];
    let mut pairs: Vec<(Signal, Signal)> = pass.iter().map(|s| (*s, *s)).collect();
    pairs.push((SIGHUP, SIGHUP)); // generic preset: SIGHUP stays SIGHUP
    send_each(&lab, &h, &pairs);
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    for s in pass.iter().chain([&SIGHUP, &SIGTERM]) {
        assert_eq!(
            lab.count(&format!("signal {}", s.as_str())),
            1,
            "{s}: {:#?}",
            lab.whats()
        );
    }
    // One proxy, never restarted by a reload.
    assert_eq!(lab.count("start"), 1);
    assert!(
        lab.events().iter().all(|e| e.pid == pid),
        "{:#?}",
        lab.events()
    );
    let log = h.log();
    // signalfd (Linux) names the sender; sigwait (the portable reader) cannot.
    if cfg!(not(handoff_portable)) {
        let me = std::process::id();
        let expected = format!("signal received signal=\"SIGUSR1\" sender={me}");
        assert!(log.contains(&expected), "sender pid not logged:\n{log}");
    }
    assert!(
        log.contains("forwarded signal signal=\"SIGWINCH\""),
        "{log}"
    );
}

#[test]
fn presets_translate_the_reload() {
    for (preset, arrives) in [("nginx", SIGHUP), ("haproxy", SIGUSR2), ("generic", SIGHUP)] {
        let lab = Lab::new();
        // The fixture is no nginx or haproxy: no `nginx -t`, no new workers
        // (tests/proxies.rs runs the real ones with the presets' checks).
        let config = lab.config(&format!(
            "[proxy]\npreset = \"{preset}\"\nreload_check = []\nreload_confirm = []\n"
        ));
        let stop = if preset == "nginx" {
            "QUIT"
        } else if preset == "haproxy" {
            "USR1"
        } else {
            "TERM"
        };
        let mut h = lab.run(Some(&config), &lab.proxy(&["--stop-on", stop]));
        let pid = common::proxy_pid(&lab);
        send_each(&lab, &h, &[(SIGHUP, arrives)]);
        // The preset's stop signal is what SIGTERM to handoff becomes.
        h.signal(SIGTERM);
        assert_eq!(h.code(SOON), 0, "{preset}: {}", h.log());
        let whats = lab.whats();
        assert!(
            whats.contains(&format!("signal SIG{stop}")),
            "{preset}: {whats:?}"
        );
        assert!(
            !whats.contains(&"signal SIGTERM".to_string()) || stop == "TERM",
            "{preset}: {whats:?}"
        );
        assert_eq!(
            lab.count("start"),
            1,
            "{preset}: reload restarted the proxy"
        );
        assert!(lab.events().iter().all(|e| e.pid == pid));
    }
}

#[test]
fn a_dropped_reload_never_arrives() {
    for config_text in [
        "[proxy]\npreset = \"traefik\"\n",
        "[proxy]\nreload_signal = \"drop\"\n",
    ] {
        let lab = Lab::new();
        let config = lab.config(config_text);
        let mut h = lab.run(Some(&config), &lab.proxy(&[]));
        lab.wait_for("start");
        h.signal(SIGHUP);
        h.wait_log("signal dropped signal=\"SIGHUP\"");
        // A marker that does arrive proves the HUP had its chance first.
        send_each(&lab, &h, &[(SIGUSR1, SIGUSR1)]);
        h.signal(SIGTERM);
        assert_eq!(h.code(SOON), 0);
        assert_eq!(
            lab.count("signal SIGHUP"),
            0,
            "{config_text}: {:#?}",
            lab.whats()
        );
    }
}

#[test]
fn explicit_reload_signal_overrides_the_preset() {
    let lab = Lab::new();
    let config = lab
        .config("[proxy]\npreset = \"traefik\"\nreload_signal = \"USR2\"\nstop_signal = \"INT\"\n");
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("start");
    send_each(&lab, &h, &[(SIGHUP, SIGUSR2)]);
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0);
    assert!(
        lab.whats().contains(&"signal SIGINT".to_string()),
        "{:#?}",
        lab.whats()
    );
}

/// Regression (issue 17): scripts/bench's 1000 SIGHUPs to the generic preset
/// reached the proxy as 571: a plain reload was held until the proxy's first
/// health pass and the SIGHUPs meanwhile folded into one. A reload with no
/// check and no confirmation is a pass-through signal, sent by the signal
/// reader at once (the fast path), each one. The proxy here never passes
/// its health check, so a held SIGHUP would never arrive.
#[test]
fn plain_sighups_are_each_sent_at_once_on_the_fast_path() {
    const N: usize = 50;
    let lab = Lab::new();
    let config =
        lab.config("[proxy.health]\nexec = [\"false\"]\ninterval = \"50ms\"\ntimeout = \"40ms\"\n");
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    let pid = common::proxy_pid(&lab);
    // Each after the proxy logged the one before: the kernel coalesces a
    // signal still pending in the proxy, which says nothing about handoff.
    for n in 1..=N {
        h.signal(SIGHUP);
        lab.wait_for_count("signal SIGHUP", n);
    }
    // A stop signal still goes through the machine: the stop sequence, not
    // the fast path.
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert_eq!(lab.count("signal SIGHUP"), N, "{:#?}", lab.whats());
    assert_eq!(lab.count("signal SIGTERM"), 1, "{:#?}", lab.whats());
    assert_eq!(lab.count("start"), 1);
    assert!(lab.events().iter().all(|e| e.pid == pid));
    let log = h.log();
    let sent: Vec<bool> = log
        .lines()
        .filter(|l| l.contains("reload sent"))
        .map(|l| l.contains("fast=true"))
        .collect();
    assert_eq!(sent.len(), N, "each SIGHUP sent:\n{log}");
    // The reader gets its table when the loop has handled the proxy's
    // start, which may come after the proxy logged "start": the first
    // SIGHUP may still go through the loop (at once, not held). By the
    // time the loop handled it, the table is set: every later one is the
    // reader's.
    assert!(
        sent[1..].iter().all(|&fast| fast),
        "each SIGHUP after the first sent by the reader:\n{log}"
    );
    assert_eq!(
        log.matches("reload begins").count(),
        N,
        "each one a reload:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("stopping proxy") && l.contains("SIGTERM") && !l.contains("fast")),
        "{log}"
    );
}
