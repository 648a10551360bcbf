//! `handoff check`: what is worth a warning in a valid config, and whether
//! this host has what the backend needs. The caller loads the config and
//! prints.
//!
//! Owns: the stop-budget arithmetic against the supervisor's kill timeout,
//! warnings about the config and deprecated settings, and the host's side
//! ([`host()`]): the backend's tools (keepalived >= 2.1 on PATH; the command
//! backend's three programs; ifconfig), OpenBSD's CARP interfaces and their
//! group (through ifconfig; elsewhere only said to be unchecked), and the
//! keepalived track file's directory, which must exist and be safe for root
//! to write in (`crate::files::check_dir`, the rule the start applies too).
//! A missing part is a [`HostError`]: exit 69 (`exit::UNAVAILABLE`), each
//! part named.

use std::{
    io::Read,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    child_env::ChildEnv,
    config::{
        Backend, BgpConfig, CarpConfig, Handover, KeepalivedConfig, Preset, ReloadSend, Resolved,
        RestartPolicy,
    },
    failover::carp::output,
    host, platform,
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
    let on_stop = if budget.on_stop.is_zero() {
        String::new()
    } else {
        format!(" + on_stop {}", show(budget.on_stop))
    };
    format!(
        "stop budget {} = failover_timeout {} + settle {} + stop_timeout {} + exit {}{on_stop}",
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
            out.extend(keepalived_warnings(config, keepalived));
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
        Backend::Bgp(bgp) => out.extend(bgp_warnings(config, bgp)),
        Backend::Command(_) | Backend::None => {}
    }
    if let Some(warning) = caddy_without_reload(config) {
        out.push(warning);
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

/// `(major, minor)` from `Keepalived v2.2.7 (01/16,2022)`.
fn parse_keepalived_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn keepalived_warnings(config: &Resolved, k: &KeepalivedConfig) -> Vec<String> {
    let mut out = Vec::new();
    let confirmed =
        config.failover.probe.is_some() || config.consul.as_ref().is_some_and(|c| c.confirm_peer);
    if k.handover == Handover::Fast && !confirmed && config.failover.settle.is_zero() {
        out.push(
            "handover = \"fast\" with no probe, no consul confirm_peer and no settle: nobody holds the VIP for the peer's skew time ((256 - priority)/256 s) while the proxy is already stopping; set settle to at least that".into(),
        );
    }
    // keepalived's new master sends the advert that makes this node drop
    // the VIP first, and its gratuitous ARP only after adding the VIP
    // (vrrp_state_master_tx): 2 to 20 ms measured here, more on a busy host.
    // Until the client takes the ARP in, its SYNs still come here, and only
    // the VIPs on lo, kept through settle, catch them (docs/benchmarks.md).
    if k.loopback_vip && config.failover.settle < LOOPBACK_SETTLE {
        out.push(format!(
            "loopback_vip with settle below {LOOPBACK_SETTLE:?}: the VIPs leave lo before the peer's gratuitous ARP has reached the clients, and what they send here in between is dropped; set settle = \"250ms\""
        ));
    }
    out
}

/// The shortest `settle` that lets `loopback_vip` catch what reaches this
/// node until the peer's gratuitous ARP (keepalived_warnings).
const LOOPBACK_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// The backend cannot work on this host; each entry names what is missing
/// or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct HostError {
    /// `[failover] backend`.
    pub backend: &'static str,
    /// What is missing or wrong, one entry each.
    pub problems: Vec<String>,
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this host is not ready for the {} backend:",
            self.backend
        )?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

/// What [`host()`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostReport {
    /// What stops the backend from working: `check` exits 69.
    pub problems: Vec<String>,
    /// Worth a warning only.
    pub warnings: Vec<String>,
    /// What could not be checked here, and why.
    pub notes: Vec<String>,
}

impl HostReport {
    /// The problems as an error, if there are any.
    pub fn error(&self, backend: &'static str) -> Option<HostError> {
        (!self.problems.is_empty()).then(|| HostError {
            backend,
            problems: self.problems.clone(),
        })
    }
}

