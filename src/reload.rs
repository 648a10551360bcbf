//! A reload's work outside the machine: running `reload_check` and
//! `reload_command`, watching for the proxy's new workers, the health check
//! after it, and answering `handoff reload`. Which step comes when is the
//! machine's decision (`crate::machine`, `reload.rs`); the dispatcher hands
//! each `ReloadStep` here, except the signal, which only the proxy's owner
//! sends.
//!
//! Owns: the tasks of the reload under way (aborted when it ends; their
//! reports carry the reload's number, so a late one is dropped), what went
//! wrong in words (the checker's last lines, the proxy's STATUS=), the
//! callers waiting, and the log lines and metrics of reloads.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use nix::unistd::Pid;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    config::{Argv, Confirm, HealthCheck, ReloadPlan},
    control::{ReloadAnswer, protocol::ReloadDone},
    health,
    machine::{Awaited, ReloadEvent, ReloadOutcome, ReloadRefusal},
    metrics::Metrics,
    platform,
    process::{Children, ProcessEnd, run_command},
    redact,
};

/// How often the proxy's children are listed while a new worker is awaited
/// (nginx's appear 0.03-0.04 s after SIGHUP, haproxy's after ~0.17 s:
/// docs/proxies-measured.md).
const WORKER_POLL: Duration = Duration::from_millis(10);

/// Pause between health checks that fail right after a reload.
const HEALTH_RETRY: Duration = Duration::from_millis(100);

/// Most lines, and bytes, of a checker's output kept for the answer.
const TAIL_LINES: usize = 10;
const TAIL_BYTES: usize = 2048;

/// A task's report about reload number `generation`.
#[derive(Debug)]
pub struct Report {
    generation: u64,
    what: Reported,
}

#[derive(Debug)]
enum Reported {
    Checked(Result<(), String>),
    CommandDone(Result<(), String>),
    NewWorker,
    Retired,
    Healthy,
    /// The workers cannot be listed: the confirmation cannot come.
    CannotWatch(String),
}

/// The reload runner; one per agent.
#[derive(Debug)]
pub struct Reloader {
    plan: ReloadPlan,
    health: Option<HealthCheck>,
    children: Children,
    /// `[http] show_argv`: log the reload command whole (else redacted).
    show_argv: bool,
    generation: u64,
    tasks: Vec<JoinHandle<()>>,
    tx: mpsc::Sender<Report>,
    /// The tasks' reports.
    pub reports: mpsc::Receiver<Report>,
    started: Option<Instant>,
    /// What went wrong, in words, for the answer and the log.
    detail: Option<String>,
    /// The proxy's last STATUS= during this reload.
    status: Option<String>,
    /// Callers of the reload under way.
    current: Vec<oneshot::Sender<ReloadAnswer>>,
    /// Callers of the next reload.
    next: Vec<oneshot::Sender<ReloadAnswer>>,
}

impl Reloader {
    /// A runner for `plan`; `health` is `[proxy.health]`'s check.
    pub fn new(
        plan: ReloadPlan,
        health: Option<HealthCheck>,
        children: Children,
        show_argv: bool,
    ) -> Reloader {
        let (tx, reports) = mpsc::channel(8);
        Reloader {
            plan,
            health,
            children,
            show_argv,
            generation: 0,
            tasks: Vec::new(),
            tx,
            reports,
            started: None,
            detail: None,
            status: None,
            current: Vec::new(),
            next: Vec::new(),
        }
    }

    /// `handoff reload` waits for the next reload that begins (or for why
    /// none can).
    pub fn wait(&mut self, reply: oneshot::Sender<ReloadAnswer>) {
        self.next.push(reply);
    }

