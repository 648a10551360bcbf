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
//! The files: `vocabulary.rs` holds the types (events, actions, timers,
//! notes, the view, the policy); `stop.rs` the stop sequence
//! (`Machine::begin_stop`, `check_move`, `after_failover`, `send_stop`, in
//! that order); `maintenance.rs` demote and promote; this file the
//! machine's own state (the private `State`: the phase with the data that
//! exists only in it) and the rest (start, health, the proxy's exit,
//! restarts, deadlines). `tests.rs` holds the tables over all of it.

mod hooks;
mod loopback;
mod maintenance;
mod reload;
mod stop;
mod vocabulary;

use std::time::Duration;

use nix::sys::signal::Signal;

pub use vocabulary::*;

use crate::{
    config::RestartPolicy,
    exit,
    failover::{Level, Role, Watch},
    process::ProcessEnd,
    signals,
};

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

/// Where the machine is, with the data that exists only there: the stop
/// signals held while there is no proxy to stop yet, and the count of a
/// stop under way. Outside those phases the data cannot exist.
///
/// [`Phase`] is its face to the outside and stays data-free: status and
/// Consul read it, and the dispatcher logs a change of it (by `Debug`:
/// tests/faults.rs waits for `to=Stopping(Settle)`), so a second stop
/// signal, which changes the count but not the phase, must not look like a
/// change there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// [`Phase::Starting`].
    Starting {
        /// Stop signals held until the proxy exists, so that its exit
        /// status is what handoff reports. Only before the first spawn:
        /// between restarts there is no proxy to wait for, and a stop exits.
        stops: u8,
    },
    /// [`Phase::Spawning`].
    Spawning {
        /// Stop signals held until the proxy exists (as in `Starting`).
        stops: u8,
    },
    /// [`Phase::Running`].
    Running {
        /// The health gate has passed.
        healthy: bool,
    },
    /// [`Phase::Restarting`].
    Restarting,
    /// [`Phase::Stopping`].
    Stopping(
        /// Where the stop sequence is.
        Step,
        /// Stop signals so far, the held ones included: the second skips
        /// the waits, the third kills the proxy.
        u8,
    ),
    /// [`Phase::Exiting`].
    Exiting {
        /// The exit status.
        code: u8,
    },
    /// [`Phase::Done`].
    Done,
}

impl State {
    /// The phase, as the outside sees it.
    fn phase(self) -> Phase {
        match self {
            State::Starting { .. } => Phase::Starting,
            State::Spawning { .. } => Phase::Spawning,
            State::Running { healthy } => Phase::Running { healthy },
            State::Restarting => Phase::Restarting,
            State::Stopping(step, _) => Phase::Stopping(step),
            State::Exiting { code } => Phase::Exiting { code },
            State::Done => Phase::Done,
        }
    }
}

/// The lifecycle state. Create with [`Machine::new`], then feed it
/// [`Machine::start`] and events.
#[derive(Debug, Clone)]
#[allow(clippy::struct_excessive_bools)] // independent facts, not a hidden enum
pub struct Machine {
    policy: Policy,
    state: State,
    // The rest outlives any one phase, so it is not in `State`. The probe
    // and Consul confirmations are not the stop's alone: `handoff demote`
    // waits on the same two (`check_demote`, as the stop's `check_move`), a
    // demote's given-up confirmation stays visible to `status.released`
    // after its wait, and a stop's runs on into `Exiting` when the proxy
    // dies during the failover wait. `suspended` matters while draining as
    // much as while running; the level, role and restart bookkeeping span
    // the lifecycle.
    proxy_alive: bool,
    requested: Option<Level>,
    /// The level the backend confirmed for the current request; `None`
    /// while the current request is in flight.
    applied: Option<Level>,
    seq: u64,
    role: Role,
    /// The request the backend had answered when it last saw `role`.
    role_seq: u64,
    /// The probe through the VIP, of the current (or last) stop or demote.
    probe: Confirmation,
    /// Consul's confirmation, of the current (or last) stop or demote.
    peer: Confirmation,
    /// Held at standby by an operator.
    maintenance: bool,
    /// The health gate's last verdict on the current proxy.
    verdict: bool,
    /// The current proxy has passed its health gate at least once (a
    /// reload waits for that: `machine/reload.rs`).
    passed_gate: bool,
    /// The current proxy is stopped (WSTOPPED).
    suspended: bool,
    /// The role is polled eagerly until maintenance has moved the IP away.
    demote_watch: bool,
    /// The reload under way, if any (it outlives a phase change only to
    /// be ended by it: `end_reload`).
    reload: reload::Reload,
    /// The last role's or maintenance's hook asked for (`hooks.rs`).
    hooked: Option<HookName>,
    /// `on_stop` was asked for since: the next role hook's previous role
    /// is `stopping`.
    stop_hooked: bool,
    /// A graceful stop's handover is done and the node bows out (`down`,
    /// keepalived's FAULT): the role that brings runs no hook.
    bowed_out: bool,
    /// The role was first known after the start, and its hook asked for.
    reconciled: bool,
    /// Some proxy of this agent passed its health gate.
    ever_healthy: bool,
    /// Duties may run.
    duties_on: bool,
    /// The VIPs are on the loopback interface (`loopback.rs`).
    loopback_on: bool,
    /// The signal reader's forwarding table, as last handed out
    /// ([`Action::FastPath`]).
    routes: Vec<(Signal, Signal)>,
    backoff: Duration,
    restarts: u32,
    last_code: u8,
}

