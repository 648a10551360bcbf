//! The top-level error: every module's error wrapped once, and the single
//! mapping from an error to an exit code.

use crate::{config::ConfigErrors, exit, failover::FailoverError};

/// Anything that stops handoff itself (as opposed to the proxy) from running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; each entry names `file:line:col`.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// The command line is wrong in a way clap cannot see.
    #[error("{0}")]
    Usage(String),
    /// A feature, tool or agent that is required is not there.
    #[error("{0}")]
    Unavailable(String),
    /// `check`: this host lacks what the backend needs (its tools, CARP
    /// interfaces, a safe track file directory).
    #[error(transparent)]
    Host(#[from] crate::check::HostError),
    /// The failover backend could not be set up.
    #[error(transparent)]
    Failover(#[from] FailoverError),
    /// The state directory cannot be used (or another agent holds it).
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// A record in the state directory cannot be read.
    #[error(transparent)]
    Record(#[from] crate::maintenance::RecordError),
    /// The control socket cannot be bound (or another agent owns it).
    #[error(transparent)]
    Socket(#[from] crate::control::server::ControlError),
    /// The running agent could not be asked, or refused.
    #[error(transparent)]
    Control(#[from] crate::control::client::ClientError),
    /// A Consul setting (address, token, TLS file) cannot be used.
    #[error("consul: {0}")]
    Consul(#[from] crate::consul::SettingsError),
    /// `[http] listen` cannot be bound.
    #[error("cannot listen on {addr} ([http] listen): {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// `[control] group` is not there (any more: validation saw it).
    #[error("[control] group `{0}` does not exist")]
    NoGroup(String),
    /// `[control] group` cannot be looked up.
    #[error("cannot look up [control] group `{name}`: {source}")]
    GroupLookup {
        /// The group.
        name: String,
        /// Why.
        source: nix::Error,
    },
    /// The status cannot be encoded as JSON.
    #[error("encoding the status: {0}")]
    Encode(#[from] serde_json::Error),
    /// `demote` waited `failover_timeout` (or `--timeout`) and this node
    /// still holds the IP (the demotion stays in place), or `promote` waited
    /// and the node is not up (an unhealthy proxy keeps it down).
    #[error("{0}")]
    TimedOut(String),
    /// `reload`: the agent's reload failed or was refused; the message says
    /// why (the checker's own lines, for a failed check).
    #[error("{0}")]
    Reload(String),
    /// `down` could not be applied at start: nothing was started, and the
    /// node may still hold the floating IP.
    #[error(
        "could not take this node down at start ({0}); it may hold the floating IP, and no proxy was started"
    )]
    Demotion(FailoverError),
    /// A stop signal (^C) ended `demote`'s wait; the demotion stays.
    #[error("{message}")]
    Interrupted {
        /// The signal that ended the wait.
        signal: nix::sys::signal::Signal,
        /// What was done, and what stays.
        message: String,
    },
    /// An operating-system call failed during setup.
    #[error("{what}: {source}")]
    Os {
        /// What handoff was doing.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl From<crate::signals::SetupError> for Error {
    fn from(e: crate::signals::SetupError) -> Error {
        Error::Os {
            what: e.what,
            source: e.source,
        }
    }
}

impl Error {
    /// The exit status for this error; the only place that decides it.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Consul(_) => exit::CONFIG,
            Error::Usage(_) => exit::USAGE,
            Error::Demotion(_) => exit::DEMOTION_FAILED,
            Error::Unavailable(_)
            | Error::Host(_)
            | Error::Failover(crate::failover::FailoverError::Missing(_)) => exit::UNAVAILABLE,
            Error::Failover(_)
            | Error::State(_)
            | Error::Record(_)
            | Error::Socket(_)
            | Error::Control(_)
            | Error::Listen { .. }
            | Error::NoGroup(_)
            | Error::GroupLookup { .. }
            | Error::Encode(_)
            | Error::TimedOut(_)
            | Error::Reload(_)
            | Error::Os { .. } => exit::FAILURE,
            Error::Interrupted { signal, .. } => exit::interrupted(*signal),
        }
    }
}
