//! Tables over the state machine: explicit rows for each rule, then every
//! phase x every event checked against the invariants, then random walks.

use std::time::Duration;

use nix::sys::signal::Signal::{
    self, SIGALRM, SIGCONT, SIGHUP, SIGINT, SIGKILL, SIGQUIT, SIGTERM, SIGTSTP, SIGUSR1, SIGUSR2,
};

use super::*;
use crate::config::{Confirmations, ExitCodeMap, RestartPolicy};

const S: fn(u64) -> Duration = Duration::from_secs;

fn policy() -> Policy {
    Policy {
        reload: ReloadPolicy {
            send: ReloadBy::Signal(SIGHUP),
            check: false,
            confirm: Confirmations::default(),
            timeout: S(15),
        },
        stop_signal: SIGTERM,
        stop_timeout: S(10),
        failover_timeout: S(10),
        settle: Duration::ZERO,
        restart: RestartPolicy::Never,
        startup_gate: Some(S(1)),
        exit_code_map: ExitCodeMap::default(),
        stop_level: Level::Down,
        probe: false,
        confirm_peer: false,
        hooks: false,
        duties: false,
        loopback_vip: false,
    }
}

/// The backend could not apply request `seq`.
fn failed(level: Level, seq: u64) -> Event {
    Event::LevelApplied {
        level,
        ok: false,
        seq,
    }
}

fn applied(level: Level, seq: u64) -> Event {
    Event::LevelApplied {
        level,
        ok: true,
        seq,
    }
}

/// The backend's role, seen after it answered request `seq`.
fn seen(role: Role, seq: u64) -> Event {
    Event::Role { role, seq }
}

fn set(level: Level, seq: u64) -> Action {
    Action::SetLevel { level, seq }
}

/// The request number of the `SetLevel` in `actions`.
fn seq_of(actions: &[Action]) -> u64 {
    actions
        .iter()
        .find_map(|a| match a {
            Action::SetLevel { seq, .. } => Some(*seq),
            _ => None,
        })
        .expect("a SetLevel action")
}

/// Feeds `events` in order and returns the machine.
fn after(policy: Policy, events: &[Event]) -> Machine {
    let mut m = Machine::new(policy);
    m.start();
    for e in events {
        m.handle(*e);
    }
    m
}

// Request numbers: start asks for down (1), health for up (2), a stop or a
// crash for down again (3).
const DOWN1: Event = Event::LevelApplied {
    level: Level::Down,
    ok: true,
    seq: 1,
};
const UP2: Event = Event::LevelApplied {
    level: Level::Up,
    ok: true,
    seq: 2,
};
const SPAWNING: &[Event] = &[DOWN1];
const RUNNING: &[Event] = &[DOWN1, Event::Spawned];
const HEALTHY: &[Event] = &[
    DOWN1,
    Event::Spawned,
    Event::Deadline(Timer::HealthGate),
    UP2,
];
const MASTER_STOPPING: &[Event] = &[
    DOWN1,
    Event::Spawned,
    Event::Deadline(Timer::HealthGate),
    UP2,
    Event::Role {
        role: Role::Master,
        seq: 2,
    },
    Event::Signal(SIGTERM),
];

fn with(events: &[Event], more: &[Event]) -> Vec<Event> {
    events.iter().chain(more).copied().collect()
}

struct Row {
    name: &'static str,
    setup: Vec<Event>,
    event: Event,
    actions: Vec<Action>,
    phase: Phase,
}

fn row(
    name: &'static str,
    setup: &[Event],
    event: Event,
    actions: Vec<Action>,
    phase: Phase,
) -> Row {
    Row {
        name,
        setup: setup.to_vec(),
        event,
        actions,
        phase,
    }
}

#[test]
fn start_goes_down_before_anything() {
    let mut m = Machine::new(policy());
    assert_eq!(
        m.start(),
        vec![set(Level::Down, 1), Action::Watch(Watch::Idle)]
    );
    assert_eq!(m.phase(), Phase::Starting);
}

#[test]
#[allow(clippy::too_many_lines)]
fn rules() {
    use Action::{
        Arm, CountRestart, Disarm, Dropped, Exit, Forward, KillProxy, Notify, Spawn, StopProxy,
    };
    let draining = Phase::Stopping(Step::Draining);
    let killed = Phase::Stopping(Step::Killed);
    let failover_held = Phase::Stopping(Step::Failover { held: true });
    let note = Action::Note;
    let watch = Action::Watch;
    let stop_actions = |mut first: Vec<Action>| {
        first.extend([
            Disarm(Timer::Failover),
            Disarm(Timer::Settle),
            StopProxy(SIGTERM),
            Arm(Timer::StopTimeout, S(10)),
        ]);
        first
    };
    let kill_actions = |why: Note| {
        vec![
            note(why),
            Disarm(Timer::Failover),
            Disarm(Timer::Settle),
            Disarm(Timer::StopTimeout),
            KillProxy,
        ]
    };
    let rows = vec![
        // Start sequence: down, spawn, up when healthy.
        row(
            "spawn only once down is applied",
            &[],
            DOWN1,
            vec![Spawn],
            Phase::Spawning,
        ),
        row(
            "a failed down spawns nothing (the worker retries it)",
            &[],
            failed(Level::Down, 1),
            vec![],
            Phase::Starting,
        ),
        row(
            "the retried down, once confirmed, spawns",
            &[failed(Level::Down, 1)],
            DOWN1,
            vec![Spawn],
            Phase::Spawning,
        ),
        row(
            "a report for another request is ignored",
            &[],
            applied(Level::Down, 7),
            vec![],
            Phase::Starting,
        ),
        row(
            "spawned proxy arms the health gate",
            SPAWNING,
            Event::Spawned,
            vec![
                Arm(Timer::HealthGate, S(1)),
                Arm(Timer::BackoffReset, MAX_BACKOFF),
            ],
            Phase::Running { healthy: false },
        ),
        row(
            "healthy after the gate: up",
            RUNNING,
            Event::Deadline(Timer::HealthGate),
            vec![Notify(Notice::Ready), set(Level::Up, 2)],
            Phase::Running { healthy: true },
        ),
        row(
            "unhealthy: down at once",
            HEALTHY,
            Event::Health(false),
            vec![set(Level::Down, 3)],
            Phase::Running { healthy: false },
        ),
        row(
            "spawn failure exits with its code, never up",
            SPAWNING,
            Event::SpawnFailed { code: 127 },
            vec![Exit(127)],
            Phase::Done,
        ),
        // Signals.
        row(
            "SIGHUP becomes the reload signal, with systemd told around it",
            HEALTHY,
            Event::Signal(SIGHUP),
            vec![
                Action::Reload(ReloadStep::Begin),
                Notify(Notice::Reloading),
                Arm(Timer::Reload, S(15)),
                Action::Reload(ReloadStep::Signal(SIGHUP)),
                Disarm(Timer::Reload),
                Action::Reload(ReloadStep::Finish(ReloadOutcome::Confirmed)),
                Notify(Notice::Reloaded),
            ],
            Phase::Running { healthy: true },
        ),
        row(
            "no proxy: a reload is dropped, and systemd hears nothing",
            SPAWNING,
            Event::Signal(SIGHUP),
            vec![Dropped {
                signal: SIGHUP,
                reason: DropReason::NoProxy,
            }],
            Phase::Spawning,
        ),
        row(
            "pass-through is unchanged",
            HEALTHY,
            Event::Signal(SIGUSR2),
            vec![Forward {
                received: SIGUSR2,
                send: SIGUSR2,
            }],
            Phase::Running { healthy: true },
        ),
        row(
            "SIGQUIT passes through",
            RUNNING,
            Event::Signal(SIGQUIT),
            vec![Forward {
                received: SIGQUIT,
                send: SIGQUIT,
            }],
            Phase::Running { healthy: false },
        ),
        row(
            "SIGALRM (and every other unlisted signal) is logged and ignored",
            HEALTHY,
            Event::Signal(SIGALRM),
            vec![Dropped {
                signal: SIGALRM,
                reason: DropReason::Ignored,
            }],
            Phase::Running { healthy: true },
        ),
        row(
            "SIGTSTP stops nobody: the proxy is continued",
            HEALTHY,
            Event::Signal(SIGTSTP),
            vec![Forward {
                received: SIGTSTP,
                send: SIGCONT,
            }],
            Phase::Running { healthy: true },
        ),
        row(
            "SIGCONT passes through",
            HEALTHY,
            Event::Signal(SIGCONT),
            vec![Forward {
                received: SIGCONT,
                send: SIGCONT,
            }],
            Phase::Running { healthy: true },
        ),
        // A stopped proxy serves nobody.
        row(
            "the proxy stopped: down at once",
            HEALTHY,
            Event::ProxySuspended(true),
            vec![note(Note::ProxySuspended), set(Level::Down, 3)],
            Phase::Running { healthy: false },
        ),
        row(
            "the proxy continued: up again (its gate had passed)",
            &with(HEALTHY, &[Event::ProxySuspended(true)]),
            Event::ProxySuspended(false),
            vec![
                note(Note::ProxyResumed),
                Notify(Notice::Ready),
                set(Level::Up, 4),
            ],
            Phase::Running { healthy: true },
        ),
        row(
            "the gate does not promote a stopped proxy",
            &with(RUNNING, &[Event::ProxySuspended(true)]),
            Event::Deadline(Timer::HealthGate),
            vec![],
            Phase::Running { healthy: false },
        ),
        row(
            "a proxy stopped while draining is continued to act on the stop signal",
            &with(MASTER_STOPPING, &[Event::Deadline(Timer::Failover)]),
            Event::ProxySuspended(true),
            vec![note(Note::ProxySuspended), Action::ContinueProxy],
            draining,
        ),
        row(
            "no proxy: a forward is dropped",
            SPAWNING,
            Event::Signal(SIGUSR1),
            vec![Dropped {
                signal: SIGUSR1,
                reason: DropReason::NoProxy,
            }],
            Phase::Spawning,
        ),
        // Stop sequence.
        row(
            "stop while master: down, then wait for the move",
            &with(HEALTHY, &[seen(Role::Master, 2)]),
            Event::Signal(SIGTERM),
            vec![
                Notify(Notice::Stopping),
                Action::Stopwatch(Stopwatch::Start),
                Disarm(Timer::HealthGate),
                Disarm(Timer::BackoffReset),
                set(Level::Down, 3),
                Arm(Timer::Failover, S(10)),
                watch(Watch::Fast),
            ],
            failover_held,
        ),
        row(
            "down applied but still master: keep waiting",
            MASTER_STOPPING,
            applied(Level::Down, 3),
            vec![],
            failover_held,
        ),
        row(
            "BACKUP after down: move confirmed, stop the proxy",
            &with(MASTER_STOPPING, &[applied(Level::Down, 3)]),
            seen(Role::Backup, 3),
            stop_actions(vec![
                Action::Stopwatch(Stopwatch::Moved),
                Disarm(Timer::Failover),
                watch(Watch::Idle),
            ]),
            draining,
        ),
        row(
            "a failed down confirms no move",
            &with(MASTER_STOPPING, &[failed(Level::Down, 3)]),
            seen(Role::Backup, 3),
            vec![],
            failover_held,
        ),
        row(
            "BACKUP before down is applied is not enough",
            MASTER_STOPPING,
            seen(Role::Backup, 2),
            vec![],
            failover_held,
        ),
        row(
            "failover_timeout passes: stop anyway",
            MASTER_STOPPING,
            Event::Deadline(Timer::Failover),
            stop_actions(vec![
                note(Note::MoveTimedOut),
                Disarm(Timer::Failover),
                watch(Watch::Idle),
            ]),
            draining,
        ),
        row(
            "second stop signal skips the wait",
            MASTER_STOPPING,
            Event::Signal(SIGINT),
            stop_actions(vec![note(Note::WaitSkipped)]),
            draining,
        ),
        row(
            "third stop signal kills at once",
            &with(MASTER_STOPPING, &[Event::Signal(SIGTERM)]),
            Event::Signal(SIGTERM),
            kill_actions(Note::KillRequested),
            killed,
        ),
        row(
            "stop_timeout passes: SIGKILL",
            &with(MASTER_STOPPING, &[Event::Deadline(Timer::Failover)]),
            Event::Deadline(Timer::StopTimeout),
            kill_actions(Note::StopTimedOut),
            killed,
        ),
        row(
            "proxy exit after the stop signal: exit with its status",
            &with(MASTER_STOPPING, &[Event::Deadline(Timer::Failover)]),
            Event::ProxyExited(ProcessEnd::Signaled(15)),
            // down was asked for but never confirmed: a short grace for it.
            vec![
                Disarm(Timer::Settle),
                Disarm(Timer::StopTimeout),
                Arm(Timer::Failover, DOWN_GRACE),
            ],
            Phase::Exiting { code: 143 },
        ),
        row(
            "down never confirmed after the proxy's exit: exit 75, not its status",
            &with(
                MASTER_STOPPING,
                &[
                    Event::Deadline(Timer::Failover),
                    Event::ProxyExited(ProcessEnd::Signaled(15)),
                ],
            ),
            Event::Deadline(Timer::Failover),
            vec![note(Note::DownUnconfirmed), Exit(exit::DEMOTION_FAILED)],
            Phase::Done,
        ),
        row(
            "stop before spawn is held, not lost",
            &[],
            Event::Signal(SIGTERM),
            vec![note(Note::StopDeferred), Arm(Timer::Failover, S(10))],
            Phase::Starting,
        ),
        row(
            "a held stop whose down is never confirmed ends at failover_timeout",
            &[Event::Signal(SIGTERM), failed(Level::Down, 1)],
            Event::Deadline(Timer::Failover),
            vec![note(Note::DownUnconfirmed), Exit(exit::DEMOTION_FAILED)],
            Phase::Done,
        ),
        row(
            "a crash whose down is never confirmed exits 75",
            &with(HEALTHY, &[Event::ProxyExited(ProcessEnd::Exited(3))]),
            Event::Deadline(Timer::Failover),
            vec![note(Note::DownUnconfirmed), Exit(exit::DEMOTION_FAILED)],
            Phase::Done,
        ),
        // Crash.
        row(
            "crash: down first, then exit once applied",
            HEALTHY,
            Event::ProxyExited(ProcessEnd::Exited(3)),
            vec![
                Disarm(Timer::HealthGate),
                Disarm(Timer::BackoffReset),
                set(Level::Down, 3),
                Arm(Timer::Failover, S(10)),
            ],
            Phase::Exiting { code: 3 },
        ),
        row(
            "crash exit waits for down",
            &with(HEALTHY, &[Event::ProxyExited(ProcessEnd::Exited(3))]),
            applied(Level::Down, 3),
            vec![Exit(3)],
            Phase::Done,
        ),
        row(
            "crash before healthy exits at once (already down)",
            RUNNING,
            Event::ProxyExited(ProcessEnd::Signaled(9)),
            vec![
                Disarm(Timer::HealthGate),
                Disarm(Timer::BackoffReset),
                Exit(137),
            ],
            Phase::Done,
        ),
    ];
    let restart_rows = vec![row(
        "crash with a restart policy: down first, the restart counted as it is decided",
        HEALTHY,
        Event::ProxyExited(ProcessEnd::Exited(3)),
        vec![
            Disarm(Timer::HealthGate),
            Disarm(Timer::BackoffReset),
            set(Level::Down, 3),
            note(Note::Restarting),
            CountRestart,
            Arm(Timer::Restart, FIRST_BACKOFF),
        ],
        Phase::Restarting,
    )];
    let restarting = Policy {
        restart: RestartPolicy::Always,
        ..policy()
    };
    let rows = rows
        .into_iter()
        .map(|r| (policy(), r))
        .chain(restart_rows.into_iter().map(|r| (restarting.clone(), r)));
    for (
        policy,
        Row {
            name,
            setup,
            event,
            actions,
            phase,
        },
    ) in rows
    {
        let mut m = after(policy, &setup);
        // The fast path's table has tests of its own
        // (`the_fast_path_table_follows_the_proxy_and_the_stop`).
        let got = decisions(m.handle(event));
        assert_eq!(got, actions, "{name}: actions");
        assert_eq!(m.phase(), phase, "{name}: phase");
    }
}

