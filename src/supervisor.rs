//! The dispatcher: one loop that turns happenings into [`Event`]s, asks the
//! [`Machine`] what to do, and carries the [`Action`]s out in order.
//!
//! Owns: the [`Proxy`] (its only owner: a reload's signal is sent here) and
//! its health checker, the timers and the clock (the failover stopwatch),
//! the proxy's notify socket (read here, its READY=1 an event), the status
//! snapshot, the metrics and systemd notices, and the log lines for signals,
//! forwards, phases and decisions. A reload's other steps run in
//! `crate::reload`. When to notify, count or measure is the machine's decision,
//! like everything else; this module only carries it out. Every action is
//! quick and never waits on the backend (the worker does), so a signal is
//! handled promptly whatever the backend is doing. The control socket and
//! HTTP servers reach the loop only through its inbox
//! (`crate::control::ToAgent`), answered between events.

use std::{collections::BTreeMap, collections::VecDeque, sync::Arc, time::Duration};

use nix::sys::signal::Signal;
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    config::{Argv, Check, HealthCheck, Probe, ProcessGroup},
    consul::{Consul, PeerOutcome, Report},
    control::{Ask, ToAgent},
    exit,
    failover::{BackendHandle, BackendReport, Failover, spawn_worker},
    health::{self, HealthView, Verdict},
    hooks::Hooks,
    host,
    loopback_vip::LoopbackVip,
    machine::{
        Action, Event, Machine, Note, Notice, ReloadEvent, ReloadStep, Severity, Stopwatch, Timer,
    },
    maintenance::Maintenance,
    metrics::Metrics,
    notify::Notifier,
    probe,
    process::Children,
    proxy::{Change, Proxy},
    proxy_notify::NotifySocket,
    redact,
    reload::Reloader,
    sentinel::{ProxyLink, ProxyRef},
    signals::Signals,
    status::{self, Agent, BackendStatus, HealthStatus, LastExit, ProxyStatus, Sampler, Status},
};

/// Everything the loop needs except the backend, built by `crate::agent`.
#[derive(Debug)]
pub struct Supervisor {
    /// The decisions.
    pub machine: Machine,
    /// The proxy's command line.
    pub argv: Argv,
    /// `[http] show_argv`: "proxy started" logs the whole command line
    /// (else through `crate::redact::argv`).
    pub show_argv: bool,
    /// Its process group mode.
    pub group: ProcessGroup,
    /// The child registry shared with the reaper.
    pub children: Children,
    /// Signals from the readers, and their forwarding table.
    pub signals: Signals,
    /// The health checks, when `[proxy.health]` is configured.
    pub health: Option<HealthCheck>,
    /// `[failover] probe`, run when the machine asks for it.
    pub probe: Option<Probe>,
    /// A maintenance record found at start.
    pub maintenance: Option<Maintenance>,
    /// The longest a planned stop can take (for systemd's stop timeout).
    pub stop_budget: Duration,
    /// Questions from the control socket and HTTP servers.
    pub inbox: mpsc::Receiver<ToAgent>,
    /// Updated as things happen; encoded by the HTTP server.
    pub metrics: Arc<Metrics>,
    /// Consul reporting, with `[consul]`.
    pub consul: Option<Consul>,
    /// Tells the dead-man's switch which proxy runs (`crate::sentinel`).
    pub sentinel: Option<ProxyLink>,
    /// Runs the reloads' steps.
    pub reloader: Reloader,
    /// The proxy's own NOTIFY_SOCKET, when READY=1 confirms reloads.
    pub notify: Option<NotifySocket>,
    /// Role-change hooks and master-only duties.
    pub hooks: Hooks,
    /// How long the exit waits for hooks (`on_stop`'s timeout).
    pub hooks_exit_limit: Duration,
    /// `loopback_vip`: the VIPs on lo while the proxy serves.
    pub loopback: Option<LoopbackVip>,
}

