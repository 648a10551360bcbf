//! OpenBSD (and other non-Linux Unix): no subreaper and no parent-death
//! signal, so orphans go to init and the supervisor's process-group kill
//! (Nomad, rc.d) is what reaches leftover proxy workers. Signals are taken
//! with sigwait(2), which does not report the sender. carp(4) link states
//! come from the routing socket ([`carp_links`]).

mod carp_links;

use std::io;

pub use carp_links::watch_carp_links;

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

/// sysctl(2) read of `mib` into the `*len` bytes at `buffer` (null: only
/// the size is asked); `*len` becomes what the kernel wrote (or would).
///
/// # Safety
///
/// `buffer` is null or valid for writes of `*len` bytes.
#[cfg(target_os = "openbsd")]
#[allow(unsafe_code)]
unsafe fn sysctl_read(
    mib: &[nix::libc::c_int],
    buffer: *mut nix::libc::c_void,
    len: &mut nix::libc::size_t,
) -> io::Result<()> {
    let names = nix::libc::c_uint::try_from(mib.len()).map_err(io::Error::other)?;
    // SAFETY: the caller vouches for `buffer` and `*len`; nothing is set
    // (no new value).
    let read =
        unsafe { nix::libc::sysctl(mib.as_ptr(), names, buffer, len, std::ptr::null_mut(), 0) };
    if read == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The children of `parent` (a reload's new workers), from sysctl(2)
/// `kern.proc` (KERN_PROC_ALL, as kvm_getprocs(3) asks): every process's
/// `kinfo_proc`, whose `p_ppid` names its parent. Untested on a real
/// OpenBSD host (scripts/check-openbsd only compiles it).
#[cfg(target_os = "openbsd")]
pub fn child_pids(parent: Pid) -> io::Result<Vec<Pid>> {
    use nix::libc;
    let record = std::mem::size_of::<libc::kinfo_proc>();
    let record_c = libc::c_int::try_from(record).map_err(io::Error::other)?;
    // The table can grow between asking its size and reading it (ENOMEM):
    // ask again, with room to spare, a few times.
    for _ in 0..4 {
        let mut mib = [
            libc::CTL_KERN,
            libc::KERN_PROC,
            libc::KERN_PROC_ALL,
            0,
            record_c,
            0,
        ];
        let mut size: libc::size_t = 0;
        #[allow(unsafe_code)]
        // SAFETY: a null buffer asks only for the size.
        unsafe {
            sysctl_read(&mib, std::ptr::null_mut(), &mut size)?;
        }
        let count = size / record + 32;
        mib[5] = libc::c_int::try_from(count).map_err(io::Error::other)?;
        let mut table: Vec<libc::kinfo_proc> = Vec::with_capacity(count);
        let mut size = count * record;
        #[allow(unsafe_code)]
        // SAFETY: the buffer holds `count` records, and `size` says so in bytes.
        let read = unsafe { sysctl_read(&mib, table.as_mut_ptr().cast(), &mut size) };
        match read {
            Err(error) if error.raw_os_error() == Some(libc::ENOMEM) => continue,
            Err(error) => return Err(error),
            Ok(()) => {}
        }
        #[allow(unsafe_code)]
        // SAFETY: the kernel initialised `size / record` whole records.
        unsafe {
            table.set_len((size / record).min(count));
        }
        return Ok(table
            .iter()
            .filter(|p| p.p_ppid == parent.as_raw())
            .map(|p| Pid::from_raw(p.p_pid))
            .collect());
    }
    Err(io::Error::other(
        "the process table kept growing while it was read",
    ))
}

/// What `pid` calls itself: its argv as it reads now (setproctitle(3)),
/// from sysctl(2) `kern.proc_args` (KERN_PROC_ARGV), as ps(1) reads it. The
/// buffer holds the argv pointers and then the strings; only the text is
/// looked at, so the whole buffer is read as text. Untested on a real host.
#[cfg(target_os = "openbsd")]
pub fn process_title(pid: Pid) -> io::Result<String> {
    use nix::libc;
    let mib = [
        libc::CTL_KERN,
        libc::KERN_PROC_ARGS,
        pid.as_raw(),
        libc::KERN_PROC_ARGV,
    ];
    let mut size: libc::size_t = 8192;
    // ENOMEM: the arguments do not fit; try a larger buffer (ARG_MAX is
    // 512 KiB, but a title is short: a few tries are plenty).
    for _ in 0..4 {
        let mut buffer = vec![0u8; size];
        let mut len = size;
        #[allow(unsafe_code)]
        // SAFETY: the buffer holds `len` bytes.
        let read = unsafe { sysctl_read(&mib, buffer.as_mut_ptr().cast(), &mut len) };
        match read {
            Err(error) if error.raw_os_error() == Some(libc::ENOMEM) => {
                size *= 4;
                continue;
            }
            Err(error) => return Err(error),
            Ok(()) => {}
        }
        buffer.truncate(len);
        return Ok(String::from_utf8_lossy(&buffer).replace('\0', " "));
    }
    Err(io::Error::other(
        "the process's arguments are too long to read",
    ))
}

/// The `--cfg handoff_portable` build on Linux reads no OpenBSD titles: the
/// "retired" confirmation reports that it cannot look.
#[cfg(not(target_os = "openbsd"))]
pub fn process_title(_pid: Pid) -> io::Result<String> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "reading a process's title is built for OpenBSD only",
    ))
}

/// The `--cfg handoff_portable` build on Linux has no OpenBSD `kinfo_proc`
/// to read: the "workers" confirmation reports that it cannot look.
#[cfg(not(target_os = "openbsd"))]
pub fn child_pids(_parent: Pid) -> io::Result<Vec<Pid>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "listing a process's children is built for OpenBSD only",
    ))
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
            forwarded: None,
        })
    }

    /// `None` at once: OpenBSD has no sigtimedwait(2), and sigwait(2) no
    /// timeout, so the signal reader reports each signal as soon as it sent
    /// it on (`crate::signals::start`).
    #[allow(clippy::unnecessary_wraps, clippy::unused_self)] // the Linux twin waits, and can fail
    pub fn next_signal_within(
        &mut self,
        _wait: std::time::Duration,
    ) -> io::Result<Option<Received>> {
        Ok(None)
    }
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

/// keepalived is Linux's: no address events here (the keepalived backend,
/// which only Linux runs, would poll).
pub fn watch_addresses(
    _addresses: Vec<std::net::IpAddr>,
    _hint: impl FnMut() -> bool + Send + 'static,
) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "address events are watched on Linux only",
    ))
}

/// `loopback_vip` is the keepalived backend's, and keepalived Linux's.
pub fn set_loopback_addresses(_addresses: &[std::net::IpAddr], _present: bool) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the VIPs go on lo on Linux only",
    ))
}

/// See [`set_loopback_addresses`].
pub fn loopback_arp_problem() -> Option<String> {
    Some("loopback_vip is for keepalived, on Linux only".into())
}

/// No proxy says READY=1 here: caddy's sd_notify is Linux-only
/// (notify_other.go is a no-op), and haproxy's needs USE_SYSTEMD, a Linux
/// build option. A reload cannot be confirmed by "ready".
pub const PROXIES_NOTIFY: bool = false;

/// systemd does not exist here: nothing to notify.
pub fn sd_notify(_socket: &std::ffi::OsStr, _message: &str) -> io::Result<()> {
    Ok(())
}
