//! BIRD 2's control socket (`bird -s`, the one birdc talks to): one
//! connection per look, any number of commands on it.
//!
//! The protocol (BIRD's doc/prog, "Command line interface"): the server
//! greets with `0001 BIRD 2.0.12 ready.`; each reply is lines that start
//! with a four-digit code and a `-` (more follows) or a space (the last
//! line), and lines that start with a space continue the previous code.
//! Codes 0xxx end a successful command, 1xxx and 2xxx carry its output,
//! 8xxx are run-time errors (`8003 No protocols match`), 9xxx parse errors.
//! Every exchange is bounded by the backend's `timeout`, and a reply by
//! [`MAX_REPLY`], so a hung or babbling BIRD costs one failed look.

use std::{io::ErrorKind, path::PathBuf, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
};

/// The most a reply may hold. handoff asks about a few protocols and
/// routes; anything longer is not an answer to one of its questions.
const MAX_REPLY: usize = 256 * 1024;

/// One line of a reply: its code, and its text without code or separator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The four-digit code (a continuation line repeats the previous one).
    pub code: u16,
    /// The text after the code and its separator.
    pub text: String,
}

/// An exchange with BIRD that failed.
#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    /// Nothing listens on the socket: BIRD is not running (so it announces
    /// nothing: its BGP sessions went down with it).
    #[error("BIRD is not running (nothing listens on {socket}: {source})")]
    NotRunning {
        /// The control socket.
        socket: PathBuf,
        /// What connect said.
        source: std::io::Error,
    },
    /// The socket could not be used for another reason (permissions).
    #[error("BIRD's control socket {socket}: {source}")]
    Io {
        /// The control socket.
        socket: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// BIRD did not answer within the timeout.
    #[error("BIRD did not answer `{command}` within {timeout:?} ({socket})")]
    Timeout {
        /// The control socket.
        socket: PathBuf,
        /// The command, or `hello` for the greeting.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// BIRD answered with an error code.
    #[error("BIRD refused `{command}`: {code} {message}")]
    Refused {
        /// The command.
        command: String,
        /// Its reply code (8xxx or 9xxx).
        code: u16,
        /// BIRD's message.
        message: String,
    },
    /// Something that is not BIRD's protocol.
    #[error("BIRD's reply to `{command}` is not its protocol: {detail}")]
    Garbled {
        /// The command.
        command: String,
        /// What was wrong.
        detail: String,
    },
}

impl BirdError {
    /// BIRD is not running: nothing of ours is announced.
    pub fn not_running(&self) -> bool {
        matches!(self, BirdError::NotRunning { .. })
    }
}

/// An open connection to BIRD's control socket.
pub struct Connection {
    stream: BufReader<UnixStream>,
    socket: PathBuf,
    timeout: Duration,
}

impl Connection {
    /// Connects and reads the greeting, within `timeout`.
    pub async fn open(socket: PathBuf, timeout: Duration) -> Result<Connection, BirdError> {
        let connect = tokio::time::timeout(timeout, UnixStream::connect(&socket)).await;
        let stream = match connect {
            Err(_) => {
                return Err(BirdError::Timeout {
                    socket,
                    command: "connect".into(),
                    timeout,
                });
            }
            // ENOENT: no socket; ECONNREFUSED: a socket left by a BIRD that
            // died (bird(8) unlinks it only on a clean exit).
            Ok(Err(source))
                if matches!(
                    source.kind(),
                    ErrorKind::NotFound | ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(BirdError::NotRunning { socket, source });
            }
            Ok(Err(source)) => return Err(BirdError::Io { socket, source }),
            Ok(Ok(stream)) => stream,
        };
        let mut connection = Connection {
            stream: BufReader::new(stream),
            socket,
            timeout,
        };
        let hello = connection.reply("hello").await?;
        match hello.first() {
            Some(line) if line.code == 1 => Ok(connection),
            _ => Err(BirdError::Garbled {
                command: "hello".into(),
                detail: format!("the greeting was {hello:?}, expected `0001 BIRD ... ready.`"),
            }),
        }
    }

    /// Sends `command` and returns its reply's lines; an error code is
    /// [`BirdError::Refused`].
    pub async fn command(&mut self, command: &str) -> Result<Vec<Line>, BirdError> {
        let write = async {
            let stream = self.stream.get_mut();
            stream.write_all(command.as_bytes()).await?;
            stream.write_all(b"\n").await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Err(_) => return Err(self.timed_out(command)),
            Ok(Err(source)) => {
                return Err(BirdError::Io {
                    socket: self.socket.clone(),
                    source,
                });
            }
            Ok(Ok(())) => {}
        }
        let lines = self.reply(command).await?;
        match lines.iter().find(|l| l.code >= 8000) {
            Some(error) => Err(BirdError::Refused {
                command: command.into(),
                code: error.code,
                message: error.text.trim().into(),
            }),
            None => Ok(lines),
        }
    }

    fn timed_out(&self, command: &str) -> BirdError {
        BirdError::Timeout {
            socket: self.socket.clone(),
            command: command.into(),
            timeout: self.timeout,
        }
    }

    /// Reads one reply, up to its last line, within the timeout.
    async fn reply(&mut self, command: &str) -> Result<Vec<Line>, BirdError> {
        let timeout = self.timeout;
        let read = read_reply(&mut self.stream, command);
        match tokio::time::timeout(timeout, read).await {
            Err(_) => Err(self.timed_out(command)),
            Ok(Err(ReadError::Io(source))) => Err(BirdError::Io {
                socket: self.socket.clone(),
                source,
            }),
            Ok(Err(ReadError::Garbled(detail))) => Err(BirdError::Garbled {
                command: command.into(),
                detail,
            }),
            Ok(Ok(lines)) => Ok(lines),
        }
    }
}

enum ReadError {
    Io(std::io::Error),
    Garbled(String),
}

async fn read_reply(
    stream: &mut BufReader<UnixStream>,
    command: &str,
) -> Result<Vec<Line>, ReadError> {
    let mut lines = Vec::new();
    let mut size = 0;
    let mut previous = None;
    loop {
        let mut raw = String::new();
        let n = stream.read_line(&mut raw).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Garbled(format!(
                "the connection closed in the middle of the reply to `{command}`"
            )));
        }
        size += n;
        if size > MAX_REPLY {
            return Err(ReadError::Garbled(format!(
                "the reply is longer than {MAX_REPLY} bytes"
            )));
        }
        let (line, last) =
            parse_line(raw.trim_end_matches('\n'), previous).map_err(ReadError::Garbled)?;
        previous = Some(line.code);
        lines.push(line);
        if last {
            return Ok(lines);
        }
    }
}

