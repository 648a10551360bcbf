//! The command line and config errors through the real binary: exit 78 with
//! `file:line:col` before anything is spawned, 64 for usage, 69 for the
//! subcommands that need the control socket, and `check`'s output.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use common::{FIXTURE, Lab, output};

/// (config, line:col, phrase): the four kinds the issue names, and more.
const BAD: &[(&str, &str, &str)] = &[
    (
        "[proxy]\nstop_timout = \"5s\"\n",
        "2:1",
        "unknown field `stop_timout`, expected one of",
    ),
    (
        "[proxy]\nstop_timeout = \"fast\"\n",
        "2:16",
        "is not a duration",
    ),
    (
        "[proxy]\nstop_signal = \"SIGFOO\"\n",
        "2:15",
        "unknown signal",
    ),
    (
        "[proxy]\nstop_timeout = 10\n",
        "2:16",
        "invalid type: integer `10`, expected a duration",
    ),
    (
        "[failover]\nbackend = \"command\"\n",
        "2:11",
        "[failover.command]",
    ),
    // Issue 12 item 8: inputs that used to pass `check` and then kill the
    // agent (an `Instant` overflow), or silently skip every stop's wait.
    (
        "[failover]\nfailover_timeout = \"100000years\"\n",
        "2:20",
        "longer than the ceiling of 1day",
    ),
    (
        "[proxy]\nstop_timeout = \"584942417355years\"\n",
        "2:16",
        "",
    ),
    (
        "[failover]\nbackend = \"carp\"\n[failover.carp]\ninterfaces = []\n",
        "4:14",
        "interfaces is empty",
    ),
];

#[test]
fn f09_config_errors_exit_78_with_line_and_start_nothing() {
    for (text, place, phrase) in BAD {
        let lab = Lab::new();
        let config = lab.config(text);
        let (code, _, stderr) = output(
            lab.handoff_command(Some(&config))
                .args(["run", "--", FIXTURE, "proxy", "--log"])
                .arg(&lab.log),
        );
        assert_eq!(code, 78, "{text:?}: {stderr}");
        let expected = format!("{}:{place}: ", config.display());
        assert!(
            stderr.starts_with(&expected),
            "{text:?}: expected {expected:?} in {stderr:?}"
        );
        assert!(
            stderr.contains(phrase),
            "{text:?}: expected {phrase:?} in {stderr:?}"
        );
        assert!(!lab.log.exists(), "{text:?}: the proxy was started");

        let (code, stdout, stderr2) = output(lab.handoff_command(Some(&config)).arg("check"));
        assert_eq!(code, 78, "check {text:?}");
        assert_eq!(stderr2, stderr, "check prints the same errors");
        assert!(!stdout.contains("configuration OK"));
    }
}

#[test]
fn check_accepts_a_good_config_and_warns_about_the_budget() {
    let lab = Lab::new();
    let config = lab.config("[proxy]\nstop_timeout = \"10s\"\n[failover]\nfailover_timeout = \"10s\"\nsettle = \"1s\"\n");
    let (code, stdout, stderr) = output(lab.handoff_command(Some(&config)).arg("check"));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(stdout.contains("stop budget 22s"), "{stdout}");
    assert!(stderr.is_empty(), "{stderr}");

    // --config after the subcommand works too.
    let (code, stdout, stderr) = output(
        lab.handoff_command(None)
            .args(["check", "--kill-timeout", "15s", "--config"])
            .arg(&config),
    );
    assert_eq!(code, 0, "a warning is not an error: {stderr}");
    assert!(stdout.contains("configuration OK"));
    assert!(
        stderr.contains("warning: stop budget 22s") && stderr.contains("kill timeout 15s"),
        "{stderr}"
    );

    // Under Nomad without the flag, Nomad's 5 s default is the budget.
    let (code, _, stderr) = output(
        lab.handoff_command(Some(&config))
            .arg("check")
            .env("NOMAD_ALLOC_ID", "x"),
    );
    assert_eq!(code, 0);
    assert!(stderr.contains("Nomad's default kill_timeout"), "{stderr}");
}

