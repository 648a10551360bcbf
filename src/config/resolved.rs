//! The config's second stage (ripgrep's `LowArgs -> HiArgs`): after
//! validation, [`resolve`] turns the file's sections into what the rest of
//! handoff takes, with every default and preset applied once and every
//! choice a type.
//!
//! Owns: the backend as one enum that carries its own section (so a
//! `backend = "command"` without its commands cannot be represented), the
//! proxy's signals with the preset applied, the health gate, the stop budget
//! and the waits it counts, Consul's settings with the VIPs it advertises,
//! and what the HTTP endpoint shows. Does not own: checking the file
//! (`super::validate`, which runs first, so `resolve` never fails), or what
//! the environment adds to Consul's settings (`crate::consul::Settings`).

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    path::PathBuf,
    time::Duration,
};

use nix::sys::signal::Signal;

use super::{
    Argv, BackendKind, BgpConfig, CarpConfig, CommandConfig, Config, ConsulConfig, DutyConfig,
    ExitCodeMap, Handover, HealthConfig, HooksConfig, HostPort, HttpUrl, KeepalivedConfig,
    LogConfig, Probe, ProcessGroup, ReloadConfig, RestartPolicy,
};

/// After the proxy's exit on the stop path, how long the machine waits for
/// a `down` that was asked for but not yet confirmed: the one wait a stop
/// adds to `failover_timeout + settle + stop_timeout`. Defined here, beside
/// the budget that counts it, so the two cannot disagree.
pub const DOWN_GRACE: Duration = Duration::from_secs(1);

/// Longest a clean exit spends deregistering from Consul
/// (`crate::consul::Consul::shutdown`); counted in the budget when `[consul]`
/// is set. It keeps a hanging Consul's cost to a stop under 1 s.
pub const CONSUL_EXIT_LIMIT: Duration = Duration::from_millis(300);

/// Without `[proxy.health]`, how long the proxy must run to count as healthy.
pub const STARTUP_GATE: Duration = Duration::from_secs(1);

/// The whole config, resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The file it came from; `None` when the default path was missing and
    /// every default applies.
    pub path: Option<PathBuf>,
    /// The proxy and how it is signalled.
    pub proxy: Proxy,
    /// What moves the floating IP.
    pub backend: Backend,
    /// The stop path's waits.
    pub failover: Failover,
    /// The longest a planned stop can take, in its parts.
    pub budget: StopBudget,
    /// Consul reporting, with `[consul]` (its `vips` filled in).
    pub consul: Option<ConsulConfig>,
    /// The control socket and the state dir.
    pub control: Control,
    /// `[http]`
    pub http: Http,
    /// `[log]`
    pub log: LogConfig,
    /// `[hooks]`
    pub hooks: HooksConfig,
    /// `[[duty]]`
    pub duties: Vec<DutyConfig>,
}

/// `[proxy]` with the preset applied.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// `[proxy] command`; the command line after `--` wins over it.
    pub command: Option<Argv>,
    /// How reloads are sent, checked and confirmed (planned for the
    /// command line with [`ReloadConfig::plan`]).
    pub reload: ReloadConfig,
    /// The graceful stop signal.
    pub stop_signal: Signal,
    /// How long the proxy gets after `stop_signal` before SIGKILL.
    pub stop_timeout: Duration,
    /// Whether the proxy shares handoff's process group.
    pub process_group: ProcessGroup,
    /// Remaps the proxy's exit status.
    pub exit_code_map: ExitCodeMap,
    /// What happens when the proxy exits by itself.
    pub restart: RestartPolicy,
    /// What makes the proxy healthy.
    pub gate: HealthGate,
    /// `keep_env`: the Consul credentials every child keeps (each one of
    /// `crate::child_env::CONSUL_CREDENTIALS`).
    pub keep_env: Vec<String>,
}

/// What makes the proxy healthy, and so lets the node go up.
#[derive(Debug, Clone)]
pub enum HealthGate {
    /// Without `[proxy.health]`: running this long.
    RunningFor(Duration),
    /// `[proxy.health]`: the checks (`crate::health`).
    Checks(HealthCheck),
}

