//! The VIPs on the loopback interface (`[failover.keepalived]
//! loopback_vip`), as decisions: on while the proxy serves, off the moment
//! it stops serving.
//!
//! In a move, a client's packets for the VIP keep reaching the old master
//! for a few milliseconds after keepalived took the VIP off its interface
//! (the client has not yet taken in the new master's gratuitous ARP), and
//! can reach the new master a moment before its address is in place. With
//! the VIPs on lo (ARP for them suppressed: `crate::loopback_vip` checks
//! the sysctls) both nodes accept them, so no SYN of a planned move is
//! dropped. "Serving" is: the proxy passed its gate and is healthy, or a
//! stop has not yet sent the proxy its stop signal. The VIPs come off lo
//! before that signal, in the same batch: a SYN that reaches a proxy that
//! closed its listener is refused (RST, a failed request), one that reaches
//! no local address is dropped and retried by TCP, by then towards the
//! new master.

use super::{Action, Machine, State, Step};

impl Machine {
    /// After every event: the VIPs on lo follow whether the proxy serves.
    pub(super) fn follow_serving(&mut self, out: &mut Vec<Action>) {
        let serving = self.proxy_alive
            && matches!(
                self.state,
                State::Running { healthy: true }
                    | State::Stopping(Step::Failover { .. } | Step::Settle, _)
            );
        self.loopback(serving, out);
    }

    /// Puts the VIPs on lo or takes them off, if that changes anything.
    pub(super) fn loopback(&mut self, on: bool, out: &mut Vec<Action>) {
        if self.policy.loopback_vip && on != self.loopback_on {
            self.loopback_on = on;
            out.push(Action::LoopbackVip(on));
        }
    }
}
