//! The operator's subcommands: `status`, `demote`, `promote` and `reload`.
//!
//! Owns what they print and when they return. They ask the running agent
//! through the control socket; when no agent runs, `demote` and `promote`
//! act on the backend themselves (`super::direct`) and say so.
//! `demote` waits by polling the agent's status until the backend, after
//! the standby level was applied, reports this node without the IP (and
//! the peer confirmed, where `probe` or `confirm_peer` ask for it); a stop
//! signal (^C) ends that wait and leaves the demotion in place. `promote`
//! waits until the node is up, and fails with the reason when it is not.

use std::{path::Path, time::Duration};

use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use super::direct::{self, Demoted};
use crate::{
    child_env::ChildEnv,
    config::{self, Location, Resolved},
    control::{
        client::{self, ClientError},
        protocol::Command,
    },
    error::Error,
    exit,
    failover::{self, Level},
    machine::Phase,
    maintenance::{Maintenance, Reason},
    platform::Received,
    process::Children,
    signals,
    status::Status,
};

/// How long one request may take.
const ASK_LIMIT: Duration = Duration::from_secs(10);
/// How often the status is polled while waiting.
const POLL: Duration = Duration::from_millis(50);

fn load(flag: Option<&Path>) -> Result<Resolved, Error> {
    Ok(config::load(&Location::find(flag))?)
}

fn ask(config: &Resolved, command: Command) -> Result<Status, ClientError> {
    client::request(&config.control.socket, command, ASK_LIMIT)
}

/// `handoff status [--json]`.
pub fn status(flag: Option<&Path>, json: bool) -> Result<u8, Error> {
    let config = load(flag)?;
    match ask(&config, Command::Status) {
        Ok(status) => {
            if json {
                let text = serde_json::to_string_pretty(&status)?;
                println!("{text}");
            } else {
                print!("{}", status.render());
            }
            Ok(exit::OK)
        }
        Err(error @ ClientError::NoAgent { .. }) => {
            let maintenance = match Maintenance::load(&config.control.state_dir) {
                Ok(Some(m)) => format!("; maintenance is set: {}", m.reason),
                Ok(None) => String::new(),
                Err(e) => format!("; {e}"),
            };
            Err(Error::Unavailable(format!(
                "{error} (is handoff running?){maintenance}"
            )))
        }
        Err(error) => Err(error.into()),
    }
}

/// `handoff reload`: the agent checks, sends and confirms a reload; exit 0
/// once it is confirmed, 1 with the agent's reason when it failed or was
/// refused, 69 when no agent answers.
pub fn reload(flag: Option<&Path>) -> Result<u8, Error> {
    let config = load(flag)?;
    // The agent takes the request within 5 s and ends a reload at
    // reload_timeout; one that came mid-reload waits for the rest of that
    // one too. The agent answers within 5 s + twice reload_timeout + 1 s,
    // before this limit.
    let limit = config.proxy.reload.timeout * 2 + ASK_LIMIT;
    match client::reload(&config.control.socket, limit) {
        Ok(done) => {
            let by = if done.confirmed_by.is_empty() {
                "sent".to_owned()
            } else {
                done.confirmed_by.join(", ")
            };
            println!("reloaded in {} ms (confirmed by: {by})", done.took_ms);
            Ok(exit::OK)
        }
        Err(ClientError::Agent(why)) => Err(Error::Reload(why)),
        Err(error @ ClientError::NoAgent { .. }) => {
            Err(Error::Unavailable(format!("{error} (is handoff running?)")))
        }
        Err(error) => Err(error.into()),
    }
}

