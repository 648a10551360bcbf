//! The configuration file: its schema, where it is found, and its validation.
//!
//! Owns: parsing TOML into typed sections (`deny_unknown_fields` everywhere,
//! because a typo must not silently disable a safety), the defaults and
//! presets, checks across keys, and the resolved value the rest of handoff
//! takes. Every error names `file:line:col`.
//! Does not own: host checks and budget warnings (`crate::check`).
//!
//! Two stages, as in ripgrep (`LowArgs -> HiArgs`). First the file's shape:
//! serde parses and checks each value where it stands (so errors carry that
//! value's span), and `validate` checks keys against each other and reports
//! every problem at once. Then `resolved` turns the valid sections into a
//! [`Resolved`]: defaults and presets applied once, the backend an enum with
//! its section. Only this module sees the raw sections and their spans.

mod bgp;
mod endpoint;
mod error;
mod hooks;
mod preset;
mod reload;
mod resolved;
mod signal;
mod validate;
mod values;

use std::{
    net::IpAddr,
    num::NonZeroU32,
    path::{Path, PathBuf},
    time::Duration,
};

use nix::sys::signal::Signal;
use serde::Deserialize;
use toml::Spanned;

pub use bgp::{BgpConfig, BirdName, Prefix};
pub use endpoint::Endpoint;
pub use error::{ConfigError, ConfigErrors};
pub use hooks::{DEFAULT_HOOK_TIMEOUT, DutyConfig, HookCommand, HooksConfig};
pub use preset::Preset;
pub use reload::{Confirm, Confirmations, ReloadConfig, ReloadPlan, ReloadSend};
pub use resolved::{
    Backend, CONSUL_EXIT_LIMIT, Check, Control, DOWN_GRACE, Failover, HealthCheck, HealthGate,
    Http, Proxy, Resolved, STARTUP_GATE, StopBudget,
};
pub use signal::{Reload, SignalName};
pub use values::{
    Argv, DemoteBy, ExitCodeMap, HostPort, HttpUrl, Listen, LogLevel, Probe,
    duration::{CEILING as DURATION_CEILING, RELOAD_CEILING, within as duration_within},
};

/// Used when neither `--config` nor `$HANDOFF_CONFIG` names a file.
pub const DEFAULT_PATH: &str = "/etc/handoff.toml";
/// The environment variable that names the config file.
pub const ENV_VAR: &str = "HANDOFF_CONFIG";

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[proxy]`
    pub proxy: ProxyConfig,
    /// `[failover]`
    pub failover: FailoverConfig,
    /// `[consul]`; absent means no Consul reporting.
    pub consul: Option<Spanned<ConsulConfig>>,
    /// `[control]`
    pub control: ControlConfig,
    /// `[http]`
    pub http: HttpConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[hooks]`
    pub hooks: HooksConfig,
    /// `[[duty]]`
    pub duty: Vec<DutyConfig>,
}

/// `[proxy]`: the child handoff runs and how it is signalled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// The proxy's argv; the command line after `--` wins.
    pub command: Option<Argv>,
    /// Signal defaults.
    pub preset: Preset,
    /// Overrides the preset's reload translation.
    pub reload_signal: Option<Reload>,
    /// Run instead of sending a signal to reload (caddy's `caddy reload`).
    pub reload_command: Option<Spanned<Argv>>,
    /// Run before a reload is sent; `[]` turns the preset's off.
    pub reload_check: Option<Spanned<Vec<String>>>,
    /// What confirms a reload.
    pub reload_confirm: Option<Spanned<Vec<Confirm>>>,
    /// Check, send and confirmation together.
    #[serde(deserialize_with = "values::duration::reload")]
    pub reload_timeout: Duration,
    /// Overrides the preset's graceful stop signal.
    pub stop_signal: Option<SignalName>,
    /// How long the proxy gets after `stop_signal` before SIGKILL.
    #[serde(with = "values::duration")]
    pub stop_timeout: Duration,
    /// Whether the proxy shares handoff's process group.
    pub process_group: ProcessGroup,
    /// Remaps the proxy's exit status.
    pub exit_code_map: ExitCodeMap,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// The promotion gate; absent means "running for 1s".
    pub health: Option<Spanned<HealthConfig>>,
    /// Consul credentials the children keep (`crate::child_env`); each
    /// name is checked where it stands.
    pub keep_env: Vec<Spanned<String>>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            command: None,
            preset: Preset::default(),
            reload_signal: None,
            reload_command: None,
            reload_check: None,
            reload_confirm: None,
            reload_timeout: Duration::from_secs(15),
            stop_signal: None,
            stop_timeout: Duration::from_secs(10),
            process_group: ProcessGroup::default(),
            exit_code_map: ExitCodeMap::default(),
            restart: RestartPolicy::default(),
            health: None,
            keep_env: Vec::new(),
        }
    }
}

