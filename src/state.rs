//! The state directory: handoff's memory across crashes and restarts.
//!
//! Owns: creating the directory (0700), the exclusive lock that keeps a second
//! agent on the same node out, and writing files in it so that a crash at any
//! point leaves either the old or the new content, never half of either
//! (write a temp file, fsync it, rename it over the old one, fsync the
//! directory: rename(2) is atomic, and the directory fsync makes the rename
//! itself durable). Does not own what the files mean (the ledger, maintenance).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use nix::fcntl::{Flock, FlockArg};

/// Written and removed at start, to prove the directory takes writes.
const PROBE_FILE: &str = "write-probe";
const LOCK_FILE: &str = "lock";

/// A failure to use the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another handoff holds the lock.
    #[error("another handoff{} is running with state dir {}; stop it first", holder_suffix(.holder.as_deref()), .dir.display())]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The pid the holder wrote, if readable.
        holder: Option<String>,
    },
    /// A file operation failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What handoff was doing.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// " (pid N)" when the lock holder wrote its pid, for messages.
pub(crate) fn holder_suffix(holder: Option<&str>) -> String {
    holder.map_or_else(String::new, |pid| format!(" (pid {pid})"))
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError + use<> {
    let path = path.to_path_buf();
    move |source| StateError::Io { what, path, source }
}

/// Why [`take_lock`] failed.
#[derive(Debug)]
pub enum LockFailure {
    /// Another process holds it.
    Held {
        /// The pid it wrote, if readable.
        holder: Option<String>,
    },
    /// The lock file could not be used.
    Io {
        /// What handoff was doing.
        what: &'static str,
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Who holds a lock: what its file says after the pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// An agent, or the CLI acting without one.
    Agent,
    /// A sentinel taking the node down after its agent died
    /// (`crate::sentinel`): it lets go within seconds.
    Sentinel,
}

/// What a sentinel writes after its pid.
const SENTINEL_TAG: &str = "sentinel";
/// How long an agent waits for a sentinel's lock: the sentinel's own limit
/// for applying `down` (`crate::sentinel::DOWN_LIMIT`), plus a margin.
const SENTINEL_WAIT: Duration = Duration::from_secs(12);

/// Takes an exclusive flock(2) on `path` (created 0600) without waiting,
/// and writes our pid (and `sentinel` for a sentinel) into it for the
/// message a second agent prints; the lock itself is what counts, and it
/// goes with the process.
pub fn take_lock(path: &Path, holder: Holder) -> Result<Flock<File>, LockFailure> {
    let failed = |what: &'static str| {
        move |source: io::Error| LockFailure::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(failed("opening"))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let holder = file
                .read_to_string(&mut pid)
                .ok()
                .map(|_| pid.trim().to_owned())
                .filter(|p| !p.is_empty());
            return Err(LockFailure::Held { holder });
        }
        Err((_, errno)) => return Err(failed("locking")(errno.into())),
    };
    lock.set_len(0).map_err(failed("writing"))?;
    match holder {
        Holder::Agent => writeln!(lock, "{}", std::process::id()),
        Holder::Sentinel => writeln!(lock, "{} {SENTINEL_TAG}", std::process::id()),
    }
    .map_err(failed("writing"))?;
    Ok(lock)
}

/// The locked state directory; the lock is held until this is dropped (or
/// the process dies: flock(2) locks go with the open file).
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl StateDir {
    /// Creates `dir` if needed and takes its lock, without waiting: a second
    /// agent must fail at once with a message that names the first. The one
    /// wait is for a sentinel still taking the node down after its agent
    /// died (at most `SENTINEL_WAIT`, 12 s): a restarted agent then starts
    /// as soon as it is done.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        let deadline = std::time::Instant::now() + SENTINEL_WAIT;
        loop {
            match StateDir::open_as(dir, Holder::Agent) {
                Err(StateError::Locked {
                    holder: Some(h), ..
                }) if h.ends_with(SENTINEL_TAG) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// [`StateDir::open`] for `holder`, without any wait.
    pub fn open_as(dir: &Path, holder: Holder) -> Result<StateDir, StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error("creating", dir))?;
        let lock = take_lock(&dir.join(LOCK_FILE), holder).map_err(|failure| match failure {
            LockFailure::Held { holder } => StateError::Locked {
                dir: dir.to_path_buf(),
                holder,
            },
            LockFailure::Io { what, path, source } => StateError::Io { what, path, source },
        })?;
        // A read-only or full file system would surface only at the first
        // demotion, mid-failover: prove now that a record can be written,
        // synced and removed, and refuse to start if not.
        let probe = dir.join(PROBE_FILE);
        write_atomically(&probe, b"handoff can write here\n")?;
        fs::remove_file(&probe).map_err(io_error("removing", &probe))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Reads `name`, or `None` if it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<String>, StateError> {
        let path = self.dir.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("reading", &path)(e)),
        }
    }

    /// Replaces `name` with `content` atomically and durably.
    pub fn write(&self, name: &str, content: &str) -> Result<(), StateError> {
        write_atomically(&self.dir.join(name), content.as_bytes())
    }

    /// Removes `name` durably; a file that is already gone is fine.
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("removing", &path)(e)),
        }
    }
}

/// Writes `path` so that a crash leaves the old or the new content: a temp
/// file in the same directory (rename(2) is atomic only within a file system),
/// fsync, rename, fsync of the directory. Also used for keepalived's
/// `track_file`, whose inotify watch sees the rename (IN_MOVED_TO).
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<(), StateError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io_error("creating", &temp))?;
        file.write_all(content)
            .map_err(io_error("writing", &temp))?;
        file.sync_all().map_err(io_error("syncing", &temp))?;
        fs::rename(&temp, path).map_err(io_error("renaming into place", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_agent_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = StateDir::open(&state).unwrap();
        let err = StateDir::open(&state).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("another handoff"), "{err}");
        drop(first);
        StateDir::open(&state).expect("free again once the first is gone");
    }

    #[test]
    fn the_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b");
        let _s = StateDir::open(&state).unwrap();
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn writes_replace_whole_files_and_leave_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        assert_eq!(s.read("ledger").unwrap(), None);
        s.write("ledger", "one").unwrap();
        s.write("ledger", "two").unwrap();
        assert_eq!(s.read("ledger").unwrap().as_deref(), Some("two"));
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    }
}