#[test]
fn presets_translate_reload_and_drop() {
    let mut p = policy();
    p.reload.send = ReloadBy::Signal(SIGUSR2);
    let mut m = after(p.clone(), HEALTHY);
    assert!(
        m.handle(Event::Signal(SIGHUP))
            .contains(&Action::Reload(ReloadStep::Signal(SIGUSR2)))
    );
    p.reload.send = ReloadBy::Disabled;
    let mut m = after(p, RUNNING);
    assert_eq!(
        m.handle(Event::Signal(SIGHUP)),
        vec![Action::Dropped {
            signal: SIGHUP,
            reason: DropReason::ReloadDisabled
        }]
    );
}

#[test]
fn settle_waits_before_the_stop_signal() {
    let mut p = policy();
    p.settle = S(2);
    let mut m = after(
        p,
        &with(HEALTHY, &[Event::Signal(SIGTERM), applied(Level::Down, 3)]),
    );
    // The role was unknown at the stop, which counts as "may hold the IP".
    let got = m.handle(seen(Role::Backup, 3));
    assert_eq!(
        got,
        vec![
            Action::Stopwatch(Stopwatch::Moved),
            Action::Disarm(Timer::Failover),
            Action::Watch(Watch::Idle),
            Action::Arm(Timer::Settle, S(2))
        ]
    );
    assert_eq!(m.phase(), Phase::Stopping(Step::Settle));
    assert!(
        m.handle(Event::Deadline(Timer::Settle))
            .contains(&Action::StopProxy(SIGTERM))
    );
}

#[test]
fn not_master_does_not_wait_for_a_move() {
    let mut m = after(policy(), &with(HEALTHY, &[seen(Role::Backup, 2)]));
    let got = m.handle(Event::Signal(SIGTERM));
    assert!(got.contains(&Action::Note(Note::NotMaster)), "{got:?}");
    // Down still has to be applied before the proxy is stopped.
    assert!(
        !got.iter().any(|a| matches!(a, Action::StopProxy(_))),
        "{got:?}"
    );
    // Nor before the backend looked again once down was in place.
    let got = m.handle(applied(Level::Down, 3));
    assert!(
        !got.iter().any(|a| matches!(a, Action::StopProxy(_))),
        "{got:?}"
    );
    let got = m.handle(seen(Role::Backup, 3));
    assert!(got.contains(&Action::StopProxy(SIGTERM)), "{got:?}");
    assert!(
        !got.contains(&Action::Stopwatch(Stopwatch::Moved)),
        "no move to measure: {got:?}"
    );
}

/// Regression: a stop arrived right after `up` while the last role report
/// was a BACKUP from before the promotion; once `down` was applied that stale
/// BACKUP would have "confirmed" the move of an IP this node still held.
#[test]
fn only_a_role_seen_after_the_demote_confirms_the_move() {
    let mut m = after(policy(), &with(HEALTHY, &[seen(Role::Backup, 1)]));
    m.handle(Event::Signal(SIGTERM));
    assert_eq!(
        m.handle(applied(Level::Down, 3)),
        vec![],
        "stale BACKUP taken as the move"
    );
    assert_eq!(
        m.handle(seen(Role::Master, 3)),
        vec![],
        "still master after the demote"
    );
    assert!(
        m.handle(seen(Role::Backup, 3))
            .contains(&Action::StopProxy(SIGTERM))
    );
}

/// Regression: a stop arrived while `up` (request 2) was still being
/// applied, and the `down` of start-up (request 1) was taken for the stop's
/// `down`: the proxy was stopped before the demote ran.
#[test]
fn a_stop_during_promotion_waits_for_its_own_demote() {
    let mut m = after(
        policy(),
        &[
            DOWN1,
            Event::Spawned,
            Event::Deadline(Timer::HealthGate),
            seen(Role::Backup, 1),
        ],
    );
    let got = m.handle(Event::Signal(SIGTERM));
    assert!(got.contains(&set(Level::Down, 3)), "{got:?}");
    assert!(
        !got.iter().any(|a| matches!(a, Action::StopProxy(_))),
        "stopped before demoting: {got:?}"
    );
    // The late answer to the promotion says nothing about the demotion.
    assert_eq!(m.handle(UP2), vec![]);
    assert_eq!(m.handle(applied(Level::Down, 3)), vec![]);
    assert!(
        m.handle(seen(Role::Backup, 3))
            .contains(&Action::StopProxy(SIGTERM))
    );
}

fn graceful() -> Policy {
    Policy {
        stop_level: Level::Standby,
        ..policy()
    }
}

#[test]
fn graceful_handover_goes_standby_then_down_before_stopping() {
    let mut m = after(graceful(), &with(HEALTHY, &[seen(Role::Master, 2)]));
    let got = m.handle(Event::Signal(SIGTERM));
    assert!(
        got.contains(&set(Level::Standby, 3)),
        "a priority drop first: {got:?}"
    );
    assert_eq!(m.handle(applied(Level::Standby, 3)), vec![]);
    assert_eq!(
        m.handle(seen(Role::Master, 3)),
        vec![],
        "the peer has not taken over yet"
    );
    let got = m.handle(seen(Role::Backup, 3));
    assert_eq!(
        got,
        vec![Action::Stopwatch(Stopwatch::Moved), set(Level::Down, 4)],
        "then FAULT, proxy still up"
    );
    assert_eq!(m.handle(applied(Level::Down, 4)), vec![]);
    let got = m.handle(seen(Role::Backup, 4));
    assert!(got.contains(&Action::StopProxy(SIGTERM)), "{got:?}");
    assert!(
        !got.contains(&Action::Stopwatch(Stopwatch::Moved)),
        "confirmed once: {got:?}"
    );
}

#[test]
fn graceful_handover_falls_back_to_down_at_the_timeout() {
    let mut m = after(
        graceful(),
        &with(HEALTHY, &[seen(Role::Master, 2), Event::Signal(SIGTERM)]),
    );
    let got = m.handle(Event::Deadline(Timer::Failover));
    assert_eq!(
        got[..2],
        [Action::Note(Note::GracefulFallback), set(Level::Down, 4)]
    );
    assert!(got.contains(&Action::StopProxy(SIGTERM)), "{got:?}");
}

#[test]
fn a_crash_during_graceful_handover_goes_down_at_once() {
    let mut m = after(
        graceful(),
        &with(HEALTHY, &[seen(Role::Master, 2), Event::Signal(SIGTERM)]),
    );
    let got = decisions(m.handle(Event::ProxyExited(ProcessEnd::Exited(1))));
    assert_eq!(got, vec![set(Level::Down, 4)]);
    assert_eq!(m.handle(applied(Level::Down, 4)), vec![Action::Exit(1)]);
}

#[test]
fn a_graceful_stop_never_raises_a_node_held_down() {
    // Unhealthy (never passed the gate): requested down, still down through
    // the whole stop, with no standby in between.
    for setup in [RUNNING, &with(HEALTHY, &[Event::Health(false)])[..]] {
        let mut m = after(graceful(), setup);
        let got = m.handle(Event::Signal(SIGTERM));
        assert!(
            !got.iter()
                .any(|a| matches!(a, Action::SetLevel { level, .. } if *level != Level::Down)),
            "{got:?}"
        );
        assert_eq!(m.view().level, Some(Level::Down));
    }
    // A stop that arrived before the spawn: down as well.
    let mut m = after(graceful(), &[Event::Signal(SIGTERM), DOWN1]);
    let got = m.handle(Event::Spawned);
    assert!(
        !got.iter()
            .any(|a| matches!(a, Action::SetLevel { level, .. } if *level != Level::Down)),
        "{got:?}"
    );
}

