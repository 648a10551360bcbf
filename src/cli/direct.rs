//! `demote` and `promote` when no agent runs: the same record, ledger and
//! lock the agent uses, applied by the CLI itself.
//!
//! Owns the rules for acting without an agent. With no agent there is no
//! proxy under supervision, so nothing here ever raises the node:
//! * `demote` writes the maintenance record and brings the backend to at
//!   least `standby` (a node a stopped agent left `down` stays `down`: an
//!   exited agent's `down` must hold, spec "Stop" step 4; only keepalived's
//!   track file can tell the two apart). On CARP `standby` and `down` are the
//!   same share, so demoting twice never adds a second.
//! * `promote` removes the record and leaves the level alone: the next
//!   `handoff run` releases it once its proxy is healthy.

use std::{sync::Arc, time::Duration};

use nix::sys::signal::Signal;
use tokio::{sync::mpsc, time::Instant};

use crate::{
    config::Resolved,
    error::Error,
    failover::{AnyBackend, Failover, Level, Role},
    host::unix_now,
    maintenance::{Maintenance, Reason},
    platform::Received,
    process::Children,
    state::{StateDir, StateError},
};

/// How often the role is polled while waiting for the move.
const POLL: Duration = Duration::from_millis(50);

/// How a direct demote ended.
#[derive(Debug)]
pub enum Demoted {
    /// The record is written and the level applied; no wait was asked.
    Applied(Maintenance, Level),
    /// This node no longer holds the IP.
    Released(Maintenance, Level),
    /// The wait ended first; the demotion stays.
    TimedOut(Maintenance, Level, Role),
    /// A signal ended the wait; the demotion stays.
    Interrupted(Maintenance, Level, Signal),
}

/// Opens the state dir; a lock held by someone else while nobody answers
/// on the socket means a starting or hung agent, and nothing may be done.
fn open_state(config: &Resolved) -> Result<Arc<StateDir>, Error> {
    match StateDir::open(&config.control.state_dir) {
        Ok(state) => Ok(Arc::new(state)),
        Err(StateError::Locked { dir, holder }) => Err(Error::Unavailable(format!(
            "no agent answers on {}, but handoff{} holds the state dir {}: is it starting, or hung?",
            config.control.socket.display(),
            holder.map_or_else(String::new, |p| format!(" (pid {p})")),
            dir.display()
        ))),
        Err(e) => Err(e.into()),
    }
}

/// `handoff demote` without an agent. `signals` ends the wait early. The
/// reason is a [`Reason`] (checked where it was given: `--reason`), so the
/// record this writes holds nothing the agent's socket would refuse.
pub async fn demote(
    config: &Resolved,
    reason: Option<&Reason>,
    uid: u32,
    wait: Option<Duration>,
    children: Children,
    signals: &mut mpsc::Receiver<Received>,
    boot: String,
) -> Result<Demoted, Error> {
    let state = open_state(config)?;
    let record = Maintenance::set(&state, reason, uid, unix_now())?;
    let mut backend = AnyBackend::open(&config.backend, children, state, boot).await?;
    let left_down = backend.left_down().await?;
    let level = if left_down {
        Level::Down
    } else {
        Level::Standby
    };
    backend.set_level(level).await?;
    let Some(limit) = wait else {
        return Ok(Demoted::Applied(record, level));
    };
    let deadline = Instant::now() + limit;
    loop {
        let role = backend.role().await.unwrap_or(Role::Unknown);
        if role.released() {
            return Ok(Demoted::Released(record, level));
        }
        if Instant::now() >= deadline {
            return Ok(Demoted::TimedOut(record, level, role));
        }
        tokio::select! {
            Some(received) = signals.recv() => {
                if crate::signals::STOP.contains(&received.signal) {
                    return Ok(Demoted::Interrupted(record, level, received.signal));
                }
            }
            () = tokio::time::sleep(POLL.min(deadline - Instant::now())) => {}
        }
    }
}

/// `handoff promote` without an agent; returns the record it removed.
pub fn promote(config: &Resolved) -> Result<Option<Maintenance>, Error> {
    let state = open_state(config)?;
    Ok(Maintenance::clear(&state)?)
}
