//! sd_notify(3) for `Type=notify` units, through the real binary: READY=1
//! once the proxy is healthy, RELOADING=1 around a forwarded reload,
//! STOPPING=1 with EXTEND_TIMEOUT_USEC at the stop; the proxy never sees
//! the socket.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::{
    os::{
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixDatagram},
    },
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use common::{Handoff, Lab, SOON};
use nix::sys::signal::Signal::{SIGHUP, SIGTERM};

/// Logs every datagram on `sock` as `notify <fields>` until dropped.
struct Listener(Arc<AtomicBool>);

impl Listener {
    fn start(sock: UnixDatagram, log: PathBuf) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop2.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let message = String::from_utf8_lossy(&buf[..n]).replace('\n', " ");
                    common::append_event(&log, &format!("notify {message}"));
                }
            }
        });
        Listener(stop)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn run_with_socket(lab: &Lab, socket: &str) {
    let mut cmd = lab.agent_command(None);
    cmd.env("NOTIFY_SOCKET", socket)
        .args(["run", "--"])
        .args(lab.proxy(&[]));
    let mut h = Handoff::spawn(cmd, lab.path("handoff.stderr"));
    lab.wait_for("notify READY=1");
    assert!(
        lab.position("start").unwrap() < lab.position("notify READY=1").unwrap(),
        "{:#?}",
        lab.whats()
    );
    assert!(
        lab.wait_for("start").what.contains("notify_socket=unset"),
        "the proxy saw NOTIFY_SOCKET"
    );

    h.signal(SIGHUP);
    lab.wait_for("signal SIGHUP");
    lab.wait_for_count("notify READY=1", 2);
    assert!(
        lab.wait_for("notify RELOADING=1")
            .what
            .contains("MONOTONIC_USEC="),
        "{:#?}",
        lab.whats()
    );

    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    // Default budget: failover_timeout 10 s + settle 0 + stop_timeout 10 s
    // + the exit's 1 s DOWN_GRACE.
    let stopping = lab.wait_for("notify STOPPING=1");
    assert!(
        stopping.what.contains("EXTEND_TIMEOUT_USEC=21000000"),
        "{}",
        stopping.what
    );
}

#[test]
fn a_path_socket_gets_ready_reloading_and_stopping() {
    let lab = Lab::new();
    let path = lab.path("notify.sock");
    let _listener = Listener::start(UnixDatagram::bind(&path).unwrap(), lab.log.clone());
    run_with_socket(&lab, path.to_str().unwrap());
}

#[test]
fn an_abstract_socket_works_too() {
    let lab = Lab::new();
    let name = format!("handoff-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _listener = Listener::start(UnixDatagram::bind_addr(&addr).unwrap(), lab.log.clone());
    run_with_socket(&lab, &format!("@{name}"));
}

#[test]
fn ready_is_never_sent_for_a_proxy_that_never_passed_its_health_check() {
    // keepalived's graceful stop once asked for standby even from down, and
    // READY=1 went out with it. Now: a stop never raises the node, and
    // READY=1 follows health only.
    let lab = Lab::new();
    let path = lab.path("notify.sock");
    let _listener = Listener::start(UnixDatagram::bind(&path).unwrap(), lab.log.clone());
    let track = lab.path("keepalived.track");
    let config = lab.config(&format!(
        "[proxy.health]\nexec = [\"false\"]\ninterval = \"50ms\"\ntimeout = \"40ms\"\n\
         [failover]\nbackend = \"keepalived\"\nfailover_timeout = \"1s\"\n\
         [failover.keepalived]\ntrack_file = \"{}\"\nvip = [\"192.0.2.100\"]\n",
        track.display()
    ));
    let mut cmd = lab.agent_command(Some(&config));
    cmd.env("NOTIFY_SOCKET", &path)
        .args(["run", "--"])
        .args(lab.proxy(&[]));
    let mut h = Handoff::spawn(cmd, lab.path("handoff.stderr"));
    lab.wait_for("start");
    h.wait_log("health");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    lab.wait_for("notify STOPPING=1");
    assert_eq!(lab.count("notify READY=1"), 0, "{:#?}", lab.whats());
    assert!(!h.log().contains("level=standby"), "{}", h.log());
    assert_eq!(std::fs::read_to_string(&track).unwrap().trim(), "-254");
}
