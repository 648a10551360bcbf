//! A two-node keepalived lab in network namespaces, shared by the
//! keepalived tests and the move-time bench. Nodes a (priority 250) and b
//! (240) in namespaces joined by a bridge in a third; addresses only inside
//! them (192.0.2.0/24, the documentation range). Everything a `Cluster`
//! creates is removed in `Drop`, even when the test panics.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal::SIGTERM;

use super::{FIXTURE, HANDOFF, Handoff, Lab};

/// keepalived timing for a lab.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `advert_int`, as keepalived.conf spells it ("1", "0.1").
    pub advert_int: &'static str,
    /// VRRP version (sub-second adverts need 3).
    pub vrrp_version: u8,
}

/// keepalived's defaults: advert_int 1, VRRPv2.
pub const DEFAULT_TIMING: Timing = Timing {
    advert_int: "1",
    vrrp_version: 2,
};

/// The timing of config/keepalived-fast.conf: advert_int 0.1, VRRPv3.
pub const FAST_TIMING: Timing = Timing {
    advert_int: "0.1",
    vrrp_version: 3,
};

pub const VIP: &str = "192.0.2.100";

/// Whether this machine can run the lab; if not, [`super::skip`]s (under
/// CI that fails the test).
pub fn lab_available() -> bool {
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
    super::skip(&format!(
        "the real-keepalived lab needs root={root}, ip and keepalived on PATH={tools}"
    ));
    false
}

/// Runs `ip ARGS`, failing the test with its stderr.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two keepalived nodes, a (priority 250) and b (240).
pub struct Cluster {
    name: String,
    pub dir: PathBuf,
    keepalived: Vec<Child>,
}

impl Cluster {
    /// `track` holds each node's initial track_file value.
    /// `b_extra` goes into node b's vrrp_instance (e.g. `nopreempt`).
    pub fn new(lab: &Lab, track: [i32; 2], b_extra: &str) -> Cluster {
        Cluster::with_timing(lab, track, b_extra, DEFAULT_TIMING)
    }

    /// A lab with the given keepalived timing.
    pub fn with_timing(lab: &Lab, track: [i32; 2], b_extra: &str, timing: Timing) -> Cluster {
        Cluster::with_options(lab, track, b_extra, timing, false, false)
    }