/// The running loop: the supervisor plus its backend worker and the state
/// the actions work on.
#[derive(Debug)]
struct Dispatcher {
    parts: Supervisor,
    backend: BackendHandle,
    events: mpsc::Receiver<BackendReport>,
    proxy: Option<Proxy>,
    /// A proxy that exited; what it left behind is killed before the next
    /// spawn or the exit, so that `down` goes out first.
    dead: Option<Proxy>,
    timers: Timers,
    /// Events produced by actions (the spawn's outcome), handled first.
    pending: VecDeque<Event>,
    health: HealthChecks,
    probe: Waiter<()>,
    peer: Waiter<PeerOutcome>,
    /// When the failover wait began, to log how long the move took.
    failover_started: Option<Instant>,
    notifier: Notifier,
    /// What `status` shows beyond the machine's own view.
    seen: Seen,
    /// Answers owed once the current event's actions are carried out.
    replies: Vec<oneshot::Sender<Status>>,
}

/// Facts for `status` that only the dispatcher knows.
#[derive(Debug)]
struct Seen {
    started: Instant,
    node: String,
    proxy_since: Option<Instant>,
    last_exit: Option<LastExit>,
    sampler: Sampler,
}

/// What the next turn of the loop brings.
enum Next {
    Event(Event),
    /// A health verdict about an earlier proxy.
    Stale,
    Asked(ToAgent),
}

/// A confirmation task (the probe, Consul's peer view), if one runs; it
/// reports once. Starting or cancelling one drops any answer still queued
/// from the one before, so an old answer never confirms a new wait.
#[derive(Debug)]
struct Waiter<T> {
    task: Option<JoinHandle<()>>,
    tx: mpsc::Sender<T>,
    rx: mpsc::Receiver<T>,
}

impl<T: Send + 'static> Waiter<T> {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel(1);
        Waiter { task: None, tx, rx }
    }

    fn cancel(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        while self.rx.try_recv().is_ok() {}
    }

    fn start(&mut self, wait: impl Future<Output = T> + Send + 'static) {
        self.cancel();
        let tx = self.tx.clone();
        self.task = Some(tokio::spawn(async move {
            let _ = tx.send(wait.await).await;
        }));
    }
}

/// The running proxy's health checker; verdicts about an earlier proxy
/// (a restart races its predecessor's last check) are dropped.
#[derive(Debug)]
struct HealthChecks {
    generation: u64,
    checker: Option<JoinHandle<()>>,
    tx: mpsc::Sender<Verdict>,
    rx: mpsc::Receiver<Verdict>,
    view: watch::Sender<HealthView>,
}

/// Armed timers; arming one again moves its deadline.
#[derive(Debug, Default)]
struct Timers(BTreeMap<Timer, Instant>);

impl Timers {
    fn next(&self) -> Option<(Timer, Instant)> {
        self.0
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(t, at)| (*t, *at))
    }
}

impl Supervisor {
    /// Starts the worker that owns `backend`, then runs the loop until the
    /// machine says exit; returns the exit status.
    pub async fn run<F: Failover>(self, backend: F) -> u8 {
        let (event_tx, events) = mpsc::channel(64);
        let backend = spawn_worker(backend, event_tx);
        let (tx, rx) = mpsc::channel(8);
        let mut dispatcher = Dispatcher {
            parts: self,
            backend,
            events,
            proxy: None,
            dead: None,
            timers: Timers::default(),
            pending: VecDeque::new(),
            probe: Waiter::new(),
            peer: Waiter::new(),
            failover_started: None,
            notifier: Notifier::from_env(),
            health: HealthChecks {
                generation: 0,
                checker: None,
                tx,
                rx,
                view: watch::Sender::new(HealthView::default()),
            },
            seen: Seen {
                started: Instant::now(),
                node: host::node_name(),
                proxy_since: None,
                last_exit: None,
                sampler: Sampler::default(),
            },
            replies: Vec::new(),
        };
        if let Some(m) = &dispatcher.parts.maintenance {
            tracing::info!(reason = %m.reason, uid = m.uid, since = m.since, "in maintenance: a healthy proxy holds this node at standby");
            dispatcher.pending.push_back(Event::Maintenance(true));
        }
        dispatcher.run().await
    }
}

