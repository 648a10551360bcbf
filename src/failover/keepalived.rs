//! Linux keepalived (`backend = "keepalived"`, keepalived >= 2.1): our value
//! in a `track_file` that keepalived adds (times `weight 1`) to the instance's
//! priority.
//!
//! `up` writes 0, `standby` `standby_value` (a priority drop that must take
//! this node below the peer), `down` `down_value` (-254: below -253 puts the
//! instance in FAULT). handoff owns the file, so the value in it is absolute:
//! rewriting it is idempotent, and the file itself is the record (on disk, so
//! after a reboot the node stays down until handoff and its proxy are up).
//! keepalived watches the directory with inotify, so the file is replaced by
//! rename (IN_MOVED_TO), never rewritten in place (keepalived.conf(5), "Track
//! files"; docs/facts.md).
//!
//! The role is MASTER when one of the configured VIPs is on a local
//! interface other than a loopback one: keepalived adds the VIP when it
//! becomes master and removes it when it leaves, so this is where the
//! address really is (on lo it is `loopback_vip`'s). Otherwise it is FAULT
//! when keepalived has the instance in FAULT, and BACKUP when not. FAULT is
//! known two ways: our own `down` value is below -253, which puts the
//! instance in FAULT (keepalived.conf(5), "Track files"), and the notify
//! FIFO's last state line for the instance, sent after our last write, says
//! FAULT, STOP or DELETED (a fault keepalived sees itself: a dead interface,
//! another tracker).
//!
//! Two sources of hints make the worker look at once, merged into the one
//! hints channel. On Linux, the kernel's address events (rtnetlink,
//! `crate::platform::watch_addresses`) for the configured VIPs: keepalived
//! adding or removing a VIP is seen within about a millisecond, not at the
//! next poll (bench/detect.py; docs/benchmarks.md). With `notify_fifo`, keepalived's `INSTANCE "VI_1" MASTER 100`
//! lines. Both are only hints (keepalived drops lines nobody reads and
//! recreates the FIFO on reload; a netlink socket can overrun, which is a
//! hint too), so the polling goes on, every 1 s as the safety net, and the
//! state a FIFO line gave is forgotten when the FIFO ends: a line missed
//! while it was reopened must not leave a stale FAULT. A line is held to
//! `MAX_NOTIFY_LINE` (4 KiB): anything longer is discarded up to its
//! newline, so a writer that never ends its line costs no memory.

use std::{net::IpAddr, os::unix::fs::DirBuilderExt, path::PathBuf, time::Duration};

use nix::{ifaddrs::getifaddrs, net::if_::InterfaceFlags};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, BufReader},
    net::unix::pipe,
    sync::{mpsc, watch},
};

use super::{Failover, FailoverError, Hint, Level, Role, Watch};
use crate::{config::KeepalivedConfig, files, platform};

/// Role polling while waiting for a move (the issue's bound: 50 ms).
const FAST_POLL: Duration = Duration::from_millis(50);
/// Role polling otherwise: the safety net under the address events.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// What the hints of each source are called in the log (`seen_by`).
const ADDRESS_EVENT: Hint = Hint("address event");
const NOTIFY_FIFO: Hint = Hint("notify_fifo");
/// Wait before reopening the notify FIFO after EOF (no writer, or a reload).
const FIFO_REOPEN: Duration = Duration::from_secs(1);
/// The longest notify FIFO line read. keepalived's are short (`INSTANCE
/// "VI_1" MASTER 100`, an instance name being at most a few hundred bytes);
/// the FIFO is a file anyone with write access to it can fill, so a longer
/// line is discarded, up to its newline, without being held.
const MAX_NOTIFY_LINE: usize = 4 * 1024;
/// A priority below this puts a VRRP instance in FAULT (keepalived.conf(5),
/// "Track files": "a result below -253 puts the instance in FAULT").
const FAULT_BELOW: i32 = -253;

/// The keepalived backend.
#[derive(Debug)]
pub struct KeepalivedBackend {
    config: KeepalivedConfig,
    /// The value last written, for `handoff status`.
    written: Option<i32>,
    /// Whether a VIP was local at the last look.
    holds_vip: Option<bool>,
    /// The instance's state in the notify FIFO's last line about it, while
    /// the FIFO is open (`None` without one).
    fifo_state: watch::Receiver<Option<&'static str>>,
    /// The FIFO has spoken since our last write. Before that, its state is
    /// from before keepalived read our value: the FAULT of the start's
    /// `down` would outlive the `up` that ends it.
    fifo_current: bool,
}

