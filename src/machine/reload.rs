//! A reload, in order: [`Machine::request_reload`] (refused, queued, or
//! begun), `reload_check`, the send (a signal, or `reload_command`), the
//! confirmations (READY=1, a new worker, the old ones retired, in any order), one passing health
//! check, and [`Machine::finish_reload`]. `reload_timeout` bounds all of it.
//!
//! One reload runs at a time. A request during one queues one more, which
//! begins when it ends: a `handoff reload` asked mid-reload then gets the
//! outcome of a reload that began after it asked, so one that read the
//! file it just changed. A failed reload never restarts the proxy: it still
//! serves the old config (nginx and haproxy keep their workers, caddy rolls
//! back; docs/proxies-measured.md).

use nix::sys::signal::Signal;

use super::{
    Action, Awaited, DropReason, Machine, Notice, ReloadBy, ReloadEvent, ReloadOutcome,
    ReloadRefusal, ReloadStep, State, Timer,
};

/// Where the reload under way is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reload {
    /// None runs.
    Idle,
    /// One was asked for before the proxy first passed its health gate: it
    /// begins once it does (nginx dies of a SIGHUP that arrives before it
    /// installed its handlers, and a just-started proxy's workers and
    /// READY=1 would confirm a reload that never happened), or is refused
    /// at `reload_timeout`.
    Held,
    /// One runs.
    Underway {
        /// Its step.
        stage: Stage,
        /// READY=1 seen since the send.
        ready: bool,
        /// A new worker seen since the send.
        worker: bool,
        /// The old workers retired since the send.
        retired: bool,
        /// Another was asked for meanwhile.
        again: bool,
    },
}

/// A reload's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// `reload_check` runs.
    Checking,
    /// `reload_command` runs.
    Commanding,
    /// Sent; READY=1 or a new worker awaited.
    Confirming,
    /// The health check runs until it passes.
    Health,
}

impl Machine {
    /// SIGHUP: the reload, if there is one; dropped (and logged as a dropped
    /// signal) when reloads are disabled or no proxy runs.
    pub(super) fn on_reload_signal(&mut self, signal: Signal, out: &mut Vec<Action>) {
        let reason = match self.refusal() {
            Some(ReloadRefusal::Disabled) => DropReason::ReloadDisabled,
            Some(ReloadRefusal::NoProxy) => DropReason::NoProxy,
            Some(ReloadRefusal::Stopping | ReloadRefusal::NotHealthy) | None => {
                return self.request_reload(out);
            }
        };
        out.push(Action::Dropped { signal, reason });
    }

    /// A reload is asked for (SIGHUP, `handoff reload`).
    pub(super) fn request_reload(&mut self, out: &mut Vec<Action>) {
        if let Some(refusal) = self.refusal() {
            out.push(Action::Reload(ReloadStep::Refuse(refusal)));
            return;
        }
        // A plain signal is not held: with nothing to check or confirm it
        // is passed on at once, as any supervisor would, and never folded
        // into another (issue 17: 1000 SIGHUPs must make 1000).
        let plain = self.pass_through_reload().is_some();
        match &mut self.reload {
            Reload::Underway { again, .. } => *again = true,
            Reload::Held => {}
            Reload::Idle if self.passed_gate || plain => {
                self.begin_reload(out);
            }
            Reload::Idle => {
                self.reload = Reload::Held;
                out.push(Action::Arm(Timer::Reload, self.policy.reload.timeout));
            }
        }
    }

    /// The proxy passed its health gate: a held reload begins.
    pub(super) fn release_held_reload(&mut self, out: &mut Vec<Action>) {
        if self.reload == Reload::Held {
            self.reload = Reload::Idle;
            self.begin_reload(out);
        }
    }

    /// The signal a SIGHUP becomes when its reload, begun now, would be
    /// nothing but that signal sent (no `reload_check`, no
    /// `reload_confirm`: the generic and traefik presets): the signal
    /// reader may send it itself (`Machine::fast_routes`).
    pub(super) fn pass_through_reload(&self) -> Option<Signal> {
        let policy = self.policy.reload;
        match policy.send {
            ReloadBy::Signal(signal)
                if !policy.check
                    && policy.confirm == crate::config::Confirmations::default()
                    && self.refusal().is_none()
                    && self.reload == Reload::Idle =>
            {
                Some(signal)
            }
            _ => None,
        }
    }

    /// Why a reload cannot begin now, if it cannot.
    fn refusal(&self) -> Option<ReloadRefusal> {
        if self.policy.reload.send == ReloadBy::Disabled {
            return Some(ReloadRefusal::Disabled);
        }
        match self.state {
            State::Running { .. } if self.proxy_alive => None,
            State::Stopping(..) | State::Exiting { .. } | State::Done => {
                Some(ReloadRefusal::Stopping)
            }
            _ => Some(ReloadRefusal::NoProxy),
        }
    }

    fn begin_reload(&mut self, out: &mut Vec<Action>) {
        out.extend([
            Action::Reload(ReloadStep::Begin),
            Action::Notify(Notice::Reloading),
            Action::Arm(Timer::Reload, self.policy.reload.timeout),
        ]);
        if self.policy.reload.check {
            self.reload = Reload::Underway {
                stage: Stage::Checking,
                ready: false,
                worker: false,
                retired: false,
                again: false,
            };
            out.push(Action::Reload(ReloadStep::Check));
        } else {
            self.send_reload(false, out);
        }
    }

