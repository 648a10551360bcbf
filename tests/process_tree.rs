//! What the proxy starts with and what it leaves behind (Linux): a clean
//! environment, an empty signal mask, default dispositions, its own or
//! handoff's process group, no orphan or zombie, and no proxy outliving
//! handoff.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::time::Duration;

use common::{FIXTURE, HANDOFF, Handoff, Lab, SOON};
use nix::sys::signal::Signal::{SIGKILL, SIGTERM};

/// SIGPIPE's bit in /proc masks: the fixture's own Rust runtime ignores it
/// before `main`, so it says nothing about what handoff handed down.
const PIPE_BIT: u64 = 1 << (13 - 1);
/// glibc's own signals 32 and 33 (SIGCANCEL, SIGSETXID): its sigaction
/// refuses to change them, and every glibc program manages them itself. The
/// test runner here starts with 32 ignored.
const GLIBC_BITS: u64 = (1 << 31) | (1 << 32);

fn field(start: &str, name: &str) -> String {
    start
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {start}"))
        .to_string()
}

#[test]
fn the_proxy_starts_clean() {
    let lab = Lab::new();
    // handoff itself runs with the systemd variables set and SIGHUP/SIGUSR2
    // ignored (nohup, a shell's `&`), and SIGALRM blocked.
    let mut launch = std::process::Command::new(FIXTURE);
    launch
        .args([
            "launch", "--ignore", "HUP", "--ignore", "USR2", "--ignore", "ALRM", "--block", "ALRM",
        ])
        .args(["--ignore-rt", "40", "--"])
        .args([HANDOFF, "run", "--"])
        .args(lab.proxy(&[]))
        // The lab's own socket and state dir: the defaults are the host's.
        .env("HANDOFF_CONFIG", lab.base_config())
        .env("NOTIFY_SOCKET", "/run/systemd/notify")
        .env("WATCHDOG_PID", "1")
        .env("WATCHDOG_USEC", "30000000");
    let mut h = Handoff::spawn(launch, lab.path("handoff.stderr"));
    let start = lab.wait_for("start").what;
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert_eq!(field(&start, "notify_socket"), "unset", "{start}");
    assert_eq!(field(&start, "watchdog_pid"), "unset", "{start}");
    assert_eq!(field(&start, "watchdog_usec"), "unset", "{start}");
    assert_eq!(
        field(&start, "sigblk"),
        "0000000000000000",
        "signal mask not empty: {start}"
    );
    let ignored = u64::from_str_radix(&field(&start, "sigign"), 16).unwrap();
    assert_eq!(
        ignored & !(PIPE_BIT | GLIBC_BITS),
        0,
        "inherited ignored signals: {start}"
    );
    assert_eq!(field(&start, "ppid"), h.pid().to_string());
}

fn pgid(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn process_group_inherit_and_own() {
    for (mode, own) in [("inherit", false), ("own", true)] {
        let lab = Lab::new();
        let config = lab.config(&format!("[proxy]\nprocess_group = \"{mode}\"\n"));
        let mut h = lab.run(Some(&config), &lab.proxy(&[]));
        let pid = common::proxy_pid(&lab);
        if own {
            assert_eq!(pgid(pid), pid, "own group");
        } else {
            assert_eq!(pgid(pid), pgid(h.pid().as_raw()), "handoff's group");
        }
        h.signal(SIGTERM);
        assert_eq!(h.code(SOON), 0, "{mode}: {}", h.log());
    }
}

#[test]
fn f03_a_forked_grandchild_is_gone_when_handoff_exits() {
    let lab = Lab::new();
    let mut h = lab.run(
        None,
        &lab.proxy(&["--grandchild", "1h", "--exit-after", "300ms", "--code", "0"]),
    );
    let grandchild: i32 = lab.logged_pid("grandchild");
    assert!(common::alive(grandchild));
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    // handoff killed and reaped it before exiting: no process, no zombie.
    assert!(
        !common::exists(grandchild),
        "grandchild {grandchild} outlived handoff"
    );
    h.assert_logged("killing leftover process of the proxy");
}

#[test]
fn f03_a_daemonized_grandchild_in_its_own_group_is_gone_too() {
    let lab = Lab::new();
    let config = lab.config("[proxy]\nprocess_group = \"own\"\n");
    let mut h = lab.run(Some(&config), &lab.proxy(&["--grandchild", "1h"]));
    let grandchild: i32 = lab.logged_pid("grandchild");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert!(
        !common::exists(grandchild),
        "grandchild {grandchild} outlived handoff"
    );
}

#[test]
fn f03_orphans_are_reaped_while_running_so_no_zombie_is_left() {
    let lab = Lab::new();
    let mut h = lab.run(None, &lab.proxy(&["--orphan", "200ms"]));
    let orphan: i32 = lab.logged_pid("orphan");
    lab.wait_for("sleeper-exit");
    // Re-parented to handoff (the subreaper) and collected: no zombie left.
    assert!(
        common::wait_gone(orphan, SOON),
        "orphan {orphan} left as a zombie"
    );
    assert!(
        common::alive(common::proxy_pid(&lab)),
        "the proxy's status was not stolen"
    );
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert_eq!(lab.count("exit"), 1, "{:#?}", lab.whats());
}

#[test]
fn the_proxy_dies_with_a_killed_handoff() {
    let lab = Lab::new();
    let mut h = lab.run(None, &lab.proxy(&[]));
    let pid = common::proxy_pid(&lab);
    h.signal(SIGKILL);
    h.wait(SOON);
    // PR_SET_PDEATHSIG: the kernel SIGKILLs the proxy when handoff dies.
    assert!(
        common::wait_gone(pid, Duration::from_secs(5)) || !common::alive(pid),
        "proxy {pid} outlived handoff"
    );
}

#[test]
fn leftovers_of_a_crashed_proxy_are_gone_before_its_restart() {
    let lab = Lab::new();
    let config = lab.config("[proxy]\nrestart = \"on-failure\"\n");
    let mut h = lab.run(
        Some(&config),
        &lab.proxy(&["--grandchild", "1h", "--exit-after", "100ms", "--code", "1"]),
    );
    let first: i32 = lab.logged_pid("grandchild");
    // The restart comes after the 1 s backoff; by then the first proxy's
    // grandchild (which would still hold the proxy's ports) must be gone.
    lab.wait_for_count("start", 2);
    assert!(
        !common::exists(first),
        "grandchild {first} of the crashed proxy survived into the restart"
    );
    h.signal(SIGTERM);
    let code = h.code(SOON);
    assert!(code == 0 || code == 1, "{code}: {}", h.log());
}
