//! Facts about this host that several modules report: its name, the wall
//! clock, and whether a program can be run. A module of its own, so that
//! consul, health and control need not import `crate::status` (which
//! imports them), nor `check` the failover backends, for small helpers.

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

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

/// CLOCK_MONOTONIC (clock_gettime(2)): time that only grows, as systemd's
/// MONOTONIC_USEC and the hooks' HANDOFF_SEEN_MONOTONIC_NS want it; zero if
/// the clock cannot be read.
pub fn monotonic() -> std::time::Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(std::time::Duration::ZERO, std::time::Duration::from)
}

/// Why `program` cannot be run, if it cannot: it must be an executable file
/// at its path, or, for a bare name, on PATH (as execvp(3) looks it up).
pub fn not_runnable(program: &Path) -> Option<String> {
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let bare = program.components().count() == 1 && !program.has_root();
    let found = if bare {
        std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| executable(&dir.join(program)))
        })
    } else {
        executable(program)
    };
    let place = if bare { " on PATH" } else { "" };
    (!found).then(|| format!("`{}` is not an executable file{place}", program.display()))
}
