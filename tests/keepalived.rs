//! The keepalived backend against real keepalived (Debian's 2.2.x): two nodes
//! in network namespaces joined by a bridge in a third, with addresses only
//! inside those namespaces (192.0.2.0/24, the documentation range).
//!
//! Needs root, `ip` and `keepalived`. Under CI they must be there;
//! elsewhere the tests skip through `common::skip`, which scripts/test
//! counts. Every namespace, link and process a test creates is removed in
//! `Drop`, even when the test fails.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use common::netns::{Cluster, DEFAULT_TIMING, FAST_TIMING, Timing, lab_available, watch_vip};

use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    time::{Duration, Instant},
};

use common::{Handoff, Lab, SOON, consul::Consul, hook_log, output};
use nix::sys::signal::Signal::{SIGINT, SIGKILL, SIGTERM};

/// Starts a healthy handoff on a, and waits until a (promoted) holds the VIP.
fn healthy_master(lab: &Lab, cluster: &Cluster, extra: &str, handover: &str) -> Handoff {
    let config = cluster.config(lab, "a", extra);
    let text = std::fs::read_to_string(&config).unwrap() + &format!("handover = \"{handover}\"\n");
    std::fs::write(&config, text).unwrap();
    let h = cluster.handoff(lab, "a", &config, &lab.proxy(&[]));
    lab.wait_for("start");
    // Down at start (FAULT); up once healthy; a (250) then wins over b (240).
    cluster.wait_for_vip("a", Duration::from_secs(15));
    h
}

fn planned_stop(handover: &str, timing: Timing, bound: Duration) {
    if !lab_available() {
        return;
    }
    let lab = Lab::new();
    let cluster = Cluster::with_timing(&lab, [-254, 0], "", timing);
    // Fast handover: the peer takes over after its skew time; settle covers it.
    let settle = if handover == "fast" {
        "settle = \"1s\""
    } else {
        ""
    };
    let mut h = healthy_master(&lab, &cluster, settle, handover);
    let sent = Instant::now();
    let sent_ns = common::now_ns();
    h.signal(SIGINT);
    let mut exited = None;
    let gap = watch_vip(
        &lab,
        &cluster,
        || {
            exited = exited.or_else(|| h.child.try_wait().unwrap());
            exited.is_some()
        },
        SOON,
    );
    let code = h.code(SOON);
    assert_eq!(code, 0, "{}", h.log());
    let whats = lab.whats();
    // keepalived: b takes the VIP before a drops it (a bows out on b's
    // higher advert), and handoff stops the proxy only once a dropped it. So
    // at the stop b holds it: the sampler saw b (or both) last before the
    // stop, or its first look begun after the stop finds b alone.
    let events = lab.events();
    let stop = events
        .iter()
        .find(|e| e.what == "signal SIGTERM")
        .unwrap()
        .ns;
    let vip = |e: &&common::Event| e.what.starts_with("vip ");
    let before = events
        .iter()
        .filter(vip)
        .rfind(|e| e.ns < stop)
        .map(|e| e.what.as_str());
    let after = events
        .iter()
        .filter(vip)
        .find(|e| e.ns >= stop)
        .map(|e| e.what.as_str());
    assert!(
        matches!(before, Some("vip b" | "vip both")) || after == Some("vip b"),
        "the proxy got its stop signal before the VIP was on b: {whats:#?}"
    );
    assert!(
        cluster.holds_vip("b") && !cluster.holds_vip("a"),
        "down is held after exit"
    );
    // The bound is on the move itself: SIGINT until b holds the VIP.
    let on_b = events
        .iter()
        .find(|e| e.ns > sent_ns && (e.what == "vip b" || e.what == "vip both"))
        .unwrap_or_else(|| panic!("b never held the VIP: {whats:#?}"));
    let moved = Duration::from_nanos(u64::try_from(on_b.ns - sent_ns).unwrap());
    assert!(
        moved < bound,
        "{handover}: the VIP reached b {moved:?} after SIGINT (bound {bound:?})"
    );
    println!(
        "{handover}: SIGINT to VIP on b {moved:?}, to exit {:?}; holders {:?}",
        sent.elapsed(),
        whats
            .iter()
            .filter(|w| w.starts_with("vip"))
            .collect::<Vec<_>>()
    );
    if handover == "graceful" {
        assert!(
            !gap,
            "a sample found nobody holding the VIP during a graceful handover: {whats:#?}"
        );
    }
    assert!(
        sent.elapsed() < bound,
        "{handover} stop took {:?}",
        sent.elapsed()
    );
}

