//! The dead-man's switch: a small process that takes the node down when
//! `handoff run` dies without a clean exit (SIGKILL, the OOM killer, the
//! abort that follows a panic), so a node never keeps the floating IP with
//! no proxy behind it (handoff(8), DEAD-MAN'S SWITCH; docs/design.md).
//!
//! Owns both sides:
//! * the agent's: [`Sentinel::start`] runs `handoff --config FILE sentinel`
//!   in a session of its own (so a kill of the agent's process group, as
//!   Nomad sends after `kill_timeout` on OpenBSD, does not reach it), with
//!   no parent-death signal, and the read end of a pipe as its stdin. The
//!   agent keeps the write end, close-on-exec, so the proxy and the backend
//!   tools never hold it open. Each proxy the agent starts is named on it
//!   (`proxy PID [group]`); a clean exit writes `release`; a death of any
//!   kind closes the pipe. The agent restarts a sentinel that dies.
//! * the sentinel's: [`run`] reads stdin. `release` ends it with nothing
//!   done. End of file means the agent died: it takes the state dir's lock
//!   (never while a live agent holds it: a restarted agent takes the node
//!   down itself), applies `down` through the same backend, ledger and
//!   track file the agent uses, kills what the last proxy left behind, and
//!   exits.
//! * `handoff down` ([`down_without_agent`]): the same `down` while no
//!   agent runs, for boot scripts.
//!
//! Its argv is its own (`sentinel`, not `run`), so neither keepalived's
//! `vrrp_track_process` nor rc.subr's `pkill -xf` takes it for the agent.
//! On Linux, Nomad and systemd kill the whole cgroup, sentinel included:
//! there keepalived's `vrrp_track_process` is the net (config/keepalived.conf).
//!
//! Does not own: when the agent exits (`crate::machine`), or how a backend
//! applies a level (`crate::failover`).

use std::{
    collections::BTreeSet,
    io::{self, BufRead, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};

use crate::{
    child_env::ChildEnv,
    config::{self, Location, Resolved},
    error::Error,
    failover::{self, AnyBackend},
    logging,
    loopback_vip::LoopbackVip,
    process::{Children, Group, ProcessEnd},
    signals,
    state::{Holder, StateDir, StateError},
};

/// The subcommand the sentinel runs as (hidden from `--help`).
pub const SUBCOMMAND: &str = "sentinel";
/// The line a clean exit writes: the node is down, nothing to do.
const RELEASE: &str = "release";
/// The line that names the proxy now running: `proxy PID group` (its own
/// process group) or `proxy PID` (handoff's).
const PROXY: &str = "proxy";
/// The line that names the process groups of the hooks and duties running
/// now: `groups PGID PGID ...` (the whole set each time).
const GROUPS: &str = "groups";
/// How long a released sentinel may take to exit before the agent stops
/// waiting for it (it exits in microseconds).
const EXIT_WAIT: Duration = Duration::from_secs(1);
/// A sentinel that dies while the agent runs is started again after this.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// How long the sentinel waits for a dead agent's lock to be released.
const LOCK_RELEASE: Duration = Duration::from_secs(2);
/// How long the sentinel keeps trying to apply `down`.
pub const DOWN_LIMIT: Duration = Duration::from_secs(10);

/// The agent's handle on its sentinel; the task behind it restarts a
/// sentinel that dies.
#[derive(Debug)]
pub struct Sentinel {
    release: oneshot::Sender<bool>,
    task: JoinHandle<()>,
    proxy: Arc<watch::Sender<Option<ProxyRef>>>,
    groups: Arc<watch::Sender<BTreeSet<i32>>>,
}

/// The proxy the agent runs now, as the sentinel must know it to kill what
/// a dead agent left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyRef {
    /// Its pid.
    pub pid: i32,
    /// It leads a process group of its own (`process_group = "own"`).
    pub own_group: bool,
}

impl ProxyRef {
    fn line(self) -> String {
        if self.own_group {
            format!("{PROXY} {} group\n", self.pid)
        } else {
            format!("{PROXY} {}\n", self.pid)
        }
    }

