//! Signals: blocked from the first line of `main`, then read (a signalfd on
//! Linux, sigwait elsewhere) and turned into events. No signal handler is
//! ever installed. On Linux the loop's own thread reads the signals it acts
//! on and a reader thread reads SIGCHLD; elsewhere the reader thread reads
//! them all.
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
//! The one window no program can close: a signal delivered after exec but
//! before `main`'s first line (kernel exec, the dynamic loader, std's start-up)
//! takes its default action whatever the program does. Measured on this
//! 2-core machine, even a static C program that blocks SIGTERM on its first
//! line runs 0.2-6 ms after `spawn()` returned in its parent. Only a mask
//! inherited across exec covers that; `tests/early_signals.rs` tests both.

use std::thread;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use tokio::sync::mpsc;

use crate::{
    platform::{self, Received, SignalReader},
    process::Children,
};

/// Signals passed to the proxy unchanged (spec: Lifecycle, Running).
pub const PASS_THROUGH: [Signal; 6] = [
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGQUIT,
];

/// Signals that start or escalate the stop sequence.
pub const STOP: [Signal; 2] = [Signal::SIGINT, Signal::SIGTERM];

/// Every signal handoff takes over: stop, reload, pass-through and SIGCHLD.
pub fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for signal in STOP
        .into_iter()
        .chain(PASS_THROUGH)
        .chain([Signal::SIGHUP, Signal::SIGCHLD])
    {
        set.add(signal);
    }
    set
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

/// Starts the reader thread: SIGCHLD runs the reaper, every other signal is
/// sent to `events`. The channel is bounded: while the loop is behind, the
/// thread waits and the kernel coalesces further copies of a pending signal,
/// so a signal storm cannot grow memory.
///
/// Where the platform can (`platform::read_on_loop`, Linux), the
/// thread keeps only SIGCHLD, and `runtime` reads the others itself: a
/// forwarded SIGHUP then takes one wake-up, not a hand-over between
/// threads. Signals that arrive before the runtime runs stay pending in the
/// kernel until it does, as before.
pub fn start(
    children: Children,
    events: mpsc::Sender<Received>,
    runtime: &tokio::runtime::Runtime,
) -> std::io::Result<()> {
    let thread_set = platform::read_on_loop(handled(), events.clone(), runtime)?;
    let mut reader = SignalReader::new(&thread_set)?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let received = match reader.next_signal() {
                    Ok(received) => received,
                    Err(error) => {
                        tracing::error!(%error, "cannot read signals; stopping the signal reader");
                        return;
                    }
                };
                if received.signal == Signal::SIGCHLD {
                    children.reap();
                } else if events.blocking_send(received).is_err() {
                    return; // the loop has exited
                }
            }
        })?;
    Ok(())
}
