//! The agent's side of the control socket.
//!
//! Owns: binding the socket safely, checking who connects, and answering
//! one request per connection without ever letting a client hurt the agent.
//!
//! * The socket's directory must be one nobody but root and us can change
//!   (`crate::files::check_dir`), checked before anything is created in it.
//!   A directory that holds nothing but the socket (the default
//!   /run/handoff, systemd's `RuntimeDirectory=handoff`) is the socket's
//!   own: handoff creates it if needed and sets its mode on its descriptor,
//!   0700, or 0750 and `[control] group`, so that only root and the group
//!   can reach the socket at all (fchmod(2) on a socket changes nothing
//!   that connect(2) checks, hence a directory). A shared directory (the
//!   deprecated /var/run/handoff.sock) keeps its mode.
//! * A lock file next to the socket (`<socket>.lock`, flock(2), opened
//!   without following a symlink) says which agent owns the path, so a
//!   second agent is refused even when it uses another state dir, and a
//!   live socket is never deleted. A socket file nobody listens on
//!   (ECONNREFUSED: left by a SIGKILLed agent) is replaced.
//! * The socket is bound under a random temporary name (bind(2) fails on
//!   anything already there, a symlink included), given its mode (0600, or
//!   0660 and the group) and only then renamed into place, so it is never
//!   reachable with the umask's mode.
//! * Peer credentials (SO_PEERCRED on Linux, getpeereid(2) on OpenBSD, both
//!   through tokio's `peer_cred`) are checked on every connection as well:
//!   root, the agent's own uid and members of `group` are let in.
//! * Requests are bounded: 64 KiB, one line, 2 s to arrive; at most
//!   [`MAX_CONNECTIONS`] at once, the rest waiting in the listen backlog. A
//!   bad client gets an error response (or a closed connection) and the
//!   agent carries on.

use std::{
    fs::{self, File},
    io,
    os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use nix::{
    fcntl::{Flock, OFlag},
    unistd::{Gid, Group, Uid, User},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{Mutex, Semaphore},
};

use super::{
    Ask, Inbox,
    protocol::{Command, MAX_REQUEST, Response, parse_request},
};
use crate::{
    files::{self, FileError},
    host::unix_now,
    maintenance::{Maintenance, RecordError},
    state::{Holder, LockFailure, StateDir, holder_suffix, take_lock},
};

/// How long a client has to send its request, and to take the answer.
pub const IO_LIMIT: Duration = Duration::from_secs(2);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 16;
/// How long the loop may take to answer.
const LOOP_LIMIT: Duration = Duration::from_secs(5);
/// Most `reload` requests waiting for an outcome at once (each holds a
/// connection slot for up to twice `reload_timeout`).
const RELOADS_WAITING: usize = 4;

/// The control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another agent holds the socket's lock.
    #[error("another handoff{} owns the control socket {}; stop it first", holder_suffix(.holder.as_deref()), .path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
        /// The pid the holder wrote.
        holder: Option<String>,
    },
    /// Something answers on the socket although nobody holds its lock.
    #[error("something answers on the control socket {}; not replacing a live socket", .path.display())]
    Live {
        /// The socket.
        path: PathBuf,
    },
    /// The path is taken by something that is not a socket.
    #[error("{} exists and is not a socket; not replacing it", .path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
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
    /// The socket's directory or lock is unsafe, or could not be used.
    #[error(transparent)]
    File(#[from] FileError),
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ControlError + use<> {
    let path = path.to_path_buf();
    move |source| ControlError::Io { what, path, source }
}

/// A bound control socket; the file is removed when this is dropped.
#[derive(Debug)]
pub struct ControlSocket {
    listener: std::os::unix::net::UnixListener,
    guard: SocketGuard,
}

#[derive(Debug)]
struct SocketGuard {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        // Ours: nobody else can bind this path while we hold the lock.
        let _ = fs::remove_file(&self.path);
    }
}

/// Who may use the socket besides root.
#[derive(Debug, Clone)]
pub struct Access {
    own_uid: u32,
    group: Option<(String, Gid)>,
}

impl Access {
    /// Root, this process's uid, and the members of `group`.
    pub fn new(group: Option<(String, Gid)>) -> Access {
        Access {
            own_uid: Uid::effective().as_raw(),
            group,
        }
    }

