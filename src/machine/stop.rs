//! The stop sequence, in order: [`Machine::begin_stop`] (down, and the
//! failover wait if this node held the IP), [`Machine::check_move`] (the move
//! confirmed), [`Machine::after_failover`] (settle), [`Machine::send_stop`]
//! (the proxy's stop signal, bounded by `stop_timeout`), [`Machine::kill`];
//! and what a second and third stop signal do ([`Machine::escalate`]). The
//! start sequence is `crate::agent`'s.

use super::{
    Action, Confirm, Confirmation, Machine, Note, Notice, ReloadOutcome, State, Step, Stopwatch,
    Timer,
};
use crate::{exit, failover::Level, failover::Watch};

impl Machine {
    pub(super) fn on_stop_signal(&mut self, out: &mut Vec<Action>) {
        match self.state {
            // Before the first spawn, and while a spawn is under way, the stop
            // is held and delivered to the proxy once it exists, so its exit
            // status is what handoff reports.
            State::Spawning { .. } => self.defer_stop(out),
            State::Starting { .. } if self.restarts == 0 => self.defer_stop(out),
            // Between restarts there is no proxy to stop.
            State::Starting { .. } | State::Restarting => {
                out.push(Action::Disarm(Timer::Restart));
                self.exit_when_down(self.last_code, true, out);
            }
            State::Running { .. } => self.begin_stop(1, out),
            State::Stopping(step, stops) => {
                self.state = State::Stopping(step, stops.saturating_add(1));
                self.escalate(out);
            }
            State::Exiting { .. } | State::Done => {}
        }
    }

    /// Holds a stop signal until the proxy exists (`on_spawned` begins the
    /// stop then, with the held signals counted).
    pub(super) fn defer_stop(&mut self, out: &mut Vec<Action>) {
        let first = match &mut self.state {
            State::Starting { stops } | State::Spawning { stops } => {
                *stops = stops.saturating_add(1);
                *stops == 1
            }
            _ => return,
        };
        if first {
            out.push(Action::Note(Note::StopDeferred));
            if matches!(self.state, State::Starting { .. }) {
                // No spawn until `down` is confirmed; if it never is, the
                // stop must still end.
                out.push(Action::Arm(Timer::Failover, self.policy.failover_timeout));
            }
        }
    }

    /// Stop step 1: go down and start the failover wait (systemd hears
    /// STOPPING=1, and the stopwatch for `handoff_failover_seconds` starts).
    /// `stops` stop signals have arrived, those held before the spawn
    /// included.
    pub(super) fn begin_stop(&mut self, stops: u8, out: &mut Vec<Action>) {
        // Known not to hold the IP only if the backend said so after our
        // newest level was in place; anything older may be out of date.
        let held = !(self.role.released() && self.role_seq >= self.seq);
        self.state = State::Stopping(Step::Failover { held }, stops);
        // A reload under way ends first (systemd hears its READY=1 before
        // STOPPING=1), and one queued behind it is refused: the state says
        // stopping now.
        self.end_reload(ReloadOutcome::Interrupted, out);
        out.push(Action::Notify(Notice::Stopping));
        // Never waited for: it runs beside the move (`hooks.rs`).
        self.stop_hook(stops, out);
        out.push(Action::Stopwatch(Stopwatch::Start));
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
        if stops >= 2 {
            // Signals that arrived before the spawn count too.
            self.escalate(out);
        } else {
            self.check_move(out);
        }
    }

    /// A further stop signal while stopping: the second skips the waits,
    /// the third (or later) kills the proxy.
    pub(super) fn escalate(&mut self, out: &mut Vec<Action>) {
        let State::Stopping(step, stops) = self.state else {
            return;
        };
        if stops == 2 && self.policy.hooks {
            // The operator wants the stop over: `on_stop` goes too.
            out.push(Action::CancelStopHook);
        }
        if stops >= 3 && step != Step::Killed {
            out.push(Action::Note(Note::KillRequested));
            self.kill(out);
        } else if stops == 2 && matches!(step, Step::Failover { .. } | Step::Settle) {
            out.push(Action::Note(Note::WaitSkipped));
            self.send_stop(out);
        } else {
            out.push(Action::Note(Note::AlreadyStopping));
        }
    }