#[test]
fn graceful_planned_stop_keeps_the_vip_held() {
    planned_stop("graceful", DEFAULT_TIMING, Duration::from_secs(6));
}

#[test]
fn fast_planned_stop() {
    planned_stop("fast", DEFAULT_TIMING, Duration::from_secs(2));
}

/// Issue 17, item 2: with config/keepalived-fast.conf's timing (VRRPv3,
/// advert_int 0.1) a graceful move takes b's Master_Down_Interval, about
/// 0.3 s (docs/benchmarks.md); the bound is generous, but below the 2.6 s
/// that advert_int 1 takes, so it fails if the timing is not in effect.
#[test]
fn graceful_planned_stop_with_the_fast_profile_timing() {
    planned_stop("graceful", FAST_TIMING, Duration::from_secs(2));
}

#[test]
fn kill_9_of_the_proxy_moves_the_vip() {
    kill_9_of_the_proxy(DEFAULT_TIMING, Duration::from_secs(5));
}

/// Issue 17, item 2: a crash costs handoff's reaction and b's skew time at
/// advert_int 0.1, about 0.07 s here (docs/benchmarks.md); generously
/// bounded.
#[test]
fn kill_9_of_the_proxy_with_the_fast_profile_timing() {
    kill_9_of_the_proxy(FAST_TIMING, Duration::from_secs(1));
}

fn kill_9_of_the_proxy(timing: Timing, bound: Duration) {
    if !lab_available() {
        return;
    }
    let lab = Lab::new();
    let cluster = Cluster::with_timing(&lab, [-254, 0], "", timing);
    let mut h = healthy_master(&lab, &cluster, "", "graceful");
    let proxy = common::proxy_pid(&lab);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(proxy), SIGKILL).unwrap();
    let took = cluster.wait_for_vip("b", bound);
    println!("kill -9 of the proxy: VIP on b after {took:?}");
    assert_eq!(h.code(SOON), 137, "{}", h.log());
    assert!(
        !cluster.holds_vip("a"),
        "the node without a proxy must not hold the VIP"
    );
}

#[test]
fn a_node_with_an_unhealthy_proxy_never_takes_the_vip() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new();
    // a (250) would win, but its proxy never passes its health check.
    let cluster = Cluster::new(&lab, [-254, 0], "");
    cluster.wait_for_vip("b", Duration::from_secs(15));
    let config = cluster.config(
        &lab,
        "a",
        "[proxy.health]\nexec = [\"false\"]\ninterval = \"50ms\"\ntimeout = \"40ms\"\n",
    );
    let mut h = cluster.handoff(&lab, "a", &config, &lab.proxy(&[]));
    lab.wait_for("start");
    // Three advert intervals and more: long enough for a to have won, had it tried.
    let _ = watch_vip(&lab, &cluster, || false, Duration::from_secs(4));
    assert!(
        !lab.whats().iter().any(|w| w == "vip a" || w == "vip both"),
        "{:#?}",
        lab.whats()
    );
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
}

#[test]
fn graceful_handover_falls_back_to_fault_with_a_nopreempt_peer() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new();
    // A nopreempt peer never takes over on a priority drop: only FAULT moves it.
    let cluster = Cluster::new(&lab, [-254, 0], "nopreempt");
    let config = cluster.config(&lab, "a", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("failover_timeout = \"8s\"", "failover_timeout = \"4s\"");
    std::fs::write(&config, text).unwrap();
    // a (250, preempting) wins once healthy; b's nopreempt only stops b
    // from taking it back by priority.
    let mut h = cluster.handoff(&lab, "a", &config, &lab.proxy(&[]));
    lab.wait_for("start");
    cluster.wait_for_vip("a", Duration::from_secs(15));
    let sent = Instant::now();
    h.signal(SIGINT);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    let took = sent.elapsed();
    println!("nopreempt peer: graceful fell back to FAULT; stop took {took:?}");
    h.assert_logged("decision=GracefulFallback");
    assert!(
        took >= Duration::from_secs(4),
        "the standby wait ended before failover_timeout: {took:?}"
    );
    cluster.wait_for_vip("b", Duration::from_secs(5));
    assert!(!cluster.holds_vip("a"));
}

