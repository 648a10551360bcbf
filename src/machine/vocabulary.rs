//! The machine's vocabulary: what it is told ([`Event`]), what it asks for
//! ([`Action`], [`Timer`], [`Note`], [`Notice`], [`Stopwatch`]), what it
//! shows ([`View`], [`Phase`], [`PhaseName`], [`Step`]) and the config it
//! decides by ([`Policy`]). Types only; the decisions are in the parent
//! module and its `stop` and `maintenance` children.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::{
    config::{Confirmations, ExitCodeMap, RestartPolicy},
    failover::{BackendReport, Level, Role, Watch},
    process::ProcessEnd,
};

/// First restart delay; doubled after each restart.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest restart delay; also how long a proxy must stay up to reset it.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// After the proxy's exit on the stop path, how long to wait for a `down`
/// that was asked for but not yet confirmed; defined with the stop budget
/// that counts it.
pub use crate::config::DOWN_GRACE;

/// The parts of the config that decisions depend on.
#[derive(Debug, Clone)]
#[allow(clippy::struct_excessive_bools)] // independent switches of the config, not a hidden enum
pub struct Policy {
    /// How a reload (SIGHUP, `handoff reload`) is checked, sent and
    /// confirmed.
    pub reload: ReloadPolicy,
    /// Graceful stop signal for the proxy.
    pub stop_signal: Signal,
    /// From stop signal to SIGKILL.
    pub stop_timeout: Duration,
    /// Longest wait for the IP to move.
    pub failover_timeout: Duration,
    /// Wait after the move, before stopping the proxy.
    pub settle: Duration,
    /// What to do when the proxy exits by itself.
    pub restart: RestartPolicy,
    /// Without `[proxy.health]`: running this long counts as healthy. With
    /// it, `None`, and the health checker reports [`Event::Health`].
    pub startup_gate: Option<Duration>,
    /// Remaps the proxy's exit status.
    pub exit_code_map: ExitCodeMap,
    /// The level a planned stop goes to first: `Standby` for keepalived's
    /// graceful handover (a priority drop, so the VIP always has a holder),
    /// else `Down`. Either way the node is `Down` before the proxy stops.
    pub stop_level: Level,
    /// `[failover] probe` is set: a move counts as confirmed only once the
    /// probe through the VIP succeeds from here (the peer serves it).
    pub probe: bool,
    /// `[consul] confirm_peer`: a move (and `demote`) counts as confirmed
    /// only once Consul shows another node tagged master and passing, or
    /// Consul cannot say.
    pub confirm_peer: bool,
    /// `[hooks]` has a hook: role changes are announced ([`Action::Hook`]).
    pub hooks: bool,
    /// `[[duty]]` has a duty: [`Action::Duties`] switches them.
    pub duties: bool,
    /// `[failover.keepalived] loopback_vip`: the VIPs are on the loopback
    /// interface while the proxy serves ([`Action::LoopbackVip`]).
    pub loopback_vip: bool,
}

/// The reload's part of the [`Policy`]: which steps there are (the
/// dispatcher knows the commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadPolicy {
    /// How the reload reaches the proxy.
    pub send: ReloadBy,
    /// `reload_check` runs first.
    pub check: bool,
    /// What must be seen after the send.
    pub confirm: Confirmations,
    /// Check, send and confirmation together.
    pub timeout: Duration,
}

/// How a reload reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadBy {
    /// This signal.
    Signal(Signal),
    /// `reload_command`.
    Command,
    /// Reloads are refused, and SIGHUP dropped.
    Disabled,
}