impl ProxyConfig {
    /// The graceful stop signal: explicit, else the preset's.
    fn stop_signal(&self) -> Signal {
        self.stop_signal
            .map_or_else(|| self.preset.stop_signal(), |s| s.0)
    }

    /// The reload keys with the preset, to be planned for the command line.
    fn reload(&self) -> ReloadConfig {
        ReloadConfig {
            preset: self.preset,
            signal: self.reload_signal,
            command: self.reload_command.clone().map(Spanned::into_inner),
            check: self.reload_check.clone().map(Spanned::into_inner),
            confirm: self.reload_confirm.clone().map(Spanned::into_inner),
            timeout: self.reload_timeout,
            health: self.health.is_some(),
        }
    }
}

/// `process_group`: see the spec; Nomad's final kill reaches only handoff's group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessGroup {
    /// Stay in handoff's group, so a supervisor's group kill reaches the proxy.
    #[default]
    Inherit,
    /// A group of its own, signalled as a group.
    Own,
}

/// `restart`: what happens when the proxy exits by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Exit with the proxy's status (right under Nomad, systemd and rc.d).
    #[default]
    Never,
    /// Restart after a non-zero exit or a death by signal.
    OnFailure,
    /// Restart after any exit.
    Always,
}

/// `[proxy.health]`: exactly one of `http`, `tcp`, `exec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// GET this URL; 2xx passes.
    pub http: Option<HttpUrl>,
    /// Connect to this address.
    pub tcp: Option<HostPort>,
    /// Run this command; exit 0 passes.
    pub exec: Option<Argv>,
    /// Time between checks.
    #[serde(with = "values::duration", default = "default_interval")]
    pub interval: Duration,
    /// Time one check may take.
    #[serde(with = "values::duration", default = "default_check_timeout")]
    pub timeout: Duration,
    /// Consecutive passes before promotion.
    #[serde(default = "default_threshold")]
    pub rise: NonZeroU32,
    /// Consecutive failures before demotion.
    #[serde(default = "default_threshold")]
    pub fall: NonZeroU32,
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_check_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_threshold() -> NonZeroU32 {
    NonZeroU32::MIN.saturating_add(1)
}

/// `[failover]`: which backend moves the floating IP, and the stop-path waits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverConfig {
    /// The backend; `none` when absent.
    pub backend: Option<Spanned<BackendKind>>,
    /// Longest wait for the IP to move on stop or demote.
    #[serde(with = "values::duration")]
    pub failover_timeout: Duration,
    /// Extra wait after the move, before the proxy is stopped.
    #[serde(with = "values::duration")]
    pub settle: Duration,
    /// Optional proof that the peer serves the VIP.
    pub probe: Option<Probe>,
    /// `[failover.carp]`
    pub carp: Option<Spanned<CarpConfig>>,
    /// `[failover.keepalived]`
    pub keepalived: Option<Spanned<KeepalivedConfig>>,
    /// `[failover.command]`
    pub command: Option<Spanned<CommandConfig>>,
    /// `[failover.bgp]`
    pub bgp: Option<Spanned<BgpConfig>>,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            backend: None,
            failover_timeout: Duration::from_secs(10),
            settle: Duration::ZERO,
            probe: None,
            carp: None,
            keepalived: None,
            command: None,
            bgp: None,
        }
    }
}

impl FailoverConfig {
    /// The configured backend.
    fn backend(&self) -> BackendKind {
        self.backend
            .as_ref()
            .map_or(BackendKind::None, |b| *b.get_ref())
    }
}

