//! What this node tells Consul, and the task that keeps telling it.
//!
//! Owns: the role tag and check status for each lifecycle state
//! ([`Report::new`], a pure function with a table test), the registration
//! built from it, and the reporter task: register, refresh the TTL check
//! every ttl/3, register again on any change (at once) or on any non-2xx
//! check update (Consul forgot us), and back off with jitter while Consul
//! is away. The dispatcher only publishes into a `watch`; nothing here is
//! ever awaited on the failover path.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::{sync::watch, time::Instant};

use super::{
    Shared,
    client::{CheckDefinition, CheckStatus, Client, Registration},
    settings::Settings,
};
use crate::{
    failover::{Level, Role},
    machine::{Phase, View},
    maintenance::Maintenance,
    metrics::Metrics,
};

/// The role tag (spec: "Interfaces to others", Consul).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// Holds the floating IP.
    Master,
    /// A candidate; the peer holds the IP.
    Backup,
    /// Out of the election (starting, unhealthy, unknown).
    Fault,
    /// Held at standby by an operator.
    Maintenance,
    /// A planned stop is under way.
    Draining,
}

impl Tag {
    /// The tag's text.
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Master => "master",
            Tag::Backup => "backup",
            Tag::Fault => "fault",
            Tag::Maintenance => "maintenance",
            Tag::Draining => "draining",
        }
    }
}

/// What the dispatcher publishes after every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The role tag.
    pub tag: Tag,
    /// The TTL check's status.
    pub check: CheckStatus,
    /// The level last asked of the backend.
    pub level: Option<Level>,
    /// The maintenance reason, or empty.
    pub reason: String,
}

impl Report {
    /// The report for a machine in `view`. Draining and maintenance say
    /// what the operator asked for, ahead of where the IP is right now:
    /// a node on its way out is no longer the one to send traffic to.
    pub fn new(view: &View, maintenance: Option<&Maintenance>) -> Report {
        let stopping = matches!(
            view.phase,
            Phase::Stopping(_) | Phase::Exiting { .. } | Phase::Done
        );
        let tag = if stopping {
            Tag::Draining
        } else if view.maintenance {
            Tag::Maintenance
        } else {
            // A node held down (starting, unhealthy, no proxy) is out of
            // the election even where the backend calls it BACKUP.
            let down = view.level.is_none_or(|l| l == Level::Down);
            match view.role {
                Role::Master => Tag::Master,
                Role::Backup if !down => Tag::Backup,
                Role::Backup | Role::Fault | Role::Unknown => Tag::Fault,
            }
        };
        // Passing while the proxy is healthy, warning while it serves but
        // should not be preferred, critical while it is down (spec).
        let check = match view.phase {
            Phase::Running { healthy: true } if view.maintenance => CheckStatus::Warning,
            Phase::Running { healthy: true } => CheckStatus::Passing,
            Phase::Stopping(step) if step != crate::machine::Step::Killed => CheckStatus::Warning,
            _ => CheckStatus::Critical,
        };
        Report {
            tag,
            check,
            level: view.level,
            reason: maintenance
                .map(|m| m.reason.as_str().to_owned())
                .unwrap_or_default(),
        }
    }

    /// The check's output line.
    pub fn output(&self) -> String {
        let level = self
            .level
            .map_or_else(|| "none".to_owned(), |l| l.to_string());
        let mut text = format!("handoff: {} (level {level})", self.tag.as_str());
        if !self.reason.is_empty() {
            text.push_str(": ");
            text.push_str(&self.reason);
        }
        text
    }
}

/// The registration for `report`.
pub fn registration(settings: &Settings, report: &Report) -> Registration {
    let level = report.level.map_or_else(String::new, |l| l.to_string());
    let demoted = report.level.is_some_and(|l| l != Level::Up);
    let meta = BTreeMap::from([
        ("role".to_owned(), report.tag.as_str().to_owned()),
        ("node".to_owned(), settings.node.clone()),
        ("vip".to_owned(), settings.vip.clone()),
        ("level".to_owned(), level),
        ("demoted".to_owned(), demoted.to_string()),
        (
            "reason".to_owned(),
            report.reason.chars().take(512).collect(),
        ),
        ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
    ]);
    Registration {
        id: settings.service_id.clone(),
        name: settings.service.clone(),
        tags: vec![report.tag.as_str().to_owned()],
        meta,
        check: CheckDefinition {
            check_id: settings.check_id(),
            name: format!("handoff on {}", settings.node),
            ttl: go_duration(settings.ttl),
            status: report.check,
            notes: report.output(),
            deregister_critical_service_after: settings.deregister_after.map(go_duration),
        },
    }
}

/// A duration as Go's time.ParseDuration reads it.
fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Retry delays: doubling from [`super::FIRST_RETRY`] to [`super::MAX_RETRY`],
/// each with up to half of it taken off at random, so that a fleet that lost
/// its agent together does not come back in lockstep.
#[derive(Debug)]
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) fn new() -> Backoff {
        Backoff {
            next: super::FIRST_RETRY,
        }
    }

    /// The delay before the next try; doubles the one after.
    pub(super) fn failed(&mut self) -> Duration {
        let full = self.next;
        self.next = (self.next * 2).min(super::MAX_RETRY);
        full.mul_f64(1.0 - 0.5 * random_fraction())
    }

    pub(super) fn reset(&mut self) {
        self.next = super::FIRST_RETRY;
    }
}

/// A number in [0, 1): std's `RandomState` is seeded randomly per process
/// and per instance, which is all jitter needs.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    #[allow(clippy::cast_precision_loss)] // 53 bits of randomness are plenty
    let fraction = (bits >> 11) as f64 / (1u64 << 53) as f64;
    fraction
}