/// Something that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// handoff received this signal (SIGCHLD never arrives here).
    Signal(Signal),
    /// handoff received `received`, and the signal reader already sent
    /// `sent` to the proxy by the table of [`Action::FastPath`]: the machine
    /// records it (log, reload count) and sends nothing more.
    Forwarded {
        /// What handoff received.
        received: Signal,
        /// What the reader sent to the proxy.
        sent: Signal,
    },
    /// The proxy was started.
    Spawned,
    /// The proxy could not be started; `code` is 126, 127 or 1.
    SpawnFailed {
        /// handoff's exit status for it.
        code: u8,
    },
    /// The proxy ended.
    ProxyExited(ProcessEnd),
    /// The health gate changed its verdict.
    Health(bool),
    /// The backend reported the role, as it saw it after answering request
    /// `seq`: only a role seen after the stop's `down` confirms a move.
    Role {
        /// Whether this node holds the floating IP.
        role: Role,
        /// The last request the backend had answered when it looked.
        seq: u64,
    },
    /// The backend finished applying the level of request `seq`.
    LevelApplied {
        /// The level.
        level: Level,
        /// Whether the backend reported success.
        ok: bool,
        /// The request it answers (see [`Action::SetLevel`]).
        seq: u64,
    },
    /// The proxy was stopped (`true`, WSTOPPED: SIGSTOP, a terminal's
    /// SIGTSTP/SIGTTIN/SIGTTOU) or continued (`false`). A stopped proxy
    /// serves nobody, whatever its health checks said last.
    ProxySuspended(bool),
    /// An armed timer fired.
    Deadline(Timer),
    /// The probe through the VIP succeeded.
    ProbeSucceeded,
    /// Consul shows another node as master (or cannot say: the wait never
    /// depends on Consul being up).
    PeerConfirmed,
    /// Maintenance was set (`true`) or cleared: a healthy node is held at
    /// `standby` instead of `up` (still a candidate if the peer dies).
    Maintenance(bool),
    /// A step of a reload.
    Reload(ReloadEvent),
}

/// What happens during a reload (`crate::reload` reports the steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadEvent {
    /// `handoff reload` asks for one (SIGHUP arrives as [`Event::Signal`]).
    Requested,
    /// `reload_check` ended: exit 0 (`true`), or not, or timed out.
    Checked(bool),
    /// `reload_command` ended: exit 0 (`true`), or not.
    CommandDone(bool),
    /// The proxy said READY=1 on handoff's private notify socket.
    ProxyReady,
    /// A child of the proxy's main pid appeared that was not there before
    /// the send.
    NewWorker,
    /// Every child of the proxy's main pid from before the send has exited
    /// or says it is shutting down.
    Retired,
    /// The health check passed, after the reload was otherwise confirmed.
    Healthy,
    /// What confirms the reload cannot be watched (the proxy's workers
    /// cannot be listed).
    Unconfirmable,
}

impl From<BackendReport> for Event {
    fn from(report: BackendReport) -> Event {
        match report {
            BackendReport::LevelApplied { level, ok, seq } => {
                Event::LevelApplied { level, ok, seq }
            }
            BackendReport::Role { role, seq } => Event::Role { role, seq },
        }
    }
}

/// Timers the machine arms; arming one again replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// The proxy counts as healthy once this fires.
    HealthGate,
    /// The proxy stayed up long enough: restart backoff starts over.
    BackoffReset,
    /// Restart backoff is over.
    Restart,
    /// `failover_timeout` on the stop path (and the cap on waiting for `down`).
    Failover,
    /// `settle` is over.
    Settle,
    /// `stop_timeout` is over.
    StopTimeout,
    /// How long `handoff demote` keeps the role polled eagerly
    /// (`failover_timeout`) when the IP does not leave.
    DemoteWatch,
    /// `reload_timeout` is over.
    Reload,
}

