//! The lifecycle as one pure state machine: `Event -> Vec<Action>`, no I/O.
//!
//! Owns every decision: when to demote and promote, when to spawn, restart,
//! signal or kill the proxy, how the stop sequence advances, and the exit
//! status. The dispatcher (`crate::supervisor`) turns OS happenings into
//! [`Event`]s and carries out the [`Action`]s in order; this module never
//! sees a pid, a clock or a file.
//!
//! ```text
//!            start: SetLevel(down)
//!                  |
//!   Starting --(down applied)--> Spawning --(spawned)--> Running{healthy?}
//!      ^                                                   |  |   gate/health: SetLevel(up)
//!      |                                   proxy exited    |  | stop signal
//!   Restarting <--(restart policy)-- SetLevel(down) <------+  v
//!      |                                   |            Stopping:
//!      +--stop--> Exiting{code} <--(no restart)           Failover  SetLevel(down), wait for the
//!                    |  (down applied or deadline)            |     move (only if we held the IP),
//!                    v                                        |     at most failover_timeout;
//!                  Exit(code)  <--------- proxy exited ---  Settle    2nd stop signal skips
//!                                                           Draining  stop_signal, stop_timeout
//!                                                           Killed    SIGKILL (3rd signal: at once)
//! ```
//!
//! The stop sequence lives in `Machine::begin_stop`, `Machine::check_move`,
//! `Machine::after_failover` and `Machine::send_stop`, in that order.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::{
    config::{ExitCodeMap, Reload, RestartPolicy},
    exit,
    failover::{BackendReport, Level, Role, Watch},
    process::ProcessEnd,
    signals,
};

/// First restart delay; doubled after each restart.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest restart delay; also how long a proxy must stay up to reset it.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// After the proxy's exit on the stop path, how long to wait for a `down`
/// that was asked for but not yet confirmed (the one wait a stop can add to
/// `failover_timeout + settle + stop_timeout`).
pub const DOWN_GRACE: Duration = Duration::from_secs(1);

/// The parts of the config that decisions depend on.
#[derive(Debug, Clone)]
pub struct Policy {
    /// What SIGHUP becomes.
    pub reload: Reload,
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
}

/// Something that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// handoff received this signal (SIGCHLD never arrives here).
    Signal(Signal),
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
    /// Record a decision in the log.
    Note(Note),
    /// Start (`true`) or cancel (`false`) probing the VIP until it answers.
    Probe(bool),
    /// Start (`true`) or cancel (`false`) waiting for Consul to show another
    /// node as master.
    ConfirmPeer(bool),
    /// Exit handoff with this status. Never emitted while the proxy lives.
    Exit(u8),
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
    /// The IP moved away.
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

/// One confirmation that the peer took over (the probe through the VIP,
/// Consul's view), during one wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirmation {
    /// Not started (or cancelled).
    Idle,
    /// Asked for; waiting for its success.
    Running,
    /// The peer answered.
    Passed,
    /// The demote's wait ended without an answer: not known to have passed,
    /// so `status` keeps saying "not released" (see `Machine::give_up`).
    GaveUp,
}

/// Which confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirm {
    /// `[failover] probe`.
    Probe,
    /// `[consul] confirm_peer`.
    Peer,
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
    /// compares with it, so the strings are part of the status schema.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Spawning => "spawning",
            Phase::Running { healthy: false } => "running:unhealthy",
            Phase::Running { healthy: true } => "running:healthy",
            Phase::Restarting => "restarting",
            Phase::Stopping(Step::Failover { .. }) => "stopping:failover",
            Phase::Stopping(Step::Settle) => "stopping:settle",
            Phase::Stopping(Step::Draining) => "stopping:draining",
            Phase::Stopping(Step::Killed) => "stopping:killed",
            Phase::Exiting { .. } | Phase::Done => "exiting",
        }
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