#[test]
fn notify_fifo_lines_are_read_as_hints() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new();
    let cluster = Cluster::with_options(&lab, [-254, 0], "", DEFAULT_TIMING, true, false);
    let fifo = cluster.notify_fifo_path("a");
    let extra = format!(
        "[failover.keepalived]\nnotify_fifo = \"{}\"\ninstance = \"VI_1\"",
        fifo.display()
    );
    let config = cluster.config(&lab, "a", "");
    // One [failover.keepalived] section: put the two keys into it.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[failover.keepalived]\n", &format!("{extra}\n"));
    std::fs::write(&config, text).unwrap();
    let mut h = cluster.handoff(&lab, "a", &config, &lab.proxy(&[]));
    lab.wait_for("start");
    cluster.wait_for_vip("a", Duration::from_secs(15));
    h.wait_log("keepalived notify_fifo instance=\"VI_1\" state=\"MASTER\"");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
}

#[test]
fn a_standby_node_still_takes_the_vip_when_the_master_dies() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new();
    let mut cluster = Cluster::new(&lab, [-254, -254], "");
    // b is in maintenance: its healthy proxy holds it at standby (-100),
    // still a candidate, unlike down (FAULT).
    let state_b = cluster.dir.join("state-b");
    std::fs::create_dir_all(&state_b).unwrap();
    std::fs::write(
        state_b.join("maintenance.toml"),
        "reason = \"disk swap\"\nuid = 0\nsince = 0\n",
    )
    .unwrap();
    let config_b = cluster.config(&lab, "b", "");
    let mut hb = cluster.handoff(&lab, "b", &config_b, &lab.proxy(&[]));
    let mut ha = healthy_master(&lab, &cluster, "", "graceful");
    let deadline = Instant::now() + SOON;
    while std::fs::read_to_string(cluster.track_file("b"))
        .unwrap()
        .trim()
        != "-100"
    {
        assert!(
            Instant::now() < deadline,
            "b never went to standby: {}",
            hb.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    hb.assert_logged("in maintenance");
    assert!(cluster.holds_vip("a") && !cluster.holds_vip("b"));
    cluster.kill_keepalived("a");
    let took = cluster.wait_for_vip("b", Duration::from_secs(10));
    println!("standby node b took the VIP {took:?} after a's keepalived was killed");
    for h in [&mut ha, &mut hb] {
        h.signal(SIGTERM);
        assert_eq!(h.code(SOON), 0, "{}", h.log());
    }
}

#[test]
fn demote_returns_once_the_peer_holds_the_vip_and_promote_takes_it_back() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new();
    let cluster = Cluster::new(&lab, [-254, 0], "");
    let mut h = healthy_master(&lab, &cluster, "", "graceful");
    let config = lab.path("handoff-a.toml");
    // The CLI reaches the agent over its Unix socket from outside the netns.
    let out = lab
        .handoff_command(Some(&config))
        .args(["demote", "--reason", "kernel update"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{:?}", out.stderr);
    assert!(text.contains("no longer holds"), "{text}");
    assert!(
        !cluster.holds_vip("a"),
        "demote returned while a held the VIP"
    );
    assert!(cluster.holds_vip("b"), "nobody holds the VIP");
    let track = std::fs::read_to_string(cluster.track_file("a")).unwrap();
    assert_eq!(track.trim(), "-100", "standby, still a candidate");

    let out = lab
        .handoff_command(Some(&config))
        .arg("promote")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    cluster.wait_for_vip("a", Duration::from_secs(15));
    assert_eq!(
        std::fs::read_to_string(cluster.track_file("a"))
            .unwrap()
            .trim(),
        "0"
    );
    h.signal(SIGINT);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
}

#[test]
fn consul_follows_keepalived_roles_over_a_unix_socket_and_confirms_the_peer() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new();
    // Consul on loopback for the test, and on a Unix socket for the agents:
    // a socket reaches into the nodes' network namespaces.
    let socket = lab.path("consul.sock");
    let hcl = format!(
        "addresses {{ http = \"127.0.0.1 unix://{}\" }}",
        socket.display()
    );
    let consul = Consul::start_with(&lab, Some(hcl), None);
    let section = |id: &str, confirm: bool| {
        format!(
            "[consul]\naddress = \"unix://{}\"\nservice_id = \"{id}\"\nttl = \"3s\"\nconfirm_peer = {confirm}\n",
            socket.display()
        )
    };
    let cluster = Cluster::new(&lab, [-254, -254], "");
    let mut a = healthy_master(&lab, &cluster, &section("edge-a", true), "graceful");
    let b_config = cluster.config(&lab, "b", &section("edge-b", false));
    let mut b = cluster.handoff(&lab, "b", &b_config, &lab.proxy(&[]));
    consul.wait_for_tag("edge-a", "master", SOON);
    consul.wait_for_tag("edge-b", "backup", SOON);
    let meta = consul.service("edge-a").unwrap()["Meta"].clone();
    assert_eq!(meta["vip"], common::netns::VIP);

    // demote with confirm_peer returns once Consul shows b as master.
    let config = lab.path("handoff-a.toml");
    let (code, _, err) = output(lab.handoff_command(Some(&config)).arg("demote"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        consul.tags("edge-b").unwrap(),
        ["master"],
        "demote returned before Consul knew"
    );
    assert!(cluster.holds_vip("b"));
    consul.wait_for_tag("edge-a", "maintenance", Duration::from_secs(1));

    let (code, _, err) = output(lab.handoff_command(Some(&config)).arg("promote"));
    assert_eq!(code, 0, "{err}");
    cluster.wait_for_vip("a", Duration::from_secs(15));
    consul.wait_for_tag("edge-a", "master", SOON);
    consul.wait_for_tag("edge-b", "backup", SOON);

    // A planned stop of a: the proxy is stopped only after Consul shows b.
    a.signal(SIGINT);
    assert_eq!(a.code(SOON), 0, "{}", a.log());
    let log = a.log();
    let confirmed = log
        .find("consul: the peer reports master peer=edge-b")
        .expect(&log);
    let stopped = log.find("stopping proxy").expect(&log);
    assert!(confirmed < stopped, "{log}");
    assert_eq!(consul.tags("edge-b").unwrap(), ["master"]);
    assert!(
        consul.service("edge-a").is_none(),
        "a clean exit deregisters"
    );
    b.signal(SIGTERM);
    assert_eq!(b.code(SOON), 0, "{}", b.log());
}

/// b's skew time: (256 - priority) / 256 of an advert interval, the wait a
/// backup adds after a priority-0 advert (RFC 3768 5.1).
const SKEW_B: Duration = Duration::from_micros(62_500);

/// How the agent on a dies, for the F17 table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Death {
    /// SIGKILL of the agent alone.
    Agent,
    /// SIGKILL of its whole process group (Nomad after kill_timeout).
    Group,
    /// SIGKILL of the sentinel and the agent (Nomad's cgroup kill on
    /// Linux, systemd's KillMode=mixed): only keepalived's tracking is left.
    AgentAndSentinel,
    /// A task panics (HANDOFF_TEST_PANIC): the process aborts.
    Panic,
}

/// F17: handoff dies while a is master and up; returns how long after the
/// death b held the VIP. With `tracking`, each node's keepalived follows its
/// own agent (vrrp_track_process, weight 0); without, only the sentinel
/// can take a down.
fn agent_death(death: Death, tracking: bool) -> Duration {
    let lab = Lab::new();
    let cluster = Cluster::with_options(&lab, [-254, -254], "", DEFAULT_TIMING, false, tracking);
    let b_config = cluster.config(&lab, "b", "");
    let mut b = cluster.handoff(&lab, "b", &b_config, &lab.proxy(&[]));
    let a_config = cluster.config(&lab, "a", "");
    let mut command = cluster.handoff_command("a", &a_config, &lab.proxy(&[]));
    command.process_group(0);
    if death == Death::Panic {
        // Long enough for a to win the VIP over b first.
        command.env("HANDOFF_TEST_PANIC", "4s");
    }
    let mut a = Handoff::spawn(command, lab.path("handoff-a.stderr"));
    cluster.wait_for_vip("a", Duration::from_secs(15));
    a.wait_log("sentinel started");
    let sentinel = a.sentinel_pid();
    let proxy_a = common::proxy_pid_of(&lab, a.pid().as_raw());
    let died_ns = match death {
        Death::Agent => {
            let at = common::now_ns();
            a.signal(SIGKILL);
            at
        }
        Death::Group => {
            let at = common::now_ns();
            nix::sys::signal::killpg(a.pid(), SIGKILL).unwrap();
            at
        }
        Death::AgentAndSentinel => {
            let at = common::now_ns();
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(sentinel), SIGKILL).unwrap();
            a.signal(SIGKILL);
            at
        }
        Death::Panic => {
            // It dies on its own 4 s after it became healthy.
            let _ = a.wait(SOON);
            common::now_ns()
        }
    };
    let _ = a.wait(SOON);
    let deadline = Instant::now() + SOON;
    while !cluster.holds_vip("b") {
        assert!(
            Instant::now() < deadline,
            "b never took the VIP ({death:?})"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = Duration::from_nanos(u64::try_from(common::now_ns() - died_ns).unwrap());
    assert!(!cluster.holds_vip("a"), "{death:?}: a still holds the VIP");
    assert!(
        common::wait_gone(proxy_a, SOON),
        "{death:?}: a's proxy outlived its agent"
    );
    assert!(
        common::wait_gone(sentinel, SOON),
        "{death:?}: the sentinel did not exit"
    );
    if death != Death::AgentAndSentinel {
        let log = a.log();
        assert!(
            log.contains("the node is down"),
            "{death:?}: the sentinel did not act:\n{log}"
        );
        assert_eq!(
            std::fs::read_to_string(cluster.track_file("a"))
                .unwrap()
                .trim(),
            "-254",
            "{death:?}"
        );
    }
    if death == Death::Panic {
        a.assert_logged("HANDOFF_TEST_PANIC");
    }
    println!("F17 {death:?}, tracking {tracking}: b held the VIP {took:?} after the death");
    b.signal(SIGTERM);
    assert_eq!(b.code(SOON), 0, "{}", b.log());
    took
}

#[test]
fn f17_the_agent_killed_while_master_hands_the_vip_over_by_sentinel_and_tracking() {
    if !lab_available() {
        return;
    }
    let bound = SKEW_B + Duration::from_millis(500);
    for (death, tracking) in [
        (Death::Agent, true),
        (Death::Group, true),
        (Death::Panic, true),
        // Each net alone.
        (Death::Agent, false),
        (Death::AgentAndSentinel, true),
    ] {
        let took = agent_death(death, tracking);
        assert!(
            took < bound,
            "{death:?}, tracking {tracking}: b held the VIP {took:?} after the death (bound {bound:?})"
        );
    }
}

#[test]
fn f17_a_node_whose_agent_never_ran_never_wins_the_vip() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new();
    // Track files at 0, as after a reboot with a stale file: only the
    // tracking keeps them out.
    let cluster = Cluster::with_options(&lab, [0, 0], "", DEFAULT_TIMING, false, true);
    let _ = watch_vip(&lab, &cluster, || false, Duration::from_secs(4));
    assert!(
        !lab.whats()
            .iter()
            .any(|w| w.starts_with("vip a") || w.starts_with("vip b") || w == "vip both"),
        "a node without a running agent took the VIP: {:#?}",
        lab.whats()
    );
    // `handoff status` (no agent) does not count as an agent.
    let config = cluster.config(&lab, "b", "");
    let _ = output(lab.handoff_command(Some(&config)).arg("status"));
    let b_config = cluster.config(&lab, "b", "");
    let mut b = cluster.handoff(&lab, "b", &b_config, &lab.proxy(&[]));
    cluster.wait_for_vip("b", Duration::from_secs(15));
    assert!(!cluster.holds_vip("a"));
    b.signal(SIGTERM);
    assert_eq!(b.code(SOON), 0, "{}", b.log());
}

#[test]
fn f23_a_stop_of_an_unhealthy_node_with_no_peer_never_raises_it() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new();
    // No peer: b's keepalived holds -254 too, so nobody holds the VIP, and a
    // graceful stop must not make a (unhealthy) a candidate by standby.
    let cluster = Cluster::new(&lab, [-254, -254], "");
    let config = cluster.config(
        &lab,
        "a",
        "[proxy.health]\nexec = [\"false\"]\ninterval = \"50ms\"\ntimeout = \"40ms\"\n",
    );
    let mut h = cluster.handoff(&lab, "a", &config, &lab.proxy(&[]));
    lab.wait_for("start");
    h.wait_log("down at start");
    h.signal(SIGTERM);
    let mut exited = None;
    let _ = watch_vip(
        &lab,
        &cluster,
        || {
            exited = exited.or_else(|| h.child.try_wait().unwrap());
            exited.is_some()
        },
        SOON,
    );
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    let log = h.log();
    assert!(
        !log.contains("level=standby"),
        "a stop raised the node:\n{log}"
    );
    assert!(!log.contains("level=up"), "{log}");
    assert!(
        !lab.whats().iter().any(|w| w == "vip a" || w == "vip both"),
        "{:#?}",
        lab.whats()
    );
    assert_eq!(
        std::fs::read_to_string(cluster.track_file("a"))
            .unwrap()
            .trim(),
        "-254"
    );
}

