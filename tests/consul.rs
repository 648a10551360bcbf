//! Consul reporting against a real Consul agent (1.8.7, `consul agent
//! -dev` on loopback; see tests/common/consul.rs): registration, role tags,
//! meta and TTL check follow the role; peer confirmation; ACLs; split
//! brain; and Consul being down, hanging or failing never slows a failover
//! by more than a second.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{Handoff, Lab, SOON, carp_sim::Cluster, consul::Consul, output};
use nix::sys::signal::Signal::SIGTERM;

/// A `[consul]` section for the agent at `addr`.
fn section(addr: &str, id: &str, extra: &str) -> String {
    format!(
        "[consul]\naddress = \"{addr}\"\nservice = \"edge\"\nservice_id = \"{id}\"\nttl = \"3s\"\n{extra}\n"
    )
}

#[test]
fn registration_tags_meta_and_check_follow_the_role() {
    let lab = Lab::new();
    let consul = Consul::start(&lab);
    let cluster = Cluster::new(&lab, 0);
    let config = cluster.config(&lab, "a", &section(&consul.addr(), "edge-a", ""));
    // settle keeps the agent in `draining` long enough to see it.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "failover_timeout = \"5s\"\n",
        "failover_timeout = \"5s\"\nsettle = \"1s\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));

    lab.wait_for("sim master a");
    consul.wait_for_tag("edge-a", "master", SOON);
    consul.wait_until("passing", SOON, |c| {
        c.check_status("edge-a").as_deref() == Some("passing")
    });
    let service = consul.service("edge-a").unwrap();
    assert_eq!(service["Service"], "edge");
    let meta = &service["Meta"];
    assert_eq!(meta["role"], "master");
    assert_eq!(meta["level"], "up");
    assert_eq!(meta["demoted"], "false");
    assert_eq!(meta["reason"], "");
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        meta["node"].as_str().unwrap(),
        nix::unistd::gethostname().unwrap().to_str().unwrap()
    );
    let status = lab.status_json(&config);
    assert_eq!(status["consul"]["registered"], true, "{status:#}");
    assert_eq!(status["consul"]["tag"], "master");
    assert_eq!(status["consul"]["service_id"], "edge-a");

    // Maintenance: the tag, the reason and a warning check reach Consul
    // within a second of `demote` returning.
    let (code, _, err) =
        output(
            lab.handoff_command(Some(&config))
                .args(["demote", "--reason", "kernel upgrade"]),
        );
    assert_eq!(code, 0, "{err}");
    let took = consul.wait_for_tag("edge-a", "maintenance", Duration::from_secs(1));
    println!(
        "maintenance reached Consul {} ms after demote returned",
        took.as_millis()
    );
    consul.wait_until("warning", Duration::from_secs(1), |c| {
        c.check_status("edge-a").as_deref() == Some("warning")
    });
    let meta = consul.service("edge-a").unwrap()["Meta"].clone();
    assert_eq!(meta["reason"], "kernel upgrade");
    assert_eq!(meta["level"], "standby");
    assert_eq!(meta["demoted"], "true");

    let (code, _, err) = output(lab.handoff_command(Some(&config)).arg("promote"));
    assert_eq!(code, 0, "{err}");
    consul.wait_for_tag("edge-a", "master", SOON);
    consul.wait_until("passing", SOON, |c| {
        c.check_status("edge-a").as_deref() == Some("passing")
    });

    // A planned stop reports draining (warning) during settle, and a clean
    // exit removes the instance.
    h.signal(SIGTERM);
    consul.wait_for_tag("edge-a", "draining", SOON);
    // The tag (a registration) and the check (a TTL update) are two calls
    // to Consul: the check may land a moment after the tag (seen in CI on
    // a loaded host), as it does for maintenance above.
    consul.wait_until("warning", Duration::from_secs(1), |c| {
        c.check_status("edge-a").as_deref() == Some("warning")
    });
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert!(
        consul.service("edge-a").is_none(),
        "still registered after a clean exit"
    );
    h.assert_logged("consul: deregistered");
}

/// Starts the agent of `node` with its own stderr file.
fn run_node(lab: &Lab, config: &std::path::Path, node: &str) -> Handoff {
    let mut cmd = lab.agent_command(Some(config));
    cmd.arg("run").arg("--").args(lab.proxy(&[]));
    Handoff::spawn(cmd, lab.path(&format!("{node}.stderr")))
}

