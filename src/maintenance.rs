//! Maintenance: an operator's "hold this node at standby", persisted in the
//! state dir as `maintenance.toml` so it survives restarts and reboots.
//!
//! Owns the record's format and its writes. `handoff run` honours a record
//! found at start (a healthy proxy then means `standby`, not `up`); `handoff
//! demote` and `promote` write and remove it, through the agent's control
//! socket or, with no agent, directly under the state dir's lock.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::{StateDir, StateError};

/// The file in the state directory.
pub const FILE: &str = "maintenance.toml";
/// The reason of a `handoff demote` without `--reason`.
const NO_REASON: &str = "no reason given";

/// The record cannot be read, or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file is there but is not a record; never taken as "no
    /// maintenance" (that would promote a node an operator took out of
    /// service).
    #[error("{}: {FILE} is damaged: {message}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing or removing it failed.
    #[error(transparent)]
    Write(#[from] StateError),
}

/// Who put the node into maintenance, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// Free text from `handoff demote --reason`.
    pub reason: String,
    /// The uid that asked.
    pub uid: u32,
    /// When, in seconds since the Unix epoch.
    pub since: u64,
}

impl Maintenance {
    /// Parses the record read from `path`.
    fn parse(path: &Path, text: &str) -> Result<Maintenance, RecordError> {
        toml::from_str(text).map_err(|e| RecordError::Damaged {
            path: path.to_path_buf(),
            message: e.message().trim_end().to_owned(),
        })
    }

    /// The file's content.
    pub fn render(&self) -> String {
        let reason = toml::Value::String(self.reason.clone()).to_string();
        format!(
            "reason = {reason}\nuid = {}\nsince = {}\n",
            self.uid, self.since
        )
    }

    /// Puts the node into maintenance, or updates the reason when one is
    /// given: a repeated demote keeps the first one's time and uid, so
    /// "since" stays true.
    pub fn set(
        state: &StateDir,
        reason: Option<&str>,
        uid: u32,
        now: u64,
    ) -> Result<Maintenance, RecordError> {
        let record = match Maintenance::load(state.path())? {
            Some(old) => Maintenance {
                reason: reason.map_or(old.reason, str::to_owned),
                ..old
            },
            None => Maintenance {
                reason: reason.unwrap_or(NO_REASON).to_owned(),
                uid,
                since: now,
            },
        };
        state.write(FILE, &record.render())?;
        Ok(record)
    }

    /// Ends maintenance; returns the record that was in place, if any.
    pub fn clear(state: &StateDir) -> Result<Option<Maintenance>, RecordError> {
        let old = Maintenance::load(state.path())?;
        state.remove(FILE)?;
        Ok(old)
    }

    /// Reads the record in `state_dir`; a missing directory or file means none.
    pub fn load(state_dir: &Path) -> Result<Option<Maintenance>, RecordError> {
        let path = state_dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Maintenance::parse(&path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RecordError::Unreadable { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let m = Maintenance {
            reason: "disk \"swap\"\nbay 3".into(),
            uid: 0,
            since: 1_795_000_000,
        };
        let path = Path::new(FILE);
        assert_eq!(Maintenance::parse(path, &m.render()).unwrap(), m);
        assert!(
            Maintenance::parse(path, "reason = 1")
                .unwrap_err()
                .to_string()
                .contains("damaged")
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Maintenance::load(&dir.path().join("missing")).unwrap(),
            None
        );
        std::fs::write(dir.path().join(FILE), "garbage").unwrap();
        assert!(
            Maintenance::load(dir.path())
                .unwrap_err()
                .to_string()
                .contains("/maintenance.toml: maintenance.toml is damaged: ")
        );
    }

    #[test]
    fn a_repeated_demote_keeps_since_and_uid() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let first = Maintenance::set(&state, None, 0, 100).unwrap();
        assert_eq!(first.reason, NO_REASON);
        let second = Maintenance::set(&state, Some("disk swap"), 1000, 200).unwrap();
        assert_eq!((second.uid, second.since), (0, 100));
        assert_eq!(second.reason, "disk swap");
        let third = Maintenance::set(&state, None, 0, 300).unwrap();
        assert_eq!(third.reason, "disk swap", "no --reason keeps the old one");
        assert_eq!(Maintenance::clear(&state).unwrap(), Some(third));
        assert_eq!(Maintenance::clear(&state).unwrap(), None, "idempotent");
        assert_eq!(Maintenance::load(dir.path()).unwrap(), None);
    }
}