    fn parse(line: &str) -> Option<ProxyRef> {
        let mut words = line.split_whitespace();
        if words.next() != Some(PROXY) {
            return None;
        }
        let pid = words.next()?.parse().ok().filter(|p| *p > 1)?;
        let own_group = words.next() == Some("group");
        Some(ProxyRef { pid, own_group })
    }
}

/// The agent's side: tells the sentinel which proxy runs, and which hook
/// and duty process groups.
#[derive(Debug, Clone)]
pub struct ProxyLink {
    proxy: Arc<watch::Sender<Option<ProxyRef>>>,
    groups: Arc<watch::Sender<BTreeSet<i32>>>,
}

impl ProxyLink {
    /// A proxy was started.
    pub fn started(&self, proxy: ProxyRef) {
        self.proxy.send_replace(Some(proxy));
    }

    /// A hook's or duty's process group started (`true`) or ended: a dead
    /// agent's sentinel kills the ones still running, since only their
    /// leader gets the parent-death signal (a script's children do not).
    pub fn group(&self, pgid: i32, running: bool) {
        self.groups.send_modify(|groups| {
            if running {
                groups.insert(pgid);
            } else {
                groups.remove(&pgid);
            }
        });
    }
}

/// `groups PGID ...`, parsed; `None` for another line.
fn parse_groups(line: &str) -> Option<BTreeSet<i32>> {
    let mut words = line.split_whitespace();
    if words.next() != Some(GROUPS) {
        return None;
    }
    Some(
        words
            .filter_map(|w| w.parse().ok())
            .filter(|pgid| *pgid > 1)
            .collect(),
    )
}

/// One running sentinel process.
#[derive(Debug)]
struct Process {
    pid: nix::unistd::Pid,
    pipe: io::PipeWriter,
    exit: oneshot::Receiver<ProcessEnd>,
}

impl Process {
    /// Names the proxy now running (a few bytes into a pipe the sentinel
    /// reads at once: this never blocks for long).
    fn tell(&mut self, proxy: Option<ProxyRef>) {
        if let Some(proxy) = proxy
            && let Err(error) = self.pipe.write_all(proxy.line().as_bytes())
        {
            tracing::warn!(%error, "cannot tell the sentinel about the proxy");
        }
    }

    /// Names the hook and duty process groups running now.
    fn tell_groups(&mut self, groups: &BTreeSet<i32>) {
        let mut line = GROUPS.to_owned();
        for pgid in groups {
            line.push(' ');
            line.push_str(&pgid.to_string());
        }
        line.push('\n');
        if let Err(error) = self.pipe.write_all(line.as_bytes()) {
            tracing::warn!(%error, "cannot tell the sentinel about the hooks' groups");
        }
    }

    fn spawn(children: &Children, config: &Path) -> io::Result<Process> {
        let exe = std::env::current_exe()?;
        let (reader, pipe) = io::pipe()?;
        let mut command = Command::new(exe);
        command
            .arg("--config")
            .arg(config)
            .arg(SUBCOMMAND)
            .stdin(Stdio::from(reader));
        let spawned = children.spawn(&mut command, Group::Session)?;
        Ok(Process {
            pid: spawned.pid,
            pipe,
            exit: spawned.exit,
        })
    }
}

