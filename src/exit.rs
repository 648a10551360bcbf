//! Exit codes: the one place that defines them.
//!
//! handoff's own failures use the BSD sysexits(3) values; everything else is
//! the proxy's status passed through, the way a shell reports it (128+N for a
//! death by signal N) so Nomad, systemd and rc.d see what the proxy did.

use crate::process::ProcessEnd;

/// Success: the asked-for state was reached, or the proxy exited 0.
pub const OK: u8 = 0;
/// Any other failure.
pub const FAILURE: u8 = 1;
/// EX_USAGE: bad command line.
pub const USAGE: u8 = 64;
/// EX_UNAVAILABLE: a required host tool, interface or agent is missing.
pub const UNAVAILABLE: u8 = 69;
/// EX_CONFIG: the configuration is invalid; printed as `file:line:col: message`.
pub const CONFIG: u8 = 78;
/// EX_TEMPFAIL: the stop ended (the proxy is gone) but the backend never
/// confirmed `down`, so this node may still hold the floating IP. Takes
/// precedence over the proxy's status and `exit_code_map`: the supervisor
/// must learn it (handoff(8), EXIT STATUS).
pub const DEMOTION_FAILED: u8 = 75;
/// The proxy exists but cannot be executed (shell convention, see sh(1)).
pub const NOT_EXECUTABLE: u8 = 126;
/// The proxy command was not found (shell convention).
pub const NOT_FOUND: u8 = 127;

/// A wait that a stop signal ended (`handoff demote` and ^C): 128+N, as a
/// shell reports a command that signal N ended (130 for SIGINT), so scripts
/// see the interruption; the command itself ends normally, its demotion in
/// place.
pub fn interrupted(signal: nix::sys::signal::Signal) -> u8 {
    // Signal numbers are below 128 on every supported OS.
    u8::try_from(signal as i32).map_or(FAILURE, |n| 128u8.saturating_add(n))
}

/// The status a shell would report for a process that ended this way:
/// its exit code, or 128+N when signal N killed it.
pub fn from_process_end(end: ProcessEnd) -> u8 {
    match end {
        ProcessEnd::Exited(code) => code,
        // Signal numbers are below 128 on every supported OS, so this cannot
        // wrap; saturate anyway rather than trust that.
        ProcessEnd::Signaled(signal) => 128u8.saturating_add(signal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_convention_for_signals() {
        assert_eq!(from_process_end(ProcessEnd::Exited(42)), 42);
        assert_eq!(from_process_end(ProcessEnd::Signaled(9)), 137);
        assert_eq!(from_process_end(ProcessEnd::Signaled(11)), 139);
        assert_eq!(from_process_end(ProcessEnd::Signaled(15)), 143);
        assert_eq!(interrupted(nix::sys::signal::Signal::SIGINT), 130);
        assert_eq!(interrupted(nix::sys::signal::Signal::SIGTERM), 143);
    }
}