    /// Whether `uid` (with primary `gid`) may use the socket; the refusal
    /// says who may.
    async fn check(&self, uid: u32, gid: u32) -> Result<(), String> {
        if uid == 0 || uid == self.own_uid {
            return Ok(());
        }
        if let Some((name, group)) = &self.group {
            let (name, group) = (name.clone(), *group);
            // NSS lookups may block (LDAP): off the loop's thread.
            let member = tokio::task::spawn_blocking(move || {
                gid == group.as_raw() || is_member(uid, &name, group)
            })
            .await
            .unwrap_or(false);
            if member {
                return Ok(());
            }
        }
        let who = match &self.group {
            Some((name, _)) => format!("root and members of group `{name}`"),
            None => "root".to_owned(),
        };
        Err(format!(
            "permission denied: uid {uid} may not use the control socket (only {who} may)"
        ))
    }
}

/// Whether the user `uid` is listed as a member of `group` (group(5)).
fn is_member(uid: u32, name: &str, group: Gid) -> bool {
    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
    let group = Group::from_gid(group).ok().flatten();
    if let (Some(user), Some(group)) = (user, group) {
        user.gid == group.gid || group.mem.contains(&user.name)
    } else {
        tracing::debug!(uid, name, "cannot look up the user or the group");
        false
    }
}

impl ControlSocket {
    /// Claims `path` for this agent: refuses a directory others could
    /// change, makes the socket's own directory private to root and `group`,
    /// takes `<socket>.lock` and refuses when another agent owns the path or
    /// anything answers on it. Nothing is bound yet: the start claims the
    /// node first, demotes it, and only then binds ([`Claim::bind`]).
    pub fn claim(path: &Path, group: Option<Gid>) -> Result<Claim, ControlError> {
        let dir = files::dir_of(path);
        files::check_dir("the control socket's directory", dir)?;
        let created = create_dir(dir)?;
        let lock = lock(path)?;
        if created || holds_only_the_socket(dir, path)? {
            make_private(dir, group)?;
        }
        match fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ControlError::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(ControlError::Live {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing a stale control socket (nobody listens on it)");
                }
                Err(e) => return Err(io_error("probing", path)(e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("inspecting", path)(e)),
        }
        Ok(Claim {
            path: path.to_path_buf(),
            lock,
            group,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.guard.path
    }

    /// Serves requests until the task is dropped; keeps `self` (and so the
    /// file) alive meanwhile. `state` is where maintenance is recorded;
    /// `reload_timeout` bounds a reload (the machine ends it then), and a
    /// `reload` request is answered within a margin of it.
    pub async fn serve(
        self,
        access: Access,
        inbox: Inbox,
        state: Arc<StateDir>,
        reload_timeout: Duration,
    ) {
        let listener = match UnixListener::from_std(self.listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "cannot serve the control socket");
                return;
            }
        };
        let _guard = self.guard;
        let context = Arc::new(Context {
            access,
            inbox,
            state,
            writes: Mutex::new(()),
            // A request that arrives mid-reload waits for the rest of that
            // one and all of the next: up to twice reload_timeout (the
            // machine ends each at reload_timeout; a second is a margin).
            reload_limit: reload_timeout * 2 + Duration::from_secs(1),
            reloads: Semaphore::new(RELOADS_WAITING),
        });
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            // Wait for a free slot before accepting: further clients queue in
            // the kernel's backlog, and a slot frees within IO_LIMIT at most
            // (a `reload` waiting for its outcome holds one longer, but only
            // RELOADS_WAITING of them can), so half-open connections can
            // delay `status` but never lock it out.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(%error, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let context = context.clone();
            tokio::spawn(async move {
                context.handle(stream).await;
                drop(slot);
            });
        }
    }
}

/// A control socket path this agent owns (its lock is held) but has not
/// bound yet.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    lock: Flock<File>,
    group: Option<Gid>,
}