/// How long a tool `check` runs (`keepalived --version`, `ifconfig`) may
/// take before it is killed and counted as failed.
const TOOL_LIMIT: Duration = Duration::from_secs(5);

/// Whether this host has what the configured backend needs. The tools run
/// with the children's environment (`env`), as the backend would run them.
pub fn host(config: &Resolved, env: &ChildEnv) -> HostReport {
    let mut report = HostReport::default();
    match &config.backend {
        Backend::None => {}
        Backend::Command(command) => {
            for (key, argv) in [
                ("demote", &command.demote),
                ("promote", &command.promote),
                ("state", &command.state),
            ] {
                if let Some(why) = host::not_runnable(Path::new(argv.program())) {
                    report
                        .problems
                        .push(format!("[failover.command] {key}: {why}"));
                }
            }
        }
        Backend::Keepalived(k) => keepalived_host(k, env, &mut report),
        Backend::Bgp(bgp) => report.problems.extend(bird_problems(bgp)),
        Backend::Carp(carp) if platform::CARP => carp_host(carp, env, &mut report),
        Backend::Carp(_) => report.notes.push(
            "CARP is OpenBSD's (carp(4)): [failover.carp] ifconfig, interfaces and group are not checked on this host".into(),
        ),
    }
    report
}

/// BIRD answers on its socket and has every protocol the config names.
fn bird_problems(bgp: &BgpConfig) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(crate::failover::bgp::problems(bgp)),
        Err(error) => vec![format!("cannot ask BIRD: {error}")],
    }
}

/// Where the BGP backend cannot see a move, and nothing else confirms it.
fn bgp_warnings(config: &Resolved, bgp: &BgpConfig) -> Vec<String> {
    let confirmed_otherwise = config.failover.probe.is_some()
        || config.consul.as_ref().is_some_and(|c| c.confirm_peer)
        || !config.failover.settle.is_zero();
    let mut out = Vec::new();
    if confirmed_otherwise {
        return out;
    }
    if bgp.sessions.is_empty() {
        out.push("[failover.bgp] sessions is empty and there is no probe, no consul confirm_peer and no settle: a planned stop takes the move as done once BIRD applied the level, not once the routers' best paths point elsewhere; name the sessions to the routers (importing the service prefixes), or set one of those".into());
    } else if bgp.handover == Handover::Fast {
        out.push("[failover.bgp] handover = \"fast\" with no probe, no consul confirm_peer and no settle: the move counts as done once the withdrawal is sent, before the routers have acted on it; set settle (or use the graceful handover, which waits for the routers' best paths)".into());
    }
    out
}

/// keepalived >= 2.1 on PATH, and the track file's directory.
fn keepalived_host(k: &KeepalivedConfig, env: &ChildEnv, report: &mut HostReport) {
    if let Some(why) = host::not_runnable(Path::new("keepalived")) {
        report.problems.push(format!(
            "{why}: the keepalived backend needs keepalived >= 2.1"
        ));
    } else {
        match run_tool(Path::new("keepalived"), &["--version"], env) {
            Ok(out) => {
                // keepalived prints its version on stderr.
                let text = format!("{}{}", out.stdout, out.stderr);
                match parse_keepalived_version(&text) {
                    Some(v) if v < (2, 1) => report.problems.push(format!(
                        "keepalived {}.{} is older than 2.1, which added track_file: handoff's writes would be ignored",
                        v.0, v.1
                    )),
                    Some(_) => {}
                    None => report.warnings.push(format!(
                        "cannot read keepalived's version from {:?}",
                        text.trim()
                    )),
                }
            }
            Err(why) => report.warnings.push(format!("keepalived --version: {why}")),
        }
    }
    if let Some(why) = track_dir_problem(crate::files::dir_of(&k.track_file)) {
        report.problems.push(why);
    }
    // `run` refuses this too (crate::loopback_vip).
    if k.loopback_vip
        && let Some(why) = crate::platform::loopback_arp_problem()
    {
        report.problems.push(why);
    }
}

