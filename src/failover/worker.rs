//! The backend's one owner: a task that applies the newest wanted level,
//! polls the role, and reports both to the dispatcher as [`BackendReport`]s
//! (the machine turns them into its events; the worker knows nothing of it).
//!
//! The role is looked at after every applied level, when a move starts being
//! awaited, on every [`Hint`] the backend gives (an address event, a notify
//! FIFO line, a carp link state), and by the backend's poll interval, which
//! stays as the safety net for hints that never come. Each role change is
//! logged with `seen_by`, what made the worker look.
//!
//! Wanted levels arrive through a `watch` channel, so a burst of changes
//! collapses into the newest one, and levels are applied strictly in order.
//! Every wish carries the machine's request number, and each report names the
//! wish it answers; a wish whose level is already in place is still answered.
//! A failed apply is reported (the stop path must not wait on a broken tool)
//! and retried with capped backoff until it succeeds or the wish changes.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::{Failover, Hint, Level, Role, Watch};

/// A failed level is retried soon: on the stop path the stop's deadline
/// (failover_timeout, then DOWN_GRACE) is all the time there is.
pub(super) const FIRST_RETRY: Duration = Duration::from_millis(250);
pub(super) const MAX_RETRY: Duration = Duration::from_secs(5);
/// Sleep used when the backend never needs polling; any wish wakes it.
const FOREVER: Duration = Duration::from_secs(3600);

/// What the worker tells the dispatcher, which hands it to the machine
/// (`crate::machine::Event::from`); the backends know nothing of the
/// machine above them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendReport {
    /// The backend finished applying the level of request `seq`.
    LevelApplied {
        /// The level.
        level: Level,
        /// Whether the backend reported success.
        ok: bool,
        /// The request it answers.
        seq: u64,
    },
    /// The role, as the backend saw it after answering request `seq`.
    Role {
        /// Whether this node holds the floating IP.
        role: Role,
        /// The last request the backend had answered when it looked.
        seq: u64,
    },
}

/// The dispatcher's side of the worker.
#[derive(Debug)]
pub struct BackendHandle {
    level: watch::Sender<Option<(Level, u64)>>,
    watch: watch::Sender<Watch>,
    failures: Arc<AtomicU64>,
    name: &'static str,
    details: watch::Receiver<serde_json::Value>,
}

impl BackendHandle {
    /// Asks for `level` as request `seq`; the worker applies the newest wish.
    pub fn set_level(&self, level: Level, seq: u64) {
        self.level.send_replace(Some((level, seq)));
    }

    /// Changes how eagerly the role is polled.
    pub fn watch(&self, watch: Watch) {
        self.watch.send_replace(watch);
    }

    /// Backend operations that failed so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// What the backend last said about itself (see [`Failover::details`]).
    pub fn details(&self) -> serde_json::Value {
        self.details.borrow().clone()
    }