/// Keeps Consul's view of this node current until aborted.
pub(super) async fn run(
    client: Client,
    settings: Arc<Settings>,
    mut reports: watch::Receiver<Report>,
    shared: Shared,
    metrics: Arc<Metrics>,
) {
    let refresh = settings.ttl / 3;
    let check_id = settings.check_id();
    let mut registered: Option<Registration> = None;
    let mut backoff = Backoff::new();
    let mut failing = false;
    let mut due = Instant::now();
    loop {
        // A change goes out at once; otherwise the next refresh or retry.
        tokio::select! {
            changed = reports.changed() => {
                if changed.is_err() {
                    return; // the dispatcher is gone
                }
            }
            () = tokio::time::sleep_until(due) => {}
        }
        let report = reports.borrow_and_update().clone();
        let wanted = registration(&settings, &report);
        let result = if registered.as_ref() == Some(&wanted) {
            client
                .update_check(&check_id, report.check, &report.output())
                .await
        } else {
            // Consul keeps an existing check's status across a registration
            // (the `Status` given counts only for a new check), so the
            // status follows in its own call.
            let result = match client.register(&wanted).await {
                Ok(()) => {
                    client
                        .update_check(&check_id, report.check, &report.output())
                        .await
                }
                Err(error) => Err(error),
            };
            if result.is_ok() {
                registered = Some(wanted);
            }
            result
        };
        match result {
            Ok(()) => {
                if failing {
                    tracing::info!(service_id = %settings.service_id, "consul: registration restored");
                    failing = false;
                }
                backoff.reset();
                due = Instant::now() + refresh;
                shared.update(|s| s.succeeded(&report));
            }
            Err(error) => {
                metrics.consul_error();
                // An agent that restarted has forgotten us: its check update
                // answers 500 "does not have associated TTL". Register again
                // at once; for a missing agent, after the backoff.
                let answered = error.status().is_some() && registered.is_some();
                registered = None;
                due = Instant::now()
                    + if answered {
                        Duration::ZERO
                    } else {
                        backoff.failed()
                    };
                if failing {
                    tracing::debug!(%error, "consul: still failing");
                } else {
                    tracing::warn!(%error, "consul: cannot report this node's role; retrying with backoff (failover does not depend on it)");
                    failing = true;
                }
                shared.update(|s| s.failed(&error));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Step;

    fn view(phase: Phase, role: Role, maintenance: bool) -> View {
        let level = match phase {
            Phase::Running { healthy: true } if maintenance => Level::Standby,
            Phase::Running { healthy: true } => Level::Up,
            _ => Level::Down,
        };
        View {
            phase,
            level: Some(level),
            applied: true,
            role,
            role_current: true,
            maintenance,
            awaiting_peer: false,
            awaiting_probe: false,
            restarts: 0,
        }
    }

    #[test]
    fn tags_and_check_status_for_each_state() {
        use CheckStatus::{Critical, Passing, Warning};
        let healthy = Phase::Running { healthy: true };
        let unhealthy = Phase::Running { healthy: false };
        let table = [
            (Phase::Starting, Role::Unknown, false, Tag::Fault, Critical),
            (Phase::Starting, Role::Backup, false, Tag::Fault, Critical),
            (healthy, Role::Master, false, Tag::Master, Passing),
            (healthy, Role::Backup, false, Tag::Backup, Passing),
            (healthy, Role::Fault, false, Tag::Fault, Passing),
            (healthy, Role::Master, true, Tag::Maintenance, Warning),
            (unhealthy, Role::Master, false, Tag::Master, Critical),
            (unhealthy, Role::Backup, false, Tag::Fault, Critical),
            (unhealthy, Role::Backup, true, Tag::Maintenance, Critical),
            (Phase::Restarting, Role::Fault, false, Tag::Fault, Critical),
            (
                Phase::Stopping(Step::Failover { held: true }),
                Role::Master,
                false,
                Tag::Draining,
                Warning,
            ),
            (
                Phase::Stopping(Step::Draining),
                Role::Backup,
                true,
                Tag::Draining,
                Warning,
            ),
            (
                Phase::Stopping(Step::Killed),
                Role::Backup,
                false,
                Tag::Draining,
                Critical,
            ),
            (
                Phase::Exiting { code: 0 },
                Role::Fault,
                false,
                Tag::Draining,
                Critical,
            ),
        ];
        for (phase, role, maintenance, tag, check) in table {
            let report = Report::new(&view(phase, role, maintenance), None);
            assert_eq!(
                (report.tag, report.check),
                (tag, check),
                "{phase:?} {role:?} {maintenance}"
            );
        }
    }

    #[test]
    fn the_reason_goes_into_meta_and_output() {
        let record = Maintenance {
            reason: crate::maintenance::Reason::parse("kernel upgrade").unwrap(),
            uid: 0,
            since: 1,
        };
        let report = Report::new(
            &view(Phase::Running { healthy: true }, Role::Backup, true),
            Some(&record),
        );
        assert_eq!(
            report.output(),
            "handoff: maintenance (level standby): kernel upgrade"
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new();
        let mut full = super::super::FIRST_RETRY;
        for _ in 0..12 {
            let delay = backoff.failed();
            assert!(delay <= full && delay >= full / 2, "{delay:?} vs {full:?}");
            full = (full * 2).min(super::super::MAX_RETRY);
        }
        assert_eq!(full, super::super::MAX_RETRY);
        backoff.reset();
        assert!(backoff.failed() <= super::super::FIRST_RETRY);
    }
}
