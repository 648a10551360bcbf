//! Shared helpers for the black-box tests: a scratch directory with an event
//! log, the real `handoff` binary, and the fixture proxy.
//!
//! Waits are for events in the log or for process exits, each bounded by a
//! deadline; nothing sleeps and hopes.

#![allow(dead_code)]

pub mod anycast;
pub mod carp_sim;
pub mod consul;
pub mod hook_log;
pub mod netns;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

pub const HANDOFF: &str = env!("CARGO_BIN_EXE_handoff");
pub const FIXTURE: &str = env!("CARGO_BIN_EXE_handoff-fixture");

/// A generous bound for things that take milliseconds.
pub const SOON: Duration = Duration::from_secs(10);

/// CLOCK_MONOTONIC in nanoseconds, the clock of the event log.
pub fn now_ns() -> i128 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    i128::from(now.tv_sec()) * 1_000_000_000 + i128::from(now.tv_nsec())
}

/// Appends an event to `log` in the fixture's format, from the test itself.
pub fn append_event(log: &Path, what: &str) {
    append_event_at(log, now_ns(), what);
}

/// Appends an event seen at `ns` (CLOCK_MONOTONIC), for an observation that
/// took a while: it is logged at the time it began, not when it ended.
pub fn append_event_at(log: &Path, ns: i128, what: &str) {
    use std::io::Write;
    let line = format!("{ns} {} {what}\n", std::process::id());
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open event log");
    file.write_all(line.as_bytes()).expect("write event log");
}

/// Whether this run is CI's (`CI` set, as CI services set it, `CI=true`):
/// there every test must run its subject.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The one way a test gives up on a subject this machine cannot run (no
/// root, no keepalived, no mandoc...): under CI it fails the test, since a
/// skipped test passes silently; by hand it writes `SKIPPED: <test>: <why>`
/// straight to stderr (libtest captures `eprintln!` of passing tests), and
/// `scripts/test` counts those lines. Call it, then return:
///
/// ```ignore
/// if !is_root { return common::skip("needs root"); }
/// ```
pub fn skip(why: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    assert!(
        !under_ci(),
        "CI must run {test}, but {why} (CI runs scripts/test as root, which installs what the tests need)"
    );
    // One write, with a newline first, so the line starts a line of its own
    // among libtest's output.
    let _ = std::io::stderr().write_all(format!("\nSKIPPED: {test}: {why}\n").as_bytes());
}

/// Whether `tool` is on PATH; if not, [`skip`]s with that reason.
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        skip(&format!("{tool} is not installed"));
    }
    found
}

/// Whether this runs as root; if not, [`skip`]s saying what root is for.
pub fn root(for_what: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        skip(&format!("needs root {for_what}"));
    }
    root
}

/// Writes an executable script at `path`, through a child `sh`, so that no
/// file descriptor open for writing it ever exists in this (multi-threaded)
/// test process: a process another test forks at that moment would inherit
/// it until its own exec, and any exec of the script meanwhile fails with
/// ETXTBSY ("Text file busy"; rust-lang/rust#114554). Write scripts once,
/// before anything runs them: a rewrite while one runs fails the same way.
pub fn write_executable(path: &Path, text: &str) {
    use std::io::Write;
    let mut child = Command::new("sh")
        .args([
            "-c",
            "umask 022 && cat > \"$1.tmp\" && chmod 755 \"$1.tmp\" && mv \"$1.tmp\" \"$1\"",
            "sh",
        ])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn sh to write a script");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("write the script to sh");
    let status = child.wait().expect("wait for sh");
    assert!(status.success(), "writing {} failed", path.display());
}