impl KeepalivedBackend {
    /// A backend writing `config.track_file`, whose directory must be one
    /// that nobody but root and us can change (`crate::files::check_dir`):
    /// refused here, before anything is written.
    pub fn open(config: KeepalivedConfig) -> Result<Self, FailoverError> {
        files::check_dir(
            "the track file's directory",
            files::dir_of(&config.track_file),
        )?;
        Ok(KeepalivedBackend {
            config,
            written: None,
            holds_vip: None,
            // Replaced by `hints`, which starts the FIFO's reader.
            fifo_state: watch::channel(None).1,
            fifo_current: false,
        })
    }

    /// The level the track file says now (`None` if it is missing or not
    /// one of ours); agent-less `demote` must not raise a node left `down`.
    pub fn level_on_disk(&self) -> Option<Level> {
        let value = self.value_on_disk()?;
        [Level::Down, Level::Standby, Level::Up]
            .into_iter()
            .find(|&level| self.value(level) == value)
    }

    /// The number in the track file; `None` if it is missing or unreadable.
    fn value_on_disk(&self) -> Option<i32> {
        let text = std::fs::read_to_string(&self.config.track_file).ok()?;
        text.trim().parse().ok()
    }

    /// Writes `value` to the track file atomically, creating its directory
    /// if it is gone. fsync can take a while: off the runtime thread.
    async fn write(&self, value: i32) -> Result<(), FailoverError> {
        let path = self.config.track_file.clone();
        let content = format!("{value}\n");
        tokio::task::spawn_blocking(move || {
            let dir = files::dir_of(&path);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| FailoverError::Local(format!("creating {}: {e}", dir.display())))?;
            files::write_atomically(&path, content.as_bytes()).map_err(FailoverError::from)
        })
        .await
        .map_err(|e| FailoverError::Local(format!("writing the track file: {e}")))?
    }

    /// Puts our value back if the track file was removed (keepalived reads a
    /// missing file as 0: a node held down would become a full candidate)
    /// or changed behind our back. Checked at every role poll.
    async fn restore_track_file(&mut self) -> Result<(), FailoverError> {
        let Some(value) = self.written else {
            return Ok(());
        };
        let on_disk = self.value_on_disk();
        if on_disk == Some(value) {
            return Ok(());
        }
        tracing::warn!(
            track_file = %self.config.track_file.display(),
            found = ?on_disk,
            value,
            "the track file was removed or changed: writing our value back"
        );
        self.write(value).await
    }

    /// Whether keepalived has the instance in FAULT: our own value put it
    /// there, or the notify FIFO said so after our last write.
    fn in_fault(&mut self) -> bool {
        if self.fifo_state.has_changed().unwrap_or(false) {
            self.fifo_state.mark_unchanged();
            self.fifo_current = true;
        }
        let ours = self.written.is_some_and(|v| v < FAULT_BELOW);
        let fifo = self.fifo_current
            && matches!(
                *self.fifo_state.borrow(),
                Some("FAULT" | "STOP" | "DELETED")
            );
        ours || fifo
    }

    fn value(&self, level: Level) -> i32 {
        match level {
            Level::Up => 0,
            Level::Standby => self.config.standby_value,
            Level::Down => self.config.down_value,
        }
    }
}

/// Whether any of `vips` is assigned to a local interface.
fn holds_any(vips: &[IpAddr]) -> Result<bool, FailoverError> {
    let addresses = getifaddrs()
        .map_err(|e| FailoverError::Local(format!("cannot list local addresses: {e}")))?;
    // A VIP on a loopback interface is `loopback_vip`'s (or an operator's
    // direct-routing setup), never keepalived's: it says nothing of the role.
    let on_the_wire = addresses.filter(|a| !a.flags.contains(InterfaceFlags::IFF_LOOPBACK));
    Ok(on_the_wire.filter_map(|a| a.address).any(|storage| {
        let ip = storage
            .as_sockaddr_in()
            .map(|v4| IpAddr::V4(v4.ip()))
            .or_else(|| storage.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())));
        ip.is_some_and(|ip| vips.contains(&ip))
    }))
}