/// Something the dispatcher must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the backend for this level. `seq` numbers the requests, so that a
    /// report for an older request is never taken for this one.
    SetLevel {
        /// The level.
        level: Level,
        /// Increases with every request.
        seq: u64,
    },
    /// Start the proxy.
    Spawn,
    /// Pass a received signal on to the proxy (translated or not).
    Forward {
        /// What handoff received.
        received: Signal,
        /// What the proxy gets.
        send: Signal,
    },
    /// The signal reader already passed `received` on as `send` (the fast
    /// path): log it as a forward; nothing is sent.
    Forwarded {
        /// What handoff received.
        received: Signal,
        /// What the proxy got.
        send: Signal,
    },
    /// The signal reader's forwarding table from now on: each `(received,
    /// send)` is a signal whose whole decision is "send this to the proxy",
    /// which the reader may therefore send at once, before the loop hears of
    /// it (`crate::signals::FastPath`). Empty: every signal waits for the
    /// loop. Always first in its batch, so that a signal read after the
    /// batch began is routed by the decision the batch carries out.
    FastPath(Vec<(Signal, Signal)>),
    /// A received signal goes nowhere.
    Dropped {
        /// What handoff received.
        signal: Signal,
        /// Why it is dropped.
        reason: DropReason,
    },
    /// Send the graceful stop signal to the proxy.
    StopProxy(Signal),
    /// SIGKILL the proxy (and its group when it has its own).
    KillProxy,
    /// SIGCONT the proxy: it was stopped, and must run to act on the
    /// stop signal (systemd does the same, systemd.kill(5)).
    ContinueProxy,
    /// Start (or restart) a timer.
    Arm(Timer, Duration),
    /// Cancel a timer.
    Disarm(Timer),
    /// Change how eagerly the backend's role is polled.
    Watch(Watch),
    /// Record a decision in the log (at its [`Note::severity`]).
    Note(Note),
    /// Tell systemd ([`Notice`]); a no-op outside a `Type=notify` unit.
    Notify(Notice),
    /// The failover stopwatch. The dispatcher keeps the clock: the machine
    /// says when the wait begins and when the IP moved, never how long.
    Stopwatch(Stopwatch),
    /// Count a proxy restart (the `handoff_proxy_restarts` metric); follows
    /// [`Note::Restarting`].
    CountRestart,
    /// Start (`true`) or cancel (`false`) probing the VIP until it answers.
    Probe(bool),
    /// Start (`true`) or cancel (`false`) waiting for Consul to show another
    /// node as master.
    ConfirmPeer(bool),
    /// A step of a reload for the dispatcher (`crate::reload` runs them).
    Reload(ReloadStep),
    /// Run a role-change hook (`crate::hooks` queues it; hooks run one at a
    /// time and never hold anything up).
    Hook(HookCall),
    /// A second stop signal: `on_stop` is skipped if queued, killed if
    /// running.
    CancelStopHook,
    /// Start (`true`) or stop (`false`) the master-only duties.
    Duties(bool),
    /// Put the VIPs on the loopback interface (`true`) or take them off
    /// (`false`): while they are there, this node accepts what reaches it
    /// for the VIP whether or not it holds the VIP (`crate::loopback_vip`).
    LoopbackVip(bool),
    /// Exit handoff with this status. Never emitted while the proxy lives.
    Exit(u8),
}

/// A role-change hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookName {
    /// The backend reports this node as master.
    OnMaster,
    /// ... as backup.
    OnBackup,
    /// ... as fault.
    OnFault,
    /// An operator holds this node in maintenance.
    OnMaintenance,
    /// The stop sequence began.
    OnStop,
}

impl HookName {
    /// Its key in `[hooks]`.
    pub fn key(self) -> &'static str {
        match self {
            HookName::OnMaster => "on_master",
            HookName::OnBackup => "on_backup",
            HookName::OnFault => "on_fault",
            HookName::OnMaintenance => "on_maintenance",
            HookName::OnStop => "on_stop",
        }
    }

    /// The role it announces (`HANDOFF_ROLE`).
    pub fn role(self) -> &'static str {
        match self {
            HookName::OnMaster => "master",
            HookName::OnBackup => "backup",
            HookName::OnFault => "fault",
            HookName::OnMaintenance => "maintenance",
            HookName::OnStop => "stopping",
        }
    }
}

/// Why a hook runs (`HANDOFF_REASON`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookReason {
    /// The first role known after the start: side effects are reconciled,
    /// whatever the previous agent left.
    Start,
    /// The backend reported another role.
    Role,
    /// Maintenance was set or cleared.
    Maintenance,
    /// The stop sequence began.
    Stop,
}

