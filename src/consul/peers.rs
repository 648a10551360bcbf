//! The other instances of the service, as Consul sees them: the peer
//! confirmation a planned stop (or `demote`) waits for, and split-brain
//! detection.
//!
//! Owns: [`confirm`], which answers once another instance is tagged master
//! and passing, or at once when Consul cannot say (so Consul never holds a
//! failover back by more than [`super::ON_PATH_TIMEOUT`]); and the watcher,
//! a blocking query on `/v1/health/service/<service>` (`?index=&wait=`)
//! that publishes the instances and raises `handoff_split_brain` when more
//! than one live instance is tagged master for longer than 2 x ttl (never
//! on a backend where several masters are normal: BGP anycast).

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::{
    CALL_TIMEOUT, ON_PATH_TIMEOUT, Shared, WATCH_WAIT,
    client::{CallError, CheckStatus, Client, Instance},
    report::Backoff,
    settings::Settings,
};
use crate::metrics::Metrics;

/// How a peer confirmation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerOutcome {
    /// This instance (by service ID) is tagged master and passing.
    Master(String),
    /// Consul did not answer, or refused: the wait does not depend on it.
    Unavailable(CallError),
}

/// Consul's own wait plus its jitter (up to wait/16) plus the round trip.
fn blocking_limit(wait: Duration, round_trip: Duration) -> Duration {
    wait + wait / 16 + round_trip
}

/// Waits until an instance other than `own_id` is tagged master with every
/// check passing. The first question must be answered within
/// [`ON_PATH_TIMEOUT`]; then blocking queries follow until the caller stops
/// waiting (it always bounds this by `failover_timeout`).
pub async fn confirm(client: Client, service: String, own_id: String) -> PeerOutcome {
    let mut index = None;
    loop {
        let limit = match index {
            None => ON_PATH_TIMEOUT,
            Some(_) => blocking_limit(WATCH_WAIT, ON_PATH_TIMEOUT),
        };
        match client.health(&service, index, WATCH_WAIT, limit).await {
            Err(error) => return PeerOutcome::Unavailable(error),
            Ok((instances, new_index)) => {
                if let Some(peer) = instances
                    .iter()
                    .find(|i| i.id != own_id && i.is_master() && i.status == CheckStatus::Passing)
                {
                    return PeerOutcome::Master(peer.id.clone());
                }
                index = next_index(index, new_index);
            }
        }
    }
}

/// Consul's rule for blocking queries: an index that went backwards (or
/// is 0) starts over with a plain query.
fn next_index(old: Option<u64>, new: u64) -> Option<u64> {
    match old {
        Some(old) if new < old => None,
        _ if new == 0 => None,
        _ => Some(new),
    }
}

/// Instances that claim the IP and are alive: tagged master with no
/// critical check. A node that died keeps its last tag until its TTL runs
/// out; that one is not a second master.
pub fn live_masters(instances: &[Instance]) -> Vec<String> {
    instances
        .iter()
        .filter(|i| i.is_master() && i.status != CheckStatus::Critical)
        .map(|i| i.id.clone())
        .collect()
}

/// A stretch of time with more than one live master.
#[derive(Debug, Default)]
struct Episode {
    since: Option<Instant>,
    warned: bool,
}

/// Watches the service until aborted.
pub(super) async fn watch(
    client: Client,
    settings: Arc<Settings>,
    shared: Shared,
    metrics: Arc<Metrics>,
) {
    let window = settings.ttl * 2;
    let mut index = None;
    let mut backoff = Backoff::new();
    let mut episode = Episode::default();
    loop {
        let started = Instant::now();
        let query = client.health(
            &settings.service,
            index,
            WATCH_WAIT,
            blocking_limit(WATCH_WAIT, CALL_TIMEOUT),
        );
        tokio::pin!(query);
        // The query may block for WATCH_WAIT; the split-brain window must
        // close on time regardless.
        let result = loop {
            let deadline = episode
                .since
                .filter(|_| !episode.warned)
                .map(|s| s + window);
            tokio::select! {
                result = &mut query => break result,
                () = sleep_until_some(deadline) => {
                    warn_split_brain(&shared, &metrics, &mut episode, window);
                }
            }
        };
        match result {
            Ok((instances, new_index)) => {
                backoff.reset();
                index = next_index(index, new_index);
                let masters = live_masters(&instances);
                // On BGP anycast every node that announces is master.
                if masters.len() > 1 && !settings.several_masters {
                    episode.since.get_or_insert_with(Instant::now);
                } else if episode.since.take().is_some() && episode.warned {
                    episode.warned = false;
                    metrics.split_brain(false);
                    tracing::info!(masters = ?masters, "consul: split brain over: one master again");
                }
                shared.update(|s| {
                    s.masters = masters;
                    s.instances = instances;
                    s.split_brain = episode.warned;
                });
                // Never spin: a busy catalog answers blocking queries at once.
                let floor = started + Duration::from_millis(100);
                tokio::time::sleep_until(floor).await;
            }
            Err(error) => {
                metrics.consul_error();
                index = None;
                tracing::debug!(%error, "consul: cannot watch the service's instances");
                tokio::time::sleep(backoff.failed()).await;
            }
        }
    }
}

fn warn_split_brain(shared: &Shared, metrics: &Metrics, episode: &mut Episode, window: Duration) {
    episode.warned = true;
    metrics.split_brain(true);
    let masters = shared.update(|s| {
        s.split_brain = true;
        s.masters.clone()
    });
    tracing::warn!(
        masters = ?masters,
        window = %humantime::format_duration(window),
        "consul: split brain: more than one node is tagged master (for longer than 2 x ttl)"
    );
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, tag: &str, status: CheckStatus) -> Instance {
        Instance {
            id: id.into(),
            node: "n".into(),
            tags: vec![tag.into()],
            status,
        }
    }

    #[test]
    fn a_dead_master_is_not_a_second_master() {
        let instances = [
            instance("a", "master", CheckStatus::Passing),
            instance("b", "master", CheckStatus::Critical),
            instance("c", "backup", CheckStatus::Passing),
        ];
        assert_eq!(live_masters(&instances), ["a"]);
        let two = [
            instance("a", "master", CheckStatus::Passing),
            instance("b", "master", CheckStatus::Warning),
        ];
        assert_eq!(live_masters(&two), ["a", "b"]);
    }

    #[test]
    fn blocking_index_rules() {
        assert_eq!(next_index(None, 5), Some(5));
        assert_eq!(next_index(Some(5), 7), Some(7));
        assert_eq!(next_index(Some(7), 5), None);
        assert_eq!(next_index(Some(7), 0), None);
    }
}
