//! The HTTP endpoint against the running agent: /healthz, /status, /metrics,
//! and the server's limits. Requests are written by hand over a TCP socket,
//! so the test sees exactly what a Nomad check or Prometheus would.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{Lab, SOON};
use nix::sys::signal::Signal::{SIGKILL, SIGTERM};

/// Sends `request` as is; returns the status code and the body.
fn send(addr: &str, request: &str) -> (u16, String) {
    common::http_send(addr, request).expect("the agent accepts")
}

fn get(addr: &str, path: &str) -> (u16, String) {
    send(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
}

/// Waits until `/healthz` says `code`; returns when it first did.
fn wait_healthz(addr: &str, code: u16) -> Instant {
    let deadline = Instant::now() + SOON;
    loop {
        if get(addr, "/healthz").0 == code {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "/healthz never said {code}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn healthz_flips_to_503_within_one_health_interval_after_the_proxy_is_killed() {
    let lab = Lab::new();
    let config = lab.config(
        "[proxy]\nrestart = \"on-failure\"\n[proxy.health]\nexec = [\"true\"]\ninterval = \"1s\"\nrise = 1\n",
    );
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    let addr = h.http_address();
    wait_healthz(&addr, 200);
    let (_, body) = get(&addr, "/healthz");
    assert!(body.starts_with("ok: proxy pid"), "{body}");
    let pid = common::proxy_pid(&lab);
    let killed = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), SIGKILL).unwrap();
    let flipped = wait_healthz(&addr, 503) - killed;
    println!("/healthz said 503 {flipped:?} after the kill");
    assert!(flipped < Duration::from_secs(1), "{flipped:?}");
    let (_, body) = get(&addr, "/healthz");
    assert!(body.contains("not running"), "{body}");
    // The restart (1 s backoff) brings it back.
    wait_healthz(&addr, 200);
    h.signal(SIGTERM);
    h.code(SOON);
}

#[test]
fn healthz_stays_200_in_maintenance_and_says_why() {
    let lab = Lab::new();
    let mut h = lab.run(None, &lab.proxy(&[]));
    let addr = h.http_address();
    wait_healthz(&addr, 200);
    let out = lab
        .handoff_command(Some(&lab.base_config()))
        .args(["demote", "--reason", "kernel update"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, body) = get(&addr, "/healthz");
    assert_eq!(code, 200);
    assert!(body.contains("in maintenance: kernel update"), "{body}");
    h.signal(SIGTERM);
    h.code(SOON);
}

/// Waits until the proxy passed its gate and the level is applied.
fn wait_up(addr: &str) {
    let deadline = Instant::now() + SOON;
    loop {
        let v: serde_json::Value = serde_json::from_str(&get(addr, "/status").1).unwrap();
        if v["level"] == "up" && v["level_applied"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "never up: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_parse_with_the_reference_openmetrics_parser() {
    let lab = Lab::new();
    let mut h = lab.run(None, &lab.proxy(&[]));
    let addr = h.http_address();
    wait_up(&addr);
    let (code, body) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    // prometheus_client's strict OpenMetrics parser (Debian's
    // python3-prometheus-client; scripts/test installs it).
    let script = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
        for f in parse(sys.stdin.read()):\n\
        \x20   for s in f.samples:\n\
        \x20       print(s.name, sorted(s.labels.items()), float(s.value))\n";
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (scripts/test installs python3-prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let parsed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the parser rejected /metrics: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        format!(
            "handoff_build_info [('version', '{}')] 1.0",
            env!("CARGO_PKG_VERSION")
        ),
        "handoff_role [('role', 'backup')] 1.0".into(),
        "handoff_role [('role', 'master')] 0.0".into(),
        "handoff_demoted [] 0.0".into(),
        "handoff_proxy_up [] 1.0".into(),
        "handoff_proxy_restarts_total [] 0.0".into(),
        "handoff_failover_seconds_count [] 0.0".into(),
        "handoff_consul_errors_total [] 0.0".into(),
    ] {
        assert!(parsed.contains(&want), "{want:?} not in:\n{parsed}");
    }
    h.signal(SIGTERM);
    h.code(SOON);
}

#[test]
fn status_is_the_same_json_as_status_json() {
    let lab = Lab::new();
    let mut h = lab.run(None, &lab.proxy(&[]));
    let addr = h.http_address();
    wait_up(&addr);
    let (code, body) = get(&addr, "/status");
    assert_eq!(code, 200);
    let mut http: serde_json::Value = serde_json::from_str(&body).unwrap();
    let out = lab
        .handoff_command(Some(&lab.base_config()))
        .args(["status", "--json"])
        .output()
        .unwrap();
    let mut cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // What changes from one moment to the next.
    for v in [&mut http, &mut cli] {
        v["agent"]["uptime_seconds"] = 0.into();
        for key in ["uptime_seconds", "rss_bytes", "cpu_seconds"] {
            v["proxy"][key] = serde_json::Value::Null;
        }
    }
    assert_eq!(http, cli);
    h.signal(SIGTERM);
    h.code(SOON);
}

#[test]
fn unknown_paths_methods_and_oversized_heads_are_refused() {
    let lab = Lab::new();
    let mut h = lab.run(None, &lab.proxy(&[]));
    let addr = h.http_address();
    wait_healthz(&addr, 200);
    assert_eq!(get(&addr, "/nope").0, 404);
    assert_eq!(
        send(
            &addr,
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        .0,
        405
    );
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (code, _) = send(&addr, &huge);
    assert!(code == 431 || code == 0, "an oversized head got {code}");
    // A client that never finishes its head is cut off (5 s), and the
    // server keeps answering others meanwhile.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    assert_eq!(get(&addr, "/healthz").0, 200);
    slow.set_read_timeout(Some(SOON)).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    println!("slow client cut off after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(9));
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0);
}
