//! Child processes: spawning them with a clean slate, and the one reaper.
//!
//! Owns every `waitpid` in handoff. On Linux handoff is a child subreaper, so
//! orphaned grandchildren are re-parented to it and must be reaped here too;
//! a second reaper (tokio's, or `Child::wait`) would race this one for the
//! same statuses (docs/facts.md, "Rust and the OS"). So children are
//! spawned through [`Children::spawn`], which records the pid under the same
//! lock that [`Children::reap`] holds, and the exit status travels back on a
//! oneshot channel. Signals to a child also go through the registry, so a pid
//! is never signalled after it was reaped (and could have been reused).
//!
//! Does not own: what a child is for (the proxy, a backend command), nor when
//! to signal it; callers decide.

use std::{
    collections::HashMap,
    ffi::OsStr,
    io,
    os::{fd::OwnedFd, unix::process::CommandExt},
    process::{Command, Stdio},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use nix::{
    errno::Errno,
    sys::{
        signal::{Signal, kill, killpg},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};
use tokio::{
    io::AsyncReadExt,
    sync::{oneshot, watch},
};

use crate::{child_env::ChildEnv, platform};

/// How a process ended, without the OS's `ExitStatus` encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessEnd {
    /// It called exit with this code.
    Exited(u8),
    /// This signal number killed it.
    Signaled(u8),
}

impl std::fmt::Display for ProcessEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ProcessEnd::Exited(code) => write!(f, "exited with code {code}"),
            ProcessEnd::Signaled(n) => match Signal::try_from(i32::from(n)) {
                Ok(signal) => write!(f, "killed by {}", signal.as_str()),
                Err(_) => write!(f, "killed by signal {n}"),
            },
        }
    }
}

/// Whether a child gets a process group of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Stay in handoff's group.
    Inherit,
    /// `setpgid(0, 0)` in the child.
    Own,
    /// `setsid()` in the child, and no parent-death signal: it outlives
    /// handoff and a kill of handoff's process group (the sentinel).
    Session,
}

/// The registry of live children; cheap to clone, shared with the reaper.
/// It also carries what every child's environment loses ([`ChildEnv`]; the
/// default strips every credential).
#[derive(Debug, Clone, Default)]
pub struct Children {
    inner: Arc<Mutex<Registry>>,
    env: Arc<ChildEnv>,
}

#[derive(Debug, Default)]
struct Registry {
    waiting: HashMap<Pid, Entry>,
    orphans_reaped: u64,
}

/// What the reaper tells about one registered child.
#[derive(Debug)]
struct Entry {
    exit: oneshot::Sender<ProcessEnd>,
    /// Whether it is stopped (WSTOPPED) rather than running (WCONTINUED).
    stopped: watch::Sender<bool>,
}

/// A child that was started.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid (and pgid with [`Group::Own`]).
    pub pid: Pid,
    /// Resolves once the reaper has collected its status.
    pub exit: oneshot::Receiver<ProcessEnd>,
    /// Whether it is stopped (SIGSTOP, a terminal's SIGTSTP/SIGTTIN/SIGTTOU)
    /// rather than running, as the reaper last saw it.
    pub stopped: watch::Receiver<bool>,
    /// Its stdout, when piped.
    pub stdout: Option<OwnedFd>,
    /// Its stderr, when piped.
    pub stderr: Option<OwnedFd>,
}

