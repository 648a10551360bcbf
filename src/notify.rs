//! systemd notifications (sd_notify(3)) for `Type=notify` units: READY=1 once
//! the proxy is healthy, RELOADING=1 and READY=1 around a reload (READY=1 once
//! it is confirmed, or failed: `crate::reload`), STOPPING=1 at
//! the stop, and EXTEND_TIMEOUT_USEC for the stop budget while handoff waits
//! for the failover, so `TimeoutStopSec` does not cut the handover short.
//!
//! When each is due is the machine's decision (`crate::machine::Notice`);
//! this module keeps to the protocol: READY=1 is sent once, RELOADING=1
//! only after it. Only when `$NOTIFY_SOCKET` is set for handoff itself; the
//! proxy never sees it (`crate::process` removes it from the proxy's
//! environment). Sending is best effort: a failure is logged once, never
//! fatal.

use std::{ffi::OsString, time::Duration};

use crate::{host, platform};

/// The notifier; a no-op without `$NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<OsString>,
    ready_sent: bool,
    failed: bool,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`.
    pub fn from_env() -> Notifier {
        Notifier {
            socket: std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()),
            ready_sent: false,
            failed: false,
        }
    }

    fn send(&mut self, message: &str) {
        let Some(socket) = &self.socket else { return };
        match platform::sd_notify(socket, message) {
            Ok(()) => tracing::debug!(message = %message.replace('\n', " "), "sd_notify"),
            Err(error) if !self.failed => {
                self.failed = true;
                tracing::warn!(%error, "cannot notify systemd");
            }
            Err(_) => {}
        }
    }

    /// The proxy is healthy for the first time.
    pub fn ready(&mut self) {
        if !self.ready_sent {
            self.ready_sent = true;
            self.send("READY=1\nSTATUS=proxy healthy");
        }
    }

    /// A reload begins.
    pub fn reloading(&mut self) {
        if self.ready_sent {
            // CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it
            // (sd_notify(3)).
            let usec = host::monotonic().as_micros();
            self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
        }
    }

    /// The reload ended: confirmed, or failed with the old config still
    /// serving.
    pub fn reload_passed(&mut self) {
        if self.ready_sent {
            self.send("READY=1");
        }
    }

    /// The stop sequence began; it may take up to `budget`.
    pub fn stopping(&mut self, budget: Duration) {
        let usec = budget.as_micros();
        self.send(&format!("STOPPING=1\nEXTEND_TIMEOUT_USEC={usec}\nSTATUS=moving the floating IP, then stopping the proxy"));
    }
}
