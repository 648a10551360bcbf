//! Signals: blocked from the first line of `main`, then read (a signalfd on
//! Linux, sigwait elsewhere) by two threads, SIGCHLD by the reaper's and
//! every other signal by the signal reader's, and turned into events. No
//! signal handler is ever installed.
//!
//! Why blocked-and-read instead of handlers (signal-hook, tokio::signal):
//! * A signal that arrives before a handler is registered takes its default
//!   action and kills handoff. Blocking it in `main`, before the runtime and
//!   any other thread exist (threads inherit the mask), leaves it pending
//!   instead, and it is read once the reader starts: nothing is lost.
//! * A handler is inherited by the forked child until exec. Once the child's
//!   mask is cleared, a group-wide signal in that window would run our
//!   handler in the child, write to the parent's self-pipe, and be seen
//!   twice, turning one ^C into "second stop signal". With no handler the
//!   child simply gets the default action, as the proxy itself would.
//! * The child inherits the blocked mask; `crate::process` clears it between
//!   fork and exec, after resetting dispositions, so the proxy starts with an
//!   empty mask and default dispositions.
//!
//! SIGCHLD is consumed here: the reader runs the reaper (`Children::reap`) at
//! once, so exit statuses never wait behind a busy event loop.
//!
//! Signals the machine routes ([`FastPath`]) are sent on by the reader
//! itself, at once, and still reported to the loop, marked as sent.
//!
//! The one window no program can close: a signal delivered after exec but
//! before `main`'s first line (kernel exec, the dynamic loader, std's start-up)
//! takes its default action whatever the program does. Measured on this
//! 2-core machine, even a static C program that blocks SIGTERM on its first
//! line runs 0.2-6 ms after `spawn()` returned in its parent. Only a mask
//! inherited across exec covers that; `tests/early_signals.rs` tests both.

use std::{
    sync::{Arc, PoisonError, RwLock},
    thread,
    time::Duration,
};

use nix::{
    sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask},
    unistd::Pid,
};
use tokio::sync::mpsc;

use crate::{
    platform::{self, Received, SignalReader},
    process::{Children, Group},
};

/// Signals passed to the proxy unchanged (spec: Lifecycle, Running):
/// haproxy pauses and resumes its listeners on SIGTTOU/SIGTTIN, and SIGCONT
/// resumes a proxy that was stopped together with handoff's process group.
/// The proxy's own `stop_signal` is taken out of this list: sent to handoff
/// it is a planned stop (`crate::machine`).
pub const PASS_THROUGH: [Signal; 7] = [
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGQUIT,
    Signal::SIGCONT,
];

/// Signals that start or escalate the stop sequence.
pub const STOP: [Signal; 2] = [Signal::SIGINT, Signal::SIGTERM];

/// Every signal handoff takes over: every catchable one (and, on Linux, the
/// real-time ones), so that none can kill or stop handoff by its default
/// action behind the node's back (SIGALRM, SIGPWR, SIGTSTP, ...); what each
/// one does is decided by the machine (handoff(8), SIGNALS).
///
/// SIGKILL and SIGSTOP cannot be caught. SIGPIPE is left out: Rust's start-up
/// sets it to SIG_IGN (a write to a closed socket then fails with EPIPE), and
/// a blocked signal is queued even when ignored, which would log every
/// client that hangs up.
pub fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for signal in Signal::iterator() {
        if !matches!(signal, Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGPIPE) {
            set.add(signal);
        }
    }
    platform::with_realtime_signals(set)
}

/// Blocks every handled signal in the calling thread. Call it first in
/// `main`, while there is only one thread, so every later thread inherits it.
pub fn block() -> nix::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled()), None)
}

/// Undoes [`block`] for subcommands that are ordinary short-lived CLI tools,
/// where ^C should simply end them.
pub fn unblock() -> nix::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&handled()), None)
}

/// The signal reader's forwarding table: which received signals it sends to
/// the proxy itself, at once, before the loop hears of them (issue 17: a
/// forwarded SIGHUP as fast as tini's). The machine decides the routes
/// (`Action::FastPath`, only signals whose whole decision is "send this to
/// the proxy"); the dispatcher sets them here with the proxy it runs. The
/// signal still reaches the loop, marked as sent (`Received::forwarded`),
/// so the machine logs and counts it and does not send it again.
///
/// The pid rule: the send goes through [`Children::signal`], which signals a
/// pid only while it is in the registry, checked under the lock the reaper
/// holds around `waitpid`. A proxy's pid stays ours until we reap it, so
/// the reader can never signal a reaped (and maybe reused) pid, whatever
/// the table still says. The table is otherwise only as fresh as the
/// machine's last batch (the route change comes first in it), and a signal
/// sent by a table gone stale in between (the proxy exited, the stop began)
/// was sent to our own proxy while it was ours: the machine logs it as
/// forwarded (`Machine::on_forwarded`).
#[derive(Debug, Clone, Default)]
pub struct FastPath {
    table: Arc<RwLock<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    /// The proxy and how it is signalled; `None` while none runs.
    proxy: Option<(Pid, Group)>,
    /// `(received, send)`.
    routes: Vec<(Signal, Signal)>,
}