/// The lifecycle state. Create with [`Machine::new`], then feed it
/// [`Machine::start`] and events.
#[derive(Debug, Clone)]
#[allow(clippy::struct_excessive_bools)] // independent facts, not a hidden enum
pub struct Machine {
    policy: Policy,
    phase: Phase,
    stop_signals: u8,
    stop_deferred: bool,
    proxy_alive: bool,
    requested: Option<Level>,
    /// The level the backend confirmed for the current request; `None`
    /// while the current request is in flight.
    applied: Option<Level>,
    seq: u64,
    role: Role,
    /// The request the backend had answered when it last saw `role`.
    role_seq: u64,
    /// The probe of the current stop.
    probe: Confirmation,
    /// Consul's confirmation of the current stop or demote.
    peer: Confirmation,
    /// Held at standby by an operator.
    maintenance: bool,
    /// The health gate's last verdict on the current proxy.
    verdict: bool,
    /// The current proxy is stopped (WSTOPPED).
    suspended: bool,
    /// The role is polled eagerly until maintenance has moved the IP away.
    demote_watch: bool,
    backoff: Duration,
    restarts: u32,
    last_code: u8,
}

impl Machine {
    /// A machine that has not started.
    pub fn new(policy: Policy) -> Self {
        Machine {
            policy,
            phase: Phase::Starting,
            stop_signals: 0,
            stop_deferred: false,
            proxy_alive: false,
            requested: None,
            applied: None,
            seq: 0,
            role: Role::Unknown,
            role_seq: 0,
            probe: Confirmation::Idle,
            peer: Confirmation::Idle,
            maintenance: false,
            verdict: false,
            suspended: false,
            demote_watch: false,
            backoff: FIRST_BACKOFF,
            restarts: 0,
            last_code: exit::OK,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Proxy restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// What `handoff status` shows of the machine.
    pub fn view(&self) -> View {
        View {
            phase: self.phase,
            level: self.requested,
            applied: self.requested.is_some() && self.applied == self.requested,
            role: self.role,
            role_current: self.role_seq >= self.seq,
            maintenance: self.maintenance,
            awaiting_peer: matches!(self.peer, Confirmation::Running | Confirmation::GaveUp),
            awaiting_probe: matches!(self.probe, Confirmation::Running | Confirmation::GaveUp),
            restarts: self.restarts,
        }
    }

    /// Whether this node is known to have let the floating IP go: the role,
    /// seen after our newest level was in place, says so, and no
    /// confirmation (probe, Consul) is still owed or was given up on. What
    /// `status` calls `released`, and what `handoff demote` waits for.
    pub fn released(&self) -> bool {
        let view = self.view();
        view.role_current && view.role.released() && !view.awaiting_peer && !view.awaiting_probe
    }

    /// Start: reconcile to `down` before anything else; spawn once applied.
    pub fn start(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.phase = Phase::Starting;
        self.request(Level::Down, &mut out);
        out.push(Action::Watch(Watch::Idle));
        out
    }

    /// Decides what to do about `event`.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Done {
            return out; // Exit was emitted; nothing follows it
        }
        match event {
            Event::Signal(signal) => self.on_signal(signal, &mut out),
            Event::Spawned => self.on_spawned(&mut out),
            Event::SpawnFailed { code } => {
                // Spawning happens only after `down` was applied, so the node
                // is already down: never promote a proxy that never ran.
                self.proxy_alive = false;
                self.exit(code, &mut out);
            }
            Event::ProxyExited(end) => self.on_exit(end, &mut out),
            Event::Health(healthy) => self.on_verdict(healthy, &mut out),
            Event::ProxySuspended(suspended) => self.on_suspended(suspended, &mut out),
            Event::Role { role, seq } => {
                self.role = role;
                self.role_seq = seq;
                self.check_demote(&mut out);
                self.check_move(&mut out);
            }
            Event::LevelApplied { level, ok, seq } => self.on_applied(level, ok, seq, &mut out),
            Event::Deadline(timer) => self.on_deadline(timer, &mut out),
            Event::Maintenance(on) => self.on_maintenance(on, &mut out),
            Event::ProbeSucceeded => {
                if self.probe == Confirmation::Running {
                    self.probe = Confirmation::Passed;
                    self.check_demote(&mut out);
                    self.check_move(&mut out);
                }
            }
            Event::PeerConfirmed => {
                if self.peer == Confirmation::Running {
                    self.peer = Confirmation::Passed;
                    self.check_demote(&mut out);
                    self.check_move(&mut out);
                }
            }
        }
        out
    }