impl Claim {
    /// Binds the claimed path with mode 0600, or 0660 and the group,
    /// replacing a stale socket.
    pub fn bind(self) -> Result<ControlSocket, ControlError> {
        let Claim { path, lock, group } = self;
        let path = path.as_path();
        let (listener, temp) =
            files::bind_beside(path, |p| std::os::unix::net::UnixListener::bind(p))?;
        let placed = (|| {
            // By path: fchmod(2) on the socket's descriptor leaves the file
            // alone. Safe: the name is random and fresh, and nobody but root
            // and us can replace it in a directory `claim` checked (in a
            // sticky one, only its owner: chmod(2)).
            let mode = if group.is_some() { 0o660 } else { 0o600 };
            fs::set_permissions(&temp, fs::Permissions::from_mode(mode))?;
            if let Some(gid) = group {
                std::os::unix::fs::lchown(&temp, None, Some(gid.as_raw()))?;
            }
            fs::rename(&temp, path)
        })();
        if let Err(e) = placed {
            let _ = fs::remove_file(&temp);
            return Err(io_error("placing", path)(e));
        }
        listener
            .set_nonblocking(true)
            .map_err(io_error("configuring", path))?;
        Ok(ControlSocket {
            listener,
            guard: SocketGuard {
                path: path.to_path_buf(),
                _lock: lock,
            },
        })
    }
}

/// Creates the socket's directory (its parents 0755, itself 0700) unless it
/// exists; whether it was created.
fn create_dir(dir: &Path) -> Result<bool, ControlError> {
    if dir.exists() {
        return Ok(false);
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_error("creating", parent))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_error("creating", dir)(e)),
    }
}

/// Whether `dir` holds nothing but the socket at `path`, its lock, the
/// proxy's notify socket and their temp names, and is not sticky (a sticky directory is shared by design):
/// then it is the socket's own, and its mode is the socket's access.
fn holds_only_the_socket(dir: &Path, path: &Path) -> Result<bool, ControlError> {
    let sticky = fs::metadata(dir)
        .map_err(io_error("inspecting", dir))?
        .mode()
        & 0o1000
        != 0;
    if sticky {
        return Ok(false);
    }
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(false);
    };
    // `<socket>.notify` is the proxy's notify socket (`crate::proxy_notify`).
    let (lock, notify, temp) = (
        format!("{name}.lock"),
        format!("{name}.notify"),
        format!(".{name}."),
    );
    for entry in fs::read_dir(dir).map_err(io_error("listing", dir))? {
        let entry = entry.map_err(io_error("listing", dir))?;
        let entry = entry.file_name().to_string_lossy().into_owned();
        let is_temp = entry
            .strip_prefix(&temp)
            .is_some_and(|rest| rest.strip_suffix(".tmp").is_some());
        if entry != name && entry != lock && entry != notify && !is_temp {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Sets the socket's own directory to 0700, or 0750 and `group`, on its
/// descriptor (opened without following a symlink: a directory reached
/// through one is left as it is).
fn make_private(dir: &Path, group: Option<Gid>) -> Result<(), ControlError> {
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
        .open(dir);
    let handle = match opened {
        Ok(handle) => handle,
        Err(error) => {
            tracing::debug!(dir = %dir.display(), %error, "not setting the mode of the socket's directory");
            return Ok(());
        }
    };
    if let Some(gid) = group {
        std::os::unix::fs::fchown(&handle, None, Some(gid.as_raw()))
            .map_err(io_error("setting the group of", dir))?;
    }
    let mode = if group.is_some() { 0o750 } else { 0o700 };
    handle
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_error("setting the mode of", dir))
}

/// `<socket>.lock`, held for as long as the agent owns the socket.
fn lock(path: &Path) -> Result<Flock<File>, ControlError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    take_lock(Path::new(&name), Holder::Agent).map_err(|failure| match failure {
        LockFailure::Held { holder } => ControlError::InUse {
            path: path.to_path_buf(),
            holder,
        },
        LockFailure::File(e) => ControlError::File(e),
    })
}

/// What every connection needs.
struct Context {
    access: Access,
    inbox: Inbox,
    state: Arc<StateDir>,
    /// Maintenance changes, one at a time.
    writes: Mutex<()>,
    /// How long a `reload` may take to end once the loop took it.
    reload_limit: Duration,
    /// `reload` requests waiting for their outcome.
    reloads: Semaphore,
}

impl Context {
    async fn handle(&self, mut stream: UnixStream) {
        let response = self.answer(&mut stream).await;
        if let Some(error) = &response.error {
            tracing::info!(%error, "control request refused");
        }
        let mut line = serde_json::to_string(&response).unwrap_or_else(|e| {
            format!(
                r#"{{"version":{},"error":"cannot encode the answer: {e}","status":null}}"#,
                super::protocol::VERSION
            )
        });
        line.push('\n');
        // A client that does not read its answer only loses it.
        let _ = tokio::time::timeout(IO_LIMIT, stream.write_all(line.as_bytes())).await;
        let _ = tokio::time::timeout(IO_LIMIT, stream.shutdown()).await;
    }

