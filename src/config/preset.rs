//! Per-proxy signal defaults, from each proxy's own documentation (see
//! docs/facts.md, "The proxies' signals"). Explicit config keys override them.

use nix::sys::signal::Signal;
use serde::Deserialize;

use super::signal::Reload;

/// The proxy whose signal conventions apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// SIGTERM is graceful; SIGHUP would terminate it, so reloads are dropped
    /// (its file provider reloads by itself; traefik issues #1660, #11624).
    Traefik,
    /// SIGQUIT is the graceful stop (SIGTERM/SIGINT are fast); SIGHUP reloads.
    Nginx,
    /// Master-worker mode: SIGUSR1 soft-stops, SIGUSR2 reloads.
    Haproxy,
    /// SIGTERM is graceful; reloads go through its admin API.
    Caddy,
    /// SIGTERM to stop, SIGHUP to reload.
    #[default]
    Generic,
}

impl Preset {
    /// The graceful stop signal.
    pub fn stop_signal(self) -> Signal {
        match self {
            Preset::Nginx => Signal::SIGQUIT,
            Preset::Haproxy => Signal::SIGUSR1,
            Preset::Traefik | Preset::Caddy | Preset::Generic => Signal::SIGTERM,
        }
    }

    /// What handoff's SIGHUP becomes.
    pub fn reload(self) -> Reload {
        match self {
            Preset::Traefik | Preset::Caddy => Reload::Drop,
            Preset::Nginx | Preset::Generic => Reload::Send(Signal::SIGHUP),
            Preset::Haproxy => Reload::Send(Signal::SIGUSR2),
        }
    }
}
