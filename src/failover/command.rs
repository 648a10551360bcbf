//! `backend = "command"`: three external commands (ucarp scripts, a hosting
//! provider's failover-IP API) run without a shell and with a timeout.
//!
//! `promote` runs for `up`; `demote` for `standby` and `down` alike, since a
//! command backend has no notion of "still a candidate". A command is run
//! again only when the side changes or the last run failed.

use std::time::Duration;

use super::{Failover, FailoverError, Level, Role, Watch};
use crate::{
    config::{Argv, CommandConfig},
    process::{Children, CommandOutput, ProcessEnd, run_command},
};

/// Role polling while waiting for a move; each poll is one process.
const FAST_POLL: Duration = Duration::from_millis(100);
/// Role polling otherwise.
const IDLE_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Promoted,
    Demoted,
}

/// Runs the configured demote/promote/state commands.
#[derive(Debug)]
pub struct CommandBackend {
    config: CommandConfig,
    children: Children,
    applied: Option<Side>,
}

impl CommandBackend {
    /// A backend running `config`'s commands as children registered in `children`.
    pub fn new(config: CommandConfig, children: Children) -> Self {
        CommandBackend {
            config,
            children,
            applied: None,
        }
    }

    async fn run(&self, argv: &Argv) -> Result<CommandOutput, FailoverError> {
        let output = run_command(
            &self.children,
            argv.program(),
            argv.args(),
            self.config.timeout,
        )
        .await?;
        if output.end == ProcessEnd::Exited(0) {
            return Ok(output);
        }
        Err(FailoverError::failed(argv.to_string(), &output))
    }
}

impl Failover for CommandBackend {
    fn name(&self) -> &'static str {
        "command"
    }

    async fn set_level(&mut self, level: Level) -> Result<(), FailoverError> {
        let side = if level == Level::Up {
            Side::Promoted
        } else {
            Side::Demoted
        };
        if self.applied == Some(side) {
            return Ok(());
        }
        let argv = if side == Side::Promoted {
            &self.config.promote
        } else {
            &self.config.demote
        };
        // Unknown until it succeeds: a failed or timed-out run may have half
        // happened, so the next attempt runs the command again.
        self.applied = None;
        self.run(argv).await?;
        self.applied = Some(side);
        Ok(())
    }

    async fn role(&mut self) -> Result<Role, FailoverError> {
        let output = self.run(&self.config.state).await?;
        let first = output.stdout.lines().next().unwrap_or("").trim();
        match first.to_ascii_uppercase().as_str() {
            "MASTER" => Ok(Role::Master),
            "BACKUP" => Ok(Role::Backup),
            "FAULT" => Ok(Role::Fault),
            _ => Err(FailoverError::BadState {
                command: self.config.state.to_string(),
                output: first.into(),
            }),
        }
    }

    fn poll_interval(&self, watch: Watch) -> Option<Duration> {
        Some(watch.pick(IDLE_POLL, FAST_POLL))
    }
}