#[test]
fn the_proxys_own_stop_signal_is_a_planned_stop() {
    // nginx: stop_signal SIGQUIT; haproxy: SIGUSR1.
    for stop_signal in [SIGQUIT, SIGUSR1] {
        let p = Policy {
            stop_signal,
            ..policy()
        };
        let mut m = after(p, &with(HEALTHY, &[seen(Role::Master, 2)]));
        let got = m.handle(Event::Signal(stop_signal));
        assert!(got.contains(&set(Level::Down, 3)), "{got:?}");
        assert!(
            !got.iter().any(|a| matches!(a, Action::Forward { .. })),
            "not passed on: {got:?}"
        );
        assert_eq!(m.phase(), Phase::Stopping(Step::Failover { held: true }));
        // The second one skips the wait, as a second SIGTERM does.
        let got = m.handle(Event::Signal(stop_signal));
        assert!(got.contains(&Action::StopProxy(stop_signal)), "{got:?}");
    }
}

#[test]
fn a_failed_level_is_never_counted_as_applied() {
    let mut m = after(policy(), &with(HEALTHY, &[seen(Role::Master, 2)]));
    m.handle(Event::Health(false));
    m.handle(failed(Level::Down, 3));
    let view = m.view();
    assert_eq!(view.level, Some(Level::Down));
    assert!(!view.applied, "a failed down is not applied: {view:?}");
    m.handle(applied(Level::Down, 3));
    assert!(m.view().applied);
}

#[test]
fn a_stopped_proxy_is_continued_after_the_stop_signal() {
    let mut m = after(
        policy(),
        &with(
            RUNNING,
            &[Event::ProxySuspended(true), Event::Signal(SIGTERM)],
        ),
    );
    let got = m.handle(Event::Signal(SIGTERM));
    let stop = got.iter().position(|a| *a == Action::StopProxy(SIGTERM));
    let resume = got.iter().position(|a| *a == Action::ContinueProxy);
    assert!(stop.is_some() && resume > stop, "{got:?}");
}

/// A healthy master that got SIGTERM, with its `down` (request 3) applied.
fn stopping_master(policy: Policy) -> Machine {
    after(
        policy,
        &with(
            HEALTHY,
            &[
                seen(Role::Master, 2),
                Event::Signal(SIGTERM),
                applied(Level::Down, 3),
            ],
        ),
    )
}

fn probed() -> Policy {
    Policy {
        probe: true,
        ..policy()
    }
}

#[test]
fn with_a_probe_the_move_waits_for_the_peer_to_answer() {
    let mut m = stopping_master(probed());
    assert_eq!(
        m.handle(seen(Role::Backup, 3)),
        vec![Action::Probe(true)],
        "released here, not yet served there"
    );
    assert_eq!(
        m.handle(seen(Role::Backup, 3)),
        vec![],
        "one probe at a time"
    );
    let got = m.handle(Event::ProbeSucceeded);
    assert_eq!(got[0], Action::Stopwatch(Stopwatch::Moved), "{got:?}");
    assert!(got.contains(&Action::StopProxy(SIGTERM)), "{got:?}");
}

#[test]
fn a_probe_that_never_answers_ends_at_failover_timeout_and_is_cancelled() {
    let mut m = stopping_master(probed());
    m.handle(seen(Role::Backup, 3));
    let got = m.handle(Event::Deadline(Timer::Failover));
    assert_eq!(
        got[..2],
        [Action::Note(Note::MoveTimedOut), Action::Probe(false)],
        "{got:?}"
    );
    assert!(got.contains(&Action::StopProxy(SIGTERM)), "{got:?}");
    assert_eq!(
        m.handle(Event::ProbeSucceeded),
        vec![],
        "a late success changes nothing"
    );
}

#[test]
fn a_node_that_did_not_hold_the_ip_does_not_probe() {
    let mut m = after(
        probed(),
        &with(
            HEALTHY,
            &[
                seen(Role::Backup, 2),
                Event::Signal(SIGTERM),
                applied(Level::Down, 3),
            ],
        ),
    );
    let got = m.handle(seen(Role::Backup, 3));
    assert!(
        !got.contains(&Action::Probe(true)) && got.contains(&Action::StopProxy(SIGTERM)),
        "{got:?}"
    );
}

fn confirming() -> Policy {
    Policy {
        confirm_peer: true,
        ..policy()
    }
}

#[test]
fn with_confirm_peer_the_move_waits_for_consul_to_show_the_peer_as_master() {
    let mut m = stopping_master(confirming());
    assert_eq!(
        m.handle(seen(Role::Backup, 3)),
        vec![Action::ConfirmPeer(true)],
        "released here, not yet reported there"
    );
    assert!(m.view().awaiting_peer);
    assert_eq!(
        m.handle(seen(Role::Backup, 3)),
        vec![],
        "one wait at a time"
    );
    let got = m.handle(Event::PeerConfirmed);
    assert_eq!(got[0], Action::Stopwatch(Stopwatch::Moved), "{got:?}");
    assert!(got.contains(&Action::StopProxy(SIGTERM)), "{got:?}");
    assert!(!m.view().awaiting_peer);
}

#[test]
fn probe_and_peer_confirmation_run_together_and_both_must_pass() {
    let both = Policy {
        probe: true,
        confirm_peer: true,
        ..policy()
    };
    let mut m = stopping_master(both);
    assert_eq!(
        m.handle(seen(Role::Backup, 3)),
        vec![Action::Probe(true), Action::ConfirmPeer(true)]
    );
    assert_eq!(
        m.handle(Event::PeerConfirmed),
        vec![],
        "the probe is still out"
    );
    let got = m.handle(Event::ProbeSucceeded);
    assert!(got.contains(&Action::StopProxy(SIGTERM)), "{got:?}");
}

#[test]
fn the_second_stop_signal_skips_the_peer_confirmation() {
    let mut m = stopping_master(confirming());
    m.handle(seen(Role::Backup, 3));
    let got = m.handle(Event::Signal(SIGTERM));
    assert_eq!(
        got[..2],
        [Action::Note(Note::WaitSkipped), Action::ConfirmPeer(false)],
        "{got:?}"
    );
    assert!(got.contains(&Action::StopProxy(SIGTERM)), "{got:?}");
    assert_eq!(
        m.handle(Event::PeerConfirmed),
        vec![],
        "a late answer changes nothing"
    );
}

#[test]
fn demote_with_confirm_peer_is_released_only_once_consul_shows_the_peer() {
    let mut m = after(confirming(), &with(HEALTHY, &[seen(Role::Master, 2)]));
    m.handle(Event::Maintenance(true));
    m.handle(applied(Level::Standby, 3));
    assert_eq!(
        m.handle(seen(Role::Backup, 3)),
        vec![Action::ConfirmPeer(true)]
    );
    assert!(m.view().awaiting_peer, "status says not released yet");
    assert_eq!(
        m.handle(Event::PeerConfirmed),
        vec![
            Action::Note(Note::MaintenanceReleased),
            Action::Disarm(Timer::DemoteWatch),
            Action::Watch(Watch::Idle),
        ]
    );
    assert!(!m.view().awaiting_peer);

    // No confirmation within failover_timeout: the wait is cancelled.
    let mut m = after(confirming(), &with(HEALTHY, &[seen(Role::Master, 2)]));
    m.handle(Event::Maintenance(true));
    m.handle(applied(Level::Standby, 3));
    m.handle(seen(Role::Backup, 3));
    assert_eq!(
        m.handle(Event::Deadline(Timer::DemoteWatch)),
        vec![
            Action::ConfirmPeer(false),
            Action::Disarm(Timer::DemoteWatch),
            Action::Watch(Watch::Idle),
        ]
    );
}

/// A row of the demote-with-probe table: name, policy, setup, event, the
/// actions, and `awaiting_probe` afterwards.
type DemoteRow<'a> = (&'a str, Policy, &'a [Event], Event, Vec<Action>, bool);

/// `handoff demote` confirms the move as a stop does: with `probe`, the
/// peer must answer through the VIP before the demote counts as released
/// (`status.released`, which `handoff demote` waits for).
#[test]
fn demote_with_a_probe_is_released_only_once_the_peer_answers() {
    use Action::{ConfirmPeer, Disarm, Probe};
    let both = Policy {
        probe: true,
        confirm_peer: true,
        ..policy()
    };
    let released = || {
        vec![
            Action::Note(Note::MaintenanceReleased),
            Disarm(Timer::DemoteWatch),
            Action::Watch(Watch::Idle),
        ]
    };
    // Master, demoted, standby applied.
    let demoted = with(
        HEALTHY,
        &[
            seen(Role::Master, 2),
            Event::Maintenance(true),
            applied(Level::Standby, 3),
        ],
    );
    let gone = with(&demoted, &[seen(Role::Backup, 3)]);
    let probing = with(&gone, &[Event::ProbeSucceeded]);
    let gave_up = with(&gone, &[Event::Deadline(Timer::DemoteWatch)]);
    // (name, policy, setup, event, actions, awaiting_probe afterwards)
    let rows: Vec<DemoteRow> = vec![
        (
            "released here: the probe starts",
            probed(),
            &demoted,
            seen(Role::Backup, 3),
            vec![Probe(true)],
            true,
        ),
        (
            "the peer answers: released",
            probed(),
            &gone,
            Event::ProbeSucceeded,
            released(),
            false,
        ),
        (
            "no answer within failover_timeout: the probe ends, still not released",
            probed(),
            &gone,
            Event::Deadline(Timer::DemoteWatch),
            vec![
                Probe(false),
                Disarm(Timer::DemoteWatch),
                Action::Watch(Watch::Idle),
            ],
            true,
        ),
        (
            "a late answer after the wait changes nothing",
            probed(),
            &gave_up,
            Event::ProbeSucceeded,
            vec![],
            true,
        ),
        (
            "probe and Consul run together",
            both.clone(),
            &demoted,
            seen(Role::Backup, 3),
            vec![Probe(true), ConfirmPeer(true)],
            true,
        ),
        (
            "Consul alone is not enough while the probe is out",
            both.clone(),
            &gone,
            Event::PeerConfirmed,
            vec![],
            true,
        ),
        (
            "both passed: released",
            both,
            &probing,
            Event::PeerConfirmed,
            released(),
            false,
        ),
    ];
    for (name, policy, setup, event, actions, awaiting) in rows {
        let mut m = after(policy, setup);
        assert_eq!(m.handle(event), actions, "{name}");
        assert_eq!(m.view().awaiting_probe, awaiting, "{name}: awaiting_probe");
    }

    // A stop during the demote's probe starts the stop's own.
    let mut m = after(probed(), &gone);
    let got = m.handle(Event::Signal(SIGTERM));
    assert!(got.contains(&Probe(false)), "{got:?}");
    assert!(!m.view().awaiting_probe);
}

#[test]
fn maintenance_holds_a_healthy_node_at_standby() {
    // Set before the proxy is healthy: healthy means standby, not up.
    let mut m = after(policy(), &[Event::Maintenance(true), DOWN1, Event::Spawned]);
    assert_eq!(
        m.handle(Event::Deadline(Timer::HealthGate)),
        vec![Action::Notify(Notice::Ready), set(Level::Standby, 2)]
    );
    // Cleared: up; set again: standby; an unhealthy proxy: down regardless.
    assert_eq!(m.handle(Event::Maintenance(false)), vec![set(Level::Up, 3)]);
    assert_eq!(
        m.handle(Event::Maintenance(true)),
        vec![set(Level::Standby, 4)]
    );
    assert_eq!(m.handle(Event::Health(false)), vec![set(Level::Down, 5)]);
    assert_eq!(
        m.handle(Event::Maintenance(false)),
        vec![],
        "unhealthy: stays down"
    );
    assert_eq!(
        m.handle(Event::Health(true)),
        vec![Action::Notify(Notice::Ready), set(Level::Up, 6)]
    );
}