impl Machine {
    /// A machine that has not started.
    pub fn new(policy: Policy) -> Self {
        Machine {
            policy,
            state: State::Starting { stops: 0 },
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
            passed_gate: false,
            suspended: false,
            demote_watch: false,
            reload: reload::Reload::Idle,
            hooked: None,
            stop_hooked: false,
            bowed_out: false,
            reconciled: false,
            ever_healthy: false,
            duties_on: false,
            loopback_on: false,
            routes: Vec::new(),
            backoff: FIRST_BACKOFF,
            restarts: 0,
            last_code: exit::OK,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.state.phase()
    }

    /// Proxy restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// What `handoff status` shows of the machine.
    pub fn view(&self) -> View {
        View {
            phase: self.phase(),
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
        self.state = State::Starting { stops: 0 };
        self.request(Level::Down, &mut out);
        out.push(Action::Watch(Watch::Idle));
        self.publish_routes(&mut out);
        out
    }

    /// Decides what to do about `event`.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Done {
            return out; // Exit was emitted; nothing follows it
        }
        match event {
            Event::Signal(signal) => self.on_signal(signal, &mut out),
            Event::Forwarded { received, sent } => self.on_forwarded(received, sent, &mut out),
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
            Event::Reload(event) => self.on_reload(event, &mut out),
        }
        if self.state != State::Done {
            self.follow_role(&mut out);
        }
        self.follow_serving(&mut out);
        self.publish_routes(&mut out);
        out
    }

    /// The signals whose whole decision, now, is "send this to the proxy":
    /// what [`Machine::on_signal`] does with each, without its other
    /// branches. Only while a proxy lives; never a stop signal (the
    /// proxy's own `stop_signal` included), which starts or escalates the
    /// stop; SIGHUP only when its reload is a plain signal with no check and
    /// no confirmation and could begin now (`Machine::pass_through_reload`):
    /// a checked or confirmed reload keeps its way through the machine.
    /// `tests.rs` checks, over every phase, that each route is exactly what
    /// `on_signal` decides.
    fn fast_routes(&self) -> Vec<(Signal, Signal)> {
        if !self.proxy_alive {
            return Vec::new();
        }
        let stop =
            |signal: Signal| signals::STOP.contains(&signal) || signal == self.policy.stop_signal;
        let mut routes: Vec<(Signal, Signal)> = signals::PASS_THROUGH
            .iter()
            .map(|&signal| (signal, signal))
            .chain([(Signal::SIGTSTP, Signal::SIGCONT)])
            .filter(|&(received, _)| !stop(received))
            .collect();
        if !stop(Signal::SIGHUP)
            && let Some(send) = self.pass_through_reload()
        {
            routes.push((Signal::SIGHUP, send));
        }
        routes
    }

    /// Hands the reader a new forwarding table when it changed, first in
    /// the batch: a route taken away (the stop began, the proxy exited)
    /// must be gone before any later action of the batch can yield to the
    /// reader.
    fn publish_routes(&mut self, out: &mut Vec<Action>) {
        let routes = self.fast_routes();
        if routes != self.routes {
            self.routes.clone_from(&routes);
            out.insert(0, Action::FastPath(routes));
        }
    }

