//! Config parsing: every error names its line and column and says what was
//! expected; presets yield to explicit keys.

use std::path::Path;

use nix::sys::signal::Signal;

use super::*;

fn parse_ok(text: &str) -> Config {
    read(Path::new("handoff.toml"), text).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(text: &str) -> String {
    read(Path::new("handoff.toml"), text)
        .expect_err("should be rejected")
        .to_string()
}

#[test]
fn empty_file_is_all_defaults() {
    let c = parse_ok("");
    assert_eq!(c.failover.backend(), BackendKind::None);
    assert_eq!(c.proxy.stop_signal(), Signal::SIGTERM);
    assert_eq!(c.proxy.stop_timeout, Duration::from_secs(10));
    assert_eq!(c.failover.failover_timeout, Duration::from_secs(10));
    assert_eq!(c.proxy.process_group, ProcessGroup::Inherit);
    assert_eq!(c.proxy.restart, RestartPolicy::Never);
    assert_eq!(
        c.control.socket,
        Path::new(crate::platform::DEFAULT_SOCKET),
        "the socket has a directory of its own"
    );
}

#[test]
fn presets_and_explicit_overrides() {
    let caddy = Argv(
        ["caddy", "run", "--config", "/e/Caddyfile"]
            .map(String::from)
            .to_vec(),
    );
    let caddy_reload = Argv(
        ["caddy", "reload", "--config", "/e/Caddyfile", "--force"]
            .map(String::from)
            .to_vec(),
    );
    let cases = [
        ("traefik", Signal::SIGTERM, ReloadSend::Disabled),
        ("nginx", Signal::SIGQUIT, ReloadSend::Signal(Signal::SIGHUP)),
        (
            "haproxy",
            Signal::SIGUSR1,
            ReloadSend::Signal(Signal::SIGUSR2),
        ),
        ("caddy", Signal::SIGTERM, ReloadSend::Command(caddy_reload)),
        (
            "generic",
            Signal::SIGTERM,
            ReloadSend::Signal(Signal::SIGHUP),
        ),
    ];
    for (preset, stop, reload) in cases {
        let c = parse_ok(&format!("[proxy]\npreset = \"{preset}\"\n"));
        assert_eq!(
            (c.proxy.stop_signal(), c.proxy.reload().plan(&caddy).send),
            (stop, reload),
            "{preset}"
        );
    }
    let c =
        parse_ok("[proxy]\npreset = \"nginx\"\nstop_signal = \"TERM\"\nreload_signal = \"drop\"\n");
    assert_eq!(c.proxy.stop_signal(), Signal::SIGTERM);
    assert_eq!(c.proxy.reload().plan(&caddy).send, ReloadSend::Disabled);
    let c = parse_ok("[proxy]\npreset = \"traefik\"\nreload_signal = 10\n");
    assert_eq!(
        c.proxy.reload().plan(&caddy).send,
        ReloadSend::Signal(Signal::SIGUSR1)
    );
    let c = parse_ok(
        "[proxy]\npreset = \"caddy\"\nreload_check = []\nreload_confirm = [\"ready\"]\n\
         reload_timeout = \"3s\"\n",
    );
    let plan = c.proxy.reload().plan(&caddy);
    assert_eq!(plan.check, None, "[] turns the preset's check off");
    assert_eq!(plan.confirm.list(), [Confirm::Ready]);
    assert_eq!(plan.timeout, Duration::from_secs(3));
}

#[test]
fn durations_signals_and_maps() {
    let c = parse_ok(
        "[proxy]\nstop_timeout = \"1.5s\"\nstop_signal = 15\nexit_code_map = { 143 = 0, 130 = 0 }\n\
         [failover]\nsettle = \"250ms\"\nfailover_timeout = \"2m\"\n",
    );
    assert_eq!(c.proxy.stop_timeout, Duration::from_millis(1500));
    assert_eq!(c.failover.settle, Duration::from_millis(250));
    assert_eq!(c.failover.failover_timeout, Duration::from_secs(120));
    assert_eq!(c.proxy.stop_signal(), Signal::SIGTERM);
    assert_eq!(c.proxy.exit_code_map.apply(143), 0);
    assert_eq!(c.proxy.exit_code_map.apply(1), 1);
}

#[test]
fn the_spec_example_parses() {
    let c = parse_ok(
        r#"
[proxy]
command = ["traefik", "--configfile", "local/traefik.yml"]
preset = "traefik"
reload_signal = "SIGHUP"
stop_signal = "SIGTERM"
stop_timeout = "10s"
process_group = "inherit"
exit_code_map = { 143 = 0 }
restart = "never"
[proxy.health]
http = "http://127.0.0.1:8080/ping"
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2

[failover]
backend = "carp"
failover_timeout = "10s"
settle = "0s"
probe = "tcp://192.0.2.10:443"

[failover.carp]
group = "edge"
interfaces = ["carp0"]
demote_by = 50
ifconfig = "/sbin/ifconfig"
boot_marker = "/var/run/handoff.boot"

[consul]
address = "http://127.0.0.1:8500"
token_file = "/etc/handoff/consul.token"
service = "edge"
service_id = "edge-${hostname}"
ttl = "10s"
confirm_peer = true

[control]
socket = "/var/run/handoff/handoff.sock"
group = "root"
state_dir = "/var/db/handoff"

[http]
listen = "127.0.0.1:9480"

[log]
format = "text"
level = "info"
"#,
    );
    assert_eq!(c.failover.backend(), BackendKind::Carp);
    assert_eq!(c.failover.probe, Some(Probe::Tcp("192.0.2.10:443".into())));
}

/// (config text, expected "line:col", a phrase the message must contain)
const REJECTED: &[(&str, &str, &str)] = &[
    (
        "[proxy]\nstop_timout = \"5s\"\n",
        "2:1",
        "unknown field `stop_timout`",
    ),
    (
        "[proxy]\nstop_timeout = \"5 parsecs\"\n",
        "2:16",
        "unknown time unit",
    ),
    ("[proxy]\nstop_timeout = 5\n", "2:16", "invalid type"),
    (
        "[proxy]\nstop_signal = \"SIGNOPE\"\n",
        "2:15",
        "unknown signal `SIGNOPE`",
    ),
    ("[proxy]\nstop_signal = 99\n", "2:15", "not a signal number"),
    (
        "[proxy]\nreload_signal = \"maybe\"\n",
        "2:17",
        "or \"drop\"",
    ),
    ("[proxy]\ncommand = []\n", "2:11", "empty command"),
    (
        "[proxy]\nreload_command = [\"caddy\", \"reload\"]\nreload_signal = \"HUP\"\n",
        "2:18",
        "reload_command and reload_signal are both set",
    ),
    (
        "[proxy]\nreload_check = [\"\"]\n",
        "2:16",
        "reload_check has an empty program name",
    ),
    (
        "[proxy]\nreload_confirm = [\"ready\", \"bogus\"]\n",
        "2:28",
        "unknown variant `bogus`, expected one of `ready`, `workers`, `retired`, `health`",
    ),
    (
        "[proxy]\nreload_confirm = [\"health\"]\n",
        "2:18",
        "no [proxy.health] check",
    ),
    (
        "[proxy]\nreload_timeout = \"0s\"\n",
        "2:18",
        "a reload cannot take no time",
    ),
    (
        "[proxy]\nreload_timeout = \"1h\"\n",
        "2:18",
        "longer than the ceiling of 10m",
    ),
    ("[proxy]\ncommand = \"nginx\"\n", "2:11", "invalid type"),
    (
        "[proxy]\npreset = \"apache\"\n",
        "2:10",
        "unknown variant `apache`",
    ),
    (
        "[proxy]\nprocess_group = \"mine\"\n",
        "2:17",
        "expected `inherit` or `own`",
    ),
    (
        "[proxy]\nrestart = \"sometimes\"\n",
        "2:11",
        "unknown variant",
    ),
    (
        "[proxy]\nexit_code_map = { 300 = 0 }\n",
        "2:17",
        "not an exit status",
    ),
    (
        "[proxy.health]\nhttp = \"http://x/\"\ntcp = \"x:1\"\n",
        "1:1",
        "exactly one of http, tcp or exec",
    ),
    (
        "[proxy.health]\ntcp = \"nohost\"\n",
        "2:7",
        "is not host:port",
    ),
    (
        "[proxy.health]\ntcp = \"x:1\"\nrise = 0\n",
        "3:8",
        "nonzero",
    ),
    (
        "[failover]\nbackend = \"vrrp\"\n",
        "2:11",
        "unknown variant `vrrp`",
    ),
    (
        "[failover]\nprobe = \"ftp://x\"\n",
        "2:9",
        "no known scheme",
    ),
    ("[failover]\nprobe = \"https://x/\"\n", "2:9", "plain HTTP"),
    (
        "[failover]\nbackend = \"command\"\n",
        "2:11",
        "needs a [failover.command]",
    ),
    (
        "[failover.carp]\ngroup = \"edge\"\n",
        "1:1",
        "backend = \"carp\"",
    ),
    (
        "[failover]\nbackend = \"carp\"\n[failover.carp]\ndemote_by = 200\n",
        "4:13",
        "1..128",
    ),
    (
        "[failover]\nbackend = \"command\"\n[failover.command]\ndemote = [\"x\"]\npromote = [\"y\"]\n",
        "3:1",
        "missing field `state`",
    ),
    (
        "[failover]\nbackend = \"keepalived\"\n[failover.keepalived]\nstandby_value = 10\n",
        "3:1",
        "must be negative",
    ),
    (
        "[failover]\nbackend = \"keepalived\"\n[failover.keepalived]\nvip = [\"not-an-ip\"]\n",
        "4:8",
        "invalid IP",
    ),
    (
        "[control]\ngroup = \"no-such-group-xyz\"\n",
        "2:9",
        "does not exist",
    ),
    (
        "[failover]\nbackend = \"bgp\"\n",
        "2:11",
        "needs a [failover.bgp] section",
    ),
    (
        "[failover]\nbackend = \"bgp\"\n[failover.bgp]\nsessions = [\"uplink\"]\n",
        "3:1",
        "prefixes is empty",
    ),
    (
        "[failover]\nbackend = \"bgp\"\n[failover.bgp]\nprefixes = [\"192.0.2.53/24\"]\n",
        "4:12",
        "host bits set",
    ),
    (
        "[failover]\nbackend = \"bgp\"\n[failover.bgp]\nprefixes = [\"192.0.2.53/32\"]\nsessions = [\"up link\"]\n",
        "5:12",
        "not a BIRD protocol name",
    ),
    (
        "[failover]\nbackend = \"bgp\"\n[failover.bgp]\nprefixes = [\"192.0.2.53/32\"]\nstandby_protocol = \"handoff_up\"\n",
        "3:1",
        "standby needs a protocol of its own",
    ),
    (
        "[failover]\nbackend = \"bgp\"\n[failover.bgp]\nprefixes = [\"192.0.2.53/32\"]\n[[duty]]\nname = \"renew\"\ncommand = [\"true\"]\nevery = \"1h\"\n",
        "6:8",
        "several masters at once",
    ),
    ("[http]\nlisten = \"localhost\"\n", "2:10", "is not ip:port"),
    ("[log]\nlevel = \"infoo\"\n", "2:9", "is not a level"),
    ("[log]\nlevel = \"handoff=loud\"\n", "2:9", "log level"),
    ("[log]\nformat = \"xml\"\n", "2:10", "unknown variant"),
    ("[bogus]\n", "1:2", "unknown field `bogus`"),
    (
        "[proxy.health]\ntcp = \"x:1\"\ninterval = \"0s\"\n",
        "1:1",
        "must be more than 0",
    ),
    (
        "[failover]\nbackend = \"command\"\n[failover.command]\ndemote = [\"a\"]\npromote = [\"b\"]\nstate = [\"c\"]\ntimeout = \"0s\"\n",
        "3:1",
        "must be more than 0",
    ),
    // Every duration key has a ceiling (one day; 30 days for
    // deregister_critical_after): beyond it, a typo, or an Instant overflow
    // in the running agent.
    (
        "[failover]\nfailover_timeout = \"100000years\"\n",
        "2:20",
        "longer than the ceiling of 1day",
    ),
    (
        "[failover]\nsettle = \"25h\"\n",
        "2:10",
        "longer than the ceiling",
    ),
    (
        "[proxy]\nstop_timeout = \"2days\"\n",
        "2:16",
        "longer than the ceiling",
    ),
    (
        "[proxy.health]\ntcp = \"x:1\"\ninterval = \"1000000h\"\n",
        "3:12",
        "longer than the ceiling",
    ),
    (
        "[proxy.health]\ntcp = \"x:1\"\ntimeout = \"86401s\"\n",
        "3:11",
        "longer than the ceiling",
    ),
    (
        "[failover]\nbackend = \"command\"\n[failover.command]\ndemote = [\"a\"]\npromote = [\"b\"]\nstate = [\"c\"]\ntimeout = \"1y\"\n",
        "7:11",
        "longer than the ceiling",
    ),
    ("[consul]\nttl = \"2d\"\n", "2:7", "longer than the ceiling"),
    (
        "[consul]\nderegister_critical_after = \"31days\"\n",
        "2:29",
        "longer than the ceiling of 30days",
    ),
    (
        "[failover]\nbackend = \"carp\"\n[failover.carp]\ninterfaces = []\n",
        "4:14",
        "interfaces is empty",
    ),
    (
        "[failover]\nbackend = \"carp\"\n[failover.carp]\ninterfaces = [\"carp0\", \"\"]\n",
        "4:14",
        "empty name",
    ),
    ("[proxy\n", "1:7", ""),
    // keep_env: names only of what handoff strips, each refused where it stands.
    (
        "[proxy]\nkeep_env = [\"CONSUL_HTTP_TOKEN\", \"\"]\n",
        "2:34",
        "keep_env has an empty name",
    ),
    (
        "[proxy]\nkeep_env = [\"CONSUL_HTTP_TOKEN=abc\"]\n",
        "2:13",
        "contains `=`",
    ),
    (
        "[proxy]\nkeep_env = [\"CONSUL_HTTP_ADDR\"]\n",
        "2:13",
        "is not a variable handoff strips",
    ),
    (
        "[proxy]\nkeep_env = \"CONSUL_HTTP_TOKEN\"\n",
        "2:12",
        "expected a sequence",
    ),
];

#[test]
fn durations_up_to_their_ceiling_are_accepted() {
    let c = parse_ok(
        "[proxy]\nstop_timeout = \"24h\"\n[failover]\nfailover_timeout = \"1day\"\nsettle = \"86400s\"\n\
         [consul]\nttl = \"24h\"\nderegister_critical_after = \"30days\"\n",
    );
    assert_eq!(c.proxy.stop_timeout, DURATION_CEILING);
    assert_eq!(c.failover.failover_timeout, DURATION_CEILING);
    let consul = c.consul.expect("consul");
    assert_eq!(
        consul.get_ref().deregister_critical_after,
        Some(Duration::from_secs(30 * 86400))
    );
}

#[test]
fn every_rejection_names_line_and_column() {
    for (text, place, phrase) in REJECTED {
        let message = parse_err(text);
        assert!(
            message.starts_with(&format!("handoff.toml:{place}: ")),
            "{text:?}: expected place {place}, got: {message}"
        );
        assert!(
            message.contains(phrase),
            "{text:?}: expected {phrase:?} in: {message}"
        );
    }
}

#[test]
fn several_cross_key_problems_are_reported_together() {
    let message = parse_err(
        "[failover.carp]\n[failover.command]\ndemote=[\"a\"]\npromote=[\"b\"]\nstate=[\"c\"]\n",
    );
    assert_eq!(message.lines().count(), 2, "{message}");
}

#[test]
fn missing_default_file_means_defaults_but_a_named_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let loaded = load(&Location::Default(missing.clone())).unwrap();
    assert!(loaded.path.is_none());
    let err = load(&Location::Explicit(missing)).unwrap_err().to_string();
    assert!(err.contains("nope.toml: cannot read config"), "{err}");
}

