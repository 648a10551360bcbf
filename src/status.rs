//! What `handoff status`, `GET /status` and the control socket report.
//!
//! Owns the JSON schema (documented in docs/status.md; bump [`SCHEMA`] on
//! any incompatible change) and its rendering for people. The agent's
//! dispatcher fills it in (`crate::supervisor`); the CLI only reads it.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{
    consul::ConsulStatus,
    failover::{Level, Role},
    health::HealthView,
    machine::PhaseName,
    maintenance::Maintenance,
    run_outcome::Outcome,
};

/// Version of the schema below.
pub const SCHEMA: u32 = 1;

/// The agent's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// [`SCHEMA`].
    pub schema: u32,
    /// handoff's version.
    pub version: String,
    /// This host's name.
    pub node: String,
    /// The agent process.
    pub agent: Agent,
    /// The level last asked of the backend (`null` before the first).
    pub level: Option<Level>,
    /// The backend confirmed `level`.
    pub level_applied: bool,
    /// Whether this node holds the floating IP, as last reported.
    pub role: Role,
    /// `role` was seen after `level` was applied (an older one may be stale).
    pub role_current: bool,
    /// Known not to hold the IP: `role` is BACKUP or FAULT and current.
    pub released: bool,
    /// Set by `handoff demote`, cleared by `handoff promote`.
    pub maintenance: Option<Maintenance>,
    /// The supervised proxy.
    pub proxy: ProxyStatus,
    /// The health gate; `null` without `[proxy.health]`.
    pub health: Option<HealthStatus>,
    /// The failover backend.
    pub backend: BackendStatus,
    /// Consul reporting; `null` while it is not configured.
    pub consul: Option<ConsulStatus>,
    /// The last run of each `[hooks]` hook that ran, by its key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hooks: BTreeMap<String, LastRun>,
    /// The `[[duty]]` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duties: Vec<DutyStatus>,
}

/// The agent process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// Its pid.
    pub pid: u32,
    /// Seconds since it started.
    pub uptime_seconds: u64,
    /// Lifecycle phase, as its name: "starting", "spawning",
    /// "running:healthy", "stopping:failover", ... (see [`PhaseName`]).
    pub phase: PhaseName,
}

/// The supervised proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyStatus {
    /// Its command line.
    pub command: String,
    /// Its pid while it runs.
    pub pid: Option<i32>,
    /// Seconds since it was started, while it runs.
    pub uptime_seconds: Option<u64>,
    /// Restarts so far.
    pub restarts: u32,
    /// How the last proxy ended, if one did.
    pub last_exit: Option<LastExit>,
    /// Resident memory in bytes (where the OS lets sysinfo read it).
    pub rss_bytes: Option<u64>,
    /// CPU time used so far, in seconds (same).
    pub cpu_seconds: Option<f64>,
}

/// How a proxy ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExit {
    /// For people: "exited 0", "killed by SIGKILL".
    pub how: String,
    /// As a shell reports it: the code, or 128+N for signal N.
    pub code: u8,
    /// When, in seconds since the Unix epoch.
    pub at: u64,
}

/// The health gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// What is checked: "http URL", "tcp HOST:PORT" or "exec COMMAND".
    pub check: String,
    /// Passes in a row to become healthy.
    pub rise: u32,
    /// Failures in a row to become unhealthy.
    pub fall: u32,
    /// The checker's latest results.
    #[serde(flatten)]
    pub view: HealthView,
}

/// The failover backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// `[failover] backend`.
    pub name: String,
    /// Operations that failed so far.
    pub failures: u64,
    /// Backend-specific: see docs/status.md.
    pub details: serde_json::Value,
}

/// Resident memory and CPU time of one process, through sysinfo; `None`
/// where sysinfo does not support the OS (OpenBSD) or the process is gone.
#[derive(Debug, Default)]
pub struct Sampler {
    system: sysinfo::System,
}

impl Sampler {
    /// `(rss_bytes, cpu_seconds)` of `pid`.
    pub fn sample(&mut self, pid: u32) -> (Option<u64>, Option<f64>) {
        if !sysinfo::IS_SUPPORTED_SYSTEM {
            return (None, None);
        }
        let pid = sysinfo::Pid::from_u32(pid);
        self.system.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::Some(&[pid]),
            true,
            sysinfo::ProcessRefreshKind::nothing()
                .with_memory()
                .with_cpu(),
        );
        self.system.process(pid).map_or((None, None), |p| {
            #[allow(clippy::cast_precision_loss)] // milliseconds of CPU fit f64 exactly
            let cpu = p.accumulated_cpu_time() as f64 / 1000.0;
            (Some(p.memory()), Some(cpu))
        })
    }
}