impl HookReason {
    /// Its name in `HANDOFF_REASON`.
    pub fn name(self) -> &'static str {
        match self {
            HookReason::Start => "start",
            HookReason::Role => "role",
            HookReason::Maintenance => "maintenance",
            HookReason::Stop => "stop",
        }
    }
}

/// One hook to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookCall {
    /// Which.
    pub hook: HookName,
    /// The hook (so the role) before it, if any ran since the start.
    pub previous: Option<HookName>,
    /// Why now.
    pub reason: HookReason,
}

/// What the dispatcher does for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadStep {
    /// A reload begins: count it, and give its outcome to every `handoff
    /// reload` that asked before now and is not answered yet.
    Begin,
    /// Run `reload_check`; reports [`ReloadEvent::Checked`].
    Check,
    /// Remember the proxy's children now, before the send, and report
    /// [`ReloadEvent::NewWorker`] once one appears that is not among them,
    /// and [`ReloadEvent::Retired`] once all of them left or retired.
    WatchWorkers,
    /// Send this signal to the proxy.
    Signal(Signal),
    /// The signal reader already sent this signal to the proxy (the fast
    /// path, [`Event::Forwarded`]): only log it.
    Sent(Signal),
    /// Run `reload_command`; reports [`ReloadEvent::CommandDone`].
    RunCommand,
    /// Run the health check until it passes; reports [`ReloadEvent::Healthy`].
    CheckHealth,
    /// The reload ended; whatever of it still runs is stopped.
    Finish(ReloadOutcome),
    /// A `handoff reload` that cannot begin; the callers waiting for the
    /// next reload get this answer.
    Refuse(ReloadRefusal),
}

/// How a reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Sent, and everything in `reload_confirm` was seen.
    Confirmed,
    /// `reload_check` failed: nothing was sent.
    CheckFailed,
    /// `reload_command` failed.
    CommandFailed,
    /// `reload_timeout` passed while this was awaited.
    TimedOut(Awaited),
    /// The proxy exited during the reload.
    ProxyExited,
    /// The stop sequence began during the reload.
    Interrupted,
    /// What confirms it cannot be watched.
    Unconfirmable,
}

impl ReloadOutcome {
    /// Whether the reload is done as asked.
    pub fn confirmed(self) -> bool {
        self == ReloadOutcome::Confirmed
    }
}

/// What a reload was still waiting for when its time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// `reload_check` to end.
    Check,
    /// `reload_command` to end.
    Command,
    /// The confirmations after the send: READY=1 (`ready`), a new worker
    /// (`workers`) and the old ones retired (`retired`), whichever were
    /// configured and not seen yet.
    Confirmation {
        /// READY=1 was awaited and not seen.
        ready: bool,
        /// A new worker was awaited and not seen.
        workers: bool,
        /// The old workers' retirement was awaited and not seen.
        retired: bool,
    },
    /// The health check to pass.
    Health,
}

/// Why a reload cannot begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadRefusal {
    /// No proxy runs (starting, or between restarts).
    NoProxy,
    /// The stop sequence has begun.
    Stopping,
    /// `reload_signal = "drop"` without a `reload_command` (or the preset's).
    Disabled,
    /// The proxy did not pass its health gate within `reload_timeout` of
    /// the request (a reload waits for a starting proxy's first pass).
    NotHealthy,
}

/// What systemd is told (sd_notify(3); `crate::notify` sends it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// READY=1: the proxy passed its health gate. Emitted each time it
    /// does; systemd only hears the first (`Notifier::ready`), and never
    /// for a level alone (a stop's standby is not readiness).
    Ready,
    /// RELOADING=1: a reload begins.
    Reloading,
    /// READY=1 again: the reload ended, confirmed or not (a proxy whose
    /// reload failed still serves its old config).
    Reloaded,
    /// STOPPING=1, extending systemd's stop timeout to the stop's budget:
    /// the stop sequence began (once per stop).
    Stopping,
}

/// The failover stopwatch: how long the floating IP took to move, from the
/// stop signal (`handoff_failover_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopwatch {
    /// The failover wait begins.
    Start,
    /// The floating IP moved away: log [`Note::MoveConfirmed`] with the time
    /// since [`Stopwatch::Start`] (`moved_after_ms`), and record that time.
    Moved,
}