#[test]
fn the_shipped_configs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            load(&Location::Explicit(path.clone()))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 2, "no configs found in {}", dir.display());
}

mod random {
    //! F9: random TOML, from a grammar of real and misspelt sections and
    //! keys and good and bad values, and arbitrary text. Parsing never
    //! panics, and every rejection names a line and column in the text.

    use proptest::prelude::*;

    use super::super::parse;

    const SECTIONS: [&str; 12] = [
        "[proxy]",
        "[proxy.health]",
        "[failover]",
        "[failover.carp]",
        "[failover.keepalived]",
        "[failover.command]",
        "[consul]",
        "[control]",
        "[http]",
        "[log]",
        "[proxy.healt]",
        "[[proxy]]",
    ];
    const KEYS: [&str; 16] = [
        "command",
        "preset",
        "stop_timeout",
        "http",
        "interval",
        "rise",
        "backend",
        "failover_timeout",
        "demote_by",
        "vip",
        "ttl",
        "address",
        "socket",
        "listen",
        "level",
        "stop_timout",
    ];
    const VALUES: [&str; 14] = [
        "\"10s\"",
        "\"1.5s\"",
        "\"soon\"",
        "0",
        "-1",
        "129",
        "\"carp\"",
        "[\"a\", \"b\"]",
        "[]",
        "true",
        "\"\"",
        "{ x = 1 }",
        "\"192.0.2.10\"",
        "\"ftp://x\"",
    ];