impl HealthGate {
    /// The checks, if any.
    pub fn checks(&self) -> Option<&HealthCheck> {
        match self {
            HealthGate::Checks(check) => Some(check),
            HealthGate::RunningFor(_) => None,
        }
    }
}

/// `[proxy.health]`, with its one check.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// What to check.
    pub check: Check,
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Passes in a row before healthy.
    pub rise: NonZeroU32,
    /// Failures in a row before unhealthy.
    pub fall: NonZeroU32,
}

/// The one check of `[proxy.health]`.
#[derive(Debug, Clone)]
pub enum Check {
    /// GET answers 2xx.
    Http(HttpUrl),
    /// A TCP connect succeeds.
    Tcp(HostPort),
    /// The command exits 0.
    Exec(Argv),
}

/// `[failover] backend` with its section.
#[derive(Debug, Clone)]
pub enum Backend {
    /// No floating IP: nothing to move, never a wait.
    None,
    /// `[failover.command]`
    Command(CommandConfig),
    /// `[failover.keepalived]`
    Keepalived(KeepalivedConfig),
    /// `[failover.carp]`
    Carp(CarpConfig),
    /// `[failover.bgp]`
    Bgp(BgpConfig),
}

impl Backend {
    /// Which backend.
    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::None => BackendKind::None,
            Backend::Command(_) => BackendKind::Command,
            Backend::Keepalived(_) => BackendKind::Keepalived,
            Backend::Carp(_) => BackendKind::Carp,
            Backend::Bgp(_) => BackendKind::Bgp,
        }
    }

    /// Its name in the config.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// How a planned stop hands over: keepalived's and BGP's `handover`;
    /// CARP and the commands have a single demotion, so for them it is
    /// `fast` (down at once).
    pub fn handover(&self) -> Handover {
        match self {
            Backend::Keepalived(k) => k.handover,
            Backend::Bgp(b) => b.handover,
            Backend::None | Backend::Command(_) | Backend::Carp(_) => Handover::Fast,
        }
    }

    /// The floating addresses the config names: keepalived's VIPs, the
    /// BGP prefixes' addresses.
    pub fn vips(&self) -> Vec<IpAddr> {
        match self {
            Backend::Keepalived(k) => k.vip.clone(),
            Backend::Bgp(b) => b.addresses(),
            Backend::None | Backend::Command(_) | Backend::Carp(_) => Vec::new(),
        }
    }

    /// Whether several nodes hold the service at once by design (BGP
    /// anycast): two masters are then no split brain, and a master-only
    /// duty has no single master to run on.
    pub fn several_masters(&self) -> bool {
        matches!(self, Backend::Bgp(_))
    }
}

/// The stop path's waits, from `[failover]`.
#[derive(Debug, Clone)]
pub struct Failover {
    /// Longest wait for the IP to move on stop or demote.
    pub timeout: Duration,
    /// Extra wait after the move, before the proxy is stopped.
    pub settle: Duration,
    /// Proof that the peer serves the VIP, if configured.
    pub probe: Option<Probe>,
}

/// The longest a planned stop can take (what systemd's stop timeout and
/// Nomad's `kill_timeout` must cover): the failover wait, settle, the
/// graceful stop, and what the exit may add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopBudget {
    /// `failover_timeout`
    pub failover_timeout: Duration,
    /// `settle`
    pub settle: Duration,
    /// `stop_timeout`
    pub stop_timeout: Duration,
    /// [`DOWN_GRACE`], plus [`CONSUL_EXIT_LIMIT`] with `[consul]`.
    pub exit: Duration,
    /// `[hooks.on_stop]`'s timeout: the exit waits for it (and what the
    /// move queued behind it) at most that long.
    pub on_stop: Duration,
}

impl StopBudget {
    /// The whole budget.
    pub fn total(&self) -> Duration {
        self.failover_timeout + self.settle + self.stop_timeout + self.exit + self.on_stop
    }
}

/// `[control]`
#[derive(Debug, Clone)]
pub struct Control {
    /// The control socket.
    pub socket: PathBuf,
    /// A group allowed to use the socket besides root (it existed when the
    /// config was validated).
    pub group: Option<String>,
    /// Where the ledger, lock and maintenance record live.
    pub state_dir: PathBuf,
}

