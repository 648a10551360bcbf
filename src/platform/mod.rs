//! Operating-system details, one module per OS, each exporting the same names.
//!
//! Owns: the child subreaper and parent-death signal (Linux), finding our
//! adopted children, reading blocked signals with the sender's pid where the
//! OS gives it, resetting real-time signals, the clock of time since boot,
//! per-OS default paths (the state dir, the control socket, the CARP
//! ledger's boot marker), and the kernel's events that hint at a role
//! change: address changes (Linux, `watch_addresses`) and carp link states
//! (OpenBSD, `watch_carp_links`), each an `Unsupported` error on the other.
//! Everything above this module is portable and never uses `cfg(target_os)`.
//!
//! `--cfg handoff_portable` builds the non-Linux module on Linux, so that
//! `scripts/test` can type-check and lint the OpenBSD path here, where
//! OpenBSD itself cannot be built or run.

#[cfg(all(target_os = "linux", not(handoff_portable)))]
mod linux;
#[cfg(all(target_os = "linux", not(handoff_portable)))]
pub use linux::*;

#[cfg(not(all(target_os = "linux", not(handoff_portable))))]
mod bsd;
#[cfg(not(all(target_os = "linux", not(handoff_portable))))]
pub use bsd::*;

// OpenBSD's routing messages, parsed on every OS so that the parser's tests
// run on Linux; only the bsd module reads a routing socket.
#[cfg_attr(all(target_os = "linux", not(handoff_portable)), allow(dead_code))]
mod route_msg;

/// One signal taken from the pending set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Which signal.
    pub signal: nix::sys::signal::Signal,
    /// Who sent it, when the OS says (Linux `signalfd`: `ssi_pid`).
    pub sender: Option<i32>,
    /// What the reader already sent to the proxy for it, on the fast path
    /// (`crate::signals::FastPath`); `None` from the OS readers here.
    pub forwarded: Option<nix::sys::signal::Signal>,
}

/// A signal reader cannot go on (signalfd or sigwait failed, which should
/// never happen): an agent deaf to SIGTERM and SIGCHLD cannot stop safely,
/// so it ends at once, and the dead-man's switch takes the node down
/// (`crate::sentinel`) rather than the node staying up behind a dead task.
/// Both of `crate::signals`'s reader threads call it.
pub fn reader_failed(error: &std::io::Error) -> ! {
    tracing::error!(%error, "cannot read signals: aborting");
    std::process::abort()
}
