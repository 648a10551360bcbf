//! A two-node CARP cluster through the simulated OpenBSD ifconfig
//! (`handoff-fixture carp-sim`, tests/fixture/carp_sim.rs). The simulator
//! logs every counter change and mastership move into the lab's event log.

use std::path::PathBuf;

use super::{FIXTURE, Lab};

/// The simulated nodes.
const NODES: [&str; 2] = ["a", "b"];

/// Node a (advskew 0) is master; `edge` of node a starts at `foreign`
/// (someone else's share).
pub struct Cluster {
    state: PathBuf,
    log: PathBuf,
}

impl Cluster {
    /// Writes the simulator's state and each node's `ifconfig` script, once:
    /// a script rewritten while an agent executes it fails that exec with
    /// ETXTBSY ("Text file busy"), so nothing rewrites them later.
    pub fn new(lab: &Lab, foreign: i32) -> Cluster {
        let state = lab.path("carp-sim.toml");
        std::fs::write(
            &state,
            format!(
                "[a]\ngroups = {{ carp = 0, edge = {foreign} }}\nadvskew = 0\npreempt = true\nmaster = true\n\n\
                 [b]\ngroups = {{ carp = 0, edge = 0 }}\nadvskew = 100\npreempt = true\nmaster = false\n"
            ),
        )
        .expect("write simulator state");
        let cluster = Cluster {
            state,
            log: lab.log.clone(),
        };
        for node in NODES {
            super::write_executable(
                &cluster.ifconfig(lab, node),
                &format!(
                    "#!/bin/sh\nexec {FIXTURE} carp-sim --state {} --node {node} --log {} -- \"$@\"\n",
                    cluster.state.display(),
                    cluster.log.display()
                ),
            );
        }
        cluster
    }

    /// The `ifconfig` of `node` (written by [`Cluster::new`]): a script,
    /// since the config names a program.
    #[allow(clippy::unused_self)] // the cluster wrote it; asking it keeps that visible
    pub fn ifconfig(&self, lab: &Lab, node: &str) -> PathBuf {
        assert!(NODES.contains(&node), "no simulated node {node:?}");
        lab.path(&format!("ifconfig-{node}"))
    }

    /// The `edge` counter of `node`, asked of the simulator directly (not
    /// through the script, which agents may be running).
    pub fn edge(&self, _lab: &Lab, node: &str) -> u32 {
        let out = std::process::Command::new(FIXTURE)
            .args(["carp-sim", "--state"])
            .arg(&self.state)
            .args(["--node", node, "--log"])
            .arg(&self.log)
            .args(["--", "-g", "edge"])
            .output()
            .expect("run the simulator");
        let text = String::from_utf8_lossy(&out.stdout);
        let count = text.trim().rsplit(' ').next().and_then(|n| n.parse().ok());
        count.unwrap_or_else(|| {
            panic!(
                "simulator said {text:?}, stderr {:?}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// `node`'s run directory, which a simulated reboot empties (OpenBSD's
    /// /etc/rc empties /var/run); its agent's boot marker is in it.
    pub fn run_dir(lab: &Lab, node: &str) -> PathBuf {
        let dir = lab.path(&format!("run-{node}"));
        std::fs::create_dir_all(&dir).expect("create the run dir");
        dir
    }

    /// The id in `node`'s boot marker, as its agent created it.
    pub fn boot_id(lab: &Lab, node: &str) -> String {
        std::fs::read_to_string(Cluster::run_dir(lab, node).join("handoff.boot"))
            .expect("read the boot marker")
            .trim()
            .to_owned()
    }

    /// Reboots `node` (no agent may run): its run directory is emptied, as
    /// /etc/rc does, and its kernel's counters start over, `carp` at 0 once
    /// /etc/rc is done and `edge` at `edge` (what other owners put back); it
    /// comes back as BACKUP. Its uptime is the machine's: it did not go back,
    /// which is the case the boot marker, not the uptime, must catch.
    pub fn reboot(&self, lab: &Lab, node: &str, edge: i32) {
        for entry in std::fs::read_dir(Cluster::run_dir(lab, node)).expect("read the run dir") {
            std::fs::remove_file(entry.expect("run dir entry").path()).expect("empty the run dir");
        }
        let text = std::fs::read_to_string(&self.state).expect("read simulator state");
        let mut nodes: toml::Table = toml::from_str(&text).expect("simulator state");
        for (name, value) in &mut nodes {
            let table = value.as_table_mut().expect("a node");
            table.insert("master".into(), (name != node).into());
            if name == node {
                let groups = table["groups"].as_table_mut().expect("groups");
                groups.insert("carp".into(), 0.into());
                groups.insert("edge".into(), edge.into());
            }
        }
        std::fs::write(&self.state, toml::to_string(&nodes).expect("render"))
            .expect("write simulator state");
    }

    /// The config of `node`'s agent (its own socket, state dir and boot
    /// marker; node a uses the lab's default socket and `handoff.toml`).
    pub fn config(&self, lab: &Lab, node: &str, extra: &str) -> PathBuf {
        self.config_with(lab, node, "", extra)
    }

    /// [`Cluster::config`] with `failover` added to its `[failover]`
    /// section (a TOML table cannot be opened twice).
    pub fn config_with(&self, lab: &Lab, node: &str, failover: &str, extra: &str) -> PathBuf {
        let (file, socket) = if node == "a" {
            ("handoff.toml".to_owned(), lab.socket())
        } else {
            (
                format!("handoff-{node}.toml"),
                lab.path(&format!("{node}.sock")),
            )
        };
        lab.config_named(
            &file,
            &format!(
                "[failover]\nbackend = \"carp\"\nfailover_timeout = \"5s\"\n{failover}\n[failover.carp]\ngroup = \"edge\"\n\
                 interfaces = [\"carp0\"]\ndemote_by = 50\nifconfig = \"{}\"\nboot_marker = \"{}\"\n\
                 [control]\nsocket = \"{}\"\nstate_dir = \"{}\"\n{extra}",
                self.ifconfig(lab, node).display(),
                Cluster::run_dir(lab, node).join("handoff.boot").display(),
                socket.display(),
                lab.path(&format!("state-{node}")).display()
            ),
        )
    }
}

/// The `share = N` line of node a's CARP ledger (state dir `state-a`).
pub fn ledger_share(lab: &Lab) -> String {
    let text = std::fs::read_to_string(lab.path("state-a").join("carp-ledger.toml"))
        .expect("read the ledger");
    text.lines()
        .find(|l| l.starts_with("share"))
        .expect("a share line")
        .to_owned()
}