/// Index of the first line of `log` containing `text`.
fn line_of(log: &str, text: &str) -> usize {
    log.lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no {text:?} in:\n{log}"))
}

#[test]
fn a_planned_stop_with_confirm_peer_returns_only_after_the_peer_is_tagged_master() {
    let lab = Lab::new();
    let consul = Consul::start(&lab);
    let cluster = Cluster::new(&lab, 0);
    let a = cluster.config(
        &lab,
        "a",
        &section(&consul.addr(), "edge-a", "confirm_peer = true"),
    );
    let b = cluster.config(&lab, "b", &section(&consul.addr(), "edge-b", ""));
    let mut ha = run_node(&lab, &a, "a");
    let mut hb = run_node(&lab, &b, "b");
    consul.wait_for_tag("edge-a", "master", SOON);
    consul.wait_for_tag("edge-b", "backup", SOON);

    ha.signal(SIGTERM);
    assert_eq!(ha.code(SOON), 0, "{}", ha.log());
    let log = ha.log();
    let confirmed = line_of(&log, "consul: the peer reports master peer=edge-b");
    let stopped = line_of(&log, "stopping proxy");
    assert!(
        line_of(&log, "consul: waiting for the peer") < confirmed && confirmed < stopped,
        "the proxy was stopped before Consul showed b as master:\n{log}"
    );
    assert!(log.contains("decision=MoveConfirmed"), "{log}");
    assert_eq!(consul.tags("edge-b").unwrap(), ["master"]);
    assert!(consul.service("edge-a").is_none());
    hb.signal(SIGTERM);
    assert_eq!(hb.code(SOON), 0, "{}", hb.log());
}

#[test]
fn with_no_peer_reporting_master_the_stop_waits_failover_timeout_and_a_second_signal_skips() {
    for skip in [false, true] {
        let lab = Lab::new();
        let consul = Consul::start(&lab);
        let cluster = Cluster::new(&lab, 0);
        let config = cluster.config(
            &lab,
            "a",
            &section(&consul.addr(), "edge-a", "confirm_peer = true"),
        );
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("failover_timeout = \"5s\"", "failover_timeout = \"2s\"");
        std::fs::write(&config, text).unwrap();
        let mut h = lab.run(Some(&config), &lab.proxy(&[]));
        consul.wait_for_tag("edge-a", "master", SOON);
        // b takes the IP in the simulator, but no agent reports it to Consul.
        let start = Instant::now();
        h.signal(SIGTERM);
        h.wait_log("consul: waiting for the peer");
        if skip {
            h.signal(SIGTERM);
        }
        assert_eq!(h.code(SOON), 0, "{}", h.log());
        let took = start.elapsed();
        if skip {
            h.assert_logged("decision=WaitSkipped");
            assert!(
                took < Duration::from_secs(2),
                "the second signal did not skip: {took:?}"
            );
        } else {
            h.assert_logged("decision=MoveTimedOut");
            assert!(
                took >= Duration::from_secs(2),
                "stopped after {took:?}, before failover_timeout"
            );
        }
        assert!(!h.log().contains("the peer reports master"), "{}", h.log());
    }
}

/// A listener that accepts and never answers (the kernel completes the
/// handshake from the backlog; nobody reads). Dropped at the test's end.
fn hanging_listener() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

/// An HTTP server that answers 500 to everything, for at most 60 s.
fn failing_server() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    let mut buf = [0u8; 8192];
                    let _ = stream.read(&mut buf);
                    let _ = stream.write_all(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nConnection: close\r\n\r\nboom\n",
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    addr
}

/// Figures of one demote and one planned stop, in ms: the `demote`
/// command's run time; from SIGTERM to the proxy's SIGTERM; to the exit.
#[derive(Debug, Clone, Copy)]
struct Timings {
    demote: u128,
    stop: u128,
    exit: u128,
}

