//! Maintenance: an operator's "hold this node at standby", persisted in the
//! state dir as `maintenance.toml` so it survives restarts and reboots.
//!
//! Owns the record's format and its writes, and what a reason may be
//! ([`Reason`]). `handoff run` honours a record found at start (a healthy
//! proxy then means `standby`, not `up`); `handoff demote` and `promote`
//! write and remove it, through the agent's control socket or, with no
//! agent, directly under the state dir's lock.
//!
//! A reason is shown in the text status, the `/healthz` body, Consul's
//! check output and Meta, and the logs, so it is one line of printable text
//! of at most [`Reason::MAX`] bytes: the CLI's `--reason`, the control
//! socket's request and the agent-less demote all take a [`Reason`], which
//! only [`Reason::parse`] makes from outside input. A record written by an
//! older handoff may hold any reason: it is still in force (a record that
//! cannot be read is never taken as "no maintenance", which would promote
//! a node an operator took out of service), and its reason is shown
//! sanitised (control characters escaped, cut to [`Reason::MAX`] bytes),
//! with a warning; the next demote that gives a reason replaces it.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Deserializer, Serialize};

use crate::state::{StateDir, StateError};

/// The file in the state directory.
pub const FILE: &str = "maintenance.toml";
/// The reason of a `handoff demote` without `--reason`.
const NO_REASON: &str = "no reason given";

/// Why a reason is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReasonError {
    /// Longer than [`Reason::MAX`] bytes.
    #[error("the reason is {0} bytes long; at most {max} are allowed", max = Reason::MAX)]
    TooLong(usize),
    /// It holds a control character (newline and tab included).
    #[error("the reason contains a control character ({0}); give one line of printable text")]
    Control(String),
}

/// An operator's reason for maintenance: at most [`Reason::MAX`] bytes, no
/// control characters (`char::is_control`: C0, DEL and C1, so no newline,
/// tab or terminal escape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Reason(String);

impl Reason {
    /// The longest reason, in bytes of UTF-8: a line in a status, a log
    /// line or a Consul check output, not a document.
    pub const MAX: usize = 256;

    /// `text` as a reason, or why it cannot be one.
    pub fn parse(text: &str) -> Result<Reason, ReasonError> {
        if text.len() > Reason::MAX {
            return Err(ReasonError::TooLong(text.len()));
        }
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            return Err(ReasonError::Control(format!("U+{:04X}", u32::from(c))));
        }
        Ok(Reason(text.to_owned()))
    }

    /// Any text made fit to show: control characters escaped as Rust
    /// writes them (`\n`, `\u{1b}`), then cut at a character boundary to
    /// [`Reason::MAX`] bytes, ending in `…` when cut.
    pub fn sanitised(text: &str) -> Reason {
        let mut escaped = String::new();
        for c in text.chars() {
            if c.is_control() {
                escaped.extend(c.escape_debug());
            } else {
                escaped.push(c);
            }
            if escaped.len() > Reason::MAX {
                break;
            }
        }
        if escaped.len() > Reason::MAX {
            const MORE: char = '…';
            let mut end = Reason::MAX - MORE.len_utf8();
            while !escaped.is_char_boundary(end) {
                end -= 1;
            }
            escaped.truncate(end);
            escaped.push(MORE);
        }
        Reason(escaped)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A reason as a request or the CLI gives it: [`Reason::parse`].
    pub fn deserialize_strict<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Reason>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|t| Reason::parse(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl std::ops::Deref for Reason {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Read back (a status from the agent, a record on disk), a reason is shown,
/// never refused: whatever it holds comes out [`Reason::sanitised`].
impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Reason::parse(&text).unwrap_or_else(|_| Reason::sanitised(&text)))
    }
}

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
    /// From `handoff demote --reason`.
    pub reason: Reason,
    /// The uid that asked.
    pub uid: u32,
    /// When, in seconds since the Unix epoch.
    pub since: u64,
}