/// `handoff demote [--reason TEXT] [--no-wait] [--timeout DUR]`.
pub fn demote(
    flag: Option<&Path>,
    reason: Option<&Reason>,
    no_wait: bool,
    timeout: Option<Duration>,
) -> Result<u8, Error> {
    let config = load(flag)?;
    let limit = timeout.unwrap_or(config.failover.timeout);
    let command = Command::Demote {
        reason: reason.cloned(),
    };
    let status = match ask(&config, command) {
        Ok(status) => status,
        Err(ClientError::NoAgent { .. }) => {
            return demote_directly(&config, reason, (!no_wait).then_some(limit));
        }
        Err(error) => return Err(error.into()),
    };
    let reason = status
        .maintenance
        .as_ref()
        .map_or("", |m| m.reason.as_str());
    println!("maintenance set ({reason}): the agent holds this node at standby");
    if no_wait {
        return Ok(exit::OK);
    }
    // Signals stayed blocked (`cli::main`): read them now, so that ^C ends
    // the wait with a message instead of waiting out the limit unheard.
    let (runtime, crate::signals::Signals { mut rx, .. }) =
        crate::signals::runtime_and_reader(&Children::default())?;
    let mut pause = || runtime.block_on(stop_signal_within(&mut rx, POLL));
    let status = match wait_until(&config, status, limit, |s| s.released, &mut pause)? {
        Waited::Done(status) => {
            println!(
                "this node no longer holds the floating IP (role {})",
                status.role
            );
            return Ok(exit::OK);
        }
        Waited::Interrupted(signal) => {
            return Err(Error::Interrupted {
                signal,
                message: format!(
                    "{} ended the wait: the demotion stays in place (`handoff status` shows the move, `handoff promote` undoes it)",
                    signal.as_str()
                ),
            });
        }
        Waited::TimedOut(status) => status,
    };
    let waited = humantime::format_duration(limit);
    if status.role_current && status.role.released() {
        // Released here, but the peer was not confirmed serving the VIP
        // (`[failover] probe`, `[consul] confirm_peer`) within the wait.
        return Err(Error::TimedOut(format!(
            "waited {waited}: this node released the floating IP (role {}), but the peer was not confirmed serving it ([failover] probe or [consul] confirm_peer); the demotion stays in place",
            status.role
        )));
    }
    Err(Error::TimedOut(format!(
        "waited {waited}: this node still holds the floating IP (role {}, level {}{}); the demotion stays in place",
        status.role,
        level_name(&status),
        if status.level_applied {
            ""
        } else {
            ", not yet applied"
        }
    )))
}

/// How a wait on the agent ended.
enum Waited {
    /// The condition holds in this status.
    Done(Status),
    /// The limit passed; the last status seen.
    TimedOut(Status),
    /// A stop signal ended the wait.
    Interrupted(Signal),
}

/// Polls the agent's status, starting from `status`, until `done` holds or
/// `limit` passed. Between polls, `pause` waits and says whether a stop
/// signal arrived meanwhile.
fn wait_until(
    config: &Resolved,
    mut status: Status,
    limit: Duration,
    done: impl Fn(&Status) -> bool,
    pause: &mut dyn FnMut() -> Option<Signal>,
) -> Result<Waited, Error> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if done(&status) {
            return Ok(Waited::Done(status));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(Waited::TimedOut(status));
        }
        if let Some(signal) = pause() {
            return Ok(Waited::Interrupted(signal));
        }
        status = ask(config, Command::Status)?;
    }
}

