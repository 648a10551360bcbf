//! The BGP anycast backend against real BIRD 2, nginx and a client in
//! network namespaces (tests/common/anycast.rs): the router's table is
//! read from the router's own BIRD, the client's requests from its log.
//! The times each test measures are printed (`--nocapture`) and reported
//! in docs/benchmarks.md.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    Lab,
    anycast::{Anycast, wall},
};
use nix::{sys::signal::Signal, unistd::Pid};

/// Healthy (rise 2 x 200 ms) and announced, generously.
const HEALTHY: Duration = Duration::from_secs(10);
/// The bound for a withdrawal the router must see.
const WITHDRAWN: Duration = Duration::from_secs(1);

/// Starts handoff on `node` with a healthy nginx; returns once the router
/// has its path.
fn start_edge(
    lab: &Lab,
    net: &Anycast,
    node: &str,
    extra: &str,
) -> (common::Handoff, std::path::PathBuf) {
    let config = net.config(node, "/health", extra);
    let handoff = net.handoff(lab, node, &config);
    handoff.wait_until_blocked();
    net.wait_paths(&format!("{node}'s path"), HEALTHY, |p| {
        p.iter().any(|p| p.node == node)
    });
    (handoff, config)
}

/// Both edges healthy and announcing at full preference: a's path the
/// router's best (the lower router id breaks the tie), b's its second.
/// `sections(node)` goes into each node's config.
fn both_edges(
    lab: &Lab,
    net: &Anycast,
    sections: impl Fn(&str) -> String,
) -> [(common::Handoff, std::path::PathBuf); 2] {
    let a = start_edge(lab, net, "a", &sections("a"));
    let b = start_edge(lab, net, "b", &sections("b"));
    net.wait_paths("two paths, a best", HEALTHY, |p| {
        p.len() == 2 && p.iter().any(|p| p.best && p.node == "a")
    });
    [a, b]
}

fn nginx_pid(lab: &Lab, config: &std::path::Path) -> i32 {
    let status = lab.status_json(config);
    let pid = status["proxy"]["pid"].as_i64().expect("the proxy's pid");
    i32::try_from(pid).expect("a pid")
}

/// What a watcher saw during a planned stop, each as the wall-clock time
/// of the look that first saw it.
#[derive(Debug, Default)]
struct Seen {
    best_moved: Option<f64>,
    /// The router's table at that look (a's path still there, prepended).
    during: String,
    path_gone: Option<f64>,
    nginx_gone: Option<f64>,
    /// A look found a's nginx gone while the router's best path still led
    /// to a: the stop came before the move.
    stopped_first: bool,
}

