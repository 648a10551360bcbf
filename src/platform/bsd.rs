//! OpenBSD (and other non-Linux Unix): no subreaper and no parent-death
//! signal, so orphans go to init and the supervisor's process-group kill
//! (Nomad, rc.d) is what reaches leftover proxy workers. Signals are taken
//! with sigwait(2), which does not report the sender.

use std::io;

use nix::{sys::signal::SigSet, unistd::Pid};

use super::Received;

/// No parent-death signal here: a proxy outlives a killed handoff.
pub const PARENT_DEATH_SIGNAL: bool = false;

/// State directory default (hier(7): /var/db).
pub const DEFAULT_STATE_DIR: &str = "/var/db/handoff";

/// Control socket default, in a directory of its own (hier(7): /var/run),
/// which handoff creates: /etc/rc empties /var/run at every boot (rc(8)).
pub const DEFAULT_SOCKET: &str = "/var/run/handoff/handoff.sock";

/// No subreaper facility here.
pub fn become_subreaper() -> io::Result<()> {
    Ok(())
}

/// Nothing to do before exec.
pub fn child_setup(_parent: Pid) -> io::Result<()> {
    Ok(())
}

/// Without a subreaper, every child of ours is one we spawned.
pub fn children_of(_parent: Pid) -> Vec<Pid> {
    Vec::new()
}

/// Reads the signals in `set`, which must already be blocked in every thread.
pub struct SignalReader {
    set: SigSet,
}

impl SignalReader {
    /// Remembers the set to wait on.
    pub fn new(set: &SigSet) -> io::Result<Self> {
        Ok(SignalReader { set: *set })
    }

    /// Blocks until a signal in the set is pending and takes it.
    pub fn next_signal(&mut self) -> io::Result<Received> {
        let signal = self.set.wait().map_err(io::Error::from)?;
        Ok(Received {
            signal,
            sender: None,
        })
    }
}

/// Here the reader thread reads every signal (sigwait(2) has no file
/// descriptor to put into the runtime's kqueue): `set` is returned whole.
#[allow(clippy::unnecessary_wraps)] // the Linux twin can fail
pub fn read_on_loop(
    set: SigSet,
    _events: tokio::sync::mpsc::Sender<Received>,
    _runtime: &tokio::runtime::Runtime,
) -> io::Result<SigSet> {
    Ok(set)
}

/// OpenBSD has no real-time signals.
pub fn reset_realtime_signals() {}

/// OpenBSD has no real-time signals: `set` as it is.
pub fn with_realtime_signals(set: SigSet) -> SigSet {
    set
}

/// The CARP ledger's boot marker default. /etc/rc empties /var/run at every
/// boot ("Clean up left-over files": `cd /var/run && rm -rf -- *`, before any
/// daemon starts; rc(8)), so the marker, created with a random id on first
/// use (`crate::failover::carp::boot`), is new after every reboot, and
/// nothing else touches it: not a clock step, which rewrites `kern.boottime`
/// (sys/kern/kern_tc.c, tc_setrealtimeclock), the reason this is not read
/// from there. No leading dot: the shell's `*` would skip it.
pub const DEFAULT_BOOT_MARKER: &str = "/var/run/handoff.boot";

/// Time since boot, suspends included: CLOCK_BOOTTIME (clock_gettime(2)),
/// which only grows until the next reboot; setting the clock leaves it alone.
pub fn uptime() -> io::Result<std::time::Duration> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)?;
    Ok(now.into())
}

/// Whether this OS has CARP (carp(4)), so that `check` can look at its
/// interfaces and group through ifconfig(8).
pub const CARP: bool = true;

/// `net.inet.carp.preempt` (carp(4)), or `None` when it cannot be read.
pub fn carp_preempt() -> Option<bool> {
    let output = std::process::Command::new("/sbin/sysctl")
        .args(["-n", "net.inet.carp.preempt"])
        .output()
        .ok()?;
    match String::from_utf8_lossy(&output.stdout).trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// systemd does not exist here: nothing to notify.
pub fn sd_notify(_socket: &std::ffi::OsStr, _message: &str) -> io::Result<()> {
    Ok(())
}