#[test]
fn demote_polls_eagerly_until_the_ip_left() {
    let master = with(HEALTHY, &[seen(Role::Master, 2)]);
    let mut m = after(policy(), &master);
    assert_eq!(
        m.handle(Event::Maintenance(true)),
        vec![
            set(Level::Standby, 3),
            Action::Watch(Watch::Fast),
            Action::Arm(Timer::DemoteWatch, S(10)),
        ]
    );
    assert_eq!(m.handle(applied(Level::Standby, 3)), vec![]);
    assert_eq!(m.handle(seen(Role::Master, 3)), vec![], "still here");
    assert_eq!(
        m.handle(seen(Role::Backup, 3)),
        vec![
            Action::Note(Note::MaintenanceReleased),
            Action::Disarm(Timer::DemoteWatch),
            Action::Watch(Watch::Idle),
        ]
    );
    let view = m.view();
    assert!(view.maintenance && view.applied && view.role_current);
    assert_eq!(view.level, Some(Level::Standby));

    // No peer takes over: the eager polling ends after failover_timeout.
    let mut m = after(policy(), &master);
    m.handle(Event::Maintenance(true));
    assert_eq!(
        m.handle(Event::Deadline(Timer::DemoteWatch)),
        vec![
            Action::Disarm(Timer::DemoteWatch),
            Action::Watch(Watch::Idle)
        ]
    );

    // A stop during the wait keeps its own fast watch.
    let mut m = after(policy(), &master);
    m.handle(Event::Maintenance(true));
    let got = m.handle(Event::Signal(SIGTERM));
    assert!(got.contains(&Action::Disarm(Timer::DemoteWatch)), "{got:?}");
    assert!(!got.contains(&Action::Watch(Watch::Idle)), "{got:?}");
}

#[test]
fn a_stop_in_maintenance_still_goes_down() {
    let mut m = after(
        policy(),
        &[
            Event::Maintenance(true),
            DOWN1,
            Event::Spawned,
            Event::Deadline(Timer::HealthGate),
        ],
    );
    let got = m.handle(Event::Signal(SIGTERM));
    assert!(got.contains(&set(Level::Down, 3)), "{got:?}");
    assert_eq!(
        m.handle(Event::Maintenance(false)),
        vec![],
        "never up while stopping"
    );
}

#[test]
fn deferred_stop_is_delivered_once_spawned() {
    let mut m = after(policy(), &[Event::Signal(SIGTERM), DOWN1]);
    let got = m.handle(Event::Spawned);
    assert!(
        !got.iter().any(|a| matches!(
            a,
            Action::SetLevel {
                level: Level::Up,
                ..
            }
        )),
        "{got:?}"
    );
    assert_eq!(m.phase(), Phase::Stopping(Step::Failover { held: true }));
    let got = m.handle(seen(Role::Backup, 1));
    assert!(got.contains(&Action::StopProxy(SIGTERM)), "{got:?}");
}

#[test]
fn restart_backs_off_and_resets() {
    let mut p = policy();
    p.restart = RestartPolicy::OnFailure;
    let mut m = after(p, HEALTHY);
    let mut delays = Vec::new();
    for _ in 0..7 {
        let got = m.handle(Event::ProxyExited(ProcessEnd::Exited(1)));
        let down = seq_of(&got);
        assert!(
            got.contains(&set(Level::Down, down)),
            "down before restart: {got:?}"
        );
        let delay = got.iter().find_map(|a| match a {
            Action::Arm(Timer::Restart, d) => Some(*d),
            _ => None,
        });
        delays.push(delay.expect("restart armed"));
        assert!(got.contains(&Action::CountRestart), "{got:?}");
        m.handle(applied(Level::Down, down));
        assert_eq!(
            m.handle(Event::Deadline(Timer::Restart)),
            vec![Action::Spawn]
        );
        m.handle(Event::Spawned);
        let up = seq_of(&m.handle(Event::Deadline(Timer::HealthGate)));
        m.handle(applied(Level::Up, up));
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30].map(S));
    m.handle(Event::Deadline(Timer::BackoffReset));
    let got = m.handle(Event::ProxyExited(ProcessEnd::Exited(1)));
    assert!(got.contains(&Action::Arm(Timer::Restart, S(1))), "{got:?}");
    assert_eq!(m.restarts(), 8);
}

#[test]
fn on_failure_does_not_restart_a_clean_exit() {
    let mut p = policy();
    p.restart = RestartPolicy::OnFailure;
    let mut m = after(p, RUNNING);
    assert_eq!(
        m.handle(Event::ProxyExited(ProcessEnd::Exited(0))).last(),
        Some(&Action::Exit(0))
    );
}

#[test]
fn stop_during_restart_backoff_exits_with_the_last_status() {
    let mut p = policy();
    p.restart = RestartPolicy::Always;
    let mut m = after(
        p,
        &with(RUNNING, &[Event::ProxyExited(ProcessEnd::Exited(5))]),
    );
    assert_eq!(m.phase(), Phase::Restarting);
    assert_eq!(
        m.handle(Event::Signal(SIGTERM)),
        vec![Action::Disarm(Timer::Restart), Action::Exit(5)]
    );
}

#[test]
fn exit_code_map_applies_to_the_proxy_status() {
    let mut p = policy();
    p.exit_code_map = ExitCodeMap([(143, 0)].into_iter().collect());
    let mut m = after(
        p,
        &with(RUNNING, &[seen(Role::Backup, 1), Event::Signal(SIGTERM)]),
    );
    assert_eq!(
        m.handle(Event::ProxyExited(ProcessEnd::Signaled(15)))
            .last(),
        Some(&Action::Exit(0))
    );
}

// ---- every phase x every event, against the invariants ----------------------

/// What the outside world knows, to check the machine's actions against.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Default)]
struct World {
    alive: bool,
    spawn_pending: bool,
    /// Every level request so far, and whether it was answered.
    requests: Vec<(Level, u64, bool)>,
    /// The level confirmed for the newest request.
    applied: Option<Level>,
    /// The newest request answered so far.
    answered: u64,
    stop_seen: bool,
    probing: bool,
    confirming: bool,
    exited: bool,
    suspended: bool,
    timers: Vec<Timer>,
    /// Between `Notify(Reloading)` and `Notify(Reloaded)`.
    reloading: bool,
    /// Between `ReloadStep::Begin` and `ReloadStep::Finish`.
    reload: bool,
    /// `on_stop` was asked for.
    stop_hooked: bool,
    /// Duties are on.
    duties: bool,
    /// The VIPs are on lo.
    loopback: bool,
    /// The reload's check, command, worker watch or health check runs (and
    /// so may report).
    checking: bool,
    commanding: bool,
    watching: bool,
    health_running: bool,
    /// STOPPING=1 went out.
    stop_noticed: bool,
    /// The failover stopwatch was started, and read.
    stopwatch: bool,
    moved: bool,
    /// The signal reader's forwarding table.
    routes: Vec<(Signal, Signal)>,
}

impl World {
    fn latest(&self) -> Option<(Level, u64)> {
        self.requests.last().map(|(l, s, _)| (*l, *s))
    }

    fn before(&mut self, event: Event) {
        match event {
            Event::Spawned => {
                self.spawn_pending = false;
                self.alive = true;
                self.suspended = false;
            }
            Event::SpawnFailed { .. } => self.spawn_pending = false,
            Event::ProxyExited(_) => {
                self.alive = false;
                self.suspended = false;
            }
            Event::ProxySuspended(stopped) => self.suspended = stopped,
            Event::LevelApplied { level, seq, .. } => {
                self.answered = self.answered.max(seq);
                for r in &mut self.requests {
                    if r.1 == seq {
                        r.2 = true;
                    }
                }
                if self.latest().map(|(_, s)| s) == Some(seq) {
                    self.applied = Some(level);
                }
            }
            Event::Signal(s) if s == SIGTERM || s == SIGINT => self.stop_seen = true,
            Event::Deadline(t) => self.timers.retain(|x| *x != t),
            Event::ProbeSucceeded => self.probing = false,
            Event::PeerConfirmed => self.confirming = false,
            Event::Reload(ReloadEvent::Checked(_)) => self.checking = false,
            Event::Reload(ReloadEvent::CommandDone(_)) => self.commanding = false,
            Event::Reload(ReloadEvent::Healthy) => self.health_running = false,
            _ => {}
        }
    }

    /// Checks a hook or a duties switch against the invariants.
    fn hooks_and_duties(&mut self, action: &Action, context: &str) {
        match action {
            Action::Hook(call) if call.hook == HookName::OnStop => {
                assert!(
                    self.stop_seen && !self.stop_hooked,
                    "{context}: on_stop without a stop, or twice"
                );
                self.stop_hooked = true;
            }
            Action::Duties(on) => {
                assert!(
                    !*on || (self.alive && !self.stop_seen && self.applied == Some(Level::Up)),
                    "{context}: duties on without a proxy at level up, or after a stop"
                );
                assert_ne!(
                    *on, self.duties,
                    "{context}: duties switched to what they were"
                );
                self.duties = *on;
            }
            _ => {}
        }
    }

    /// Checks a switch of the VIPs on lo against the invariants.
    fn loopback_vip(&mut self, on: bool, context: &str) {
        assert_ne!(
            on, self.loopback,
            "{context}: the VIPs on lo switched to what they were"
        );
        assert!(
            !on || (self.alive && !self.exited),
            "{context}: the VIPs on lo without a proxy"
        );
        self.loopback = on;
    }

    /// Checks a reload's step against the invariants.
    fn reload_step(&mut self, step: ReloadStep, context: &str) {
        match step {
            ReloadStep::Begin => {
                assert!(!self.reload, "{context}: two reloads at once");
                assert!(
                    self.alive && !self.stop_seen,
                    "{context}: a reload begins without a proxy, or after a stop"
                );
                self.reload = true;
            }
            ReloadStep::Finish(_) => {
                assert!(self.reload, "{context}: a reload ends that never began");
                self.reload = false;
                self.checking = false;
                self.commanding = false;
                self.watching = false;
                self.health_running = false;
            }
            ReloadStep::Refuse(_) => {}
            ReloadStep::Check
            | ReloadStep::WatchWorkers
            | ReloadStep::Signal(_)
            | ReloadStep::Sent(_)
            | ReloadStep::RunCommand
            | ReloadStep::CheckHealth => {
                assert!(
                    self.reload && self.alive,
                    "{context}: a reload step {step:?} outside a reload, or without a proxy"
                );
                if let ReloadStep::Signal(_) | ReloadStep::Sent(_) = step {
                    assert!(
                        self.reloading && !self.checking,
                        "{context}: a reload is sent inside RELOADING=1 .. READY=1, after its check"
                    );
                }
                match step {
                    ReloadStep::Check => self.checking = true,
                    ReloadStep::RunCommand => self.commanding = true,
                    ReloadStep::WatchWorkers => self.watching = true,
                    ReloadStep::CheckHealth => self.health_running = true,
                    _ => {}
                }
            }
        }
    }