impl FastPath {
    /// Routes `routes` to `proxy` from now on (none without a proxy).
    pub fn set(&self, proxy: Option<(Pid, Group)>, routes: Vec<(Signal, Signal)>) {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        table.proxy = proxy;
        table.routes = if proxy.is_some() { routes } else { Vec::new() };
    }

    /// Sends `received` on if the table routes it, and says so in the
    /// returned copy; a signal not routed, or not sent (the proxy was reaped,
    /// kill failed), is left to the loop as it came.
    pub fn forward(&self, children: &Children, mut received: Received) -> Received {
        let route = {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            table.proxy.and_then(|proxy| {
                table
                    .routes
                    .iter()
                    .find(|(from, _)| *from == received.signal)
                    .map(|&(_, send)| (proxy, send))
            })
        };
        if let Some(((pid, group), send)) = route
            && let Ok(true) = children.signal(pid, send, group)
        {
            received.forwarded = Some(send);
        }
        received
    }
}

/// Starts the two reader threads. One takes SIGCHLD and runs the reaper,
/// so that exit statuses never wait behind the loop. The other takes every
/// other signal, sends it on at once when `fast` routes it (issue 17: a
/// thread blocked on the signal and sending it straight on, as tini does,
/// with no wake-up of the loop in between), and then sends it to `events`
/// (a routed one up to `REPORT_DELAY` (1 ms) later).
/// The channel is bounded: while the loop is behind, that thread waits and
/// the kernel coalesces further copies of a pending signal, so a signal
/// storm cannot grow memory. Each thread waits on a set of its own, both
/// blocked everywhere (signalfd(2), sigwait(2)), so each signal goes to the
/// one that waits for it. Signals that arrive before the threads run stay
/// pending in the kernel until they do.
pub fn start(
    children: Children,
    events: mpsc::Sender<Received>,
    fast: FastPath,
) -> std::io::Result<()> {
    let mut others = handled();
    others.remove(Signal::SIGCHLD);
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let mut children_ended = SignalReader::new(&chld)?;
    let mut reader = SignalReader::new(&others)?;
    let reaping = children.clone();
    thread::Builder::new()
        .name("reaper".into())
        .spawn(move || {
            loop {
                match children_ended.next_signal() {
                    Ok(_) => reaping.reap(),
                    Err(error) => platform::reader_failed(&error),
                }
            }
        })?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || read_signals(&mut reader, &fast, &children, &events))?;
    Ok(())
}

/// How long the signal reader holds back its report of a signal it sent on
/// (`FastPath`), waiting for the next signal. Reported at once, the loop
/// wakes the moment the proxy does, and on this 2-core machine the two
/// compete for a CPU: scripts/bench measured the proxy's median latency at
/// 46 µs with the report at once against tini's 28 µs, and 29 µs against
/// tini's 33 µs without it. The machine only logs and counts those, so
/// they can wait this long; every other signal (a stop) is reported at once,
/// after any held back, in the order they came.
const REPORT_DELAY: Duration = Duration::from_millis(1);

/// At most this many sent signals are held back (a storm is reported in
/// batches, not at its end).
const REPORT_BATCH: usize = 16;

/// The signal reader's loop: each signal through the fast path, then to
/// the loop. Returns when the loop has exited.
fn read_signals(
    reader: &mut SignalReader,
    fast: &FastPath,
    children: &Children,
    events: &mpsc::Sender<Received>,
) {
    let mut owed: Vec<Received> = Vec::with_capacity(REPORT_BATCH);
    loop {
        let next = if owed.is_empty() {
            reader.next_signal().map(Some)
        } else {
            reader.next_signal_within(REPORT_DELAY)
        };
        let next = match next {
            Ok(next) => next.map(|received| fast.forward(children, received)),
            Err(error) => platform::reader_failed(&error),
        };
        let report_now = match next {
            Some(received) if received.forwarded.is_some() => {
                owed.push(received);
                owed.len() >= REPORT_BATCH
            }
            Some(received) => {
                owed.push(received);
                true
            }
            None => true,
        };
        if report_now {
            for received in owed.drain(..) {
                if events.blocking_send(received).is_err() {
                    return; // the loop has exited
                }
            }
        }
    }
}

/// The runtime or the signal reader could not be started.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SetupError {
    /// What was being started.
    pub what: &'static str,
    /// The underlying error.
    pub source: std::io::Error,
}

/// What the loop holds of the signal readers.
#[derive(Debug)]
pub struct Signals {
    /// Every signal read but SIGCHLD.
    pub rx: mpsc::Receiver<Received>,
    /// The readers' forwarding table (empty until set).
    pub fast: FastPath,
}

/// A current-thread runtime, and the signal reader (which also reaps
/// `children`, and forwards what the table routes) feeding the returned
/// channel: what `run`, the agent-less `demote` and the sentinel all start
/// with.
pub fn runtime_and_reader(
    children: &Children,
) -> Result<(tokio::runtime::Runtime, Signals), SetupError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| SetupError {
            what: "starting the runtime",
            source,
        })?;
    let (tx, rx) = mpsc::channel(64);
    let fast = FastPath::default();
    start(children.clone(), tx, fast.clone()).map_err(|source| SetupError {
        what: "reading signals",
        source,
    })?;
    Ok((runtime, Signals { rx, fast }))
}