impl Status {
    /// The text `handoff status` prints for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "handoff {} on {} (pid {}, up {}), {}",
            self.version,
            self.node,
            self.agent.pid,
            seconds(self.agent.uptime_seconds),
            self.agent.phase
        );
        let level = self.level.map_or("none yet".to_owned(), |l| l.to_string());
        let applied = if self.level_applied {
            "applied"
        } else {
            "in progress"
        };
        let _ = writeln!(out, "level        {level} ({applied})");
        let fresh = if self.role_current {
            ""
        } else {
            " (from before the last level change)"
        };
        let _ = writeln!(out, "role         {}{fresh}", self.role);
        match &self.maintenance {
            Some(m) => {
                let _ = writeln!(
                    out,
                    "maintenance  yes, since {} by uid {}: {}",
                    rfc3339(m.since),
                    m.uid,
                    m.reason
                );
            }
            None => out.push_str("maintenance  no\n"),
        }
        self.render_proxy(&mut out);
        if let Some(h) = &self.health {
            let verdict = if h.view.healthy {
                "healthy"
            } else {
                "not healthy"
            };
            let last = match (&h.view.last_error, h.view.last_at) {
                (_, None) => "no check yet".to_owned(),
                (None, Some(at)) => format!("last check passed at {}", rfc3339(at)),
                (Some(e), Some(at)) => format!("last check failed at {}: {e}", rfc3339(at)),
            };
            let _ = writeln!(
                out,
                "health       {verdict}: {} passes, {} failures in a row (rise {}, fall {}); {last}\n             check {}",
                h.view.passes, h.view.failures, h.rise, h.fall, h.check
            );
        }
        let _ = write!(
            out,
            "backend      {} ({} failed operations)",
            self.backend.name, self.backend.failures
        );
        if let serde_json::Value::Object(details) = &self.backend.details {
            for (key, value) in details {
                let _ = write!(out, "\n             {key} = {value}");
            }
        }
        out.push('\n');
        self.render_consul(&mut out);
        self.render_hooks(&mut out);
        out
    }

    /// One line per hook that ran, and per duty.
    fn render_hooks(&self, out: &mut String) {
        let run = |r: &LastRun| {
            let exit = r.exit.map(|e| format!(", exit {e}")).unwrap_or_default();
            format!(
                "{}{exit}, {} ms, at {}",
                r.result.name(),
                r.took_ms,
                rfc3339(r.at)
            )
        };
        for (hook, last) in &self.hooks {
            let _ = writeln!(out, "hook         {hook}: {}", run(last));
        }
        for duty in &self.duties {
            let state = match (duty.running, duty.next_in_ms) {
                (true, _) => "running".to_owned(),
                (false, Some(ms)) => format!("next in {}", seconds(ms / 1000)),
                (false, None) => "off (not master at level up)".to_owned(),
            };
            let last = duty
                .last
                .as_ref()
                .map(|r| format!("; last {}", run(r)))
                .unwrap_or_default();
            let _ = writeln!(out, "duty         {}: {state}{last}", duty.name);
        }
    }

    fn render_consul(&self, out: &mut String) {
        let Some(c) = &self.consul else {
            out.push_str("consul       not configured\n");
            return;
        };
        let _ = write!(
            out,
            "consul       {} as {} at {}",
            c.service, c.service_id, c.address
        );
        match (&c.last_error, &c.tag, c.check) {
            (Some(error), _, _) => {
                let _ = write!(
                    out,
                    "\n             not registered ({} errors): {error}",
                    c.errors
                );
            }
            (None, Some(tag), Some(check)) => {
                let _ = write!(out, "\n             registered: tag {tag}, check {check}");
            }
            _ => out.push_str("\n             not registered yet"),
        }
        let masters = if c.masters.is_empty() {
            "none".to_owned()
        } else {
            c.masters.join(", ")
        };
        let _ = write!(out, "\n             masters: {masters}");
        if c.split_brain {
            out.push_str(" (SPLIT BRAIN)");
        }
        out.push('\n');
    }

    fn render_proxy(&self, out: &mut String) {
        let p = &self.proxy;
        match (p.pid, p.uptime_seconds) {
            (Some(pid), Some(up)) => {
                let _ = write!(out, "proxy        pid {pid}, up {}", seconds(up));
            }
            _ => out.push_str("proxy        not running"),
        }
        let _ = writeln!(out, ", {} restarts: {}", p.restarts, p.command);
        if let (Some(rss), Some(cpu)) = (p.rss_bytes, p.cpu_seconds) {
            #[allow(clippy::cast_precision_loss)] // display only
            let mib = rss as f64 / (1024.0 * 1024.0);
            let _ = writeln!(out, "             rss {mib:.1} MiB, cpu {cpu:.2} s");
        }
        if let Some(e) = &p.last_exit {
            let _ = writeln!(
                out,
                "             last exit: {} (status {}) at {}",
                e.how,
                e.code,
                rfc3339(e.at)
            );
        }
    }
}

fn seconds(s: u64) -> String {
    humantime::format_duration(Duration::from_secs(s)).to_string()
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// The last run of one hook or duty, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    /// How it ended.
    pub result: Outcome,
    /// Its exit status, when it exited.
    pub exit: Option<u8>,
    /// How long it ran.
    pub took_ms: u64,
    /// When it ended, in seconds since the Unix epoch.
    pub at: u64,
}

/// What `status` shows of one duty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DutyStatus {
    /// Its name.
    pub name: String,
    /// A run is under way.
    pub running: bool,
    /// Milliseconds until the next start, while duties are on.
    pub next_in_ms: Option<u64>,
    /// Its last run.
    pub last: Option<LastRun>,
}