/// `backend`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// OpenBSD CARP group demotion.
    Carp,
    /// keepalived `track_file`.
    Keepalived,
    /// External demote/promote/state commands.
    Command,
    /// BIRD 2's static protocols, announced over BGP (anycast).
    Bgp,
    /// No floating IP: never waits.
    None,
}

impl BackendKind {
    /// The name used in the config.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Carp => "carp",
            BackendKind::Keepalived => "keepalived",
            BackendKind::Command => "command",
            BackendKind::Bgp => "bgp",
            BackendKind::None => "none",
        }
    }
}

/// `[failover.carp]` (OpenBSD).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CarpConfig {
    /// Interface group whose demote counter we raise.
    pub group: String,
    /// carp interfaces whose state we watch; never empty.
    #[serde(deserialize_with = "values::interfaces")]
    pub interfaces: Vec<String>,
    /// Our share of the group counter.
    pub demote_by: DemoteBy,
    /// The ifconfig(8) to run.
    pub ifconfig: PathBuf,
    /// A file that every reboot removes and nothing else touches; its
    /// content (created with a random id when missing) tells the ledger
    /// which boot it belongs to (`crate::failover::carp::boot`).
    pub boot_marker: PathBuf,
}

impl Default for CarpConfig {
    fn default() -> Self {
        CarpConfig {
            group: "edge".into(),
            interfaces: vec!["carp0".into()],
            demote_by: DemoteBy(50),
            ifconfig: "/sbin/ifconfig".into(),
            boot_marker: crate::platform::DEFAULT_BOOT_MARKER.into(),
        }
    }
}

/// `[failover.keepalived]` (Linux, keepalived >= 2.1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepalivedConfig {
    /// The file keepalived tracks; written atomically.
    pub track_file: PathBuf,
    /// Priority drop in standby.
    pub standby_value: i32,
    /// Value that forces FAULT.
    pub down_value: i32,
    /// Planned-stop handover.
    pub handover: Handover,
    /// Addresses whose local presence means MASTER.
    pub vip: Vec<IpAddr>,
    /// keepalived instance name in notify_fifo.
    pub instance: Option<String>,
    /// keepalived's notify FIFO.
    pub notify_fifo: Option<PathBuf>,
    /// The VIPs on lo while the proxy serves (`crate::loopback_vip`).
    pub loopback_vip: bool,
}

impl Default for KeepalivedConfig {
    fn default() -> Self {
        KeepalivedConfig {
            track_file: "/var/lib/handoff/keepalived.track".into(),
            standby_value: -100,
            down_value: -254,
            handover: Handover::default(),
            vip: Vec::new(),
            instance: None,
            notify_fifo: None,
            loopback_vip: false,
        }
    }
}

/// `handover`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Handover {
    /// Standby first, down once moved: never a moment without a VIP holder.
    #[default]
    Graceful,
    /// Down (FAULT) at once.
    Fast,
}

/// `[failover.command]`: anything else, driven by three commands (no shell).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Releases the floating IP.
    pub demote: Argv,
    /// Claims the floating IP.
    pub promote: Argv,
    /// Prints MASTER, BACKUP or FAULT.
    pub state: Argv,
    /// Longest time one command may run before it is killed.
    #[serde(with = "values::duration", default = "default_command_timeout")]
    pub timeout: Duration,
}

