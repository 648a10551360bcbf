//! The state directory: handoff's memory across crashes and restarts.
//!
//! Owns: creating the directory (0700) and refusing one that others could
//! change (`crate::files::check_dir`), the exclusive lock that keeps a
//! second agent on the same node out, and writing files in it so that a
//! crash at any point leaves either the old or the new content, never half
//! of either (`crate::files::write_atomically`). Does not own what the files
//! mean (the ledger, maintenance), nor how a file is created safely
//! (`crate::files`).

use std::{
    fs::{self, File},
    io::{self, Read, Write},
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    time::Duration,
};

use nix::fcntl::{Flock, FlockArg};

use crate::files::{self, FileError};

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
    /// A file or directory is unsafe to use, or could not be written.
    #[error(transparent)]
    File(#[from] FileError),
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
    /// The lock file could not be used, or is not one.
    File(FileError),
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

/// Takes an exclusive flock(2) on `path` (created 0600; never through a
/// symlink, `crate::files::open_lock`) without waiting, and writes our pid
/// (and `sentinel` for a sentinel) into it for the message a second agent
/// prints; the lock itself is what counts, and it goes with the process.
pub fn take_lock(path: &Path, holder: Holder) -> Result<Flock<File>, LockFailure> {
    let failed = |what: &'static str| {
        move |source: io::Error| {
            LockFailure::File(FileError::Io {
                what,
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let file = files::open_lock(path).map_err(LockFailure::File)?;
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

    /// [`StateDir::open`] for `holder`, without any wait. A directory that
    /// others could change is refused before anything is written in it.
    pub fn open_as(dir: &Path, holder: Holder) -> Result<StateDir, StateError> {
        files::check_dir("the state dir", dir)?;
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
            LockFailure::File(e) => StateError::File(e),
        })?;
        // A read-only or full file system would surface only at the first
        // demotion, mid-failover: prove now that a record can be written,
        // synced and removed, and refuse to start if not.
        let probe = dir.join(PROBE_FILE);
        files::write_atomically(&probe, b"handoff can write here\n")?;
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
        Ok(files::write_atomically(
            &self.dir.join(name),
            content.as_bytes(),
        )?)
    }

    /// Removes `name` durably; a file that is already gone is fine.
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(files::sync_dir(&self.dir)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("removing", &path)(e)),
        }
    }
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

    /// A file that a planted symlink points at, and the link's target text.
    const PRECIOUS: &str = "precious\n";

    fn precious(dir: &Path) -> PathBuf {
        let target = dir.join("precious");
        fs::write(&target, PRECIOUS).unwrap();
        target
    }

    #[test]
    fn a_symlink_at_the_old_predictable_temp_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = precious(dir.path());
        let state = dir.path().join("state");
        let s = StateDir::open(&state).unwrap();
        let old_temp = state.join(format!(".ledger.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&target, &old_temp).unwrap();
        s.write("ledger", "one").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), PRECIOUS);
        assert_eq!(s.read("ledger").unwrap().as_deref(), Some("one"));
        // The same for a file written anywhere (keepalived's track file).
        let track = dir.path().join("handoff.track");
        let old_temp = dir
            .path()
            .join(format!(".handoff.track.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&target, &old_temp).unwrap();
        files::write_atomically(&track, b"-254\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), PRECIOUS);
        assert_eq!(fs::read_to_string(&track).unwrap(), "-254\n");
    }

    #[test]
    fn a_symlink_at_the_write_probe_or_its_temp_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = precious(dir.path());
        let state = dir.path().join("state");
        fs::DirBuilder::new().mode(0o700).create(&state).unwrap();
        std::os::unix::fs::symlink(&target, state.join(PROBE_FILE)).unwrap();
        let old_temp = state.join(format!(".{PROBE_FILE}.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&target, &old_temp).unwrap();
        let _s = StateDir::open(&state).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), PRECIOUS);
        assert!(
            fs::symlink_metadata(state.join(PROBE_FILE)).is_err(),
            "the probe replaced the link and was removed"
        );
    }

    #[test]
    fn a_symlink_or_a_hard_link_at_the_lock_is_refused_and_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = precious(dir.path());
        let state = dir.path().join("state");
        fs::DirBuilder::new().mode(0o700).create(&state).unwrap();
        std::os::unix::fs::symlink(&target, state.join(LOCK_FILE)).unwrap();
        let err = StateDir::open(&state).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{}/lock", state.display())) && err.contains("symbolic link"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), PRECIOUS);
        fs::remove_file(state.join(LOCK_FILE)).unwrap();
        fs::hard_link(&target, state.join(LOCK_FILE)).unwrap();
        let err = StateDir::open(&state).unwrap_err().to_string();
        assert!(err.contains("2 hard links"), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), PRECIOUS);
    }

    #[test]
    fn a_state_dir_others_could_change_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        fs::DirBuilder::new().mode(0o700).create(&state).unwrap();
        for (mode, why) in [
            (0o770, "writable by its group"),
            (0o707, "writable by others"),
            (0o777, "writable by its group and others"),
        ] {
            fs::set_permissions(&state, fs::Permissions::from_mode(mode)).unwrap();
            let err = StateDir::open(&state).unwrap_err().to_string();
            assert!(
                err.contains(&state.display().to_string()) && err.contains(why),
                "{err}"
            );
            assert!(
                fs::read_dir(&state).unwrap().next().is_none(),
                "nothing written"
            );
        }
        // The sticky bit keeps others from replacing what is ours (chmod(2)).
        fs::set_permissions(&state, fs::Permissions::from_mode(0o1777)).unwrap();
        StateDir::open(&state).unwrap();
        // A parent others could change is as bad as the directory itself.
        fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o775)).unwrap();
        let err = StateDir::open(&state).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        if nix::unistd::Uid::effective().is_root() {
            nix::unistd::chown(&state, Some(65534.into()), None).unwrap();
            let err = StateDir::open(&state).unwrap_err().to_string();
            assert!(err.contains("owned by uid 65534"), "{err}");
        }
    }
}
