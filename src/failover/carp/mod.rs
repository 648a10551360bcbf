//! OpenBSD CARP (`backend = "carp"`): our share of an interface group's demote
//! counter, driven through ifconfig(8).
//!
//! `up` is share 0; `standby` and `down` are share `demote_by` (CARP has no
//! "still a candidate" below master: a demoted node is simply worse). The
//! counter is shared with /etc/rc and pfsync, so handoff only ever adds and
//! removes its own share, never sets or resets the counter, and remembers the
//! share in the crash-safe [`ledger`], keyed to this boot by a [`boot`]
//! marker (a reboot restarts the kernel's counters). The role comes from the
//! carp interfaces' state ([`output`]). ifconfig is a tool, not an OS API, so this
//! module is portable and tested on Linux against a simulated ifconfig.
//!
//! On OpenBSD the routing socket's RTM_IFINFO for a watched interface (its
//! link state follows its CARP state) makes the worker ask ifconfig at once
//! (`crate::platform::watch_carp_links`); the poll stays as the safety net.

pub mod boot;
pub mod ledger;
pub mod output;

use std::{sync::Arc, time::Duration};

use ledger::{Boot, Outcome, Pending, Record};

use super::{Failover, FailoverError, Hint, Level, Role, Watch};
use crate::{
    config::CarpConfig,
    platform,
    process::{Children, ProcessEnd, run_command},
    state::StateDir,
};

/// Role polling while waiting for a move: CARP moves within one
/// advertisement round trip (advbase 1 s by default).
const FAST_POLL: Duration = Duration::from_millis(50);
/// Role polling otherwise: the safety net under the link state events.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// What a link state event is called in the log (`seen_by`).
const LINK_EVENT: Hint = Hint("routing socket");
/// ifconfig answers in milliseconds; a hung one must not hold anything.
const IFCONFIG_TIMEOUT: Duration = Duration::from_secs(5);

/// The CARP backend.
#[derive(Debug)]
pub struct CarpBackend {
    config: CarpConfig,
    children: Children,
    state: Arc<StateDir>,
    record: Record,
    /// The group's demote counter as last read, for `handoff status`.
    last_counter: Option<u8>,
}

impl CarpBackend {
    /// Opens the backend: reads the ledger and settles what a crash left
    /// behind, before anything else touches the counter. `boot` is this
    /// boot's id ([`boot::id`]).
    pub async fn open(
        config: CarpConfig,
        children: Children,
        state: Arc<StateDir>,
        boot: String,
    ) -> Result<CarpBackend, FailoverError> {
        let fresh = Record {
            boot: boot.clone(),
            uptime: None,
            group: config.group.clone(),
            share: 0,
            pending: None,
        };
        let mut backend = CarpBackend {
            config,
            children,
            state,
            record: fresh.clone(),
            last_counter: None,
        };
        if let Some(text) = backend.state.read(ledger::FILE)? {
            let old = Record::parse(&text).map_err(|e| {
                FailoverError::Ledger(format!(
                    "{e}; check the group's counter by hand (ifconfig -g GROUP) and remove {}",
                    backend.state.path().join(ledger::FILE).display()
                ))
            })?;
            let verdict = old.boot_of(&boot, uptime());
            if verdict == Boot::This {
                backend.record = old;
                backend.settle_pending().await?;
                if backend.record.group != backend.config.group {
                    tracing::warn!(old = %backend.record.group, new = %backend.config.group, share = backend.record.share,
                        "the configured group changed: taking our share off the old group");
                    backend.change_share(0).await?;
                    backend.record = fresh;
                }
            } else if let Boot::MarkerSurvived { then, now } = verdict {
                tracing::warn!(group = %old.group, share = old.share, marker = %backend.config.boot_marker.display(),
                    uptime_then = then, uptime_now = now,
                    "ledger is from an earlier boot although the boot marker is the same (the uptime went back): \
                     the marker must be in a directory every boot empties; our share counts as 0");
            } else {
                tracing::info!(group = %old.group, share = old.share,
                    "ledger is from an earlier boot: the kernel's counters started over, our share counts as 0");
            }
        }
        backend.save()?;
        tracing::info!(group = %backend.record.group, share = backend.record.share, "carp ledger");
        Ok(backend)
    }

    /// Writes the ledger, stamped with the uptime now.
    fn save(&mut self) -> Result<(), FailoverError> {
        self.record.uptime = uptime();
        Ok(self.state.write(ledger::FILE, &self.record.render())?)
    }

