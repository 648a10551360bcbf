//! Operating-system details, one module per OS, each exporting the same names.
//!
//! Owns: the child subreaper and parent-death signal (Linux), finding our
//! adopted children, reading blocked signals with the sender's pid where the
//! OS gives it, and per-OS default paths. Everything above this module is
//! portable and never uses `cfg(target_os)`.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(not(target_os = "linux"))]
mod bsd;
#[cfg(not(target_os = "linux"))]
pub use bsd::*;

/// One signal taken from the pending set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Which signal.
    pub signal: nix::sys::signal::Signal,
    /// Who sent it, when the OS says (Linux `signalfd`: `ssi_pid`).
    pub sender: Option<i32>,
}