fn failover_timings(consul_addr: Option<&str>) -> Timings {
    let lab = Lab::new();
    let cluster = Cluster::new(&lab, 0);
    let extra = consul_addr.map_or_else(String::new, |addr| {
        section(addr, "edge-a", "confirm_peer = true")
    });
    let config = cluster.config(&lab, "a", &extra);
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("sim master a");

    let start = Instant::now();
    let (code, _, err) = output(lab.handoff_command(Some(&config)).arg("demote"));
    let demote = start.elapsed().as_millis();
    assert_eq!(code, 0, "{err}\n{}", h.log());
    let (code, _, err) = output(lab.handoff_command(Some(&config)).arg("promote"));
    assert_eq!(code, 0, "{err}");
    lab.wait_for_count("sim master a", 2);

    let signalled = common::now_ns();
    h.signal(SIGTERM);
    let stopped = lab.wait_for("signal SIGTERM").ns;
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    let exited = common::now_ns();
    Timings {
        demote,
        stop: u128::try_from((stopped - signalled) / 1_000_000).unwrap(),
        exit: u128::try_from((exited - signalled) / 1_000_000).unwrap(),
    }
}

#[test]
fn f07_consul_down_hanging_or_failing_delays_demote_and_stop_by_less_than_a_second() {
    let base = failover_timings(None);
    println!("without consul: {base:?}");
    let dead = common::free_ports::<1>()[0];
    let (_hanging, hanging) = hanging_listener();
    let failing = failing_server();
    for (what, addr) in [
        ("down", format!("127.0.0.1:{dead}")),
        ("hanging", hanging),
        ("answering 500", failing),
    ] {
        let t = failover_timings(Some(&addr));
        println!("consul {what}: {t:?}");
        for (step, with, without) in [
            ("demote", t.demote, base.demote),
            ("stop", t.stop, base.stop),
            ("exit", t.exit, base.exit),
        ] {
            assert!(
                with < without + 1000,
                "consul {what}: {step} took {with} ms, {without} ms without consul"
            );
        }
    }
}