/// Issue 16's lab: nodes a and b, each with `on_master`, `on_backup`,
/// `on_fault` and `on_stop` hooks and one duty, all writing the shared event
/// log (`common::hook_log`), keepalived as config/keepalived.conf ships it
/// (notify_fifo, vrrp_track_process). a hands over gracefully; b stops fast
/// at the end, when its peer is gone (graceful would wait failover_timeout
/// for a peer to take over). Both restart a crashed proxy after 1 s.
struct HookLab {
    cluster: Cluster,
    lab: Lab,
    a: PathBuf,
    b: PathBuf,
}

impl HookLab {
    fn new() -> HookLab {
        let lab = Lab::new();
        let cluster = Cluster::with_options(&lab, [-254, -254], "", DEFAULT_TIMING, true, true);
        let script = hook_log::duty_script(&lab, 20);
        let config = |node: &str, handover: &str| {
            let extra = format!(
                "[proxy]\nrestart = \"on-failure\"\n{}{}",
                hook_log::hooks_toml(node, &["on_master", "on_backup", "on_fault", "on_stop"]),
                hook_log::duty_toml(node, &script)
            );
            let path = cluster.config(&lab, node, &extra);
            let text = std::fs::read_to_string(&path).unwrap().replace(
                "[failover.keepalived]\n",
                &format!(
                    "[failover.keepalived]\nhandover = \"{handover}\"\nnotify_fifo = \"{}\"\ninstance = \"VI_1\"\n",
                    cluster.notify_fifo_path(node).display()
                ),
            );
            std::fs::write(&path, text).unwrap();
            path
        };
        let (a, b) = (config("a", "graceful"), config("b", "fast"));
        HookLab { cluster, lab, a, b }
    }