    /// Stop step 2: the move is confirmed once `down` is applied and the
    /// backend says this node no longer holds the IP. If it never held it,
    /// that is true as soon as `down` is applied.
    pub(super) fn check_move(&mut self, out: &mut Vec<Action>) {
        let State::Stopping(Step::Failover { held }, _) = self.state else {
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
                out.push(Action::Stopwatch(Stopwatch::Moved));
            }
            // The role the handover left (backup) runs its hook now, while
            // it is the answer to the newest level; the bow-out's FAULT is
            // the stop's own step, like the start's transient one.
            self.follow_role(out);
            self.bowed_out = true;
            self.request(Level::Down, out);
        } else if self.down_applied() {
            if held && self.policy.stop_level == Level::Down {
                out.push(Action::Stopwatch(Stopwatch::Moved));
            }
            self.after_failover(out);
        }
    }

    /// Stop step 3: settle, then stop the proxy.
    pub(super) fn after_failover(&mut self, out: &mut Vec<Action>) {
        self.stop_confirmations(out);
        out.push(Action::Disarm(Timer::Failover));
        out.push(Action::Watch(Watch::Idle));
        if self.policy.settle.is_zero() {
            self.send_stop(out);
        } else {
            self.advance(Step::Settle);
            out.push(Action::Arm(Timer::Settle, self.policy.settle));
        }
    }

    /// Stop step 4: the graceful stop signal, bounded by `stop_timeout`.
    pub(super) fn send_stop(&mut self, out: &mut Vec<Action>) {
        // Before the signal: the proxy closes its listeners on it.
        self.loopback(false, out);
        self.stop_confirmations(out);
        out.push(Action::Disarm(Timer::Failover));
        out.push(Action::Disarm(Timer::Settle));
        self.advance(Step::Draining);
        out.push(Action::StopProxy(self.policy.stop_signal));
        if self.suspended {
            out.push(Action::ContinueProxy);
        }
        out.push(Action::Arm(Timer::StopTimeout, self.policy.stop_timeout));
    }

    /// Stop step 5: SIGKILL; the exit follows.
    pub(super) fn kill(&mut self, out: &mut Vec<Action>) {
        self.loopback(false, out);
        self.stop_confirmations(out);
        for timer in [Timer::Failover, Timer::Settle, Timer::StopTimeout] {
            out.push(Action::Disarm(timer));
        }
        self.advance(Step::Killed);
        out.push(Action::KillProxy);
    }

    /// Moves the stop on to `step`; its count goes with it.
    fn advance(&mut self, step: Step) {
        let State::Stopping(_, stops) = self.state else {
            debug_assert!(false, "INVARIANT: only a stop under way advances");
            return;
        };
        self.state = State::Stopping(step, stops);
    }

    /// Exit once `down` is applied; with `arm_cap`, bound that wait by
    /// `failover_timeout` (otherwise an armed Failover timer bounds it).
    pub(super) fn exit_when_down(&mut self, code: u8, arm_cap: bool, out: &mut Vec<Action>) {
        self.request(Level::Down, out);
        if self.down_applied() {
            self.exit(code, out);
        } else {
            self.state = State::Exiting { code };
            if arm_cap {
                out.push(Action::Arm(Timer::Failover, self.policy.failover_timeout));
            }
        }
    }

    /// The stop's deadline passed and `down` was never confirmed. The
    /// proxy's status gives way: what the supervisor must learn is that the
    /// node may still hold the IP.
    pub(super) fn exit_down_unconfirmed(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Note(Note::DownUnconfirmed));
        self.exit(exit::DEMOTION_FAILED, out);
    }
}