/// Samples, until `done`: a's nginx first, then the router's table, so a
/// look that finds nginx gone and the router still pointing at a proves
/// the wrong order.
fn watch_stop(net: &Anycast, nginx: i32, done: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    let start = Instant::now();
    while !done.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(20) {
        let at = wall();
        let alive = nix::sys::signal::kill(Pid::from_raw(nginx), None).is_ok();
        let paths = net.router_paths();
        let best_a = paths.iter().any(|p| p.best && p.node == "a");
        let has_a = paths.iter().any(|p| p.node == "a");
        if !best_a && seen.best_moved.is_none() {
            seen.best_moved = Some(at);
            seen.during = show(&paths);
        }
        if !has_a && seen.path_gone.is_none() {
            seen.path_gone = Some(at);
        }
        if !alive && seen.nginx_gone.is_none() {
            seen.nginx_gone = Some(at);
        }
        seen.stopped_first |= !alive && best_a;
        if seen.best_moved.is_some() && seen.path_gone.is_some() && seen.nginx_gone.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    seen
}

fn table(net: &Anycast) -> String {
    show(&net.router_paths())
}

/// The router's paths as `a* [65001], b [65002]` (* the best).
fn show(paths: &[common::anycast::RouterPath]) -> String {
    paths
        .iter()
        .map(|p| {
            format!(
                "{}{} [{}]",
                p.node,
                if p.best { "*" } else { "" },
                p.as_path
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn a_planned_stop_moves_the_best_path_then_withdraws_then_stops_nginx() {
    if !common::anycast::lab_available() {
        return;
    }
    let lab = Lab::new();
    let mut net = Anycast::new(&lab);
    let [(mut a, a_config), _b] = both_edges(&lab, &net, |_| String::new());
    let before = table(&net);
    net.start_client();
    net.wait_answers("a", 0.0, 50, HEALTHY);
    let nginx = nginx_pid(&lab, &a_config);
    let done = Arc::new(AtomicBool::new(false));
    let seen = std::thread::scope(|s| {
        let watcher = s.spawn(|| watch_stop(&net, nginx, &done));
        let stop_at = wall();
        a.signal(Signal::SIGTERM);
        let code = a.code(Duration::from_secs(15));
        done.store(true, Ordering::SeqCst);
        (stop_at, code, watcher.join().unwrap())
    });
    let (stop_at, code, seen) = seen;
    let after = table(&net);
    net.wait_answers("b", seen.best_moved.unwrap_or(0.0), 100, HEALTHY);
    let requests = net.stop_client();
    eprintln!(
        "router before: {before}; during: {}; after: {after}; {seen:?} (stop at {stop_at:.3})",
        seen.during
    );
    assert_eq!(
        code,
        0,
        "nginx's graceful stop (SIGQUIT) exits 0:\n{}",
        a.log()
    );
    assert!(
        !seen.stopped_first,
        "a's nginx stopped while the router's best path still led to a: {seen:?}\n{}",
        a.log()
    );
    let moved = seen.best_moved.expect("the best path moved");
    let gone = seen.path_gone.expect("a's path left the router's table");
    let stopped = seen.nginx_gone.expect("a's nginx stopped");
    assert!(moved <= stopped && gone <= stopped + 0.05, "{seen:?}");
    eprintln!(
        "planned stop: best path moved {:.0} ms after SIGTERM, a's path gone at {:.0} ms, nginx gone at {:.0} ms",
        (moved - stop_at) * 1e3,
        (gone - stop_at) * 1e3,
        (stopped - stop_at) * 1e3
    );
    assert_eq!(after, format!("b* [65002]"), "only b is left");
    // A request sent once the router pointed at b went to b: none fails.
    // Only one already on its way to a when the path moved may.
    let late_failures: Vec<_> = requests
        .iter()
        .filter(|(at, ok, _)| !ok && *at >= moved)
        .collect();
    assert!(
        late_failures.is_empty(),
        "requests failed after the move: {late_failures:?}"
    );
    let failed = requests.iter().filter(|(_, ok, _)| !ok).count();
    eprintln!(
        "client: {} requests, {failed} failed (all sent before the move)",
        requests.len()
    );
}

#[test]
fn a_crash_an_unhealthy_proxy_and_the_agent_s_death_withdraw() {
    if !common::anycast::lab_available() {
        return;
    }
    let lab = Lab::new();
    let mut net = Anycast::new(&lab);
    let (_b, _) = start_edge(&lab, &net, "b", "");
    // An unhealthy proxy never announces, not even across a BIRD restart.
    let unhealthy = net.config("a", "/down", "");
    let mut a = net.handoff(&lab, "a", &unhealthy);
    a.wait_log("phase from=Spawning to=Running");
    let watch = Instant::now();
    let mut restarted = false;
    while watch.elapsed() < Duration::from_secs(4) {
        assert!(
            !net.has_path("a"),
            "unhealthy a announced: {}\n{}",
            table(&net),
            a.log()
        );
        if !restarted && watch.elapsed() > Duration::from_secs(1) {
            net.kill_bird("a");
            net.start_bird("a");
            restarted = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    net.wait_established(Duration::from_secs(15));
    assert!(
        !net.has_path("a"),
        "a announced after BIRD's restart: {}",
        table(&net)
    );
    a.signal(Signal::SIGTERM);
    a.code(Duration::from_secs(15));

    // kill -9 of a's nginx: withdrawn at once.
    let (mut a, a_config) = start_edge(&lab, &net, "a", "");
    let nginx = nginx_pid(&lab, &a_config);
    let killed = Instant::now();
    nix::sys::signal::kill(Pid::from_raw(nginx), Signal::SIGKILL).unwrap();
    let took = net.wait_paths("a withdrawn after its nginx died", WITHDRAWN, |p| {
        !p.iter().any(|p| p.node == "a")
    });
    eprintln!(
        "kill -9 of nginx: a's path gone after {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    let _ = killed;
    a.code(Duration::from_secs(15));

    // SIGKILL of the agent: the sentinel withdraws.
    let (a, _) = start_edge(&lab, &net, "a", "");
    a.signal(Signal::SIGKILL);
    let took = net.wait_paths("a withdrawn after its agent died", WITHDRAWN, |p| {
        !p.iter().any(|p| p.node == "a")
    });
    eprintln!(
        "SIGKILL of the agent: a's path gone after {:.0} ms",
        took.as_secs_f64() * 1e3
    );
}

#[test]
fn demote_keeps_a_less_preferred_path_that_takes_over_when_b_goes() {
    if !common::anycast::lab_available() {
        return;
    }
    let lab = Lab::new();
    let mut net = Anycast::new(&lab);
    // Consul on a Unix socket, which reaches into the namespaces.
    let socket = lab.path("consul.sock");
    let hcl = format!(
        "addresses {{ http = \"127.0.0.1 unix://{}\" }}",
        socket.display()
    );
    let consul = common::consul::Consul::start_with(&lab, Some(hcl), None);
    let ttl = Duration::from_secs(1);
    let [(mut a, a_config), (b, b_config)] = both_edges(&lab, &net, |node| {
        format!(
            "[consul]\naddress = \"unix://{}\"\nservice_id = \"edge-{node}\"\nttl = \"1s\"\n",
            socket.display()
        )
    });
    // Both announce at full preference: two masters, and no split brain
    // (the watch would warn after 2 x ttl).
    consul.wait_for_tag("edge-a", "master", HEALTHY);
    consul.wait_for_tag("edge-b", "master", HEALTHY);
    let meta = consul.service("edge-a").unwrap()["Meta"].clone();
    assert_eq!(meta["vip"], common::anycast::SERVICE);
    net.start_client();
    net.wait_answers("a", 0.0, 20, HEALTHY);
    std::thread::sleep(3 * ttl);
    for (node, log, config) in [("a", a.log(), &a_config), ("b", b.log(), &b_config)] {
        assert!(!log.contains("split brain"), "{node}:\n{log}");
        let consul = &lab.status_json(config)["consul"];
        assert_eq!(
            consul["masters"].as_array().map(Vec::len),
            Some(2),
            "{node}: {consul}"
        );
        assert_eq!(consul["split_brain"], false, "{node}: {consul}");
    }
    let demoted = Instant::now();
    let (code, out, err) = net.operator("a", &a_config, &["demote", "--reason", "test"]);
    assert_eq!(code, 0, "demote: {out}{err}");
    eprintln!(
        "demote returned after {:.0} ms: {}",
        demoted.elapsed().as_secs_f64() * 1e3,
        out.trim()
    );
    // demote returns once the router's best path is b's; a stays, prepended.
    let paths = net.router_paths();
    assert!(paths.iter().any(|p| p.best && p.node == "b"), "{paths:?}");
    let a_path = paths
        .iter()
        .find(|p| p.node == "a")
        .expect("a is still announced");
    assert!(
        !a_path.best && a_path.as_path.split_whitespace().count() == 4,
        "{paths:?}"
    );
    let status = lab.status_json(&a_config);
    assert_eq!(status["role"], "BACKUP", "{status}");
    consul.wait_for_tag("edge-a", "maintenance", HEALTHY);
    net.wait_answers("b", wall(), 50, HEALTHY);
    // b's proxy dies: the router falls back to a's standby path.
    let nginx_b = nginx_pid(&lab, &b_config);
    nix::sys::signal::kill(Pid::from_raw(nginx_b), Signal::SIGKILL).unwrap();
    let took = net.wait_paths("a best again", WITHDRAWN, |p| {
        p.len() == 1 && p.iter().any(|p| p.best && p.node == "a")
    });
    eprintln!(
        "b's nginx killed: a's standby path best after {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    net.wait_answers("a", wall(), 50, HEALTHY);
    // With the router's best path on its standby route, a is master again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.status_json(&a_config)["role"] != "MASTER" {
        assert!(
            Instant::now() < deadline,
            "a never became MASTER at standby"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    net.stop_client();
    drop(b);
    a.signal(Signal::SIGTERM);
    a.code(Duration::from_secs(15));
}

#[test]
fn the_shipped_bird_snippet_parses_with_a_session_from_its_template() {
    if !common::have("bird") {
        return;
    }
    let lab = Lab::new();
    let conf = lab.path("bird.conf");
    std::fs::write(
        &conf,
        format!(
            "router id 10.0.1.2;\ndefine HANDOFF_AS = 65001;\ninclude \"{}\";\n\
             protocol bgp uplink from handoff_uplink {{ local 10.0.1.2 as HANDOFF_AS; neighbor 10.0.1.1 as 65000; }}\n",
            common::repo("config/bird/handoff.conf").display()
        ),
    )
    .unwrap();
    // `-p`: parse the config and exit (bird(8)).
    let out = std::process::Command::new("bird")
        .arg("-p")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bird -p: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
