//! Certificates renewed on the master only (issue 16): two handoff agents,
//! each running the real nginx from `config/examples/acme-on-master.toml`
//! adapted only in ports, paths, the duty's interval and the backend (the
//! command backend: one node's state says MASTER, the other's BACKUP), with
//! the shipped `config/examples/acme/renew-certs` and `publish-certs`, the
//! real lego, and Debian's pebble as the ACME CA, all offline on 127.0.0.1
//! (docs/acme-measured.md):
//!
//! * pebble validates HTTP-01 on the master's nginx port (its `httpPort`),
//!   as a real CA reaches only the node holding the floating IP; the names
//!   resolve through pebble-challtestsrv's DNS (every name is 127.0.0.1),
//!   not the host's resolver or /etc/hosts;
//! * the master's `[[duty]]` (every 1 s) obtains the certificate: it exists
//!   on the master, signed by pebble, and lego's hook (publish-certs) ran
//!   `handoff reload` (confirmed before the duty's run ended) and copied
//!   lego's directory to the peer's place (a local directory: the shared
//!   directory of publish-certs); the next run renews nothing;
//! * the backup never runs the duty: no `duty ran` line, no lego directory,
//!   no request from pebble on its nginx, `status --json` says not running;
//! * the master's `[hooks.on_master]` ran at the start (publish-certs, with
//!   nothing to publish yet: ok), the backup's never did.
//!
//! Linux only (/proc, Debian's packages), as scripts/test runs it.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{Handoff, Lab, SOON, free_ports, locate, repo};
use nix::sys::signal::Signal::SIGTERM;

/// The certificate's name; pebble-challtestsrv answers 127.0.0.1 for it.
const NAME: &str = "edge.handoff.test";
/// The duty's interval here (the example's is 12 h).
const EVERY: &str = "1s";
/// From the agents' start to the master's first certificate: the health
/// gate (2 checks, 1 s apart), one `every`, then one issuance, 0.6 to 8 s
/// measured (docs/acme-measured.md), and the hook's checked reload.
const ISSUANCE: Duration = Duration::from_secs(60);
/// How long an agent may take to exit after SIGTERM: nginx's graceful stop
/// of an idle server takes milliseconds.
const EXIT: Duration = Duration::from_secs(20);