impl Children {
    /// A registry whose children's environment loses what `env` says.
    pub fn new(env: ChildEnv) -> Children {
        Children {
            inner: Arc::default(),
            env: Arc::new(env),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic elsewhere must not stop reaping; the map stays consistent
        // because every critical section is a single insert or remove.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts `command` with default signal dispositions, an empty signal
    /// mask, and the variables meant for handoff alone removed from its
    /// environment (`crate::child_env`).
    ///
    /// Call it from a thread that lives as long as handoff: Linux sends
    /// PDEATHSIG when the *thread* that forked the child exits, not the process
    /// (prctl(2), PR_SET_PDEATHSIG).
    pub fn spawn(&self, command: &mut Command, group: Group) -> io::Result<Spawned> {
        self.spawn_with(command, group, None)
    }

    /// [`Children::spawn`], with one variable set after the environment was
    /// cleaned: the proxy's private `NOTIFY_SOCKET` (`crate::proxy_notify`),
    /// which would otherwise be removed as the supervisor's.
    pub fn spawn_with(
        &self,
        command: &mut Command,
        group: Group,
        variable: Option<(&str, &OsStr)>,
    ) -> io::Result<Spawned> {
        self.env.apply(command);
        if let Some((name, value)) = variable {
            command.env(name, value);
        }
        if group == Group::Own {
            command.process_group(0);
        }
        let parent = nix::unistd::getpid();
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe calls are allowed. `child_setup` makes only
        // signal(2), pthread_sigmask(3), setsid(2), prctl(2) and getppid(2)
        // calls and allocates nothing.
        unsafe {
            command.pre_exec(move || child_setup(parent, group));
        }
        // Hold the registry across fork+exec: the reaper cannot collect this
        // child before its sender is registered, and cannot steal the status
        // std waits for itself when exec fails.
        let mut registry = self.lock();
        let mut child = command.spawn()?;
        let pid = Pid::from_raw(i32::try_from(child.id()).map_err(io::Error::other)?);
        let (tx, exit) = oneshot::channel();
        let (stopped_tx, stopped) = watch::channel(false);
        registry.waiting.insert(
            pid,
            Entry {
                exit: tx,
                stopped: stopped_tx,
            },
        );
        drop(registry);
        Ok(Spawned {
            pid,
            exit,
            stopped,
            stdout: child.stdout.take().map(OwnedFd::from),
            stderr: child.stderr.take().map(OwnedFd::from),
        })
    }

    /// Collects every child that has ended, and notes which registered
    /// children were stopped or continued. Called on SIGCHLD (which the
    /// kernel also sends for a stop and a continue, since handoff never sets
    /// SA_NOCLDSTOP); a status for a pid nobody registered is an orphan
    /// re-parented to us, reaped and logged.
    pub fn reap(&self) {
        let mut registry = self.lock();
        let flags = WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED | WaitPidFlag::WCONTINUED;
        loop {
            let (pid, end) = match waitpid(None::<Pid>, Some(flags)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    // The kernel keeps only the low 8 bits (wait(2)).
                    (
                        pid,
                        ProcessEnd::Exited(u8::try_from(code & 0xff).unwrap_or(u8::MAX)),
                    )
                }
                Ok(WaitStatus::Signaled(pid, signal, _core)) => (
                    pid,
                    ProcessEnd::Signaled(u8::try_from(signal as i32).unwrap_or(u8::MAX)),
                ),
                Ok(WaitStatus::Stopped(pid, _)) => {
                    if let Some(entry) = registry.waiting.get(&pid) {
                        entry.stopped.send_replace(true);
                    }
                    continue;
                }
                Ok(WaitStatus::Continued(pid)) => {
                    if let Some(entry) = registry.waiting.get(&pid) {
                        entry.stopped.send_replace(false);
                    }
                    continue;
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                // `Ok(_)`: Linux's ptrace stops; OpenBSD's WaitStatus has no
                // other variants, so there the pattern is unreachable.
                #[allow(unreachable_patterns)]
                Err(Errno::EINTR) | Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%error, "waitpid failed");
                    break;
                }
            };
            if let Some(entry) = registry.waiting.remove(&pid) {
                // The receiver may be gone (a timed-out command): nothing to do.
                let _ = entry.exit.send(end);
            } else {
                registry.orphans_reaped += 1;
                tracing::debug!(pid = pid.as_raw(), status = %end, "reaped orphan");
            }
        }
    }