    /// A report, as the machine's event; `None` for one about an earlier
    /// reload. Failures keep their words for the answer.
    pub fn take(&mut self, report: Report) -> Option<ReloadEvent> {
        if report.generation != self.generation {
            return None;
        }
        Some(match report.what {
            Reported::Checked(Ok(())) => {
                tracing::info!(took_ms = self.elapsed_ms(), "reload check passed");
                ReloadEvent::Checked(true)
            }
            Reported::Checked(Err(why)) => {
                tracing::warn!(output = %why, "reload check failed");
                self.detail = Some(why);
                ReloadEvent::Checked(false)
            }
            Reported::CommandDone(Ok(())) => ReloadEvent::CommandDone(true),
            Reported::CommandDone(Err(why)) => {
                self.detail = Some(why);
                ReloadEvent::CommandDone(false)
            }
            Reported::NewWorker => {
                tracing::info!(
                    took_ms = self.elapsed_ms(),
                    "reload: the proxy started new workers"
                );
                ReloadEvent::NewWorker
            }
            Reported::Retired => {
                tracing::info!(
                    took_ms = self.elapsed_ms(),
                    "reload: the proxy's old workers stopped accepting"
                );
                ReloadEvent::Retired
            }
            Reported::Healthy => ReloadEvent::Healthy,
            Reported::CannotWatch(why) => {
                tracing::warn!(%why, "reload: cannot list the proxy's workers");
                self.detail = Some(why);
                ReloadEvent::Unconfirmable
            }
        })
    }

    /// The proxy said something on its notify socket: READY=1 is the
    /// machine's to judge; STATUS= is kept for a failure's answer.
    pub fn proxy_said(&mut self, status: Option<String>) {
        if let Some(status) = status {
            tracing::info!(%status, "the proxy says");
            if self.started.is_some() {
                self.status = Some(status);
            }
        }
    }

    /// A reload begins: its callers are those waiting now.
    pub fn begin(&mut self, metrics: &Metrics) {
        self.stop_tasks();
        self.generation += 1;
        self.started = Some(Instant::now());
        self.detail = None;
        self.status = None;
        let source = if self.next.is_empty() {
            "signal"
        } else {
            "control"
        };
        self.current.append(&mut self.next);
        metrics.reload_began();
        tracing::info!(reload = self.generation, source, "reload begins");
    }

    /// Runs `reload_check`.
    pub fn check(&mut self) {
        let Some(check) = self.plan.check.clone() else {
            return;
        };
        let within = self.remaining();
        let children = self.children.clone();
        self.spawn(async move { Reported::Checked(run_argv(&children, &check, within).await) });
    }

    /// Runs `reload_command`.
    pub fn run_command(&mut self) {
        let crate::config::ReloadSend::Command(command) = self.plan.send.clone() else {
            return;
        };
        tracing::info!(command = %redact::argv(&command, self.show_argv), "reload sent");
        let within = self.remaining();
        let children = self.children.clone();
        self.spawn(
            async move { Reported::CommandDone(run_argv(&children, &command, within).await) },
        );
    }

    /// Lists the children of `proxy` now, before the send; then reports
    /// the first one that was not among them (`workers`), and the moment
    /// all of those left or retired (`retired`).
    pub fn watch_workers(&mut self, proxy: Pid) {
        let (want_new, want_retired) = (self.plan.confirm.workers, self.plan.confirm.retired);
        let before = match platform::child_pids(proxy) {
            Ok(pids) => Arc::new(pids.into_iter().collect::<BTreeSet<_>>()),
            Err(error) => {
                let why = format!("cannot list the proxy's children: {error}");
                self.spawn(async move { Reported::CannotWatch(why) });
                return;
            }
        };
        let (generation, tx) = (self.generation, self.tx.clone());
        self.tasks.push(tokio::spawn(async move {
            let report = |what| {
                let tx = tx.clone();
                async move { tx.send(Report { generation, what }).await.is_ok() }
            };
            let (mut new_seen, mut retired_seen) = (!want_new, !want_retired);
            while !(new_seen && retired_seen) {
                tokio::time::sleep(WORKER_POLL).await;
                let before = before.clone();
                let looked = tokio::task::spawn_blocking(move || look(proxy, &before)).await;
                let (new, retired) = match looked {
                    Ok(Ok(seen)) => seen,
                    Ok(Err(error)) => {
                        let why = format!("cannot list the proxy's children: {error}");
                        report(Reported::CannotWatch(why)).await;
                        return;
                    }
                    Err(error) => {
                        report(Reported::CannotWatch(error.to_string())).await;
                        return;
                    }
                };
                if new && !new_seen {
                    new_seen = true;
                    if !report(Reported::NewWorker).await {
                        return;
                    }
                }
                if retired && !retired_seen {
                    retired_seen = true;
                    if !report(Reported::Retired).await {
                        return;
                    }
                }
            }
        }));
    }