/// Waits until `file` contains `text`, at most `limit`; returns the file.
fn wait_file(file: &Path, text: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let content = fs::read_to_string(file).unwrap_or_default();
        if content.contains(text) {
            return content;
        }
        assert!(
            Instant::now() < deadline,
            "{} never showed {text:?} within {limit:?}:\n{content}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A helper program (pebble, pebble-challtestsrv), stdout and stderr in one
/// file; killed by its pid when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(cmd: &mut Command, log: PathBuf) -> Daemon {
        let out = fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn wait_log(&self, text: &str) -> String {
        wait_file(&self.log, text, SOON)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `program args` to success.
fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// pebble on 127.0.0.1, resolving every name through its own
/// pebble-challtestsrv, validating HTTP-01 on `http_port`.
struct Ca {
    _dns: Daemon,
    pebble: Daemon,
    /// The ACME directory URL.
    url: String,
    /// What lego must trust for pebble's HTTPS (LEGO_CA_CERTIFICATES).
    trust: PathBuf,
}

impl Ca {
    fn start(dir: &Path, http_port: u16) -> Ca {
        // Debian's pebble ships no certificate for its HTTPS endpoint: a
        // throw-away CA and a leaf for 127.0.0.1, as docs/acme-measured.md.
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-days", "2", "-subj", "/CN=handoff test CA"]);
        args.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        run("openssl", &args, dir);
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-subj", "/CN=localhost", "-keyout", "key.pem"]);
        args.extend(["-out", "req.csr"]);
        run("openssl", &args, dir);
        fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "req.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "cert.pem",
            ],
            dir,
        );
        let [acme, management, tls, dns_port, dns_management] = free_ports::<5>();
        // -defaultIPv6 "": with an AAAA answer (::1 by default) pebble dials
        // only [::1], where nothing listens (docs/acme-measured.md). The
        // other challenge servers are not wanted.
        let dns = Daemon::start(
            Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{dns_management}")])
                .args(["-defaultIPv6", ""]),
            dir.join("challtestsrv.log"),
        );
        dns.wait_log("Starting challenge servers");
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("cert.pem"),
            "privateKey": dir.join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        // NOSLEEP: no random wait before validating. NONCEREJECT=0: by
        // default 5% of good nonces are refused, to exercise clients.
        let pebble = Daemon::start(
            Command::new("pebble")
                .arg("-config")
                .arg(dir.join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0"),
            dir.join("pebble.log"),
        );
        pebble.wait_log(&format!("Listening on: 127.0.0.1:{acme}"));
        Ca {
            _dns: dns,
            pebble,
            url: format!("https://127.0.0.1:{acme}/dir"),
            trust: dir.join("ca.pem"),
        }
    }
}

/// One node: its lab, nginx's ports, and where things land.
struct Node {
    lab: Lab,
    health: u16,
    site: u16,
}

impl Node {
    fn new(health: u16, site: u16) -> Node {
        Node {
            lab: Lab::new(),
            health,
            site,
        }
    }

    /// lego's directory (the example's /var/lib/handoff-acme).
    fn acme(&self) -> PathBuf {
        self.lab.path("acme")
    }

    /// Where publish-certs copies to: the peer's directory as a shared
    /// directory would hold it.
    fn peer(&self) -> PathBuf {
        self.lab.path("peer")
    }

    fn webroot(&self) -> PathBuf {
        self.lab.path("webroot")
    }

    fn certificate(&self) -> PathBuf {
        self.acme().join(format!("certificates/{NAME}.crt"))
    }

    /// nginx's side of the example: the status page and the challenge
    /// directory, on the lab's ports; an access log to see pebble's GETs.
    fn nginx_config(&self) -> PathBuf {
        let dir = self.lab.dir.path().display();
        let (health, site) = (self.health, self.site);
        let webroot = self.webroot().display().to_string();
        let path = self.lab.path("nginx.conf");
        fs::write(
            &path,
            format!(
                "worker_processes 1;\n\
                 pid nginx.pid;\n\
                 error_log stderr notice;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n\
                 \x20   access_log {dir}/access.log;\n\
                 \x20   client_body_temp_path nginx-body;\n\
                 \x20   proxy_temp_path nginx-proxy;\n\
                 \x20   fastcgi_temp_path nginx-fastcgi;\n\
                 \x20   uwsgi_temp_path nginx-uwsgi;\n\
                 \x20   scgi_temp_path nginx-scgi;\n\
                 \x20   server {{\n\
                 \x20       listen 127.0.0.1:{health};\n\
                 \x20       location = /nginx_status {{ stub_status; }}\n\
                 \x20   }}\n\
                 \x20   server {{\n\
                 \x20       listen 127.0.0.1:{site};\n\
                 \x20       location /.well-known/acme-challenge/ {{ root {webroot}; }}\n\
                 \x20   }}\n\
                 }}\n"
            ),
        )
        .unwrap();
        path
    }

    /// The example, adapted: nginx and its config, the health port, the
    /// command backend saying `state`, the duty every [`EVERY`] against
    /// `ca`, and the lab's paths in the scripts' arguments.
    fn config(&self, nginx: &Path, ca: &Ca, state: &str) -> PathBuf {
        let text = fs::read_to_string(repo("config/examples/acme-on-master.toml")).unwrap();
        let mut config: toml::Table = text.parse().unwrap();
        let dir = format!("{}/", self.lab.dir.path().display());
        let proxy = config["proxy"].as_table_mut().unwrap();
        let mut command = strings(&proxy["command"]);
        command[0] = nginx.display().to_string();
        command.extend(["-c".into(), self.nginx_config().display().to_string()]);
        command.extend(["-p".into(), dir]);
        proxy.insert("command".into(), command.into());
        let health = proxy["health"].as_table_mut().unwrap();
        let url = health["http"]
            .as_str()
            .unwrap()
            .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", self.health));
        assert!(url.contains(&format!(":{}/", self.health)), "{url}");
        health.insert("http".into(), url.into());
        config.remove("failover");

        let handoff_config = self.lab.path("handoff.toml");
        // The scripts' settings that only a test needs (the example's are
        // lego's and handoff's defaults): lego trusts pebble's HTTPS, and
        // publish-certs reaches this agent.
        let env = [
            "/usr/bin/env".to_owned(),
            format!("LEGO_CA_CERTIFICATES={}", ca.trust.display()),
            format!("HANDOFF={}", common::HANDOFF),
            format!("HANDOFF_CONFIG={}", handoff_config.display()),
        ];
        let acme = self.acme().display().to_string();
        let peer = self.peer().display().to_string();

        let duties = config["duty"].as_array_mut().unwrap();
        assert_eq!(duties.len(), 1, "the example has one duty");
        let duty = duties[0].as_table_mut().unwrap();
        let example = strings(&duty["command"]);
        assert!(example[0].ends_with("/renew-certs"), "{example:?}");
        let mut command = env.to_vec();
        command.push(
            repo("config/examples/acme/renew-certs")
                .display()
                .to_string(),
        );
        command.push(peer.clone());
        command.extend(replace_options(
            &example[2..],
            &[
                ("--server", ca.url.clone()),
                ("--path", acme.clone()),
                ("--domains", NAME.to_owned()),
                ("--http.webroot", self.webroot().display().to_string()),
            ],
        ));
        duty.insert("command".into(), command.into());
        duty.insert("every".into(), EVERY.into());
        duty.remove("jitter");

        let hook = config["hooks"]["on_master"].as_table_mut().unwrap();
        let example = strings(&hook["command"]);
        assert!(example[0].ends_with("/publish-certs"), "{example:?}");
        assert_eq!(example.len(), 3, "publish-certs DIR DEST: {example:?}");
        let mut command = env.to_vec();
        command.push(
            repo("config/examples/acme/publish-certs")
                .display()
                .to_string(),
        );
        command.extend([acme, peer]);
        hook.insert("command".into(), command.into());

        fs::create_dir(self.webroot()).unwrap();
        let mut text = toml::to_string(&config).unwrap();
        text.push_str(&self.lab.command_backend(state, "failover_timeout = \"5s\""));
        let path = self.lab.config(&text);
        assert_eq!(path, handoff_config);
        path
    }

    fn start(&self, config: &Path) -> Agent {
        let mut cmd = self.lab.agent_command(Some(config));
        cmd.arg("run").current_dir(self.lab.dir.path());
        Agent {
            h: Handoff::spawn(cmd, self.lab.path("handoff.stderr")),
            state: self.lab.path("state"),
        }
    }

    /// The GETs pebble's validation sent to this node's nginx.
    fn validations(&self) -> usize {
        fs::read_to_string(self.lab.path("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("/.well-known/acme-challenge/") && l.contains("Pebble-VA"))
            .count()
    }
}

/// A running agent and its backend's state file.
struct Agent {
    h: Handoff,
    state: PathBuf,
}

impl Agent {
    /// Stops the agent as an operator would, within [`EXIT`]: its backend
    /// reports BACKUP first (the floating IP moved), so that a master's stop
    /// does not wait out failover_timeout for it.
    fn stop(&mut self) -> i32 {
        fs::write(&self.state, "BACKUP\n").unwrap();
        self.h.signal(SIGTERM);
        self.h.code(EXIT)
    }
}

impl Drop for Agent {
    /// A failed test stops its agents gracefully too: a SIGKILL (Handoff's
    /// own drop) would leave nginx's workers behind (they outlive their
    /// master, docs/proxies-measured.md).
    fn drop(&mut self) {
        if let Ok(None) = self.h.child.try_wait() {
            let _ = fs::write(&self.state, "BACKUP\n");
            self.h.signal(SIGTERM);
            let deadline = Instant::now() + EXIT;
            while matches!(self.h.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn strings(value: &toml::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// `args` with the value after each option of `values` replaced; every one
/// of them must be there (the example keeps the shape the scripts read).
fn replace_options(args: &[String], values: &[(&str, String)]) -> Vec<String> {
    let mut out = args.to_vec();
    for (option, value) in values {
        let at = out
            .iter()
            .position(|a| a == option)
            .unwrap_or_else(|| panic!("the example's duty lacks {option}: {args:?}"));
        out[at + 1].clone_from(value);
    }
    out
}

/// Lines of `log` for which `is` holds.
fn count(log: &str, is: impl Fn(&str) -> bool) -> usize {
    log.lines().filter(|l| is(l)).count()
}

/// Index of the first line of `log` for which `is` holds.
fn line_of(log: &str, is: impl Fn(&str) -> bool) -> Option<usize> {
    log.lines().position(is)
}

/// The log line of a run of the duty or hook `name` (`what` "duty" or
/// "hook") that ended with `result`: `duty ran ... name="renew-certs"
/// result="ok"` as handoff logs it (its fields quoted, tracing's Debug of
/// a string); the spec of issue 16 writes `duty=renew-certs result=ok`,
/// which is matched too.
fn ran(line: &str, what: &str, name: &str, result: &str) -> bool {
    line.contains(&format!("{what} ran"))
        && [
            format!("name=\"{name}\""),
            format!("{what}=\"{name}\""),
            format!("{what}={name} "),
        ]
        .iter()
        .any(|n| line.contains(n.as_str()))
        && (line.contains(&format!("result=\"{result}\""))
            || line.contains(&format!("result={result} ")))
}

/// Waits until the agent's log has `n` lines for which `is` holds
/// (`what` says which); fails at once if the agent exited.
fn wait_count(h: &mut Handoff, what: &str, is: impl Fn(&str) -> bool, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while count(&h.log(), &is) < n {
        if let Some(status) = h.child.try_wait().unwrap() {
            panic!("handoff exited ({status}) before {n} {what}:\n{}", h.log());
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} {what} within {limit:?}:\n{}",
            h.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lego_renews_on_the_master_only_and_publishes_to_the_peer() {
    for tool in ["pebble", "pebble-challtestsrv", "lego", "rsync", "openssl"] {
        if !common::have(tool) {
            return;
        }
    }
    let Some(nginx) = locate("nginx") else {
        return common::skip("nginx is not installed (scripts/test installs it)");
    };
    let [master_health, master_site, backup_health, backup_site] = free_ports::<4>();
    let master = Node::new(master_health, master_site);
    let backup = Node::new(backup_health, backup_site);
    // pebble validates on the master's port only: the floating IP's node.
    let ca = Ca::start(master.lab.dir.path(), master.site);
    let master_config = master.config(&nginx, &ca, "MASTER\n");
    let backup_config = backup.config(&nginx, &ca, "BACKUP\n");
    let mut a = master.start(&master_config);
    let mut b = backup.start(&backup_config);

    let renewed = |l: &str| ran(l, "duty", "renew-certs", "ok");
    let reloaded = |l: &str| l.contains("reload confirmed");
    wait_count(&mut a.h, "good duty runs", renewed, 1, ISSUANCE);
    let log = a.h.log();
    assert!(
        master.certificate().is_file(),
        "no certificate after the duty ran:\n{log}\n{}",
        fs::read_to_string(&ca.pebble.log).unwrap_or_default()
    );
    let certificate = master.certificate().display().to_string();
    let text = run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-issuer",
            "-ext",
            "subjectAltName",
            "-in",
            &certificate,
        ],
        master.lab.dir.path(),
    );
    assert!(text.contains(&format!("DNS:{NAME}")), "{text}");
    assert!(text.contains("Pebble Intermediate CA"), "{text}");
    assert!(
        master.validations() > 0,
        "pebble never asked the master's nginx"
    );
    // lego ran publish-certs, which ran a checked reload and waited for its
    // confirmation, before lego (the duty's run) ended.
    let reload = line_of(&log, reloaded).unwrap_or_else(|| panic!("no reload:\n{log}"));
    assert!(reload < line_of(&log, renewed).unwrap(), "{log}");
    let copy = master.peer().join(format!("certificates/{NAME}.crt"));
    assert_eq!(
        fs::read(&copy).unwrap(),
        fs::read(master.certificate()).unwrap()
    );
    assert!(
        master.peer().join("accounts").is_dir(),
        "the account goes along"
    );
    // At the start, before any certificate: nothing to publish, ok.
    assert_eq!(
        count(&log, |l| ran(l, "hook", "on_master", "ok")),
        1,
        "{log}"
    );

    // The next run renews nothing (5 years left, pebble's validity): no new
    // order, no hook, no reload.
    wait_count(&mut a.h, "good duty runs", renewed, 2, SOON);
    let log = a.h.log();
    assert_eq!(count(&log, reloaded), 1, "{log}");
    assert_eq!(
        count(&log, |l| l.contains("duty ran")),
        count(&log, renewed),
        "{log}"
    );

    // The backup, up as long as the master, never ran the duty or its hook.
    let log = b.h.log();
    assert_eq!(count(&log, |l| l.contains("duty ran")), 0, "{log}");
    assert_eq!(count(&log, |l| l.contains("hook ran")), 0, "{log}");
    assert!(!backup.acme().exists(), "lego ran on the backup");
    assert!(!backup.peer().exists(), "the backup published");
    assert_eq!(backup.validations(), 0);
    let status = backup.lab.status_json(&backup_config);
    assert_eq!(status["duties"][0]["name"], "renew-certs", "{status}");
    assert_eq!(status["duties"][0]["running"], false, "{status}");
    // Duties off (docs/status.md): nothing is due.
    assert!(status["duties"][0]["next_in_ms"].is_null(), "{status}");
    assert!(status.get("hooks").is_none(), "{status}");
    let status = master.lab.status_json(&master_config);
    assert_eq!(status["hooks"]["on_master"]["result"], "ok", "{status}");

    for agent in [&mut a, &mut b] {
        let code = agent.stop();
        assert_eq!(code, 0, "{}", agent.h.log());
    }
}