#[test]
fn f07_registration_comes_back_when_consul_returns_and_when_it_forgets_us() {
    let lab = Lab::new();
    let mut consul = Consul::start(&lab);
    let cluster = Cluster::new(&lab, 0);
    let config = cluster.config(
        &lab,
        "a",
        &section(
            &consul.addr(),
            "edge-a",
            "deregister_critical_after = \"1m\"",
        ),
    );
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    consul.wait_for_tag("edge-a", "master", SOON);

    // Consul dies: the agent notices and keeps failing over without it.
    consul.kill();
    let deadline = Instant::now() + SOON;
    loop {
        let status = lab.status_json(&config);
        if status["consul"]["registered"] == false {
            assert!(status["consul"]["errors"].as_u64().unwrap() > 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never noticed: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A restarted dev agent has forgotten everything; the backoff (at most
    // 5 s) brings the registration back.
    consul.restart();
    let took = consul.wait_for_tag("edge-a", "master", Duration::from_secs(15));
    println!(
        "registration restored {} ms after consul had a leader",
        took.as_millis()
    );
    h.wait_log("consul: registration restored");

    // Removed behind its back: the next check update (ttl/3 = 1 s) gets a
    // non-2xx, and the agent registers again at once.
    let (code, body) = consul.request("PUT", "/v1/agent/service/deregister/edge-a", None);
    assert_eq!(code, 200, "{body}");
    let took = consul.wait_for_tag("edge-a", "master", Duration::from_secs(5));
    println!(
        "re-registered {} ms after the deregistration",
        took.as_millis()
    );

    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert!(consul.service("edge-a").is_none());
}

/// `GET /metrics` from the agent's HTTP endpoint (its logged address).
fn metrics(h: &Handoff) -> String {
    let request = "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n";
    let (code, body) = common::http_send(&h.http_address(), request).unwrap();
    assert_eq!(code, 200);
    body
}

#[test]
fn f12_two_masters_for_longer_than_two_ttls_warn_once_and_set_the_metric() {
    let lab = Lab::new();
    let consul = Consul::start(&lab);
    // Both nodes' backends say MASTER: a split brain as Consul sees it.
    // (Their stops wait for a move that never comes: keep that short.)
    let backend = lab.command_backend("MASTER\n", "failover_timeout = \"1s\"");
    let one = |id: &str| {
        format!(
            "{backend}[consul]\naddress = \"{}\"\nservice_id = \"{id}\"\nttl = \"1s\"\n\
             [control]\nsocket = \"{{dir}}/{id}.sock\"\nstate_dir = \"{{dir}}/{id}-state\"\n",
            consul.addr()
        )
    };
    let a = lab.config_named("a.toml", &one("edge-a"));
    let b = lab.config_named("b.toml", &one("edge-b"));
    let mut ha = run_node(&lab, &a, "a");
    let mut hb = run_node(&lab, &b, "b");
    consul.wait_for_tag("edge-a", "master", SOON);
    consul.wait_for_tag("edge-b", "master", SOON);
    // Live masters (passing, after the 1 s start-up gate) for 2 x ttl.
    let both = Instant::now();
    ha.wait_log("consul: split brain: more than one node is tagged master");
    let after = both.elapsed();
    println!(
        "split brain reported {} ms after both were tagged master",
        after.as_millis()
    );
    assert!(
        after >= Duration::from_millis(1900),
        "warned before 2 x ttl: {after:?}"
    );
    assert!(
        metrics(&ha).contains("handoff_split_brain 1"),
        "{}",
        metrics(&ha)
    );
    let status = lab.status_json(&a);
    assert_eq!(status["consul"]["split_brain"], true, "{status:#}");

    // One leaves: the episode is over, and the metric says so.
    hb.signal(SIGTERM);
    assert_eq!(hb.code(SOON), 0, "{}", hb.log());
    ha.wait_log("consul: split brain over");
    assert!(metrics(&ha).contains("handoff_split_brain 0"));
    assert_eq!(
        ha.log()
            .matches("consul: split brain: more than one")
            .count(),
        1,
        "one warning per episode:\n{}",
        ha.log()
    );
    ha.signal(SIGTERM);
    assert_eq!(ha.code(SOON), 0, "{}", ha.log());
}

#[test]
fn with_acls_a_service_write_token_works_and_a_bad_one_is_named_but_never_printed() {
    let lab = Lab::new();
    let consul = Consul::start_with_acls(&lab);
    let rules = r#"service \"edge\" { policy = \"write\" } node_prefix \"\" { policy = \"read\" }"#;
    let (code, body) = consul.request(
        "PUT",
        "/v1/acl/policy",
        Some(&format!(r#"{{"Name":"edge-writer","Rules":"{rules}"}}"#)),
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = consul.request(
        "PUT",
        "/v1/acl/token",
        Some(r#"{"Description":"handoff","Policies":[{"Name":"edge-writer"}]}"#),
    );
    assert_eq!(code, 200, "{body}");
    let token: serde_json::Value = serde_json::from_str(&body).unwrap();
    let secret = token["SecretID"].as_str().unwrap().to_owned();
    std::fs::write(lab.path("consul.token"), format!("{secret}\n")).unwrap();

    // The narrow token, from a token file: registered, tagged, passing.
    let extra = "token_file = \"{dir}/consul.token\"";
    let config = lab.config(&format!(
        "{}{}",
        section(&consul.addr(), "edge-a", extra),
        "[failover]\nbackend = \"none\"\n"
    ));
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    consul.wait_until("registered", SOON, |c| c.service("edge-a").is_some());
    consul.wait_until("passing", SOON, |c| {
        c.check_status("edge-a").as_deref() == Some("passing")
    });
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert!(
        !h.log().contains(&secret),
        "the token was logged:\n{}",
        h.log()
    );

    // A token Consul does not know, from the environment: a clear error
    // naming where it came from, in the log and in status, never the token.
    let bad = "deadbeef-0000-4000-8000-00000000bad0";
    let config = lab.config_named(
        "bad.toml",
        &format!(
            "{}{}",
            section(&consul.addr(), "edge-bad", ""),
            "[failover]\nbackend = \"none\"\n"
        ),
    );
    let mut cmd = lab.agent_command(Some(&config));
    cmd.env("CONSUL_HTTP_TOKEN", bad)
        .arg("run")
        .arg("--")
        .args(lab.proxy(&[]));
    let mut h = Handoff::spawn(cmd, lab.path("bad.stderr"));
    h.wait_log("consul: cannot report this node's role");
    // The second proxy's handlers are in place (a SIGTERM before would
    // kill it by the default action).
    lab.wait_for_count("start", 2);
    let log = h.log();
    assert!(log.contains("403"), "{log}");
    assert!(
        log.contains("the token from CONSUL_HTTP_TOKEN is refused"),
        "{log}"
    );
    let (code, text, _) = output(lab.handoff_command(Some(&config)).arg("status"));
    assert_eq!(code, 0);
    assert!(
        text.contains("not registered") && text.contains("403"),
        "{text}"
    );
    let (_, json, _) = output(
        lab.handoff_command(Some(&config))
            .args(["status", "--json"]),
    );
    h.signal(SIGTERM);
    assert_eq!(
        h.code(SOON),
        0,
        "a refusing Consul must not fail the agent: {}",
        h.log()
    );
    for shown in [h.log(), text, json] {
        assert!(!shown.contains(bad), "the token was shown:\n{shown}");
    }
    assert!(consul.service("edge-bad").is_none());
}

#[test]
fn bad_consul_settings_are_config_errors_that_name_their_place() {
    let lab = Lab::new();
    // In the file: file:line:col.
    let config = lab.config("[consul]\naddress = \"ftp://127.0.0.1:8500\"\n");
    let (code, _, err) = output(lab.handoff_command(Some(&config)).arg("check"));
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("handoff.toml:2:11: `ftp://127.0.0.1:8500`: scheme `ftp`"),
        "{err}"
    );
    let config = lab.config("[consul]\nttl = \"10s\"\nderegister_critical_after = \"30s\"\n");
    let (code, _, err) = output(lab.handoff_command(Some(&config)).arg("check"));
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("at least 1m"), "{err}");

    // From the environment: the variable; a token file: the file. `check`
    // and `run` agree, and no proxy is started.
    let config = lab.config("[consul]\n");
    for (var, value, want) in [
        ("CONSUL_HTTP_ADDR", "http://", "CONSUL_HTTP_ADDR: `http://`"),
        (
            "CONSUL_HTTP_TOKEN_FILE",
            "/nonexistent/token",
            "CONSUL_HTTP_TOKEN_FILE /nonexistent/token: cannot read the token",
        ),
        (
            "CONSUL_HTTP_SSL_VERIFY",
            "maybe",
            "CONSUL_HTTP_SSL_VERIFY: `maybe` is not true or false",
        ),
        (
            "CONSUL_CACERT",
            "/nonexistent/ca.pem",
            "consul: /nonexistent/ca.pem: No such file",
        ),
    ] {
        for sub in [&["check"][..], &["run", "--", "true"][..]] {
            let (code, _, err) = output(
                lab.handoff_command(Some(&config))
                    .env("CONSUL_HTTP_ADDR", "https://127.0.0.1:8501")
                    .env(var, value)
                    .args(sub),
            );
            assert_eq!(code, 78, "{var}={value} {sub:?}: {err}");
            assert!(err.contains(want), "{var}={value} {sub:?}: {err}");
        }
    }
    assert!(!lab.log.exists(), "a proxy was started");
}

/// Runs an agent with `env` until Consul has registered it or it reports
/// an error; returns the status's `consul` object.
fn consul_outcome(lab: &Lab, name: &str, section: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let config = lab.config_named(
        &format!("{name}.toml"),
        &format!(
            "{section}[failover]\nbackend = \"none\"\n[control]\nsocket = \"{{dir}}/{name}.sock\"\nstate_dir = \"{{dir}}/{name}-state\"\n"
        ),
    );
    let mut cmd = lab.agent_command(Some(&config));
    cmd.envs(env.iter().copied())
        .arg("run")
        .arg("--")
        .args(lab.proxy(&[]));
    let started = lab.count("start");
    let mut h = Handoff::spawn(cmd, lab.path(&format!("{name}.stderr")));
    // Its proxy's handlers are in place before it is stopped.
    lab.wait_for_count("start", started + 1);
    let deadline = Instant::now() + SOON;
    let consul = loop {
        let (code, out, _) = output(
            lab.handoff_command(Some(&config))
                .args(["status", "--json"]),
        );
        if code == 0 {
            let status: serde_json::Value = serde_json::from_str(&out).unwrap();
            let c = status["consul"].clone();
            if c["registered"] == true || c["last_error"].is_string() {
                break c;
            }
        }
        assert!(Instant::now() < deadline, "{name}: no outcome: {}", h.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{name}: {}", h.log());
    consul
}

/// A CA, a server certificate (server.dc1.consul, localhost, 127.0.0.1)
/// and a client certificate, made by Consul's own `consul tls`.
fn make_certificates(dir: &std::path::Path) {
    for args in [
        &["tls", "ca", "create"][..],
        &["tls", "cert", "create", "-server"],
        &["tls", "cert", "create", "-client"],
    ] {
        let out = std::process::Command::new(common::consul::binary())
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "consul {args:?}: {out:?}");
    }
}

#[test]
fn https_with_the_consul_tls_variables() {
    let lab = Lab::new();
    let dir = lab.dir.path();
    make_certificates(dir);
    let file = |name: &str| dir.join(name).display().to_string();
    let [https] = common::free_ports::<1>();
    let hcl = format!(
        "ports {{ https = {https} }} ca_file = \"{}\" cert_file = \"{}\" key_file = \"{}\" verify_incoming_https = true",
        file("consul-agent-ca.pem"),
        file("dc1-server-consul-0.pem"),
        file("dc1-server-consul-0-key.pem")
    );
    let _consul = Consul::start_with(&lab, Some(hcl), None);
    let ca = file("consul-agent-ca.pem");
    let cert = file("dc1-client-consul-0.pem");
    let key = file("dc1-client-consul-0-key.pem");
    let addr = format!("https://127.0.0.1:{https}");
    let section = |id: &str| format!("[consul]\nservice_id = \"{id}\"\nttl = \"3s\"\n");
    let base = [
        ("CONSUL_HTTP_ADDR", addr.as_str()),
        ("CONSUL_CACERT", ca.as_str()),
        ("CONSUL_CLIENT_CERT", cert.as_str()),
        ("CONSUL_CLIENT_KEY", key.as_str()),
    ];
    let ok = |c: &serde_json::Value| c["registered"] == true;
    let error = |c: &serde_json::Value| c["last_error"].as_str().unwrap_or("").to_owned();

    let c = consul_outcome(&lab, "tls", &section("tls"), &base);
    assert!(ok(&c), "CA and client certificate: {c:#}");
    let c = consul_outcome(
        &lab,
        "sni",
        &section("sni"),
        &[
            &base[..],
            &[("CONSUL_TLS_SERVER_NAME", "server.dc1.consul")],
        ]
        .concat(),
    );
    assert!(ok(&c), "the server name in the certificate: {c:#}");
    let c = consul_outcome(
        &lab,
        "wrongname",
        &section("wrongname"),
        &[
            &base[..],
            &[("CONSUL_TLS_SERVER_NAME", "elsewhere.example")],
        ]
        .concat(),
    );
    println!("a name not in the certificate: {}", error(&c));
    assert!(
        !ok(&c) && error(&c).contains("certificate"),
        "a name not in the certificate: {c:#}"
    );
    let c = consul_outcome(&lab, "noclient", &section("noclient"), &base[..2]);
    println!("without a client certificate: {}", error(&c));
    assert!(
        !ok(&c),
        "verify_incoming_https without a client certificate: {c:#}"
    );
    let c = consul_outcome(&lab, "noca", &section("noca"), &[base[0], base[2], base[3]]);
    assert!(
        !ok(&c) && error(&c).contains("certificate"),
        "the system roots do not know Consul's CA: {c:#}"
    );
    let c = consul_outcome(
        &lab,
        "noverify",
        &section("noverify"),
        &[
            base[0],
            base[2],
            base[3],
            ("CONSUL_HTTP_SSL_VERIFY", "false"),
        ],
    );
    assert!(ok(&c), "CONSUL_HTTP_SSL_VERIFY=false: {c:#}");
    // The config file beats the environment.
    let c = consul_outcome(
        &lab,
        "fileverify",
        &format!("{}ssl_verify = false\n", section("fileverify")),
        &[
            base[0],
            base[2],
            base[3],
            ("CONSUL_HTTP_SSL_VERIFY", "true"),
        ],
    );
    assert!(
        ok(&c),
        "[consul] ssl_verify = false over the variable: {c:#}"
    );
}

#[test]
fn a_node_whose_proxy_is_unhealthy_is_fault_and_critical() {
    let lab = Lab::new();
    let consul = Consul::start(&lab);
    let cluster = Cluster::new(&lab, 0);
    let health = "[proxy.health]\nexec = [\"false\"]\ninterval = \"50ms\"\ntimeout = \"40ms\"\n";
    let config = cluster.config(
        &lab,
        "a",
        &format!("{health}{}", section(&consul.addr(), "edge-a", "")),
    );
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    lab.wait_for("start");
    consul.wait_for_tag("edge-a", "fault", SOON);
    consul.wait_until("critical", SOON, |c| {
        c.check_status("edge-a").as_deref() == Some("critical")
    });
    let meta = consul.service("edge-a").unwrap()["Meta"].clone();
    assert_eq!(meta["level"], "down");
    assert_eq!(meta["demoted"], "true");
    h.signal(SIGTERM);
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert!(consul.service("edge-a").is_none());
}
