//! Signal names in the config: `SIGTERM`, `TERM` or `15` (also a bare TOML
//! integer), and `drop` where a signal may be swallowed.

use std::{fmt, str::FromStr};

use nix::sys::signal::Signal;
use serde::{Deserialize, Deserializer, de};

/// A signal given in the config, parsed into the platform's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalName(pub Signal);

const EXPECTED: &str = "a signal such as \"SIGTERM\", \"TERM\" or 15";

impl FromStr for SignalName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        if let Ok(number) = trimmed.parse::<i32>() {
            return Signal::try_from(number)
                .map(SignalName)
                .map_err(|_| format!("{number} is not a signal number on this system"));
        }
        let upper = trimmed.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Signal::from_str(&full)
            .map(SignalName)
            .map_err(|_| format!("unknown signal `{trimmed}`, expected {EXPECTED}"))
    }
}

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

struct SignalVisitor;

impl de::Visitor<'_> for SignalVisitor {
    type Value = SignalName;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<SignalName, E> {
        text.parse().map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<SignalName, E> {
        number.to_string().parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for SignalName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SignalVisitor)
    }
}

/// What handoff's own SIGHUP becomes: a signal for the proxy, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Forward as this signal.
    Send(Signal),
    /// Swallow it (proxies that die on SIGHUP, or reload another way).
    Drop,
}

impl<'de> Deserialize<'de> for Reload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ReloadVisitor;
        impl de::Visitor<'_> for ReloadVisitor {
            type Value = Reload;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{EXPECTED}, or \"drop\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Reload, E> {
                if text.eq_ignore_ascii_case("drop") {
                    return Ok(Reload::Drop);
                }
                text.parse::<SignalName>()
                    .map(|s| Reload::Send(s.0))
                    .map_err(|e| E::custom(format!("{e}, or \"drop\"")))
            }
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Reload, E> {
                SignalVisitor.visit_i64(number).map(|s| Reload::Send(s.0))
            }
        }
        deserializer.deserialize_any(ReloadVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_spellings_of_one_signal() {
        for text in ["SIGTERM", "TERM", "15", "term", " SIGTERM "] {
            assert_eq!(
                text.parse::<SignalName>(),
                Ok(SignalName(Signal::SIGTERM)),
                "{text}"
            );
        }
    }

    #[test]
    fn unknown_names_and_numbers_are_rejected() {
        assert!(
            "SIGNOPE"
                .parse::<SignalName>()
                .unwrap_err()
                .contains("unknown signal")
        );
        assert!("0".parse::<SignalName>().is_err());
        assert!("99".parse::<SignalName>().is_err());
    }
}