    /// `handoff demote` / `promote` (or a record found at start).
    fn on_maintenance(&mut self, on: bool, out: &mut Vec<Action>) {
        self.maintenance = on;
        if self.phase == (Phase::Running { healthy: true }) {
            self.request(self.healthy_level(), out);
        }
        let stopping = matches!(
            self.phase,
            Phase::Stopping(_) | Phase::Exiting { .. } | Phase::Done
        );
        if !on || stopping {
            return;
        }
        // `demote` waits until the IP has left: poll eagerly until it has
        // (or failover_timeout passed), not once a second. A node that did
        // not hold it has nothing to confirm.
        if self.released_now() {
            out.push(Action::Note(Note::MaintenanceReleased));
        } else if !self.demote_watch {
            self.demote_watch = true;
            // The demote's confirmations start afresh.
            self.stop_confirmations(out);
            self.probe = Confirmation::Idle;
            self.peer = Confirmation::Idle;
            out.push(Action::Watch(Watch::Fast));
            out.push(Action::Arm(
                Timer::DemoteWatch,
                self.policy.failover_timeout,
            ));
        }
    }

    /// Maintenance's move is complete once this node is released and the
    /// peer is confirmed as a stop's move is (`check_move`): with `probe`,
    /// the peer answers through the VIP; with `confirm_peer`, Consul shows
    /// it as master. Both run at once.
    fn check_demote(&mut self, out: &mut Vec<Action>) {
        if !self.demote_watch || !self.released_now() {
            return;
        }
        let probed = !self.policy.probe || self.confirmed(Confirm::Probe, out);
        let reported = !self.policy.confirm_peer || self.confirmed(Confirm::Peer, out);
        if !(probed && reported) {
            return;
        }
        out.push(Action::Note(Note::MaintenanceReleased));
        self.end_demote_watch(out);
    }

    /// Back to idle polling once maintenance's move is seen (or timed out).
    /// A stop in between has its own watch, which this leaves alone.
    fn end_demote_watch(&mut self, out: &mut Vec<Action>) {
        if !self.demote_watch {
            return;
        }
        self.demote_watch = false;
        self.give_up(Confirm::Probe, out);
        self.give_up(Confirm::Peer, out);
        out.push(Action::Disarm(Timer::DemoteWatch));
        if !matches!(self.phase, Phase::Stopping(_)) {
            out.push(Action::Watch(Watch::Idle));
        }
    }

    /// The backend saw this node without the IP after our newest level was
    /// in place (an older BACKUP says nothing about where the IP is now).
    fn released_now(&self) -> bool {
        self.role_seq >= self.seq && self.requested.is_some() && self.role.released()
    }

    /// Every signal handoff can receive, decided here (the table in
    /// handoff(8), SIGNALS).
    fn on_signal(&mut self, signal: Signal, out: &mut Vec<Action>) {
        // The proxy's own graceful stop signal (nginx's SIGQUIT, haproxy's
        // SIGUSR1) sent to handoff is an operator's graceful stop: passing
        // it on would stop the proxy with the node still master.
        if signals::STOP.contains(&signal) || signal == self.policy.stop_signal {
            self.on_stop_signal(out);
        } else if signal == Signal::SIGHUP {
            match self.policy.reload {
                Reload::Send(send) => self.forward(signal, send, out),
                Reload::Drop => out.push(Action::Dropped {
                    signal,
                    reason: DropReason::ReloadDisabled,
                }),
            }
        } else if signals::PASS_THROUGH.contains(&signal) {
            self.forward(signal, signal, out);
        } else if signal == Signal::SIGTSTP {
            // ^Z: handoff never stops (it reads the signal), and a proxy in
            // the terminal's process group, stopped by the same ^Z, is
            // continued: neither runs unsupervised, nor is left stopped.
            self.forward(signal, Signal::SIGCONT, out);
        } else {
            out.push(Action::Dropped {
                signal,
                reason: DropReason::Ignored,
            });
        }
    }