    /// With `notify_fifo`, each keepalived writes its notify FIFO
    /// (`notify_fifo_path`). With `track_process`, each node's keepalived
    /// also follows its own `handoff run` (`vrrp_track_process`, weight 0:
    /// FAULT while none runs), as config/keepalived.conf ships it; its
    /// tracker matches the node's own config path, since both nodes share
    /// one process table.
    pub fn with_options(
        lab: &Lab,
        track: [i32; 2],
        b_extra: &str,
        timing: Timing,
        notify_fifo: bool,
        track_process: bool,
    ) -> Cluster {
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
            let (tracker_block, tracker_use) = if track_process {
                (
                    format!(
                        "vrrp_track_process handoff_agent {{\n  process \"{HANDOFF}\" --config \"{}\" run\n  \
                         param_match partial\n  weight 0\n}}\n",
                        agent_config(lab, node).display()
                    ),
                    "track_process {\n    handoff_agent\n  }\n  ",
                )
            } else {
                (String::new(), "")
            };
            std::fs::write(
                &conf,
                format!(
                    "global_defs {{\n  router_id {node}\n  vrrp_garp_master_delay 0\n  vrrp_version {}\n  {}\n}}\n\
                     track_file handoff {{\n  file \"{}\"\n  weight 1\n}}\n{tracker_block}\
                     vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority {}\n  \
                     advert_int {}\n  {}\n  {tracker_use}track_file {{\n    handoff weight 1\n  }}\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n",
                    timing.vrrp_version,
                    if notify_fifo {
                        format!("notify_fifo {}", cluster.notify_fifo_path(node).display())
                    } else {
                        String::new()
                    },
                    cluster.track_file(node).display(),
                    250 - 10 * i,
                    timing.advert_int,
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
            // Started from the host's namespace into the node's (`-s`):
            // process events, which vrrp_track_process follows, only reach
            // a keepalived in the host's network namespace (keepalived issue
            // #1469).
            let child = Command::new("keepalived")
                .args(["-s", &ns, "-n", "-l", "-D", "-P", "-f"])
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

    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }

    /// SIGKILLs `node`'s keepalived: the master dies.
    pub fn kill_keepalived(&mut self, node: &str) {
        let child = &mut self.keepalived[usize::from(node == "b")];
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn notify_fifo_path(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.fifo"))
    }

    pub fn track_file(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.track"))
    }

    pub fn holds_vip(&self, node: &str) -> bool {
        let out = Command::new("ip")
            .args(["-n", &self.ns(node), "-4", "addr", "show", "dev", "eth0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/"))
    }

    /// Waits until `node` holds the VIP; returns how long that took.
    pub fn wait_for_vip(&self, node: &str, limit: Duration) -> Duration {
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
    pub fn handoff(&self, lab: &Lab, node: &str, config: &Path, proxy: &[String]) -> Handoff {
        let cmd = self.handoff_command(node, config, proxy);
        Handoff::spawn(cmd, lab.path(&format!("handoff-{node}.stderr")))
    }

    /// The command [`Cluster::handoff`] runs.
    pub fn handoff_command(&self, node: &str, config: &Path, proxy: &[String]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(node), HANDOFF, "--config"])
            .arg(config)
            .arg("run")
            .arg("--")
            .args(proxy);
        cmd.env_remove("HANDOFF_CONFIG").env("RUST_LOG", "info");
        cmd
    }

    pub fn config(&self, lab: &Lab, node: &str, extra: &str) -> PathBuf {
        let path = agent_config(lab, node);
        std::fs::write(
            &path,
            format!(
                "[failover]\nbackend = \"keepalived\"\nfailover_timeout = \"8s\"\n{extra}\n\
                 [control]\nsocket = \"{}\"\nstate_dir = \"{}\"\n[http]\nlisten = \"\"\n\
                 [failover.keepalived]\ntrack_file = \"{}\"\nvip = [\"{VIP}\"]\n",
                self.dir.join(format!("handoff-{node}.sock")).display(),
                self.dir.join(format!("state-{node}")).display(),
                self.track_file(node).display()
            )
            .replace("{fixture}", FIXTURE)
            .replace("{log}", &lab.log.display().to_string()),
        )
        .unwrap();
        path
    }
}

/// The config file of `node`'s agent ([`Cluster::config`]).
fn agent_config(lab: &Lab, node: &str) -> PathBuf {
    lab.path(&format!("handoff-{node}.toml"))
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
pub fn watch_vip(
    lab: &Lab,
    cluster: &Cluster,
    mut done: impl FnMut() -> bool,
    limit: Duration,
) -> bool {
    let start = Instant::now();
    let mut last = String::new();
    let mut gap = false;
    let look = |last: &mut String| {
        // Each look runs `ip` twice, which takes milliseconds (tens on a
        // loaded CI host). The event carries the time the look began, a
        // being read first: a look that says a holds the VIP and is logged
        // after an event means a held it after that event, which is what
        // the ordering assertions need (an end stamp once logged "both"
        // after the proxy's stop for a look that read a before it).
        let began = super::now_ns();
        let holder = match (cluster.holds_vip("a"), cluster.holds_vip("b")) {
            (true, true) => "both",
            (true, false) => "a",
            (false, true) => "b",
            (false, false) => "none",
        };
        if holder != last.as_str() {
            super::append_event_at(&lab.log, began, &format!("vip {holder}"));
            holder.clone_into(last);
        }
        holder == "none"
    };
    while !done() && start.elapsed() < limit {
        gap |= look(&mut last);
        std::thread::sleep(Duration::from_millis(10));
    }
    // One look after the end: what `done` waited for (an agent's exit, a
    // few milliseconds after the move now that moves are seen by address
    // events) can come before the next look, and the state it left is what
    // the assertions ask about.
    gap |= look(&mut last);
    gap
}