    /// The backend's config name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Starts the worker task that owns `backend`. It reports on `events` and
/// ends when the handle is dropped or the receiver is gone.
pub fn spawn_worker<F: Failover>(backend: F, events: mpsc::Sender<BackendReport>) -> BackendHandle {
    let (level_tx, level_rx) = watch::channel(None);
    let (watch_tx, watch_rx) = watch::channel(Watch::Idle);
    let failures = Arc::new(AtomicU64::new(0));
    let name = backend.name();
    let (details_tx, details) = watch::channel(backend.details());
    let worker = Worker {
        backend,
        details: details_tx,
        events,
        failures: failures.clone(),
        last_role: None,
        role_failing: false,
        answered: None,
    };
    tokio::spawn(worker.run(level_rx, watch_rx));
    BackendHandle {
        level: level_tx,
        watch: watch_tx,
        failures,
        name,
        details,
    }
}

struct Worker<F> {
    backend: F,
    details: watch::Sender<serde_json::Value>,
    events: mpsc::Sender<BackendReport>,
    failures: Arc<AtomicU64>,
    last_role: Option<Role>,
    role_failing: bool,
    /// The last request answered; role reports carry it.
    answered: Option<u64>,
}

impl<F: Failover> Worker<F> {
    async fn run(
        mut self,
        mut wanted: watch::Receiver<Option<(Level, u64)>>,
        mut watch: watch::Receiver<Watch>,
    ) {
        let mut hints = self.backend.hints();
        let mut retry: Option<(Instant, Duration)> = None;
        // No role query before the first wish: start-up's `down` goes first,
        // and every applied level is followed by a role report.
        loop {
            let want = *wanted.borrow_and_update();
            let retry_due = retry.is_some_and(|(at, _)| Instant::now() >= at);
            // Backends are idempotent: a level already in place costs nothing,
            // and the machine still learns that its request holds.
            if let Some((level, seq)) = want
                && (Some(seq) != self.answered || retry_due)
            {
                let started = Instant::now();
                let ok = match self.backend.set_level(level).await {
                    Ok(()) => {
                        tracing::info!(backend = self.backend.name(), %level, elapsed_ms = elapsed_ms(started), "level applied");
                        retry = None;
                        true
                    }
                    Err(error) => {
                        self.failures.fetch_add(1, Ordering::Relaxed);
                        let delay = retry.map_or(FIRST_RETRY, |(_, d)| (d * 2).min(MAX_RETRY));
                        tracing::warn!(backend = self.backend.name(), %level, %error, retry_in = ?delay, "could not apply level");
                        retry = Some((Instant::now() + delay, delay));
                        false
                    }
                };
                self.answered = Some(seq);
                if self
                    .events
                    .send(BackendReport::LevelApplied { level, ok, seq })
                    .await
                    .is_err()
                {
                    return;
                }
                // The stop wait depends on the role right after the change.
                if !self.report_role(true, "level").await {
                    return;
                }
                continue;
            }
            let poll = self
                .backend
                .poll_interval(*watch.borrow_and_update())
                .unwrap_or(FOREVER);
            let until_retry = retry.map_or(FOREVER, |(at, _)| {
                at.saturating_duration_since(Instant::now())
            });
            tokio::select! {
                biased;
                changed = wanted.changed() => if changed.is_err() { return },
                Some(Hint(seen_by)) = next_hint(hints.as_mut()) => {
                    if !self.report_role(false, seen_by).await { return }
                }
                changed = watch.changed() => {
                    if changed.is_err() { return }
                    if *watch.borrow() == Watch::Fast && !self.report_role(true, "fast watch").await { return }
                }
                () = tokio::time::sleep(poll.min(until_retry)) => {
                    if !self.report_role(false, "poll").await { return }
                }
            }
        }
    }

    /// Polls the role and reports it when it changed (or always, if `force`);
    /// `seen_by` says what made the worker look, for the log. Returns false
    /// when the dispatcher is gone.
    async fn report_role(&mut self, force: bool, seen_by: &'static str) -> bool {
        let role = match self.backend.role().await {
            Ok(role) => {
                self.role_failing = false;
                role
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                // Once per failing streak at warn; the rest would flood the log.
                if self.role_failing {
                    tracing::debug!(backend = self.backend.name(), %error, "role query failed");
                } else {
                    tracing::warn!(backend = self.backend.name(), %error, "role query failed");
                }
                self.role_failing = true;
                Role::Unknown
            }
        };
        // Cheap (no I/O); status then shows what the backend just saw.
        self.details.send_replace(self.backend.details());
        if self.last_role != Some(role) {
            tracing::info!(backend = self.backend.name(), %role, seen_by, "role");
        } else if !force {
            return true;
        }
        self.last_role = Some(role);
        let seq = self.answered.unwrap_or(0);
        self.events
            .send(BackendReport::Role { role, seq })
            .await
            .is_ok()
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The next hint, or never when the backend gives none (or its source ended).
async fn next_hint(hints: Option<&mut mpsc::Receiver<Hint>>) -> Option<Hint> {
    match hints {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
