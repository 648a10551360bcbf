//! The health gate through the real binary: promote only after `rise`
//! passes in a row, demote after `fall` failures in a row, for http, tcp and
//! exec checks. The test serves the health endpoint itself and logs every
//! answer into the shared event log, so order is asserted from the log.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::{
    io::{Read, Write},
    net::TcpListener,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    thread,
};

use common::{Lab, SOON};
use nix::sys::signal::Signal::SIGTERM;

/// An HTTP endpoint answering `status` to every GET, logging each answer.
struct Endpoint {
    port: u16,
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl Endpoint {
    fn start(log: PathBuf, status: u16) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(status));
        let stop = Arc::new(AtomicBool::new(false));
        let (status2, stop2) = (status.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let code = status2.load(Ordering::SeqCst);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                common::append_event(&log, &format!("health {code}"));
            }
        });
        Endpoint { port, status, stop }
    }

    fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port)); // wake accept
    }
}

/// The last `n` events named `health ...` before position `end` all say `status`.
fn answered_before(lab: &Lab, end: usize, n: usize, status: u16) -> bool {
    let whats = lab.whats();
    let answers: Vec<&String> = whats[..end]
        .iter()
        .filter(|w| w.starts_with("health "))
        .collect();
    answers.len() >= n
        && answers[answers.len() - n..]
            .iter()
            .all(|w| **w == format!("health {status}"))
}

fn gate_config(lab: &Lab, health: &str) -> PathBuf {
    let backend = lab.command_backend("BACKUP\n", "");
    lab.config(&format!("[proxy.health]\n{health}\ninterval = \"50ms\"\ntimeout = \"40ms\"\nrise = 2\nfall = 3\n{backend}"))
}

#[test]
fn http_promotes_after_rise_and_demotes_after_fall() {
    let lab = Lab::new();
    let endpoint = Endpoint::start(lab.log.clone(), 503);
    let config = gate_config(
        &lab,
        &format!("http = \"http://127.0.0.1:{}/ping\"", endpoint.port),
    );
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for_count("health 503", 6);
    assert_eq!(
        lab.count("promote"),
        0,
        "promoted while unhealthy: {:#?}",
        lab.whats()
    );

    endpoint.set(200);
    lab.wait_for("promote");
    let promote = lab.position("promote").unwrap();
    assert!(
        answered_before(&lab, promote, 2, 200),
        "promoted before 2 passes: {:#?}",
        lab.whats()
    );

    endpoint.set(500);
    lab.wait_for_count("demote", 2); // the first one is start-up's
    let demote = lab.whats().iter().rposition(|w| w == "demote").unwrap();
    assert!(
        answered_before(&lab, demote, 3, 500),
        "demoted before 3 failures: {:#?}",
        lab.whats()
    );

    endpoint.set(200);
    lab.wait_for_count("promote", 2);
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
}

#[test]
fn tcp_check_follows_the_listener() {
    let lab = Lab::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = gate_config(&lab, &format!("tcp = \"127.0.0.1:{port}\""));
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("promote");
    // Nothing listens any more: refused connects, then down.
    drop(listener);
    lab.wait_for_count("demote", 2);
    h.assert_logged("healthy=false");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
}

#[test]
fn exec_check_passes_on_exit_0() {
    let lab = Lab::new();
    let code = lab.path("check-code");
    std::fs::write(&code, "1").unwrap();
    let check = format!(
        "exec = [\"{{fixture}}\", \"record\", \"--log\", \"{{log}}\", \"check\", \"--code-from\", \"{}\"]",
        code.display()
    );
    let config = gate_config(&lab, &check);
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for_count("check", 6);
    assert_eq!(
        lab.count("promote"),
        0,
        "promoted on a failing check: {:#?}",
        lab.whats()
    );
    std::fs::write(&code, "0").unwrap();
    lab.wait_for("promote");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
}

#[test]
fn an_unhealthy_proxy_is_never_promoted_and_still_stops_cleanly() {
    let lab = Lab::new();
    let endpoint = Endpoint::start(lab.log.clone(), 503);
    let config = gate_config(
        &lab,
        &format!("http = \"http://127.0.0.1:{}/\"", endpoint.port),
    );
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for_count("health 503", 4);
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert_eq!(lab.count("promote"), 0, "{:#?}", lab.whats());
    drop(endpoint);
}