    /// The reader already sent `sent` for `received` (the fast path). If
    /// the table it went by is still the decision, the decision is carried
    /// out without its send (a reload is counted as one, as when the loop
    /// sends it); if it is not (the proxy exited or the stop began between
    /// the send and now), it was still sent, to a proxy that was ours
    /// (`crate::signals::FastPath`), and is logged as such and nothing more.
    fn on_forwarded(&mut self, received: Signal, sent: Signal, out: &mut Vec<Action>) {
        if !self.routes.contains(&(received, sent)) {
            out.push(Action::Forwarded {
                received,
                send: sent,
            });
            return;
        }
        let mut decided = Vec::new();
        self.on_signal(received, &mut decided);
        out.extend(decided.into_iter().map(|action| match action {
            Action::Forward { received, send } => Action::Forwarded { received, send },
            Action::Reload(ReloadStep::Signal(signal)) => Action::Reload(ReloadStep::Sent(signal)),
            other => other,
        }));
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
            self.on_reload_signal(signal, out);
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

    fn on_spawned(&mut self, out: &mut Vec<Action>) {
        let held = match self.state {
            State::Spawning { stops } => stops,
            _ => 0,
        };
        self.proxy_alive = true;
        self.verdict = false;
        self.passed_gate = false;
        self.suspended = false;
        self.state = State::Running { healthy: false };
        if let Some(gate) = self.policy.startup_gate {
            out.push(Action::Arm(Timer::HealthGate, gate));
        }
        out.push(Action::Arm(Timer::BackoffReset, MAX_BACKOFF));
        if held > 0 {
            self.begin_stop(held, out);
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
        let State::Running { healthy: was } = self.state else {
            return;
        };
        let healthy = self.verdict && !self.suspended;
        if healthy == was {
            return;
        }
        self.state = State::Running { healthy };
        let level = if healthy {
            // Readiness is the proxy's health, each time it is regained.
            out.push(Action::Notify(Notice::Ready));
            self.healthy_level()
        } else {
            Level::Down
        };
        self.request(level, out);
        if healthy && !self.passed_gate {
            self.passed_gate = true;
            self.ever_healthy = true;
            self.release_held_reload(out);
        }
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
        if suspended && matches!(self.state, State::Stopping(Step::Draining, _)) {
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
        self.end_reload(ReloadOutcome::ProxyExited, out);
        let code = self.policy.exit_code_map.apply(exit::from_process_end(end));
        self.last_code = code;
        match self.state {
            State::Running { .. } => {
                // Down first, before any restart or exit.
                out.push(Action::Disarm(Timer::HealthGate));
                out.push(Action::Disarm(Timer::BackoffReset));
                self.request(Level::Down, out);
                if self.should_restart(end) {
                    self.restarts = self.restarts.saturating_add(1);
                    out.push(Action::Note(Note::Restarting));
                    out.push(Action::CountRestart);
                    out.push(Action::Arm(Timer::Restart, self.backoff));
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    self.state = State::Restarting;
                } else {
                    self.exit_when_down(code, true, out);
                }
            }
            // Died during the failover wait: `down` is on its way, and the
            // running Failover deadline still bounds the wait for it.
            State::Stopping(Step::Failover { .. }, _) => self.exit_when_down(code, false, out),
            State::Stopping(..) => {
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
                    self.state = State::Exiting { code };
                    let grace = DOWN_GRACE.min(self.policy.failover_timeout);
                    out.push(Action::Arm(Timer::Failover, grace));
                }
            }
            State::Starting { .. }
            | State::Spawning { .. }
            | State::Restarting
            | State::Exiting { .. }
            | State::Done => {}
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
        match self.state {
            State::Starting { stops } if self.down_applied() => {
                self.state = State::Spawning { stops };
                out.push(Action::Spawn);
            }
            State::Stopping(Step::Failover { .. }, _) => self.check_move(out),
            State::Exiting { code } if self.down_applied() => self.exit(code, out),
            _ => {}
        }
    }

    fn on_deadline(&mut self, timer: Timer, out: &mut Vec<Action>) {
        match (timer, self.state) {
            (Timer::HealthGate, State::Running { healthy: false }) => self.on_verdict(true, out),
            (Timer::BackoffReset, _) => self.backoff = FIRST_BACKOFF,
            (Timer::Restart, State::Restarting) => {
                self.state = State::Starting { stops: 0 };
                if self.down_applied() {
                    self.state = State::Spawning { stops: 0 };
                    out.push(Action::Spawn);
                }
            }
            (Timer::Failover, State::Stopping(Step::Failover { .. }, _)) => {
                if self.requested == Some(Level::Standby) {
                    // A peer with `nopreempt` never takes over on a priority drop.
                    out.push(Action::Note(Note::GracefulFallback));
                    self.request(Level::Down, out);
                } else {
                    out.push(Action::Note(Note::MoveTimedOut));
                }
                self.after_failover(out);
            }
            (Timer::Failover, State::Exiting { .. }) => self.exit_down_unconfirmed(out),
            // A held stop whose `down` was never confirmed: no spawn came.
            (Timer::Failover, State::Starting { stops }) if stops > 0 => {
                self.exit_down_unconfirmed(out);
            }
            (Timer::Settle, State::Stopping(Step::Settle, _)) => self.send_stop(out),
            (Timer::DemoteWatch, _) => self.end_demote_watch(out),
            (Timer::Reload, _) => self.reload_timed_out(out),
            (Timer::StopTimeout, State::Stopping(Step::Draining, _)) => {
                out.push(Action::Note(Note::StopTimedOut));
                self.kill(out);
            }
            _ => {}
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

    fn exit(&mut self, code: u8, out: &mut Vec<Action>) {
        self.stop_confirmations(out);
        debug_assert!(
            !self.proxy_alive,
            "INVARIANT: never exit while the proxy lives"
        );
        self.state = State::Done;
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