/// One line of a reply, and whether it is the last. `previous` is the code
/// a continuation line (one starting with a space) belongs to.
pub fn parse_line(raw: &str, previous: Option<u16>) -> Result<(Line, bool), String> {
    if let Some(text) = raw.strip_prefix(' ') {
        let code = previous.ok_or_else(|| format!("a continuation first: {raw:?}"))?;
        let line = Line {
            code,
            text: text.into(),
        };
        return Ok((line, false));
    }
    let code = raw
        .get(..4)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no code: {raw:?}"))?;
    let (last, text) = match raw.get(4..5) {
        Some(" ") | None => (true, raw.get(5..).unwrap_or("")),
        Some("-") => (false, raw.get(5..).unwrap_or("")),
        Some(_) => return Err(format!("no separator after the code: {raw:?}")),
    };
    let line = Line {
        code,
        text: text.into(),
    };
    Ok((line, last))
}

/// A protocol's state in `show protocols` (bird(8): down, start, up, flush).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolState {
    /// Disabled, or failed.
    Down,
    /// Starting (a BGP session being established).
    Start,
    /// Running: a static protocol's routes are in its table; a BGP session
    /// is established.
    Up,
    /// Shutting down.
    Flush,
}

impl ProtocolState {
    /// Enabled: up, or on its way there.
    pub fn enabled(self) -> bool {
        matches!(self, ProtocolState::Up | ProtocolState::Start)
    }
}

