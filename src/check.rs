//! `handoff check`: what is worth a warning in a valid config. Pure: the
//! caller loads the config and prints.
//!
//! Owns: the stop-budget arithmetic against the supervisor's kill timeout,
//! warnings about parts that this build does not run yet, and about
//! deprecated settings.

use std::{path::Path, time::Duration};

use crate::{
    config::{Backend, Handover, KeepalivedConfig, Resolved, RestartPolicy},
    platform,
};

/// Nomad's default `kill_timeout` (job specification, task block).
pub const NOMAD_DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the kill timeout we compare against came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillBudget {
    /// `--kill-timeout`.
    Flag(Duration),
    /// Running as a Nomad task without the flag: Nomad's default.
    NomadDefault,
    /// Nothing to compare against.
    Unknown,
}

impl KillBudget {
    /// `--kill-timeout`, else Nomad's default when `NOMAD_ALLOC_ID` is set.
    pub fn find(flag: Option<Duration>, nomad_alloc_id: Option<&str>) -> Self {
        match (flag, nomad_alloc_id) {
            (Some(d), _) => KillBudget::Flag(d),
            (None, Some(id)) if !id.is_empty() => KillBudget::NomadDefault,
            _ => KillBudget::Unknown,
        }
    }

    fn duration(self) -> Option<Duration> {
        match self {
            KillBudget::Flag(d) => Some(d),
            KillBudget::NomadDefault => Some(NOMAD_DEFAULT_KILL_TIMEOUT),
            KillBudget::Unknown => None,
        }
    }
}

/// One line describing the stop budget, for `check`'s output.
pub fn budget_line(config: &Resolved) -> String {
    let budget = config.budget;
    format!(
        "stop budget {} = failover_timeout {} + settle {} + stop_timeout {} + exit {}",
        show(budget.total()),
        show(budget.failover_timeout),
        show(budget.settle),
        show(budget.stop_timeout),
        show(budget.exit)
    )
}

/// Everything worth a warning; an empty list means nothing to say.
pub fn warnings(config: &Resolved, kill: KillBudget, under_nomad: bool) -> Vec<String> {
    let mut out = Vec::new();
    let budget = config.budget.total();
    if let Some(limit) = kill.duration()
        && budget > limit
    {
        let source = match kill {
            KillBudget::NomadDefault => {
                " (Nomad's default kill_timeout; pass --kill-timeout to match the job)"
            }
            _ => "",
        };
        out.push(format!(
            "{} exceeds the kill timeout {}{source}: the supervisor would SIGKILL handoff, and then the proxy, before the stop finishes",
            budget_line(config),
            show(limit)
        ));
    }
    match &config.backend {
        Backend::Keepalived(keepalived) => {
            out.extend(keepalived_warnings(
                config,
                keepalived,
                keepalived_version().as_deref(),
            ));
        }
        Backend::Carp(carp) => {
            if carp.group == "carp" {
                out.push(
                    "[failover.carp] group is \"carp\", the group every carp interface is in and that /etc/rc and pfsync demote too: use a group of your own (e.g. \"edge\")".into(),
                );
            }
            if platform::carp_preempt() == Some(false) {
                out.push(
                    "net.inet.carp.preempt is 0: a node that was demoted never takes the address back by itself (sysctl net.inet.carp.preempt=1)".into(),
                );
            }
        }
        Backend::Command(_) | Backend::None => {}
    }
    if let Some(warning) = shared_socket_dir(&config.control.socket) {
        out.push(warning);
    }
    if under_nomad && config.proxy.restart != RestartPolicy::Never {
        out.push(
            "restart is not \"never\" under Nomad: let Nomad's restart block restart the task"
                .into(),
        );
    }
    out
}

/// A control socket right in /run or /var/run, the default before the
/// socket had a directory of its own: it still works (its own mode, 0600 or
/// 0660, guards it), but the unit then needs all of /run writable.
fn shared_socket_dir(socket: &Path) -> Option<String> {
    let dir = socket.parent()?;
    [Path::new("/run"), Path::new("/var/run")]
        .contains(&dir)
        .then(|| {
            format!(
                "[control] socket {} is directly in {}: deprecated; use {} (the default), in a directory of its own that only root and [control] group can enter (systemd: RuntimeDirectory=handoff)",
                socket.display(),
                dir.display(),
                platform::DEFAULT_SOCKET
            )
        })
}