    async fn answer(&self, stream: &mut UnixStream) -> Response {
        let (uid, gid) = match stream.peer_cred() {
            Ok(cred) => (cred.uid(), cred.gid()),
            Err(e) => return Response::error(format!("cannot read the peer's credentials: {e}")),
        };
        if let Err(why) = self.access.check(uid, gid).await {
            return Response::error(why);
        }
        let line = match read_request(stream).await {
            Ok(line) => line,
            Err(why) => return Response::error(why),
        };
        match parse_request(&line) {
            Ok(request) => self.execute(request.command, uid).await,
            Err(why) => Response::error(why),
        }
    }

    async fn execute(&self, command: Command, uid: u32) -> Response {
        match command {
            Command::Status => self.ask(Ask::Status).await,
            Command::Demote { reason } => {
                self.change_maintenance("record", move |state| {
                    let record = Maintenance::set(state, reason.as_ref(), uid, unix_now())?;
                    tracing::info!(uid, reason = %record.reason, "maintenance set: holding this node at standby");
                    Ok(Some(record))
                })
                .await
            }
            Command::Promote => {
                self.change_maintenance("clear", move |state| {
                    let old = Maintenance::clear(state)?;
                    tracing::info!(uid, was = old.is_some(), "maintenance cleared");
                    Ok(None)
                })
                .await
            }
            Command::Reload => {
                // Each waits up to twice reload_timeout on a connection
                // slot: a few at a time, so `status` always gets one.
                let Ok(_waiting) = self.reloads.try_acquire() else {
                    return Response::error(format!(
                        "reload refused: {RELOADS_WAITING} reloads are waiting already"
                    ));
                };
                tracing::info!(uid, source = "control", "reload requested");
                match self.inbox.reload(LOOP_LIMIT, self.reload_limit).await {
                    Ok(Ok(done)) => Response::reloaded(done),
                    // The reloader's words: "reload failed: ..." or
                    // "reload refused: ...".
                    Ok(Err(why)) => Response::error(why),
                    Err(why) => Response::error(why),
                }
            }
        }
    }

    /// Writes the maintenance record (off the loop's thread: it fsyncs) and
    /// tells the loop, one change at a time from the file to the loop, so
    /// that the two never disagree about which change came last.
    async fn change_maintenance(
        &self,
        verb: &str,
        change: impl FnOnce(&StateDir) -> Result<Option<Maintenance>, RecordError> + Send + 'static,
    ) -> Response {
        let _one_at_a_time = self.writes.lock().await;
        let state = self.state.clone();
        match tokio::task::spawn_blocking(move || change(&state)).await {
            Ok(Ok(record)) => self.ask(Ask::Maintenance(record)).await,
            Ok(Err(why)) => Response::error(format!("cannot {verb} maintenance: {why}")),
            Err(why) => Response::error(format!("cannot {verb} maintenance: {why}")),
        }
    }

    async fn ask(&self, ask: Ask) -> Response {
        match self.inbox.ask(ask, LOOP_LIMIT).await {
            Ok(status) => Response::ok(status),
            Err(why) => Response::error(why),
        }
    }
}

/// Reads one newline-terminated request of at most [`MAX_REQUEST`] bytes
/// within [`IO_LIMIT`].
async fn read_request(stream: &mut UnixStream) -> Result<String, String> {
    let mut buf = Vec::new();
    let limit = u64::try_from(MAX_REQUEST).unwrap_or(u64::MAX) + 1;
    let mut reader = BufReader::new(stream.take(limit));
    match tokio::time::timeout(IO_LIMIT, reader.read_until(b'\n', &mut buf)).await {
        Err(_) => {
            return Err(format!(
                "no complete request within {}s",
                IO_LIMIT.as_secs()
            ));
        }
        Ok(Err(e)) => return Err(format!("reading the request: {e}")),
        Ok(Ok(_)) => {}
    }
    if buf.len() > MAX_REQUEST {
        return Err(format!("request longer than {} KiB", MAX_REQUEST / 1024));
    }
    if buf.last() != Some(&b'\n') {
        return Err("the request ended before its newline".into());
    }
    String::from_utf8(buf).map_err(|_| "the request is not UTF-8".into())
}
