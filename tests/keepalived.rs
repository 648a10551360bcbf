//! The keepalived backend against real keepalived (Debian's 2.2.x): two nodes
//! in network namespaces joined by a bridge in a third, with addresses only
//! inside those namespaces (192.0.2.0/24, the documentation range).
//!
//! Needs root, `ip` and `keepalived`. Under `CI=true` they must be there;
//! elsewhere the tests skip with a loud message. Every namespace, link and
//! process a test creates is removed in `Drop`, even when the test fails.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use common::{FIXTURE, HANDOFF, Handoff, Lab, SOON};
use nix::sys::signal::Signal::{SIGINT, SIGKILL, SIGTERM};

const VIP: &str = "192.0.2.100";

/// Whether this machine can run the lab; under CI it must.
fn lab_available() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = ["ip", "keepalived"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if root && tools {
        return true;
    }
    let why = format!("root={root}, ip and keepalived on PATH={tools}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run the keepalived tests: {why}"
    );
    eprintln!(
        "\n!!! SKIPPING the real-keepalived tests ({why}); scripts/test installs what they need\n"
    );
    false
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two keepalived nodes, a (priority 250) and b (240), advert_int 1.
struct Cluster {
    name: String,
    dir: PathBuf,
    keepalived: Vec<Child>,
}

impl Cluster {
    /// `track` holds each node's initial track_file value.
    /// `b_extra` goes into node b's vrrp_instance (e.g. `nopreempt`).
    fn new(lab: &Lab, track: [i32; 2], b_extra: &str) -> Cluster {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "h{}{}",
            std::process::id() % 100_000,
            COUNT.fetch_add(1, Ordering::SeqCst)
        );
        let dir = lab.path("cluster");
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Cluster {
            name,
            dir,
            keepalived: Vec::new(),
        };
        let br = cluster.ns("br");
        ip(&["netns", "add", &br]);
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for (i, node) in ["a", "b"].into_iter().enumerate() {
            let ns = cluster.ns(node);
            let (inside, outside) = (
                format!("{}{node}e", cluster.name),
                format!("{}{node}p", cluster.name),
            );
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &inside, "type", "veth", "peer", "name", &outside,
            ]);
            ip(&["link", "set", &inside, "netns", &ns]);
            ip(&["link", "set", &outside, "netns", &br]);
            ip(&["-n", &br, "link", "set", &outside, "master", "br0", "up"]);
            ip(&["-n", &ns, "link", "set", &inside, "name", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("192.0.2.{}/24", i + 1),
                "dev",
                "eth0",
            ]);
            std::fs::write(cluster.track_file(node), format!("{}\n", track[i])).unwrap();
            let conf = cluster.dir.join(format!("{node}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "global_defs {{\n  router_id {node}\n  vrrp_garp_master_delay 0\n}}\n\
                     track_file handoff {{\n  file \"{}\"\n  weight 1\n}}\n\
                     vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority {}\n  \
                     advert_int 1\n  {}\n  track_file {{\n    handoff weight 1\n  }}\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n",
                    cluster.track_file(node).display(),
                    250 - 10 * i,
                    if node == "b" { b_extra } else { "" }
                ),
            )
            .unwrap();
            let p = |what: &str| {
                cluster
                    .dir
                    .join(format!("{node}.{what}"))
                    .display()
                    .to_string()
            };
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "keepalived",
                    "-n",
                    "-l",
                    "-D",
                    "-P",
                    "-f",
                ])
                .arg(&conf)
                .args(["-p", &p("pid"), "-r", &p("vrrp.pid")])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(p("log")).unwrap())
                .spawn()
                .unwrap();
            cluster.keepalived.push(child);
        }
        cluster
    }

    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }

    fn track_file(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.track"))
    }

    fn holds_vip(&self, node: &str) -> bool {
        let out = Command::new("ip")
            .args(["-n", &self.ns(node), "-4", "addr", "show", "dev", "eth0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/"))
    }

    /// Waits until `node` holds the VIP; returns how long that took.
    fn wait_for_vip(&self, node: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        while !self.holds_vip(node) {
            assert!(
                start.elapsed() < limit,
                "{node} did not get the VIP within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        start.elapsed()
    }

    /// Runs handoff on node `node`: `ip netns exec` execs it, so the child's
    /// pid is handoff's.
    fn handoff(&self, lab: &Lab, node: &str, config: &Path, proxy: &[String]) -> Handoff {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(node), HANDOFF, "--config"])
            .arg(config)
            .arg("run")
            .arg("--")
            .args(proxy);
        cmd.env_remove("HANDOFF_CONFIG").env("RUST_LOG", "info");
        Handoff::spawn(cmd, lab.path(&format!("handoff-{node}.stderr")))
    }

    fn config(&self, lab: &Lab, node: &str, extra: &str) -> PathBuf {
        let path = lab.path(&format!("handoff-{node}.toml"));
        std::fs::write(
            &path,
            format!(
                "[failover]\nbackend = \"keepalived\"\nfailover_timeout = \"8s\"\n{extra}\n\
                 [failover.keepalived]\ntrack_file = \"{}\"\nvip = [\"{VIP}\"]\n",
                self.track_file(node).display()
            )
            .replace("{fixture}", FIXTURE)
            .replace("{log}", &lab.log.display().to_string()),
        )
        .unwrap();
        path
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.keepalived {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, SIGTERM);
        }
        for child in &mut self.keepalived {
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for node in ["a", "b", "br"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(node)])
                .status();
        }
    }
}

/// Samples the VIP every 10 ms until `done`, logging each change of holder
/// ("vip a", "vip b", "vip none", "vip both") into the event log. Returns
/// whether some sample found nobody holding it.
fn watch_vip(
    lab: &Lab,
    cluster: &Cluster,
    mut done: impl FnMut() -> bool,
    limit: Duration,
) -> bool {
    let start = Instant::now();
    let mut last = String::new();
    let mut gap = false;
    while !done() && start.elapsed() < limit {
        let holder = match (cluster.holds_vip("a"), cluster.holds_vip("b")) {
            (true, true) => "both",
            (true, false) => "a",
            (false, true) => "b",
            (false, false) => "none",
        };
        gap |= holder == "none";
        if holder != last {
            common::append_event(&lab.log, &format!("vip {holder}"));
            holder.clone_into(&mut last);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    gap
}

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

fn planned_stop(handover: &str, bound: Duration) {
    if !lab_available() {
        return;
    }
    let lab = Lab::new();
    let cluster = Cluster::new(&lab, [-254, 0], "");
    // Fast handover: the peer takes over after its skew time; settle covers it.
    let settle = if handover == "fast" {
        "settle = \"1s\""
    } else {
        ""
    };
    let mut h = healthy_master(&lab, &cluster, settle, handover);
    let sent = Instant::now();
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
    // stop, or its first change after the stop (10 ms late at most) is to b.
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
    println!(
        "{handover}: SIGINT to exit {:?}; holders {:?}",
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
    planned_stop("graceful", Duration::from_secs(6) + Duration::from_secs(2));
}

#[test]
fn fast_planned_stop() {
    planned_stop("fast", Duration::from_secs(2) + Duration::from_secs(2));
}

#[test]
fn kill_9_of_the_proxy_moves_the_vip() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new();
    let cluster = Cluster::new(&lab, [-254, 0], "");
    let mut h = healthy_master(&lab, &cluster, "", "graceful");
    let proxy = common::proxy_pid(&lab);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(proxy), SIGKILL).unwrap();
    let took = cluster.wait_for_vip("b", Duration::from_secs(5));
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
