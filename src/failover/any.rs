//! One type for "the configured backend", so that the agent and the
//! agent-less `demote`/`promote` open it the same way. [`Failover`] returns
//! `impl Future`, so it is not object safe: this enum dispatches instead.

use std::{path::Path, sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::{
    CommandBackend, Failover, FailoverError, Hint, Level, NoneBackend, Role, Watch,
    bgp::BgpBackend,
    carp::{CarpBackend, boot},
    keepalived::KeepalivedBackend,
};
use crate::{config::Backend, process::Children, state::StateDir};

/// The backend named by `[failover] backend`.
#[derive(Debug)]
pub enum AnyBackend {
    /// `none`
    None(NoneBackend),
    /// `command`
    Command(CommandBackend),
    /// `keepalived`
    Keepalived(KeepalivedBackend),
    /// `carp`
    Carp(CarpBackend),
    /// `bgp`
    Bgp(BgpBackend),
}

impl AnyBackend {
    /// Opens the configured backend. CARP reconciles its ledger in `state`
    /// first (a damaged ledger or an unreadable counter is an error here,
    /// before anything is spawned); `boot` is this boot's id (`carp::boot::id`).
    pub async fn open(
        backend: &Backend,
        children: Children,
        state: Arc<StateDir>,
        boot: String,
    ) -> Result<AnyBackend, FailoverError> {
        Ok(match backend {
            Backend::None => AnyBackend::None(NoneBackend),
            Backend::Command(command) => {
                for argv in [&command.demote, &command.promote, &command.state] {
                    runnable(Path::new(argv.program()))?;
                }
                AnyBackend::Command(CommandBackend::new(command.clone(), children))
            }
            Backend::Keepalived(keepalived) => {
                AnyBackend::Keepalived(KeepalivedBackend::open(keepalived.clone())?)
            }
            Backend::Carp(carp) => {
                runnable(&carp.ifconfig)?;
                AnyBackend::Carp(CarpBackend::open(carp.clone(), children, state, boot).await?)
            }
            Backend::Bgp(bgp) => AnyBackend::Bgp(BgpBackend::open(bgp.clone())),
        })
    }
}

/// This boot's id, for the CARP ledger (other backends keep none: empty):
/// the content of `[failover.carp] boot_marker`, created on first use after
/// a boot (`super::carp::boot`). Read before the backend is opened, with
/// the state dir, by every process that opens it.
pub fn boot_id(backend: &Backend) -> Result<String, FailoverError> {
    match backend {
        Backend::Carp(carp) => boot::id(&carp.boot_marker).map_err(FailoverError::BootId),
        Backend::None | Backend::Command(_) | Backend::Keepalived(_) | Backend::Bgp(_) => {
            Ok(String::new())
        }
    }
}

impl AnyBackend {
    /// Whether the backend holds this node `down` now (keepalived's track
    /// file, BIRD's protocols): agent-less `demote` must not raise such a
    /// node to `standby`. Backends that cannot tell say no.
    pub async fn left_down(&self) -> Result<bool, FailoverError> {
        Ok(match self {
            AnyBackend::Keepalived(k) => k.level_on_disk() == Some(Level::Down),
            AnyBackend::Bgp(b) => b.withdrawn().await?,
            AnyBackend::None(_) | AnyBackend::Command(_) | AnyBackend::Carp(_) => false,
        })
    }

    /// Applies `down`, retrying a failure as the worker does (250 ms,
    /// doubling, at most 5 s apart) until it is confirmed or `limit` has
    /// passed; the last error then. The start (before anything else), the
    /// sentinel and `handoff down` use it.
    pub async fn down_until(&mut self, limit: Duration) -> Result<(), FailoverError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut delay = super::worker::FIRST_RETRY;
        loop {
            match self.set_level(Level::Down).await {
                Ok(()) => return Ok(()),
                Err(error) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::warn!(backend = self.name(), %error, retry_in = ?delay, "could not go down");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(super::worker::MAX_RETRY);
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// `program` can be run (`crate::host::not_runnable`).
fn runnable(program: &Path) -> Result<(), FailoverError> {
    match crate::host::not_runnable(program) {
        None => Ok(()),
        Some(why) => Err(FailoverError::Missing(why)),
    }
}

/// Calls `$call` on whichever backend `$self` holds.
macro_rules! each {
    ($self:expr, $b:ident => $call:expr) => {
        match $self {
            AnyBackend::None($b) => $call,
            AnyBackend::Command($b) => $call,
            AnyBackend::Keepalived($b) => $call,
            AnyBackend::Carp($b) => $call,
            AnyBackend::Bgp($b) => $call,
        }
    };
}

impl Failover for AnyBackend {
    fn name(&self) -> &'static str {
        each!(self, b => b.name())
    }

    async fn set_level(&mut self, level: Level) -> Result<(), FailoverError> {
        each!(self, b => b.set_level(level).await)
    }

    async fn role(&mut self) -> Result<Role, FailoverError> {
        each!(self, b => b.role().await)
    }

    fn poll_interval(&self, watch: Watch) -> Option<Duration> {
        each!(self, b => b.poll_interval(watch))
    }

    fn hints(&mut self) -> Option<mpsc::Receiver<Hint>> {
        each!(self, b => b.hints())
    }

    fn details(&self) -> serde_json::Value {
        each!(self, b => b.details())
    }
}