/// The track file's directory: keepalived watches it with inotify from its
/// own start (keepalived.conf(5), "Track files"), so it must exist before
/// keepalived does; and handoff writes there as root, so nobody else may.
fn track_dir_problem(dir: &Path) -> Option<String> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
            "the track_file's directory {} does not exist (keepalived watches it from its start: create it before keepalived starts)",
            dir.display()
        )),
        Err(e) => Some(format!("the track_file's directory {}: {e}", dir.display())),
        Ok(meta) if !meta.is_dir() => Some(format!(
            "the track_file's directory {} is not a directory",
            dir.display()
        )),
        Ok(_) => crate::files::check_dir("the track_file's directory", dir)
            .err()
            .map(|error| error.to_string()),
    }
}

/// ifconfig, the carp interfaces, each in the group, and the group.
fn carp_host(carp: &CarpConfig, env: &ChildEnv, report: &mut HostReport) {
    if let Some(why) = host::not_runnable(&carp.ifconfig) {
        report
            .problems
            .push(format!("[failover.carp] ifconfig: {why}"));
        return;
    }
    let group = carp.group.as_str();
    for interface in &carp.interfaces {
        let out = match run_tool(&carp.ifconfig, &[interface], env) {
            Ok(out) if out.success => out,
            Ok(out) => {
                report.problems.push(format!(
                    "carp interface {interface}: `{} {interface}` says {:?}",
                    carp.ifconfig.display(),
                    out.stderr.trim()
                ));
                continue;
            }
            Err(why) => {
                report
                    .problems
                    .push(format!("carp interface {interface}: {why}"));
                continue;
            }
        };
        if let Err(error) = output::interface(&out.stdout) {
            report.problems.push(format!(
                "{interface} is not a carp interface with a vhid: {error}"
            ));
        } else if !output::groups(&out.stdout).contains(&group) {
            report.problems.push(format!(
                "{interface} is not in interface group {group}, so demoting {group} does not move its address (`ifconfig {interface} group {group}`, and `group {group}` in hostname.{interface})"
            ));
        }
    }
    match run_tool(&carp.ifconfig, &["-g", group], env) {
        Ok(out) if out.success && output::demote_count(group, &out.stdout).is_ok() => {}
        Ok(out) => report.problems.push(format!(
            "interface group {group}: `{} -g {group}` says {:?}",
            carp.ifconfig.display(),
            format!("{}{}", out.stdout, out.stderr).trim()
        )),
        Err(why) => report
            .problems
            .push(format!("interface group {group}: {why}")),
    }
}

