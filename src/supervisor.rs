//! The dispatcher: one loop that turns happenings into [`Event`]s, asks the
//! [`Machine`] what to do, and carries the [`Action`]s out in order.
//!
//! Owns: the [`Proxy`] (its only owner) and its health checker, the timers,
//! and the log lines for signals, forwards, phases and decisions. Every
//! action is quick and never waits on the backend (the worker does), so a
//! signal is handled promptly whatever the backend is doing.

use std::{collections::BTreeMap, collections::VecDeque, time::Duration};

use nix::sys::signal::Signal;
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

use crate::{
    config::{Argv, Probe, ProcessGroup},
    failover::{BackendHandle, Failover, Level, spawn_worker},
    health::{self, Gate, Verdict},
    machine::{Action, Event, Machine, Note, Phase, Step, Timer},
    maintenance::Maintenance,
    notify::Notifier,
    platform::Received,
    probe,
    process::{Children, ProcessEnd},
    proxy::Proxy,
};

/// Everything the loop needs except the backend, built by `crate::cli`.
#[derive(Debug)]
pub struct Supervisor {
    /// The decisions.
    pub machine: Machine,
    /// The proxy's command line.
    pub argv: Argv,
    /// Its process group mode.
    pub group: ProcessGroup,
    /// The child registry shared with the reaper.
    pub children: Children,
    /// Signals from the reader thread.
    pub signals: mpsc::Receiver<Received>,
    /// The health checks, when `[proxy.health]` is configured.
    pub health: Option<Gate>,
    /// `[failover] probe`, run when the machine asks for it.
    pub probe: Option<Probe>,
    /// A maintenance record found at start.
    pub maintenance: Option<Maintenance>,
    /// The longest a planned stop can take (for systemd's stop timeout).
    pub stop_budget: Duration,
}

/// The running loop: the supervisor plus its backend worker and the state
/// the actions work on.
#[derive(Debug)]
struct Dispatcher {
    parts: Supervisor,
    backend: BackendHandle,
    events: mpsc::Receiver<Event>,
    proxy: Option<Proxy>,
    /// A proxy that exited; what it left behind is killed before the next
    /// spawn or the exit, so that `down` goes out first.
    dead: Option<Proxy>,
    timers: Timers,
    /// Events produced by actions (the spawn's outcome), handled first.
    pending: VecDeque<Event>,
    health: HealthChecks,
    probe: ProbeTask,
    /// When the failover wait began, to log how long the move took.
    failover_started: Option<Instant>,
    notifier: Notifier,
}

/// The running probe, if any; it reports once, on success.
#[derive(Debug)]
struct ProbeTask {
    task: Option<JoinHandle<()>>,
    tx: mpsc::Sender<()>,
    rx: mpsc::Receiver<()>,
}

