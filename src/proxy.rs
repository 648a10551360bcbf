//! The proxy child: starting it and signalling it. Exactly one value of
//! [`Proxy`] exists per running proxy, owned by the dispatcher loop.
//!
//! Owns: turning `process_group` into how signals are addressed, and the
//! cleanup of what a dead proxy leaves behind (workers still bound to its
//! ports would make the next start fail with "Address already in use").
//! Does not own: reaping (`crate::process`), or when to signal (`crate::machine`).

use std::{io, process::Command, time::Duration};

use nix::{errno::Errno, sys::signal::Signal, unistd::Pid};
use tokio::sync::{oneshot, watch};

use crate::{
    config::{Argv, ProcessGroup},
    exit,
    process::{Children, Group, ProcessEnd},
};

/// How long leftover processes of a dead proxy may take to die after SIGKILL.
const STRAY_LIMIT: Duration = Duration::from_secs(2);

/// What happened to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It was stopped (`true`, WSTOPPED) or continued (`false`).
    Stopped(bool),
    /// It ended.
    Exited(ProcessEnd),
}

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    pid: Pid,
    group: Group,
    exit: oneshot::Receiver<ProcessEnd>,
    stopped: watch::Receiver<bool>,
}

/// The proxy could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the proxy `{program}`: {source}")]
pub struct SpawnError {
    /// The program.
    pub program: String,
    /// Why.
    pub source: io::Error,
}

impl SpawnError {
    /// Shell convention: 127 not found, 126 found but not executable.
    pub fn exit_code(&self) -> u8 {
        let errno = self.source.raw_os_error().map(Errno::from_raw);
        match errno {
            Some(Errno::ENOENT | Errno::ENOTDIR) => exit::NOT_FOUND,
            Some(Errno::EACCES | Errno::ENOEXEC | Errno::EISDIR | Errno::EPERM) => {
                exit::NOT_EXECUTABLE
            }
            _ if self.source.kind() == io::ErrorKind::NotFound => exit::NOT_FOUND,
            _ => exit::FAILURE,
        }
    }
}

impl Proxy {
    /// Starts `argv` with stdin, stdout and stderr inherited from handoff;
    /// `notify` is its own NOTIFY_SOCKET, if it gets one.
    pub fn spawn(
        children: &Children,
        argv: &Argv,
        group: ProcessGroup,
        notify: Option<&std::path::Path>,
    ) -> Result<Proxy, SpawnError> {
        let group = match group {
            ProcessGroup::Inherit => Group::Inherit,
            ProcessGroup::Own => Group::Own,
        };
        let mut command = Command::new(argv.program());
        command.args(argv.args());
        let variable = notify.map(|path| ("NOTIFY_SOCKET", path.as_os_str()));
        let spawned = children
            .spawn_with(&mut command, group, variable)
            .map_err(|source| SpawnError {
                program: argv.program().into(),
                source,
            })?;
        Ok(Proxy {
            pid: spawned.pid,
            group,
            exit: spawned.exit,
            stopped: spawned.stopped,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// How it is signalled: alone, or as its group.
    pub fn group(&self) -> Group {
        self.group
    }

    /// Sends `signal` to the proxy, or to its group when it has its own.
    /// A proxy that already exited (and was reaped) is not signalled.
    pub fn signal(&self, children: &Children, signal: Signal) -> nix::Result<bool> {
        children.signal(self.pid, signal, self.group)
    }

    /// The next thing that happens to the proxy: it was stopped or
    /// continued, or it ended (and was reaped).
    pub async fn next_change(&mut self) -> Change {
        tokio::select! {
            biased;
            end = &mut self.exit => Change::Exited(end.unwrap_or_else(|_| {
                // Only happens if the registry dropped the sender unsent,
                // which it never does; report a failure rather than hang.
                tracing::error!(pid = self.pid.as_raw(), "lost the proxy's exit status");
                ProcessEnd::Exited(exit::FAILURE)
            })),
            Ok(()) = self.stopped.changed() => Change::Stopped(*self.stopped.borrow_and_update()),
        }
    }

    /// After the proxy ended: SIGKILL what it left behind, so nothing keeps
    /// serving (or holding its ports) without a supervisor.
    pub async fn clean_up(&self, children: &Children) {
        if self.group == Group::Own {
            // The group outlives its leader while any member does.
            let _ = nix::sys::signal::killpg(self.pid, Signal::SIGKILL);
        }
        children.kill_strays(STRAY_LIMIT).await;
    }
}
