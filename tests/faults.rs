//! The fault matrix (issue 7), the faults not covered where their feature
//! is tested. Every fault's test is named `fNN_...`, here or in the file of
//! its feature, so `cargo test f0` / `f1` runs the whole matrix:
//!
//! | fault | test |
//! |---|---|
//! | F1 proxy crash | carp.rs, exit_status.rs |
//! | F2 proxy ignores its stop signal | stop_sequence.rs |
//! | F3 proxy forks or daemonizes | process_tree.rs |
//! | F4 stop signal during start | early_signals.rs |
//! | F5 10,000 SIGHUPs | here |
//! | F6 agent SIGKILLed at each stop step | here (CARP), keepalived.rs |
//! | F7 Consul down, hanging, 500 | consul.rs |
//! | F8 backend tool missing, failing, hanging | here, stop_sequence.rs |
//! | F9 bad config | here, src/config/tests.rs (property test) |
//! | F10 hostile control-socket input | control.rs, fuzz/, src/control/protocol.rs |
//! | F11 no peer | stop_sequence.rs, carp.rs |
//! | F12 two masters | consul.rs |
//! | F13 unwritable or full state dir | here |
//! | F14 second agent | control.rs, carp.rs |
//! | F15 track file removed | here |
//! | F16 1,000 start/stop cycles | here |
//! | F17 the agent dies while up (SIGKILL, of its group, a panic; the sentinel alone, keepalived's tracking alone; a node whose agent never ran) | keepalived.rs, carp.rs |
//! | F18 clock stepped (OpenBSD rewrites kern.boottime) | carp.rs |
//! | F19 reboot, at any uptime | carp.rs |
//! | F20 every catchable signal sent to the agent, twice | here |
//! | F21 a demotion the backend never confirms (at start, on the stop path) | here, stop_sequence.rs |
//! | F22 a start that fails after the lock (busy HTTP port, missing token file) | here |
//! | F23 a stop of an unhealthy node never raises it | keepalived.rs |
//! | F24 the proxy's own stop signal sent to the agent | carp.rs |
//! | F25 the proxy stopped (SIGSTOP), then continued, then stopped at the stop | here |
//! | F26 absurd durations (an `Instant` overflow), `interfaces = []`, absurd `--timeout`/`--kill-timeout` | cli_and_config.rs (f09 and the flag test), src/config/tests.rs |
//! | F27 ^C during `demote`'s wait; `promote` of an unhealthy node; `demote` with a probe | carp.rs, control.rs |

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{
    FIXTURE, HANDOFF, Handoff, Lab, SOON, alive,
    carp_sim::{Cluster, ledger_share},
    output,
};
use nix::sys::signal::Signal::{
    SIGCHLD, SIGCONT, SIGHUP, SIGINT, SIGKILL, SIGPIPE, SIGSTOP, SIGTERM,
};

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: i32) -> u64 {
    common::status_field(pid, "VmRSS:")
        .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn status_ok(lab: &Lab, config: &Path) -> bool {
    let (code, _, _) = output(lab.handoff_command(Some(config)).arg("status"));
    code == 0
}

#[test]
fn f05_a_storm_of_10000_sighups_keeps_the_proxy_alive_and_the_agent_responsive_with_flat_memory() {
    let lab = Lab::new();
    let config = lab.config("[failover]\nbackend = \"none\"\n");
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    let proxy = common::proxy_pid(&lab);
    let agent = h.pid().as_raw();
    assert!(status_ok(&lab, &config));
    let before = rss_kib(agent);
    let started = Instant::now();
    for i in 0..10_000 {
        h.signal(SIGHUP);
        if i == 5_000 {
            assert!(
                status_ok(&lab, &config),
                "no answer in the middle of the storm"
            );
        }
    }
    let sent = started.elapsed();
    assert!(status_ok(&lab, &config), "no answer after the storm");
    lab.wait_for("signal SIGHUP");
    assert!(alive(proxy), "the proxy died in the storm");
    let after = rss_kib(agent);
    println!(
        "10,000 SIGHUPs in {} ms: agent RSS {before} KiB -> {after} KiB, {} reached the proxy (the kernel merges pending ones)",
        sent.as_millis(),
        lab.count("signal SIGHUP")
    );
    assert!(
        after < before + 4096,
        "RSS grew from {before} to {after} KiB"
    );
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
}

/// Sets node b's `edge` demote counter in the simulator.
fn set_b_edge(lab: &Lab, value: u32) {
    let path = lab.path("carp-sim.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("[b]").unwrap();
    let (head, tail) = text.split_at(at);
    let start = tail.find("edge = ").unwrap() + "edge = ".len();
    let end = start + tail[start..].find(' ').unwrap();
    std::fs::write(
        &path,
        format!("{head}{}{value}{}", &tail[..start], &tail[end..]),
    )
    .unwrap();
}

/// Where a stop sequence is when the agent is killed.
enum Ready {
    /// The simulator logged this event this many times.
    Sim(&'static str, usize),
    /// The agent logged this.
    Log(&'static str),
}

/// SIGKILLs the agent at `ready` (a step of the stop sequence), restarts
/// it, stops it cleanly, and checks that our share was held all along and
/// never counted twice.
fn kill_at_step(step: &str, extra: &str, proxy: &[&str], ready: &Ready, hold_master: bool) {
    let lab = Lab::new();
    let cluster = Cluster::new(&lab, 0);
    // `extra` goes into [failover] (the config ends in other sections).
    let config = cluster.config(&lab, "a", "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "failover_timeout = \"5s\"\n",
        &format!("failover_timeout = \"5s\"\n{extra}"),
    );
    std::fs::write(&config, text).unwrap();
    if hold_master {
        // b is demoted far below a: a stays master, the failover wait runs.
        // (The simulator's state is edited only while no agent runs.)
        set_b_edge(&lab, 200);
    }
    let mut h = lab.run(Some(&config), &lab.proxy(proxy));
    lab.wait_for("sim a edge 50 -> 0"); // healthy and up
    h.signal(SIGTERM);
    match ready {
        Ready::Sim(event, n) => lab.wait_for_count(event, *n),
        Ready::Log(text) => h.wait_log(text),
    }
    h.signal(SIGKILL);
    h.wait(SOON);
    // (The ledger may still show the change as pending: the next agent
    // settles it from the counter.)
    assert_eq!(
        cluster.edge(&lab, "a"),
        50,
        "{step}: the demotion must outlive the agent"
    );

    // A new agent: counts the share it finds once, goes up when healthy,
    // and down again on a clean stop.
    set_b_edge(&lab, 0);
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for_count("sim a edge 50 -> 0", 2);
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{step}: {}", h.log());
    assert_eq!(cluster.edge(&lab, "a"), 50, "{step}");
    assert_eq!(ledger_share(&lab), "share = 50", "{step}");
    let doubled = lab
        .whats()
        .into_iter()
        .find(|w| w.starts_with("sim a edge") && w.ends_with("-> 100"));
    assert!(
        doubled.is_none(),
        "{step}: our share was counted twice: {doubled:?}"
    );
}

#[test]
fn f06_sigkill_of_the_agent_at_each_stop_step_neither_leaks_nor_doubles_the_carp_demotion() {
    kill_at_step(
        "failover wait",
        "",
        &[],
        &Ready::Sim("sim a edge 0 -> 50", 2),
        true,
    );
    kill_at_step(
        "settle",
        "settle = \"5s\"\n",
        &[],
        &Ready::Log("to=Stopping(Settle)"),
        false,
    );
    kill_at_step(
        "draining",
        "",
        &["--ignore-stop"],
        &Ready::Log("stopping proxy"),
        false,
    );
}

#[test]
fn f08_a_missing_or_failing_backend_tool_is_a_clear_error_and_the_stop_keeps_its_budget() {
    // Missing: nothing starts, and the error names the tool.
    let lab = Lab::new();
    let config = lab.config(
        "[failover]\nbackend = \"carp\"\n[failover.carp]\nifconfig = \"/nonexistent/ifconfig\"\n",
    );
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    assert_eq!(h.code(SOON), 69, "{}", h.log());
    h.assert_logged("backend tool missing: `/nonexistent/ifconfig` is not an executable file");
    assert!(!lab.log.exists(), "a proxy was started");
    let backend = lab
        .command_backend("MASTER\n", "")
        .replace("state = [\"{fixture}\"", "state = [\"no-such-state-tool\"");
    let config = lab.config_named("command.toml", &backend);
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    assert_eq!(h.code(SOON), 69, "{}", h.log());
    h.assert_logged("`no-such-state-tool` is not an executable file on PATH");
    assert!(!lab.log.exists(), "a proxy was started");
}

#[test]
fn f21_a_failed_down_is_never_counted_as_applied_and_the_exit_says_so() {
    // Failing from the stop on: the demote exits with the code in
    // {dir}/demote-code. The stop still ends within its budget
    // (failover_timeout 3 s + the proxy's exit + DOWN_GRACE 1 s), the failed
    // down is never counted as applied (status, /metrics), and the exit
    // status says the node may still hold the IP: 75, not the proxy's 0.
    let lab = Lab::new();
    std::fs::write(lab.path("demote-code"), "0").unwrap();
    let backend = lab
        .command_backend("MASTER\n", "failover_timeout = \"3s\"")
        .replace(
            "\"demote\"]",
            "\"demote\", \"--code-from\", \"{dir}/demote-code\"]",
        );
    let config = lab.config(&backend);
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("promote");
    let http = h.http_address();
    std::fs::write(lab.path("demote-code"), "3").unwrap();
    let started = Instant::now();
    h.signal(SIGTERM);
    lab.wait_for_count("demote", 3); // the start's, the stop's, a retry
    let status = lab.status_json(&config);
    assert_eq!(status["level"], "down", "{status:#}");
    assert_eq!(status["level_applied"], false, "{status:#}");
    let (code, metrics) = common::http_send(&http, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("handoff_demoted 0"), "{metrics}");
    let code = h.code(SOON);
    let took = started.elapsed();
    println!(
        "stop with a failing demote: {} ms, exit {code}",
        took.as_millis()
    );
    assert_eq!(code, 75, "{}", h.log());
    assert!(took < Duration::from_secs(3 + 1 + 1 + 1), "{took:?}");
    assert!(
        lab.position("signal SIGTERM").is_some(),
        "the proxy was stopped: {:#?}",
        lab.whats()
    );
    h.assert_logged("could not apply level");
    h.assert_logged("this node may still hold the floating IP");

    // Failing from the start: nothing is spawned, exit 75.
    let lab = Lab::new();
    let backend = lab
        .command_backend("MASTER\n", "failover_timeout = \"1s\"")
        .replace("\"demote\"]", "\"demote\", \"--code\", \"3\"]");
    let config = lab.config(&backend);
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    assert_eq!(h.code(SOON), 75, "{}", h.log());
    assert_eq!(
        lab.count("start"),
        0,
        "a proxy was started: {:#?}",
        lab.whats()
    );
    h.assert_logged("could not take this node down at start");
}

/// A deterministic stream of config texts: each line picks a section,
/// key and value from lists of good and bad ones.
fn random_configs(count: usize) -> Vec<String> {
    const SECTIONS: [&str; 8] = [
        "[proxy]",
        "[proxy.health]",
        "[failover]",
        "[failover.carp]",
        "[consul]",
        "[control]",
        "[log]",
        "[nosuch]",
    ];
    const KEYS: [&str; 10] = [
        "stop_timeout",
        "preset",
        "interval",
        "backend",
        "demote_by",
        "ttl",
        "socket",
        "level",
        "typo_key",
        "rise",
    ];
    const VALUES: [&str; 10] = [
        "\"10s\"",
        "\"forever\"",
        "-3",
        "200",
        "\"carp\"",
        "[1, 2]",
        "true",
        "\"\"",
        "{ a = 1 }",
        "\"nginx\"",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % n as u64).unwrap()
    };
    (0..count)
        .map(|_| {
            let mut text = String::new();
            for _ in 0..=next(4) {
                text.push_str(SECTIONS[next(SECTIONS.len())]);
                text.push('\n');
                for _ in 0..=next(3) {
                    let (key, value) = (KEYS[next(KEYS.len())], VALUES[next(VALUES.len())]);
                    text.push_str(key);
                    text.push_str(" = ");
                    text.push_str(value);
                    text.push('\n');
                }
            }
            text
        })
        .collect()
}

#[test]
fn f09_every_rejected_random_config_exits_78_with_line_and_column_and_starts_nothing() {
    let lab = Lab::new();
    let mut rejected = 0;
    for (i, text) in random_configs(40).into_iter().enumerate() {
        let path = lab.path(&format!("random-{i}.toml"));
        std::fs::write(&path, &text).unwrap();
        let (code, _, err) = output(
            Command::new(HANDOFF)
                .arg("--config")
                .arg(&path)
                .arg("check"),
        );
        if code == 0 {
            continue;
        }
        rejected += 1;
        let log = lab.path(&format!("events-{i}.log"));
        let (code, _, err_run) = output(
            Command::new(HANDOFF)
                .arg("--config")
                .arg(&path)
                .args(["run", "--", FIXTURE, "proxy", "--log"])
                .arg(&log),
        );
        for (what, code, err) in [("check", 78, &err), ("run", code, &err_run)] {
            assert_eq!(code, 78, "{what} of:\n{text}\n{err}");
            for line in err.lines() {
                let place = line
                    .strip_prefix(path.to_str().unwrap())
                    .unwrap_or_else(|| panic!("{what}: an error without its file:\n{text}\n{err}"));
                let mut parts = place.splitn(4, ':');
                let (_, l, c) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
                assert!(
                    l.parse::<u32>().is_ok_and(|n| n > 0) && c.parse::<u32>().is_ok_and(|n| n > 0),
                    "{what}: no line:col in {line:?}\n{text}"
                );
            }
        }
        assert!(!log.exists(), "a proxy was started for:\n{text}");
    }
    println!("{rejected} of 40 random configs rejected");
    assert!(
        rejected >= 30,
        "the generator makes too few bad configs: {rejected}"
    );
}

/// Runs handoff with its state dir on a tmpfs mounted by `mount` (in a
/// private mount namespace), and returns (exit code, stderr, proxy log).
fn with_state_dir_mount(lab: &Lab, mount: &str) -> (i32, String, bool) {
    let state = lab.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let config = lab.config(&format!(
        "[failover]\nbackend = \"none\"\n[control]\nsocket = \"{{dir}}/handoff.sock\"\nstate_dir = \"{}\"\n",
        state.display()
    ));
    let script = format!(
        "{mount} && exec {HANDOFF} --config {} run -- {FIXTURE} proxy --log {}",
        config.display(),
        lab.log.display()
    )
    .replace("@STATE@", state.to_str().unwrap());
    let (code, _, err) = output(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .env("RUST_LOG", "info"),
    );
    (code, err, lab.log.exists())
}

#[test]
fn f13_an_unwritable_or_full_state_dir_is_refused_at_start_with_the_reason() {
    if !common::root("for a private mount") {
        return;
    }
    let lab = Lab::new();
    let (code, err, started) = with_state_dir_mount(&lab, "mount -t tmpfs -o ro tmpfs @STATE@");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Read-only file system") && err.contains("/state"),
        "{err}"
    );
    assert!(!started, "a proxy was started");

    let lab = Lab::new();
    let (code, err, started) = with_state_dir_mount(
        &lab,
        "mount -t tmpfs -o size=16k tmpfs @STATE@ && (head -c 65536 /dev/zero > @STATE@/filler 2>/dev/null; true)",
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("No space left on device") && err.contains("/state"),
        "{err}"
    );
    assert!(!started, "a proxy was started");
}

#[test]
fn f15_a_removed_track_file_or_directory_is_recreated_with_the_current_level() {
    let lab = Lab::new();
    let dir = lab.path("keepalived");
    let track = dir.join("handoff.track");
    let config = lab.config(&format!(
        "[failover]\nbackend = \"keepalived\"\n[failover.keepalived]\ntrack_file = \"{}\"\nvip = [\"192.0.2.222\"]\n",
        track.display()
    ));
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    let value = || {
        std::fs::read_to_string(&track)
            .ok()
            .map(|t| t.trim().to_owned())
    };
    let wait_value = |want: &str, what: &str| {
        let start = Instant::now();
        while value().as_deref() != Some(want) {
            assert!(
                start.elapsed() < SOON,
                "{what}: track file {:?}, not {want}",
                value()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        start.elapsed()
    };
    wait_value("0", "up once healthy");

    std::fs::remove_file(&track).unwrap();
    let took = wait_value("0", "file removed");
    println!(
        "track file restored {} ms after its removal",
        took.as_millis()
    );
    std::fs::remove_dir_all(&dir).unwrap();
    wait_value("0", "directory removed");

    let (code, _, err) = output(
        lab.handoff_command(Some(&config))
            .arg("demote")
            .arg("--no-wait"),
    );
    assert_eq!(code, 0, "{err}");
    wait_value("-100", "standby");
    std::fs::write(&track, "0\n").unwrap();
    wait_value("-100", "changed behind our back");
    h.assert_logged("the track file was removed or changed: writing our value back");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert_eq!(value().as_deref(), Some("-254"));
}

/// Open file descriptors of `pid`.
fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[test]
fn f16_a_thousand_start_stop_cycles_leak_no_fds_processes_or_ledger_entries() {
    let lab = Lab::new();
    let cluster = Cluster::new(&lab, 0);
    let config = cluster.config(&lab, "a", "");
    let started = Instant::now();
    let mut agent_fds = Vec::new();
    for cycle in 0..1000 {
        // Most cycles stop at once (a stop during start is held until the
        // proxy exists, F4); the first and the last wait for the proxy and
        // count the agent's open files.
        let measured = cycle == 0 || cycle == 999;
        let mut cmd = lab.agent_command(Some(&config));
        cmd.env("RUST_LOG", if measured { "info" } else { "warn" })
            .arg("run")
            .arg("--")
            .args(lab.proxy(&[]));
        let mut h = Handoff::spawn(cmd, lab.path("cycle.stderr"));
        h.wait_until_blocked();
        if measured {
            h.wait_log("proxy started");
            // The fewest over 300 ms: a backend command's pipes come and go.
            let least = (0..30)
                .map(|_| {
                    std::thread::sleep(Duration::from_millis(10));
                    fds(h.pid().as_raw())
                })
                .min();
            agent_fds.push(least.unwrap());
        }
        h.signal(SIGTERM);
        let code = h.code(SOON);
        // 143: the proxy got the stop before it had set up its handlers.
        assert!(
            code == 0 || code == 143,
            "cycle {cycle}: exit {code}: {}",
            h.log()
        );
    }
    println!(
        "1000 start/stop cycles in {} s; agent fds at cycles 1 and 1000: {agent_fds:?}",
        started.elapsed().as_secs()
    );
    assert_eq!(agent_fds[0], agent_fds[1], "the agent's fds grew");
    // No process of this lab is left: every proxy went with its agent.
    let lab_dir = lab.dir.path().to_str().unwrap().to_owned();
    let leftovers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&lab_dir))
        .collect();
    assert!(leftovers.is_empty(), "left running: {leftovers:?}");
    // One share, recorded once; nothing else left in the state dir.
    assert_eq!(cluster.edge(&lab, "a"), 50);
    assert_eq!(ledger_share(&lab), "share = 50");
    let mut left: Vec<String> = std::fs::read_dir(lab.path("state-a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["carp-ledger.toml", "lock"]);
    assert!(!lab.socket().exists(), "the control socket was left behind");
}

/// How many times the agent logged `text`.
fn logged_times(h: &Handoff, text: &str) -> usize {
    h.log().matches(text).count()
}

/// Waits until the agent logged `text` `n` times.
fn wait_logged_times(h: &Handoff, text: &str, n: usize) {
    let deadline = Instant::now() + SOON;
    while logged_times(h, text) < n {
        assert!(
            Instant::now() < deadline,
            "never logged {text:?} {n} times:\n{}",
            h.log()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn f20_no_catchable_signal_kills_or_stops_the_agent_or_moves_the_node() {
    let lab = Lab::new();
    let cluster = Cluster::new(&lab, 0);
    let config = cluster.config(&lab, "a", "");
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("sim master a");
    let proxy = common::proxy_pid(&lab);
    let agent = h.pid();
    // Every catchable signal but the stop signals, each sent twice (Rust's
    // runtime would reset SIGSEGV/SIGBUS after a first one it handled).
    let named: Vec<_> = nix::sys::signal::Signal::iterator()
        .filter(|s| !matches!(s, SIGKILL | SIGSTOP | SIGINT | SIGTERM))
        .collect();
    for signal in &named {
        for n in 1..=2 {
            h.signal(*signal);
            match signal {
                // SIGCHLD feeds the reaper; SIGPIPE stays ignored (SIG_IGN).
                SIGCHLD | SIGPIPE => std::thread::sleep(Duration::from_millis(5)),
                _ => wait_logged_times(
                    &h,
                    &format!("signal received signal=\"{}\"", signal.as_str()),
                    n,
                ),
            }
        }
        assert!(
            alive(agent.as_raw()),
            "{signal} killed handoff:\n{}",
            h.log()
        );
        assert_eq!(
            common::status_field(agent.as_raw(), "State:")
                .map(|s| s.starts_with('S') || s.starts_with('R')),
            Some(true),
            "{signal} stopped handoff"
        );
    }
    // The real-time signals: logged and ignored.
    for n in nix::libc::SIGRTMIN()..=nix::libc::SIGRTMAX() {
        assert_eq!(kill_number(agent.as_raw(), n), 0, "kill -{n}");
        wait_logged_times(&h, &format!("real-time signal ignored signal={n}"), 1);
    }
    assert!(alive(proxy), "the proxy died:\n{}", h.log());
    assert_eq!(common::proxy_pid(&lab), proxy, "the proxy was restarted");
    let status = lab.status_json(&config);
    assert_eq!(status["level"], "up", "{status:#}");
    assert_eq!(status["level_applied"], true, "{status:#}");
    assert_eq!(status["role"], "MASTER", "{status:#}");
    assert_eq!(cluster.edge(&lab, "a"), 0, "the node's level moved");
    // b was master only while a started (down first), never since.
    assert_eq!(lab.count("sim master b"), 1, "{:#?}", lab.whats());
    // ^Z continues the proxy rather than stopping anyone.
    assert!(lab.count("signal SIGCONT") >= 2, "{:#?}", lab.whats());
    // The stop signals still stop: SIGINT runs the stop sequence.
    h.signal(SIGINT);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    let moved = lab
        .whats()
        .iter()
        .rposition(|w| w == "sim master b")
        .expect("b took over");
    // The proxy gets its own stop signal (SIGTERM) only after the move.
    assert!(
        moved < lab.position("signal SIGTERM").unwrap(),
        "{:#?}",
        lab.whats()
    );
}

/// kill(2) with a raw signal number (nix names only the standard ones).
fn kill_number(pid: i32, signal: i32) -> i32 {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    status.code().unwrap_or(-1)
}

#[test]
fn f22_a_start_that_fails_after_the_lock_leaves_the_node_down() {
    // A busy HTTP port: the CARP share is applied before the bind fails.
    let lab = Lab::new();
    let cluster = Cluster::new(&lab, 0);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let config = cluster.config(
        &lab,
        "a",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    assert_ne!(h.code(SOON), 0, "{}", h.log());
    h.assert_logged("cannot listen on");
    assert_eq!(cluster.edge(&lab, "a"), 50, "our share is applied");
    assert_eq!(ledger_share(&lab), "share = 50");
    assert_eq!(lab.count("start"), 0, "{:#?}", lab.whats());
    // The next start counts the share once.
    drop(busy);
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("sim master a");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert_eq!(cluster.edge(&lab, "a"), 50, "never 100");

    // A missing Consul token file: the keepalived track file says -254.
    let lab = Lab::new();
    let track = lab.path("track");
    std::fs::write(&track, "0\n").unwrap();
    let config = lab.config(&format!(
        "[failover]\nbackend = \"keepalived\"\n[failover.keepalived]\ntrack_file = \"{}\"\nvip = [\"192.0.2.100\"]\n\
         [consul]\ntoken_file = \"{{dir}}/no-such-token\"\n",
        track.display()
    ));
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    assert_eq!(h.code(SOON), 78, "{}", h.log());
    h.assert_logged("no-such-token");
    assert_eq!(std::fs::read_to_string(&track).unwrap().trim(), "-254");
    assert_eq!(lab.count("start"), 0, "{:#?}", lab.whats());
}

#[test]
fn f25_a_stopped_proxy_takes_the_node_down_until_it_continues() {
    let lab = Lab::new();
    let cluster = Cluster::new(&lab, 0);
    let config = cluster.config(&lab, "a", "");
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("sim master a");
    let proxy = nix::unistd::Pid::from_raw(common::proxy_pid(&lab));
    nix::sys::signal::kill(proxy, SIGSTOP).unwrap();
    h.wait_log("the proxy is stopped (not serving)");
    // (b was master once already, while a started.)
    lab.wait_for_count("sim master b", 2);
    assert_eq!(cluster.edge(&lab, "a"), 50, "down while stopped");
    nix::sys::signal::kill(proxy, SIGCONT).unwrap();
    h.wait_log("the proxy continued");
    lab.wait_for_count("sim master a", 2);
    assert_eq!(cluster.edge(&lab, "a"), 0, "up again");
    // Stopped again, then a stop: the proxy is continued so that it can act
    // on its stop signal, and exits by it (not by SIGKILL).
    nix::sys::signal::kill(proxy, SIGSTOP).unwrap();
    lab.wait_for_count("sim master b", 3);
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    h.assert_logged("continuing proxy");
    assert!(
        lab.position("signal SIGTERM").is_some(),
        "{:#?}",
        lab.whats()
    );
}