/// One line of the event log.
#[derive(Debug, Clone)]
pub struct Event {
    pub ns: i128,
    pub pid: i32,
    pub what: String,
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Lab {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("events.log");
        Lab { dir, log }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `handoff.toml` (with `{fixture}` and `{log}` and `{dir}`
    /// expanded), plus [`Lab::isolation`] for the sections it lacks.
    pub fn config(&self, text: &str) -> PathBuf {
        self.config_named("handoff.toml", text)
    }

    /// [`Lab::config`] under another file name.
    pub fn config_named(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        let mut text = text.to_string();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&Self::isolation(&text));
        fs::write(&path, self.expand(&text)).expect("write config");
        path
    }

    /// The sections that keep this lab's agent to itself, for those `text`
    /// lacks: the defaults (/run/handoff/handoff.sock, /var/lib/handoff,
    /// 127.0.0.1:9480) are one per host, and tests run in parallel.
    pub fn isolation(text: &str) -> String {
        let mut extra = String::new();
        if !text.contains("[control]") {
            extra.push_str(
                "[control]\nsocket = \"{dir}/handoff.sock\"\nstate_dir = \"{dir}/handoff-state\"\n",
            );
        }
        if !text.contains("[http]") {
            extra.push_str("[http]\nlisten = \"127.0.0.1:0\"\n");
        }
        extra
    }

    /// The control socket of [`Lab::isolation`].
    pub fn socket(&self) -> PathBuf {
        self.path("handoff.sock")
    }

    /// A config with nothing but [`Lab::isolation`], for agents started
    /// without one of their own.
    pub fn base_config(&self) -> PathBuf {
        let path = self.path("base.toml");
        if !path.exists() {
            fs::write(&path, self.expand(&Self::isolation(""))).expect("write base config");
        }
        path
    }

    pub fn expand(&self, text: &str) -> String {
        text.replace("{fixture}", FIXTURE)
            .replace("{log}", self.log.to_str().expect("utf-8 path"))
            .replace("{dir}", self.dir.path().to_str().expect("utf-8 path"))
    }

    /// A `[failover.command]` section whose commands log to the event log;
    /// `state` prints the content of `{dir}/state`.
    pub fn command_backend(&self, state: &str, extra: &str) -> String {
        fs::write(self.path("state"), state).expect("write state");
        format!(
            "[failover]\nbackend = \"command\"\n{extra}\n[failover.command]\n\
             demote = [\"{{fixture}}\", \"record\", \"--log\", \"{{log}}\", \"demote\"]\n\
             promote = [\"{{fixture}}\", \"record\", \"--log\", \"{{log}}\", \"promote\"]\n\
             state = [\"{{fixture}}\", \"record\", \"--log\", \"{{log}}\", \"state\", \"--print-file\", \"{{dir}}/state\"]\n"
        )
    }

    /// `fixture proxy --log LOG ARGS...`
    pub fn proxy(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            FIXTURE.to_string(),
            "proxy".into(),
            "--log".into(),
            self.log.display().to_string(),
        ];
        v.extend(args.iter().map(|s| (*s).to_string()));
        v
    }

    /// Starts `handoff --config C run -- PROXY...` with stderr captured to a
    /// file; without `config`, [`Lab::base_config`].
    pub fn run(&self, config: Option<&Path>, proxy: &[String]) -> Handoff {
        let mut cmd = self.agent_command(config);
        cmd.arg("run").arg("--").args(proxy);
        Handoff::spawn(cmd, self.path("handoff.stderr"))
    }

    /// `handoff --config C` for an agent: [`Lab::base_config`] without `config`.
    pub fn agent_command(&self, config: Option<&Path>) -> Command {
        let base = self.base_config();
        self.handoff_command(Some(config.unwrap_or(&base)))
    }

    /// `handoff`, with `--config` only when `config` is given (without it,
    /// the default location is a file that does not exist).
    #[allow(clippy::unused_self)] // a method so every test reads lab.handoff_command(...)
    pub fn handoff_command(&self, config: Option<&Path>) -> Command {
        let mut cmd = Command::new(HANDOFF);
        cmd.env_remove("HANDOFF_CONFIG")
            .env_remove("NOMAD_ALLOC_ID")
            .env("RUST_LOG", "info");
        match config {
            Some(c) => cmd.arg("--config").arg(c),
            // No config: point at a default that does not exist.
            None => cmd.env("HANDOFF_CONFIG", ""),
        };
        cmd
    }