    fn start(&self, node: &str) -> Handoff {
        let config = if node == "a" { &self.a } else { &self.b };
        self.cluster
            .handoff(&self.lab, node, config, &self.lab.proxy(&[]))
    }

    /// Waits for `prefix` after `since`.
    fn wait(&self, since: i128, prefix: &str) -> common::Event {
        hook_log::wait_after(&self.lab, since, prefix, Duration::from_secs(15))
    }

    /// Fails unless `node`'s hook lines between the marks are `expected`.
    fn assert_hooks(&self, node: &str, since: i128, until: i128, expected: &[&str]) {
        assert_eq!(
            hook_log::hooks_of(&self.lab, node, since, until),
            expected,
            "{node}'s hooks:\n{}",
            self.log()
        );
    }

    /// The hook lines of a start: the role known first, once, with reason
    /// `start`. A node that starts while its peer holds the VIP sees backup
    /// first (keepalived leaves FAULT for BACKUP, and a preempting node
    /// takes the VIP only after its master-down timer, about 3 advert
    /// intervals), so `on_master` follows as a role change when it wins.
    fn assert_start(&self, node: &str, since: i128, until: i128) {
        let hooks = hook_log::hooks_of(&self.lab, node, since, until);
        let won_later = [
            "on_backup backup unknown start",
            "on_master master backup role",
        ];
        assert!(
            hooks == won_later || hooks == ["on_master master unknown start"],
            "{node}'s start ran {hooks:?}:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        hook_log::render(&self.lab.events())
    }

    /// The start: a alone, then b once a holds the VIP.
    fn phase_start(&self) -> (Handoff, Handoff) {
        let a = self.start("a");
        self.wait(0, "a on_master");
        let b = self.start("b");
        self.wait(0, "b on_backup");
        self.wait(0, "a duty-start");
        (a, b)
    }

    /// A planned stop of the master a (SIGINT, graceful). Returns its mark.
    ///
    /// a hands over at `standby` (a priority drop, so keepalived's BACKUP):
    /// `on_backup` runs once the VIP is on b. Its `down` at exit comes after
    /// the last role poll, so no `on_fault` follows.
    fn phase_planned_stop(&self, mut a: Handoff) -> i128 {
        let stop = hook_log::mark(&self.lab, "planned stop of a");
        a.signal(SIGINT);
        assert_eq!(a.code(SOON), 0, "{}", a.log());
        self.wait(stop, "b on_master");
        let b_duty = self.wait(stop, "b duty-start");
        let until = hook_log::mark(&self.lab, "planned stop of a done");
        self.assert_start("a", 0, stop);
        self.assert_hooks("b", 0, stop, &["on_backup backup unknown start"]);
        self.assert_hooks(
            "a",
            stop,
            until,
            &[
                "on_stop stopping master stop",
                "on_backup backup stopping role",
            ],
        );
        self.assert_hooks("b", stop, until, &["on_master master backup role"]);
        // a's level left up at the stop's start: its duty stopped then,
        // long before b was master.
        assert!(
            self.wait(stop, "a duty-stop").ns < b_duty.ns,
            "{}",
            self.log()
        );
        a.assert_logged("duty stopped");
        println!(
            "event log of the planned stop of a:\n{}",
            hook_log::raw_lines(&self.lab, stop, until)
        );
        until
    }

    /// A restart of a: its start hook once, for the role it finds; then it
    /// wins the VIP back (250 over 240), and b's duty stops before a's
    /// starts. Returns a and the phase's end.
    fn phase_restart(&self, since: i128) -> (Handoff, i128) {
        let a = self.start("a");
        self.wait(since, "a on_master");
        self.wait(since, "b on_backup");
        let a_duty = self.wait(since, "a duty-start");
        let until = hook_log::mark(&self.lab, "restart of a done");
        self.assert_start("a", since, until);
        self.assert_hooks("b", since, until, &["on_backup backup master role"]);
        assert!(
            self.wait(since, "b duty-stop").ns < a_duty.ns,
            "{}",
            self.log()
        );
        (a, until)
    }

    /// A crash of a's proxy (restarted 1 s later): a goes down (-254, so
    /// keepalived's FAULT) and b takes the VIP; a, healthy again, takes it
    /// back. a runs `on_fault`, then (`on_backup` and) `on_master`. Returns the pid of the
    /// work of a's duty, which runs again.
    fn phase_proxy_crash(&self, a: &Handoff, since: i128) -> i32 {
        let proxy = common::proxy_pid_of(&self.lab, a.pid().as_raw());
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(proxy), SIGKILL).unwrap();
        let b_master = self.wait(since, "b on_master");
        let back = self.wait(since, "a on_master");
        self.wait(b_master.ns, "b on_backup");
        let work = self.wait(back.ns, "a duty-work ");
        let until = hook_log::mark(&self.lab, "crash of a's proxy done");
        // Healthy again, a leaves FAULT for BACKUP and takes the VIP back
        // one master-down interval later (facts: a preempting backup waits
        // it out), so `on_backup` runs between, unless a poll missed it.
        let hooks = hook_log::hooks_of(&self.lab, "a", since, until);
        let through_backup = [
            "on_fault fault master role",
            "on_backup backup fault role",
            "on_master master backup role",
        ];
        assert!(
            hooks == through_backup
                || hooks == ["on_fault fault master role", "on_master master fault role"],
            "a's hooks after its proxy's crash: {hooks:?}\n{}",
            self.log()
        );
        self.assert_hooks(
            "b",
            since,
            until,
            &[
                "on_master master backup role",
                "on_backup backup master role",
            ],
        );
        work.what["a duty-work ".len()..].parse().unwrap()
    }

