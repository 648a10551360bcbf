//! The HTTP endpoint against the running agent: /healthz, /status, /metrics,
//! the server's limits (a flood from one address), and what /status hides
//! that the control socket shows. Requests are written by hand over a TCP
//! socket, so the test sees exactly what a Nomad check or Prometheus would.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{FIXTURE, Lab, SOON};
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
fn healthz_stays_200_in_maintenance_and_says_since_when() {
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
    // The reason is for operators (`handoff status`), not for the network.
    assert!(body.contains("; in maintenance since 20"), "{body}");
    assert!(!body.contains("kernel update"), "{body}");
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
fn status_is_the_same_json_as_status_json_but_for_the_proxys_arguments() {
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
    let proxy = lab.proxy(&[]).join(" ");
    assert_eq!(cli["proxy"]["command"], proxy);
    assert_eq!(
        http["proxy"]["command"],
        format!("{FIXTURE} [redacted] --log [redacted]")
    );
    // What changes from one moment to the next, and what HTTP hides.
    for v in [&mut http, &mut cli] {
        v["proxy"]["command"] = serde_json::Value::Null;
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
    // A client that never finishes its head is cut off (2 s), and the
    // server keeps answering others meanwhile.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    assert_eq!(get(&addr, "/healthz").0, 200);
    slow.set_read_timeout(Some(SOON)).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    println!("slow client cut off after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(4));
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0);
}

/// A connection to `to` from the loopback address `from`: Linux routes all
/// of 127/8 to lo, so each address is a client of its own. Connecting gives
/// up after 500 ms (SO_SNDTIMEO bounds connect(2) on Linux, socket(7)).
fn connect_from(from: Ipv4Addr, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    use nix::sys::{
        socket::{
            AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket,
            sockopt::SendTimeout,
        },
        time::TimeVal,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, SendTimeout, &TimeVal::new(0, 500_000))?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(from, 0)),
    )?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    Ok(TcpStream::from(fd))
}

/// GET /healthz with every wait bounded (2 s): the code (0 when the server
/// closed without an answer) and how long it took.
fn timed_healthz(addr: &str) -> (u16, Duration) {
    let started = Instant::now();
    let attempt = || -> std::io::Result<u16> {
        let mut stream =
            TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        Ok(answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0))
    };
    (attempt().unwrap_or(0), started.elapsed())
}

/// Issue 14, item 2: one client that opened connections and sent nothing
/// (or half a request line) held every slot for 5 s at a time, so `/healthz`,
/// and with it Nomad's check, went unanswered.
#[test]
fn healthz_answers_within_a_second_while_one_address_holds_200_slow_connections() {
    const HELD: usize = 200;
    const FLOOD: Duration = Duration::from_secs(4);
    let lab = Lab::new();
    let mut h = lab.run(None, &lab.proxy(&[]));
    let addr = h.http_address();
    wait_healthz(&addr, 200);
    let target: SocketAddrV4 = addr.parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    // The flood: from 127.0.0.2, keep HELD connections open, replacing every
    // one the server closes; every other one sends half a request line.
    let flood = {
        let (stop, opened) = (stop.clone(), opened.clone());
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            let mut cut = 0usize;
            let mut buf = [0u8; 512];
            let deadline = Instant::now() + FLOOD + SOON;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                held.retain_mut(|s| match s.read(&mut buf) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                    _ => {
                        cut += 1;
                        false
                    }
                });
                while held.len() < HELD {
                    let Ok(mut s) = connect_from(Ipv4Addr::new(127, 0, 0, 2), target) else {
                        break;
                    };
                    if opened.fetch_add(1, Ordering::Relaxed) % 2 == 1 {
                        let _ = s.write_all(b"GET /status HTTP/1.1\r\n");
                    }
                    s.set_nonblocking(true).unwrap();
                    held.push(s);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (held.len(), cut)
        })
    };
    let deadline = Instant::now() + SOON;
    while opened.load(Ordering::Relaxed) < HELD {
        assert!(Instant::now() < deadline, "the flood never opened {HELD}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut answers = Vec::new();
    let until = Instant::now() + FLOOD;
    while Instant::now() < until {
        answers.push(timed_healthz(&addr));
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let (still_held, cut) = flood.join().unwrap();
    let slowest = answers.iter().map(|a| a.1).max().unwrap();
    println!(
        "flood: {} connections from 127.0.0.2, {cut} closed by handoff, {still_held} open at the end; \
         /healthz from 127.0.0.1: {} requests, slowest {slowest:?}",
        opened.load(Ordering::Relaxed),
        answers.len()
    );
    let bad: Vec<_> = answers
        .iter()
        .filter(|(code, took)| *code != 200 || *took >= Duration::from_secs(1))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} /healthz failed or took 1 s or more: {bad:?}",
        bad.len(),
        answers.len()
    );
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0);
}