/// The running proxy's health checker; verdicts about an earlier proxy
/// (a restart races its predecessor's last check) are dropped.
#[derive(Debug)]
struct HealthChecks {
    generation: u64,
    checker: Option<JoinHandle<()>>,
    tx: mpsc::Sender<Verdict>,
    rx: mpsc::Receiver<Verdict>,
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
        let (probe_tx, probe_rx) = mpsc::channel(1);
        let mut dispatcher = Dispatcher {
            parts: self,
            backend,
            events,
            proxy: None,
            dead: None,
            timers: Timers::default(),
            pending: VecDeque::new(),
            probe: ProbeTask {
                task: None,
                tx: probe_tx,
                rx: probe_rx,
            },
            failover_started: None,
            notifier: Notifier::from_env(),
            health: HealthChecks {
                generation: 0,
                checker: None,
                tx,
                rx,
            },
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
                if matches!(after, Phase::Stopping(Step::Failover { .. })) {
                    self.failover_started = Some(Instant::now());
                }
                if matches!(after, Phase::Stopping(_)) && !matches!(before, Phase::Stopping(_)) {
                    self.notifier.stopping(self.parts.stop_budget);
                }
            }
            if let Some(code) = self.execute(actions).await {
                return code;
            }
        }
    }

    async fn next_event(&mut self) -> Event {
        loop {
            if let Some(event) = self.next_event_or_stale().await {
                return event;
            }
        }
    }

    /// The next event; `None` for a health verdict about an earlier proxy.
    async fn next_event_or_stale(&mut self) -> Option<Event> {
        let Dispatcher {
            parts,
            events,
            proxy,
            dead,
            timers,
            health,
            probe,
            ..
        } = self;
        let next_timer = timers.next();
        let sleep = tokio::time::sleep_until(next_timer.map_or_else(far_future, |(_, at)| at));
        tokio::select! {
            biased;
            Some(received) = parts.signals.recv() => {
                tracing::info!(signal = received.signal.as_str(), sender = received.sender, "signal received");
                Some(Event::Signal(received.signal))
            }
            end = wait_exit(proxy.as_mut()) => {
                if let Some(exited) = proxy.take() {
                    tracing::info!(pid = exited.pid().as_raw(), status = %end, "proxy exited");
                    *dead = Some(exited);
                }
                if let Some(checker) = health.checker.take() {
                    checker.abort();
                }
                Some(Event::ProxyExited(end))
            }
            Some(event) = events.recv() => Some(event),
            Some(()) = probe.rx.recv() => {
                probe.task = None;
                tracing::info!("probe through the VIP succeeded: the peer serves it");
                Some(Event::ProbeSucceeded)
            }
            Some(verdict) = health.rx.recv() => {
                (verdict.generation == health.generation).then_some(Event::Health(verdict.healthy))
            }
            () = sleep, if next_timer.is_some() => {
                let (timer, _) = next_timer.expect("INVARIANT: guarded by next_timer.is_some()");
                timers.0.remove(&timer);
                Some(Event::Deadline(timer))
            }
        }
    }

    /// Kills what the last proxy left behind, if it has not been done yet.
    async fn clean_up_after_dead_proxy(&mut self) {
        if let Some(dead) = self.dead.take() {
            dead.clean_up(&self.parts.children).await;
        }
    }

    /// Carries out `actions` in order; returns the exit status on `Exit`.
    async fn execute(&mut self, actions: Vec<Action>) -> Option<u8> {
        for action in actions {
            match action {
                Action::SetLevel { level, seq } => {
                    tracing::info!(%level, seq, backend = self.backend.name(), "setting level");
                    self.backend.set_level(level, seq);
                    if level != Level::Down {
                        self.notifier.ready();
                    }
                }
                Action::Spawn => {
                    self.clean_up_after_dead_proxy().await;
                    let outcome = self.spawn();
                    self.pending.push_back(outcome);
                }
                Action::Forward { received, send } => {
                    let reload = received == Signal::SIGHUP;
                    if reload {
                        self.notifier.reloading();
                    }
                    self.send(send, Some(received), "forwarded signal");
                    if reload {
                        self.notifier.reload_passed();
                    }
                }
                Action::Dropped { signal, reason } => {
                    tracing::info!(signal = signal.as_str(), ?reason, "signal dropped");
                }
                Action::StopProxy(signal) => self.send(signal, None, "stopping proxy"),
                Action::KillProxy => self.send(Signal::SIGKILL, None, "killing proxy"),
                Action::Arm(timer, after) => {
                    self.timers.0.insert(timer, Instant::now() + after);
                }
                Action::Disarm(timer) => {
                    self.timers.0.remove(&timer);
                }
                Action::Watch(watch) => self.backend.watch(watch),
                Action::Note(note) => {
                    // A confirmed move also says how long it took.
                    let moved_after_ms = (note == Note::MoveConfirmed)
                        .then(|| self.failover_started.map(|t| t.elapsed().as_millis()))
                        .flatten()
                        .map(|ms| u64::try_from(ms).unwrap_or(u64::MAX));
                    tracing::info!(decision = ?note, moved_after_ms, "{note}");
                }
                Action::Probe(start) => {
                    if let Some(task) = self.probe.task.take() {
                        task.abort();
                    }
                    if let (true, Some(target)) = (start, &self.parts.probe) {
                        tracing::info!(?target, "probing the VIP until the peer answers");
                        self.probe.task = Some(probe::spawn(target.clone(), self.probe.tx.clone()));
                    }
                }
                Action::Exit(code) => {
                    debug_assert!(
                        self.proxy.is_none(),
                        "INVARIANT: the machine exits only after the proxy did"
                    );
                    self.clean_up_after_dead_proxy().await;
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
        match Proxy::spawn(&self.parts.children, &self.parts.argv, self.parts.group) {
            Ok(spawned) => {
                tracing::info!(pid = spawned.pid().as_raw(), command = %self.parts.argv, "proxy started");
                self.proxy = Some(spawned);
                let health = &mut self.health;
                health.generation += 1;
                if let Some(gate) = &self.parts.health {
                    let children = self.parts.children.clone();
                    let checker =
                        health::spawn(gate.clone(), children, health.generation, health.tx.clone());
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

async fn wait_exit(proxy: Option<&mut Proxy>) -> ProcessEnd {
    match proxy {
        Some(proxy) => proxy.exited().await,
        None => std::future::pending().await,
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
