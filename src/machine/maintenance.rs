//! Maintenance: `handoff demote` holds a healthy node at standby and polls
//! the role eagerly until the IP has left (and, where configured, the probe
//! and Consul confirm the peer took over); `promote` releases it.

use super::{Action, Confirm, Confirmation, Machine, Note, State, Timer};
use crate::failover::Watch;

impl Machine {
    /// `handoff demote` / `promote` (or a record found at start).
    pub(super) fn on_maintenance(&mut self, on: bool, out: &mut Vec<Action>) {
        self.maintenance = on;
        if self.state == (State::Running { healthy: true }) {
            self.request(self.healthy_level(), out);
        }
        let stopping = matches!(
            self.state,
            State::Stopping(..) | State::Exiting { .. } | State::Done
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
    pub(super) fn check_demote(&mut self, out: &mut Vec<Action>) {
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
    pub(super) fn end_demote_watch(&mut self, out: &mut Vec<Action>) {
        if !self.demote_watch {
            return;
        }
        self.demote_watch = false;
        self.give_up(Confirm::Probe, out);
        self.give_up(Confirm::Peer, out);
        out.push(Action::Disarm(Timer::DemoteWatch));
        if !matches!(self.state, State::Stopping(..)) {
            out.push(Action::Watch(Watch::Idle));
        }
    }

    /// The backend saw this node without the IP after our newest level was
    /// in place (an older BACKUP says nothing about where the IP is now).
    pub(super) fn released_now(&self) -> bool {
        self.role_seq >= self.seq && self.requested.is_some() && self.role.released()
    }
}