impl Sentinel {
    /// Starts the sentinel for the agent whose config is `config`. Call it
    /// inside the runtime, after `down` was applied at start.
    pub fn start(children: Children, config: PathBuf) -> io::Result<Sentinel> {
        let mut process = Process::spawn(&children, &config)?;
        tracing::info!(pid = process.pid.as_raw(), "sentinel started");
        let (release, mut released) = oneshot::channel::<bool>();
        let proxy = Arc::new(watch::Sender::new(None));
        let mut proxies = proxy.subscribe();
        let groups = Arc::new(watch::Sender::new(BTreeSet::new()));
        let mut group_sets = groups.subscribe();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    Ok(()) = proxies.changed() => {
                        let current = *proxies.borrow_and_update();
                        process.tell(current);
                    }
                    Ok(()) = group_sets.changed() => {
                        let current = group_sets.borrow_and_update().clone();
                        process.tell_groups(&current);
                    }
                    clean = &mut released => {
                        // A dropped sender is not a clean exit.
                        finish(process, clean.unwrap_or(false)).await;
                        return;
                    }
                    end = &mut process.exit => {
                        let status = end.map_or_else(|_| "unknown".to_owned(), |e| e.to_string());
                        tracing::error!(pid = process.pid.as_raw(), %status,
                            "the sentinel exited while the agent runs: starting it again");
                        tokio::time::sleep(RESTART_DELAY).await;
                        match Process::spawn(&children, &config) {
                            Ok(next) => {
                                tracing::info!(pid = next.pid.as_raw(), "sentinel started");
                                process = next;
                                process.tell(*proxies.borrow());
                                let current = group_sets.borrow().clone();
                                process.tell_groups(&current);
                            }
                            Err(error) => {
                                tracing::error!(%error, "cannot start the sentinel; keepalived's tracking (if configured) is the only net");
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Sentinel {
            release,
            task,
            proxy,
            groups,
        })
    }

    /// What the dispatcher tells the sentinel through.
    pub fn link(&self) -> ProxyLink {
        ProxyLink {
            proxy: self.proxy.clone(),
            groups: self.groups.clone(),
        }
    }

    /// The agent is exiting. With `down_confirmed`, tells the sentinel to do
    /// nothing; otherwise closes the pipe, so it takes the node down itself
    /// (a last try for a `down` the agent could not confirm). Waits up to
    /// a second (`EXIT_WAIT`) for it to exit, so no process outlives a clean stop.
    pub async fn release(self, down_confirmed: bool) {
        let _ = self.release.send(down_confirmed);
        let _ = tokio::time::timeout(EXIT_WAIT * 2, self.task).await;
    }
}

async fn finish(mut process: Process, clean: bool) {
    if clean {
        if let Err(error) = process.pipe.write_all(format!("{RELEASE}\n").as_bytes()) {
            tracing::warn!(%error, "cannot release the sentinel");
        }
        drop(process.pipe);
        if tokio::time::timeout(EXIT_WAIT, &mut process.exit)
            .await
            .is_err()
        {
            tracing::warn!(pid = process.pid.as_raw(), "the sentinel did not exit");
        }
    } else {
        // Closing the pipe is the signal; it outlives us and acts alone.
        drop(process.pipe);
        tracing::warn!(
            pid = process.pid.as_raw(),
            "down was not confirmed: the sentinel tries once more"
        );
    }
}

/// `down` through the configured backend, under `state`'s lock, retried for
/// up to `limit`: what the sentinel does after its agent died, and what
/// `handoff down` does at boot.
fn apply_down(config: &Resolved, state: StateDir, limit: Duration) -> Result<(), Error> {
    let children = Children::new(ChildEnv::new(&config.proxy.keep_env));
    let boot = failover::boot_id(&config.backend)?;
    let (runtime, _signals) = signals::runtime_and_reader(&children)?;
    runtime.block_on(async {
        let mut backend =
            AnyBackend::open(&config.backend, children, Arc::new(state), boot).await?;
        backend.down_until(limit).await
    })?;
    // No proxy serves here any more: nothing for the VIPs on lo to catch.
    if let Some(loopback) = LoopbackVip::from_config(&config.backend) {
        loopback.set(false);
    }
    Ok(())
}

/// `handoff down`: takes the node down while no agent runs, through the
/// same ledger or track file (config/openbsd/rc.local runs it at boot, so
/// that a node whose agent never started stays out of the election; the
/// first `handoff run` then counts the CARP share once, as its own).
/// Refused while an agent holds the state dir: it keeps the level itself.
pub fn down_without_agent(flag: Option<&Path>) -> Result<u8, Error> {
    let config = config::load(&Location::find(flag))?;
    let state = match StateDir::open(&config.control.state_dir) {
        Ok(state) => state,
        Err(StateError::Locked { holder, .. }) => {
            return Err(Error::Unavailable(format!(
                "handoff{} runs on this node and keeps its level itself: `handoff demote` hands the IP over",
                crate::state::holder_suffix(holder.as_deref())
            )));
        }
        Err(error) => return Err(error.into()),
    };
    apply_down(&config, state, config.failover.timeout)?;
    println!(
        "{}: this node is down; `handoff run` raises it once its proxy is healthy",
        config.backend.name()
    );
    Ok(crate::exit::OK)
}

/// SIGKILLs what the dead agent's proxy left behind, so that nothing keeps
/// serving, or holding the proxy's ports against the next start ("Address
/// already in use"), after the node went down: its process group when it
/// has one (nginx's workers outlive a killed master); else the proxy itself
/// where no parent-death signal took it with the agent (OpenBSD; on Linux it
/// is dead already, and its pid must not be signalled again).
fn kill_left_behind(proxy: ProxyRef) {
    use nix::{sys::signal, unistd::Pid};
    let pid = Pid::from_raw(proxy.pid);
    let sent = if proxy.own_group {
        signal::killpg(pid, signal::Signal::SIGKILL)
    } else if crate::platform::PARENT_DEATH_SIGNAL {
        return;
    } else {
        signal::kill(pid, signal::Signal::SIGKILL)
    };
    match sent {
        Ok(()) => tracing::warn!(
            pid = proxy.pid,
            group = proxy.own_group,
            "killed what the proxy left behind"
        ),
        Err(nix::errno::Errno::ESRCH) => {}
        Err(error) => {
            tracing::warn!(pid = proxy.pid, %error, "cannot kill what the proxy left behind");
        }
    }
}

/// SIGKILLs the dead agent's hook and duty process groups still running.
fn kill_groups(groups: &BTreeSet<i32>) {
    use nix::{sys::signal, unistd::Pid};
    for pgid in groups {
        match signal::killpg(Pid::from_raw(*pgid), signal::Signal::SIGKILL) {
            Ok(()) => tracing::warn!(pgid, "killed a hook's or duty's process group"),
            Err(nix::errno::Errno::ESRCH) => {}
            Err(error) => {
                tracing::warn!(pgid, %error, "cannot kill a hook's or duty's process group");
            }
        }
    }
}

/// Takes the state dir's lock once the dead `agent` let go of it: the
/// kernel closes a dead process's files in no set order, so the pipe's end
/// of file can come first. `None` when another (new) agent holds it.
fn lock_after(agent: i32, dir: &Path) -> Result<Option<StateDir>, Error> {
    let deadline = std::time::Instant::now() + LOCK_RELEASE;
    loop {
        match StateDir::open_as(dir, Holder::Sentinel) {
            Ok(state) => return Ok(Some(state)),
            Err(StateError::Locked { holder, .. }) => {
                let dead = holder.as_deref() == Some(agent.to_string().as_str());
                if !dead {
                    tracing::info!(
                        holder,
                        "a new agent holds the state dir: it takes the node down itself"
                    );
                    return Ok(None);
                }
                if std::time::Instant::now() >= deadline {
                    return Err(Error::Unavailable(format!(
                        "the dead agent's lock on {} was not released within {LOCK_RELEASE:?}",
                        dir.display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// `handoff sentinel`: waits for the agent on stdin; see the module docs.
pub fn run(flag: Option<&Path>) -> Result<u8, Error> {
    let config = config::load(&Location::find(flag))?;
    logging::init(&config.log);
    let agent = nix::unistd::getppid().as_raw();
    let mut proxy = None;
    let mut groups = BTreeSet::new();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line == RELEASE {
            return Ok(crate::exit::OK);
        }
        if let Some(named) = ProxyRef::parse(&line) {
            proxy = Some(named);
        } else if let Some(named) = parse_groups(&line) {
            groups = named;
        }
    }
    tracing::error!(
        agent,
        "handoff run died without a clean exit: taking this node down"
    );
    // First: a duty is master-only work, and the peer may start its own
    // as soon as it takes over.
    kill_groups(&groups);
    let Some(state) = lock_after(agent, &config.control.state_dir)? else {
        // A new agent (Restart=on-failure) already holds the node: it
        // applies `down` itself before anything else.
        return Ok(crate::exit::OK);
    };
    apply_down(&config, state, DOWN_LIMIT)?;
    tracing::info!("the node is down");
    if let Some(proxy) = proxy {
        kill_left_behind(proxy);
    }
    Ok(crate::exit::OK)
}
