//! The control protocol, shared by the agent and the CLI: one JSON request
//! line and one JSON response line per connection, each carrying the protocol
//! version, so a CLI and an agent of different versions fail clearly instead
//! of misreading each other.

use serde::{Deserialize, Serialize};

use crate::{maintenance::Reason, status::Status};

/// Bumped on any incompatible change.
pub const VERSION: u32 = 1;
/// Longest request the agent reads; anything longer is refused.
pub const MAX_REQUEST: usize = 64 * 1024;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// [`VERSION`] of the client.
    pub version: u32,
    /// The command.
    pub command: Command,
}

/// Commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase", deny_unknown_fields)]
pub enum Command {
    /// Report the agent's state.
    Status,
    /// Enter (or stay in) maintenance: hold the node at standby.
    Demote {
        /// Why, for status and Consul; `None` keeps the current reason. A
        /// request whose reason is not one (too long, a control character)
        /// is refused with an error naming the reason.
        #[serde(default, deserialize_with = "Reason::deserialize_strict")]
        reason: Option<Reason>,
    },
    /// Leave maintenance.
    Promote,
    /// Check, send and confirm a reload of the proxy; answered once it
    /// ended.
    Reload,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    /// [`VERSION`] of the agent.
    pub version: u32,
    /// `None` on success; what went wrong otherwise.
    pub error: Option<String>,
    /// The agent's status after the command.
    pub status: Option<Status>,
    /// A confirmed reload (`reload` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadDone>,
}

/// A confirmed reload, as `handoff reload` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadDone {
    /// From its beginning (the check) to its confirmation.
    pub took_ms: u64,
    /// What confirmed it (`reload_confirm`'s names), in order; empty when
    /// being sent was all.
    pub confirmed_by: Vec<String>,
}

impl Response {
    /// A success answer.
    pub fn ok(status: Status) -> Response {
        Response {
            version: VERSION,
            error: None,
            status: Some(status),
            reload: None,
        }
    }

    /// A confirmed reload.
    pub fn reloaded(done: ReloadDone) -> Response {
        Response {
            version: VERSION,
            error: None,
            status: None,
            reload: Some(done),
        }
    }

    /// A failure answer.
    pub fn error(message: impl Into<String>) -> Response {
        Response {
            version: VERSION,
            error: Some(message.into()),
            status: None,
            reload: None,
        }
    }
}

/// Parses one request line; the error says what was wrong, for the client.
pub fn parse_request(line: &str) -> Result<Request, String> {
    let request: Request =
        serde_json::from_str(line.trim_end()).map_err(|e| format!("malformed request: {e}"))?;
    if request.version != VERSION {
        return Err(format!(
            "protocol version {} is not supported (the agent speaks {VERSION})",
            request.version
        ));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a client sends, the parser answers Ok or Err, never panics,
        /// and anything it accepts is a request of this version.
        #[test]
        fn arbitrary_lines_never_panic(line in ".{0,300}") {
            if let Ok(r) = parse_request(&line) {
                prop_assert_eq!(r.version, VERSION);
            }
        }

        /// Bytes shaped like JSON requests, with fields mutated.
        #[test]
        fn near_miss_requests_never_panic(
            version in any::<i64>(),
            name in "[a-z]{0,8}",
            reason in proptest::option::of(".{0,40}"),
            extra in proptest::option::of("[a-z]{1,5}"),
        ) {
            let mut command = serde_json::json!({ "name": name });
            if let Some(reason) = reason {
                command["reason"] = reason.into();
            }
            let mut request = serde_json::json!({ "version": version, "command": command });
            if let Some(extra) = extra {
                request[extra] = 1.into();
            }
            let _ = parse_request(&request.to_string());
        }

        /// Every request a client can build is read back as itself, and a
        /// reason that is not one never gets through.
        #[test]
        fn requests_round_trip(text in proptest::option::of(".{0,300}"), which in 0..4u8) {
            let line = serde_json::json!({
                "version": VERSION,
                "command": { "name": "demote", "reason": text },
            })
            .to_string();
            let parsed = parse_request(&line);
            match text.as_deref().map(Reason::parse) {
                Some(Err(_)) => prop_assert!(parsed.unwrap_err().contains("the reason")),
                _ => prop_assert!(parsed.is_ok()),
            }
            let reason = text.as_deref().and_then(|t| Reason::parse(t).ok());
            let command = match which {
                0 => Command::Status,
                1 => Command::Demote { reason },
                2 => Command::Promote,
                _ => Command::Reload,
            };
            let request = Request { version: VERSION, command };
            let line = serde_json::to_string(&request).unwrap();
            prop_assert!(!line.contains('\n'), "one line");
            prop_assert_eq!(parse_request(&line).unwrap(), request);
        }
    }

    #[test]
    fn requests_round_trip_and_bad_ones_say_why() {
        let r = Request {
            version: VERSION,
            command: Command::Status,
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(line, r#"{"version":1,"command":{"name":"status"}}"#);
        assert_eq!(parse_request(&line).unwrap(), r);
        assert!(parse_request("{").unwrap_err().contains("malformed"));
        assert!(
            parse_request(r#"{"version":1,"command":{"name":"reboot"}}"#)
                .unwrap_err()
                .contains("unknown variant")
        );
        assert!(
            parse_request(r#"{"version":9,"command":{"name":"status"}}"#)
                .unwrap_err()
                .contains("version 9")
        );
        assert!(parse_request(r#"{"version":1,"command":{"name":"status"},"x":1}"#).is_err());
        let demote = parse_request(r#"{"version":1,"command":{"name":"demote","reason":"disk"}}"#);
        assert_eq!(
            demote.unwrap().command,
            Command::Demote {
                reason: Some(Reason::parse("disk").unwrap())
            }
        );
        assert_eq!(
            parse_request(r#"{"version":1,"command":{"name":"demote"}}"#)
                .unwrap()
                .command,
            Command::Demote { reason: None },
            "no reason keeps the current one"
        );
        let refused = parse_request(r#"{"version":1,"command":{"name":"demote","reason":"a\nb"}}"#)
            .unwrap_err();
        assert!(
            refused.contains("the reason contains a control character (U+000A)"),
            "{refused}"
        );
        assert!(
            parse_request(r#"{"version":1,"command":{"name":"demote","reason":"d","uid":0}}"#)
                .is_err(),
            "the uid comes from the socket, never from the request"
        );
    }
}
