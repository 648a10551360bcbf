//! How a hook's or duty's run ended: one word shared by `crate::hooks`
//! (which decides it), `crate::status` (which shows the last one) and
//! `crate::metrics` (which counts each). Kept apart so that the metrics,
//! which the Consul reporter also feeds, need nothing from the status
//! report.

use serde::{Deserialize, Serialize};

/// How a hook's or duty's run ended (`crate::hooks`), for status, logs and
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Exit 0.
    Ok,
    /// Another exit, or killed by a signal, or it could not start.
    Failed,
    /// Killed past its timeout.
    Timeout,
    /// Superseded by a newer change before it ran.
    Skipped,
    /// A duty stopped because the node left `up` or master.
    Stopped,
}

impl Outcome {
    /// Its name in logs, metrics and status.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Skipped => "skipped",
            Outcome::Stopped => "stopped",
        }
    }
}
