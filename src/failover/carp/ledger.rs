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
//!
//! Which boot a record is from is told by the boot marker's id ([`super::boot`])
//! and, as a second check, by the uptime at its last write: within one boot
//! the uptime only grows, so a lower one now proves a reboot even if the
//! marker somehow survived it. Both mistakes matter: a record of this boot
//! taken for an earlier one adds our share a second time (leaked until the
//! next reboot), and a record of an earlier boot taken for this one says our
//! share is applied on a fresh counter that does not hold it (the node is
//! promotable with no proxy).

use std::fmt::Write as _;

use serde::Deserialize;

/// The file in the state directory.
pub const FILE: &str = "carp-ledger.toml";

/// What the ledger file holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The boot this record belongs to: the boot marker's id ([`super::boot`]).
    pub boot: String,
    /// Seconds since boot at the last write (CLOCK_BOOTTIME). Absent in
    /// records written before it was kept.
    pub uptime: Option<u64>,
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

/// Which boot a record is from, judged against this boot's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// This boot: the record's share is on the counter.
    This,
    /// An earlier boot (another marker id): the share counts as 0.
    Earlier,
    /// The same marker id, but the uptime went back since the record's last
    /// write: a reboot the marker survived. The share counts as 0.
    MarkerSurvived {
        /// Uptime at the record's last write, in seconds.
        then: u64,
        /// Uptime now.
        now: u64,
    },
}

impl Record {
    /// Which boot this record is from, given this boot's marker id and the
    /// uptime now (`None` when either uptime is unknown: the id alone decides).
    pub fn boot_of(&self, boot: &str, uptime_now: Option<u64>) -> Boot {
        if self.boot != boot {
            return Boot::Earlier;
        }
        match (self.uptime, uptime_now) {
            (Some(then), Some(now)) if now < then => Boot::MarkerSurvived { then, now },
            _ => Boot::This,
        }
    }

    /// Parses a ledger file; a file that does not parse is an error, never
    /// silently "share 0" (that could leak a demotion forever).
    pub fn parse(text: &str) -> Result<Record, String> {
        toml::from_str(text).map_err(|e| format!("{FILE} is damaged: {}", e.message()))
    }

    /// The file's content.
    pub fn render(&self) -> String {
        let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let mut out = format!("boot = {}\n", quote(&self.boot));
        if let Some(uptime) = self.uptime {
            let _ = writeln!(out, "uptime = {uptime}");
        }
        let _ = write!(
            out,
            "group = {}\nshare = {}\n",
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
    fn the_boot_is_told_by_the_marker_and_a_falling_uptime() {
        let record = |uptime| Record {
            boot: "b1".into(),
            uptime,
            group: "edge".into(),
            share: 50,
            pending: None,
        };
        // (record's uptime, boot now, uptime now, verdict)
        let table = [
            (Some(100), "b1", Some(100), Boot::This),
            (Some(100), "b1", Some(5000), Boot::This), // a clock step changes neither
            (None, "b1", Some(5), Boot::This),
            (Some(100), "b1", None, Boot::This),
            (Some(100), "b2", Some(5000), Boot::Earlier), // rebooted, started later
            (Some(100), "b2", Some(5), Boot::Earlier),
            (None, "b2", None, Boot::Earlier),
            (
                Some(100),
                "b1",
                Some(5),
                Boot::MarkerSurvived { then: 100, now: 5 },
            ),
        ];
        for (then, boot, now, verdict) in table {
            assert_eq!(
                record(then).boot_of(boot, now),
                verdict,
                "{then:?} {boot} {now:?}"
            );
        }
    }

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let r = Record {
            boot: "b1".into(),
            uptime: Some(3600),
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
        // Records written before the uptime was kept still parse.
        let old = Record::parse("boot = \"b1\"\ngroup = \"edge\"\nshare = 50\n").unwrap();
        assert_eq!(old.uptime, None);
        assert_eq!(Record::parse(&old.render()).unwrap(), old);
        assert!(Record::parse("boot = \"b1\"\ngroup = \"edge\"\nshare = 300\n").is_err());
        assert!(Record::parse("garbage").unwrap_err().contains("damaged"));
    }
}