    /// Checks one action against the invariants and records its effect.
    fn after(&mut self, action: &Action, context: &str) {
        assert!(!self.exited, "{context}: action {action:?} after Exit");
        match action {
            Action::Exit(_) => {
                assert!(!self.alive, "{context}: exit while the proxy lives");
                assert!(!self.loopback, "{context}: exit with the VIPs on lo");
                assert!(!self.spawn_pending, "{context}: exit with a spawn pending");
                self.exited = true;
            }
            Action::Spawn => {
                assert!(
                    !self.alive && !self.spawn_pending,
                    "{context}: second proxy"
                );
                let latest = self.latest().map(|(l, _)| l);
                assert_eq!(
                    latest,
                    Some(Level::Down),
                    "{context}: spawn while not requesting down"
                );
                assert_eq!(
                    self.applied,
                    Some(Level::Down),
                    "{context}: spawn before down was applied"
                );
                self.spawn_pending = true;
            }
            Action::Forward { .. }
            | Action::StopProxy(_)
            | Action::KillProxy
            | Action::ContinueProxy => {
                assert!(
                    self.alive,
                    "{context}: signalling a proxy that is not running"
                );
                assert!(
                    !(self.loopback && matches!(action, Action::StopProxy(_) | Action::KillProxy)),
                    "{context}: the proxy's stop signal with the VIPs still on lo"
                );
                if let Action::Forward { received, .. } = action {
                    assert!(
                        *received != SIGHUP,
                        "{context}: SIGHUP is a reload (ReloadStep), never a forward"
                    );
                }
            }
            Action::Notify(notice) => self.noticed(*notice, context),
            Action::Stopwatch(lap) => self.timed(*lap, context),
            Action::CountRestart => {
                assert!(
                    !self.alive && !self.stop_seen,
                    "{context}: a restart counted with a proxy alive, or after a stop"
                );
            }
            Action::SetLevel { level, seq } => {
                assert!(
                    !(self.stop_seen && *level == Level::Up),
                    "{context}: promoted after a stop signal"
                );
                assert!(
                    *level != Level::Up || self.alive,
                    "{context}: promoted without a proxy"
                );
                assert!(
                    *level != Level::Up || !self.suspended,
                    "{context}: promoted a stopped proxy"
                );
                let from = self.latest().map(|(l, _)| l);
                assert!(
                    !(self.stop_seen && *level == Level::Standby && from == Some(Level::Down)),
                    "{context}: a stop raised the node from down to standby"
                );
                assert!(
                    self.latest().is_none_or(|(_, s)| *seq > s),
                    "{context}: request numbers must grow"
                );
                self.requests.push((*level, *seq, false));
                self.applied = None;
            }
            Action::Arm(t, _) => {
                self.timers.retain(|x| x != t);
                self.timers.push(*t);
            }
            Action::Disarm(t) => self.timers.retain(|x| x != t),
            Action::Probe(start) => self.probing = *start,
            Action::ConfirmPeer(start) => self.confirming = *start,
            Action::Reload(step) => self.reload_step(*step, context),
            Action::Hook(_) | Action::Duties(_) | Action::CancelStopHook => {
                self.hooks_and_duties(action, context);
            }
            Action::LoopbackVip(on) => self.loopback_vip(*on, context),
            Action::FastPath(routes) => self.routed(routes, context),
            // Sent by the reader by some table, maybe one gone stale since.
            Action::Forwarded { .. }
            | Action::Dropped { .. }
            | Action::Watch(_)
            | Action::Note(_) => {}
        }
    }

    /// Checks the fast path's table against the invariants.
    fn routed(&mut self, routes: &[(Signal, Signal)], context: &str) {
        assert!(
            routes.is_empty() || (self.alive && !self.exited),
            "{context}: signals routed to a proxy that is not running"
        );
        assert!(
            routes
                .iter()
                .all(|(received, _)| !crate::signals::STOP.contains(received)),
            "{context}: a stop signal on the fast path: {routes:?}"
        );
        assert_ne!(
            routes, self.routes,
            "{context}: the same table handed out again"
        );
        self.routes = routes.to_vec();
    }

    /// Checks a systemd notice against the invariants.
    fn noticed(&mut self, notice: Notice, context: &str) {
        match notice {
            Notice::Ready => {
                assert!(
                    self.alive && !self.suspended && !self.stop_seen,
                    "{context}: READY=1 without a healthy proxy"
                );
            }
            Notice::Reloading => {
                assert!(!self.reloading, "{context}: RELOADING=1 twice");
                self.reloading = true;
            }
            Notice::Reloaded => {
                assert!(self.reloading, "{context}: READY=1 after no reload");
                self.reloading = false;
            }
            Notice::Stopping => {
                assert!(
                    self.stop_seen && !self.stop_noticed,
                    "{context}: STOPPING=1 without a stop, or twice"
                );
                self.stop_noticed = true;
            }
        }
    }

    /// Checks the failover stopwatch against the invariants.
    fn timed(&mut self, lap: Stopwatch, context: &str) {
        match lap {
            Stopwatch::Start => {
                assert!(
                    self.stop_noticed && !self.stopwatch,
                    "{context}: the stopwatch starts once, with the stop"
                );
                self.stopwatch = true;
            }
            Stopwatch::Moved => {
                assert!(
                    self.stopwatch && !self.moved,
                    "{context}: a move measured without a stopwatch, or twice"
                );
                self.moved = true;
            }
        }
    }
}

/// Every event the world could produce now: the fixed ones, and an answer
/// (success or failure) to any request not answered yet, old ones included.
fn all_events(world: &World) -> Vec<Event> {
    let mut v = vec![
        Event::Spawned,
        Event::SpawnFailed { code: 127 },
        Event::ProxyExited(ProcessEnd::Exited(0)),
        Event::ProxyExited(ProcessEnd::Signaled(9)),
        Event::Health(true),
        Event::Health(false),
    ];
    v.extend(
        [
            SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGKILL, SIGALRM, SIGTSTP, SIGCONT,
        ]
        .map(Event::Signal),
    );
    // Sent on the fast path by the table now, or by one gone stale.
    v.extend(
        world
            .routes
            .iter()
            .map(|&(received, sent)| Event::Forwarded { received, sent }),
    );
    v.extend(
        [(SIGUSR1, SIGUSR1), (SIGHUP, SIGHUP), (SIGTSTP, SIGCONT)]
            .map(|(received, sent)| Event::Forwarded { received, sent }),
    );
    v.push(Event::ProxySuspended(true));
    v.push(Event::ProxySuspended(false));
    for role in [Role::Master, Role::Backup, Role::Fault, Role::Unknown] {
        // As seen now, and a stale report from before any answer.
        v.push(seen(role, world.answered));
        v.push(seen(role, 0));
    }
    for &(level, seq, answered) in &world.requests {
        if !answered {
            v.push(Event::LevelApplied {
                level,
                ok: true,
                seq,
            });
            v.push(Event::LevelApplied {
                level,
                ok: false,
                seq,
            });
        }
    }
    v.extend(
        [
            Timer::HealthGate,
            Timer::BackoffReset,
            Timer::Restart,
            Timer::Failover,
            Timer::Settle,
            Timer::StopTimeout,
            Timer::DemoteWatch,
            Timer::Reload,
        ]
        .map(Event::Deadline),
    );
    v.extend(
        [
            ReloadEvent::Requested,
            ReloadEvent::Checked(true),
            ReloadEvent::Checked(false),
            ReloadEvent::CommandDone(true),
            ReloadEvent::CommandDone(false),
            ReloadEvent::ProxyReady,
            ReloadEvent::NewWorker,
            ReloadEvent::Retired,
            ReloadEvent::Healthy,
            ReloadEvent::Unconfirmable,
        ]
        .map(Event::Reload),
    );
    v.push(Event::ProbeSucceeded);
    v.push(Event::PeerConfirmed);
    v.push(Event::Maintenance(true));
    v.push(Event::Maintenance(false));
    v.retain(|e| possible(world, *e));
    v
}

/// Whether the world could produce `event` now (a real dispatcher never
/// reports an exit of a proxy that is not running, for example).
fn possible(world: &World, event: Event) -> bool {
    match event {
        Event::Spawned | Event::SpawnFailed { .. } => world.spawn_pending,
        Event::ProxyExited(_)
        | Event::ProxySuspended(_)
        | Event::Reload(ReloadEvent::ProxyReady) => world.alive,
        Event::LevelApplied { level, seq, .. } => world.requests.contains(&(level, seq, false)),
        Event::Deadline(t) => world.timers.contains(&t),
        Event::ProbeSucceeded => world.probing,
        Event::PeerConfirmed => world.confirming,
        Event::Reload(ReloadEvent::Checked(_)) => world.checking,
        Event::Reload(ReloadEvent::CommandDone(_)) => world.commanding,
        Event::Reload(
            ReloadEvent::NewWorker | ReloadEvent::Retired | ReloadEvent::Unconfirmable,
        ) => world.watching,
        Event::Reload(ReloadEvent::Healthy) => world.health_running,
        _ => true,
    }
}

fn step(m: &mut Machine, world: &mut World, event: Event, context: &str) -> Vec<Action> {
    world.before(event);
    let context = format!("{context} {event:?} in {:?}", m.phase());
    let actions = m.handle(event);
    for a in &actions {
        world.after(a, &context);
    }
    actions
}

/// Replays `events` (skipping impossible ones) from a fresh start, checking
/// every action; returns the machine and the world.
fn replay(policy: Policy, events: &[Event]) -> (Machine, World) {
    let mut m = Machine::new(policy);
    let mut world = World::default();
    for a in m.start() {
        world.after(&a, "start");
    }
    for (i, e) in events.iter().enumerate() {
        if !world.exited && possible(&world, *e) {
            step(&mut m, &mut world, *e, &format!("step {i}"));
        }
    }
    (m, world)
}

fn setups() -> Vec<(&'static str, Vec<Event>)> {
    vec![
        ("starting", vec![]),
        ("spawning", SPAWNING.to_vec()),
        ("running", RUNNING.to_vec()),
        (
            "promoting",
            with(RUNNING, &[Event::Deadline(Timer::HealthGate)]),
        ),
        ("healthy", HEALTHY.to_vec()),
        (
            "restarting",
            with(RUNNING, &[Event::ProxyExited(ProcessEnd::Exited(1))]),
        ),
        ("failover wait", MASTER_STOPPING.to_vec()),
        (
            "settle",
            with(
                MASTER_STOPPING,
                &[applied(Level::Down, 3), seen(Role::Backup, 3)],
            ),
        ),
        (
            "draining",
            with(MASTER_STOPPING, &[Event::Deadline(Timer::Failover)]),
        ),
        (
            "killed",
            with(
                MASTER_STOPPING,
                &[Event::Signal(SIGTERM), Event::Signal(SIGTERM)],
            ),
        ),
        (
            "exiting",
            with(HEALTHY, &[Event::ProxyExited(ProcessEnd::Exited(2))]),
        ),
        ("deferred stop", vec![Event::Signal(SIGTERM)]),
        (
            "done",
            with(RUNNING, &[Event::ProxyExited(ProcessEnd::Exited(0))]),
        ),
    ]
}

#[test]
fn every_phase_times_every_event_keeps_the_invariants() {
    let mut checked = 0;
    for restart in [RestartPolicy::Never, RestartPolicy::Always] {
        for (settle, stop_level) in [(Duration::ZERO, Level::Down), (S(1), Level::Standby)] {
            let p = Policy {
                settle,
                restart,
                stop_level,
                hooks: restart == RestartPolicy::Always,
                duties: stop_level == Level::Standby,
                loopback_vip: restart == RestartPolicy::Never,
                reload: if settle.is_zero() {
                    policy().reload
                } else {
                    full_reload()
                },
                ..policy()
            };
            for (name, setup) in setups() {
                let (m, world) = replay(p.clone(), &setup);
                for event in all_events(&world) {
                    let (mut m, mut world) = (m.clone(), world.clone());
                    step(&mut m, &mut world, event, name);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 500, "only {checked} combinations were possible");
}

/// A reload with every step: a check, a command, and all three
/// confirmations.
fn full_reload() -> ReloadPolicy {
    ReloadPolicy {
        send: ReloadBy::Command,
        check: true,
        confirm: Confirmations {
            ready: true,
            workers: true,
            retired: true,
            health: true,
        },
        timeout: S(15),
    }
}

/// Deterministic xorshift, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        items[usize::try_from(self.0 % items.len() as u64).unwrap()]
    }
}

/// What the world owes once a stop is under way: a deadline, the answer to
/// the newest request, the spawn's outcome, or the exit of a killed proxy.
fn owed(m: &Machine, world: &World) -> Option<Event> {
    if let Some(t) = world.timers.first() {
        return Some(Event::Deadline(*t));
    }
    if let Some(&(level, seq, false)) = world.requests.last() {
        return Some(Event::LevelApplied {
            level,
            ok: true,
            seq,
        });
    }
    if world.spawn_pending {
        return Some(Event::Spawned);
    }
    // Killed earlier in the walk: SIGKILL always ends it.
    (world.alive && m.phase() == Phase::Stopping(Step::Killed))
        .then_some(Event::ProxyExited(ProcessEnd::Signaled(9)))
}

#[test]
fn random_walks_keep_the_invariants_and_always_end_after_a_stop() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for walk in 0..3000 {
        let restart = [
            RestartPolicy::Never,
            RestartPolicy::OnFailure,
            RestartPolicy::Always,
        ][walk % 3];
        let settle = if walk % 2 == 0 { Duration::ZERO } else { S(1) };
        let stop_level = if walk % 5 == 0 {
            Level::Standby
        } else {
            Level::Down
        };
        let (mut m, mut world) = replay(
            Policy {
                settle,
                restart,
                stop_level,
                probe: walk % 7 == 0,
                confirm_peer: walk % 4 == 0,
                reload: if walk % 3 == 1 {
                    full_reload()
                } else {
                    policy().reload
                },
                hooks: walk % 2 == 1,
                duties: walk % 3 != 0,
                ..policy()
            },
            &[],
        );
        for i in 0..40 {
            if world.exited {
                break;
            }
            let event = rng.pick(&all_events(&world));
            step(&mut m, &mut world, event, &format!("walk {walk} step {i}"));
        }
        // Liveness: after a stop signal, delivering only what the world owes
        // ends in Exit within a bounded number of steps.
        let mut next = Some(Event::Signal(SIGTERM));
        for i in 0..50 {
            if world.exited {
                break;
            }
            let event = next.take().or_else(|| owed(&m, &world));
            let Some(event) = event else {
                panic!("walk {walk}: stuck in {:?} with {world:?}", m.phase())
            };
            let actions = step(
                &mut m,
                &mut world,
                event,
                &format!("walk {walk} liveness {i}"),
            );
            if world.alive
                && actions
                    .iter()
                    .any(|a| matches!(a, Action::StopProxy(_) | Action::KillProxy))
            {
                next = Some(Event::ProxyExited(ProcessEnd::Signaled(15)));
            }
        }
        assert!(
            world.exited,
            "walk {walk}: no exit after a stop, phase {:?}",
            m.phase()
        );
    }
}

