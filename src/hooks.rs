//! Running role-change hooks and master-only duties: the commands of
//! `[hooks]` and `[[duty]]`, when the machine asks (`Action::Hook`,
//! `Action::CancelStopHook`, `Action::Duties`).
//!
//! Owns: the hook queue (one at a time, in order; when several wait behind
//! a running one, only the newest runs and the others are skipped and
//! counted, so the node's side effects end matching its role), the duty
//! timers, every run's process group (killed past its timeout, and a duty's
//! the moment duties stop), each run's environment, its log line and
//! metrics, and what `status` shows of them. Nothing here is ever waited
//! for by the failover: the dispatcher only hands calls over.

use std::{
    collections::{BTreeMap, VecDeque},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

use crate::{
    config::{DutyConfig, HookCommand, HooksConfig},
    host,
    machine::{HookCall, HookName},
    metrics::Metrics,
    process::{Children, Group, ProcessEnd},
    run_outcome::Outcome,
    sentinel::ProxyLink,
    status::{DutyStatus, LastRun},
};

/// After SIGTERM, how long a stopped duty's group gets before SIGKILL.
const DUTY_GRACE: Duration = Duration::from_secs(2);

/// A hook's run ended.
#[derive(Debug)]
pub struct Ended {
    hook: HookName,
    run: LastRun,
}

/// A hook that waits to run.
#[derive(Debug, Clone, Copy)]
struct Queued {
    call: HookCall,
    seen_at: SystemTime,
    seen_monotonic_ns: u128,
}

/// The hook runner and the duties.
#[derive(Debug)]
pub struct Hooks {
    commands: BTreeMap<HookName, HookCommand>,
    children: Children,
    metrics: Arc<Metrics>,
    vips: String,
    queue: VecDeque<Queued>,
    running: Option<(HookName, Pid, JoinHandle<()>)>,
    tx: mpsc::Sender<Ended>,
    /// Ended runs, for the dispatcher's loop.
    pub ended: mpsc::Receiver<Ended>,
    last: BTreeMap<HookName, LastRun>,
    duties: Vec<Duty>,
    /// Tells the dead-man's switch which process groups run, so that it
    /// kills them if the agent dies (`crate::sentinel`).
    sentinel: Option<ProxyLink>,
}

impl Hooks {
    /// The runner for `[hooks]` and `[[duty]]`; `vips` go into every run's
    /// environment.
    pub fn new(
        hooks: &HooksConfig,
        duties: &[DutyConfig],
        vips: &[std::net::IpAddr],
        children: Children,
        metrics: Arc<Metrics>,
        sentinel: Option<ProxyLink>,
    ) -> Hooks {
        let commands = [
            (HookName::OnMaster, &hooks.on_master),
            (HookName::OnBackup, &hooks.on_backup),
            (HookName::OnFault, &hooks.on_fault),
            (HookName::OnMaintenance, &hooks.on_maintenance),
            (HookName::OnStop, &hooks.on_stop),
        ]
        .into_iter()
        .filter_map(|(name, hook)| hook.as_ref().map(|h| (name, h.get_ref().clone())))
        .collect();
        let (tx, ended) = mpsc::channel(8);
        Hooks {
            commands,
            children,
            metrics,
            vips: vips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            queue: VecDeque::new(),
            running: None,
            tx,
            ended,
            last: BTreeMap::new(),
            duties: duties.iter().cloned().map(Duty::new).collect(),
            sentinel,
        }
    }

    /// The machine asks for a hook: queued, and run when its turn comes
    /// (a hook without a command is nothing to run).
    pub fn call(&mut self, call: HookCall) {
        if !self.commands.contains_key(&call.hook) {
            tracing::debug!(hook = call.hook.key(), "no command for this hook");
            return;
        }
        self.queue.push_back(Queued {
            call,
            seen_at: SystemTime::now(),
            seen_monotonic_ns: host::monotonic().as_nanos(),
        });
        self.next();
    }

    /// A second stop signal: `on_stop` is dropped from the queue, and killed
    /// if it runs.
    pub fn cancel_stop(&mut self) {
        let before = self.queue.len();
        self.queue.retain(|q| q.call.hook != HookName::OnStop);
        if self.queue.len() < before {
            tracing::info!(hook = "on_stop", "hook skipped: a second stop signal");
            self.record(HookName::OnStop, Outcome::Skipped, None, Duration::ZERO);
        }
        if let Some((HookName::OnStop, pid, _)) = &self.running {
            tracing::info!(hook = "on_stop", "hook killed: a second stop signal");
            let _ = killpg(*pid, Signal::SIGKILL);
        }
    }

    /// A run ended: record it, and start the next.
    pub fn ended(&mut self, ended: Ended) {
        self.running = None;
        let Ended { hook, run } = ended;
        self.last.insert(hook, run);
        self.next();
    }

    /// Starts the newest queued hook if none runs; those before it were
    /// superseded.
    fn next(&mut self) {
        if self.running.is_some() {
            return;
        }
        let Some(newest) = self.queue.pop_back() else {
            return;
        };
        let superseded: Vec<HookName> = self.queue.drain(..).map(|q| q.call.hook).collect();
        for hook in superseded {
            tracing::info!(
                hook = hook.key(),
                newer = newest.call.hook.key(),
                "hook skipped: superseded"
            );
            self.record(hook, Outcome::Skipped, None, Duration::ZERO);
        }
        let hook = newest.call.hook;
        let Some(command) = self.commands.get(&hook).cloned() else {
            return;
        };
        let mut cmd = build(
            &command.command.0,
            command.user.as_ref().map(|u| u.get_ref().as_str()),
        );
        let previous = newest.call.previous.map_or("unknown", HookName::role);
        cmd.env("HANDOFF_HOOK", hook.key())
            .env("HANDOFF_ROLE", hook.role())
            .env("HANDOFF_PREVIOUS_ROLE", previous)
            .env("HANDOFF_REASON", newest.call.reason.name())
            .env("HANDOFF_NODE", host::node_name())
            .env("HANDOFF_VIPS", &self.vips)
            .env("HANDOFF_SEEN_AT", unix_seconds(newest.seen_at))
            .env(
                "HANDOFF_SEEN_MONOTONIC_NS",
                newest.seen_monotonic_ns.to_string(),
            );
        let started = Instant::now();
        let spawned = match self.children.spawn(&mut cmd, Group::Own) {
            Ok(spawned) => spawned,
            Err(error) => {
                tracing::error!(hook = hook.key(), %error, "hook could not start");
                self.record(hook, Outcome::Failed, None, Duration::ZERO);
                return self.next();
            }
        };
        let pid = spawned.pid;
        tracing::debug!(
            hook = hook.key(),
            pid = pid.as_raw(),
            reason = newest.call.reason.name(),
            "hook started"
        );
        let (tx, metrics, timeout) = (self.tx.clone(), self.metrics.clone(), command.timeout);
        let sentinel = self.sentinel.clone();
        if let Some(link) = &sentinel {
            link.group(pid.as_raw(), true);
        }
        let task = tokio::spawn(async move {
            let (outcome, exit) = wait(spawned.exit, pid, timeout).await;
            if let Some(link) = &sentinel {
                link.group(pid.as_raw(), false);
            }
            let took = started.elapsed();
            log_run("hook", hook.key(), outcome, exit, took);
            metrics.hook_ran(hook.key(), outcome, Some(took.as_secs_f64()));
            let run = LastRun {
                result: outcome,
                exit,
                took_ms: millis(took),
                at: host::unix_now(),
            };
            let _ = tx.send(Ended { hook, run }).await;
        });
        self.running = Some((hook, pid, task));
    }

    fn record(&mut self, hook: HookName, result: Outcome, exit: Option<u8>, took: Duration) {
        self.metrics.hook_ran(hook.key(), result, None);
        self.last.insert(
            hook,
            LastRun {
                result,
                exit,
                took_ms: millis(took),
                at: host::unix_now(),
            },
        );
    }

    /// Whether a hook runs or waits.
    fn busy(&self) -> bool {
        self.running.is_some() || !self.queue.is_empty()
    }

    /// The last run of each hook, by its key.
    pub fn last_runs(&self) -> BTreeMap<String, LastRun> {
        self.last
            .iter()
            .map(|(hook, run)| (hook.key().to_owned(), run.clone()))
            .collect()
    }

    /// Duties start (`true`: each waits its first interval) or stop (their
    /// running commands' groups get SIGTERM, then SIGKILL).
    pub fn duties(&mut self, on: bool) {
        for duty in &mut self.duties {
            if on {
                duty.start(
                    self.children.clone(),
                    self.metrics.clone(),
                    &self.vips,
                    self.sentinel.clone(),
                );
            } else {
                duty.stop(self.sentinel.as_ref());
            }
        }
        if !self.duties.is_empty() {
            tracing::info!(on, "duties {}", if on { "on" } else { "off" });
        }
    }

    /// What `status` shows of the duties.
    pub fn duty_status(&self) -> Vec<DutyStatus> {
        self.duties.iter().map(Duty::status).collect()
    }

    /// At exit: waits for the running and queued hooks (`on_stop`, and
    /// what the move queued behind it) at most `limit`, then kills what
    /// still runs; stops the duties.
    pub async fn finish(&mut self, limit: Duration) {
        if self.duties.iter().any(|d| d.task.is_some()) {
            self.duties(false);
        }
        let deadline = Instant::now() + limit;
        while self.busy() {
            match tokio::time::timeout_at(deadline, self.ended.recv()).await {
                Ok(Some(ended)) => self.ended(ended),
                Ok(None) => break,
                Err(_) => {
                    if let Some((hook, pid, _)) = &self.running {
                        tracing::warn!(hook = hook.key(), "hook still running at exit: killed");
                        let _ = killpg(*pid, Signal::SIGKILL);
                    }
                    self.queue.clear();
                    break;
                }
            }
        }
    }
}

/// One `[[duty]]`.
#[derive(Debug)]
struct Duty {
    config: DutyConfig,
    task: Option<JoinHandle<()>>,
    shared: Arc<Mutex<DutyShared>>,
}

/// What a duty's task and `status` share.
#[derive(Debug, Default)]
struct DutyShared {
    running: Option<Pid>,
    next_at: Option<Instant>,
    last: Option<LastRun>,
}

impl Duty {
    fn new(config: DutyConfig) -> Duty {
        Duty {
            config,
            task: None,
            shared: Arc::default(),
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, DutyShared> {
        lock(&self.shared)
    }

    fn start(
        &mut self,
        children: Children,
        metrics: Arc<Metrics>,
        vips: &str,
        sentinel: Option<ProxyLink>,
    ) {
        if self.task.is_some() {
            return;
        }
        let config = self.config.clone();
        let shared = self.shared.clone();
        let vips = vips.to_owned();
        self.task = Some(tokio::spawn(async move {
            let name = config.name.get_ref().clone();
            loop {
                let pause = jittered(config.every, config.jitter);
                lock(&shared).next_at = Some(Instant::now() + pause);
                tokio::time::sleep(pause).await;
                let mut cmd = build(
                    &config.command.0,
                    config.user.as_ref().map(|u| u.get_ref().as_str()),
                );
                cmd.env("HANDOFF_DUTY", &name)
                    .env("HANDOFF_NODE", host::node_name())
                    .env("HANDOFF_VIPS", &vips);
                let started = Instant::now();
                let spawned = match children.spawn(&mut cmd, Group::Own) {
                    Ok(spawned) => spawned,
                    Err(error) => {
                        tracing::error!(duty = %name, %error, "duty could not start");
                        metrics.duty_ran(&name, Outcome::Failed);
                        continue;
                    }
                };
                {
                    let mut s = lock(&shared);
                    s.running = Some(spawned.pid);
                    s.next_at = None;
                }
                let pid = spawned.pid;
                tracing::debug!(duty = %name, pid = pid.as_raw(), "duty started");
                if let Some(link) = &sentinel {
                    link.group(pid.as_raw(), true);
                }
                let (outcome, exit) = wait(spawned.exit, pid, config.timeout()).await;
                if let Some(link) = &sentinel {
                    link.group(pid.as_raw(), false);
                }
                let took = started.elapsed();
                log_run("duty", &name, outcome, exit, took);
                metrics.duty_ran(&name, outcome);
                let mut s = lock(&shared);
                s.running = None;
                s.last = Some(LastRun {
                    result: outcome,
                    exit,
                    took_ms: millis(took),
                    at: host::unix_now(),
                });
            }
        }));
    }

    /// The node left `up` or master: no new run, and the one under way is
    /// stopped at once (SIGTERM to its group, SIGKILL after [`DUTY_GRACE`]).
    fn stop(&mut self, sentinel: Option<&ProxyLink>) {
        let Some(task) = self.task.take() else {
            return;
        };
        task.abort();
        let mut s = self.shared();
        s.next_at = None;
        if let Some(pid) = s.running.take() {
            if let Some(link) = sentinel {
                // The aborted task will not say so; the group is killed here.
                link.group(pid.as_raw(), false);
            }
            tracing::info!(duty = %self.config.name.get_ref(), pid = pid.as_raw(), "duty stopped: this node is no longer master at level up");
            s.last = Some(LastRun {
                result: Outcome::Stopped,
                exit: None,
                took_ms: 0,
                at: host::unix_now(),
            });
            let _ = killpg(pid, Signal::SIGTERM);
            tokio::spawn(async move {
                tokio::time::sleep(DUTY_GRACE).await;
                let _ = killpg(pid, Signal::SIGKILL);
            });
        }
    }

    fn status(&self) -> DutyStatus {
        let s = self.shared();
        DutyStatus {
            name: self.config.name.get_ref().clone(),
            running: s.running.is_some(),
            next_in_ms: s
                .next_at
                .map(|at| millis(at.saturating_duration_since(Instant::now()))),
            last: s.last.clone(),
        }
    }
}

fn lock(shared: &Mutex<DutyShared>) -> std::sync::MutexGuard<'_, DutyShared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The command for `argv`, stdin closed, its output in handoff's stderr
/// (the log stream), run as `user` when given.
fn build(argv: &[String], user: Option<&str>) -> Command {
    let (program, rest) = argv
        .split_first()
        .map_or(("", &[][..]), |(p, a)| (p.as_str(), a));
    let mut cmd = Command::new(program);
    cmd.args(rest).stdin(Stdio::null());
    if let Some(name) = user {
        // The config checked that the user exists; if it vanished since,
        // the run fails at its start rather than running as root.
        match nix::unistd::User::from_name(name) {
            Ok(Some(user)) => {
                cmd.uid(user.uid.as_raw())
                    .gid(user.gid.as_raw())
                    .env("HOME", &user.dir)
                    .env("USER", &user.name)
                    .env("LOGNAME", &user.name);
            }
            _ => {
                cmd.uid(u32::MAX).gid(u32::MAX);
            }
        }
    }
    cmd
}

/// Waits for a run's end, killing its process group past `timeout`.
async fn wait(
    exit: tokio::sync::oneshot::Receiver<ProcessEnd>,
    pid: Pid,
    timeout: Duration,
) -> (Outcome, Option<u8>) {
    let mut exit = exit;
    match tokio::time::timeout(timeout, &mut exit).await {
        Ok(Ok(ProcessEnd::Exited(0))) => (Outcome::Ok, Some(0)),
        Ok(Ok(ProcessEnd::Exited(code))) => (Outcome::Failed, Some(code)),
        Ok(Ok(ProcessEnd::Signaled(_)) | Err(_)) => (Outcome::Failed, None),
        Err(_) => {
            // The whole group: a script's children too.
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = exit.await;
            (Outcome::Timeout, None)
        }
    }
}

/// One log line per run: `hook ran hook=on_master ...`, `duty ran duty=...`.
fn log_run(what: &str, name: &str, outcome: Outcome, exit: Option<u8>, took: Duration) {
    let (took_ms, result) = (millis(took), outcome.name());
    let failed = outcome != Outcome::Ok;
    match (what, outcome) {
        ("hook", Outcome::Timeout) => {
            tracing::warn!(
                hook = name,
                result,
                took_ms,
                "hook timed out: its process group was killed"
            );
        }
        ("hook", _) if failed => tracing::warn!(hook = name, result, exit, took_ms, "hook ran"),
        ("hook", _) => tracing::info!(hook = name, result, exit, took_ms, "hook ran"),
        (_, Outcome::Timeout) => {
            tracing::warn!(
                duty = name,
                result,
                took_ms,
                "duty timed out: its process group was killed"
            );
        }
        _ if failed => tracing::warn!(duty = name, result, exit, took_ms, "duty ran"),
        _ => tracing::info!(duty = name, result, exit, took_ms, "duty ran"),
    }
}

/// `every` plus or minus a random part of `jitter`.
fn jittered(every: Duration, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return every;
    }
    let span = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
    let random = crate::files::random_hex(8)
        .ok()
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(0);
    let offset = Duration::from_millis(random % (2 * span + 1));
    (every + offset).saturating_sub(jitter)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_seconds(at: SystemTime) -> String {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or_else(
        |_| "0".to_owned(),
        |d| format!("{}.{:06}", d.as_secs(), d.subsec_micros()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_bounds() {
        for _ in 0..200 {
            let d = jittered(Duration::from_secs(10), Duration::from_secs(2));
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
                "{d:?}"
            );
        }
        assert_eq!(
            jittered(Duration::from_secs(3), Duration::ZERO),
            Duration::from_secs(3)
        );
    }
}