/// Issue 14, item 2: `/status` showed the proxy's whole command line, the
/// health check's URL with its query (also in `last_error`) and the
/// maintenance reason to anyone who could reach the port. The control
/// socket, which only root and the control group reach, still shows them.
#[test]
fn status_over_http_hides_the_secrets_that_the_control_socket_shows() {
    let lab = Lab::new();
    // Port 1 refuses, so last_error names the URL.
    let config = lab.config(
        "[proxy.health]\nhttp = \"http://127.0.0.1:1/ping?key=hunter2\"\ninterval = \"100ms\"\ntimeout = \"50ms\"\n",
    );
    let mut h = lab.run(Some(&config), &lab.proxy(&["--token=s3cret"]));
    let addr = h.http_address();
    let out = lab
        .handoff_command(Some(&config))
        .args(["demote", "--no-wait", "--reason", "ticket 4711 for alice"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + SOON;
    let cli = loop {
        let cli = lab.status_json(&config);
        if cli["health"]["last_error"].is_string() {
            break cli;
        }
        assert!(Instant::now() < deadline, "no check failed: {cli}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let secrets = ["s3cret", "hunter2", "ticket 4711"];
    for secret in secrets {
        assert!(cli.to_string().contains(secret), "{secret} not in {cli}");
    }
    let (code, body) = get(&addr, "/status");
    assert_eq!(code, 200);
    let (_, healthz) = get(&addr, "/healthz");
    for secret in secrets {
        assert!(!body.contains(secret), "{secret} in /status: {body}");
        assert!(!healthz.contains(secret), "{secret} in /healthz: {healthz}");
    }
    // The logs keep the reason (who demoted, and why, is for the record).
    for secret in ["s3cret", "hunter2"] {
        assert!(!h.log().contains(secret), "{secret} logged:\n{}", h.log());
    }
    let http: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        http["proxy"]["command"],
        format!("{FIXTURE} [redacted] --log [redacted] --token=[redacted]")
    );
    assert_eq!(
        http["health"]["check"],
        "http http://127.0.0.1:1/ping?[redacted]"
    );
    let error = http["health"]["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("connect http://127.0.0.1:1/ping?[redacted]: "),
        "{error}"
    );
    assert_eq!(http["maintenance"]["reason"], "[redacted]");
    assert_eq!(http["maintenance"]["since"], cli["maintenance"]["since"]);
    // The start's log lines redact the same way.
    h.assert_logged("--token=[redacted]");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0);
}

#[test]
fn show_argv_shows_the_command_line_over_http_and_in_the_log() {
    let lab = Lab::new();
    let config = lab.config("[http]\nlisten = \"127.0.0.1:0\"\nshow_argv = true\n");
    let mut h = lab.run(Some(&config), &lab.proxy(&["--token=s3cret"]));
    let addr = h.http_address();
    wait_healthz(&addr, 200);
    let (_, body) = get(&addr, "/status");
    let http: serde_json::Value = serde_json::from_str(&body).unwrap();
    let command = http["proxy"]["command"].as_str().unwrap();
    assert!(command.ends_with(" --token=s3cret"), "{command}");
    h.assert_logged("--token=s3cret");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0);
}