    /// A SIGKILL of a's agent: no hook on a, the sentinel (and keepalived's
    /// process tracking) take a down, b runs `on_master` and its duty.
    /// Returns the phase's end and whether a's duty's work (`work`) was
    /// still alive once b's duty started.
    fn phase_agent_kill(&self, mut a: Handoff, since: i128, work: i32) -> (i128, bool) {
        a.signal(SIGKILL);
        let _ = a.wait(SOON);
        self.wait(since, "b on_master");
        self.wait(since, "b duty-start");
        let work_alive = common::alive(work);
        if work_alive {
            // Ours to clean up: the orphan would sleep on past the test.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(work), SIGKILL);
        }
        let until = hook_log::mark(&self.lab, "SIGKILL of a's agent done");
        self.assert_hooks("a", since, until, &[]);
        self.assert_hooks("b", since, until, &["on_master master backup role"]);
        assert_eq!(
            std::fs::read_to_string(self.cluster.track_file("a"))
                .unwrap()
                .trim(),
            "-254"
        );
        (until, work_alive)
    }
}

/// Issue 16 against real keepalived ([`HookLab`]), in phases: the start, a
/// planned stop of the master a, a restart of a, a crash of a's proxy, a
/// SIGKILL of a's agent, and b's own stop. Order is read from the shared
/// event log; the duty must never run on both nodes at once.
#[test]
fn hooks_follow_the_roles_in_order_and_the_duty_runs_on_one_node_at_a_time() {
    if !lab_available() {
        return;
    }
    let l = HookLab::new();
    let timer = Instant::now();
    let mut took = Vec::new();
    let (a, mut b) = l.phase_start();
    took.push(("start", timer.elapsed()));
    let restart = l.phase_planned_stop(a);
    took.push(("planned stop", timer.elapsed()));
    let (a, crash) = l.phase_restart(restart);
    took.push(("restart", timer.elapsed()));
    let work = l.phase_proxy_crash(&a, crash);
    took.push(("proxy crash", timer.elapsed()));
    let kill = hook_log::mark(&l.lab, "SIGKILL of a's agent");
    let (end, work_alive) = l.phase_agent_kill(a, kill, work);
    took.push(("agent SIGKILL", timer.elapsed()));
    // b's own stop (fast, so `down`: keepalived's FAULT): on_stop, then
    // the fault it leaves as.
    b.signal(SIGTERM);
    assert_eq!(b.code(SOON), 0, "{}", b.log());
    l.assert_hooks(
        "b",
        end,
        i128::MAX,
        &[
            "on_stop stopping master stop",
            "on_fault fault stopping role",
        ],
    );
    took.push(("stop of b", timer.elapsed()));
    println!("phases done at {took:?}");

    // a's last run ended, as far as its agent knew, with the agent.
    let runs = hook_log::duty_runs(&l.lab.events(), &[("a", "phase SIGKILL of a's agent")]);
    hook_log::assert_one_duty_at_a_time(&runs, &l.log());
    assert!(
        !work_alive,
        "a's duty kept working (pid {work}) after its agent was SIGKILLed, while b's ran:\n{}",
        l.log()
    );
}