    fn forward(&self, received: Signal, send: Signal, out: &mut Vec<Action>) {
        if self.proxy_alive {
            out.push(Action::Forward { received, send });
        } else {
            out.push(Action::Dropped {
                signal: received,
                reason: DropReason::NoProxy,
            });
        }
    }

    fn on_stop_signal(&mut self, out: &mut Vec<Action>) {
        self.stop_signals = self.stop_signals.saturating_add(1);
        match self.phase {
            // Before the first spawn, and while a spawn is under way, the stop
            // is held and delivered to the proxy once it exists, so its exit
            // status is what handoff reports.
            Phase::Spawning => self.defer_stop(out),
            Phase::Starting if self.restarts == 0 => self.defer_stop(out),
            // Between restarts there is no proxy to stop.
            Phase::Starting | Phase::Restarting => {
                out.push(Action::Disarm(Timer::Restart));
                self.exit_when_down(self.last_code, true, out);
            }
            Phase::Running { .. } => self.begin_stop(out),
            Phase::Stopping(step) => self.escalate(step, out),
            Phase::Exiting { .. } | Phase::Done => {}
        }
    }

    fn defer_stop(&mut self, out: &mut Vec<Action>) {
        if !self.stop_deferred {
            self.stop_deferred = true;
            out.push(Action::Note(Note::StopDeferred));
            if self.phase == Phase::Starting {
                // No spawn until `down` is confirmed; if it never is, the
                // stop must still end.
                out.push(Action::Arm(Timer::Failover, self.policy.failover_timeout));
            }
        }
    }

    /// Stop step 1: go down and start the failover wait.
    fn begin_stop(&mut self, out: &mut Vec<Action>) {
        // Known not to hold the IP only if the backend said so after our
        // newest level was in place; anything older may be out of date.
        let held = !(self.role.released() && self.role_seq >= self.seq);
        self.phase = Phase::Stopping(Step::Failover { held });
        if self.demote_watch {
            // The stop's own watch (Fast, then Idle after the move) takes over.
            self.demote_watch = false;
            out.push(Action::Disarm(Timer::DemoteWatch));
        }
        // The stop's confirmations start afresh.
        self.stop_confirmations(out);
        self.probe = Confirmation::Idle;
        self.peer = Confirmation::Idle;
        out.push(Action::Disarm(Timer::HealthGate));
        out.push(Action::Disarm(Timer::BackoffReset));
        // A stop never raises a node: `standby` (keepalived's graceful
        // handover) only comes from `up` or `standby`; a node held down
        // (unhealthy, not yet healthy) stays down.
        let level = if self.requested == Some(Level::Down) {
            Level::Down
        } else {
            self.policy.stop_level
        };
        self.request(level, out);
        if !held {
            out.push(Action::Note(Note::NotMaster));
        }
        out.push(Action::Arm(Timer::Failover, self.policy.failover_timeout));
        out.push(Action::Watch(Watch::Fast));
        if self.stop_signals >= 2 {
            // Signals that arrived before the spawn count too.
            self.escalate(Step::Failover { held }, out);
        } else {
            self.check_move(out);
        }
    }

    /// A further stop signal while stopping: the second skips the waits,
    /// the third (or later) kills the proxy.
    fn escalate(&mut self, step: Step, out: &mut Vec<Action>) {
        if self.stop_signals >= 3 && step != Step::Killed {
            out.push(Action::Note(Note::KillRequested));
            self.kill(out);
        } else if self.stop_signals == 2 && matches!(step, Step::Failover { .. } | Step::Settle) {
            out.push(Action::Note(Note::WaitSkipped));
            self.send_stop(out);
        } else {
            out.push(Action::Note(Note::AlreadyStopping));
        }
    }

