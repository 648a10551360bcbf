//! Linux: prctl(2) subreaper and PDEATHSIG, /proc for adopted children,
//! signalfd(2), which reports who sent each signal, rtnetlink(7) address
//! events ([`addresses`]), and the VIPs on lo ([`loopback`]).

mod addresses;
mod loopback;

use std::{io, time::Duration};

pub use addresses::watch_addresses;
pub use loopback::{loopback_arp_problem, set_loopback_addresses};

use nix::{
    sys::{
        signal::{SigSet, Signal},
        signalfd::{SfdFlags, SignalFd},
    },
    unistd::Pid,
};

use super::Received;

/// The proxy gets SIGKILL when handoff dies (`child_setup`, prctl(2)).
pub const PARENT_DEATH_SIGNAL: bool = true;

/// State directory default (FHS: /var/lib).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/handoff";

/// Control socket default, in a directory of its own (FHS: /run), the one
/// systemd creates for `RuntimeDirectory=handoff` (systemd/handoff.service).
pub const DEFAULT_SOCKET: &str = "/run/handoff/handoff.sock";

/// Makes handoff the reaper of orphaned descendants (PR_SET_CHILD_SUBREAPER),
/// so a proxy's leftover workers are re-parented to handoff, not to init.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// In the forked child, before exec: SIGKILL the proxy if handoff dies
/// (PR_SET_PDEATHSIG survives exec for non-setuid programs, prctl(2)), and
/// bail out if handoff already died between fork and prctl.
pub fn child_setup(parent: Pid) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
    if nix::unistd::getppid() == parent {
        Ok(())
    } else {
        Err(io::Error::other(
            "handoff exited before the proxy was started",
        ))
    }
}

/// The pids whose parent is `parent`, from `/proc/<pid>/stat` (field 4).
/// Works without `CONFIG_PROC_CHILDREN`, unlike `/proc/<pid>/task/*/children`.
pub fn children_of(parent: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parent_pid(&stat))
                .is_some_and(|ppid| ppid == parent.as_raw())
        })
        .map(Pid::from_raw)
        .collect()
}

/// The children of `parent` (a reload's new workers), polled every 10 ms
/// during a reload: from `/proc/<pid>/task/<tid>/children` (proc(5); a few
/// small reads, where [`children_of`] reads every process's stat), and
/// through [`children_of`] on a kernel built without `CONFIG_PROC_CHILDREN`.
pub fn child_pids(parent: Pid) -> io::Result<Vec<Pid>> {
    let tasks = std::fs::read_dir(format!("/proc/{parent}/task"))?;
    let mut pids = Vec::new();
    for task in tasks {
        let path = task?.path().join("children");
        match std::fs::read_to_string(&path) {
            Ok(text) => pids.extend(
                text.split_whitespace()
                    .filter_map(|pid| pid.parse().ok())
                    .map(Pid::from_raw),
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(children_of(parent)),
            // The task ended between the listing and the read.
            Err(_) => {}
        }
    }
    Ok(pids)
}

/// What `pid` calls itself: its argv as it reads now (nginx rewrites its
/// own, `setproctitle`), from `/proc/<pid>/cmdline` with the NULs as spaces.
pub fn process_title(pid: Pid) -> io::Result<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(String::from_utf8_lossy(&bytes).replace('\0', " "))
}