impl Maintenance {
    /// Parses the record read from `path`. A reason no current handoff
    /// would write (an older one's) is kept sanitised, with a warning.
    fn parse(path: &Path, text: &str) -> Result<Maintenance, RecordError> {
        /// The record as written, whatever its reason holds.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Written {
            reason: String,
            uid: u32,
            since: u64,
        }
        let written: Written = toml::from_str(text).map_err(|e| RecordError::Damaged {
            path: path.to_path_buf(),
            message: e.message().trim_end().to_owned(),
        })?;
        let reason = Reason::parse(&written.reason).unwrap_or_else(|error| {
            tracing::warn!(
                path = %path.display(),
                %error,
                "the maintenance record's reason (an older handoff's) is shown sanitised; maintenance stays in force"
            );
            Reason::sanitised(&written.reason)
        });
        Ok(Maintenance {
            reason,
            uid: written.uid,
            since: written.since,
        })
    }

    /// The file's content.
    pub fn render(&self) -> String {
        let reason = toml::Value::String(self.reason.as_str().to_owned()).to_string();
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
        reason: Option<&Reason>,
        uid: u32,
        now: u64,
    ) -> Result<Maintenance, RecordError> {
        let record = match Maintenance::load(state.path())? {
            Some(old) => Maintenance {
                reason: reason.cloned().unwrap_or(old.reason),
                ..old
            },
            None => Maintenance {
                reason: reason
                    .cloned()
                    .unwrap_or_else(|| Reason(NO_REASON.to_owned())),
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
            reason: Reason::parse("disk \"swap\" bay 3 'é'").unwrap(),
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
        assert_eq!(first.reason.as_str(), NO_REASON);
        let second = Maintenance::set(
            &state,
            Some(&Reason::parse("disk swap").unwrap()),
            1000,
            200,
        )
        .unwrap();
        assert_eq!((second.uid, second.since), (0, 100));
        assert_eq!(second.reason.as_str(), "disk swap");
        let third = Maintenance::set(&state, None, 0, 300).unwrap();
        assert_eq!(
            third.reason.as_str(),
            "disk swap",
            "no --reason keeps the old one"
        );
        assert_eq!(Maintenance::clear(&state).unwrap(), Some(third));
        assert_eq!(Maintenance::clear(&state).unwrap(), None, "idempotent");
        assert_eq!(Maintenance::load(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_reason_is_one_printable_line_of_at_most_256_bytes() {
        assert!(Reason::parse("").is_ok());
        assert!(Reason::parse(&"é".repeat(128)).is_ok(), "256 bytes");
        assert_eq!(
            Reason::parse(&"x".repeat(257)),
            Err(ReasonError::TooLong(257))
        );
        for (text, code) in [
            ("a\nb", "U+000A"),
            ("a\rb", "U+000D"),
            ("\ttab", "U+0009"),
            ("\u{1b}[2J", "U+001B"),
            ("del\u{7f}", "U+007F"),
            ("c1\u{9b}", "U+009B"),
        ] {
            let error = Reason::parse(text).unwrap_err();
            assert_eq!(error, ReasonError::Control(code.into()), "{text:?}");
            assert!(
                error
                    .to_string()
                    .contains("the reason contains a control character")
            );
        }
        let error = Reason::parse(&"x".repeat(300)).unwrap_err().to_string();
        assert!(error.contains("at most 256"), "{error}");
    }

    #[test]
    fn sanitising_escapes_control_characters_and_cuts_at_a_character() {
        assert_eq!(
            Reason::sanitised("disk\nswap\u{1b}").as_str(),
            "disk\\nswap\\u{1b}"
        );
        let long = Reason::sanitised(&format!("a{}", "é".repeat(1000)));
        assert!(long.len() <= Reason::MAX, "{}", long.len());
        assert!(long.ends_with('…'));
        assert!(
            Reason::parse(&long).is_ok(),
            "a sanitised reason is a reason"
        );
        let escapes = Reason::sanitised(&"\n".repeat(500));
        assert!(escapes.len() <= Reason::MAX && Reason::parse(&escapes).is_ok());
        assert_eq!(Reason::sanitised("fine").as_str(), "fine");
    }

    #[test]
    fn an_old_record_with_a_bad_reason_is_in_force_and_sanitised() {
        let dir = tempfile::tempdir().unwrap();
        let bad = format!("disk\nswap{}", "z".repeat(70_000));
        std::fs::write(
            dir.path().join(FILE),
            format!(
                "reason = {}\nuid = 7\nsince = 5\n",
                toml::Value::String(bad)
            ),
        )
        .unwrap();
        let record = Maintenance::load(dir.path()).unwrap().expect("in force");
        assert_eq!((record.uid, record.since), (7, 5));
        assert!(
            record.reason.starts_with("disk\\nswapzzz"),
            "{}",
            record.reason
        );
        assert!(record.reason.len() <= Reason::MAX);
        // A status read back (the CLI reads the agent's) is shown the same way.
        let json = r#"{"reason":"a\nb","uid":0,"since":1}"#;
        let shown: Maintenance = serde_json::from_str(json).unwrap();
        assert_eq!(shown.reason.as_str(), "a\\nb");
    }
}
