//! `backend = "none"`: no floating IP. Levels are accepted and ignored, and
//! the node is never master, so a stop never waits for a move.

use std::time::Duration;

use super::{Failover, FailoverError, Level, Role, Watch};

/// The backend for nodes without a floating IP.
#[derive(Debug, Default)]
pub struct NoneBackend;

impl Failover for NoneBackend {
    fn name(&self) -> &'static str {
        "none"
    }

    async fn set_level(&mut self, _level: Level) -> Result<(), FailoverError> {
        Ok(())
    }

    async fn role(&mut self) -> Result<Role, FailoverError> {
        Ok(Role::Backup)
    }

    fn poll_interval(&self, _watch: Watch) -> Option<Duration> {
        None
    }
}