impl Dispatcher {
    async fn run(mut self) -> u8 {
        let start = self.parts.machine.start();
        if let Some(code) = self.execute(start).await {
            return code;
        }
        loop {
            let event = match self.pending.pop_front() {
                Some(event) => event,
                None => self.next_event().await,
            };
            let before = self.parts.machine.phase();
            let actions = self.parts.machine.handle(event);
            let after = self.parts.machine.phase();
            if before != after {
                tracing::info!(from = ?before, to = ?after, "phase");
            }
            if let Some(code) = self.execute(actions).await {
                return code;
            }
            self.after_event();
        }
    }

    /// Updates the metrics and pays the answers owed for this event.
    fn after_event(&mut self) {
        let view = self.parts.machine.view();
        let applied = view.applied.then_some(view.level).flatten();
        let metrics = &self.parts.metrics;
        metrics.observe(view.role, applied, view.maintenance, self.proxy.is_some());
        metrics.backend_failures(self.backend.failures());
        if let Some(consul) = &self.parts.consul {
            consul.publish(Report::new(&view, self.parts.maintenance.as_ref()));
        }
        if !self.replies.is_empty() {
            let status = self.status();
            for reply in self.replies.drain(..) {
                let _ = reply.send(status.clone());
            }
        }
    }

    async fn next_event(&mut self) -> Event {
        loop {
            match self.next().await {
                Next::Event(event) => return event,
                Next::Stale => {}
                Next::Asked(asked) => match asked.ask {
                    Ask::Status => {
                        let _ = asked.reply.send(self.status());
                    }
                    Ask::Reload(outcome) => {
                        // The status now; the outcome once the reload ends.
                        let _ = asked.reply.send(self.status());
                        self.parts.reloader.wait(outcome);
                        return Event::Reload(ReloadEvent::Requested);
                    }
                    Ask::Maintenance(record) => {
                        // Answered after the machine has acted on it.
                        let on = record.is_some();
                        self.parts.maintenance = record;
                        self.replies.push(asked.reply);
                        return Event::Maintenance(on);
                    }
                },
            }
        }
    }