    fn document() -> impl Strategy<Value = String> {
        let line = (0..KEYS.len(), 0..VALUES.len())
            .prop_map(|(k, v)| format!("{} = {}\n", KEYS[k], VALUES[v]));
        let section = (0..SECTIONS.len(), proptest::collection::vec(line, 0..4))
            .prop_map(|(s, lines)| format!("{}\n{}", SECTIONS[s], lines.concat()));
        proptest::collection::vec(section, 0..5).prop_map(|s| s.concat())
    }

    fn located(text: &str) {
        if let Err(errors) = parse(std::path::Path::new("r.toml"), text) {
            let lines = text.lines().count().max(1);
            for e in &errors.0 {
                assert!(
                    e.line >= 1 && e.line <= lines + 1 && e.column >= 1,
                    "{e} (of {lines} lines) for:\n{text}"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn grammar_configs_are_accepted_or_located(text in document()) {
            located(&text);
        }

        #[test]
        fn arbitrary_text_is_rejected_with_a_place(text in "\\PC{0,200}") {
            located(&text);
        }
    }
}

// The second stage: what the rest of handoff takes.

fn resolved(text: &str) -> Resolved {
    parse(Path::new("handoff.toml"), text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn resolved_defaults_are_applied_once() {
    let r = resolved("");
    assert!(matches!(r.backend, Backend::None));
    assert_eq!(r.backend.handover(), Handover::Fast);
    assert!(matches!(r.proxy.gate, HealthGate::RunningFor(d) if d == STARTUP_GATE));
    assert_eq!(r.proxy.stop_signal, Signal::SIGTERM);
    assert_eq!(r.failover.timeout, Duration::from_secs(10));
    assert_eq!(
        r.budget,
        StopBudget {
            on_stop: Duration::ZERO,
            failover_timeout: Duration::from_secs(10),
            settle: Duration::ZERO,
            stop_timeout: Duration::from_secs(10),
            exit: DOWN_GRACE,
        }
    );
    assert_eq!(r.budget.total(), Duration::from_secs(21));
    assert!(r.consul.is_none());
    assert_eq!(
        r.http,
        Http {
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9480))),
            show_argv: false,
        }
    );
    assert_eq!(r.path.as_deref(), Some(Path::new("handoff.toml")));
    assert!(resolved("[http]\nlisten = \"\"\n").http.listen.is_none());
    assert!(resolved("[http]\nshow_argv = true\n").http.show_argv);
}

#[test]
fn each_backend_carries_its_own_section() {
    // (config, backend, handover, vips)
    let table: [(&str, BackendKind, Handover, &[&str]); 6] = [
        (
            "[failover]\nbackend = \"keepalived\"\n[failover.keepalived]\nvip = [\"192.0.2.10\", \"2001:db8::10\"]\n",
            BackendKind::Keepalived,
            Handover::Graceful,
            &["192.0.2.10", "2001:db8::10"],
        ),
        (
            "[failover]\nbackend = \"keepalived\"\n[failover.keepalived]\nvip = [\"192.0.2.10\"]\nhandover = \"fast\"\n",
            BackendKind::Keepalived,
            Handover::Fast,
            &["192.0.2.10"],
        ),
        (
            "[failover]\nbackend = \"carp\"\n[failover.carp]\ngroup = \"web\"\n",
            BackendKind::Carp,
            Handover::Fast,
            &[],
        ),
        (
            "[failover]\nbackend = \"command\"\n[failover.command]\ndemote = [\"d\"]\npromote = [\"p\"]\nstate = [\"s\"]\n",
            BackendKind::Command,
            Handover::Fast,
            &[],
        ),
        (
            "[failover]\nbackend = \"bgp\"\n[failover.bgp]\nprefixes = [\"192.0.2.53/32\", \"2001:db8::/48\"]\n",
            BackendKind::Bgp,
            Handover::Graceful,
            &["192.0.2.53", "2001:db8::"],
        ),
        (
            "[failover]\nbackend = \"bgp\"\n[failover.bgp]\nprefixes = [\"192.0.2.53/32\"]\nhandover = \"fast\"\n",
            BackendKind::Bgp,
            Handover::Fast,
            &["192.0.2.53"],
        ),
    ];
    for (text, kind, handover, vips) in table {
        let r = resolved(text);
        assert_eq!(r.backend.kind(), kind, "{text}");
        assert_eq!(r.backend.handover(), handover, "{text}");
        let got: Vec<String> = r.backend.vips().iter().map(ToString::to_string).collect();
        assert_eq!(got, vips, "{text}");
        // Consul advertises the backend's VIPs.
        let r = resolved(&format!("{text}[consul]\n"));
        let consul = r.consul.expect("[consul] set");
        let got: Vec<String> = consul.vips.iter().map(ToString::to_string).collect();
        assert_eq!(got, vips, "{text}");
        assert_eq!(r.budget.exit, DOWN_GRACE + CONSUL_EXIT_LIMIT, "{text}");
    }
    let Backend::Carp(carp) = resolved(table[2].0).backend else {
        panic!("carp expected")
    };
    assert_eq!(carp.group, "web");
    let Backend::Command(command) = resolved(table[3].0).backend else {
        panic!("command expected")
    };
    assert_eq!(command.state.to_string(), "s");
}

#[test]
fn resolved_proxy_health_and_consul_take_the_file_s_values() {
    let r = resolved(
        "[proxy]\npreset = \"nginx\"\nreload_signal = \"drop\"\n\
         [proxy.health]\ntcp = \"127.0.0.1:80\"\nrise = 3\n\
         [failover]\nsettle = \"2s\"\nprobe = \"tcp://192.0.2.10:443\"\n\
         [consul]\naddress = \"unix:///run/consul.sock\"\nconfirm_peer = true\n\
         [control]\ngroup = \"root\"\n",
    );
    assert_eq!(r.proxy.stop_signal, Signal::SIGQUIT);
    assert_eq!(r.proxy.reload.signal, Some(Reload::Drop));
    let Some(check) = r.proxy.gate.checks() else {
        panic!("health checks expected: {:?}", r.proxy.gate)
    };
    assert!(matches!(&check.check, Check::Tcp(a) if a.0 == "127.0.0.1:80"));
    assert_eq!(check.rise.get(), 3);
    assert!(r.failover.probe.is_some());
    assert_eq!(r.budget.settle, Duration::from_secs(2));
    let consul = r.consul.expect("[consul] set");
    assert_eq!(consul.address.as_deref(), Some("unix:///run/consul.sock"));
    assert!(consul.confirm_peer);
    assert_eq!(r.control.group.as_deref(), Some("root"));
    assert!(r.proxy.keep_env.is_empty(), "keeps nothing by default");
    let r = resolved("[proxy]\nkeep_env = [\"CONSUL_HTTP_TOKEN\", \"CONSUL_HTTP_AUTH\"]\n");
    assert_eq!(r.proxy.keep_env, ["CONSUL_HTTP_TOKEN", "CONSUL_HTTP_AUTH"]);
}

#[test]
fn a_backend_without_its_section_never_reaches_the_resolved_stage() {
    let e = parse(
        Path::new("handoff.toml"),
        "[failover]\nbackend = \"command\"\n",
    )
    .expect_err("refused")
    .to_string();
    assert!(e.contains("needs a [failover.command] section"), "{e}");
}

#[test]
fn a_bad_consul_address_is_refused_where_it_stands() {
    let e = parse_err("[consul]\nservice = \"edge\"\naddress = \"ftp://x:1\"\n");
    assert!(
        e.starts_with("handoff.toml:3:11: ")
            && e.contains("scheme `ftp` is not http, https or unix"),
        "{e}"
    );
}
