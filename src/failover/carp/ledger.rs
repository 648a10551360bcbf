//! The CARP ledger: the crash-safe record of our share of a group's demote
//! counter.
//!
//! The counter is relative and shared (`/etc/rc` adds 128 to group `carp`
//! during boot, pfsync 32 during bulk sync), so our share can never be read
//! back from the kernel; it must be remembered. Every change goes:
//! 1. read the group counter;
//! 2. record the intent `{from, to, counter_before}` durably;
//! 3. run `ifconfig -g <group> [-]carpdemote N`;
//! 4. record the new share durably.
//!
//! A handoff killed at any point finds one of three records on restart: no
//! intent (the share is what it says), or an intent whose outcome the counter
//! tells: `counter_before + (to - from)` means the change was applied,
//! `counter_before` means it was not. A record from an earlier boot counts
//! as share 0: the kernel's counters started from scratch.

use std::fmt::Write as _;

use serde::Deserialize;

/// The file in the state directory.
pub const FILE: &str = "carp-ledger.toml";

/// What the ledger file holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The boot this record belongs to (`crate::state::boot_id`).
    pub boot: String,
    /// The interface group whose counter holds our share.
    pub group: String,
    /// Our share as last confirmed.
    pub share: u8,
    /// A change that was started and not confirmed.
    pub pending: Option<Pending>,
}

/// A change of our share, recorded before `ifconfig` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// Share before.
    pub from: u8,
    /// Share after.
    pub to: u8,
    /// The group counter read just before the change.
    pub counter_before: u8,
}

/// How a pending change turned out, judged from the counter now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The counter moved by exactly the change: it was applied.
    Applied,
    /// The counter did not move: it was not applied.
    NotApplied,
    /// The counter moved by something else (another owner changed it too):
    /// taken as applied, the side that never removes someone else's share
    /// (undoing a share we never added would).
    Ambiguous,
}

impl Pending {
    /// Judges this change from the group counter now.
    pub fn outcome(&self, counter_now: u8) -> Outcome {
        let moved = i16::from(counter_now) - i16::from(self.counter_before);
        let change = i16::from(self.to) - i16::from(self.from);
        if moved == change {
            Outcome::Applied
        } else if moved == 0 {
            Outcome::NotApplied
        } else {
            Outcome::Ambiguous
        }
    }

    /// Our share given `outcome`.
    pub fn share(&self, outcome: Outcome) -> u8 {
        match outcome {
            Outcome::Applied | Outcome::Ambiguous => self.to,
            Outcome::NotApplied => self.from,
        }
    }
}

impl Record {
    /// Parses a ledger file; a file that does not parse is an error, never
    /// silently "share 0" (that could leak a demotion forever).
    pub fn parse(text: &str) -> Result<Record, String> {
        toml::from_str(text).map_err(|e| format!("{FILE} is damaged: {}", e.message()))
    }

    /// The file's content.
    pub fn render(&self) -> String {
        let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let mut out = format!(
            "boot = {}\ngroup = {}\nshare = {}\n",
            quote(&self.boot),
            quote(&self.group),
            self.share
        );
        if let Some(p) = self.pending {
            let _ = write!(
                out,
                "\n[pending]\nfrom = {}\nto = {}\ncounter_before = {}\n",
                p.from, p.to, p.counter_before
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_from_the_counter() {
        // (from, to, before, now, outcome, share)
        let table = [
            (0, 50, 128, 178, Outcome::Applied, 50),
            (0, 50, 128, 128, Outcome::NotApplied, 0),
            (0, 50, 128, 210, Outcome::Ambiguous, 50), // pfsync added 32 meanwhile
            (50, 0, 178, 128, Outcome::Applied, 0),
            (50, 0, 178, 178, Outcome::NotApplied, 50),
            (50, 0, 178, 96, Outcome::Ambiguous, 0),
            (0, 50, 0, 50, Outcome::Applied, 50),
        ];
        for (from, to, before, now, outcome, share) in table {
            let p = Pending {
                from,
                to,
                counter_before: before,
            };
            assert_eq!(p.outcome(now), outcome, "{p:?} now {now}");
            assert_eq!(p.share(p.outcome(now)), share, "{p:?} now {now}");
        }
    }

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let r = Record {
            boot: "b1".into(),
            group: "edge".into(),
            share: 0,
            pending: Some(Pending {
                from: 0,
                to: 50,
                counter_before: 128,
            }),
        };
        assert_eq!(Record::parse(&r.render()).unwrap(), r);
        let settled = Record {
            pending: None,
            share: 50,
            ..r
        };
        assert_eq!(Record::parse(&settled.render()).unwrap(), settled);
        assert!(Record::parse("boot = \"b1\"\ngroup = \"edge\"\nshare = 300\n").is_err());
        assert!(Record::parse("garbage").unwrap_err().contains("damaged"));
    }
}