    /// What the loop waits for.
    async fn next(&mut self) -> Next {
        let Dispatcher {
            parts,
            events,
            proxy,
            dead,
            timers,
            health,
            probe,
            peer,
            ..
        } = self;
        let next_timer = timers.next();
        let sleep = tokio::time::sleep_until(next_timer.map_or_else(far_future, |(_, at)| at));
        let next = tokio::select! {
            biased;
            Some(received) = parts.signals.rx.recv() => {
                tracing::info!(signal = received.signal.as_str(), sender = received.sender, "signal received");
                Next::Event(match received.forwarded {
                    Some(sent) => Event::Forwarded { received: received.signal, sent },
                    None => Event::Signal(received.signal),
                })
            }
            change = next_change(proxy.as_mut()) => match change {
                Change::Stopped(stopped) => {
                    let pid = proxy.as_ref().map(|p| p.pid().as_raw());
                    if stopped {
                        tracing::warn!(pid, "proxy stopped (WSTOPPED)");
                    } else {
                        tracing::info!(pid, "proxy continued");
                    }
                    Next::Event(Event::ProxySuspended(stopped))
                }
                Change::Exited(end) => {
                    if let Some(exited) = proxy.take() {
                        tracing::info!(pid = exited.pid().as_raw(), status = %end, "proxy exited");
                        *dead = Some(exited);
                    }
                    if let Some(checker) = health.checker.take() {
                        checker.abort();
                    }
                    self.seen.proxy_since = None;
                    self.seen.last_exit = Some(LastExit {
                        how: end.to_string(),
                        code: exit::from_process_end(end),
                        at: host::unix_now(),
                    });
                    Next::Event(Event::ProxyExited(end))
                }
            },
            Some(report) = events.recv() => Next::Event(report.into()),
            Some(()) = probe.rx.recv() => {
                probe.task = None;
                tracing::info!("probe through the VIP succeeded: the peer serves it");
                Next::Event(Event::ProbeSucceeded)
            }
            Some(outcome) = peer.rx.recv() => {
                peer.task = None;
                match outcome {
                    PeerOutcome::Master(id) => {
                        tracing::info!(peer = %id, "consul: the peer reports master");
                    }
                    PeerOutcome::Unavailable(error) => tracing::warn!(
                        %error,
                        "consul cannot confirm the peer: not waiting for it (Consul never holds a failover back)"
                    ),
                }
                Next::Event(Event::PeerConfirmed)
            }
            Some(verdict) = health.rx.recv() => {
                if verdict.generation == health.generation {
                    Next::Event(Event::Health(verdict.healthy))
                } else {
                    Next::Stale
                }
            }
            () = sleep, if next_timer.is_some() => {
                let (timer, _) = next_timer.expect("INVARIANT: guarded by next_timer.is_some()");
                timers.0.remove(&timer);
                Next::Event(Event::Deadline(timer))
            }
            Some(asked) = parts.inbox.recv() => Next::Asked(asked),
            Some(report) = parts.reloader.reports.recv() => match parts.reloader.take(report) {
                Some(event) => Next::Event(Event::Reload(event)),
                None => Next::Stale,
            },
            said = next_message(parts.notify.as_ref()) => heard(parts, said),
            Some(ended) = parts.hooks.ended.recv() => {
                parts.hooks.ended(ended);
                Next::Stale
            }
        };
        next
    }

    /// Kills what the last proxy left behind, if it has not been done yet.
    async fn clean_up_after_dead_proxy(&mut self) {
        if let Some(dead) = self.dead.take() {
            dead.clean_up(&self.parts.children).await;
        }
    }

    /// What follows the node's role and whether the proxy serves: hooks,
    /// duties, the VIPs on lo.
    fn follow_serving(&mut self, action: &Action) {
        match *action {
            Action::Hook(call) => self.parts.hooks.call(call),
            Action::CancelStopHook => self.parts.hooks.cancel_stop(),
            Action::Duties(on) => self.parts.hooks.duties(on),
            Action::LoopbackVip(on) => {
                if let Some(loopback) = &self.parts.loopback {
                    loopback.set(on);
                }
            }
            _ => debug_assert!(false, "INVARIANT: only these come here"),
        }
    }

    /// The move is confirmed: the failover stopwatch is read.
    fn moved(&mut self) {
        let took = self.failover_started.map(|t| t.elapsed());
        if let Some(took) = took {
            self.parts.metrics.moved(took.as_secs_f64());
        }
        let ms = took.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        log_note(Note::MoveConfirmed, ms);
    }