/// `[http]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http {
    /// The endpoint's address; `None` disables it.
    pub listen: Option<SocketAddr>,
    /// Show the proxy's arguments over HTTP and in the log lines that
    /// announce its start; otherwise they are redacted (`crate::redact`).
    /// The control socket always shows them.
    pub show_argv: bool,
}

/// Turns a validated config into what the rest of handoff takes.
///
/// Only `super::parse` and `super::load` call it, after `validate` found
/// nothing: a backend without its section is a validation error there, so
/// the fallbacks below (a section's defaults) are never reached from a file.
pub(super) fn resolve(config: Config, path: Option<PathBuf>) -> Resolved {
    let Config {
        proxy,
        failover,
        consul,
        control,
        http,
        log,
        hooks,
        duty,
    } = config;
    let backend = backend(&failover);
    let consul = consul.map(|section| ConsulConfig {
        vips: backend.vips(),
        several_masters: backend.several_masters(),
        ..section.into_inner()
    });
    let exit = DOWN_GRACE
        + if consul.is_some() {
            CONSUL_EXIT_LIMIT
        } else {
            Duration::ZERO
        };
    let budget = StopBudget {
        failover_timeout: failover.failover_timeout,
        settle: failover.settle,
        stop_timeout: proxy.stop_timeout,
        exit,
        on_stop: hooks
            .on_stop
            .as_ref()
            .map_or(Duration::ZERO, |h| h.get_ref().timeout),
    };
    let (reload, stop_signal) = (proxy.reload(), proxy.stop_signal());
    let gate = proxy
        .health
        .map(toml::Spanned::into_inner)
        .and_then(health_check)
        .map_or(HealthGate::RunningFor(STARTUP_GATE), HealthGate::Checks);
    Resolved {
        path,
        proxy: Proxy {
            reload,
            stop_signal,
            command: proxy.command,
            stop_timeout: proxy.stop_timeout,
            process_group: proxy.process_group,
            exit_code_map: proxy.exit_code_map,
            restart: proxy.restart,
            gate,
            keep_env: proxy
                .keep_env
                .into_iter()
                .map(toml::Spanned::into_inner)
                .collect(),
        },
        backend,
        failover: Failover {
            timeout: failover.failover_timeout,
            settle: failover.settle,
            probe: failover.probe,
        },
        budget,
        consul,
        control: Control {
            socket: control.socket,
            group: control.group.map(toml::Spanned::into_inner),
            state_dir: control.state_dir,
        },
        http: Http {
            listen: http.listen.0,
            show_argv: http.show_argv,
        },
        log,
        hooks,
        duties: duty,
    }
}

/// The one check of a validated `[proxy.health]` (validation demands
/// exactly one).
fn health_check(health: HealthConfig) -> Option<HealthCheck> {
    let check = match (health.http, health.tcp, health.exec) {
        (Some(url), _, _) => Check::Http(url),
        (_, Some(addr), _) => Check::Tcp(addr),
        (_, _, Some(argv)) => Check::Exec(argv),
        (None, None, None) => return None,
    };
    Some(HealthCheck {
        check,
        interval: health.interval,
        timeout: health.timeout,
        rise: health.rise,
        fall: health.fall,
    })
}

/// The backend `failover` names, with its section (its defaults where the
/// section is missing, which `validate` refuses for a file).
fn backend(failover: &super::FailoverConfig) -> Backend {
    fn section<T: Clone + Default>(section: Option<&toml::Spanned<T>>) -> T {
        section.map(|s| s.get_ref().clone()).unwrap_or_default()
    }
    match failover.backend() {
        BackendKind::None => Backend::None,
        BackendKind::Command => match &failover.command {
            Some(command) => Backend::Command(command.get_ref().clone()),
            None => Backend::None,
        },
        BackendKind::Keepalived => Backend::Keepalived(section(failover.keepalived.as_ref())),
        BackendKind::Carp => Backend::Carp(section(failover.carp.as_ref())),
        BackendKind::Bgp => Backend::Bgp(section(failover.bgp.as_ref())),
    }
}
