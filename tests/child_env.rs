//! What handoff's children inherit (issue 14, item 3): the Consul
//! credentials in handoff's own environment never reach the proxy, the exec
//! health check, the backend commands or the sentinel, unless `[proxy]
//! keep_env` keeps them; the start log and `handoff check` name what is
//! stripped, never a value.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::process::Command;

use common::{Handoff, Lab, SOON, output};
use nix::sys::signal::Signal::SIGTERM;

/// The credentials handoff strips, with values a leak would show.
const CREDENTIALS: [(&str, &str); 5] = [
    ("CONSUL_HTTP_TOKEN", "tok-SECRET-1"),
    ("CONSUL_HTTP_TOKEN_FILE", "/nonexistent/SECRET-2"),
    ("CONSUL_HTTP_AUTH", "user:SECRET-3"),
    ("CONSUL_CLIENT_CERT", "/nonexistent/SECRET-4.pem"),
    ("CONSUL_CLIENT_KEY", "/nonexistent/SECRET-5.pem"),
];

/// A config whose proxy, exec health check and backend commands all log the
/// `CONSUL_*` names they inherited; `keep` is `[proxy] keep_env`.
fn config(lab: &Lab, keep: &str) -> std::path::PathBuf {
    std::fs::write(lab.path("state"), "BACKUP\n").unwrap();
    let record = |word: &str| {
        format!(
            "[\"{{fixture}}\", \"record\", \"--log\", \"{{log}}\", \"--consul-env\", \"{word}\"]"
        )
    };
    let keep = if keep.is_empty() {
        String::new()
    } else {
        format!("[proxy]\nkeep_env = [{keep}]\n")
    };
    lab.config(&format!(
        "{keep}\
         [proxy.health]\nexec = {}\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\n\
         [failover]\nbackend = \"command\"\n[failover.command]\n\
         demote = {}\npromote = {}\n\
         state = [\"{{fixture}}\", \"record\", \"--log\", \"{{log}}\", \"--consul-env\", \"state\", \"--print-file\", \"{{dir}}/state\"]\n",
        record("health"),
        record("demote"),
        record("promote"),
    ))
}

/// `cmd` with the credentials set, and one Consul variable that is not a
/// credential (children keep it); no other `CONSUL_*` (the test's own
/// `CONSUL_BIN`).
fn with_credentials(cmd: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CONSUL_") {
            cmd.env_remove(name);
        }
    }
    for (name, value) in CREDENTIALS {
        cmd.env(name, value);
    }
    cmd.env("CONSUL_HTTP_ADDR", "127.0.0.1:1")
}

/// The `CONSUL_*` names in a process's environment (/proc/PID/environ).
fn consul_names_of(pid: i32) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let mut names: Vec<String> = environ
        .split(|b| *b == 0)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .filter_map(|v| v.split_once('=').map(|(k, _)| k.to_owned()))
        .filter(|k| k.starts_with("CONSUL_"))
        .collect();
    names.sort();
    names.join(",")
}

/// Runs an agent with `config` until its node is up, then stops it; every
/// child's `consul=` must be `want`. Returns handoff's log.
fn run_and_look(lab: &Lab, config: &std::path::Path, want: &str) -> String {
    let mut cmd = lab.agent_command(Some(config));
    with_credentials(&mut cmd)
        .arg("run")
        .arg("--")
        .args(lab.proxy(&[]));
    let mut h = Handoff::spawn(cmd, lab.path("handoff.stderr"));
    // Down at start, a healthy check, then up: each was a child.
    lab.wait_for("promote ");
    let expected = format!("consul={want}");
    for word in ["start ", "demote ", "health ", "promote ", "state "] {
        let event = lab.wait_for(word);
        assert!(
            event.what.ends_with(&expected),
            "{word}: {} (want {expected})",
            event.what
        );
    }
    assert_eq!(
        consul_names_of(h.sentinel_pid()),
        want,
        "the sentinel's environment"
    );
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    h.log()
}

#[test]
fn consul_credentials_reach_no_child_and_the_log_names_them_without_values() {
    let lab = Lab::new();
    let config = config(&lab, "");
    let log = run_and_look(&lab, &config, "CONSUL_HTTP_ADDR");
    let line = log
        .lines()
        .find(|l| l.contains("stripped from the children's environment"))
        .unwrap_or_else(|| panic!("no line names what was stripped:\n{log}"));
    for (name, _) in CREDENTIALS {
        assert!(line.contains(name), "{name} not named: {line}");
    }
    assert_eq!(
        log.matches("stripped from the children's environment")
            .count(),
        1,
        "logged once: {log}"
    );
    assert!(!log.contains("SECRET"), "a value was logged:\n{log}");

    // `check` says the same before the start (ExecStartPre, rc_pre).
    let (code, stdout, stderr) =
        output(with_credentials(&mut lab.handoff_command(Some(&config))).arg("check"));
    assert_eq!(code, 0, "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains("stripped from the children's environment"))
        .unwrap_or_else(|| panic!("check does not say what is stripped:\n{stdout}"));
    for (name, _) in CREDENTIALS {
        assert!(line.contains(name), "{name} not named: {line}");
    }
    assert!(!stdout.contains("SECRET") && !stderr.contains("SECRET"));
}

#[test]
fn keep_env_keeps_a_credential_for_every_child() {
    let lab = Lab::new();
    let config = config(&lab, "\"CONSUL_HTTP_TOKEN\"");
    let log = run_and_look(&lab, &config, "CONSUL_HTTP_ADDR,CONSUL_HTTP_TOKEN");
    assert!(!log.contains("SECRET"), "a value was logged:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("stripped from the children's environment"))
        .unwrap();
    assert!(
        line.contains("CONSUL_HTTP_AUTH") && line.contains("kept=CONSUL_HTTP_TOKEN"),
        "{line}"
    );
    let (code, stdout, stderr) =
        output(with_credentials(&mut lab.handoff_command(Some(&config))).arg("check"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("kept by [proxy] keep_env: CONSUL_HTTP_TOKEN"),
        "{stdout}"
    );
}