    /// Judges a pending change from the counter and records the result.
    async fn settle_pending(&mut self) -> Result<(), FailoverError> {
        let Some(pending) = self.record.pending else {
            return Ok(());
        };
        let counter = self.counter().await?;
        let outcome = pending.outcome(counter);
        let share = pending.share(outcome);
        if outcome == Outcome::Ambiguous {
            tracing::warn!(group = %self.record.group, ?pending, counter, share,
                "group counter moved by more than our change: taking it as applied");
        } else {
            tracing::info!(group = %self.record.group, ?pending, counter, ?outcome, share, "settled an interrupted change");
        }
        self.record.share = share;
        self.record.pending = None;
        self.save()
    }

    /// Moves our share to `to`: intent first, then ifconfig, then the result.
    async fn change_share(&mut self, to: u8) -> Result<(), FailoverError> {
        let from = self.record.share;
        if from == to {
            return Ok(());
        }
        let counter_before = self.counter().await?;
        self.record.pending = Some(Pending {
            from,
            to,
            counter_before,
        });
        self.save()?;
        let (op, by) = if to > from {
            ("carpdemote", to - from)
        } else {
            ("-carpdemote", from - to)
        };
        let group = self.record.group.clone();
        match self.ifconfig(&["-g", &group, op, &by.to_string()]).await {
            Ok(_) => {
                self.record.share = to;
                self.record.pending = None;
                self.save()
            }
            Err(error) => {
                // A timed-out ifconfig may or may not have acted: the counter
                // tells. If it cannot be read either, the intent stays recorded
                // and the next attempt (or restart) settles it.
                let _ = self.settle_pending().await;
                Err(match error {
                    FailoverError::Failed { stderr, .. } if stderr.contains("SIOCSIFGATTR") => {
                        FailoverError::Range {
                            group,
                            counter: counter_before,
                            change: i16::from(to) - i16::from(from),
                        }
                    }
                    other => other,
                })
            }
        }
    }

    async fn counter(&mut self) -> Result<u8, FailoverError> {
        let group = &self.record.group;
        let stdout = self.ifconfig(&["-g", group]).await?;
        let counter = output::demote_count(group, &stdout)?;
        self.last_counter = Some(counter);
        Ok(counter)
    }

    /// Runs ifconfig; its stdout, or why it failed.
    async fn ifconfig(&self, args: &[&str]) -> Result<String, FailoverError> {
        let program = self.config.ifconfig.to_string_lossy();
        let out = run_command(&self.children, &program, args, IFCONFIG_TIMEOUT).await?;
        if out.end == ProcessEnd::Exited(0) {
            return Ok(out.stdout);
        }
        Err(FailoverError::failed(
            format!("{program} {}", args.join(" ")),
            &out,
        ))
    }
}

/// Seconds since boot, for the ledger's second check; `None` if the clock
/// cannot be read (the boot marker alone then decides).
fn uptime() -> Option<u64> {
    crate::platform::uptime().ok().map(|d| d.as_secs())
}

impl Failover for CarpBackend {
    fn name(&self) -> &'static str {
        "carp"
    }

    async fn set_level(&mut self, level: Level) -> Result<(), FailoverError> {
        self.settle_pending().await?;
        let share = if level == Level::Up {
            0
        } else {
            self.config.demote_by.0
        };
        self.change_share(share).await
    }

    /// MASTER if any watched interface is MASTER, else BACKUP if any is,
    /// else FAULT.
    async fn role(&mut self) -> Result<Role, FailoverError> {
        let mut roles = Vec::with_capacity(self.config.interfaces.len());
        for interface in &self.config.interfaces {
            let stdout = self.ifconfig(&[interface]).await?;
            roles.push(output::interface(&stdout)?.role());
        }
        Ok([Role::Master, Role::Backup]
            .into_iter()
            .find(|r| roles.contains(r))
            .unwrap_or(Role::Fault))
    }

    fn poll_interval(&self, watch: Watch) -> Option<Duration> {
        Some(watch.pick(IDLE_POLL, FAST_POLL))
    }

    /// The watched interfaces' link state changes, where the OS has them.
    fn hints(&mut self) -> Option<tokio::sync::mpsc::Receiver<Hint>> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let watching = platform::watch_carp_links(self.config.interfaces.clone(), move || {
            // Full means a poll is already due: nothing lost.
            let _ = tx.try_send(LINK_EVENT);
            !tx.is_closed()
        });
        match watching {
            Ok(()) => Some(rx),
            Err(error) if error.kind() == std::io::ErrorKind::Unsupported => None,
            Err(error) => {
                tracing::warn!(%error, poll = ?IDLE_POLL, "cannot watch the carp link states: the interfaces are polled only");
                None
            }
        }
    }

    fn details(&self) -> serde_json::Value {
        serde_json::json!({
            "group": self.record.group,
            "interfaces": self.config.interfaces,
            "demote_by": self.config.demote_by.0,
            "share": self.record.share,
            "counter": self.last_counter,
        })
    }
}
