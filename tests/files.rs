//! The files handoff writes as root (issue 14, item 1), against the real
//! binary: a symlink planted at any name it writes (the temp files under
//! their old, predictable names, the locks, the write probe, the socket, the
//! track file) is never followed; a state dir, socket dir or track-file
//! directory that others could change is refused at start, before the
//! backend is touched; the socket gets a directory of its own.
//!
//! The tests run as root (as `scripts/test` does), so "planted" here means
//! created by the test: what counts is that handoff never writes through it.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt, symlink},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::{Lab, SOON, output};
use nix::sys::signal::Signal::SIGTERM;

/// What the planted links point at; it must never change.
const PRECIOUS: &str = "precious: handoff must never write here\n";

/// Pids planted for: the agent's pid is the next one the kernel hands out,
/// give or take what other processes on the machine start meanwhile.
const PID_WINDOW: i32 = 4000;

fn precious(lab: &Lab) -> PathBuf {
    let target = lab.path("precious");
    fs::write(&target, PRECIOUS).unwrap();
    target
}

fn assert_untouched(target: &Path) {
    assert_eq!(
        fs::read_to_string(target).unwrap(),
        PRECIOUS,
        "handoff wrote through a planted symlink"
    );
}

fn private_dir(path: &Path) {
    fs::DirBuilder::new().mode(0o700).create(path).unwrap();
}

/// The pids the kernel hands out next: after /proc/sys/kernel/ns_last_pid,
/// wrapping at pid_max to 300 (the kernel's RESERVED_PIDS).
fn next_pids() -> Vec<i32> {
    let read = |file: &str| -> i32 { fs::read_to_string(file).unwrap().trim().parse().unwrap() };
    let last = read("/proc/sys/kernel/ns_last_pid");
    let max = read("/proc/sys/kernel/pid_max");
    (1..=PID_WINDOW)
        .map(|i| {
            let pid = last + i;
            if pid < max { pid } else { pid - max + 300 }
        })
        .collect()
}

/// The keepalived backend with its track file in `dir`, the control socket
/// in `{dir}/run`, the state dir `{dir}/handoff-state`.
fn keepalived_config(lab: &Lab, track: &Path) -> PathBuf {
    lab.config(&format!(
        "[failover]\nbackend = \"keepalived\"\n[failover.keepalived]\ntrack_file = \"{}\"\nvip = [\"192.0.2.223\"]\n\
         [control]\nsocket = \"{{dir}}/run/handoff.sock\"\nstate_dir = \"{{dir}}/handoff-state\"\n",
        track.display()
    ))
}

