//! The control socket against the running agent: `status`, `demote` and
//! `promote` through the CLI, and hostile clients through a raw socket.
//! (CARP maintenance, with its ledger, is in tests/carp.rs.)

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::{
    io::{Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream, process::CommandExt},
    time::{Duration, Instant},
};

use common::{Handoff, Lab, SOON, output};
use nix::sys::signal::Signal::SIGTERM;

fn run_cli(lab: &Lab, config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    output(lab.handoff_command(Some(config)).args(args))
}

/// Starts an agent with the lab's base config and waits until its proxy is
/// healthy (1 s start-up gate) and status answers.
fn healthy_agent(lab: &Lab) -> Handoff {
    let h = lab.run(None, &lab.proxy(&[]));
    let deadline = Instant::now() + SOON;
    loop {
        let (code, stdout, _) = run_cli(lab, &lab.base_config(), &["status", "--json"]);
        if code == 0 && stdout.contains("running:healthy") {
            return h;
        }
        assert!(Instant::now() < deadline, "never healthy: {}", h.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One raw request; the answer line (empty if the agent closed silently).
fn raw(lab: &Lab, bytes: &[u8], shutdown: bool) -> String {
    let mut s = UnixStream::connect(lab.socket()).unwrap();
    s.set_read_timeout(Some(SOON)).unwrap();
    let _ = s.write_all(bytes);
    if shutdown {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

#[test]
fn status_without_an_agent_exits_69() {
    let lab = Lab::new();
    let (code, _, stderr) = run_cli(&lab, &lab.base_config(), &["status"]);
    assert_eq!(code, 69, "{stderr}");
    assert!(stderr.contains("no agent answers on"), "{stderr}");
}

#[test]
fn status_json_and_text_describe_the_agent() {
    let lab = Lab::new();
    let mut h = healthy_agent(&lab);
    let v = lab.status_json(&lab.base_config());
    assert_eq!(v["schema"], 1);
    assert_eq!(v["level"], "up");
    assert_eq!(v["level_applied"], true);
    assert_eq!(v["maintenance"], serde_json::Value::Null);
    assert_eq!(v["backend"]["name"], "none");
    let pid = common::proxy_pid(&lab);
    assert_eq!(v["proxy"]["pid"], pid);
    assert!(v["proxy"]["rss_bytes"].as_u64().unwrap() > 0, "{v}");
    let (code, text, _) = run_cli(&lab, &lab.base_config(), &["status"]);
    assert_eq!(code, 0);
    for want in [
        "level        up (applied)",
        "maintenance  no",
        &format!("pid {pid}"),
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0);
    assert!(!lab.socket().exists(), "the socket is removed on exit");
}

#[test]
fn demote_and_promote_are_idempotent_and_maintenance_survives_a_restart() {
    let lab = Lab::new();
    let config = lab.base_config();
    let mut h = healthy_agent(&lab);
    let (code, stdout, stderr) = run_cli(&lab, &config, &["demote", "--reason", "disk swap"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("no longer holds"), "{stdout}");
    let (code, _, _) = run_cli(&lab, &config, &["demote"]);
    assert_eq!(code, 0, "a second demote is fine");
    let v = lab.status_json(&config);
    assert_eq!(v["level"], "standby");
    assert_eq!(v["maintenance"]["reason"], "disk swap", "kept: {v}");
    assert_eq!(v["maintenance"]["uid"], 0);
    h.assert_logged("maintenance set");

    // A restart keeps maintenance: healthy again means standby, not up.
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0);
    let mut h = healthy_agent(&lab);
    let v = lab.status_json(&config);
    assert_eq!(v["level"], "standby", "{v}");
    assert_eq!(v["maintenance"]["reason"], "disk swap");

    let (code, stdout, stderr) = run_cli(&lab, &config, &["promote"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("this node is up"), "{stdout}");
    let v = lab.status_json(&config);
    assert_eq!(v["level"], "up");
    assert_eq!(v["maintenance"], serde_json::Value::Null);
    let (code, _, _) = run_cli(&lab, &config, &["promote"]);
    assert_eq!(code, 0, "a second promote is fine");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0);
}

#[test]
fn promote_with_an_unhealthy_proxy_exits_1_with_the_reason() {
    let lab = Lab::new();
    // The proxy never passes its health check: the node stays down.
    let config = lab.config(
        "[failover]\nfailover_timeout = \"1s\"\n\
         [proxy.health]\nexec = [\"false\"]\ninterval = \"50ms\"\ntimeout = \"40ms\"\n",
    );
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("start");
    let (code, stdout, stderr) = run_cli(&lab, &config, &["demote", "--no-wait"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = run_cli(&lab, &config, &["promote"]);
    assert_eq!(code, 1, "the node is not up: {stdout}{stderr}");
    assert!(stdout.contains("maintenance cleared"), "{stdout}");
    assert!(
        stderr.contains("the proxy is not healthy (phase running:unhealthy)")
            && stderr.contains("stays down"),
        "{stderr}"
    );
    let v = lab.status_json(&config);
    assert_eq!(v["maintenance"], serde_json::Value::Null, "cleared: {v}");
    assert_eq!(v["level"], "down", "{v}");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
}

#[test]
fn f14_a_second_agent_is_refused_and_the_live_socket_kept() {
    let lab = Lab::new();
    let mut first = healthy_agent(&lab);
    // Same socket, another state dir: the socket alone must refuse it.
    let other = lab.config_named(
        "other.toml",
        &format!(
            "[control]\nsocket = \"{}\"\nstate_dir = \"{{dir}}/other-state\"\n",
            lab.socket().display()
        ),
    );
    let out = lab
        .handoff_command(Some(&other))
        .args(["run", "--"])
        .args(lab.proxy(&["--exit-after", "1ms"]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("owns the control socket") && stderr.contains(&first.pid().to_string()),
        "{stderr}"
    );
    assert_eq!(lab.count("start"), 1, "the second agent started a proxy");
    let (code, _, stderr) = run_cli(&lab, &lab.base_config(), &["status"]);
    assert_eq!(code, 0, "the first agent's socket survived: {stderr}");
    first.signal(SIGTERM);
    assert_eq!(first.code(SOON), 0);
}

#[test]
fn a_stale_socket_is_replaced() {
    let lab = Lab::new();
    // A socket file nobody listens on, as a SIGKILLed agent leaves it.
    drop(std::os::unix::net::UnixListener::bind(lab.socket()).unwrap());
    assert!(lab.socket().exists());
    let mut h = healthy_agent(&lab);
    h.assert_logged("replacing a stale control socket");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0);
}

#[test]
fn f10_hostile_requests_get_errors_and_the_agent_keeps_serving() {
    let lab = Lab::new();
    let mut h = healthy_agent(&lab);
    let cases: [(&[u8], bool, &str); 6] = [
        (b"garbage\n", false, "malformed request"),
        (
            b"{\"version\":1,\"command\":{\"name\":\"reboot\"}}\n",
            false,
            "unknown variant",
        ),
        (
            b"{\"version\":7,\"command\":{\"name\":\"status\"}}\n",
            false,
            "version 7",
        ),
        (b"{\"version\":1,", true, "ended before its newline"),
        (b"{\"version\":1,", false, "no complete request within 2s"),
        (b"\xff\xfe\n", false, "not UTF-8"),
    ];
    for (bytes, shutdown, want) in cases {
        let answer = raw(&lab, bytes, shutdown);
        assert!(answer.contains(want), "{want:?}: {answer}");
        assert!(answer.ends_with('\n'), "one line: {answer:?}");
    }
    let mut big = vec![b'x'; 70 * 1024];
    big.push(b'\n');
    let answer = raw(&lab, &big, false);
    assert!(answer.contains("longer than 64 KiB"), "{answer}");

    // Half-open connections fill every slot; status still gets through
    // once their 2 s are up.
    let idle: Vec<UnixStream> = (0..40)
        .map(|_| UnixStream::connect(lab.socket()).unwrap())
        .collect();
    let started = Instant::now();
    let (code, _, stderr) = run_cli(&lab, &lab.base_config(), &["status"]);
    println!(
        "status behind 40 half-open connections: {:?}",
        started.elapsed()
    );
    assert_eq!(code, 0, "{stderr}");
    drop(idle);
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "the agent was unaffected: {}", h.log());
}

/// The lab readable by `nobody`, for the tests that run the CLI as it.
fn open_lab_to_others(lab: &Lab) {
    std::fs::set_permissions(lab.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn run_cli_as_nobody(lab: &Lab, config: &std::path::Path) -> (i32, String) {
    std::fs::set_permissions(config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = lab.handoff_command(Some(config));
    let (code, _, stderr) = output(cmd.arg("status").uid(65534).gid(65534));
    (code, stderr)
}

#[test]
fn f10_a_foreign_uid_is_refused() {
    if !common::root("to act as another uid") {
        return;
    }
    let lab = Lab::new();
    open_lab_to_others(&lab);
    let mut h = healthy_agent(&lab);
    let mode = std::fs::metadata(lab.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The socket's mode keeps nobody out...
    let (code, stderr) = run_cli_as_nobody(&lab, &lab.base_config());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("permission denied on"), "{stderr}");
    // ...and the peer credentials do too, should the mode be loosened.
    std::fs::set_permissions(lab.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, stderr) = run_cli_as_nobody(&lab, &lab.base_config());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("uid 65534 may not use the control socket"),
        "{stderr}"
    );
    h.assert_logged("control request refused");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0);
}

#[test]
fn the_control_group_may_use_the_socket() {
    if !common::root("to act as another uid") {
        return;
    }
    let Some(group) = nix::unistd::Group::from_gid(65534.into()).unwrap() else {
        return common::skip("no group 65534");
    };
    let lab = Lab::new();
    open_lab_to_others(&lab);
    let config = lab.config(&format!(
        "[control]\nsocket = \"{{dir}}/handoff.sock\"\nstate_dir = \"{{dir}}/handoff-state\"\ngroup = \"{}\"\n",
        group.name
    ));
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    h.wait_log("http listening");
    lab.wait_for("start"); // the proxy's handlers are in place before the stop
    let meta = std::fs::metadata(lab.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 65534);
    let (code, stderr) = run_cli_as_nobody(&lab, &config);
    assert_eq!(code, 0, "{stderr}");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0);
}

/// Issue 14 item 3: a reason goes into the text status, `/healthz`,
/// Consul's check output and the logs, so it is one line of at most 256
/// bytes of printable text, whichever way it comes in.
#[test]
fn a_reason_with_control_characters_or_over_256_bytes_is_refused() {
    let lab = Lab::new();
    let config = lab.base_config();
    let long = "x".repeat(257);
    // The CLI refuses it as a usage error naming the flag, agent or not.
    for bad in ["disk\nswap", "\u{1b}[2Jgone", "tab\there", long.as_str()] {
        let (code, stdout, stderr) =
            run_cli(&lab, &config, &["demote", "--no-wait", "--reason", bad]);
        assert_eq!(code, 64, "{bad:?}: {stdout}{stderr}");
        assert!(stderr.contains("--reason"), "{bad:?}: {stderr}");
    }
    // 256 bytes of printable text are fine (here without an agent).
    let most = "é".repeat(128);
    let (code, stdout, stderr) =
        run_cli(&lab, &config, &["demote", "--no-wait", "--reason", &most]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = run_cli(&lab, &config, &["promote"]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    // Sent straight to the agent's socket: refused, naming the field.
    let mut h = healthy_agent(&lab);
    for (reason, want) in [
        ("disk\nswap".to_owned(), "control character"),
        ("\u{7f}".to_owned(), "control character"),
        ("y".repeat(300), "at most 256"),
    ] {
        let request = serde_json::json!({
            "version": 1,
            "command": { "name": "demote", "reason": reason },
        });
        let answer = raw(&lab, format!("{request}\n").as_bytes(), false);
        assert!(
            answer.contains("reason") && answer.contains(want),
            "{reason:?}: {answer}"
        );
    }
    let v = lab.status_json(&config);
    assert_eq!(v["maintenance"], serde_json::Value::Null, "{v}");
    assert_eq!(v["level"], "up");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0);
}

/// A record an older handoff wrote with such a reason still holds the node
/// in maintenance (a damaged record is never "no maintenance"); what is
/// shown of it is sanitised: control characters escaped, 256 bytes at most.
#[test]
fn an_old_record_with_a_bad_reason_holds_the_node_and_is_shown_sanitised() {
    let lab = Lab::new();
    let config = lab.base_config();
    let state = lab.path("handoff-state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let reason = format!("disk\nswap\u{1b}[31m{}", "z".repeat(70_000));
    std::fs::write(
        state.join("maintenance.toml"),
        format!(
            "reason = {}\nuid = 0\nsince = 1795000000\n",
            toml::Value::String(reason)
        ),
    )
    .unwrap();
    let mut h = healthy_agent(&lab);
    let v = lab.status_json(&config);
    assert_eq!(v["level"], "standby", "still in maintenance: {v}");
    let shown = v["maintenance"]["reason"].as_str().unwrap();
    assert!(shown.len() <= 256, "{} bytes", shown.len());
    assert!(!shown.contains(char::is_control), "{shown:?}");
    assert!(shown.starts_with("disk\\nswap\\u{1b}[31mzzz"), "{shown:?}");
    let (code, text, _) = run_cli(&lab, &config, &["status"]);
    assert_eq!(code, 0);
    assert!(text.contains("disk\\nswap"), "{text}");
    h.assert_logged("sanitised");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0);
}