#[test]
fn check_rejects_a_bad_kill_timeout_as_usage() {
    let lab = Lab::new();
    let (code, _, stderr) =
        output(
            lab.handoff_command(None)
                .args(["check", "--kill-timeout", "soon"]),
        );
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("--kill-timeout"), "{stderr}");
}

#[test]
fn absurd_duration_flags_are_refused_naming_the_flag() {
    let lab = Lab::new();
    for args in [
        &["check", "--kill-timeout", "100000years"][..],
        &["demote", "--timeout", "100000years"][..],
        &["demote", "--timeout", "25h"][..],
    ] {
        let (code, _, stderr) = output(lab.handoff_command(None).args(args));
        assert_eq!(code, 64, "{args:?}: {stderr}");
        assert!(
            stderr.contains(args[1]) && stderr.contains("longer than the ceiling of 1day"),
            "{args:?}: {stderr}"
        );
    }
    // The ceiling itself is accepted.
    let config = lab.config("");
    let (code, stdout, stderr) =
        output(
            lab.handoff_command(Some(&config))
                .args(["check", "--kill-timeout", "24h"]),
        );
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn a_named_config_must_exist_but_the_default_may_not() {
    let lab = Lab::new();
    let missing = lab.path("missing.toml");
    let (code, _, stderr) = output(
        lab.handoff_command(Some(&missing))
            .args(["run", "--", "true"]),
    );
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("missing.toml: cannot read config"),
        "{stderr}"
    );
    let (code, _, stderr) = output(
        lab.handoff_command(None)
            .env("HANDOFF_CONFIG", &missing)
            .arg("check"),
    );
    assert_eq!(
        code, 78,
        "$HANDOFF_CONFIG names a file explicitly: {stderr}"
    );

    // The proxy command may come from the config instead of `--`.
    let config = lab.config("[proxy]\ncommand = [\"{fixture}\", \"proxy\", \"--log\", \"{log}\", \"--exit-after\", \"1ms\", \"--code\", \"9\"]\n");
    let (code, _, stderr) = output(lab.handoff_command(Some(&config)).arg("run"));
    assert_eq!(code, 9, "{stderr}");
}

#[test]
fn usage_errors_exit_64() {
    let lab = Lab::new();
    let (code, _, stderr) = output(lab.handoff_command(None).arg("run"));
    assert_eq!(code, 64, "no proxy command: {stderr}");
    assert!(stderr.contains("no proxy command"), "{stderr}");
    let (code, _, _) = output(lab.handoff_command(None).arg("--bogus"));
    assert_eq!(code, 64);
    let (code, _, _) = output(lab.handoff_command(None).args(["run", "traefik"]));
    assert_eq!(code, 64, "the proxy comes after --");
}

