//! Hooks and a duty that write one shared event log, for the two-node labs
//! (tests/keepalived.rs, tests/carp.rs): every line is
//! `<CLOCK_MONOTONIC ns> <pid> NODE WHAT...`, appended by `fixture record`
//! (O_APPEND, one short write per line, so lines from both nodes never mix).
//!
//! A hook line is `NODE HOOK HANDOFF_ROLE HANDOFF_PREVIOUS_ROLE HANDOFF_REASON`
//! (`a on_stop stopping master stop`); the duty writes `NODE duty-start`,
//! `NODE duty-work PID` (its child doing the work), and `NODE duty-stop`
//! when SIGTERM reaches it or `NODE duty-end` when its work is done. The
//! node name is written into each node's config: both nodes of a lab share
//! one host name, so `HANDOFF_NODE` cannot tell them apart.

use std::{
    fmt::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{Event, FIXTURE, Lab};

/// `[hooks.*]` for `node`, each recording its line.
pub fn hooks_toml(node: &str, hooks: &[&str]) -> String {
    let mut text = String::new();
    for hook in hooks {
        let _ = writeln!(
            text,
            "[hooks.{hook}]\ncommand = [\"sh\", \"-c\", \"exec {FIXTURE} record --log {{log}} \
             \\\"{node} {hook} $HANDOFF_ROLE $HANDOFF_PREVIOUS_ROLE $HANDOFF_REASON\\\"\"]"
        );
    }
    text
}

/// Writes the duty's script (once, before any agent runs it) and returns
/// its path: it records its start, works in a child for `work` seconds (as
/// a script's tools run), and records how it ended. A SIGTERM to its group
/// (handoff stopping the duty) runs the trap once the work child is gone.
pub fn duty_script(lab: &Lab, work_seconds: u32) -> PathBuf {
    let path = lab.path("duty.sh");
    let log = lab.log.display();
    super::write_executable(
        &path,
        &format!(
            "#!/bin/sh\nnode=$1\n\
             trap '{FIXTURE} record --log {log} \"$node duty-stop\"; exit 143' TERM\n\
             {FIXTURE} record --log {log} \"$node duty-start\"\n\
             sleep {work_seconds} &\nwork=$!\n\
             {FIXTURE} record --log {log} \"$node duty-work $work\"\n\
             wait $work\n\
             {FIXTURE} record --log {log} \"$node duty-end\"\n"
        ),
    );
    path
}

/// One `[[duty]]` for `node` running [`duty_script`] every second; its
/// timeout is long, so one run lasts until its work ends or it is stopped.
pub fn duty_toml(node: &str, script: &Path) -> String {
    format!(
        "[[duty]]\nname = \"tick\"\nevery = \"1s\"\ntimeout = \"1m\"\ncommand = [\"{}\", \"{node}\"]\n",
        script.display()
    )
}

/// Appends a phase marker from the test itself; returns its time.
pub fn mark(lab: &Lab, phase: &str) -> i128 {
    super::append_event(&lab.log, &format!("phase {phase}"));
    lab.events()
        .iter()
        .rfind(|e| e.what == format!("phase {phase}"))
        .map_or(0, |e| e.ns)
}

/// Waits until an event starting with `prefix` is logged after `since`.
pub fn wait_after(lab: &Lab, since: i128, prefix: &str, limit: Duration) -> Event {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(e) = lab
            .events()
            .into_iter()
            .find(|e| e.ns > since && e.what.starts_with(prefix))
        {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {prefix:?} within {limit:?}; log:\n{}",
            render(&lab.events())
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `node`'s hook lines (`HOOK ROLE PREVIOUS REASON`) logged after `since`
/// and before `until`, in order.
pub fn hooks_of(lab: &Lab, node: &str, since: i128, until: i128) -> Vec<String> {
    let prefix = format!("{node} on_");
    lab.events()
        .into_iter()
        .filter(|e| e.ns > since && e.ns < until && e.what.starts_with(&prefix))
        .map(|e| e.what[node.len() + 1..].to_owned())
        .collect()
}

/// The log as lines `+<ms since its first line> WHAT`, for messages and
/// the report.
pub fn render(events: &[Event]) -> String {
    let first = events.first().map_or(0, |e| e.ns);
    let mut text = String::new();
    for e in events {
        let _ = writeln!(text, "{:>+8} ms  {}", (e.ns - first) / 1_000_000, e.what);
    }
    text
}

/// The event log's lines from `since` to `until`, as they are in the file.
pub fn raw_lines(lab: &Lab, since: i128, until: i128) -> String {
    let mut text = String::new();
    for e in lab
        .events()
        .iter()
        .filter(|e| e.ns >= since && e.ns <= until)
    {
        let _ = writeln!(text, "{} {} {}", e.ns, e.pid, e.what);
    }
    text
}

/// The times each node's duty ran, `(node, start, end)`: from `duty-start`
/// to the `duty-stop` or `duty-end` after it, or to the first event after
/// it named in `ends` (a death that left no line), or open (`i128::MAX`).
pub fn duty_runs(events: &[Event], ends: &[(&str, &str)]) -> Vec<(String, i128, i128)> {
    let mut runs: Vec<(String, i128, i128)> = Vec::new();
    for e in events {
        let mut words = e.what.split(' ');
        let (Some(node), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let open = runs
            .iter_mut()
            .rev()
            .find(|(n, _, end)| n == node && *end == i128::MAX);
        match (what, open) {
            ("duty-start", _) => runs.push((node.to_owned(), e.ns, i128::MAX)),
            ("duty-stop" | "duty-end", Some(run)) => run.2 = e.ns,
            _ => {}
        }
        for (who, marker) in ends {
            if e.what == *marker {
                if let Some(run) = runs
                    .iter_mut()
                    .rev()
                    .find(|(n, _, end)| n == who && *end == i128::MAX)
                {
                    run.2 = e.ns;
                }
            }
        }
    }
    runs
}

/// Fails if a run of one node's duty overlaps a run of the other's.
pub fn assert_one_duty_at_a_time(runs: &[(String, i128, i128)], log: &str) {
    for (i, (n1, s1, e1)) in runs.iter().enumerate() {
        for (n2, s2, e2) in &runs[i + 1..] {
            assert!(
                n1 == n2 || e1 <= s2 || e2 <= s1,
                "the duty ran on {n1} and {n2} at once ({s1}..{e1} and {s2}..{e2}):\n{log}"
            );
        }
    }
}
