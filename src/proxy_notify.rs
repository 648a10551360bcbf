//! The proxy's own NOTIFY_SOCKET: a datagram socket handoff binds beside the
//! control socket (`<control socket>.notify`), offered to proxies that speak
//! sd_notify(3) (haproxy `-Ws`, caddy) when `reload_confirm` has "ready", so
//! that their READY=1 after a reload confirms it. systemd's socket, if
//! handoff has one, never reaches the proxy (`crate::child_env`): the proxy's
//! READY=1 is not handoff's, whose readiness is the health gate.
//!
//! Owns: the socket file (mode 0600, placed under a random name and renamed,
//! removed on drop) and reading its datagrams into [`Message`]s; the
//! dispatcher reads it in its loop, and drops what is queued at a reload's
//! send ([`NotifySocket::forget`]). Anyone who
//! can write to the socket could fake a READY=1, so only handoff's user can
//! (and the socket's directory is the control socket's private one); the
//! proxy must run as that user (haproxy's master and caddy do).

use std::{
    fs, io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use tokio::net::UnixDatagram;

use crate::files;

/// Longest datagram read; sd_notify messages are a few lines, and a longer
/// one is cut here (recv(2) drops the rest of a datagram).
const DATAGRAM_LIMIT: usize = 4096;

/// Longest `STATUS=` text kept, in bytes.
const STATUS_LIMIT: usize = 512;

/// What one datagram said, of what handoff reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// READY=1
    pub ready: bool,
    /// RELOADING=1
    pub reloading: bool,
    /// STOPPING=1
    pub stopping: bool,
    /// STATUS=..., cut to 512 bytes (caddy says why a load
    /// failed here).
    pub status: Option<String>,
}

/// Reads one datagram: newline-separated `KEY=VALUE` assignments
/// (sd_notify(3)); anything else is ignored.
pub fn parse(datagram: &[u8]) -> Message {
    let text = String::from_utf8_lossy(datagram);
    let mut message = Message::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => message.ready = true,
            Some(("RELOADING", "1")) => message.reloading = true,
            Some(("STOPPING", "1")) => message.stopping = true,
            Some(("STATUS", status)) => {
                let mut end = status.len().min(STATUS_LIMIT);
                while !status.is_char_boundary(end) {
                    end -= 1;
                }
                message.status = Some(status[..end].to_owned());
            }
            _ => {}
        }
    }
    message
}

/// The bound socket, read by the dispatcher's loop.
#[derive(Debug)]
pub struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    /// Binds `path` (replacing a socket left there by a dead agent, whose
    /// control socket lock this agent now holds).
    pub fn bind(path: &Path) -> io::Result<NotifySocket> {
        match fs::symlink_metadata(path) {
            Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
                fs::remove_file(path)?;
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let socket = UnixDatagram::from_std(bind_private(path)?)?;
        Ok(NotifySocket {
            path: path.to_path_buf(),
            socket,
        })
    }

    /// Where the proxy sends (its `NOTIFY_SOCKET`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next datagram (cancel-safe: tokio's `UnixDatagram::recv`).
    pub async fn next(&self) -> io::Result<Message> {
        let mut buf = [0u8; DATAGRAM_LIMIT];
        let len = self.socket.recv(&mut buf).await?;
        Ok(parse(buf.get(..len).unwrap_or_default()))
    }

    /// Drops every datagram already sent, read or not: what the proxy said
    /// before a reload's send must not confirm it (haproxy says READY=1 at
    /// its start, and after a failed reload too). A READY=1 cannot be tied
    /// to one reload otherwise: sd_notify carries no reload number.
    pub fn forget(&self) -> usize {
        let mut buf = [0u8; DATAGRAM_LIMIT];
        let mut dropped = 0;
        while self.socket.try_recv(&mut buf).is_ok() {
            dropped += 1;
        }
        dropped
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Binds under a fresh random name beside `path`, makes it 0600 and renames
/// it into place, so it is never reachable with a looser mode.
fn bind_private(path: &Path) -> io::Result<std::os::unix::net::UnixDatagram> {
    let (socket, temp) = files::bind_beside(path, |p| std::os::unix::net::UnixDatagram::bind(p))
        .map_err(io::Error::other)?;
    let placed = fs::set_permissions(&temp, fs::Permissions::from_mode(0o600))
        .and_then(|()| fs::rename(&temp, path));
    if let Err(error) = placed {
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the proxy sends, reading it never panics, and a STATUS=
        /// is never longer than kept.
        #[test]
        fn any_datagram_is_read(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let message = parse(&bytes);
            prop_assert!(message.status.is_none_or(|s| s.len() <= STATUS_LIMIT));
        }
    }

    #[test]
    fn reads_what_haproxy_and_caddy_send() {
        // haproxy 2.6 and caddy 2.6, as recorded in docs/proxies-measured.md.
        assert_eq!(
            parse(b"READY=1\nMAINPID=25397"),
            Message {
                ready: true,
                ..Message::default()
            }
        );
        assert!(parse(b"RELOADING=1").reloading);
        assert!(parse(b"STOPPING=1").stopping);
        let failed = parse(b"STATUS=loading new config: http app module: start: listening on 127.0.0.1:18000: bind: address already in use");
        assert!(!failed.ready);
        assert!(failed.status.unwrap().ends_with("address already in use"));
        assert_eq!(parse(b"READY=0\nREADY\n=1\n\xff"), Message::default());
        let long = format!("STATUS={}", "é".repeat(STATUS_LIMIT));
        assert!(parse(long.as_bytes()).status.unwrap().len() <= STATUS_LIMIT);
    }

    #[tokio::test]
    async fn a_datagram_sent_to_the_socket_arrives_and_the_file_goes_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handoff.sock.notify");
        let socket = NotifySocket::bind(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
        client.send_to(b"RELOADING=1", &path).unwrap();
        client.send_to(b"READY=1", &path).unwrap();
        assert!(socket.next().await.unwrap().reloading);
        assert!(socket.next().await.unwrap().ready);
        client.send_to(b"READY=1", &path).unwrap();
        client.send_to(b"READY=1", &path).unwrap();
        assert_eq!(socket.forget(), 2, "unread datagrams are dropped");
        drop(socket);
        assert!(!path.exists());
        // A stale socket is replaced; anything else is refused.
        let stale = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        drop(stale);
        drop(NotifySocket::bind(&path).unwrap());
        fs::write(&path, "x").unwrap();
        assert!(NotifySocket::bind(&path).is_err());
    }
}