    /// Carries out `actions` in order; returns the exit status on `Exit`.
    async fn execute(&mut self, actions: Vec<Action>) -> Option<u8> {
        for action in actions {
            match action {
                Action::SetLevel { level, seq } => {
                    tracing::info!(%level, seq, backend = self.backend.name(), "setting level");
                    self.backend.set_level(level, seq);
                }
                Action::Spawn => {
                    self.clean_up_after_dead_proxy().await;
                    let outcome = self.spawn();
                    self.pending.push_back(outcome);
                }
                Action::Forward { received, send } => {
                    self.send(send, Some(received), "forwarded signal");
                }
                Action::Forwarded { received, send } => self.forwarded(received, send),
                Action::FastPath(routes) => self.route(routes),
                Action::Dropped { signal, reason } => {
                    tracing::info!(signal = signal.as_str(), ?reason, "signal dropped");
                }
                Action::StopProxy(signal) => self.send(signal, None, "stopping proxy"),
                Action::KillProxy => self.send(Signal::SIGKILL, None, "killing proxy"),
                Action::ContinueProxy => self.send(Signal::SIGCONT, None, "continuing proxy"),
                Action::Arm(timer, after) => {
                    self.timers.0.insert(timer, Instant::now() + after);
                }
                Action::Disarm(timer) => {
                    self.timers.0.remove(&timer);
                }
                Action::Watch(watch) => self.backend.watch(watch),
                Action::Note(note) => log_note(note, None),
                Action::Notify(notice) => match notice {
                    Notice::Ready => {
                        self.notifier.ready();
                        panic_for_tests();
                    }
                    Notice::Reloading => self.notifier.reloading(),
                    Notice::Reloaded => self.notifier.reload_passed(),
                    Notice::Stopping => self.notifier.stopping(self.parts.stop_budget),
                },
                Action::Stopwatch(Stopwatch::Start) => {
                    self.failover_started = Some(Instant::now());
                }
                Action::Stopwatch(Stopwatch::Moved) => self.moved(),
                Action::CountRestart => self.parts.metrics.restarted(),
                Action::Reload(step) => self.reload_step(step),
                Action::Hook(_)
                | Action::CancelStopHook
                | Action::Duties(_)
                | Action::LoopbackVip(_) => self.follow_serving(&action),
                // Starting a waiter replaces the one before it.
                Action::Probe(start) => match (start, &self.parts.probe) {
                    (true, Some(target)) => {
                        tracing::info!(?target, "probing the VIP until the peer answers");
                        self.probe.start(probe::until_answered(target.clone()));
                    }
                    _ => self.probe.cancel(),
                },
                Action::ConfirmPeer(start) => match (start, &self.parts.consul) {
                    (true, Some(consul)) => {
                        tracing::info!("consul: waiting for the peer to report master");
                        self.peer.start(consul.confirm());
                    }
                    // Without Consul there is nobody to ask (the policy never
                    // asks then; answer rather than hang).
                    (true, None) => {
                        self.peer.cancel();
                        self.pending.push_back(Event::PeerConfirmed);
                    }
                    (false, _) => self.peer.cancel(),
                },
                Action::Exit(code) => {
                    debug_assert!(
                        self.proxy.is_none(),
                        "INVARIANT: the machine exits only after the proxy did"
                    );
                    self.clean_up_after_dead_proxy().await;
                    self.probe.cancel();
                    self.peer.cancel();
                    // on_stop ran beside the move; its timeout is in the
                    // stop budget.
                    let on_stop = self.parts.hooks_exit_limit;
                    self.parts.hooks.finish(on_stop).await;
                    if let Some(consul) = self.parts.consul.take() {
                        consul.shutdown().await;
                    }
                    tracing::info!(
                        code,
                        restarts = self.parts.machine.restarts(),
                        backend_failures = self.backend.failures(),
                        orphans_reaped = self.parts.children.orphans_reaped(),
                        "exiting"
                    );
                    return Some(code);
                }
            }
        }
        None
    }

    /// Starts the proxy (and its health checker); returns the outcome event.
    fn spawn(&mut self) -> Event {
        let notify = self.parts.notify.as_ref().map(NotifySocket::path);
        match Proxy::spawn(
            &self.parts.children,
            &self.parts.argv,
            self.parts.group,
            notify,
        ) {
            Ok(spawned) => {
                let command = redact::argv(&self.parts.argv, self.parts.show_argv);
                tracing::info!(pid = spawned.pid().as_raw(), %command, "proxy started");
                if let Some(link) = &self.parts.sentinel {
                    link.started(ProxyRef {
                        pid: spawned.pid().as_raw(),
                        own_group: self.parts.group == ProcessGroup::Own,
                    });
                }
                self.proxy = Some(spawned);
                self.seen.proxy_since = Some(Instant::now());
                let health = &mut self.health;
                health.generation += 1;
                if let Some(gate) = &self.parts.health {
                    let children = self.parts.children.clone();
                    let checker = health::spawn(
                        gate.clone(),
                        children,
                        health.generation,
                        health.tx.clone(),
                        health.view.clone(),
                    );
                    health.checker = Some(checker);
                }
                Event::Spawned
            }
            Err(error) => {
                let code = error.exit_code();
                tracing::error!(%error, code, "proxy not started");
                Event::SpawnFailed { code }
            }
        }
    }

