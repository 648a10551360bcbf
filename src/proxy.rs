//! The proxy child: starting it and signalling it. Exactly one value of
//! [`Proxy`] exists per running proxy, owned by the dispatcher loop.
//!
//! Owns: turning `process_group` into how signals are addressed, and the
//! cleanup of what a dead proxy leaves behind (workers still bound to its
//! ports would make the next start fail with "Address already in use").
//! Does not own: reaping (`crate::process`), or when to signal (`crate::machine`).

use std::{io, process::Command, time::Duration};

use nix::{errno::Errno, sys::signal::Signal, unistd::Pid};
use tokio::sync::oneshot;

use crate::{
    config::{Argv, ProcessGroup},
    exit,
    process::{Children, Group, ProcessEnd},
};

/// How long leftover processes of a dead proxy may take to die after SIGKILL.
const STRAY_LIMIT: Duration = Duration::from_secs(2);

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    pid: Pid,
    group: Group,
    exit: oneshot::Receiver<ProcessEnd>,
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
    /// Starts `argv` with stdin, stdout and stderr inherited from handoff.
    pub fn spawn(
        children: &Children,
        argv: &Argv,
        group: ProcessGroup,
    ) -> Result<Proxy, SpawnError> {
        let group = match group {
            ProcessGroup::Inherit => Group::Inherit,
            ProcessGroup::Own => Group::Own,
        };
        let mut command = Command::new(argv.program());
        command.args(argv.args());
        let spawned = children
            .spawn(&mut command, group)
            .map_err(|source| SpawnError {
                program: argv.program().into(),
                source,
            })?;
        Ok(Proxy {
            pid: spawned.pid,
            group,
            exit: spawned.exit,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Sends `signal` to the proxy, or to its group when it has its own.
    /// A proxy that already exited (and was reaped) is not signalled.
    pub fn signal(&self, children: &Children, signal: Signal) -> nix::Result<bool> {
        children.signal(self.pid, signal, self.group)
    }

    /// Resolves when the proxy has ended and was reaped.
    pub async fn exited(&mut self) -> ProcessEnd {
        if let Ok(end) = (&mut self.exit).await {
            end
        } else {
            // Only happens if the registry dropped the sender unsent, which
            // it never does; report a failure rather than hang.
            tracing::error!(pid = self.pid.as_raw(), "lost the proxy's exit status");
            ProcessEnd::Exited(exit::FAILURE)
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
