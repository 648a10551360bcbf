//! Log setup: tracing lines on stderr (Nomad, systemd and rc.d's
//! `daemon_logger` all capture stderr), as text or JSON.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG` wins over `[log] level`.
pub fn init(config: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| config.level.as_ref().map(|l| l.0.clone()))
        .unwrap_or_else(|| "info".into());
    // An invalid RUST_LOG is the operator's environment, not our config:
    // fall back to info rather than refuse to run.
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let result = match config.format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    // Already initialised (only in tests): keep the first subscriber.
    drop(result);
}
