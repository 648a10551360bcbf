//! The monitoring kit as shipped: the Prometheus alert rules pass
//! `promtool check rules`, and their `promtool test rules` file fires every
//! alert and keeps each quiet where it should be; every alert links to a
//! runbook section that exists; and every metric the rules, their test
//! series and the Grafana dashboard name is one a running handoff exports,
//! read from its live /metrics (so a renamed metric breaks this test, not an
//! operator's alerting).

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::{collections::BTreeSet, process::Command};

use common::{Lab, SOON, have, http_send, output, repo};
use nix::sys::signal::Signal::SIGTERM;

const RULES: &str = "config/prometheus/handoff.rules.yml";
const RULE_TESTS: &str = "config/prometheus/handoff.rules.test.yml";
const DASHBOARD: &str = "config/grafana/handoff.json";

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The alert names of the rules file, in order.
fn alerts() -> Vec<String> {
    read(RULES)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn promtool_checks_the_rules_and_every_alert_fires_and_stays_quiet_as_tested() {
    if !have("promtool") {
        return;
    }
    let dir = repo("config/prometheus");
    let (code, out, err) = output(Command::new("promtool").current_dir(&dir).args([
        "check",
        "rules",
        "handoff.rules.yml",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let alerts = alerts();
    assert!(alerts.len() >= 9, "{alerts:?}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{out}"
    );
    let (code, out, err) = output(Command::new("promtool").current_dir(&dir).args([
        "test",
        "rules",
        "handoff.rules.test.yml",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("SUCCESS"), "{out}");

    // Each alert has an evaluation where it fires (exp_alerts with
    // entries) and one where it must not (exp_alerts: []).
    let tests = read(RULE_TESTS);
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for alert in &alerts {
        let (mut fires, mut quiet) = (false, false);
        for (i, line) in lines.iter().enumerate() {
            if *line != format!("alertname: {alert}") {
                continue;
            }
            match lines.get(i + 1) {
                Some(&"exp_alerts: []") => quiet = true,
                Some(&"exp_alerts:") => fires = true,
                other => panic!("{alert}: alertname not followed by exp_alerts: {other:?}"),
            }
        }
        assert!(
            fires && quiet,
            "{alert}: fires tested {fires}, quiet tested {quiet}"
        );
    }
}

/// GitHub's anchor of a Markdown heading: lower case, spaces to dashes,
/// punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_has_a_summary_and_a_runbook_section_in_operations_md() {
    let rules = read(RULES);
    let operations = read("docs/operations.md");
    let anchors: BTreeSet<String> = operations
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    let alerts = alerts();
    for (alert, block) in alerts.iter().zip(rules.split("- alert: ").skip(1)) {
        assert!(block.contains("summary: \""), "{alert} has no summary");
        assert!(
            block.contains("severity: critical") || block.contains("severity: warning"),
            "{alert} has no severity"
        );
        let want = format!(
            "runbook_url: \"docs/operations.md#{}\"",
            alert.to_lowercase()
        );
        assert!(block.contains(&want), "{alert}: no {want}");
        assert!(
            anchors.contains(&alert.to_lowercase()),
            "docs/operations.md has no heading `{alert}` for the runbook link"
        );
    }
}

/// Every `handoff_*` name in `text` (label names and values never start
/// with it; alert names are CamelCase).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("handoff_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The sample names a live /metrics offers: each family by its type
/// (a counter's `_total`, a histogram's `_bucket`, `_sum` and `_count`, an
/// info's `_info`), and every sample line's own name.
fn exported(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                "info" => {
                    names.insert(format!("{name}_info"));
                }
                _ => {
                    names.insert(name.to_owned());
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// Every PromQL expression of the dashboard: panel targets, annotations
/// and template variable queries, at any depth.
fn dashboard_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains('(') => {
                        out.push(s.clone());
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                dashboard_queries(v, out);
            }
        }
        _ => {}
    }
}

/// /metrics of a running agent (backend none, a fixture proxy, a hook and
/// a duty that never run: their series exist from the start, at 0).
fn live_metrics() -> String {
    let lab = Lab::new();
    let config = lab.config(
        "[hooks.on_fault]\ncommand = [\"/bin/true\"]\n\
         [[duty]]\nname = \"renew\"\ncommand = [\"/bin/true\"]\nevery = \"1h\"\n",
    );
    let mut h = lab.run(Some(&config), &lab.proxy(&[]));
    let addr = h.http_address();
    let (code, body) = http_send(
        &addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("/metrics answers");
    assert_eq!(code, 200, "{body}");
    h.wait_until_blocked();
    h.signal(SIGTERM);
    h.code(SOON);
    body
}

#[test]
fn every_metric_the_rules_their_tests_and_the_dashboard_name_is_exported() {
    let metrics = live_metrics();
    let exported = exported(&metrics);
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 15, "{queries:#?}");
    let mut used = BTreeSet::new();
    for query in &queries {
        let names = metric_names(query);
        assert!(
            !names.is_empty(),
            "a dashboard query without a handoff metric: {query}"
        );
        used.extend(names);
    }
    // What the dashboard must show (issue: role per node, failover
    // durations, demotions and maintenance, restarts, Consul, split brain).
    for want in [
        "handoff_role",
        "handoff_failover_seconds_bucket",
        "handoff_stop_budget_seconds",
        "handoff_demoted",
        "handoff_maintenance",
        "handoff_proxy_up",
        "handoff_proxy_restarts_total",
        "handoff_consul_errors_total",
        "handoff_split_brain",
        "handoff_info",
    ] {
        assert!(used.contains(want), "the dashboard never shows {want}");
    }
    for (what, names) in [
        (DASHBOARD, used),
        (RULES, metric_names(&read(RULES))),
        (RULE_TESTS, metric_names(&read(RULE_TESTS))),
    ] {
        let unknown: Vec<&String> = names.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} names metrics handoff does not export: {unknown:?}\nexported: {exported:?}"
        );
    }
    // Panels: unique ids, each with a title and the data source variable.
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "duplicate panel ids");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert!(
            panel["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{panel}"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
    }
}

#[test]
fn handoff_8_lists_every_metric_family_handoff_exports() {
    let metrics = live_metrics();
    let documented = metric_names(&read("docs/handoff.8"));
    let families: BTreeSet<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_whitespace().next().unwrap())
        .map(|name| match name {
            // An info family is named with its sample's suffix.
            "handoff" => "handoff_info".to_owned(),
            "handoff_build" => "handoff_build_info".to_owned(),
            name => name.to_owned(),
        })
        .collect();
    assert!(families.len() >= 18, "{families:?}");
    let missing: Vec<&String> = families.difference(&documented).collect();
    assert!(missing.is_empty(), "handoff(8) METRICS lacks {missing:?}");
}

#[test]
fn handoff_info_and_the_stop_budget_describe_the_node_as_check_does() {
    let metrics = live_metrics();
    assert!(
        metrics.contains(
            "handoff_info{service=\"edge\",vip=\"\",backend=\"none\",several_masters=\"false\"} 1\n"
        ),
        "{metrics}"
    );
    // The duty never ran (the node is no master here), and its series are
    // there, at zero, for every result.
    for result in ["ok", "failed", "timeout", "stopped"] {
        let series = format!("handoff_duty_runs_total{{duty=\"renew\",result=\"{result}\"}} 0\n");
        assert!(metrics.contains(&series), "no {series}in {metrics}");
    }
    // The budget `handoff check` prints for the same config (the hook and
    // the duty are not in it).
    let lab = Lab::new();
    let (code, out, err) = output(lab.agent_command(None).arg("check"));
    assert_eq!(code, 0, "{err}");
    let text = format!("{out}{err}");
    let budget = text
        .lines()
        .find_map(|l| l.strip_prefix("stop budget "))
        .and_then(|l| l.split(" = ").next())
        .unwrap_or_else(|| panic!("no stop budget in: {text}"));
    let budget = humantime::parse_duration(budget).unwrap().as_secs_f64();
    let gauge = metrics
        .lines()
        .find_map(|l| l.strip_prefix("handoff_stop_budget_seconds "))
        .unwrap_or_else(|| panic!("no handoff_stop_budget_seconds in: {metrics}"));
    assert!(
        (gauge.parse::<f64>().unwrap() - budget).abs() < 1e-9,
        "gauge {gauge}, check {budget}"
    );
}