    /// The check passed (or there is none): send the reload.
    fn send_reload(&mut self, again: bool, out: &mut Vec<Action>) {
        let policy = self.policy.reload;
        if policy.confirm.workers || policy.confirm.retired {
            out.push(Action::Reload(ReloadStep::WatchWorkers));
        }
        let stage = match policy.send {
            ReloadBy::Signal(signal) => {
                out.push(Action::Reload(ReloadStep::Signal(signal)));
                Stage::Confirming
            }
            ReloadBy::Command => {
                out.push(Action::Reload(ReloadStep::RunCommand));
                Stage::Commanding
            }
            // `refusal` never lets a disabled reload begin.
            ReloadBy::Disabled => return self.finish_reload(ReloadOutcome::Interrupted, out),
        };
        self.reload = Reload::Underway {
            stage,
            ready: false,
            worker: false,
            retired: false,
            again,
        };
        self.check_confirmed(out);
    }

    pub(super) fn on_reload(&mut self, event: ReloadEvent, out: &mut Vec<Action>) {
        if event == ReloadEvent::Requested {
            return self.request_reload(out);
        }
        let Reload::Underway {
            stage,
            ready,
            worker,
            retired,
            again,
        } = &mut self.reload
        else {
            return; // a late report about a reload that already ended
        };
        match (event, *stage) {
            (ReloadEvent::Checked(true), Stage::Checking) => {
                let again = *again;
                self.send_reload(again, out);
            }
            (ReloadEvent::Checked(false), Stage::Checking) => {
                self.finish_reload(ReloadOutcome::CheckFailed, out);
            }
            (ReloadEvent::CommandDone(true), Stage::Commanding) => {
                *stage = Stage::Confirming;
                self.check_confirmed(out);
            }
            (ReloadEvent::CommandDone(false), Stage::Commanding) => {
                self.finish_reload(ReloadOutcome::CommandFailed, out);
            }
            // caddy says READY=1 before its `caddy reload` returns.
            (ReloadEvent::ProxyReady, Stage::Commanding | Stage::Confirming) => {
                *ready = true;
                self.check_confirmed(out);
            }
            (ReloadEvent::NewWorker, Stage::Commanding | Stage::Confirming) => {
                *worker = true;
                self.check_confirmed(out);
            }
            (ReloadEvent::Retired, Stage::Commanding | Stage::Confirming) => {
                *retired = true;
                self.check_confirmed(out);
            }
            (ReloadEvent::Healthy, Stage::Health) => {
                self.finish_reload(ReloadOutcome::Confirmed, out);
            }
            // The workers cannot be listed: what was awaited cannot come.
            (ReloadEvent::Unconfirmable, Stage::Commanding | Stage::Confirming) => {
                self.finish_reload(ReloadOutcome::Unconfirmable, out);
            }
            // READY=1 at the proxy's start, or before this reload's send.
            _ => {}
        }
    }

    /// While confirming: once everything configured was seen, the health
    /// check (if configured), else done.
    fn check_confirmed(&mut self, out: &mut Vec<Action>) {
        let confirm = self.policy.reload.confirm;
        let Reload::Underway {
            stage: stage @ Stage::Confirming,
            ready,
            worker,
            retired,
            ..
        } = &mut self.reload
        else {
            return;
        };
        if (confirm.ready && !*ready)
            || (confirm.workers && !*worker)
            || (confirm.retired && !*retired)
        {
            return;
        }
        if confirm.health {
            *stage = Stage::Health;
            out.push(Action::Reload(ReloadStep::CheckHealth));
        } else {
            self.finish_reload(ReloadOutcome::Confirmed, out);
        }
    }

    /// `reload_timeout` passed.
    pub(super) fn reload_timed_out(&mut self, out: &mut Vec<Action>) {
        if self.reload == Reload::Held {
            self.reload = Reload::Idle;
            out.push(Action::Reload(ReloadStep::Refuse(
                ReloadRefusal::NotHealthy,
            )));
            return;
        }
        let Reload::Underway {
            stage,
            ready,
            worker,
            retired,
            ..
        } = self.reload
        else {
            return;
        };
        let confirm = self.policy.reload.confirm;
        let awaited = match stage {
            Stage::Checking => Awaited::Check,
            Stage::Commanding => Awaited::Command,
            Stage::Confirming => Awaited::Confirmation {
                ready: confirm.ready && !ready,
                workers: confirm.workers && !worker,
                retired: confirm.retired && !retired,
            },
            Stage::Health => Awaited::Health,
        };
        self.finish_reload(ReloadOutcome::TimedOut(awaited), out);
    }

    /// The proxy exited, or the stop began: a reload under way ends, and a
    /// held one is refused.
    pub(super) fn end_reload(&mut self, outcome: ReloadOutcome, out: &mut Vec<Action>) {
        match self.reload {
            Reload::Underway { .. } => self.finish_reload(outcome, out),
            Reload::Held => {
                self.reload = Reload::Idle;
                out.push(Action::Disarm(Timer::Reload));
                let refusal = self.refusal().unwrap_or(ReloadRefusal::NoProxy);
                out.push(Action::Reload(ReloadStep::Refuse(refusal)));
            }
            Reload::Idle => {}
        }
    }

    /// The reload ends; a queued one begins, or is refused.
    fn finish_reload(&mut self, outcome: ReloadOutcome, out: &mut Vec<Action>) {
        let again = matches!(self.reload, Reload::Underway { again: true, .. });
        self.reload = Reload::Idle;
        out.extend([
            Action::Disarm(Timer::Reload),
            Action::Reload(ReloadStep::Finish(outcome)),
            Action::Notify(Notice::Reloaded),
        ]);
        if again {
            self.request_reload(out);
        }
    }
}