    /// Carries out a reload's step: the signal here (the proxy's owner
    /// sends it), the rest in `crate::reload`.
    fn reload_step(&mut self, step: ReloadStep) {
        let metrics = &self.parts.metrics;
        let reloader = &mut self.parts.reloader;
        match step {
            ReloadStep::Begin => reloader.begin(metrics),
            ReloadStep::Check => reloader.check(),
            ReloadStep::WatchWorkers => {
                if let Some(proxy) = &self.proxy {
                    reloader.watch_workers(proxy.pid());
                }
            }
            ReloadStep::Signal(signal) => {
                self.forget_notices();
                self.send(signal, None, "reload sent");
            }
            // A plain reload confirms nothing, so no notice is awaited.
            ReloadStep::Sent(signal) => self.sent_by_reader(signal, None, "reload sent"),
            ReloadStep::RunCommand => {
                self.forget_notices();
                self.parts.reloader.run_command();
            }
            ReloadStep::CheckHealth => reloader.check_health(),
            ReloadStep::Finish(outcome) => reloader.finish(outcome, metrics),
            ReloadStep::Refuse(refusal) => reloader.refuse(refusal),
        }
    }

    /// Drops what the proxy said before a reload's send and is still queued
    /// (haproxy says READY=1 at its start too): only what follows the send
    /// may confirm it.
    fn forget_notices(&mut self) {
        if let Some(notify) = &self.parts.notify {
            let dropped = notify.forget();
            if dropped > 0 {
                tracing::debug!(
                    dropped,
                    "the proxy's notices from before the reload's send dropped"
                );
            }
        }
    }

    /// Hands the signal readers the machine's table, for the proxy that runs.
    fn route(&self, routes: Vec<(Signal, Signal)>) {
        let proxy = self.proxy.as_ref().map(|p| (p.pid(), p.group()));
        self.parts.signals.fast.set(proxy, routes);
    }

    /// Logs a forward the signal reader already sent (the fast path).
    fn forwarded(&self, received: Signal, send: Signal) {
        self.sent_by_reader(send, Some(received), "forwarded signal");
    }

    /// Logs what the signal reader already sent (the fast path) as
    /// [`Dispatcher::send`] logs its own sends.
    fn sent_by_reader(&self, signal: Signal, received: Option<Signal>, what: &'static str) {
        let pid = self.proxy.as_ref().map(|p| p.pid().as_raw());
        tracing::info!(
            signal = signal.as_str(),
            received = received.map(Signal::as_str),
            pid,
            fast = true,
            "{what}"
        );
    }

    /// Signals the proxy, if one runs, and logs it; `received` is what
    /// handoff got, for forwards.
    fn send(&self, signal: Signal, received: Option<Signal>, what: &'static str) {
        let Some(proxy) = self.proxy.as_ref() else {
            return;
        };
        let pid = proxy.pid().as_raw();
        match proxy.signal(&self.parts.children, signal) {
            Ok(true) => {
                tracing::info!(
                    signal = signal.as_str(),
                    received = received.map(Signal::as_str),
                    pid,
                    "{what}"
                );
            }
            Ok(false) => tracing::info!(
                signal = signal.as_str(),
                pid,
                "proxy already exited; not signalled"
            ),
            Err(error) => {
                tracing::error!(signal = signal.as_str(), pid, %error, "cannot signal the proxy");
            }
        }
    }
}