#[test]
fn stop_signal_names_match_the_spec() {
    let stops: Vec<Signal> = crate::signals::STOP.to_vec();
    assert_eq!(stops, [SIGINT, SIGTERM]);
}

#[test]
fn phase_names_are_the_status_schemas() {
    // docs/status.md: `agent.phase`; `handoff promote` compares with it.
    let table = [
        (Phase::Starting, "starting"),
        (Phase::Spawning, "spawning"),
        (Phase::Running { healthy: false }, "running:unhealthy"),
        (Phase::Running { healthy: true }, "running:healthy"),
        (Phase::Restarting, "restarting"),
        (
            Phase::Stopping(Step::Failover { held: true }),
            "stopping:failover",
        ),
        (Phase::Stopping(Step::Settle), "stopping:settle"),
        (Phase::Stopping(Step::Draining), "stopping:draining"),
        (Phase::Stopping(Step::Killed), "stopping:killed"),
        (Phase::Exiting { code: 3 }, "exiting"),
        (Phase::Done, "exiting"),
    ];
    for (phase, name) in table {
        let json = serde_json::to_string(&phase.name()).expect("a PhaseName serialises");
        assert_eq!(json, format!("\"{name}\""), "{phase:?}: status JSON");
        assert_eq!(
            phase.name().to_string(),
            name,
            "{phase:?}: as people read it"
        );
        let back: PhaseName = serde_json::from_str(&json).expect("and reads back");
        assert_eq!(back, phase.name(), "{phase:?}: read back");
    }
    assert!(
        serde_json::from_str::<PhaseName>("\"running\"").is_err(),
        "only the schema's names"
    );
}

#[test]
fn released_waits_for_the_role_after_the_newest_level_and_every_confirmation() {
    let mut m = after(probed(), &with(HEALTHY, &[seen(Role::Master, 2)]));
    assert!(!m.released(), "master");
    m.handle(Event::Maintenance(true));
    // Standby (3) asked: an older BACKUP says nothing.
    m.handle(seen(Role::Backup, 2));
    assert!(!m.released());
    m.handle(applied(Level::Standby, 3));
    m.handle(seen(Role::Backup, 3));
    assert!(!m.released(), "the probe is still owed");
    m.handle(Event::ProbeSucceeded);
    assert!(m.released());
}

/// READY=1 follows the proxy's health: one notice each time a proxy passes
/// its gate (systemd hears only the first), none while it stays healthy,
/// none for a level alone, none once stopping.
#[test]
fn ready_is_noticed_once_per_healthy_entry() {
    let ready = |got: Vec<Action>| {
        got.iter()
            .filter(|a| **a == Action::Notify(Notice::Ready))
            .count()
    };
    let p = Policy {
        restart: RestartPolicy::Always,
        ..policy()
    };
    let mut m = after(p, RUNNING);
    let steps = [
        (Event::Deadline(Timer::HealthGate), 1, "the gate passes"),
        (UP2, 0, "up applied: a level is not readiness"),
        (Event::Health(true), 0, "still healthy"),
        (Event::Health(false), 0, "unhealthy"),
        (Event::Health(true), 1, "healthy again"),
        (Event::ProxySuspended(true), 0, "stopped (WSTOPPED)"),
        (Event::ProxySuspended(false), 1, "continued"),
        (Event::Maintenance(true), 0, "held at standby"),
        (Event::ProxyExited(ProcessEnd::Exited(1)), 0, "crashed"),
        (applied(Level::Down, 8), 0, "down"),
    ];
    for (event, count, name) in steps {
        assert_eq!(ready(m.handle(event)), count, "{name}");
    }
    assert_eq!(
        m.handle(Event::Deadline(Timer::Restart)),
        vec![Action::Spawn]
    );
    let steps = [
        (Event::Spawned, 0, "the next proxy"),
        (Event::Deadline(Timer::HealthGate), 1, "passes its gate"),
        (Event::Signal(SIGTERM), 0, "a stop"),
        (Event::Health(true), 0, "health while stopping"),
    ];
    for (event, count, name) in steps {
        assert_eq!(ready(m.handle(event)), count, "{name}");
    }
}

/// STOPPING=1 goes out once, as the stop sequence begins, and the failover
/// stopwatch starts with it; further stop signals add neither.
#[test]
fn the_stop_is_noticed_once_and_starts_the_stopwatch() {
    let begun = [
        Action::Notify(Notice::Stopping),
        Action::Stopwatch(Stopwatch::Start),
    ];
    let neither = |got: &[Action]| !got.iter().any(|a| begun.contains(a));
    let mut m = after(policy(), &with(HEALTHY, &[seen(Role::Master, 2)]));
    let got = decisions(m.handle(Event::Signal(SIGTERM)));
    assert_eq!(got[..2], begun, "{got:?}");
    for more in ["second", "third", "fourth"] {
        let got = m.handle(Event::Signal(SIGTERM));
        assert!(neither(&got), "{more} stop signal: {got:?}");
    }

    // Held before the spawn: the stop begins, and is noticed, at the spawn;
    // a second signal held with it skips the wait at once, noticed once.
    for held in [1, 2] {
        let mut m = after(policy(), &vec![Event::Signal(SIGTERM); held]);
        let got = m.handle(DOWN1);
        assert!(neither(&got), "{got:?}");
        let got = m.handle(Event::Spawned);
        assert_eq!(
            got.iter().filter(|a| begun.contains(a)).count(),
            2,
            "{held} held: {got:?}"
        );
    }

    // Between restarts there is no proxy and no stop sequence: handoff
    // exits once down, as it did before STOPPING=1 was the machine's.
    let p = Policy {
        restart: RestartPolicy::Always,
        ..policy()
    };
    let mut m = after(
        p,
        &with(RUNNING, &[Event::ProxyExited(ProcessEnd::Exited(5))]),
    );
    let got = m.handle(Event::Signal(SIGTERM));
    assert!(neither(&got), "{got:?}");
}

#[test]
fn only_an_unconfirmed_down_is_logged_as_an_error() {
    assert_eq!(Note::DownUnconfirmed.severity(), Severity::Error);
    for note in [
        Note::StopDeferred,
        Note::NotMaster,
        Note::MoveConfirmed,
        Note::MoveTimedOut,
        Note::WaitSkipped,
        Note::StopTimedOut,
        Note::KillRequested,
        Note::Restarting,
        Note::ProxySuspended,
        Note::ProxyResumed,
        Note::AlreadyStopping,
        Note::GracefulFallback,
        Note::MaintenanceReleased,
    ] {
        assert_eq!(note.severity(), Severity::Info, "{note:?}");
    }
}

/// The stop counts every stop signal, those held before the spawn
/// included, and only while it is under way: the second skips the waits,
/// the third kills, wherever the stop is when they come.
#[test]
fn stop_signals_count_from_the_first_held_one() {
    let notes = |got: &[Action]| -> Vec<Note> {
        got.iter()
            .filter_map(|a| match a {
                Action::Note(n) => Some(*n),
                _ => None,
            })
            .collect()
    };
    // Held before the spawn, then delivered at once with the right count.
    for (held, note, phase) in [
        (1, None, Phase::Stopping(Step::Failover { held: true })),
        (2, Some(Note::WaitSkipped), Phase::Stopping(Step::Draining)),
        (3, Some(Note::KillRequested), Phase::Stopping(Step::Killed)),
    ] {
        let mut m = after(
            policy(),
            &with(&vec![Event::Signal(SIGTERM); held], &[DOWN1]),
        );
        let got = m.handle(Event::Spawned);
        assert_eq!(notes(&got).last().copied(), note, "{held} held: {got:?}");
        assert_eq!(m.phase(), phase, "{held} held");
    }
    // Draining after failover_timeout: the second only notes, the third kills.
    let mut m = after(
        policy(),
        &with(MASTER_STOPPING, &[Event::Deadline(Timer::Failover)]),
    );
    assert_eq!(
        m.handle(Event::Signal(SIGTERM)),
        vec![Action::Note(Note::AlreadyStopping)]
    );
    assert_eq!(m.phase(), Phase::Stopping(Step::Draining));
    let got = m.handle(Event::Signal(SIGTERM));
    assert_eq!(notes(&got), [Note::KillRequested], "{got:?}");
    assert_eq!(m.phase(), Phase::Stopping(Step::Killed));
    // A spawn that fails with a stop held exits with the spawn's status.
    let mut m = after(policy(), &[Event::Signal(SIGTERM), DOWN1]);
    assert_eq!(
        m.handle(Event::SpawnFailed { code: 127 }),
        vec![Action::Exit(127)]
    );
}

// ---- reloads ------------------------------------------------------------------

fn reload_policy(send: ReloadBy, check: bool, ready: bool, workers: bool) -> Policy {
    Policy {
        reload: ReloadPolicy {
            send,
            check,
            confirm: Confirmations {
                ready,
                workers,
                retired: workers,
                health: true,
            },
            timeout: S(15),
        },
        ..policy()
    }
}

const RELOAD: Event = Event::Reload(ReloadEvent::Requested);

fn reload(event: ReloadEvent) -> Event {
    Event::Reload(event)
}

/// The reload's steps among `actions`.
fn steps(actions: &[Action]) -> Vec<ReloadStep> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reload(step) => Some(*step),
            _ => None,
        })
        .collect()
}

#[test]
fn a_reload_is_checked_then_sent_then_confirmed_in_that_order() {
    // nginx: check, SIGHUP, a new worker, one health check.
    let mut m = after(
        reload_policy(ReloadBy::Signal(SIGHUP), true, false, true),
        HEALTHY,
    );
    let begun = m.handle(RELOAD);
    assert_eq!(
        begun,
        vec![
            Action::Reload(ReloadStep::Begin),
            Action::Notify(Notice::Reloading),
            Action::Arm(Timer::Reload, S(15)),
            Action::Reload(ReloadStep::Check),
        ],
        "nothing is sent before the check passed"
    );
    assert_eq!(
        steps(&m.handle(reload(ReloadEvent::Checked(true)))),
        [ReloadStep::WatchWorkers, ReloadStep::Signal(SIGHUP)],
        "the workers are listed before the signal, so a new one is told apart"
    );
    assert!(
        m.handle(reload(ReloadEvent::ProxyReady)).is_empty(),
        "READY=1 is not what confirms nginx"
    );
    assert!(
        m.handle(reload(ReloadEvent::NewWorker)).is_empty(),
        "nginx's old workers accept for 100 ms more: not yet"
    );
    assert_eq!(
        steps(&m.handle(reload(ReloadEvent::Retired))),
        [ReloadStep::CheckHealth]
    );
    assert_eq!(
        m.handle(reload(ReloadEvent::Healthy)),
        vec![
            Action::Disarm(Timer::Reload),
            Action::Reload(ReloadStep::Finish(ReloadOutcome::Confirmed)),
            Action::Notify(Notice::Reloaded),
        ]
    );
    assert_eq!(m.phase(), Phase::Running { healthy: true });
}