/// Waits `pause`, or less if a stop signal (SIGINT, SIGTERM) arrives first:
/// then that signal. Other signals are read and ignored.
async fn stop_signal_within(
    signals: &mut mpsc::Receiver<Received>,
    pause: Duration,
) -> Option<Signal> {
    let deadline = tokio::time::Instant::now() + pause;
    loop {
        tokio::select! {
            received = signals.recv() => match received {
                Some(r) if signals::STOP.contains(&r.signal) => return Some(r.signal),
                Some(_) => {}
                // The reader is gone: pause without it.
                None => {
                    tokio::time::sleep_until(deadline).await;
                    return None;
                }
            },
            () = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

fn level_name(status: &Status) -> String {
    status.level.map_or("none".into(), |l| l.to_string())
}

/// `demote` with no agent: under the state dir's lock, on the backend.
fn demote_directly(
    config: &Resolved,
    reason: Option<&Reason>,
    wait: Option<Duration>,
) -> Result<u8, Error> {
    let boot = failover::boot_id(&config.backend)?;
    let children = Children::new(ChildEnv::new(&config.proxy.keep_env));
    let (runtime, crate::signals::Signals { mut rx, .. }) =
        crate::signals::runtime_and_reader(&children)?;
    let uid = nix::unistd::Uid::current().as_raw();
    let outcome = runtime.block_on(direct::demote(
        config, reason, uid, wait, children, &mut rx, boot,
    ))?;
    let backend = config.backend.name();
    let kept = |level: Level| {
        if level == Level::Down {
            " (it stays down: no proxy runs)"
        } else {
            ""
        }
    };
    match outcome {
        Demoted::Applied(m, level) => {
            println!(
                "no agent running: maintenance set ({}) and {backend} set to {level} directly{}",
                m.reason,
                kept(level)
            );
            Ok(exit::OK)
        }
        Demoted::Released(m, level) => {
            println!(
                "no agent running: maintenance set ({}) and {backend} set to {level} directly{}; this node does not hold the floating IP",
                m.reason,
                kept(level)
            );
            Ok(exit::OK)
        }
        Demoted::TimedOut(m, level, role) => Err(Error::TimedOut(format!(
            "no agent running: maintenance set ({}) and {backend} set to {level} directly, but this node still holds the floating IP (role {role}); the demotion stays in place",
            m.reason
        ))),
        Demoted::Interrupted(m, level, signal) => Err(Error::Interrupted {
            signal,
            message: format!(
                "no agent running: maintenance set ({}) and {backend} set to {level} directly; {} ended the wait, the demotion stays in place",
                m.reason,
                signal.as_str()
            ),
        }),
    }
}

/// `handoff promote`.
pub fn promote(flag: Option<&Path>) -> Result<u8, Error> {
    let config = load(flag)?;
    let status = match ask(&config, Command::Promote) {
        Ok(status) => status,
        Err(ClientError::NoAgent { .. }) => {
            let old = direct::promote(&config)?;
            let was = if old.is_some() {
                "cleared"
            } else {
                "was not set"
            };
            println!(
                "no agent running: maintenance {was}; the node keeps its current demotion until `handoff run` has a healthy proxy"
            );
            return Ok(exit::OK);
        }
        Err(error) => return Err(error.into()),
    };
    println!("maintenance cleared");
    // A proxy that has not (yet) passed its health check keeps the node
    // down: wait for it as for the backend, within failover_timeout, and
    // say so with exit 1 if it did not come, rather than report a success
    // the node does not have.
    let limit = config.failover.timeout;
    let up = |s: &Status| s.level == Some(Level::Up) && s.level_applied;
    // Signals are not blocked for promote: ^C simply ends it.
    let mut pause = || {
        std::thread::sleep(POLL);
        None
    };
    match wait_until(&config, status, limit, up, &mut pause)? {
        Waited::Done(status) => {
            println!("this node is up (role {})", status.role);
            Ok(exit::OK)
        }
        Waited::TimedOut(status)
            if status.agent.phase != Phase::Running { healthy: true }.name() =>
        {
            Err(Error::TimedOut(format!(
                "waited {}: the proxy is not healthy (phase {}), so this node stays {} until it passes its health check",
                humantime::format_duration(limit),
                status.agent.phase,
                level_name(&status),
            )))
        }
        Waited::TimedOut(status) => Err(Error::TimedOut(format!(
            "waited {}: the backend has not applied level up (level {})",
            humantime::format_duration(limit),
            level_name(&status),
        ))),
        Waited::Interrupted(signal) => Err(Error::Interrupted {
            signal,
            message: format!("{} ended the wait", signal.as_str()),
        }),
    }
}
