//! Reload mechanics with the fixture proxy (fast, no real proxy): a reload
//! command, a hung check that the stop interrupts (and that does not outlive
//! it), a queued `handoff reload`, and a READY=1 on the proxy's own notify
//! socket. The real nginx, haproxy and caddy with their presets' checks and
//! confirmations are tests/proxies.rs.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::{
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use common::{Lab, SOON};
use nix::sys::signal::Signal::SIGTERM;

/// `handoff --config C reload`, started now; its output is read later.
fn reload(lab: &Lab, config: &std::path::Path) -> Child {
    lab.handoff_command(Some(config))
        .arg("reload")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn handoff reload")
}

fn finish(child: Child) -> (i32, String, String) {
    let out = child.wait_with_output().expect("handoff reload");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_reload_command_runs_instead_of_a_signal_and_the_caller_hears_it() {
    let lab = Lab::new();
    let config = lab.config(
        "[proxy]\nreload_command = [\"{fixture}\", \"record\", \"--log\", \"{log}\", \"reloaded\"]\n",
    );
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    h.wait_log("healthy: true");
    let (code, out, err) = finish(reload(&lab, &config));
    assert_eq!(code, 0, "{err}\n{}", h.log());
    assert!(
        out.starts_with("reloaded in ") && out.contains("(confirmed by: sent)"),
        "{out}"
    );
    lab.wait_for("reloaded");
    assert_eq!(
        lab.count("signal SIGHUP"),
        0,
        "a reload command replaces the signal"
    );
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
}

#[test]
fn a_hung_check_is_ended_by_the_stop_and_does_not_outlive_it() {
    let lab = Lab::new();
    let pid_file = lab.path("check.pid");
    let config = lab.config(&format!(
        "[proxy]\nreload_check = [\"sh\", \"-c\", \"echo $$ > {}; exec sleep 60\"]\nreload_timeout = \"1m\"\n",
        pid_file.display()
    ));
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    h.wait_log("healthy: true");
    let first = reload(&lab, &config);
    h.wait_log("reload begins");
    // Asked during the first: queued behind it, never begun (the stop).
    let second = reload(&lab, &config);
    let deadline = Instant::now() + SOON;
    let check = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the check never ran: {}",
            h.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    h.wait_log("reload requested");
    let requests = || h.log().matches("reload requested").count();
    let deadline = Instant::now() + SOON;
    while requests() < 2 {
        assert!(Instant::now() < deadline, "the second request never came");
        std::thread::sleep(Duration::from_millis(20));
    }
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    let (code, _, err) = finish(first);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("handoff: reload failed: interrupted by the stop"),
        "{err}"
    );
    let (code, _, err) = finish(second);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("reload refused: handoff is stopping") || err.contains("interrupted"),
        "{err}"
    );
    assert!(
        common::wait_gone(check, SOON),
        "the check (pid {check}) outlived the reload it belonged to"
    );
    let log = h.log();
    assert!(!log.contains("reload sent"), "nothing was sent:\n{log}");
}

#[test]
fn ready_on_the_private_notify_socket_confirms_and_systemd_s_never_reaches_the_proxy() {
    let lab = Lab::new();
    // The fixture sends READY=1 to $NOTIFY_SOCKET on SIGHUP (--notify-on-hup).
    let config = lab.config("[proxy]\nreload_confirm = [\"ready\"]\nreload_timeout = \"5s\"\n");
    let mut cmd = lab.agent_command(Some(&config));
    cmd.env("NOTIFY_SOCKET", lab.path("systemd.sock"))
        .arg("run")
        .arg("--")
        .args(lab.proxy(&["--notify-on-hup"]));
    let mut h = common::Handoff::spawn(cmd, lab.path("handoff.stderr"));
    h.wait_log("healthy: true");
    let start = lab.wait_for("start");
    assert!(start.what.contains("notify_socket=set"), "{}", start.what);
    let notify = format!("{}.notify", lab.socket().display());
    let (code, out, err) = finish(reload(&lab, &config));
    assert_eq!(code, 0, "{err}\n{}", h.log());
    assert!(out.contains("(confirmed by: ready)"), "{out}");
    // Nobody listens on "systemd's" socket here: had the proxy been given
    // it, its send would have failed and nothing would have confirmed.
    lab.wait_for("notified ok");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert!(
        !std::path::Path::new(&notify).exists(),
        "the notify socket is removed at exit"
    );
}

#[test]
fn a_proxy_that_never_confirms_fails_the_reload_without_a_restart() {
    let lab = Lab::new();
    let config = lab.config(
        "[proxy]\nreload_confirm = [\"ready\"]\nreload_timeout = \"500ms\"\nrestart = \"always\"\n",
    );
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    h.wait_log("healthy: true");
    let (code, _, err) = finish(reload(&lab, &config));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not confirmed within 500ms: no READY=1 from the proxy"),
        "{err}"
    );
    let metrics = common::http_send(&h.http_address(), "GET /metrics HTTP/1.0\r\n\r\n")
        .expect("metrics")
        .1;
    assert!(
        metrics.contains("handoff_reload_failures_total 1"),
        "{metrics}"
    );
    assert_eq!(lab.count("start"), 1, "not restarted");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
}

#[test]
fn a_disabled_reload_is_refused_in_words_and_sends_nothing() {
    let lab = Lab::new();
    let config = lab.config("[proxy]\npreset = \"traefik\"\n");
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    h.wait_log("healthy: true");
    let (code, out, err) = finish(reload(&lab, &config));
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(
        err.trim(),
        "handoff: reload refused: reloads are disabled (reload_signal = \"drop\" and no reload_command)"
    );
    assert_eq!(lab.count("signal SIGHUP"), 0);
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
}