impl Failover for KeepalivedBackend {
    fn name(&self) -> &'static str {
        "keepalived"
    }

    async fn set_level(&mut self, level: Level) -> Result<(), FailoverError> {
        let value = self.value(level);
        self.write(value).await?;
        self.written = Some(value);
        // What the FIFO said so far answers an older value.
        self.fifo_state.mark_unchanged();
        self.fifo_current = false;
        Ok(())
    }

    async fn role(&mut self) -> Result<Role, FailoverError> {
        self.restore_track_file().await?;
        let holds = holds_any(&self.config.vip)?;
        self.holds_vip = Some(holds);
        Ok(if holds {
            Role::Master
        } else if self.in_fault() {
            Role::Fault
        } else {
            Role::Backup
        })
    }

    fn poll_interval(&self, watch: Watch) -> Option<Duration> {
        Some(watch.pick(IDLE_POLL, FAST_POLL))
    }

    fn details(&self) -> serde_json::Value {
        serde_json::json!({
            "track_file": self.config.track_file,
            "value": self.written,
            "standby_value": self.config.standby_value,
            "down_value": self.config.down_value,
            "vip": self.config.vip,
            "holds_vip": self.holds_vip,
            "fifo_state": *self.fifo_state.borrow(),
        })
    }

    /// The address events (where the OS has them) and the notify FIFO's
    /// lines (when configured), merged; `None` when neither is there.
    fn hints(&mut self) -> Option<mpsc::Receiver<Hint>> {
        // One slot: a hint already queued means a poll is already due.
        let (tx, rx) = mpsc::channel(1);
        let events = tx.clone();
        let watching = platform::watch_addresses(self.config.vip.clone(), move || {
            let _ = events.try_send(ADDRESS_EVENT);
            !events.is_closed()
        });
        let watching = match watching {
            Ok(()) => true,
            Err(error) if error.kind() == std::io::ErrorKind::Unsupported => false,
            Err(error) => {
                tracing::warn!(%error, poll = ?IDLE_POLL, "cannot watch address events: the VIPs are polled only");
                false
            }
        };
        let reading = if let Some(path) = self.config.notify_fifo.clone() {
            let (state_tx, state_rx) = watch::channel(None);
            self.fifo_state = state_rx;
            tokio::spawn(read_notify_fifo(
                path,
                self.config.instance.clone(),
                tx,
                state_tx,
            ));
            true
        } else {
            false
        };
        (watching || reading).then_some(rx)
    }
}

/// Reads keepalived's notify FIFO for as long as the worker listens,
/// reopening it after EOF; every state line about `instance` (any instance
/// when unset) is a hint, and its state is kept in `state` until the FIFO
/// ends.
async fn read_notify_fifo(
    path: PathBuf,
    instance: Option<String>,
    hints: mpsc::Sender<Hint>,
    state: watch::Sender<Option<&'static str>>,
) {
    while !hints.is_closed() {
        match pipe::OpenOptions::new().open_receiver(&path) {
            Ok(fifo) => {
                let mut reader = BufReader::new(fifo);
                while let Ok(Some(line)) = next_line(&mut reader, MAX_NOTIFY_LINE).await {
                    let line = match line {
                        Line::Text(line) => line,
                        Line::TooLong(bytes) => {
                            tracing::debug!(bytes, "notify_fifo line too long: discarded");
                            continue;
                        }
                    };
                    match parse_notify_line(&line) {
                        Some((name, said)) if instance.as_deref().is_none_or(|i| i == name) => {
                            tracing::info!(instance = name, state = said, "keepalived notify_fifo");
                            state.send_replace(Some(said));
                            // Full means a poll is already due: nothing lost.
                            let _ = hints.try_send(NOTIFY_FIFO);
                        }
                        _ => tracing::debug!(%line, "notify_fifo line ignored"),
                    }
                }
            }
            Err(error) => {
                tracing::debug!(path = %path.display(), %error, "cannot open notify_fifo");
            }
        }
        state.send_replace(None);
        tokio::time::sleep(FIFO_REOPEN).await;
    }
}