/// Field 4 of /proc/<pid>/stat; the name in field 2 may hold spaces and
/// parentheses, so parse from the last `)`.
fn parent_pid(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Reads the signals in `set`, which must already be blocked in every thread.
pub struct SignalReader {
    fd: SignalFd,
}

impl SignalReader {
    /// Opens a signalfd for `set`.
    pub fn new(set: &SigSet) -> io::Result<Self> {
        let fd = SignalFd::with_flags(set, SfdFlags::SFD_CLOEXEC).map_err(io::Error::from)?;
        Ok(SignalReader { fd })
    }

    /// Blocks until a signal in the set is pending and takes it.
    pub fn next_signal(&mut self) -> io::Result<Received> {
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => {
                    if let Some(received) = received(&info) {
                        return Ok(received);
                    }
                }
                Ok(None) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Takes a signal in the set if one is pending or comes within `wait`
    /// (poll(2) on the signalfd, in whole milliseconds); `None` if none did.
    pub fn next_signal_within(&mut self, wait: Duration) -> io::Result<Option<Received>> {
        use std::os::fd::AsFd;

        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let timeout = PollTimeout::try_from(wait).map_err(io::Error::other)?;
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(None),
            // Readable, and this is its only reader: the read does not block.
            Ok(_) => match self.fd.read_signal() {
                Ok(Some(info)) => Ok(received(&info)),
                Ok(None) | Err(nix::errno::Errno::EINTR) => Ok(None),
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }
}

/// A signalfd record as a [`Received`]; `None` for a number nix does not
/// name (a real-time signal), which is logged and ignored here: neither
/// handoff nor any proxy it runs gives them a meaning (handoff(8), SIGNALS).
fn received(info: &nix::sys::signalfd::siginfo) -> Option<Received> {
    let number = i32::try_from(info.ssi_signo).unwrap_or(0);
    // ssi_pid is 0 for kernel-generated signals (e.g. SIGCHLD from an exit
    // still names the child; a tty's SIGINT is 0).
    let pid = i32::try_from(info.ssi_pid).unwrap_or(0);
    let sender = (pid != 0).then_some(pid);
    let Ok(signal) = Signal::try_from(number) else {
        tracing::info!(signal = number, sender, "real-time signal ignored");
        return None;
    };
    Some(Received {
        signal,
        sender,
        forwarded: None,
    })
}

/// `set` plus the real-time signals SIGRTMIN..=SIGRTMAX, whose default
/// action kills: handoff blocks and reads them too. glibc's own 32 and 33
/// lie below SIGRTMIN() and are left to glibc.
pub fn with_realtime_signals(set: SigSet) -> SigSet {
    use nix::libc;
    let mut raw: libc::sigset_t = *set.as_ref();
    for n in libc::SIGRTMIN()..=libc::SIGRTMAX() {
        #[allow(unsafe_code)]
        // SAFETY: `raw` is an initialised sigset_t (copied from a SigSet) and
        // `n` a valid signal number; sigaddset(3) only sets a bit in it.
        unsafe {
            libc::sigaddset(&raw mut raw, n);
        }
    }
    #[allow(unsafe_code)]
    // SAFETY: `raw` came from a valid SigSet and only had bits added by
    // sigaddset(3), so it is a valid, initialised sigset_t.
    unsafe {
        SigSet::from_sigset_t_unchecked(raw)
    }
}

/// Sets the real-time signals (SIGRTMIN..=SIGRTMAX) to their default action;
/// `nix::Signal` covers only the standard ones. glibc keeps 32 and 33 for
/// itself (SIGCANCEL, SIGSETXID): its sigaction refuses them, and every glibc
/// program manages them on its own, so they are left alone.
pub fn reset_realtime_signals() {
    use nix::libc;
    for n in libc::SIGRTMIN()..=libc::SIGRTMAX() {
        #[allow(unsafe_code)]
        // SAFETY: SIG_DFL installs no handler code; signal(2) is async-signal-safe.
        unsafe {
            libc::signal(n, libc::SIG_DFL);
        }
    }
}

/// The CARP ledger's boot marker default: the kernel's own random id for
/// this boot (random(4): `/proc/sys/kernel/random/boot_id`), new at every
/// boot and never touched by a clock step. It always exists, so handoff only
/// ever reads it (`crate::failover::carp::boot`).
pub const DEFAULT_BOOT_MARKER: &str = "/proc/sys/kernel/random/boot_id";

/// Time since boot, suspends included: CLOCK_BOOTTIME (clock_gettime(2)),
/// which only grows until the next reboot; setting the clock leaves it alone.
pub fn uptime() -> io::Result<std::time::Duration> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)?;
    Ok(now.into())
}

/// Whether this OS has CARP (carp(4)), so that `check` can look at its
/// interfaces and group: not Linux (the CARP backend runs here only
/// against a simulated ifconfig, in tests).
pub const CARP: bool = false;

/// CARP does not exist on Linux: nothing to say about its preempt sysctl.
pub fn carp_preempt() -> Option<bool> {
    None
}

/// No carp interfaces here, so no link states to watch (the CARP backend
/// runs on Linux only against a simulated ifconfig, and polls it).
pub fn watch_carp_links(
    _interfaces: Vec<String>,
    _hint: impl FnMut() -> bool + Send + 'static,
) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "carp(4) link states exist on OpenBSD only",
    ))
}

/// Whether proxies speak sd_notify(3) here: haproxy built with USE_SYSTEMD
/// (Debian's is) under `-Ws`, and caddy (its `notify` package), on Linux.
pub const PROXIES_NOTIFY: bool = true;

/// Sends `message` to systemd's notification socket, `$NOTIFY_SOCKET`
/// (sd_notify(3)): a path, or an abstract name written `@name`.
pub fn sd_notify(socket: &std::ffi::OsStr, message: &str) -> io::Result<()> {
    use std::os::{
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixDatagram},
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(socket)?,
    };
    sock.send_to_addr(message.as_bytes(), &addr).map(drop)
}

#[cfg(test)]
mod tests {
    use super::parent_pid;

    #[test]
    fn parent_pid_survives_odd_process_names() {
        assert_eq!(parent_pid("42 (nginx) S 7 42 42 0"), Some(7));
        assert_eq!(parent_pid("42 (a) b (c)) S 9 1"), Some(9));
        assert_eq!(parent_pid("garbage"), None);
    }
}
