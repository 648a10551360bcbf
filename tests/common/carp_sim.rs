//! A two-node CARP cluster through the simulated OpenBSD ifconfig
//! (`handoff-fixture carp-sim`, tests/fixture/carp_sim.rs). The simulator
//! logs every counter change and mastership move into the lab's event log.

use std::{os::unix::fs::PermissionsExt, path::PathBuf};

use super::{FIXTURE, Lab};

/// Node a (advskew 0) is master; `edge` of node a starts at `foreign`
/// (someone else's share).
pub struct Cluster {
    state: PathBuf,
}

impl Cluster {
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
        Cluster { state }
    }

    /// An `ifconfig` for `node`: a script, since the config names a program.
    pub fn ifconfig(&self, lab: &Lab, node: &str) -> PathBuf {
        let path = lab.path(&format!("ifconfig-{node}"));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nexec {FIXTURE} carp-sim --state {} --node {node} --log {} -- \"$@\"\n",
                self.state.display(),
                lab.log.display()
            ),
        )
        .expect("write ifconfig script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod ifconfig script");
        path
    }

    /// The `edge` counter of `node`, asked through the simulator.
    pub fn edge(&self, lab: &Lab, node: &str) -> u32 {
        let out = std::process::Command::new(self.ifconfig(lab, node))
            .args(["-g", "edge"])
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

    /// The config of `node`'s agent (its own socket and state dir; node a
    /// uses the lab's default socket and `handoff.toml`).
    pub fn config(&self, lab: &Lab, node: &str, extra: &str) -> PathBuf {
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
                "[failover]\nbackend = \"carp\"\nfailover_timeout = \"5s\"\n[failover.carp]\ngroup = \"edge\"\n\
                 interfaces = [\"carp0\"]\ndemote_by = 50\nifconfig = \"{}\"\n[control]\nsocket = \"{}\"\nstate_dir = \"{}\"\n{extra}",
                self.ifconfig(lab, node).display(),
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
