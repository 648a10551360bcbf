//! Role-change hooks and master-only duties, as decisions: which hook the
//! node's state calls for after each event, and whether duties may run.
//!
//! A hook runs when the role it names is new: the backend's role
//! (master, backup, fault), or maintenance, which an operator's demote
//! puts before the role. Nothing runs until the role is first known after
//! the start (the proxy passed its gate once, and the backend reported the
//! role after the level that followed was applied): then the hook for that
//! role runs once, reconciling whatever the previous agent left, and the
//! start's own transient `down` never runs `on_fault`. `on_stop` runs when
//! the stop sequence begins (`stop.rs`); the roles the move brings run
//! their hooks after it, except the FAULT of a graceful stop's bow-out
//! once the handover left the node backup (`on_backup` ran for that). Duties run only while the level `up` is applied
//! and the backend says master, and stop the moment the level request
//! leaves `up`: the same event's actions, before any poll.

use super::{Action, HookCall, HookName, HookReason, Machine, State};
use crate::failover::{Level, Role};

impl Machine {
    /// After every event: duties and role hooks follow the state.
    pub(super) fn follow_role(&mut self, out: &mut Vec<Action>) {
        let stopping = matches!(
            self.state,
            State::Stopping(..) | State::Exiting { .. } | State::Done
        );
        let duties = !stopping
            && self.level_applied(Level::Up)
            && self.role == Role::Master
            && self.role_seq >= self.seq;
        if self.policy.duties && duties != self.duties_on {
            self.duties_on = duties;
            out.push(Action::Duties(duties));
        }
        if !self.policy.hooks || self.bowed_out {
            return;
        }
        let Some(hook) = self.role_hook(stopping) else {
            return;
        };
        // A role's hook only for a role seen after the newest level was
        // answered: right after a stop's or a crash's `down`, the role last
        // seen is the old one. Maintenance is the operator's, known at once.
        if hook != HookName::OnMaintenance && self.role_seq < self.seq {
            return;
        }
        // The role's hook is compared with the last role's, not with
        // `on_stop`: a master still master after its stop's first level
        // (keepalived's peer takes over one master-down interval after a
        // graceful standby) runs no second `on_master`; the role the move
        // brings runs its hook, after `stopping`.
        let previous = if self.stop_hooked {
            Some(HookName::OnStop)
        } else {
            self.hooked
        };
        let reason = if self.reconciled {
            if hook == HookName::OnMaintenance || previous == Some(HookName::OnMaintenance) {
                HookReason::Maintenance
            } else {
                HookReason::Role
            }
        } else if self.ever_healthy && self.requested.is_some() && self.applied == self.requested {
            self.reconciled = true;
            HookReason::Start
        } else {
            return;
        };
        if self.hooked != Some(hook) {
            out.push(Action::Hook(HookCall {
                hook,
                previous,
                reason,
            }));
            self.hooked = Some(hook);
            self.stop_hooked = false;
        }
    }

    /// The hook for the node's state now; maintenance comes before the
    /// role, except once stopping (the move's roles are what matter then).
    fn role_hook(&self, stopping: bool) -> Option<HookName> {
        if self.maintenance && !stopping {
            return Some(HookName::OnMaintenance);
        }
        match self.role {
            Role::Master => Some(HookName::OnMaster),
            Role::Backup => Some(HookName::OnBackup),
            Role::Fault => Some(HookName::OnFault),
            Role::Unknown => None,
        }
    }

    /// The stop sequence began: `on_stop`, unless a second stop signal
    /// already came (signals held before the spawn count).
    pub(super) fn stop_hook(&mut self, stops: u8, out: &mut Vec<Action>) {
        if self.policy.hooks && stops < 2 {
            out.push(Action::Hook(HookCall {
                hook: HookName::OnStop,
                previous: self.hooked,
                reason: HookReason::Stop,
            }));
            self.stop_hooked = true;
        }
    }
}