/// What a tool printed.
struct ToolOutput {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `program args` with stdin closed and `env` applied, for at most
/// [`TOOL_LIMIT`] (then SIGKILL). A local tool's output is a few lines;
/// at most 64 KiB of each stream is kept.
fn run_tool(program: &Path, args: &[&str], env: &ChildEnv) -> Result<ToolOutput, String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    env.apply(&mut command);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let deadline = Instant::now() + TOOL_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                // Not reaped yet (only this handle waits), so the pid is
                // still this child's.
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not finish within {}",
                    program.display(),
                    show(TOOL_LIMIT)
                ));
            }
            Err(e) => return Err(format!("waiting for {}: {e}", program.display())),
        }
    };
    let read = |pipe: Option<&mut dyn Read>| {
        let mut bytes = Vec::new();
        if let Some(pipe) = pipe {
            let _ = pipe.take(64 * 1024).read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Ok(ToolOutput {
        success: status.success(),
        stdout: read(child.stdout.as_mut().map(|p| p as &mut dyn Read)),
        stderr: read(child.stderr.as_mut().map(|p| p as &mut dyn Read)),
    })
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

/// The caddy preset reloads with `caddy reload --config FILE`, taken from
/// the proxy's own `--config`; without one, reloads are dropped.
fn caddy_without_reload(config: &Resolved) -> Option<String> {
    let reload = &config.proxy.reload;
    let command = config.proxy.command.as_ref()?;
    (reload.preset == Preset::Caddy
        && reload.signal.is_none()
        && reload.plan(command).send == ReloadSend::Disabled)
        .then(|| {
            "the caddy preset reloads with `caddy reload --config FILE`, but [proxy] command has no --config: SIGHUP and `handoff reload` are refused; give caddy --config, or set reload_command".into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Resolved {
        crate::config::parse(std::path::Path::new("t.toml"), text).expect("valid config")
    }

    #[test]
    fn bgp_warns_when_nothing_confirms_a_move_and_names_a_silent_bird() {
        let base = "[failover]\nbackend = \"bgp\"\n{settle}[failover.bgp]\nprefixes = [\"192.0.2.53/32\"]\nsocket = \"/nonexistent/bird.ctl\"\n";
        let cases = [
            ("", "", Some("sessions is empty")),
            ("sessions = [\"uplink\"]\n", "", None),
            (
                "sessions = [\"uplink\"]\nhandover = \"fast\"\n",
                "",
                Some("handover = \"fast\""),
            ),
            (
                "sessions = [\"uplink\"]\nhandover = \"fast\"\n",
                "settle = \"1s\"\n",
                None,
            ),
            ("", "settle = \"1s\"\n", None),
        ];
        for (keys, settle, warned) in cases {
            let text = format!("{}{keys}", base.replace("{settle}", settle));
            let c = config(&text);
            let Backend::Bgp(bgp) = c.backend.clone() else {
                panic!("bgp expected: {:?}", c.backend)
            };
            let w = bgp_warnings(&c, &bgp);
            match warned {
                None => assert!(w.is_empty(), "{text}: {w:?}"),
                Some(says) => assert!(w.len() == 1 && w[0].contains(says), "{text}: {w:?}"),
            }
            let report = host(&c, &ChildEnv::default());
            assert!(
                report
                    .problems
                    .iter()
                    .any(|p| p.contains("BIRD is not running")),
                "{report:?}"
            );
        }
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
    fn a_caddy_command_without_its_config_file_cannot_reload() {
        let without = config("[proxy]\npreset = \"caddy\"\ncommand = [\"caddy\", \"run\"]\n");
        let w = warnings(&without, KillBudget::Unknown, false);
        assert!(w.iter().any(|w| w.contains("has no --config")), "{w:?}");
        for fine in [
            "[proxy]\npreset = \"caddy\"\ncommand = [\"caddy\", \"run\", \"--config\", \"/e/Caddyfile\"]\n",
            "[proxy]\npreset = \"caddy\"\ncommand = [\"caddy\", \"run\"]\nreload_command = [\"/bin/true\"]\n",
        ] {
            assert!(
                warnings(&config(fine), KillBudget::Unknown, false).is_empty(),
                "{fine}"
            );
        }
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
        let w = keepalived_warnings(&c, &k);
        assert!(w.iter().any(|w| w.contains("skew time")), "{w:?}");
        assert!(!w.iter().any(|w| w.contains("loopback_vip")), "{w:?}");
        let k = KeepalivedConfig {
            loopback_vip: true,
            ..k
        };
        let w = keepalived_warnings(&c, &k);
        assert!(w.iter().any(|w| w.contains("settle = \"250ms\"")), "{w:?}");
        assert!(keepalived_snippet(&k).contains("file \"/nonexistent-dir/t\""));
        let report = host(&c, &ChildEnv::default());
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("/nonexistent-dir does not exist")),
            "{report:?}"
        );
        let error = report.error("keepalived").expect("a problem");
        assert!(
            error
                .to_string()
                .starts_with("this host is not ready for the keepalived backend:\n  "),
            "{error}"
        );
    }

    #[test]
    fn the_command_backend_needs_its_three_programs() {
        let c = config(
            "[failover]\nbackend = \"command\"\n[failover.command]\ndemote = [\"/nonexistent/demote\"]\npromote = [\"/bin/sh\"]\nstate = [\"no-such-program-on-path\"]\n",
        );
        let report = host(&c, &ChildEnv::default());
        assert_eq!(
            report.problems,
            [
                "[failover.command] demote: `/nonexistent/demote` is not an executable file",
                "[failover.command] state: `no-such-program-on-path` is not an executable file on PATH",
            ]
        );
        assert!(host(&config(""), &ChildEnv::default()) == HostReport::default());
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