/// Why a signal was not passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// `reload_signal = "drop"` (or the preset's).
    ReloadDisabled,
    /// No proxy is running right now.
    NoProxy,
    /// Neither handoff nor the proxy acts on this signal (handoff(8),
    /// SIGNALS): it is logged, and changes nothing.
    Ignored,
}

/// Decisions worth one log line each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// A stop arrived before the proxy existed; it is held until the spawn.
    StopDeferred,
    /// The node did not hold the IP: the stop does not wait for a move.
    NotMaster,
    /// The IP moved away; logged by [`Stopwatch::Moved`], with how long
    /// the move took.
    MoveConfirmed,
    /// `failover_timeout` passed without the move being confirmed.
    MoveTimedOut,
    /// The second stop signal skipped the rest of the failover wait.
    WaitSkipped,
    /// `stop_timeout` passed; the proxy is killed.
    StopTimedOut,
    /// The third stop signal kills the proxy at once.
    KillRequested,
    /// The proxy will be restarted after the backoff.
    Restarting,
    /// Exiting although the backend never confirmed `down`: the node may
    /// still hold the IP (exit status `exit::DEMOTION_FAILED`).
    DownUnconfirmed,
    /// The proxy was stopped (WSTOPPED): the node goes down until it
    /// continues.
    ProxySuspended,
    /// The stopped proxy continued.
    ProxyResumed,
    /// Another stop signal, already stopping.
    AlreadyStopping,
    /// `failover_timeout` passed at standby: falling back to down (FAULT).
    GracefulFallback,
    /// In maintenance, and the backend says this node no longer holds the IP.
    MaintenanceReleased,
}

/// How loudly a [`Note`] is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// A decision in the normal course of things.
    Info,
    /// Someone must look: the node may still hold the floating IP.
    Error,
}

impl Note {
    /// How loudly the dispatcher logs this note.
    pub fn severity(self) -> Severity {
        match self {
            Note::DownUnconfirmed => Severity::Error,
            Note::StopDeferred
            | Note::NotMaster
            | Note::MoveConfirmed
            | Note::MoveTimedOut
            | Note::WaitSkipped
            | Note::StopTimedOut
            | Note::KillRequested
            | Note::Restarting
            | Note::ProxySuspended
            | Note::ProxyResumed
            | Note::AlreadyStopping
            | Note::GracefulFallback
            | Note::MaintenanceReleased => Severity::Info,
        }
    }
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Note::StopDeferred => {
                "stop received before the proxy started: it is stopped once it exists"
            }
            Note::NotMaster => "this node does not hold the floating IP: no wait for a move",
            Note::MoveConfirmed => "the floating IP moved away",
            Note::MoveTimedOut => {
                "failover_timeout passed before the move was confirmed: stopping anyway"
            }
            Note::WaitSkipped => "second stop signal: skipping the rest of the failover wait",
            Note::StopTimedOut => "stop_timeout passed: killing the proxy",
            Note::KillRequested => "third stop signal: killing the proxy now",
            Note::Restarting => "restarting the proxy after the backoff",
            Note::DownUnconfirmed => {
                "the backend never confirmed down: this node may still hold the floating IP"
            }
            Note::ProxySuspended => {
                "the proxy is stopped (not serving): going down until it continues"
            }
            Note::ProxyResumed => "the proxy continued",
            Note::AlreadyStopping => "already stopping; a third stop signal kills the proxy",
            Note::GracefulFallback => {
                "failover_timeout passed at standby (does the peer have nopreempt?): going down (FAULT) and stopping"
            }
            Note::MaintenanceReleased => "in maintenance: this node no longer holds the floating IP",
        })
    }
}