fn default_command_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `[consul]`. Every key left out falls back to the `CONSUL_HTTP_*`
/// variable of the same meaning (`crate::consul::Settings`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsulConfig {
    /// Agent address; default from `CONSUL_HTTP_ADDR`.
    #[serde(deserialize_with = "values::consul_address")]
    pub address: Option<String>,
    /// Token file; default from `CONSUL_HTTP_TOKEN_FILE` / `CONSUL_HTTP_TOKEN`.
    pub token_file: Option<PathBuf>,
    /// Registered service name.
    pub service: String,
    /// Registered service ID; `${hostname}` is expanded.
    pub service_id: String,
    /// TTL of the check.
    #[serde(with = "values::duration")]
    pub ttl: Duration,
    /// On stop, also wait until another node reports master.
    pub confirm_peer: bool,
    /// Consul removes this node's instance after its check has been
    /// critical this long (at least 1m, Consul's minimum).
    #[serde(deserialize_with = "values::duration::deregister")]
    pub deregister_critical_after: Option<Duration>,
    /// CA bundle for an https agent; default from `CONSUL_CACERT`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate; default from `CONSUL_CLIENT_CERT`.
    pub cert_file: Option<PathBuf>,
    /// Client key; default from `CONSUL_CLIENT_KEY`.
    pub key_file: Option<PathBuf>,
    /// Name the agent's certificate must carry; default from
    /// `CONSUL_TLS_SERVER_NAME`.
    pub tls_server_name: Option<String>,
    /// `false` accepts any certificate; default from `CONSUL_HTTP_SSL_VERIFY`.
    pub ssl_verify: Option<bool>,
    /// The floating addresses advertised in the registration's Meta: not a
    /// key of the file, but the backend's (the resolved stage fills it in).
    #[serde(skip)]
    pub vips: Vec<IpAddr>,
    /// Several nodes are master at once by design (BGP anycast), so two
    /// masters are no split brain: the backend's, like `vips`.
    #[serde(skip)]
    pub several_masters: bool,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig {
            address: None,
            token_file: None,
            service: "edge".into(),
            service_id: "edge-${hostname}".into(),
            ttl: Duration::from_secs(10),
            confirm_peer: false,
            deregister_critical_after: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            tls_server_name: None,
            ssl_verify: None,
            vips: Vec::new(),
            several_masters: false,
        }
    }
}

/// `[control]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The control socket.
    pub socket: PathBuf,
    /// A group allowed to use the socket besides root.
    pub group: Option<Spanned<String>>,
    /// Where the ledger, lock and maintenance state live.
    pub state_dir: PathBuf,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: crate::platform::DEFAULT_SOCKET.into(),
            group: None,
            state_dir: crate::platform::DEFAULT_STATE_DIR.into(),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address; `""` disables.
    pub listen: Listen,
    /// Show the proxy's arguments over HTTP and in the start's log lines
    /// (`crate::redact`); off, only the program and option names show.
    pub show_argv: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 9480));
        HttpConfig {
            listen: Listen(Some(loopback)),
            show_argv: false,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// Filter; `RUST_LOG` wins when set.
    pub level: Option<LogLevel>,
}

/// `format`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the config comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Named by `--config` or `$HANDOFF_CONFIG`: it must exist.
    Explicit(PathBuf),
    /// The default path: a missing file means "all defaults".
    Default(PathBuf),
}

impl Location {
    /// `--config`, else `$HANDOFF_CONFIG`, else the default path.
    pub fn find(flag: Option<&Path>) -> Location {
        if let Some(path) = flag {
            return Location::Explicit(path.to_path_buf());
        }
        match std::env::var_os(ENV_VAR) {
            Some(path) if !path.is_empty() => Location::Explicit(path.into()),
            _ => Location::Default(DEFAULT_PATH.into()),
        }
    }

    /// The path, whichever kind.
    pub fn path(&self) -> &Path {
        match self {
            Location::Explicit(p) | Location::Default(p) => p,
        }
    }
}

/// Reads, parses, validates and resolves the config at `location`.
pub fn load(location: &Location) -> Result<Resolved, ConfigErrors> {
    let path = location.path();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && matches!(location, Location::Default(_)) =>
        {
            Ok(resolved::resolve(Config::default(), None))
        }
        Err(e) => Err(ConfigErrors(vec![ConfigError::whole_file(
            path,
            format!("cannot read config: {e}"),
        )])),
    }
}

/// Parses, validates and resolves config text read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Resolved, ConfigErrors> {
    let config = read(path, text)?;
    Ok(resolved::resolve(config, Some(path.to_path_buf())))
}

/// The first stage: parses and validates; `path` is used in messages only.
fn read(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let config: Config = toml::from_str(text).map_err(|e| {
        let message = e.message().trim_end().to_owned();
        ConfigErrors(vec![ConfigError::at(path, text, e.span(), message)])
    })?;
    let problems = validate::validate(&config);
    if problems.is_empty() {
        return Ok(config);
    }
    Err(ConfigErrors(
        problems
            .into_iter()
            .map(|(span, message)| ConfigError::at(path, text, span, message))
            .collect(),
    ))
}

#[cfg(test)]
mod tests;