#[test]
fn a_failed_check_sends_nothing_and_never_restarts_the_proxy() {
    let mut m = after(
        reload_policy(ReloadBy::Signal(SIGHUP), true, false, true),
        HEALTHY,
    );
    m.handle(Event::Signal(SIGHUP));
    let failed = m.handle(reload(ReloadEvent::Checked(false)));
    assert_eq!(
        steps(&failed),
        [ReloadStep::Finish(ReloadOutcome::CheckFailed)]
    );
    assert!(failed.contains(&Action::Notify(Notice::Reloaded)));
    assert!(
        !failed.iter().any(|a| matches!(
            a,
            Action::SetLevel { .. } | Action::KillProxy | Action::StopProxy(_)
        )),
        "the node and the proxy are left alone: {failed:?}"
    );
    assert_eq!(m.phase(), Phase::Running { healthy: true });
}

#[test]
fn haproxy_ready_without_a_new_worker_is_not_a_confirmation() {
    // haproxy 2.6 says READY=1 after a failed reload too.
    let mut m = after(
        reload_policy(ReloadBy::Signal(SIGUSR2), false, true, true),
        HEALTHY,
    );
    m.handle(RELOAD);
    assert!(m.handle(reload(ReloadEvent::ProxyReady)).is_empty());
    assert_eq!(
        steps(&m.handle(Event::Deadline(Timer::Reload))),
        [ReloadStep::Finish(ReloadOutcome::TimedOut(
            Awaited::Confirmation {
                ready: false,
                workers: true,
                retired: true,
            }
        ))]
    );
    assert_eq!(m.restarts(), 0);
}

#[test]
fn caddy_may_say_ready_before_its_reload_command_returns() {
    let mut m = after(reload_policy(ReloadBy::Command, true, true, false), HEALTHY);
    m.handle(RELOAD);
    assert_eq!(
        steps(&m.handle(reload(ReloadEvent::Checked(true)))),
        [ReloadStep::RunCommand]
    );
    assert!(m.handle(reload(ReloadEvent::ProxyReady)).is_empty());
    assert_eq!(
        steps(&m.handle(reload(ReloadEvent::CommandDone(true)))),
        [ReloadStep::CheckHealth],
        "READY=1 seen while the command ran counts"
    );
    let mut m = after(
        reload_policy(ReloadBy::Command, false, true, false),
        HEALTHY,
    );
    m.handle(RELOAD);
    assert_eq!(
        steps(&m.handle(reload(ReloadEvent::CommandDone(false)))),
        [ReloadStep::Finish(ReloadOutcome::CommandFailed)]
    );
}

#[test]
fn requests_during_a_reload_queue_one_more_which_begins_when_it_ends() {
    let mut m = after(
        reload_policy(ReloadBy::Signal(SIGHUP), true, false, false),
        HEALTHY,
    );
    m.handle(RELOAD);
    assert!(m.handle(RELOAD).is_empty(), "queued");
    assert!(m.handle(Event::Signal(SIGHUP)).is_empty(), "folded in");
    m.handle(reload(ReloadEvent::Checked(true)));
    let ended = m.handle(reload(ReloadEvent::Healthy));
    assert_eq!(
        steps(&ended),
        [
            ReloadStep::Finish(ReloadOutcome::Confirmed),
            ReloadStep::Begin,
            ReloadStep::Check
        ],
        "one more, beginning with its own check"
    );
    // A report of the first reload's check cannot confirm the second one:
    // the dispatcher drops it by number, and the machine waits again.
    assert_eq!(
        steps(&m.handle(reload(ReloadEvent::Checked(true)))),
        [ReloadStep::Signal(SIGHUP), ReloadStep::CheckHealth]
    );
}

#[test]
fn a_stop_or_the_proxy_s_exit_ends_a_reload_and_a_queued_one_is_refused() {
    let mut m = after(
        reload_policy(ReloadBy::Signal(SIGHUP), true, false, false),
        HEALTHY,
    );
    m.handle(RELOAD);
    m.handle(RELOAD);
    let stop = m.handle(Event::Signal(SIGTERM));
    assert_eq!(
        steps(&stop),
        [
            ReloadStep::Finish(ReloadOutcome::Interrupted),
            ReloadStep::Refuse(ReloadRefusal::Stopping)
        ]
    );
    let reloaded = stop
        .iter()
        .position(|a| *a == Action::Notify(Notice::Reloaded));
    let stopping = stop
        .iter()
        .position(|a| *a == Action::Notify(Notice::Stopping));
    assert!(reloaded < stopping, "READY=1 before STOPPING=1: {stop:?}");
    assert_eq!(
        steps(&m.handle(RELOAD)),
        [ReloadStep::Refuse(ReloadRefusal::Stopping)]
    );

    let mut m = after(
        Policy {
            restart: RestartPolicy::Always,
            ..reload_policy(ReloadBy::Signal(SIGHUP), true, false, false)
        },
        HEALTHY,
    );
    m.handle(RELOAD);
    let exited = m.handle(Event::ProxyExited(ProcessEnd::Exited(1)));
    assert_eq!(
        steps(&exited),
        [ReloadStep::Finish(ReloadOutcome::ProxyExited)]
    );
    assert_eq!(
        steps(&m.handle(RELOAD)),
        [ReloadStep::Refuse(ReloadRefusal::NoProxy)]
    );
}

#[test]
fn a_disabled_reload_is_refused_and_its_sighup_dropped() {
    let mut m = after(
        reload_policy(ReloadBy::Disabled, false, false, false),
        HEALTHY,
    );
    assert_eq!(
        steps(&m.handle(RELOAD)),
        [ReloadStep::Refuse(ReloadRefusal::Disabled)]
    );
    assert_eq!(
        m.handle(Event::Signal(SIGHUP)),
        vec![Action::Dropped {
            signal: SIGHUP,
            reason: DropReason::ReloadDisabled
        }]
    );
}

#[test]
fn a_reload_asked_before_the_first_health_pass_waits_for_it() {
    let p = reload_policy(ReloadBy::Signal(SIGHUP), true, false, true);
    let mut m = after(p.clone(), RUNNING);
    assert_eq!(
        m.handle(RELOAD),
        vec![Action::Arm(Timer::Reload, S(15))],
        "held: nothing is sent to a proxy that may not handle it yet"
    );
    assert!(m.handle(Event::Signal(SIGHUP)).is_empty(), "folded in");
    let healthy = m.handle(Event::Deadline(Timer::HealthGate));
    assert_eq!(
        steps(&healthy),
        [ReloadStep::Begin, ReloadStep::Check],
        "it begins once the proxy passed its gate: {healthy:?}"
    );
    // Never healthy: refused at reload_timeout.
    let mut m = after(p.clone(), RUNNING);
    m.handle(RELOAD);
    assert_eq!(
        steps(&m.handle(Event::Deadline(Timer::Reload))),
        [ReloadStep::Refuse(ReloadRefusal::NotHealthy)]
    );
    // A stop refuses it at once.
    let mut m = after(p, RUNNING);
    m.handle(RELOAD);
    assert_eq!(
        steps(&m.handle(Event::Signal(SIGTERM))),
        [ReloadStep::Refuse(ReloadRefusal::Stopping)]
    );
}

#[test]
fn workers_that_cannot_be_watched_fail_the_reload_at_once() {
    let mut m = after(
        reload_policy(ReloadBy::Signal(SIGHUP), false, false, true),
        HEALTHY,
    );
    m.handle(RELOAD);
    assert_eq!(
        steps(&m.handle(reload(ReloadEvent::Unconfirmable))),
        [ReloadStep::Finish(ReloadOutcome::Unconfirmable)]
    );
}

// ---- role-change hooks and duties ------------------------------------------------

fn hooks_policy() -> Policy {
    Policy {
        hooks: true,
        duties: true,
        ..policy()
    }
}

fn hooks_of(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Hook(_) | Action::Duties(_) | Action::CancelStopHook
            )
        })
        .cloned()
        .collect()
}

fn call(hook: HookName, previous: Option<HookName>, reason: HookReason) -> Action {
    Action::Hook(HookCall {
        hook,
        previous,
        reason,
    })
}

#[test]
fn the_first_role_after_the_start_runs_its_hook_once_and_the_start_s_fault_none() {
    let mut m = Machine::new(hooks_policy());
    m.start();
    assert!(hooks_of(&m.handle(DOWN1)).is_empty());
    assert!(
        hooks_of(&m.handle(seen(Role::Fault, 1))).is_empty(),
        "the start's own down: no on_fault"
    );
    m.handle(Event::Spawned);
    m.handle(Event::Deadline(Timer::HealthGate));
    assert!(
        hooks_of(&m.handle(seen(Role::Backup, 1))).is_empty(),
        "a role seen before the up was applied is not the node's role yet"
    );
    m.handle(UP2);
    assert_eq!(
        hooks_of(&m.handle(seen(Role::Master, 2))),
        [
            Action::Duties(true),
            call(HookName::OnMaster, None, HookReason::Start)
        ]
    );
    assert!(
        hooks_of(&m.handle(seen(Role::Master, 2))).is_empty(),
        "the same role again runs nothing"
    );
}

#[test]
fn a_planned_stop_runs_on_stop_at_once_then_the_move_s_role() {
    let mut m = after(hooks_policy(), &with(HEALTHY, &[seen(Role::Master, 2)]));
    let stop = m.handle(Event::Signal(SIGTERM));
    assert_eq!(
        hooks_of(&stop),
        [
            call(HookName::OnStop, Some(HookName::OnMaster), HookReason::Stop),
            Action::Duties(false),
        ],
        "duties stop with the down request, before the backend is polled"
    );
    let set_down = stop.iter().position(|a| {
        matches!(
            a,
            Action::SetLevel {
                level: Level::Down,
                ..
            }
        )
    });
    assert!(set_down.is_some(), "{stop:?}");
    m.handle(applied(Level::Down, 3));
    assert_eq!(
        hooks_of(&m.handle(seen(Role::Backup, 3))),
        [call(
            HookName::OnBackup,
            Some(HookName::OnStop),
            HookReason::Role
        )]
    );
    assert_eq!(
        hooks_of(&m.handle(Event::Signal(SIGTERM))),
        [Action::CancelStopHook],
        "a second stop signal: on_stop goes"
    );
}

#[test]
fn a_master_still_master_after_its_stop_s_level_runs_no_second_on_master() {
    // Found by tests/keepalived.rs: after a graceful standby, keepalived's
    // peer takes the VIP only one master-down interval later, so the stop's
    // level is answered while the node is still master.
    let mut m = after(hooks_policy(), &with(HEALTHY, &[seen(Role::Master, 2)]));
    m.handle(Event::Signal(SIGTERM));
    m.handle(applied(Level::Down, 3));
    assert!(
        hooks_of(&m.handle(seen(Role::Master, 3))).is_empty(),
        "on_master already ran for this role"
    );
    assert_eq!(
        hooks_of(&m.handle(seen(Role::Backup, 3))),
        [call(
            HookName::OnBackup,
            Some(HookName::OnStop),
            HookReason::Role
        )]
    );
}

