//! Consul reporting: each edge node's role as a tag on its service instance,
//! a TTL check for its proxy's health, and the peers' roles read back.
//!
//! Owns: the [`Consul`] handle the agent starts with `[consul]`, its two
//! background tasks (the reporter in `report`, the watcher in `peers`), the
//! peer confirmation a stop may wait for, and the `consul` part of `status`.
//! Consul must never hurt a failover: every call has a short deadline, the
//! reporting runs beside the loop (the dispatcher only publishes into a
//! `watch`), retries back off with jitter, and the one wait on the stop path
//! (`peers::confirm`) gives up as soon as Consul cannot answer.
//!
//! Does not own: when the role changes (`crate::machine`).

mod client;
mod peers;
mod report;
mod settings;

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{sync::watch, task::JoinHandle};

pub use client::{CallError, CheckStatus, Client, Instance, error_line, parse_health};
pub use peers::PeerOutcome;
pub use report::{Report, Tag};
pub use settings::{Endpoint, Settings, SettingsError};

use crate::metrics::Metrics;

/// Deadline of a reporting call (register, check update); off the
/// failover path, so it may be generous for an agent resolving ACLs.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of the one call on the failover path: the first question of a
/// peer confirmation. Consul is the local agent; it answers in milliseconds.
/// With [`EXIT_LIMIT`] it keeps a hanging Consul's cost to a stop under 1 s.
pub const ON_PATH_TIMEOUT: Duration = Duration::from_millis(400);
/// Deadline of the deregistration at exit; defined with the stop budget
/// that counts it.
pub use crate::config::CONSUL_EXIT_LIMIT as EXIT_LIMIT;
/// How long a blocking query may wait for a change.
const WATCH_WAIT: Duration = Duration::from_secs(20);
/// First retry delay while Consul fails.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Longest retry delay: registration is back within this of Consul's return.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The `consul` part of `status` (docs/status.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsulStatus {
    /// The agent, as configured (never the token).
    pub address: String,
    /// The service name.
    pub service: String,
    /// This node's instance.
    pub service_id: String,
    /// The last call succeeded: Consul has this node's current state.
    pub registered: bool,
    /// The tag last accepted by Consul.
    pub tag: Option<String>,
    /// The check status last accepted by Consul.
    pub check: Option<CheckStatus>,
    /// When Consul last accepted a call, seconds since the Unix epoch.
    pub last_ok: Option<u64>,
    /// The last failure, if the last call failed.
    pub last_error: Option<String>,
    /// Failed reporting calls so far (register, check update); the metric
    /// `handoff_consul_errors_total` also counts the watcher's.
    pub errors: u64,
    /// Every instance of the service, from the watcher.
    pub instances: Vec<Instance>,
    /// The instances tagged master with no critical check.
    pub masters: Vec<String>,
    /// More than one live master for longer than 2 x ttl.
    pub split_brain: bool,
}

impl ConsulStatus {
    fn succeeded(&mut self, report: &Report) {
        self.registered = true;
        self.tag = Some(report.tag.as_str().to_owned());
        self.check = Some(report.check);
        self.last_ok = Some(crate::host::unix_now());
        self.last_error = None;
    }

    fn failed(&mut self, error: &CallError) {
        self.registered = false;
        self.errors += 1;
        self.last_error = Some(error.to_string());
    }
}

/// The status both tasks write and `status` reads.
#[derive(Debug, Clone, Default)]
struct Shared(Arc<Mutex<ConsulStatus>>);

impl Shared {
    fn update<R>(&self, change: impl FnOnce(&mut ConsulStatus) -> R) -> R {
        // A panic elsewhere cannot leave this half-written in a way that
        // matters: it is a report, rewritten by the next call.
        change(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The running Consul reporting.
#[derive(Debug)]
pub struct Consul {
    client: Client,
    settings: Arc<Settings>,
    reports: watch::Sender<Report>,
    shared: Shared,
    reporter: JoinHandle<()>,
    watcher: JoinHandle<()>,
}

impl Consul {
    /// Starts reporting `first` and watching the peers through `client`
    /// (built from `settings`). Call inside the runtime.
    pub fn start(
        client: Client,
        settings: Settings,
        first: Report,
        metrics: &Arc<Metrics>,
    ) -> Consul {
        let settings = Arc::new(settings);
        let shared = Shared::default();
        shared.update(|s| {
            s.address = settings.endpoint.to_string();
            s.service.clone_from(&settings.service);
            s.service_id.clone_from(&settings.service_id);
        });
        let (reports, rx) = watch::channel(first);
        let reporter = tokio::spawn(report::run(
            client.clone(),
            settings.clone(),
            rx,
            shared.clone(),
            metrics.clone(),
        ));
        let watcher = tokio::spawn(peers::watch(
            client.clone(),
            settings.clone(),
            shared.clone(),
            metrics.clone(),
        ));
        tracing::info!(
            address = %settings.endpoint,
            service = %settings.service,
            service_id = %settings.service_id,
            token = settings.token_source.as_deref().unwrap_or("none"),
            "consul: reporting this node's role"
        );
        Consul {
            client,
            settings,
            reports,
            shared,
            reporter,
            watcher,
        }
    }

    /// Hands the reporter the current state; it registers again (at once)
    /// only if something changed. Never waits.
    pub fn publish(&self, report: Report) {
        self.reports.send_if_modified(|current| {
            let changed = *current != report;
            if changed {
                *current = report;
            }
            changed
        });
    }

    /// The `consul` part of `status`.
    pub fn status(&self) -> ConsulStatus {
        self.shared.update(|s| s.clone())
    }

    /// A peer confirmation, for the dispatcher to run as a task.
    pub fn confirm(&self) -> impl Future<Output = PeerOutcome> + Send + 'static {
        peers::confirm(
            self.client.clone(),
            self.settings.service.clone(),
            self.settings.service_id.clone(),
        )
    }

    /// Stops reporting and removes this node's instance, within
    /// [`EXIT_LIMIT`]: a clean exit leaves nothing behind in Consul.
    pub async fn shutdown(self) {
        let start = tokio::time::Instant::now();
        let deadline = start + EXIT_LIMIT;
        self.watcher.abort();
        // Closing the channel stops the reporter before its next call. A
        // call in flight is let finish (for up to 2/3 of the limit):
        // aborted, its request could still reach Consul after the
        // deregistration and register us again.
        drop(self.reports);
        let mut reporter = self.reporter;
        let finish_by = start + EXIT_LIMIT * 2 / 3;
        if tokio::time::timeout_at(finish_by, &mut reporter)
            .await
            .is_err()
        {
            reporter.abort(); // Consul hangs: nothing of it lands anyway
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let id = &self.settings.service_id;
        match self.client.deregister(id, left).await {
            Ok(()) => tracing::info!(service_id = %id, "consul: deregistered"),
            Err(error) => {
                tracing::warn!(%error, "consul: cannot deregister; the TTL check goes critical in ttl");
            }
        }
    }
}