    /// Sends `signal` to `pid` (or its group) if it has not been reaped.
    /// Returns whether it was sent.
    pub fn signal(&self, pid: Pid, signal: Signal, group: Group) -> nix::Result<bool> {
        let registry = self.lock();
        if !registry.waiting.contains_key(&pid) {
            return Ok(false);
        }
        let sent = match group {
            Group::Inherit => kill(pid, signal),
            Group::Own | Group::Session => killpg(pid, signal),
        };
        match sent {
            Ok(()) => Ok(true),
            // A zombie's group may already be empty.
            Err(Errno::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Orphans reaped so far.
    pub fn orphans_reaped(&self) -> u64 {
        self.lock().orphans_reaped
    }

    /// SIGKILLs every process that is our child but was not spawned through
    /// the registry (orphans re-parented to us: leftover proxy workers), and
    /// repeats until none is left or `limit` passes. A killed worker's own
    /// children are re-parented to us in turn, so one pass is not enough.
    /// Returns how many were killed.
    pub async fn kill_strays(&self, limit: Duration) -> usize {
        let me = nix::unistd::getpid();
        let deadline = tokio::time::Instant::now() + limit;
        let mut killed = std::collections::HashSet::new();
        loop {
            let strays: Vec<Pid> = {
                let registry = self.lock();
                platform::children_of(me)
                    .into_iter()
                    .filter(|p| !registry.waiting.contains_key(p))
                    .collect()
            };
            if strays.is_empty() {
                break;
            }
            for pid in strays {
                if killed.insert(pid) {
                    tracing::warn!(pid = pid.as_raw(), "killing leftover process of the proxy");
                }
                let _ = kill(pid, Signal::SIGKILL);
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::error!("leftover processes survived SIGKILL for {limit:?}");
                break;
            }
            // Killed strays become zombies until the reaper collects them.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        killed.len()
    }
}

/// Runs in the child between fork and exec; async-signal-safe calls only.
///
/// The child inherits handoff's blocked mask, and std 1.95 does not clear it
/// (observed: the fixture saw handoff's SigBlk), so clear it here, after every
/// disposition is back to default: a signal pending at that point takes its
/// default action in the child, as it would in the proxy.
fn child_setup(parent: Pid, group: Group) -> io::Result<()> {
    reset_dispositions();
    nix::sys::signal::SigSet::empty()
        .thread_set_mask()
        .map_err(io::Error::from)?;
    if group == Group::Session {
        nix::unistd::setsid().map_err(io::Error::from)?;
        return Ok(());
    }
    platform::child_setup(parent)
}

/// Sets every catchable signal to its default action.
///
/// handoff installs no signal handlers (it blocks and reads signals, see
/// `crate::signals`), but it may itself have been started with signals
/// ignored (`nohup`, a shell's `&`), and an ignored disposition survives exec.
pub fn reset_dispositions() {
    use nix::sys::signal::{SigHandler, signal};
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        #[allow(unsafe_code)]
        // SAFETY: SIG_DFL installs no handler code, so no handler can observe
        // inconsistent state; signal(2) is async-signal-safe.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
    platform::reset_realtime_signals();
}

/// Output of a command run by [`run_command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// How it ended.
    pub end: ProcessEnd,
    /// Its stdout (at most [`OUTPUT_LIMIT`] bytes).
    pub stdout: String,
    /// Its stderr (at most [`OUTPUT_LIMIT`] bytes).
    pub stderr: String,
}

/// Most output kept from a command; a backend tool prints a line or two.
pub const OUTPUT_LIMIT: u64 = 64 * 1024;

/// Why a command could not produce output.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started.
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// It ran past its timeout and was killed.
    #[error("`{program}` did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The program.
        program: String,
        /// The limit.
        timeout: Duration,
    },
    /// Reading its output failed.
    #[error("reading the output of `{program}`: {source}")]
    Io {
        /// The program.
        program: String,
        /// Why.
        source: io::Error,
    },
}

/// Runs `program args` without a shell, with stdin closed, and returns its
/// output, killing it (SIGKILL) if it runs past `timeout`.
pub async fn run_command<S: AsRef<OsStr>>(
    children: &Children,
    program: &str,
    args: &[S],
    timeout: Duration,
) -> Result<CommandOutput, CommandError> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawned = children
        .spawn(&mut command, Group::Inherit)
        .map_err(|source| CommandError::Spawn {
            program: program.into(),
            source,
        })?;
    let pid = spawned.pid;
    // A caller that gives up (a reload that ended, a health checker aborted
    // with its proxy) drops this future: the command must not outlive it.
    let mut guard = KillOnDrop {
        children,
        pid: Some(pid),
    };
    let io_error = |source| CommandError::Io {
        program: program.into(),
        source,
    };
    let stdout = read_pipe(spawned.stdout);
    let stderr = read_pipe(spawned.stderr);
    let exit = async {
        spawned
            .exit
            .await
            .map_err(|_| io::Error::other("reaper dropped the child"))
    };
    let ran = tokio::time::timeout(timeout, async { tokio::try_join!(stdout, stderr, exit) }).await;
    if let Ok(Ok(_)) = &ran {
        guard.pid = None; // reaped: nothing left to kill
    }
    match ran {
        Ok(Ok((stdout, stderr, end))) => Ok(CommandOutput {
            end,
            stdout,
            stderr,
        }),
        Ok(Err(source)) => Err(io_error(source)),
        // The guard kills it; the reaper collects it, and the status is of
        // no further interest.
        Err(_) => {
            drop(guard);
            Err(CommandError::Timeout {
                program: program.into(),
                timeout,
            })
        }
    }
}

/// SIGKILLs a command on drop unless it was reaped (`pid` taken). Through
/// the registry, so a pid that was reaped (and may be reused) is never hit.
struct KillOnDrop<'a> {
    children: &'a Children,
    pid: Option<Pid>,
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = self.children.signal(pid, Signal::SIGKILL, Group::Inherit);
        }
    }
}

async fn read_pipe(fd: Option<OwnedFd>) -> io::Result<String> {
    let Some(fd) = fd else {
        return Ok(String::new());
    };
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let mut bytes = Vec::new();
    pipe.take(OUTPUT_LIMIT).read_to_end(&mut bytes).await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