    pub fn events(&self) -> Vec<Event> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let mut events: Vec<Event> = text
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ' ');
                Some(Event {
                    ns: parts.next()?.parse().ok()?,
                    pid: parts.next()?.parse().ok()?,
                    what: parts.next()?.to_string(),
                })
            })
            .collect();
        // In time order, not the order of the writes: several processes
        // append, and a look logged at its start (`append_event_at`) is
        // written after what happened while it ran. Stable, so one
        // process's lines keep their order.
        events.sort_by_key(|e| e.ns);
        events
    }

    /// The event lines' `what`, in order.
    pub fn whats(&self) -> Vec<String> {
        self.events().into_iter().map(|e| e.what).collect()
    }

    /// Waits until an event starting with `prefix` is logged; returns it.
    pub fn wait_for(&self, prefix: &str) -> Event {
        let deadline = Instant::now() + SOON;
        loop {
            if let Some(e) = self
                .events()
                .into_iter()
                .find(|e| e.what.starts_with(prefix))
            {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {prefix:?} event within {SOON:?}; log: {:#?}",
                self.whats()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until `n` events start with `prefix`.
    pub fn wait_for_count(&self, prefix: &str, n: usize) {
        let deadline = Instant::now() + SOON;
        while self.count(prefix) < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} {prefix:?} events; log: {:#?}",
                self.whats()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for an event `<word> <pid>` (as the fixture logs its children)
    /// and returns the pid.
    pub fn logged_pid(&self, word: &str) -> i32 {
        let what = self.wait_for(&format!("{word} ")).what;
        what[word.len() + 1..]
            .parse()
            .unwrap_or_else(|_| panic!("no pid in {what:?}"))
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e.what.starts_with(prefix))
            .count()
    }

    /// `handoff status --json` through `config`'s socket; it must answer.
    pub fn status_json(&self, config: &Path) -> serde_json::Value {
        let (code, out, err) = output(
            self.handoff_command(Some(config))
                .args(["status", "--json"]),
        );
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).expect("status JSON")
    }

    /// Index of the first event starting with `prefix`.
    pub fn position(&self, prefix: &str) -> Option<usize> {
        self.events()
            .iter()
            .position(|e| e.what.starts_with(prefix))
    }
}

/// A running handoff.
pub struct Handoff {
    pub child: Child,
    pub stderr: PathBuf,
}

impl Handoff {
    pub fn spawn(mut cmd: Command, stderr: PathBuf) -> Handoff {
        let file = fs::File::create(&stderr).expect("stderr file");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(file);
        let child = cmd.spawn().expect("spawn handoff");
        Handoff { child, stderr }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid"))
    }

    /// The pid of the sentinel the agent started last (its log line).
    pub fn sentinel_pid(&self) -> i32 {
        let log = self.log();
        let at = log
            .rfind("sentinel started pid=")
            .unwrap_or_else(|| panic!("no sentinel started:\n{log}"));
        log[at + "sentinel started pid=".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("a pid")
    }

    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("signal handoff");
    }

    /// Waits for exit within `limit`; SIGKILLs and fails the test otherwise.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "handoff did not exit within {limit:?}; stderr:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for exit and returns the exit code, failing if handoff itself
    /// was killed by a signal.
    pub fn code(&mut self, limit: Duration) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        let status = self.wait(limit);
        match status.code() {
            Some(code) => code,
            None => panic!(
                "handoff died by signal {:?}; stderr:\n{}",
                status.signal(),
                self.log()
            ),
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The address handoff logged as `http listening listen=ADDR`.
    pub fn http_address(&self) -> String {
        self.wait_log("http listening listen=");
        let log = self.log();
        let at =
            log.find("http listening listen=").expect("logged") + "http listening listen=".len();
        log[at..]
            .split_whitespace()
            .next()
            .expect("an address")
            .to_owned()
    }

    /// Waits until handoff has taken SIGTERM over (blocked for its reader,
    /// or caught): from then on a SIGTERM is a stop, not a default death.
    pub fn wait_until_blocked(&self) {
        const TERM_BIT: u64 = 1 << (15 - 1);
        let deadline = Instant::now() + SOON;
        loop {
            let mask = |field| {
                status_field(self.pid().as_raw(), field)
                    .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
                    .unwrap_or(0)
            };
            if (mask("SigBlk:") | mask("SigCgt:")) & TERM_BIT != 0 {
                return;
            }
            assert!(Instant::now() < deadline, "handoff never blocked SIGTERM");
            std::hint::spin_loop();
        }
    }

    /// Fails unless handoff's own log contains `text`.
    pub fn assert_logged(&self, text: &str) {
        let log = self.log();
        assert!(log.contains(text), "handoff did not log {text:?}:\n{log}");
    }

    /// Waits until handoff's own log contains `text`.
    pub fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + SOON;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "handoff never logged {text:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        // A failed test (or one that ends with its agent running) must not
        // leave its handoff, proxy or sentinel running. The proxy shares the
        // test runner's process group, and on the portable build no
        // parent-death signal takes it with the agent; the agent's sentinel
        // would kill it, but only after locking the state dir, which the
        // lab's drop is about to remove. So: named first, killed after.
        if let Ok(None) = self.child.try_wait() {
            let left = descendants(self.pid().as_raw());
            let _ = self.child.kill();
            let _ = self.child.wait();
            for pid in left {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Every process below `root` now (children first found through
/// /proc/PID/task/*/children), bounded at 256 against a runaway walk.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() && found.len() < 256 {
        let pid = found[next];
        next += 1;
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            found.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    found.remove(0);
    found
}

/// Runs `cmd` to its end: (exit code, stdout, stderr). Fails the test if
/// the command died by a signal.
pub fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run handoff");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Whether /proc still has an entry for `pid` (alive or zombie).
pub fn exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until `pid` has no /proc entry at all (dead and reaped).
pub fn wait_gone(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while exists(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// A field of /proc/<pid>/status, e.g. "SigBlk:".
pub fn status_field(pid: i32, name: &str) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
}

/// The pid in the first "start" event (the proxy's).
pub fn proxy_pid(lab: &Lab) -> i32 {
    lab.wait_for("start").pid
}

/// The pid of the proxy that agent `agent` started (its `start ppid=`
/// event), when several agents share one event log.
pub fn proxy_pid_of(lab: &Lab, agent: i32) -> i32 {
    let started = format!("start ppid={agent} ");
    let deadline = Instant::now() + SOON;
    loop {
        if let Some(e) = lab.events().iter().find(|e| e.what.starts_with(&started)) {
            return e.pid;
        }
        assert!(Instant::now() < deadline, "agent {agent} started no proxy");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `request` as is to `addr` and reads until the server closes:
/// (status code, 0 if none; body). `None` when nothing accepts.
pub fn http_send(addr: &str, request: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(SOON)).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    // A server that cuts the connection still said what it said.
    let _ = stream.read_to_string(&mut answer);
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

/// `N` distinct loopback TCP ports free right now: all held until all are
/// chosen, so none is picked twice; released for the caller's servers.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect();
    ports.try_into().expect("N ports")
}

/// The repository's `path`.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Where `tool` is: on PATH, or in the sbin directories a user's PATH lacks.
pub fn locate(tool: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .ok()?;
    let found = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && found.starts_with('/') {
        return Some(PathBuf::from(found));
    }
    ["/usr/sbin", "/usr/local/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.is_file())
}