    /// Stop step 2: the move is confirmed once `down` is applied and the
    /// backend says this node no longer holds the IP. If it never held it,
    /// that is true as soon as `down` is applied.
    fn check_move(&mut self, out: &mut Vec<Action>) {
        let Phase::Stopping(Step::Failover { held }) = self.phase else {
            return;
        };
        // The role must be one seen after our level was applied: an older
        // BACKUP says nothing about where the IP is now.
        let released = self.role_seq >= self.seq && self.role.released();
        if !released {
            return;
        }
        // Released here is not yet served there: where a probe is set, the
        // peer must answer through the VIP first, and with confirm_peer
        // Consul must show it as master (only if we held the IP; both run
        // at once).
        if held {
            let probed = !self.policy.probe || self.confirmed(Confirm::Probe, out);
            let reported = !self.policy.confirm_peer || self.confirmed(Confirm::Peer, out);
            if !(probed && reported) {
                return;
            }
        }
        if self.level_applied(Level::Standby) {
            // Graceful handover: the peer holds the VIP now; bow out (FAULT)
            // so this node cannot win it back while its proxy stops.
            if held {
                out.push(Action::Note(Note::MoveConfirmed));
            }
            self.request(Level::Down, out);
        } else if self.down_applied() {
            if held && self.policy.stop_level == Level::Down {
                out.push(Action::Note(Note::MoveConfirmed));
            }
            self.after_failover(out);
        }
    }

    /// Stop step 3: settle, then stop the proxy.
    fn after_failover(&mut self, out: &mut Vec<Action>) {
        self.stop_confirmations(out);
        out.push(Action::Disarm(Timer::Failover));
        out.push(Action::Watch(Watch::Idle));
        if self.policy.settle.is_zero() {
            self.send_stop(out);
        } else {
            self.phase = Phase::Stopping(Step::Settle);
            out.push(Action::Arm(Timer::Settle, self.policy.settle));
        }
    }

    /// Stop step 4: the graceful stop signal, bounded by `stop_timeout`.
    fn send_stop(&mut self, out: &mut Vec<Action>) {
        self.stop_confirmations(out);
        out.push(Action::Disarm(Timer::Failover));
        out.push(Action::Disarm(Timer::Settle));
        self.phase = Phase::Stopping(Step::Draining);
        out.push(Action::StopProxy(self.policy.stop_signal));
        if self.suspended {
            out.push(Action::ContinueProxy);
        }
        out.push(Action::Arm(Timer::StopTimeout, self.policy.stop_timeout));
    }

    /// Stop step 5: SIGKILL; the exit follows.
    fn kill(&mut self, out: &mut Vec<Action>) {
        self.stop_confirmations(out);
        for timer in [Timer::Failover, Timer::Settle, Timer::StopTimeout] {
            out.push(Action::Disarm(timer));
        }
        self.phase = Phase::Stopping(Step::Killed);
        out.push(Action::KillProxy);
    }

    fn on_spawned(&mut self, out: &mut Vec<Action>) {
        self.proxy_alive = true;
        self.verdict = false;
        self.suspended = false;
        self.phase = Phase::Running { healthy: false };
        if let Some(gate) = self.policy.startup_gate {
            out.push(Action::Arm(Timer::HealthGate, gate));
        }
        out.push(Action::Arm(Timer::BackoffReset, MAX_BACKOFF));
        if self.stop_deferred {
            self.begin_stop(out);
        }
    }

    /// The health gate's verdict (a check, or the start-up gate's timer).
    fn on_verdict(&mut self, healthy: bool, out: &mut Vec<Action>) {
        self.verdict = healthy;
        self.apply_health(out);
    }

    /// The proxy counts as healthy when its gate says so and it is not
    /// stopped; the node follows.
    fn apply_health(&mut self, out: &mut Vec<Action>) {
        let Phase::Running { healthy: was } = self.phase else {
            return;
        };
        let healthy = self.verdict && !self.suspended;
        if healthy == was {
            return;
        }
        self.phase = Phase::Running { healthy };
        let level = if healthy {
            self.healthy_level()
        } else {
            Level::Down
        };
        self.request(level, out);
    }

    fn on_suspended(&mut self, suspended: bool, out: &mut Vec<Action>) {
        if !self.proxy_alive || suspended == self.suspended {
            return;
        }
        self.suspended = suspended;
        out.push(Action::Note(if suspended {
            Note::ProxySuspended
        } else {
            Note::ProxyResumed
        }));
        if suspended && matches!(self.phase, Phase::Stopping(Step::Draining)) {
            // The stop signal waits in a stopped process: let it act.
            out.push(Action::ContinueProxy);
        }
        self.apply_health(out);
    }