fn wait_track(track: &Path, want: &str) {
    let deadline = Instant::now() + SOON;
    loop {
        let value = fs::read_to_string(track).ok();
        if value.as_deref().map(str::trim) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "track file {value:?}, never {want}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn symlinks_planted_at_the_names_a_running_agent_writes_are_never_followed() {
    let lab = Lab::new();
    let target = precious(&lab);
    let (state, run, keepalived) = (
        lab.path("handoff-state"),
        lab.path("run"),
        lab.path("keepalived"),
    );
    for dir in [&state, &run, &keepalived] {
        private_dir(dir);
    }
    let track = keepalived.join("handoff.track");
    let config = keepalived_config(&lab, &track);
    // The track file itself (replaced by rename, never written through)...
    symlink(&target, &track).unwrap();
    // ...and every temp name as handoff used to make it, `.NAME.PID.tmp`,
    // for the pids the agent may get.
    let pids = next_pids();
    for &pid in &pids {
        for (dir, name) in [
            (&state, "write-probe"),
            (&state, "maintenance"),
            (&keepalived, "handoff.track"),
            (&run, "handoff.sock"),
        ] {
            symlink(&target, dir.join(format!(".{name}.{pid}.tmp"))).unwrap();
        }
    }
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    assert!(
        pids.contains(&h.pid().as_raw()),
        "the agent's pid {} is not among the {PID_WINDOW} planted after {}: too many processes started meanwhile",
        h.pid(),
        pids[0] - 1
    );
    wait_track(&track, "0");
    // A maintenance record written by the agent, then removed.
    for (args, level) in [
        (&["demote", "--no-wait"][..], "-100"),
        (&["promote"][..], "0"),
    ] {
        let (code, _, err) = output(lab.handoff_command(Some(&config)).args(args));
        assert_eq!(code, 0, "{args:?}: {err}");
        wait_track(&track, level);
    }
    lab.wait_for("start");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert_untouched(&target);
    assert!(
        fs::symlink_metadata(&track).unwrap().is_file(),
        "the track file is a file of its own"
    );
}

/// Starts an agent with the command backend (its `demote` logs an event)
/// and `control` as its `[control]` section; it must fail with exit 1 and
/// `want` in its stderr, before the backend was touched.
fn refused_before_the_backend(lab: &Lab, control: &str, want: &[&str]) {
    let config = lab.config(&format!("{}{control}", lab.command_backend("MASTER", "")));
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    let code = h.code(SOON);
    let log = h.log();
    assert_eq!(code, 1, "{log}");
    for want in want {
        assert!(log.contains(want), "{want:?} not in:\n{log}");
    }
    assert_eq!(
        lab.count("demote"),
        0,
        "the backend was touched: {:?}",
        lab.whats()
    );
    assert_eq!(lab.count("start"), 0, "a proxy was started");
}

#[test]
fn a_symlink_at_a_lock_or_at_the_socket_is_refused_and_never_followed() {
    let control =
        "[control]\nsocket = \"{dir}/run/handoff.sock\"\nstate_dir = \"{dir}/handoff-state\"\n";
    for (name, why) in [
        ("handoff-state/lock", "symbolic link"),
        ("run/handoff.sock.lock", "symbolic link"),
        ("run/handoff.sock", "not a socket"),
    ] {
        let lab = Lab::new();
        let target = precious(&lab);
        private_dir(&lab.path("handoff-state"));
        private_dir(&lab.path("run"));
        let planted = lab.path(name);
        symlink(&target, &planted).unwrap();
        refused_before_the_backend(&lab, control, &[&planted.display().to_string(), why]);
        assert_untouched(&target);
    }
}

#[test]
fn a_group_writable_state_dir_is_refused_at_start_with_the_reason() {
    let lab = Lab::new();
    let state = lab.path("handoff-state");
    private_dir(&state);
    fs::set_permissions(&state, fs::Permissions::from_mode(0o770)).unwrap();
    refused_before_the_backend(
        &lab,
        "[control]\nsocket = \"{dir}/run/handoff.sock\"\nstate_dir = \"{dir}/handoff-state\"\n",
        &[&state.display().to_string(), "writable by its group"],
    );
    assert!(
        fs::read_dir(&state).unwrap().next().is_none(),
        "nothing written in it"
    );
}

#[test]
fn a_socket_dir_or_track_file_dir_others_could_change_is_refused_at_start() {
    // The socket's directory, writable by others.
    let lab = Lab::new();
    let run = lab.path("run");
    private_dir(&run);
    fs::set_permissions(&run, fs::Permissions::from_mode(0o703)).unwrap();
    refused_before_the_backend(
        &lab,
        "[control]\nsocket = \"{dir}/run/handoff.sock\"\nstate_dir = \"{dir}/handoff-state\"\n",
        &[&run.display().to_string(), "writable by others"],
    );
    // The track file's directory, owned by another user.
    let lab = Lab::new();
    let keepalived = lab.path("keepalived");
    private_dir(&keepalived);
    nix::unistd::chown(&keepalived, Some(65534.into()), None).unwrap();
    let track = keepalived.join("handoff.track");
    let mut h = lab.run(Some(&keepalived_config(&lab, &track)), &lab.proxy(&[]));
    let code = h.code(SOON);
    let log = h.log();
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains(&keepalived.display().to_string()) && log.contains("owned by uid 65534"),
        "{log}"
    );
    assert!(!track.exists(), "the track file was written");
    assert_eq!(lab.count("start"), 0, "a proxy was started");
}