    /// Runs the health check until it passes.
    pub fn check_health(&mut self) {
        let Some(gate) = self.health.clone() else {
            // The config refuses "health" without a check; nothing to wait for.
            let generation = self.generation;
            let tx = self.tx.clone();
            self.tasks.push(tokio::spawn(async move {
                let _ = tx
                    .send(Report {
                        generation,
                        what: Reported::Healthy,
                    })
                    .await;
            }));
            return;
        };
        let children = self.children.clone();
        self.spawn(async move {
            loop {
                let result = tokio::time::timeout(
                    gate.timeout,
                    health::check_once(&gate.check, &children, gate.timeout),
                )
                .await;
                match result {
                    Ok(Ok(())) => return Reported::Healthy,
                    Ok(Err(why)) => tracing::debug!(%why, "reload: health check failed; retrying"),
                    Err(_) => tracing::debug!("reload: health check timed out; retrying"),
                }
                tokio::time::sleep(HEALTH_RETRY).await;
            }
        });
    }

    /// The reload ended: its tasks stop, its callers hear how, and it is
    /// logged and counted.
    pub fn finish(&mut self, outcome: ReloadOutcome, metrics: &Metrics) {
        self.stop_tasks();
        // Reports of this reload still queued are stale from now on.
        self.generation += 1;
        let took_ms = self.elapsed_ms();
        self.started = None;
        let answer = if outcome.confirmed() {
            let confirmed_by: Vec<String> = self
                .plan
                .confirm
                .list()
                .into_iter()
                .map(|c: Confirm| c.name().to_owned())
                .collect();
            tracing::info!(took_ms, confirmed_by = %confirmed_by.join(","), "reload confirmed");
            Ok(ReloadDone {
                took_ms,
                confirmed_by,
            })
        } else {
            let why = self.explain(outcome);
            metrics.reload_failed();
            tracing::error!(took_ms, error = %why, "reload failed");
            Err(format!("reload failed: {why}"))
        };
        for caller in self.current.drain(..) {
            let _ = caller.send(answer.clone());
        }
    }

    /// A reload could not begin: the callers of the next one hear why.
    pub fn refuse(&mut self, refusal: ReloadRefusal) {
        let why = match refusal {
            ReloadRefusal::NoProxy => "no proxy is running",
            ReloadRefusal::Stopping => "handoff is stopping",
            ReloadRefusal::Disabled => {
                "reloads are disabled (reload_signal = \"drop\" and no reload_command)"
            }
            ReloadRefusal::NotHealthy => {
                "the proxy has not passed its health check since it started (a reload waits for that, at most reload_timeout)"
            }
        };
        tracing::info!(why, "reload refused");
        for caller in self.next.drain(..) {
            let _ = caller.send(Err(format!("reload refused: {why}")));
        }
    }

    /// Why the reload failed, in the words the operator reads.
    fn explain(&self, outcome: ReloadOutcome) -> String {
        let timeout = humantime::format_duration(self.plan.timeout);
        let detail = self.detail.clone();
        let status = self
            .status
            .as_ref()
            .map(|s| format!("; the proxy says: {s}"))
            .unwrap_or_default();
        let why = match outcome {
            ReloadOutcome::Confirmed => String::new(),
            ReloadOutcome::CheckFailed => detail.unwrap_or_else(|| "the check failed".into()),
            ReloadOutcome::CommandFailed => {
                detail.unwrap_or_else(|| "the reload command failed".into())
            }
            ReloadOutcome::TimedOut(Awaited::Check) => {
                format!("reload_check did not finish within {timeout}; nothing was sent")
            }
            ReloadOutcome::TimedOut(Awaited::Command) => {
                format!("reload_command did not finish within {timeout}")
            }
            ReloadOutcome::TimedOut(Awaited::Confirmation {
                ready,
                workers,
                retired,
            }) => {
                let mut missing = Vec::new();
                if workers {
                    // nginx and haproxy keep their old workers when the new
                    // config does not load (docs/proxies-measured.md).
                    missing.push(detail.unwrap_or_else(|| {
                        "no new worker process: the proxy kept its old workers, so the new config did not load (its error log says why)".into()
                    }));
                }
                if retired && !workers {
                    missing.push(
                        "the old workers did not stop accepting (nor say they are shutting down)"
                            .into(),
                    );
                }
                if ready {
                    missing.push("no READY=1 from the proxy".into());
                }
                format!("not confirmed within {timeout}: {}", missing.join("; "))
            }
            ReloadOutcome::TimedOut(Awaited::Health) => format!(
                "not confirmed within {timeout}: the health check did not pass after the reload"
            ),
            ReloadOutcome::ProxyExited => "the proxy exited during the reload".into(),
            ReloadOutcome::Interrupted => "interrupted by the stop".into(),
            ReloadOutcome::Unconfirmable => format!(
                "sent, but it cannot be confirmed: {}",
                detail.unwrap_or_else(|| "the proxy's workers cannot be watched".into())
            ),
        };
        format!("{why}{status}")
    }