impl Dispatcher {
    /// The status snapshot (docs/status.md).
    fn status(&mut self) -> Status {
        let view = self.parts.machine.view();
        let pid = self.proxy.as_ref().map(|p| p.pid().as_raw());
        let (rss_bytes, cpu_seconds) = pid
            .and_then(|p| u32::try_from(p).ok())
            .map_or((None, None), |p| self.seen.sampler.sample(p));
        let health = self.parts.health.as_ref().map(|gate| HealthStatus {
            check: match &gate.check {
                Check::Http(url) => format!("http {}", url.text),
                Check::Tcp(addr) => format!("tcp {}", addr.0),
                Check::Exec(argv) => format!("exec {argv}"),
            },
            rise: gate.rise.get(),
            fall: gate.fall.get(),
            view: self.health.view.borrow().clone(),
        });
        Status {
            schema: status::SCHEMA,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            node: self.seen.node.clone(),
            agent: Agent {
                pid: std::process::id(),
                uptime_seconds: self.seen.started.elapsed().as_secs(),
                phase: view.phase.name(),
            },
            level: view.level,
            level_applied: view.applied,
            role: view.role,
            role_current: view.role_current,
            released: self.parts.machine.released(),
            maintenance: self.parts.maintenance.clone(),
            proxy: ProxyStatus {
                command: self.parts.argv.to_string(),
                pid,
                uptime_seconds: self.seen.proxy_since.map(|t| t.elapsed().as_secs()),
                restarts: view.restarts,
                last_exit: self.seen.last_exit.clone(),
                rss_bytes,
                cpu_seconds,
            },
            health,
            backend: BackendStatus {
                name: self.backend.name().to_owned(),
                failures: self.backend.failures(),
                details: self.backend.details(),
            },
            consul: self.parts.consul.as_ref().map(Consul::status),
            hooks: self.parts.hooks.last_runs(),
            duties: self.parts.hooks.duty_status(),
        }
    }
}

/// One line for a decision; a confirmed move also says how long it took.
fn log_note(note: Note, moved_after_ms: Option<u64>) {
    match note.severity() {
        Severity::Error => tracing::error!(decision = ?note, "{note}"),
        Severity::Info => tracing::info!(decision = ?note, moved_after_ms, "{note}"),
    }
}

/// What the proxy said on its notify socket: READY=1 is the machine's to
/// judge (`crate::machine`'s reload), STATUS= the reloader's to keep.
fn heard(parts: &mut Supervisor, said: std::io::Result<crate::proxy_notify::Message>) -> Next {
    match said {
        Ok(message) => {
            tracing::debug!(?message, "the proxy notifies");
            parts.reloader.proxy_said(message.status);
            if message.ready {
                Next::Event(Event::Reload(ReloadEvent::ProxyReady))
            } else {
                Next::Stale
            }
        }
        Err(error) => {
            tracing::warn!(%error, "reading the proxy's notify socket failed; READY=1 cannot confirm reloads");
            parts.notify = None;
            Next::Stale
        }
    }
}

async fn next_message(
    notify: Option<&NotifySocket>,
) -> std::io::Result<crate::proxy_notify::Message> {
    match notify {
        Some(notify) => notify.next().await,
        None => std::future::pending().await,
    }
}

async fn next_change(proxy: Option<&mut Proxy>) -> Change {
    match proxy {
        Some(proxy) => proxy.next_change().await,
        None => std::future::pending().await,
    }
}

/// Debug builds only: with `HANDOFF_TEST_PANIC=DURATION`, a task panics that
/// long after the proxy became healthy ([`Notice::Ready`]), so the tests can
/// show that a panic anywhere ends the process and the dead-man's switch
/// takes the node down (tests/carp.rs, tests/keepalived.rs, F17).
fn panic_for_tests() {
    #[cfg(debug_assertions)]
    if let Some(after) = std::env::var("HANDOFF_TEST_PANIC")
        .ok()
        .and_then(|d| humantime::parse_duration(&d).ok())
    {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            panic!("HANDOFF_TEST_PANIC: a task panics");
        });
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