/// The machine as `handoff status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // independent facts, not a hidden enum
pub struct View {
    /// Where in the lifecycle.
    pub phase: Phase,
    /// The level last asked of the backend.
    pub level: Option<Level>,
    /// The backend confirmed it.
    pub applied: bool,
    /// The role last reported.
    pub role: Role,
    /// The role was seen after the current level was applied.
    pub role_current: bool,
    /// Held at standby by an operator.
    pub maintenance: bool,
    /// Waiting for Consul to show the peer as master (or a demote's wait
    /// for it ended unanswered).
    pub awaiting_peer: bool,
    /// Waiting for the probe through the VIP to pass (or a demote's wait
    /// for it ended unanswered).
    pub awaiting_probe: bool,
    /// Proxy restarts so far.
    pub restarts: u32,
}

/// Where in the lifecycle handoff is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `down` requested; the proxy is spawned once it is applied.
    Starting,
    /// Spawn requested.
    Spawning,
    /// The proxy runs.
    Running {
        /// The health gate has passed.
        healthy: bool,
    },
    /// The proxy died; waiting out the restart backoff.
    Restarting,
    /// The stop sequence.
    Stopping(Step),
    /// The proxy is gone; waiting for `down` to be applied, then exit.
    Exiting {
        /// The exit status.
        code: u8,
    },
    /// Exit was emitted.
    Done,
}

impl Phase {
    /// The phase as `status` names it (docs/status.md); `handoff promote`
    /// compares with it, so the names are part of the status schema.
    pub fn name(self) -> PhaseName {
        match self {
            Phase::Starting => PhaseName::Starting,
            Phase::Spawning => PhaseName::Spawning,
            Phase::Running { healthy: false } => PhaseName::RunningUnhealthy,
            Phase::Running { healthy: true } => PhaseName::RunningHealthy,
            Phase::Restarting => PhaseName::Restarting,
            Phase::Stopping(Step::Failover { .. }) => PhaseName::StoppingFailover,
            Phase::Stopping(Step::Settle) => PhaseName::StoppingSettle,
            Phase::Stopping(Step::Draining) => PhaseName::StoppingDraining,
            Phase::Stopping(Step::Killed) => PhaseName::StoppingKilled,
            Phase::Exiting { .. } | Phase::Done => PhaseName::Exiting,
        }
    }
}

/// A [`Phase`] as `status` shows it (`agent.phase`, docs/status.md): its
/// data left out, `Exiting` and `Done` one. The renames are the schema's
/// strings, and the only place they are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PhaseName {
    /// `down` is being reconciled before the first spawn.
    #[serde(rename = "starting")]
    Starting,
    /// The proxy is being started.
    #[serde(rename = "spawning")]
    Spawning,
    /// Not yet, or no longer, through the health gate.
    #[serde(rename = "running:unhealthy")]
    RunningUnhealthy,
    /// Through the health gate.
    #[serde(rename = "running:healthy")]
    RunningHealthy,
    /// The restart backoff after a crash.
    #[serde(rename = "restarting")]
    Restarting,
    /// Waiting for the floating IP to move.
    #[serde(rename = "stopping:failover")]
    StoppingFailover,
    /// Waiting `settle`.
    #[serde(rename = "stopping:settle")]
    StoppingSettle,
    /// The stop signal was sent.
    #[serde(rename = "stopping:draining")]
    StoppingDraining,
    /// SIGKILL was sent.
    #[serde(rename = "stopping:killed")]
    StoppingKilled,
    /// The proxy is gone; exiting once `down` is applied.
    #[serde(rename = "exiting")]
    Exiting,
}

impl std::fmt::Display for PhaseName {
    /// The schema's string: serde writes a unit variant's (renamed) name
    /// straight into a `Formatter` (serde's `impl Serializer for &mut
    /// fmt::Formatter`), so people read what the JSON says.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.serialize(f)
    }
}

/// Steps of the stop sequence, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `down` requested; waiting until the IP moved (if we held it).
    Failover {
        /// Whether this node held (or might have held) the IP at the stop.
        held: bool,
    },
    /// Waiting `settle`.
    Settle,
    /// Stop signal sent; waiting up to `stop_timeout`.
    Draining,
    /// SIGKILL sent; waiting for the exit.
    Killed,
}