    /// Where a healthy proxy puts the node: `up`, or `standby` in maintenance.
    fn healthy_level(&self) -> Level {
        if self.maintenance {
            Level::Standby
        } else {
            Level::Up
        }
    }

    fn on_exit(&mut self, end: ProcessEnd, out: &mut Vec<Action>) {
        self.proxy_alive = false;
        self.suspended = false;
        let code = self.policy.exit_code_map.apply(exit::from_process_end(end));
        self.last_code = code;
        match self.phase {
            Phase::Running { .. } => {
                // Down first, before any restart or exit.
                out.push(Action::Disarm(Timer::HealthGate));
                out.push(Action::Disarm(Timer::BackoffReset));
                self.request(Level::Down, out);
                if self.should_restart(end) {
                    self.restarts = self.restarts.saturating_add(1);
                    out.push(Action::Note(Note::Restarting));
                    out.push(Action::Arm(Timer::Restart, self.backoff));
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    self.phase = Phase::Restarting;
                } else {
                    self.exit_when_down(code, true, out);
                }
            }
            // Died during the failover wait: `down` is on its way, and the
            // running Failover deadline still bounds the wait for it.
            Phase::Stopping(Step::Failover { .. }) => self.exit_when_down(code, false, out),
            Phase::Stopping(_) => {
                for timer in [Timer::Settle, Timer::StopTimeout] {
                    out.push(Action::Disarm(timer));
                }
                if self.down_applied() {
                    self.exit(code, out);
                } else {
                    // `down` outlives us, and a skipped wait or a graceful
                    // fallback asked for it only just now: give the backend
                    // DOWN_GRACE to apply it (a track file write takes ms),
                    // so the node is not left a candidate.
                    self.request(Level::Down, out);
                    self.phase = Phase::Exiting { code };
                    let grace = DOWN_GRACE.min(self.policy.failover_timeout);
                    out.push(Action::Arm(Timer::Failover, grace));
                }
            }
            Phase::Starting
            | Phase::Spawning
            | Phase::Restarting
            | Phase::Exiting { .. }
            | Phase::Done => {}
        }
    }

    fn should_restart(&self, end: ProcessEnd) -> bool {
        match self.policy.restart {
            RestartPolicy::Never => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => end != ProcessEnd::Exited(0),
        }
    }

    fn on_applied(&mut self, level: Level, ok: bool, seq: u64, out: &mut Vec<Action>) {
        if seq != self.seq {
            return; // answers an earlier request: says nothing about this one
        }
        if !ok {
            // Only a level the backend confirmed counts: a failed `down`
            // spawns nothing, confirms no move and allows no exit. The
            // worker retries it; the armed deadlines bound the wait.
            return;
        }
        self.applied = Some(level);
        match self.phase {
            Phase::Starting if self.down_applied() => {
                self.phase = Phase::Spawning;
                out.push(Action::Spawn);
            }
            Phase::Stopping(Step::Failover { .. }) => self.check_move(out),
            Phase::Exiting { code } if self.down_applied() => self.exit(code, out),
            _ => {}
        }
    }

    fn on_deadline(&mut self, timer: Timer, out: &mut Vec<Action>) {
        match (timer, self.phase) {
            (Timer::HealthGate, Phase::Running { healthy: false }) => self.on_verdict(true, out),
            (Timer::BackoffReset, _) => self.backoff = FIRST_BACKOFF,
            (Timer::Restart, Phase::Restarting) => {
                self.phase = Phase::Starting;
                if self.down_applied() {
                    self.phase = Phase::Spawning;
                    out.push(Action::Spawn);
                }
            }
            (Timer::Failover, Phase::Stopping(Step::Failover { .. })) => {
                if self.requested == Some(Level::Standby) {
                    // A peer with `nopreempt` never takes over on a priority drop.
                    out.push(Action::Note(Note::GracefulFallback));
                    self.request(Level::Down, out);
                } else {
                    out.push(Action::Note(Note::MoveTimedOut));
                }
                self.after_failover(out);
            }
            (Timer::Failover, Phase::Exiting { .. }) => self.exit_down_unconfirmed(out),
            (Timer::Failover, Phase::Starting) if self.stop_deferred => {
                self.exit_down_unconfirmed(out);
            }
            (Timer::Settle, Phase::Stopping(Step::Settle)) => self.send_stop(out),
            (Timer::DemoteWatch, _) => self.end_demote_watch(out),
            (Timer::StopTimeout, Phase::Stopping(Step::Draining)) => {
                out.push(Action::Note(Note::StopTimedOut));
                self.kill(out);
            }
            _ => {}
        }
    }