#[test]
fn version_and_help() {
    let lab = Lab::new();
    let (code, stdout, _) = output(lab.handoff_command(None).arg("--version"));
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("handoff {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, stdout, _) = output(lab.handoff_command(None).arg("--help"));
    assert_eq!(code, 0);
    for word in ["run", "check", "demote", "promote", "status", "--config"] {
        assert!(stdout.contains(word), "--help lacks {word}: {stdout}");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let lab = Lab::new();
    let config = lab.config("[log]\nformat = \"json\"\n");
    let (code, _, stderr) = output(
        lab.handoff_command(Some(&config))
            .args(["run", "--", FIXTURE, "proxy", "--log"])
            .arg(&lab.log)
            .args(["--exit-after", "1ms", "--code", "5"]),
    );
    assert_eq!(code, 5, "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() > 3, "{stderr}");
    for line in lines {
        assert!(
            line.starts_with('{') && line.ends_with('}') && line.contains("\"level\""),
            "not JSON: {line}"
        );
    }
}

/// Issue 14 item 4: `check` verifies the host too, and exits 69 naming
/// each thing the backend would miss: its tools, the track file's directory
/// and whether root can write there safely.
#[test]
fn check_exits_69_naming_each_thing_the_host_lacks() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new();
    let keepalived = |track_dir: &str| {
        lab.config(&format!(
            "[failover]\nbackend = \"keepalived\"\n[failover.keepalived]\nvip = [\"192.0.2.10\"]\ntrack_file = \"{track_dir}/handoff.track\"\n"
        ))
    };
    let check = |config: &std::path::Path, path: Option<&std::path::Path>| {
        let mut cmd = lab.handoff_command(Some(config));
        cmd.arg("check");
        if let Some(path) = path {
            cmd.env("PATH", path);
        }
        output(&mut cmd)
    };

    // No keepalived on PATH, and no directory for the track file.
    let empty = lab.path("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let config = keepalived("{dir}/missing");
    let (code, stdout, stderr) = check(&config, Some(&empty));
    assert_eq!(code, 69, "{stdout}{stderr}");
    assert!(!stdout.contains("configuration OK"), "{stdout}");
    let missing = lab.path("missing");
    for want in [
        "`keepalived` is not an executable file on PATH".to_owned(),
        format!("{} does not exist", missing.display()),
    ] {
        assert!(stderr.contains(&want), "{want:?} not in {stderr}");
    }

    // A track file's directory others may write to is refused; one with
    // the sticky bit, or only ours, is fine.
    if common::have("keepalived") {
        let shared = lab.path("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o775)).unwrap();
        let config = keepalived("{dir}/shared");
        let (code, stdout, stderr) = check(&config, None);
        assert_eq!(code, 69, "{stdout}{stderr}");
        assert!(
            stderr.contains(&format!(
                "refusing the track_file's directory {}: it is writable by its group",
                shared.display()
            )),
            "{stderr}"
        );
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let (code, stdout, stderr) = check(&config, None);
        assert_eq!(code, 0, "sticky: {stdout}{stderr}");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        if nix::unistd::Uid::effective().is_root() {
            nix::unistd::chown(&shared, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            let (code, _, stderr) = check(&config, None);
            assert_eq!(code, 69, "{stderr}");
            assert!(stderr.contains("is owned by uid 65534"), "{stderr}");
        }
    }

    // The command backend's three programs.
    let plain = lab.path("plain");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = lab.config(&format!(
        "[failover]\nbackend = \"command\"\n[failover.command]\n\
         demote = [\"{{dir}}/no-such-demote\"]\npromote = [\"{}\"]\n\
         state = [\"{{fixture}}\", \"record\", \"--log\", \"{{log}}\", \"state\"]\n",
        plain.display()
    ));
    let (code, stdout, stderr) = check(&config, None);
    assert_eq!(code, 69, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "`{}` is not an executable file",
            lab.path("no-such-demote").display()
        )) && stderr.contains(&format!("`{}` is not an executable file", plain.display())),
        "{stderr}"
    );
    assert!(
        !stderr.contains(common::FIXTURE),
        "the state command is there: {stderr}"
    );
}

#[test]
fn check_says_carp_cannot_be_checked_off_openbsd() {
    let lab = Lab::new();
    let config = lab.config(
        "[failover]\nbackend = \"carp\"\n[failover.carp]\ninterfaces = [\"carp7\"]\nifconfig = \"/nonexistent/ifconfig\"\n",
    );
    let (code, stdout, stderr) = output(lab.handoff_command(Some(&config)).arg("check"));
    // The OpenBSD platform module checks CARP, here too when it is built on
    // Linux (`--cfg handoff_portable`, scripts/test).
    if cfg!(any(target_os = "openbsd", handoff_portable)) {
        assert_eq!(code, 69, "{stdout}{stderr}");
        assert!(stderr.contains("/nonexistent/ifconfig"), "{stderr}");
    } else {
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(
            stdout.contains("CARP is OpenBSD's") && stdout.contains("not checked on this host"),
            "{stdout}"
        );
    }
}
