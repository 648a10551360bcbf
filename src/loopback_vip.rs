//! `[failover.keepalived] loopback_vip`: the VIPs on the loopback interface
//! while the proxy serves, so that what reaches this node for a VIP during
//! a move is accepted rather than dropped (docs/operations.md, "No request
//! lost at the switch").
//!
//! Owns: carrying out the machine's `LoopbackVip` actions (when is
//! `crate::machine`'s, `loopback.rs`), the refusal to start on a host that
//! would answer ARP for a VIP on lo, and taking the VIPs off lo where a
//! node is taken down without its agent (the sentinel, `handoff down`) and
//! at every start (what a dead agent left). The addresses themselves are
//! `crate::platform`'s (rtnetlink on Linux).

use std::net::IpAddr;

use crate::{config::Backend, platform};

/// The VIPs that go on lo.
#[derive(Debug, Clone)]
pub struct LoopbackVip {
    vips: Vec<IpAddr>,
}

impl LoopbackVip {
    /// With `loopback_vip = true` only.
    pub fn from_config(backend: &Backend) -> Option<Self> {
        match backend {
            Backend::Keepalived(k) if k.loopback_vip => Some(LoopbackVip {
                vips: k.vip.clone(),
            }),
            _ => None,
        }
    }

    /// Why this host must not put the VIPs on lo (its ARP settings), if it
    /// must not.
    pub fn refusal(&self) -> Option<String> {
        platform::loopback_arp_problem()
    }

    /// Puts the VIPs on lo (`on`) or takes them off; logged. A failure to
    /// put them there costs only what they would have caught; a failure to
    /// take them off leaves them on lo, where, ARP being suppressed, they
    /// draw nothing (the next start takes them off).
    pub fn set(&self, on: bool) {
        match platform::set_loopback_addresses(&self.vips, on) {
            Ok(()) if on => tracing::info!(vips = ?self.vips, "VIPs on lo while the proxy serves"),
            Ok(()) => tracing::info!(vips = ?self.vips, "VIPs off lo"),
            Err(error) => tracing::warn!(%error, on, "cannot change the VIPs on lo"),
        }
    }
}