    /// Exit once `down` is applied; with `arm_cap`, bound that wait by
    /// `failover_timeout` (otherwise an armed Failover timer bounds it).
    fn exit_when_down(&mut self, code: u8, arm_cap: bool, out: &mut Vec<Action>) {
        self.request(Level::Down, out);
        if self.down_applied() {
            self.exit(code, out);
        } else {
            self.phase = Phase::Exiting { code };
            if arm_cap {
                out.push(Action::Arm(Timer::Failover, self.policy.failover_timeout));
            }
        }
    }

    /// Whether `which` has passed in the current wait; starts it if it has
    /// not been asked for yet.
    fn confirmed(&mut self, which: Confirm, out: &mut Vec<Action>) -> bool {
        let (state, start) = match which {
            Confirm::Probe => (&mut self.probe, Action::Probe(true)),
            Confirm::Peer => (&mut self.peer, Action::ConfirmPeer(true)),
        };
        match *state {
            Confirmation::Passed => true,
            Confirmation::Running => false,
            Confirmation::Idle | Confirmation::GaveUp => {
                *state = Confirmation::Running;
                out.push(start);
                false
            }
        }
    }

    /// Cancels `which` if it runs: the wait it belongs to is over.
    fn cancel(&mut self, which: Confirm, out: &mut Vec<Action>) {
        let (state, stop) = match which {
            Confirm::Probe => (&mut self.probe, Action::Probe(false)),
            Confirm::Peer => (&mut self.peer, Action::ConfirmPeer(false)),
        };
        if *state == Confirmation::Running {
            *state = Confirmation::Idle;
            out.push(stop);
        }
    }

    /// Like [`Machine::cancel`], for the end of the demote's wait: a
    /// confirmation still out is recorded as [`Confirmation::GaveUp`], so
    /// `status` does not turn "released" the moment the wait is over (a
    /// `handoff demote` still polling would take that for a confirmed move).
    fn give_up(&mut self, which: Confirm, out: &mut Vec<Action>) {
        let was = match which {
            Confirm::Probe => self.probe,
            Confirm::Peer => self.peer,
        };
        self.cancel(which, out);
        if was == Confirmation::Running {
            match which {
                Confirm::Probe => self.probe = Confirmation::GaveUp,
                Confirm::Peer => self.peer = Confirmation::GaveUp,
            }
        }
    }

    /// Cancels the stop's running confirmations.
    fn stop_confirmations(&mut self, out: &mut Vec<Action>) {
        self.cancel(Confirm::Probe, out);
        self.cancel(Confirm::Peer, out);
    }

    /// The stop's deadline passed and `down` was never confirmed. The
    /// proxy's status gives way: what the supervisor must learn is that the
    /// node may still hold the IP.
    fn exit_down_unconfirmed(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Note(Note::DownUnconfirmed));
        self.exit(exit::DEMOTION_FAILED, out);
    }

    fn exit(&mut self, code: u8, out: &mut Vec<Action>) {
        self.stop_confirmations(out);
        debug_assert!(
            !self.proxy_alive,
            "INVARIANT: never exit while the proxy lives"
        );
        self.phase = Phase::Done;
        out.push(Action::Exit(code));
    }

    fn request(&mut self, level: Level, out: &mut Vec<Action>) {
        if self.requested != Some(level) {
            self.seq += 1;
            self.requested = Some(level);
            self.applied = None;
            out.push(Action::SetLevel {
                level,
                seq: self.seq,
            });
        }
    }

    fn down_applied(&self) -> bool {
        self.level_applied(Level::Down)
    }

    /// `level` is the current request and the backend confirmed it.
    fn level_applied(&self, level: Level) -> bool {
        self.requested == Some(level) && self.applied == Some(level)
    }
}

#[cfg(test)]
mod tests;
