//! Consul reporting against a real Consul agent (1.8.7, `consul agent
//! -dev` on loopback; see tests/common/consul.rs): registration, role tags,
//! meta and TTL check follow the role; peer confirmation; ACLs; split
//! brain; and Consul being down, hanging or failing never slows a failover
//! by more than a second.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{Lab, SOON, carp_sim::Cluster, consul::Consul, output};
use nix::sys::signal::Signal::SIGTERM;

/// A `[consul]` section for the agent at `addr`.
fn section(addr: &str, id: &str, extra: &str) -> String {
    format!(
        "[consul]\naddress = \"{addr}\"\nservice = \"edge\"\nservice_id = \"{id}\"\nttl = \"3s\"\n{extra}\n"
    )
}

fn status_json(lab: &Lab, config: &std::path::Path) -> serde_json::Value {
    let (code, out, err) = output(lab.handoff_command(Some(config)).args(["status", "--json"]));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
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
    let status = status_json(&lab, &config);
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
    assert_eq!(consul.check_status("edge-a").as_deref(), Some("warning"));
    assert_eq!(h.code(SOON), 0, "{}", h.log());
    assert!(
        consul.service("edge-a").is_none(),
        "still registered after a clean exit"
    );
    h.assert_logged("consul: deregistered");
}
