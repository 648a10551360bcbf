//! Files handoff writes as root, made so that a file or symlink planted at
//! any of their names is never followed (docs/operations.md, "Security
//! model").
//!
//! Owns the rules every file handoff writes follows:
//!
//! * A new file is created exclusively (O_CREAT|O_EXCL|O_NOFOLLOW, and std's
//!   O_CLOEXEC) under a name nobody can guess (`.NAME.<random>.tmp`): a file
//!   or link already there is an error (EEXIST; open(2) never follows a
//!   symlink with O_EXCL), answered by another random name, [`TRIES`] times
//!   at most. Its mode is then set on the descriptor (fchmod), so the umask
//!   does not decide it. [`write_atomically`] renames it over the real name:
//!   rename(2) replaces a symlink there, it never writes through it.
//! * A lock file outlives its holder, so it cannot be created exclusively:
//!   it is opened with O_NOFOLLOW and, on the descriptor, must be a regular
//!   file owned by us with one link ([`open_lock`]).
//! * A directory handoff writes in (the state dir, the control socket's, the
//!   track file's) must be one that nobody else can change: it and every
//!   directory above it owned by root or us, and writable by neither group
//!   nor others unless sticky (chmod(2): in a sticky directory only a file's
//!   owner can remove or rename it) ([`check_dir`]). Checked at start,
//!   before the backend is touched.
//!
//! Does not own what the files hold (`crate::state`, `crate::maintenance`,
//! `crate::failover`), nor the control socket, which bind(2) creates
//! (`crate::control::server`, which uses [`temp_name`] and [`check_dir`]).

use std::{
    fmt::Write as _,
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use nix::{fcntl::OFlag, unistd::Uid};

/// Random names tried before giving up: one taken name is chance or a
/// planted file, this many in a row only a flood of them.
pub const TRIES: usize = 8;
/// Random bytes in a temp name (64 bits: not worth guessing).
const NAME_BYTES: usize = 8;

/// A file or directory handoff will not use, or could not.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Someone else could change it, or it is not what handoff made.
    #[error("refusing {what} {}: {}{why}", .path.display(), subject(.path, .culprit))]
    Unsafe {
        /// What it is for ("the state dir").
        what: &'static str,
        /// The path as configured.
        path: PathBuf,
        /// The path at fault: `path` or a directory above it.
        culprit: PathBuf,
        /// What is wrong with it.
        why: Why,
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

/// "it " or "/a, above it, ": who the reason is about.
fn subject(path: &Path, culprit: &Path) -> String {
    if path == culprit {
        "it ".into()
    } else {
        format!("{}, above it, ", culprit.display())
    }
}

/// What is wrong with a file or directory; each reads after "it ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Why {
    /// Owned by someone who is neither root nor us.
    #[error("is owned by uid {0}, neither root nor handoff's uid")]
    Owner(u32),
    /// Others may add, remove or rename entries in it.
    #[error(
        "is writable by {who} (mode {mode:04o}) without the sticky bit: make it writable by its owner only (chmod go-w)"
    )]
    Writable {
        /// "its group", "others" or "its group and others".
        who: &'static str,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a directory.
    #[error("is not a directory")]
    NotADirectory,
    /// A symlink where a file of ours belongs.
    #[error("is a symbolic link (not following it); remove it")]
    Symlink,
    /// Not a regular file.
    #[error("is not a regular file; remove it")]
    NotAFile,
    /// A hard link to a file elsewhere may be what it really is.
    #[error("has {0} hard links (one of them may be a file elsewhere); remove it")]
    Links(u64),
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError + use<> {
    let path = path.to_path_buf();
    move |source| FileError::Io { what, path, source }
}

fn unsafe_file(what: &'static str, path: &Path, culprit: &Path, why: Why) -> FileError {
    FileError::Unsafe {
        what,
        path: path.to_path_buf(),
        culprit: culprit.to_path_buf(),
        why,
    }
}

/// Hex of `bytes` random bytes from the kernel (random(4) on both OSes).
pub fn random_hex(bytes: usize) -> io::Result<String> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf))?;
    Ok(buf.iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    }))
}

