//! A real Consul agent for the tests: `consul agent -dev` on free loopback
//! ports (DNS and gRPC off), started per test and killed by pid on drop.
//! The binary is `$CONSUL_BIN`, `consul` on PATH, or what
//! scripts/install-consul unpacked under target/.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::Lab;

/// The management token of agents started with ACLs on.
pub const MASTER_TOKEN: &str = "b1gs3cr3t-0000-4000-8000-000000000001";

/// Where the Consul binary is; fails the test with what to do if nowhere.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("CONSUL_BIN") {
        return bin.into();
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("consul");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let unpacked = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/consul-1.8.7/usr/bin/consul");
    assert!(
        unpacked.is_file(),
        "no Consul: run scripts/install-consul (scripts/test does), or set CONSUL_BIN"
    );
    unpacked
}

/// A running dev agent.
pub struct Consul {
    child: Option<Child>,
    /// The HTTP API port (`http://127.0.0.1:PORT`).
    pub port: u16,
    ports: [u16; 4],
    hcl: Option<String>,
    log: PathBuf,
    /// The token tests use to look (the management token with ACLs on).
    pub token: Option<String>,
}

impl Consul {
    /// A dev agent with everything open.
    pub fn start(lab: &Lab) -> Consul {
        Consul::start_with(lab, None, None)
    }

    /// A dev agent with ACLs on: default deny, [`MASTER_TOKEN`].
    pub fn start_with_acls(lab: &Lab) -> Consul {
        let hcl = format!(
            "acl {{ enabled = true default_policy = \"deny\" tokens {{ master = \"{MASTER_TOKEN}\" }} }}"
        );
        Consul::start_with(lab, Some(hcl), Some(MASTER_TOKEN.to_owned()))
    }

    /// A dev agent with extra `-hcl` config.
    pub fn start_with(lab: &Lab, hcl: Option<String>, token: Option<String>) -> Consul {
        let [http, server, lan, wan] = super::free_ports();
        let mut consul = Consul {
            child: None,
            port: http,
            ports: [http, server, lan, wan],
            hcl,
            log: lab.path(&format!("consul-{http}.log")),
            token,
        };
        consul.launch();
        consul
    }

    /// `host:port` of the HTTP API.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let [http, server, lan, wan] = self.ports;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("consul log");
        let mut cmd = Command::new(binary());
        cmd.args([
            "agent",
            "-dev",
            "-bind",
            "127.0.0.1",
            "-client",
            "127.0.0.1",
        ])
        .args(["-dns-port", "-1", "-grpc-port", "-1", "-log-level", "warn"])
        .args(["-http-port", &http.to_string()])
        .args(["-server-port", &server.to_string()])
        .args(["-serf-lan-port", &lan.to_string()])
        .args(["-serf-wan-port", &wan.to_string()]);
        if let Some(hcl) = &self.hcl {
            cmd.args(["-hcl", hcl]);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("start consul"));
        self.wait_for_leader();
    }

    fn wait_for_leader(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, body)) = self.try_request("GET", "/v1/status/leader", None) {
                if body.trim().len() > 2 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "consul has no leader after 30 s; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash would (a dev agent forgets every registration).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same ports, and waits for its leader.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// One request with [`Consul::token`]: (status, body); `None` when the
    /// agent cannot be reached.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Option<(u16, String)> {
        http(self.port, method, path, self.token.as_deref(), body)
    }

    /// One request that must reach the agent.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.try_request(method, path, body)
            .unwrap_or_else(|| panic!("consul at {} does not answer {method} {path}", self.addr()))
    }

    /// The agent's record of service `id`, if registered.
    pub fn service(&self, id: &str) -> Option<serde_json::Value> {
        let (status, body) = self.request("GET", &format!("/v1/agent/service/{id}"), None);
        (status == 200).then(|| serde_json::from_str(&body).expect("service JSON"))
    }

    /// The status of the check `service:<id>`, if registered.
    pub fn check_status(&self, id: &str) -> Option<String> {
        let (_, body) = self.request("GET", "/v1/agent/checks", None);
        let checks: serde_json::Value = serde_json::from_str(&body).expect("checks JSON");
        checks[format!("service:{id}")]["Status"]
            .as_str()
            .map(str::to_owned)
    }

    /// The tags of service `id`, if registered.
    pub fn tags(&self, id: &str) -> Option<Vec<String>> {
        self.service(id).map(|s| {
            s["Tags"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// Waits (bounded) until `done` holds; returns how long it took.
    pub fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&Consul) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if done(self) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "consul: not {what} within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until service `id` carries exactly tag `tag`.
    pub fn wait_for_tag(&self, id: &str, tag: &str, limit: Duration) -> Duration {
        self.wait_until(&format!("{id} tagged {tag}"), limit, |c| {
            c.tags(id).is_some_and(|t| t == [tag])
        })
    }
}

impl Drop for Consul {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.0 client (no chunked answers, the server closes):
/// (status, body), or `None` when nothing answers.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let body = body.unwrap_or("");
    let token = token.map_or_else(String::new, |t| format!("X-Consul-Token: {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n{token}\r\n{body}",
        body.len()
    );
    super::http_send(&format!("127.0.0.1:{port}"), &request)
}