#[test]
fn a_graceful_stop_runs_on_backup_at_the_handover_and_nothing_for_its_bow_out() {
    let graceful = Policy {
        stop_level: Level::Standby,
        ..hooks_policy()
    };
    let mut m = after(graceful, &with(HEALTHY, &[seen(Role::Master, 2)]));
    m.handle(Event::Signal(SIGTERM));
    m.handle(applied(Level::Standby, 3));
    assert!(hooks_of(&m.handle(seen(Role::Master, 3))).is_empty());
    let handover = m.handle(seen(Role::Backup, 3));
    assert_eq!(
        hooks_of(&handover),
        [call(
            HookName::OnBackup,
            Some(HookName::OnStop),
            HookReason::Role
        )]
    );
    let hook = handover.iter().position(|a| matches!(a, Action::Hook(_)));
    let bow_out = handover.iter().position(|a| {
        matches!(
            a,
            Action::SetLevel {
                level: Level::Down,
                ..
            }
        )
    });
    assert!(
        hook.is_some() && bow_out.is_some() && hook < bow_out,
        "{handover:?}"
    );
    m.handle(applied(Level::Down, 4));
    assert!(
        hooks_of(&m.handle(seen(Role::Fault, 4))).is_empty(),
        "the bow-out's FAULT is the stop's own step"
    );
}

#[test]
fn a_crash_stops_duties_at_once_and_fault_follows() {
    let mut m = after(
        Policy {
            restart: RestartPolicy::Always,
            ..hooks_policy()
        },
        &with(HEALTHY, &[seen(Role::Master, 2)]),
    );
    assert_eq!(
        hooks_of(&m.handle(Event::ProxyExited(ProcessEnd::Signaled(9)))),
        [Action::Duties(false)]
    );
    m.handle(applied(Level::Down, 3));
    assert_eq!(
        hooks_of(&m.handle(seen(Role::Fault, 3))),
        [call(
            HookName::OnFault,
            Some(HookName::OnMaster),
            HookReason::Role
        )]
    );
}

#[test]
fn maintenance_runs_its_hook_and_promote_runs_the_role_s_again() {
    let mut m = after(hooks_policy(), &with(HEALTHY, &[seen(Role::Master, 2)]));
    assert_eq!(
        hooks_of(&m.handle(Event::Maintenance(true))),
        [
            Action::Duties(false),
            call(
                HookName::OnMaintenance,
                Some(HookName::OnMaster),
                HookReason::Maintenance
            )
        ]
    );
    m.handle(applied(Level::Standby, 3));
    assert!(
        hooks_of(&m.handle(seen(Role::Backup, 3))).is_empty(),
        "in maintenance the role changes run nothing"
    );
    assert!(
        hooks_of(&m.handle(Event::Maintenance(false))).is_empty(),
        "promoted: the role is known once the backend answers the up"
    );
    m.handle(applied(Level::Up, 4));
    assert_eq!(
        hooks_of(&m.handle(seen(Role::Backup, 4))),
        [call(
            HookName::OnBackup,
            Some(HookName::OnMaintenance),
            HookReason::Maintenance
        )],
        "released: the node's real role again (the peer kept the IP)"
    );
}

// ---- the VIPs on lo (loopback_vip) ------------------------------------------

fn loopback_of(actions: &[Action]) -> Vec<&Action> {
    actions
        .iter()
        .filter(|a| matches!(a, Action::LoopbackVip(_) | Action::StopProxy(_)))
        .collect()
}

#[test]
fn the_vips_are_on_lo_while_the_proxy_serves_and_off_before_its_stop_signal() {
    let p = Policy {
        loopback_vip: true,
        stop_level: Level::Standby,
        ..policy()
    };
    let mut m = Machine::new(p.clone());
    m.start();
    m.handle(DOWN1);
    m.handle(Event::Spawned);
    assert_eq!(
        loopback_of(&m.handle(Event::Deadline(Timer::HealthGate))),
        [&Action::LoopbackVip(true)],
        "healthy: on, before the backend has even answered the up"
    );
    m.handle(UP2);
    m.handle(seen(Role::Master, 2));
    assert!(
        loopback_of(&m.handle(Event::Signal(SIGTERM))).is_empty(),
        "the handover: still serving"
    );
    m.handle(applied(Level::Standby, 3));
    m.handle(seen(Role::Backup, 3));
    m.handle(applied(Level::Down, 4));
    assert_eq!(
        loopback_of(&m.handle(seen(Role::Fault, 4))),
        [&Action::LoopbackVip(false), &Action::StopProxy(SIGTERM)],
        "off, then the stop signal"
    );

    // Unhealthy, or dead: off at once.
    let mut m = after(p.clone(), HEALTHY);
    assert_eq!(
        loopback_of(&m.handle(Event::Health(false))),
        [&Action::LoopbackVip(false)]
    );
    let mut m = after(p, HEALTHY);
    assert_eq!(
        loopback_of(&m.handle(Event::ProxyExited(ProcessEnd::Signaled(9)))),
        [&Action::LoopbackVip(false)]
    );
}

/// `actions` without the fast path's table.
fn decisions(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .filter(|a| !matches!(a, Action::FastPath(_)))
        .collect()
}

/// What `handle` sends to the proxy, or marks as sent by the reader.
fn sends(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Forward { .. }
                    | Action::Forwarded { .. }
                    | Action::StopProxy(_)
                    | Action::KillProxy
                    | Action::ContinueProxy
                    | Action::Reload(ReloadStep::Signal(_) | ReloadStep::Sent(_))
            )
        })
        .cloned()
        .collect()
}

/// The signals a random walk or a phase may receive, all of them.
fn every_signal() -> Vec<Signal> {
    Signal::iterator()
        .filter(|s| {
            !matches!(
                s,
                SIGKILL | Signal::SIGSTOP | Signal::SIGPIPE | Signal::SIGCHLD
            )
        })
        .collect()
}

/// The policies the fast path differs by: a plain SIGHUP (generic), a
/// checked and confirmed one (nginx), a command (caddy), none, and a proxy
/// whose own stop signal is a pass-through one (haproxy's SIGUSR1).
fn fast_path_policies() -> Vec<(&'static str, Policy)> {
    vec![
        ("plain", policy()),
        (
            "checked",
            reload_policy(ReloadBy::Signal(SIGHUP), true, false, true),
        ),
        (
            "command",
            Policy {
                reload: full_reload(),
                ..policy()
            },
        ),
        (
            "disabled",
            reload_policy(ReloadBy::Disabled, false, false, false),
        ),
        (
            "usr1 stops",
            Policy {
                stop_signal: SIGUSR1,
                reload: ReloadPolicy {
                    send: ReloadBy::Signal(SIGUSR2),
                    ..policy().reload
                },
                ..policy()
            },
        ),
    ]
}

#[test]
fn the_fast_path_routes_exactly_the_signals_whose_whole_decision_is_a_send() {
    let mut routed = 0;
    for (pname, p) in fast_path_policies() {
        for (name, setup) in setups() {
            let (m, _) = replay(p.clone(), &setup);
            let table = m.routes.clone();
            assert_eq!(
                table,
                m.fast_routes(),
                "{pname} {name}: the table handed out is current"
            );
            for signal in every_signal() {
                let context = format!("{pname} {name} {signal:?}");
                let decided = m.clone().handle(Event::Signal(signal));
                let route = table.iter().find(|(r, _)| *r == signal).map(|&(_, s)| s);
                let Some(send) = route else {
                    // Not routed: then the machine does not merely pass it
                    // on (a stop, a drop, a held or checked reload, ...).
                    let only_forward = matches!(decided.as_slice(), [Action::Forward { .. }]);
                    let plain_reload = sends(&decided)
                        == [Action::Reload(ReloadStep::Signal(SIGHUP))]
                        && p.reload.confirm == Confirmations::default()
                        && !p.reload.check;
                    assert!(
                        !only_forward && !plain_reload,
                        "{context}: a plain forward left off the fast path: {decided:?}"
                    );
                    continue;
                };
                routed += 1;
                // Routed: the machine's decision sends exactly that, once,
                // and nothing stops, kills or drops.
                let expected = if signal == SIGHUP {
                    Action::Reload(ReloadStep::Signal(send))
                } else {
                    Action::Forward {
                        received: signal,
                        send,
                    }
                };
                assert_eq!(sends(&decided), [expected], "{context}: {decided:?}");
                assert!(
                    !decided.iter().any(|a| matches!(
                        a,
                        Action::Dropped { .. }
                            | Action::FastPath(_)
                            | Action::Reload(ReloadStep::Refuse(_) | ReloadStep::Check)
                    )),
                    "{context}: more than a send: {decided:?}"
                );
                // Already sent by the reader: the same decision, its send
                // only logged, the same state after.
                let mut fast = m.clone();
                let told = fast.handle(Event::Forwarded {
                    received: signal,
                    sent: send,
                });
                let rewritten: Vec<Action> = decided
                    .iter()
                    .map(|a| match a {
                        Action::Forward { received, send } => Action::Forwarded {
                            received: *received,
                            send: *send,
                        },
                        Action::Reload(ReloadStep::Signal(s)) => {
                            Action::Reload(ReloadStep::Sent(*s))
                        }
                        other => other.clone(),
                    })
                    .collect();
                assert_eq!(
                    told, rewritten,
                    "{context}: the reader's send is not sent again"
                );
                let mut slow = m.clone();
                slow.handle(Event::Signal(signal));
                assert_eq!(fast.view(), slow.view(), "{context}");
                assert_eq!(fast.routes, slow.routes, "{context}");
            }
        }
    }
    assert!(routed > 100, "only {routed} routes checked");
}

#[test]
fn the_fast_path_table_follows_the_proxy_and_the_stop() {
    let pass = |extra: &[(Signal, Signal)]| {
        let mut routes: Vec<(Signal, Signal)> = crate::signals::PASS_THROUGH
            .iter()
            .map(|&s| (s, s))
            .collect();
        routes.push((SIGTSTP, SIGCONT));
        routes.extend_from_slice(extra);
        Action::FastPath(routes)
    };
    let mut m = after(policy(), SPAWNING);
    // The proxy runs: every pass-through signal, and SIGHUP (a plain
    // reload), even before the health gate passed.
    let spawned = m.handle(Event::Spawned);
    assert_eq!(
        spawned[0],
        pass(&[(SIGHUP, SIGHUP)]),
        "first in the batch: {spawned:?}"
    );
    // The stop begins: SIGHUP leaves the table (it is refused now), in the
    // same batch, before anything else.
    let stop = m.handle(Event::Signal(SIGTERM));
    assert_eq!(stop[0], pass(&[]), "{stop:?}");
    // The proxy exits: nothing is routed.
    let exited = m.handle(Event::ProxyExited(ProcessEnd::Exited(0)));
    assert_eq!(exited[0], Action::FastPath(vec![]), "{exited:?}");
    // A checked reload keeps its way through the machine.
    let mut m = after(
        reload_policy(ReloadBy::Signal(SIGHUP), true, false, true),
        SPAWNING,
    );
    assert_eq!(m.handle(Event::Spawned)[0], pass(&[]));
}

#[test]
fn a_plain_sighup_is_never_held_nor_folded() {
    // Regression (issue 17): scripts/bench's 1000 SIGHUPs to the generic
    // preset arrived as 571, held before the health gate and folded into
    // one. Each is a reload of its own, each sent.
    let mut m = after(policy(), RUNNING);
    for _ in 0..5 {
        let fast = m.handle(Event::Forwarded {
            received: SIGHUP,
            sent: SIGHUP,
        });
        assert_eq!(steps(&fast).first(), Some(&ReloadStep::Begin), "{fast:?}");
        assert_eq!(sends(&fast), [Action::Reload(ReloadStep::Sent(SIGHUP))]);
        let slow = m.handle(Event::Signal(SIGHUP));
        assert_eq!(sends(&slow), [Action::Reload(ReloadStep::Signal(SIGHUP))]);
    }
}

#[test]
fn a_signal_sent_by_a_stale_table_is_logged_and_nothing_more() {
    // The reader sent SIGUSR1 and SIGHUP to the proxy just before it exited
    // (the loop had not yet handled the exit): the machine, told after,
    // neither drops nor reloads, and sends nothing.
    let mut m = after(policy(), HEALTHY);
    m.handle(Event::ProxyExited(ProcessEnd::Exited(1)));
    for (received, sent) in [(SIGUSR1, SIGUSR1), (SIGHUP, SIGHUP)] {
        assert_eq!(
            m.handle(Event::Forwarded { received, sent }),
            [Action::Forwarded {
                received,
                send: sent
            }]
        );
    }
}