/// The directory `path` is in ("." for a bare name).
pub fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A fresh name beside `path`, `.NAME.<random>.tmp`, that nobody can have
/// prepared a file or link at in advance.
pub fn temp_name(path: &Path) -> Result<PathBuf, FileError> {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let random = random_hex(NAME_BYTES).map_err(io_error("reading", Path::new("/dev/urandom")))?;
    Ok(dir_of(path).join(format!(".{name}.{random}.tmp")))
}

/// Binds a socket beside `path` under a fresh [`temp_name`] with `bind`
/// (bind(2) fails with EADDRINUSE on anything already there, a symlink
/// included, and never follows it), trying another name [`TRIES`] times at
/// most. The caller sets its mode and renames it into place.
pub fn bind_beside<S>(
    path: &Path,
    bind: impl Fn(&Path) -> io::Result<S>,
) -> Result<(S, PathBuf), FileError> {
    for _ in 0..TRIES {
        let temp = temp_name(path)?;
        match bind(&temp) {
            Ok(socket) => return Ok((socket, temp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                tracing::warn!(path = %temp.display(), "a random socket name was taken; trying another");
            }
            Err(e) => return Err(io_error("binding", &temp)(e)),
        }
    }
    Err(io_error("binding a temp socket for", path)(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("{TRIES} random names in a row were taken"),
    )))
}

/// Creates a new file beside `path` under a [`temp_name`], exclusively and
/// without following a link, with exactly `mode`.
fn create_temp(path: &Path, mode: u32) -> Result<(File, PathBuf), FileError> {
    for _ in 0..TRIES {
        let temp = temp_name(path)?;
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .mode(mode)
            .open(&temp);
        match created {
            Ok(file) => {
                let fixed = file.set_permissions(fs::Permissions::from_mode(mode));
                if let Err(e) = fixed {
                    let _ = fs::remove_file(&temp);
                    return Err(io_error("setting the mode of", &temp)(e));
                }
                return Ok((file, temp));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                tracing::warn!(path = %temp.display(), "a random temp name was taken; trying another");
            }
            Err(e) => return Err(io_error("creating", &temp)(e)),
        }
    }
    Err(io_error("creating a temp file for", path)(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{TRIES} random names in a row were taken"),
    )))
}

/// Writes `path` (mode 0600) so that a crash leaves the old or the new
/// content: a new temp file in the same directory (rename(2) is atomic only
/// within a file system), fsync, rename, fsync of the directory. Also used
/// for keepalived's `track_file`, whose inotify watch sees the rename
/// (IN_MOVED_TO).
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<(), FileError> {
    let dir = dir_of(path);
    let (mut file, temp) = create_temp(path, 0o600)?;
    let result = (|| {
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

/// fsync of a directory, which makes a rename or removal in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing", dir))
}

/// Opens the lock file `path` for reading and writing, creating it (0600)
/// if needed, without following a symlink; refuses anything but a regular
/// file of ours with one link, so that truncating it can only ever truncate
/// the lock.
pub fn open_lock(path: &Path) -> Result<File, FileError> {
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .mode(0o600)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        // O_NOFOLLOW's refusal of a symlink is ELOOP on Linux and OpenBSD
        // (open(2)).
        Err(e) if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) => {
            tracing::debug!(error = %e, "open(O_NOFOLLOW) refused a symlink");
            return Err(unsafe_file("the lock file", path, path, Why::Symlink));
        }
        Err(e) => return Err(io_error("opening", path)(e)),
    };
    let meta = file.metadata().map_err(io_error("inspecting", path))?;
    let why = if !meta.file_type().is_file() {
        Some(Why::NotAFile)
    } else if meta.uid() != Uid::effective().as_raw() {
        Some(Why::Owner(meta.uid()))
    } else if meta.nlink() != 1 {
        Some(Why::Links(meta.nlink()))
    } else {
        None
    };
    if let Some(why) = why {
        return Err(unsafe_file("the lock file", path, path, why));
    }
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_error("setting the mode of", path))?;
    Ok(file)
}