    fn spawn(&mut self, work: impl Future<Output = Reported> + Send + 'static) {
        let generation = self.generation;
        let tx = self.tx.clone();
        self.tasks.push(tokio::spawn(async move {
            let what = work.await;
            let _ = tx.send(Report { generation, what }).await;
        }));
    }

    fn stop_tasks(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }

    fn remaining(&self) -> Duration {
        self.started.map_or(self.plan.timeout, |at| {
            self.plan.timeout.saturating_sub(at.elapsed())
        })
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.map_or(0, |at| {
            u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)
        })
    }
}

/// Whether the proxy has a child not in `before`, and whether every one in
/// `before` has exited or calls itself "shutting down" (nginx's title for a
/// worker told to stop: `nginx: worker process is shutting down`).
/// A proxy left without any child had workers that all left: that is a
/// dying proxy (its children re-parented to handoff, the subreaper), not a
/// retirement, unless it had none to begin with.
fn look(proxy: Pid, before: &BTreeSet<Pid>) -> std::io::Result<(bool, bool)> {
    let now: BTreeSet<Pid> = platform::child_pids(proxy)?.into_iter().collect();
    let new = now.iter().any(|pid| !before.contains(pid));
    let retired = (before.is_empty() || !now.is_empty())
        && before.iter().all(|pid| {
            !now.contains(pid)
                || platform::process_title(*pid).is_ok_and(|title| title.contains("shutting down"))
        });
    Ok((new, retired))
}

/// Runs `argv` within `within`; `Err` is what the operator reads: the
/// program, how it ended, and its last lines.
async fn run_argv(children: &Children, argv: &Argv, within: Duration) -> Result<(), String> {
    let output = run_command(children, argv.program(), argv.args(), within)
        .await
        .map_err(|e| e.to_string())?;
    if output.end == ProcessEnd::Exited(0) {
        return Ok(());
    }
    let text = format!("{}\n{}", output.stdout, output.stderr);
    let how = match output.end {
        ProcessEnd::Exited(code) => format!("exit {code}"),
        killed @ ProcessEnd::Signaled(_) => killed.to_string(),
    };
    Err(format!(
        "{} failed ({how}): {}",
        argv.program(),
        tail(&text)
    ))
}

/// The last [`TAIL_LINES`] non-empty lines of `text`, at most
/// [`TAIL_BYTES`], joined with " | " so they fit one log line.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let from = lines.len().saturating_sub(TAIL_LINES);
    let mut joined = lines.get(from..).unwrap_or_default().join(" | ");
    if joined.len() > TAIL_BYTES {
        let mut start = joined.len() - TAIL_BYTES;
        while !joined.is_char_boundary(start) {
            start += 1;
        }
        joined = format!("...{}", &joined[start..]);
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_in_one_line() {
        let text = (1..=15)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\n\n");
        let t = tail(&text);
        assert!(t.starts_with("line 6 | "), "{t}");
        assert!(t.ends_with("line 15"), "{t}");
        let long = "x".repeat(5000);
        assert!(tail(&long).len() <= TAIL_BYTES + 3);
    }
}