/// What `keepalived --version` prints (on stderr), if keepalived is there.
fn keepalived_version() -> Option<String> {
    let out = std::process::Command::new("keepalived")
        .arg("--version")
        .output()
        .ok()?;
    Some(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `(major, minor)` from `Keepalived v2.2.7 (01/16,2022)`.
fn parse_keepalived_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn keepalived_warnings(
    config: &Resolved,
    k: &KeepalivedConfig,
    version: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    match version.map(|v| (v, parse_keepalived_version(v))) {
        None => out.push("keepalived not found on PATH: the keepalived backend needs keepalived >= 2.1".into()),
        Some((_, Some(v))) if v < (2, 1) => out.push(format!(
            "keepalived {}.{} is older than 2.1, which added track_file; handoff's writes would be ignored",
            v.0, v.1
        )),
        Some((_, Some(_))) => {}
        Some((text, None)) => out.push(format!("cannot read keepalived's version from {:?}", text.trim())),
    }
    let dir = k
        .track_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !dir.is_dir() {
        out.push(format!(
            "the track_file's directory {} does not exist (it must, on disk, for keepalived to watch it)",
            dir.display()
        ));
    }
    let confirmed =
        config.failover.probe.is_some() || config.consul.as_ref().is_some_and(|c| c.confirm_peer);
    if k.handover == Handover::Fast && !confirmed && config.failover.settle.is_zero() {
        out.push(
            "handover = \"fast\" with no probe, no consul confirm_peer and no settle: nobody holds the VIP for the peer's skew time ((256 - priority)/256 s) while the proxy is already stopping; set settle to at least that".into(),
        );
    }
    out
}

/// The keepalived.conf lines the operator needs, for `check`'s output.
pub fn keepalived_snippet(k: &KeepalivedConfig) -> String {
    format!(
        "keepalived.conf needs (keepalived.conf(5), \"Track files\"):\n\
         track_file handoff {{\n    file \"{}\"\n    weight 1\n}}\n\
         vrrp_instance {} {{\n    ...\n    track_file {{\n        handoff weight 1\n    }}\n}}",
        k.track_file.display(),
        k.instance.as_deref().unwrap_or("VI_1")
    )
}

fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Resolved {
        crate::config::parse(std::path::Path::new("t.toml"), text).expect("valid config")
    }

    #[test]
    fn budget_over_kill_timeout_warns() {
        let c = config(
            "[failover]\nfailover_timeout = \"10s\"\nsettle = \"1s\"\n[proxy]\nstop_timeout = \"10s\"\n",
        );
        assert_eq!(c.budget.total(), Duration::from_secs(22));
        let w = warnings(&c, KillBudget::Flag(Duration::from_secs(21)), false);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("stop budget 22s") && w[0].contains("kill timeout 21s"),
            "{w:?}"
        );
        assert!(warnings(&c, KillBudget::Flag(Duration::from_secs(22)), false).is_empty());
        assert!(warnings(&c, KillBudget::Unknown, false).is_empty());
    }

    #[test]
    fn keepalived_version_and_fast_handover() {
        assert_eq!(
            parse_keepalived_version("Keepalived v2.2.7 (01/16,2022)\n"),
            Some((2, 2))
        );
        assert_eq!(
            parse_keepalived_version("Keepalived v1.3.5 (03/19,2017)"),
            Some((1, 3))
        );
        let c = config(
            "[failover]\nbackend = \"keepalived\"\n[failover.keepalived]\nvip = [\"192.0.2.10\"]\nhandover = \"fast\"\ntrack_file = \"/nonexistent-dir/t\"\n",
        );
        let Backend::Keepalived(k) = c.backend.clone() else {
            panic!("keepalived expected: {:?}", c.backend)
        };
        let w = keepalived_warnings(&c, &k, Some("Keepalived v2.0.20"));
        assert!(w.iter().any(|w| w.contains("older than 2.1")), "{w:?}");
        assert!(
            w.iter()
                .any(|w| w.contains("/nonexistent-dir does not exist")),
            "{w:?}"
        );
        assert!(w.iter().any(|w| w.contains("skew time")), "{w:?}");
        assert!(
            keepalived_warnings(&c, &k, None)
                .iter()
                .any(|w| w.contains("not found"))
        );
        assert!(keepalived_snippet(&k).contains("file \"/nonexistent-dir/t\""));
    }

    #[test]
    fn a_socket_right_in_run_is_deprecated() {
        for old in ["/var/run/handoff.sock", "/run/handoff.sock"] {
            let c = config(&format!("[control]\nsocket = \"{old}\"\n"));
            let w = warnings(&c, KillBudget::Unknown, false);
            assert!(
                w.len() == 1 && w[0].contains(old) && w[0].contains("deprecated"),
                "{w:?}"
            );
        }
        assert!(warnings(&config(""), KillBudget::Unknown, false).is_empty());
    }

    #[test]
    fn nomad_default_applies_only_without_the_flag() {
        assert_eq!(
            KillBudget::find(None, Some("abc")),
            KillBudget::NomadDefault
        );
        assert_eq!(KillBudget::find(None, None), KillBudget::Unknown);
        let flag = Duration::from_secs(30);
        assert_eq!(
            KillBudget::find(Some(flag), Some("abc")),
            KillBudget::Flag(flag)
        );
        let defaults = config("");
        let w = warnings(&defaults, KillBudget::NomadDefault, true);
        assert!(
            w.iter().any(|w| w.contains("Nomad's default kill_timeout")),
            "{w:?}"
        );
    }
}