/// Refuses `dir` (`what`: "the state dir") when anyone but root and us
/// could change it or a directory above it: see the module's rules.
/// Directories that do not exist yet are skipped (handoff creates them).
/// Both the path as written and the path with its symlinks resolved are
/// checked.
pub fn check_dir(what: &'static str, dir: &Path) -> Result<(), FileError> {
    let dir = std::path::absolute(dir).map_err(io_error("resolving", dir))?;
    let mut chain: Vec<PathBuf> = dir.ancestors().map(Path::to_path_buf).collect();
    if let Some(real) = chain.iter().find_map(|p| fs::canonicalize(p).ok()) {
        chain.extend(real.ancestors().map(Path::to_path_buf));
    }
    let ours = Uid::effective().as_raw();
    for path in &chain {
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("inspecting", path)(e)),
        };
        let mode = meta.mode() & 0o7777;
        let why = if !meta.is_dir() {
            Some(Why::NotADirectory)
        } else if meta.uid() != 0 && meta.uid() != ours {
            Some(Why::Owner(meta.uid()))
        } else if mode & 0o1000 == 0 {
            match (mode & 0o020 != 0, mode & 0o002 != 0) {
                (true, true) => Some("its group and others"),
                (true, false) => Some("its group"),
                (false, true) => Some("others"),
                (false, false) => None,
            }
            .map(|who| Why::Writable { who, mode })
        } else {
            None
        };
        if let Some(why) = why {
            return Err(unsafe_file(what, &dir, path, why));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{DirBuilderExt, symlink};

    use super::*;

    #[test]
    fn temp_names_are_unpredictable_and_beside_the_file() {
        let a = temp_name(Path::new("/x/y/ledger")).unwrap();
        let b = temp_name(Path::new("/x/y/ledger")).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/x/y")));
        let name = a.file_name().unwrap().to_str().unwrap();
        let random = name
            .strip_prefix(".ledger.")
            .and_then(|rest| rest.strip_suffix(".tmp"));
        assert_eq!(random.map(str::len), Some(2 * NAME_BYTES), "{name}");
        assert_eq!(
            temp_name(Path::new("t")).unwrap().parent(),
            Some(Path::new("."))
        );
    }

    #[test]
    fn a_written_file_has_its_mode_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomically(&path, b"x").unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        // A link at the name is replaced, not written through.
        let target = dir.path().join("target");
        fs::write(&target, "keep").unwrap();
        fs::remove_file(&path).unwrap();
        symlink(&target, &path).unwrap();
        write_atomically(&path, b"y").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(fs::read_to_string(&path).unwrap(), "y");
        assert!(fs::symlink_metadata(&path).unwrap().is_file());
    }

    #[test]
    fn a_lock_must_be_a_regular_file_of_ours_with_one_link() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("lock");
        drop(open_lock(&lock).unwrap());
        drop(open_lock(&lock).expect("an existing lock is reused"));
        fs::remove_file(&lock).unwrap();
        // A FIFO (opened read-write, it does not block on Linux: fifo(7)).
        nix::unistd::mkfifo(&lock, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = open_lock(&lock).unwrap_err().to_string();
        assert!(err.contains("is not a regular file"), "{err}");
        fs::remove_file(&lock).unwrap();
        let target = dir.path().join("target");
        symlink(&target, &lock).unwrap();
        let err = open_lock(&lock).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        assert!(!target.exists(), "a dangling link is not created through");
    }

    #[test]
    fn the_reason_names_the_directory_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("a/b");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&inner)
            .unwrap();
        check_dir("the state dir", &inner.join("not-yet")).unwrap();
        let a = dir.path().join("a");
        fs::set_permissions(&a, fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_dir("the state dir", &inner).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "refusing the state dir {}: {}, above it, is writable by its group and others (mode 0777) without the sticky bit: make it writable by its owner only (chmod go-w)",
                inner.display(),
                a.display()
            )
        );
        fs::set_permissions(&a, fs::Permissions::from_mode(0o1777)).unwrap();
        check_dir("the state dir", &inner).unwrap();
        // A symlink to a directory others could change is resolved.
        let shared = dir.path().join("shared");
        fs::DirBuilder::new().mode(0o777).create(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let link = inner.join("link");
        symlink(&shared, &link).unwrap();
        let err = check_dir("the state dir", &link).unwrap_err().to_string();
        assert!(err.contains("writable by its group and others"), "{err}");
        let file = inner.join("file");
        fs::write(&file, "").unwrap();
        let err = check_dir("the state dir", &file).unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
    }
}