/// One line read from the notify FIFO.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A line, without its newline.
    Text(String),
    /// A line longer than the bound, of this many bytes, discarded.
    TooLong(usize),
}

/// The next line of `reader`, keeping at most `max` bytes of it: a longer
/// line is read to its newline but not held, and comes back as
/// [`Line::TooLong`]. Bytes that are not UTF-8 are replaced. `None` at end
/// of file; a last line without its newline still counts.
async fn next_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<Line>> {
    let mut kept = Vec::new();
    let mut length = 0usize;
    let mut seen = false;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            if !seen {
                return Ok(None);
            }
            break;
        }
        seen = true;
        let (used, part, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, &buffer[..at], true),
            None => (buffer.len(), buffer, false),
        };
        let room = max.saturating_sub(kept.len());
        kept.extend_from_slice(&part[..part.len().min(room)]);
        length = length.saturating_add(part.len());
        reader.consume(used);
        if done {
            break;
        }
    }
    if length > max {
        return Ok(Some(Line::TooLong(length)));
    }
    Ok(Some(Line::Text(
        String::from_utf8_lossy(&kept).into_owned(),
    )))
}

/// `INSTANCE "VI_1" MASTER 100` -> `("VI_1", "MASTER")`; anything else (group
/// lines, partial lines) -> `None`.
fn parse_notify_line(line: &str) -> Option<(&str, &'static str)> {
    let mut words = line.split_whitespace();
    if words.next()? != "INSTANCE" {
        return None;
    }
    let name = words.next()?.strip_prefix('"')?.strip_suffix('"')?;
    let state = words.next()?;
    let known = ["MASTER", "BACKUP", "FAULT", "STOP", "DELETED"];
    known.into_iter().find(|&k| k == state).map(|k| (name, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_lines() {
        assert_eq!(
            parse_notify_line("INSTANCE \"VI_1\" MASTER 100"),
            Some(("VI_1", "MASTER"))
        );
        assert_eq!(
            parse_notify_line("INSTANCE \"edge\" FAULT 0\r"),
            Some(("edge", "FAULT"))
        );
        assert_eq!(parse_notify_line("GROUP \"G\" MASTER 100"), None);
        assert_eq!(
            parse_notify_line("INSTANCE \"VI_1\" MAS"),
            None,
            "a partial line"
        );
        assert_eq!(parse_notify_line("INSTANCE VI_1 MASTER 100"), None);
        assert_eq!(parse_notify_line(""), None);
    }

    #[tokio::test]
    async fn an_over_long_fifo_line_is_discarded_and_the_next_one_read() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // The reader first (a writer cannot open a FIFO nobody reads), then
        // the writer, before anything is read: no end of file in between.
        let receiver = pipe::OpenOptions::new().open_receiver(&path).unwrap();
        let mut sender = pipe::OpenOptions::new().open_sender(&path).unwrap();
        let long = 1024 * 1024;
        let writer = tokio::spawn(async move {
            sender.write_all(&vec![b'A'; long]).await.unwrap();
            sender
                .write_all(b"\nINSTANCE \"VI_1\" MASTER 100\n")
                .await
                .unwrap();
            sender
                .write_all(&vec![b'B'; MAX_NOTIFY_LINE])
                .await
                .unwrap();
            sender.write_all(b"\nunfinished").await.unwrap();
        });
        let mut reader = BufReader::new(receiver);
        // What came back, short enough to print when it is wrong.
        let mut next = async || match next_line(&mut reader, MAX_NOTIFY_LINE).await.unwrap() {
            Some(Line::Text(text)) if text.len() > 40 => {
                format!("text of {} bytes {:?}...", text.len(), &text[..8])
            }
            Some(Line::Text(text)) => format!("text {text:?}"),
            Some(Line::TooLong(bytes)) => format!("too long: {bytes}"),
            None => "end of file".to_owned(),
        };
        assert_eq!(next().await, format!("too long: {long}"));
        assert_eq!(next().await, "text \"INSTANCE \\\"VI_1\\\" MASTER 100\"");
        assert_eq!(
            next().await,
            format!("text of {MAX_NOTIFY_LINE} bytes \"BBBBBBBB\"..."),
            "the bound itself is a line"
        );
        writer.await.unwrap();
        assert_eq!(next().await, "text \"unfinished\"");
        assert_eq!(next().await, "end of file");
    }

    #[test]
    fn an_address_on_an_interface_counts_and_one_on_lo_or_nowhere_does_not() {
        assert!(
            !holds_any(&["127.0.0.1".parse().unwrap()]).unwrap(),
            "on lo: loopback_vip's, not keepalived's"
        );
        assert!(!holds_any(&["192.0.2.254".parse().unwrap()]).unwrap());
        // Any address of this host on a real interface, where there is one.
        let wire = getifaddrs().unwrap().find_map(|a| {
            let v4 = a.address?.as_sockaddr_in()?.ip();
            (!a.flags.contains(InterfaceFlags::IFF_LOOPBACK)).then_some(IpAddr::V4(v4))
        });
        if let Some(ip) = wire {
            assert!(holds_any(&[ip]).unwrap(), "{ip}");
        }
    }

    #[tokio::test]
    async fn fault_is_our_down_value_or_the_fifo_s_last_word_until_it_ends() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("notify");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let config = KeepalivedConfig {
            track_file: dir.path().join("handoff.track"),
            notify_fifo: Some(fifo.clone()),
            instance: Some("VI_1".into()),
            vip: vec!["192.0.2.254".parse().unwrap()],
            ..KeepalivedConfig::default()
        };
        let mut backend = KeepalivedBackend::open(config).unwrap();
        let mut hints = backend.hints().unwrap();
        for (level, role) in [
            (Level::Down, Role::Fault),
            (Level::Standby, Role::Backup),
            (Level::Up, Role::Backup),
        ] {
            backend.set_level(level).await.unwrap();
            assert_eq!(backend.role().await.unwrap(), role, "{level}");
        }
        // Opening the writer waits for the reader (O_NONBLOCK fails with
        // ENXIO until then): bounded.
        let mut sender = None;
        for _ in 0..200 {
            if let Ok(s) = pipe::OpenOptions::new().open_sender(&fifo) {
                sender = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut sender = sender.expect("the reader opened the FIFO");
        let mut said = async |line: &str| {
            sender.write_all(line.as_bytes()).await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), hints.recv())
                .await
                .unwrap();
        };
        // Another instance's line is no hint and no state.
        said("INSTANCE \"other\" MASTER 100\nINSTANCE \"VI_1\" FAULT 0\n").await;
        assert_eq!(
            backend.role().await.unwrap(),
            Role::Fault,
            "the FIFO's FAULT"
        );
        said("INSTANCE \"VI_1\" BACKUP 240\n").await;
        assert_eq!(backend.role().await.unwrap(), Role::Backup);
        said("INSTANCE \"VI_1\" STOP 0\n").await;
        assert_eq!(backend.role().await.unwrap(), Role::Fault, "STOP");
        backend.set_level(Level::Standby).await.unwrap();
        assert_eq!(
            backend.role().await.unwrap(),
            Role::Backup,
            "a FIFO state from before our last write answers an older value"
        );
        said("INSTANCE \"VI_1\" FAULT 0\n").await;
        assert_eq!(backend.role().await.unwrap(), Role::Fault);
        drop(sender);
        let mut forgotten = false;
        for _ in 0..200 {
            if backend.role().await.unwrap() == Role::Backup {
                forgotten = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(forgotten, "the FIFO's end forgets its last state");
    }

    #[tokio::test]
    async fn levels_are_written_atomically_as_absolute_values() {
        let dir = tempfile::tempdir().unwrap();
        let track_file = dir.path().join("handoff.track");
        let config = KeepalivedConfig {
            track_file: track_file.clone(),
            ..KeepalivedConfig::default()
        };
        let mut backend = KeepalivedBackend::open(config).unwrap();
        for (level, value) in [
            (Level::Down, "-254\n"),
            (Level::Standby, "-100\n"),
            (Level::Up, "0\n"),
            (Level::Up, "0\n"),
        ] {
            backend.set_level(level).await.unwrap();
            assert_eq!(
                std::fs::read_to_string(&track_file).unwrap(),
                value,
                "{level}"
            );
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp files left"
        );
    }
}
