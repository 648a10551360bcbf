//! Facts about this host that several modules report: its name and the wall
//! clock. A module of its own, so that consul, health and control need not
//! import `crate::status` (which imports them) for two one-line helpers.

use std::time::{SystemTime, UNIX_EPOCH};

/// This host's name (gethostname(3)), as `status` and Consul's Meta show it;
/// empty if the system will not say.
pub fn node_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