/// `name`'s state in the reply to `show protocols "name"`: the row
/// `name  Static  master4  up  08:10:22.936  Info...` (code 1002, or a
/// continuation line of it).
pub fn protocol_state(reply: &[Line], name: &str) -> Result<ProtocolState, String> {
    let row = reply
        .iter()
        .filter(|l| l.code == 1002)
        .map(|l| l.text.split_whitespace().collect::<Vec<_>>())
        .find(|columns| columns.first() == Some(&name))
        .ok_or_else(|| format!("`show protocols` has no row for {name}"))?;
    match row.get(3).copied() {
        Some("down") => Ok(ProtocolState::Down),
        Some("start") => Ok(ProtocolState::Start),
        Some("up") => Ok(ProtocolState::Up),
        Some("flush") => Ok(ProtocolState::Flush),
        other => Err(format!(
            "{name}'s state in `show protocols` is {other:?}, expected down, start, up or flush"
        )),
    }
}

/// Whether the reply to `show route <prefix> protocol <p>` lists a route:
/// any line but the `Table master4:` heading (code 1007 and continuations,
/// route and next-hop lines alike).
pub fn lists_a_route(reply: &[Line]) -> bool {
    reply
        .iter()
        .filter(|l| l.code == 1007)
        .any(|l| !l.text.trim().is_empty() && !l.text.starts_with("Table "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as BIRD 2.0.12 sent it (recorded in the lab of
    /// tests/bgp.rs), parsed line by line.
    fn reply(raw: &str) -> Vec<Line> {
        let mut previous = None;
        raw.lines()
            .map(|l| {
                let (line, _) = parse_line(l, previous).unwrap();
                previous = Some(line.code);
                line
            })
            .collect()
    }

    #[test]
    fn lines_and_their_ends() {
        assert_eq!(
            parse_line("0001 BIRD 2.0.12 ready.", None).unwrap(),
            (
                Line {
                    code: 1,
                    text: "BIRD 2.0.12 ready.".into()
                },
                true
            )
        );
        assert!(!parse_line("1002-device1 Device", None).unwrap().1);
        assert!(parse_line("0000 ", None).unwrap().1);
        assert!(parse_line("0000", None).unwrap().1);
        let (cont, last) = parse_line(" handoff_standby Static", Some(1002)).unwrap();
        assert_eq!((cont.code, last), (1002, false));
        assert!(parse_line(" orphan", None).is_err());
        assert!(parse_line("BIRD", None).is_err());
        assert!(parse_line("0000x", None).is_err());
    }

    #[test]
    fn protocol_states_from_show_protocols() {
        let shown = reply(
            "2002-Name       Proto      Table      State  Since         Info\n\
             1002-handoff_up Static     master4    up     08:10:22.936  \n \
             handoff_standby Static     master4    down   08:10:19.912  \n\
             0000 ",
        );
        assert_eq!(protocol_state(&shown, "handoff_up"), Ok(ProtocolState::Up));
        assert_eq!(
            protocol_state(&shown, "handoff_standby"),
            Ok(ProtocolState::Down)
        );
        assert!(protocol_state(&shown, "handoff").is_err());
        let session = reply(
            "2002-Name       Proto      Table      State  Since         Info\n\
             1002-uplink     BGP        ---        start  08:10:21.597  Active        \n\
             0000 ",
        );
        assert_eq!(protocol_state(&session, "uplink"), Ok(ProtocolState::Start));
        assert!(!ProtocolState::Down.enabled() && ProtocolState::Start.enabled());
    }

    #[tokio::test]
    async fn a_silent_bird_costs_one_timeout_and_a_missing_one_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bird.ctl");
        let missing = Connection::open(path.clone(), Duration::from_millis(100)).await;
        assert!(missing.is_err_and(|e| e.not_running()));
        // Accepts, never greets: a BIRD that hangs.
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let hold = tokio::spawn(async move { listener.accept().await });
        let started = std::time::Instant::now();
        let hung = Connection::open(path, Duration::from_millis(100)).await;
        assert!(matches!(hung, Err(BirdError::Timeout { .. })));
        assert!(started.elapsed() < Duration::from_secs(2));
        hold.abort();
    }

    #[test]
    fn routes_from_show_route() {
        let none = reply("0000 ");
        assert!(!lists_a_route(&none));
        let heading_only = reply("1007-Table master4:\n0000 ");
        assert!(!lists_a_route(&heading_only));
        let one = reply(
            "1007-Table master4:\n \
             192.0.2.53/32        unicast [uplink 08:10:31.597] (100) [AS65002i]\n \
             \tvia 10.0.1.1 on va\n\
             0000 ",
        );
        assert!(lists_a_route(&one));
    }
}