/// Whether `node` has the VIP on its lo.
fn vip_on_lo(cluster: &Cluster, node: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["-n", &cluster.ns(node), "-4", "addr", "show", "dev", "lo"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!("{}/32", common::netns::VIP))
}

/// Sets this node's namespace's ARP sysctls (they are per network namespace).
fn arp_sysctls(cluster: &Cluster, node: &str, ignore: u8, announce: u8) {
    for (key, value) in [("arp_ignore", ignore), ("arp_announce", announce)] {
        let status = std::process::Command::new("ip")
            .args(["netns", "exec", &cluster.ns(node), "sysctl", "-qw"])
            .arg(format!("net.ipv4.conf.all.{key}={value}"))
            .status()
            .unwrap();
        assert!(status.success(), "sysctl {key} in {node}");
    }
}

/// Issue 17's `loopback_vip`: refused on a host that would answer ARP for a
/// VIP on lo; otherwise the VIP is on a's lo while its proxy serves, is not
/// taken for the role, comes off before the proxy's stop signal (handoff's
/// own log, in order), and the sentinel takes it off after a SIGKILL.
#[test]
fn loopback_vip_serves_while_the_proxy_does_and_never_outlives_it() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new();
    let cluster = Cluster::new(&lab, [-254, 0], "");
    let config = cluster.config(&lab, "a", "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[failover.keepalived]\n",
        "[failover.keepalived]\nloopback_vip = true\n",
    );
    std::fs::write(&config, text).unwrap();

    // The namespace's defaults (arp_ignore 0) would answer ARP for it.
    let mut refused = cluster.handoff(&lab, "a", &config, &lab.proxy(&[]));
    assert_eq!(refused.code(SOON), 69, "{}", refused.log());
    refused.assert_logged("arp_ignore");
    assert!(!vip_on_lo(&cluster, "a"));

    arp_sysctls(&cluster, "a", 1, 2);
    let mut h = cluster.handoff(&lab, "a", &config, &lab.proxy(&[]));
    cluster.wait_for_vip("a", Duration::from_secs(15));
    assert!(vip_on_lo(&cluster, "a"), "{}", h.log());
    let status = lab.status_json(&config);
    assert_eq!(status["role"], "MASTER", "{status:#}");

    // A planned stop: off lo before the proxy's stop signal.
    h.signal(SIGINT);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    let log = h.log();
    let off = log.find("VIPs off lo").unwrap_or_else(|| panic!("{log}"));
    let stop = log
        .find("stopping proxy")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(off < stop, "the proxy's stop signal came first:\n{log}");
    assert!(!vip_on_lo(&cluster, "a"));
    assert!(cluster.holds_vip("b"));

    // A SIGKILLed agent: its sentinel takes the VIP off lo.
    let mut h = cluster.handoff(&lab, "a", &config, &lab.proxy(&[]));
    cluster.wait_for_vip("a", Duration::from_secs(15));
    assert!(vip_on_lo(&cluster, "a"), "{}", h.log());
    h.signal(SIGKILL);
    let _ = h.wait(SOON);
    let deadline = Instant::now() + SOON;
    while vip_on_lo(&cluster, "a") {
        assert!(
            Instant::now() < deadline,
            "the VIP stayed on lo after the agent died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
