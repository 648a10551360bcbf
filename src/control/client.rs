//! The CLI's side of the control socket: one request, one answer.
//!
//! Owns: telling "no agent runs" (so `demote`/`promote` may act on the
//! backend directly) from "an agent runs but refuses or misbehaves" (they
//! must not).

use std::{
    io::{self, BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use super::protocol::{Command, ReloadDone, Request, Response, VERSION};
use crate::status::Status;

/// Longest answer the client reads (a status is a few KiB).
const MAX_ANSWER: u64 = 1024 * 1024;

/// Why a request got no status back.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket: no agent runs.
    #[error("no agent answers on {}: {source}", .path.display())]
    NoAgent {
        /// The socket.
        path: PathBuf,
        /// ENOENT or ECONNREFUSED.
        source: io::Error,
    },
    /// The socket's mode keeps this user out.
    #[error("permission denied on {}: only root (and the control group, if set) may use it", .path.display())]
    Denied {
        /// The socket.
        path: PathBuf,
    },
    /// The agent answered with an error.
    #[error("the agent says: {0}")]
    Agent(String),
    /// The conversation failed.
    #[error("talking to the agent on {}: {source}", .path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The answer is not a response this build understands.
    #[error(
        "the agent's answer is not understood ({0}); are the CLI and the agent the same version?"
    )]
    Protocol(String),
}

/// Sends `command` to the agent on `path` and returns its status.
pub fn request(path: &Path, command: Command, limit: Duration) -> Result<Status, ClientError> {
    exchange(path, command, limit)?
        .status
        .ok_or_else(|| ClientError::Protocol("an answer without status".into()))
}

/// Asks the agent on `path` for a reload and waits up to `limit` for its
/// outcome.
pub fn reload(path: &Path, limit: Duration) -> Result<ReloadDone, ClientError> {
    exchange(path, Command::Reload, limit)?
        .reload
        .ok_or_else(|| ClientError::Protocol("an answer without the reload's outcome".into()))
}

/// One request, one answer; an error answer is [`ClientError::Agent`].
fn exchange(path: &Path, command: Command, limit: Duration) -> Result<Response, ClientError> {
    let io = |source: io::Error| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NoAgent {
            path: path.to_path_buf(),
            source,
        },
        io::ErrorKind::PermissionDenied => ClientError::Denied {
            path: path.to_path_buf(),
        },
        _ => io(source),
    })?;
    stream.set_read_timeout(Some(limit)).map_err(io)?;
    stream.set_write_timeout(Some(limit)).map_err(io)?;
    let mut line = serde_json::to_string(&Request {
        version: VERSION,
        command,
    })
    .map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push('\n');
    // An agent that refuses the peer answers without reading the request,
    // and may close before it is written: its answer is still worth reading.
    let sent = stream.write_all(line.as_bytes());
    let mut answer = String::new();
    let read = BufReader::new(io::Read::take(&stream, MAX_ANSWER)).read_line(&mut answer);
    if answer.is_empty() {
        sent.map_err(io)?;
        read.map_err(io)?;
        return Err(ClientError::Protocol(
            "the agent closed without an answer".into(),
        ));
    }
    let response: Response =
        serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
    if response.version != VERSION {
        return Err(ClientError::Protocol(format!(
            "the agent speaks protocol version {}, this CLI {VERSION}",
            response.version
        )));
    }
    match response.error {
        Some(error) => Err(ClientError::Agent(error)),
        None => Ok(response),
    }
}