#[test]
fn the_socket_gets_a_directory_of_its_own() {
    let group = nix::unistd::Group::from_gid(65534.into()).unwrap();
    let cases = [
        // Created by handoff; then an empty one that was too open.
        ("", None, 0o700),
        ("", Some(0o755), 0o700),
        // With [control] group: group members may reach the socket.
        ("group", None, 0o750),
    ];
    for (with_group, existing, want) in cases {
        let lab = Lab::new();
        let run = lab.path("run");
        if let Some(mode) = existing {
            private_dir(&run);
            fs::set_permissions(&run, fs::Permissions::from_mode(mode)).unwrap();
        }
        let group_line = match (&group, with_group) {
            (Some(g), "group") => format!("group = \"{}\"\n", g.name),
            (None, "group") => return common::skip("no group 65534"),
            _ => String::new(),
        };
        let config = lab.config(&format!(
            "[control]\nsocket = \"{{dir}}/run/handoff.sock\"\nstate_dir = \"{{dir}}/handoff-state\"\n{group_line}"
        ));
        let mut h = lab.run(Some(&config), &lab.proxy(&[]));
        h.wait_log("http listening");
        let meta = fs::metadata(&run).unwrap();
        assert_eq!(meta.mode() & 0o7777, want, "{with_group} {existing:?}");
        let socket = fs::metadata(run.join("handoff.sock")).unwrap();
        if with_group.is_empty() {
            assert_eq!(socket.mode() & 0o777, 0o600);
        } else {
            assert_eq!(meta.gid(), 65534);
            assert_eq!(socket.mode() & 0o777, 0o660);
        }
        let (code, _, err) = output(lab.handoff_command(Some(&config)).arg("status"));
        assert_eq!(code, 0, "{err}");
        // The proxy handles SIGTERM only once it logged "start": earlier,
        // the default action kills it and the agent exits 143.
        lab.wait_for("start");
        h.signal(SIGTERM);
        assert_eq!(h.code(SOON), 0, "{}", h.log());
    }
}

#[test]
fn a_socket_right_in_run_still_works_with_a_deprecation_warning() {
    let lab = Lab::new();
    let config = lab.config("[control]\nsocket = \"/var/run/handoff.sock\"\n");
    let (code, _, err) = output(lab.handoff_command(Some(&config)).arg("check"));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: [control] socket /var/run/handoff.sock")
            && err.contains("deprecated")
            && err.contains("/run/handoff/handoff.sock"),
        "{err}"
    );
    // The default (no config file) has no warning.
    let (code, _, err) = output(lab.handoff_command(None).arg("check"));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("deprecated"), "{err}");
    // An agent on such a path (a name of this test's own in /run) runs,
    // warns, and leaves the shared directory's mode alone.
    let socket = PathBuf::from(format!("/run/handoff-test-{}.sock", std::process::id()));
    let lock = PathBuf::from(format!("{}.lock", socket.display()));
    let run_mode = fs::metadata("/run").unwrap().mode();
    let config = lab.config_named(
        "run.toml",
        &format!(
            "[control]\nsocket = \"{}\"\nstate_dir = \"{{dir}}/handoff-state\"\n",
            socket.display()
        ),
    );
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    h.wait_log("http listening");
    h.assert_logged("deprecated");
    let (code, _, err) = output(lab.handoff_command(Some(&config)).arg("status"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::metadata(&socket).unwrap().mode() & 0o777, 0o600);
    lab.wait_for("start");
    h.signal(SIGTERM);
    let code = h.code(SOON);
    let _ = fs::remove_file(&lock);
    assert_eq!(code, 0, "{}", h.log());
    assert!(!socket.exists(), "the socket is removed at exit");
    assert_eq!(fs::metadata("/run").unwrap().mode(), run_mode);
}
