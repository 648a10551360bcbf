//! Failover backends: what moves the floating IP, behind one trait.
//!
//! Owns: the [`Level`] and [`Role`] vocabulary, the [`Failover`] trait, and
//! the worker task that is the backend's only owner. The dispatcher never
//! calls a backend directly: it publishes the level it wants, and the worker
//! applies the newest wish, polls the role, and reports both back as events.
//! So a backend that hangs delays only its own reports, never the loop; the
//! state machine's deadlines decide how long the stop path waits for them.
//!
//! Does not own: when to change level (`crate::machine`).

mod any;
pub mod bgp;
pub mod carp;
mod command;
pub mod keepalived;
mod none;
mod worker;

use std::{fmt, future::Future, time::Duration};

pub use any::{AnyBackend, boot_id};
pub use command::CommandBackend;
pub use none::NoneBackend;
pub use worker::{BackendHandle, BackendReport, spawn_worker};

use crate::process::CommandError;

/// How far this node steps back from holding the floating IP; handoff only
/// ever adds or removes its own share of a backend's demotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Healthy, not in maintenance: our share is 0.
    Up,
    /// Maintenance or graceful handover: still a candidate if the peer dies.
    Standby,
    /// Starting, unhealthy, stopping or stopped: never win the IP.
    Down,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Up => "up",
            Level::Standby => "standby",
            Level::Down => "down",
        })
    }
}

/// Whether this node holds the floating IP, as the backend sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Holds the IP.
    #[serde(rename = "MASTER")]
    Master,
    /// A peer holds it (or should).
    #[serde(rename = "BACKUP")]
    Backup,
    /// Out of the election.
    #[serde(rename = "FAULT")]
    Fault,
    /// Not known (yet, or the backend failed to say).
    #[serde(rename = "unknown")]
    Unknown,
}

impl Role {
    /// Known not to hold the floating IP.
    pub fn released(self) -> bool {
        matches!(self, Role::Backup | Role::Fault)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Master => "MASTER",
            Role::Backup => "BACKUP",
            Role::Fault => "FAULT",
            Role::Unknown => "unknown",
        })
    }
}

/// How eagerly the worker polls the role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Normal operation.
    Idle,
    /// Waiting for the IP to move.
    Fast,
}

impl Watch {
    /// `idle` or `fast`, whichever this watch calls for.
    pub fn pick(self, idle: Duration, fast: Duration) -> Duration {
        match self {
            Watch::Idle => idle,
            Watch::Fast => fast,
        }
    }
}

/// A hint that the role may just have changed, named after what saw it
/// (`notify_fifo`, `address event`, `routing socket`). The worker polls at
/// once and logs the name as the role's `seen_by`: the poll stays the only
/// judge, so a hint can be wrong or late and never confirm a move by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint(pub &'static str);

/// A failover backend: sets our share of the demotion and reports the role.
pub trait Failover: Send + 'static {
    /// Its config name, for logs.
    fn name(&self) -> &'static str;

    /// Applies `level` (idempotent: applying the current level changes nothing).
    fn set_level(&mut self, level: Level)
    -> impl Future<Output = Result<(), FailoverError>> + Send;

    /// Asks whether this node holds the IP.
    fn role(&mut self) -> impl Future<Output = Result<Role, FailoverError>> + Send;

    /// How often to poll the role; `None` when it cannot change by itself.
    fn poll_interval(&self, watch: Watch) -> Option<Duration>;

    /// Hints that the role may just have changed (keepalived's notify FIFO,
    /// an address event, a carp interface's link state): each makes the
    /// worker poll at once. Taken once, at start, inside the runtime.
    fn hints(&mut self) -> Option<tokio::sync::mpsc::Receiver<Hint>> {
        None
    }

    /// What `handoff status` shows of the backend (a JSON object, or null);
    /// documented in docs/status.md.
    fn details(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// A backend operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    /// The tool could not be run, or ran too long.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The tool ran and reported failure.
    #[error("`{command}` {end}{}", stderr_suffix(.stderr))]
    Failed {
        /// The command line.
        command: String,
        /// How it ended.
        end: crate::process::ProcessEnd,
        /// The last line it wrote to stderr.
        stderr: String,
    },
    /// The state command printed something else than a role.
    #[error("`{command}` printed {output:?}, expected MASTER, BACKUP or FAULT")]
    BadState {
        /// The command line.
        command: String,
        /// What it printed (first line).
        output: String,
    },
    /// BIRD's control socket failed or refused a command.
    #[error(transparent)]
    Bird(#[from] bgp::BirdError),
    /// ifconfig printed something that is not in a known format.
    #[error(transparent)]
    Output(#[from] carp::output::ParseError),
    /// The state directory failed.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The track file's directory is unsafe, or the file cannot be written.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The ledger cannot be trusted.
    #[error("{0}")]
    Ledger(String),
    /// The backend's tool is not there (checked at start, so that nothing
    /// is started on a node whose IP cannot be moved).
    #[error("backend tool missing: {0}")]
    Missing(String),
    /// A local operation failed (listing addresses, writing the track file).
    #[error("{0}")]
    Local(String),
    /// This boot's id (the CARP ledger's boot marker) cannot be read or
    /// created.
    #[error("reading this boot's id: {0}")]
    BootId(std::io::Error),
    /// The kernel refused a change of a CARP group's demote counter.
    #[error(
        "the kernel refused to change group {group}'s demote counter ({counter}) by {change:+}: it must stay within 0..255"
    )]
    Range {
        /// The interface group.
        group: String,
        /// The counter before the change.
        counter: u8,
        /// The change asked for.
        change: i16,
    },
}

impl FailoverError {
    /// A backend tool that ran and failed: `command`, how it ended, and the
    /// last non-blank line it wrote to stderr (where tools say why).
    pub fn failed(command: String, output: &crate::process::CommandOutput) -> FailoverError {
        let stderr = output
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned();
        FailoverError::Failed {
            command,
            end: output.end,
            stderr,
        }
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}
