//! A BGP anycast lab in network namespaces, for tests/bgp.rs: router r
//! (BIRD, AS 65000, its best path installed in its kernel), edge nodes a
//! (AS 65001) and b (AS 65002), each with BIRD running the shipped
//! config/bird/handoff.conf, nginx and handoff, and a client c behind r.
//! Every edge announces 192.0.2.53/32 (on its lo). Addresses only inside
//! the namespaces; everything is removed in `Drop`, even when a test
//! panics.
//!
//! ```text
//!   a 10.0.1.2 ---- 10.0.1.1 \
//!                              r ---- 10.0.3.1  10.0.3.2 c
//!   b 10.0.2.2 ---- 10.0.2.1 /
//! ```

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime},
};

use super::{HANDOFF, Handoff, Lab, netns::ip, repo};

/// The service address every edge announces.
pub const SERVICE: &str = "192.0.2.53";

/// Whether this machine can run the lab; if not, [`super::skip`]s (under
/// CI that fails the test).
pub fn lab_available() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = ["ip", "bird", "birdc"]
        .iter()
        .all(|t| super::locate(t).is_some())
        && Path::new("/usr/sbin/nginx").exists();
    if root && tools {
        return true;
    }
    super::skip(&format!(
        "the BGP lab needs root={root}, ip, bird, birdc (bird2) and /usr/sbin/nginx={tools}"
    ));
    false
}

/// One path of the router's table for the service prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterPath {
    /// The edge it leads to (the router's session name: a or b).
    pub node: String,
    /// The router's best path (the one in its kernel).
    pub best: bool,
    /// The AS path as BIRD shows it (`65001 65001 65001 65001` at standby).
    pub as_path: String,
}

/// The lab: namespaces, BIRDs, and the client when started.
pub struct Anycast {
    name: String,
    pub dir: PathBuf,
    birds: Vec<(String, Child)>,
    client: Option<Child>,
}

impl Anycast {
    /// Builds the namespaces, starts the three BIRDs and waits until both
    /// sessions are established.
    pub fn new(lab: &Lab) -> Anycast {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "g{}{}",
            std::process::id() % 100_000,
            COUNT.fetch_add(1, Ordering::SeqCst)
        );
        let dir = lab.path("anycast");
        std::fs::create_dir_all(&dir).unwrap();
        let mut lab = Anycast {
            name,
            dir,
            birds: Vec::new(),
            client: None,
        };
        for node in ["r", "a", "b", "c"] {
            let ns = lab.ns(node);
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        for (i, node) in ["a", "b", "c"].into_iter().enumerate() {
            lab.link(node, i + 1);
        }
        let forward = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.ns("r"),
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .status()
            .unwrap();
        assert!(forward.success());
        std::fs::write(lab.dir.join("bird-r.conf"), ROUTER_CONF).unwrap();
        for (node, net) in [("a", 1), ("b", 2)] {
            let conf = format!(
                "router id 10.0.{net}.2;\nprotocol device {{ }}\ndefine HANDOFF_AS = 6500{net};\n\
                 include \"{}\";\n\
                 protocol bgp uplink from handoff_uplink {{\n  local 10.0.{net}.2 as HANDOFF_AS;\n  \
                 neighbor 10.0.{net}.1 as 65000;\n  connect retry time 1;\n}}\n",
                repo("config/bird/handoff.conf").display()
            );
            std::fs::write(lab.dir.join(format!("bird-{node}.conf")), conf).unwrap();
        }
        for node in ["r", "a", "b"] {
            lab.start_bird(node);
        }
        lab.wait_established(Duration::from_secs(20));
        lab
    }

    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }

    /// Links `node` to the router on 10.0.`net`.0/24 (.2 and .1), with its
    /// default route through the router and, on an edge, the service
    /// address on lo.
    fn link(&self, node: &str, net: usize) {
        let (r, ns) = (self.ns("r"), self.ns(node));
        let (inside, outside) = (
            format!("{}{node}e", self.name),
            format!("{}{node}r", self.name),
        );
        let toward = format!("to{node}");
        ip(&[
            "link", "add", &inside, "type", "veth", "peer", "name", &outside,
        ]);
        ip(&["link", "set", &inside, "netns", &ns]);
        ip(&["link", "set", &outside, "netns", &r]);
        ip(&["-n", &ns, "link", "set", &inside, "name", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.0.{net}.2/24"),
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &format!("10.0.{net}.1"),
        ]);
        ip(&["-n", &r, "link", "set", &outside, "name", &toward]);
        ip(&[
            "-n",
            &r,
            "addr",
            "add",
            &format!("10.0.{net}.1/24"),
            "dev",
            &toward,
        ]);
        ip(&["-n", &r, "link", "set", &toward, "up"]);
        if node != "c" {
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{SERVICE}/32"),
                "dev",
                "lo",
            ]);
        }
    }

    /// `node`'s BIRD control socket.
    pub fn bird_socket(&self, node: &str) -> PathBuf {
        self.dir.join(format!("bird-{node}.ctl"))
    }

    /// Starts `node`'s BIRD in the foreground (`-f`), so the child is BIRD.
    pub fn start_bird(&mut self, node: &str) {
        let conf = self.dir.join(format!("bird-{node}.conf"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("bird-{node}.log")))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(node), "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(self.bird_socket(node))
            .arg("-P")
            .arg(self.dir.join(format!("bird-{node}.pid")))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.birds.push((node.to_owned(), child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while bird(&self.bird_socket(node), "show status").is_err() {
            assert!(Instant::now() < deadline, "{node}'s BIRD never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs `node`'s BIRD (its socket stays behind, refusing).
    pub fn kill_bird(&mut self, node: &str) {
        if let Some(at) = self.birds.iter().position(|(n, _)| n == node) {
            let (_, mut child) = self.birds.remove(at);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the router's sessions to a and b are established.
    pub fn wait_established(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let shown = bird(&self.bird_socket("r"), "show protocols").unwrap_or_default();
            let up = |n: &str| {
                shown
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(n) && l.contains("Established"))
            };
            if up("a") && up("b") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "BGP sessions not established:\n{shown}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The router's paths for the service prefix.
    pub fn router_paths(&self) -> Vec<RouterPath> {
        let shown = bird(
            &self.bird_socket("r"),
            &format!("show route {SERVICE}/32 all"),
        )
        .unwrap_or_default();
        let mut paths: Vec<RouterPath> = Vec::new();
        for line in shown.lines() {
            if let Some(at) = line.find(" [") {
                let rest = &line[at + 2..];
                let node = rest.split_whitespace().next().unwrap_or("").to_owned();
                let best = rest.contains("] * ");
                paths.push(RouterPath {
                    node,
                    best,
                    as_path: String::new(),
                });
            } else if let Some(path) = line.trim().strip_prefix("BGP.as_path:")
                && let Some(last) = paths.last_mut()
            {
                path.trim().clone_into(&mut last.as_path);
            }
        }
        paths
    }

    /// The node the router's best path leads to ("" without one).
    pub fn best(&self) -> String {
        self.router_paths()
            .into_iter()
            .find(|p| p.best)
            .map(|p| p.node)
            .unwrap_or_default()
    }

    /// Whether the router has a path to `node`.
    pub fn has_path(&self, node: &str) -> bool {
        self.router_paths().iter().any(|p| p.node == node)
    }

    /// Waits until `cond` holds of the router's paths; how long it took.
    pub fn wait_paths(
        &self,
        what: &str,
        limit: Duration,
        cond: impl Fn(&[RouterPath]) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let paths = self.router_paths();
            if cond(&paths) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{what} not within {limit:?}: {paths:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// node's nginx config: the service on SERVICE:80 answering its name,
    /// `/health` (200) and `/down` (503) on 127.0.0.1:8081.
    fn nginx_conf(&self, node: &str) -> PathBuf {
        let prefix = self.dir.join(format!("nginx-{node}"));
        std::fs::create_dir_all(&prefix).unwrap();
        let conf = prefix.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\npid nginx.pid;\nerror_log stderr notice;\n\
                 events {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n  \
                 client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fastcgi;\n  \
                 uwsgi_temp_path uwsgi; scgi_temp_path scgi;\n  \
                 server {{ listen 127.0.0.1:8081; location = /health {{ return 200 \"ok\\n\"; }} \
                 location = /down {{ return 503; }} }}\n  \
                 server {{ listen {SERVICE}:80; location / {{ return 200 \"{node}\\n\"; }} }}\n}}\n"
            ),
        )
        .unwrap();
        conf
    }

    /// node's handoff config: nginx, checked at `health` (`/health` or
    /// `/down`), on the bgp backend; `extra` (more sections) goes last.
    /// nginx gets a process group of its own: no supervisor kills the
    /// agent's group here, so when a test SIGKILLs the agent (or drops it)
    /// the sentinel's group kill is what takes nginx's workers, which
    /// outlive their master (`process_group` in handoff.toml(5)).
    pub fn config(&self, node: &str, health: &str, extra: &str) -> PathBuf {
        let conf = self.nginx_conf(node);
        let prefix = conf.parent().unwrap();
        let path = self.dir.join(format!("handoff-{node}.toml"));
        std::fs::write(
            &path,
            format!(
                "[proxy]\ncommand = [\"/usr/sbin/nginx\", \"-p\", \"{p}\", \"-c\", \"{c}\", \"-g\", \"daemon off;\"]\n\
                 preset = \"nginx\"\nstop_timeout = \"5s\"\nrestart = \"never\"\nprocess_group = \"own\"\n\
                 [proxy.health]\nhttp = \"http://127.0.0.1:8081{health}\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 2\nfall = 1\n\
                 [failover]\nbackend = \"bgp\"\nfailover_timeout = \"5s\"\n\
                 [failover.bgp]\nsocket = \"{s}\"\nprefixes = [\"{SERVICE}/32\"]\nsessions = [\"uplink\"]\n\
                 [control]\nsocket = \"{d}/handoff-{node}.sock\"\nstate_dir = \"{d}/state-{node}\"\n\
                 [http]\nlisten = \"\"\n{extra}\n",
                p = prefix.display(),
                c = conf.display(),
                s = self.bird_socket(node).display(),
                d = self.dir.display(),
            ),
        )
        .unwrap();
        path
    }

    /// Runs handoff on `node` (`ip netns exec` execs it: the child's pid is
    /// handoff's).
    pub fn handoff(&self, lab: &Lab, node: &str, config: &Path) -> Handoff {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(node), HANDOFF, "--config"])
            .arg(config)
            .arg("run");
        cmd.env_remove("HANDOFF_CONFIG").env("RUST_LOG", "info");
        Handoff::spawn(cmd, lab.path(&format!("handoff-{node}.stderr")))
    }

    /// `handoff --config CONFIG ARGS...` in `node`'s namespace, to its end:
    /// (exit code, stdout, stderr).
    pub fn operator(&self, node: &str, config: &Path, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(node), HANDOFF, "--config"])
            .arg(config)
            .args(args)
            .env_remove("HANDOFF_CONFIG");
        super::output(&mut cmd)
    }

    /// Starts the client in c: 100 requests a second to the service, a new
    /// connection each (scripts/lab_client.py), logged to `client.log`.
    pub fn start_client(&mut self) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns("c"), "python3"])
            .arg(repo("scripts/lab_client.py"))
            .args(["run", &format!("http://{SERVICE}/")])
            .arg(self.dir.join("client.log"))
            .arg(self.dir.join("client.stop"))
            .args(["100", "120"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.client = Some(child);
    }

    /// The client's requests so far: (wall-clock start, ok, what answered).
    pub fn requests(&self) -> Vec<(f64, bool, String)> {
        let text = std::fs::read_to_string(self.dir.join("client.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let at: f64 = parts.next()?.parse().ok()?;
                let ok = parts.next()? == "ok";
                Some((at, ok, parts.next().unwrap_or("").to_owned()))
            })
            .collect()
    }

    /// Waits until the client has had `count` answers from `node` since
    /// `since` (wall clock).
    pub fn wait_answers(&self, node: &str, since: f64, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let n = self
                .requests()
                .iter()
                .filter(|(at, ok, what)| *at >= since && *ok && what == node)
                .count();
            if n >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{node} answered {n} of {count} requests since {since}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the client; its requests.
    pub fn stop_client(&mut self) -> Vec<(f64, bool, String)> {
        std::fs::write(self.dir.join("client.stop"), "").unwrap();
        if let Some(mut child) = self.client.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.requests()
    }
}

/// Wall-clock seconds, the client log's clock.
pub fn wall() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One command on a BIRD control socket: the reply's text (codes removed),
/// or what failed. BIRD's protocol: lines `DDDD-text`, the last `DDDD text`,
/// continuations start with a space.
pub fn bird(socket: &Path, command: &str) -> Result<String, String> {
    let stream = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    (&stream)
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    for _ in 0..10_000 {
        line.clear();
        if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("closed".into());
        }
        let raw = line.trim_end_matches('\n');
        if let Some(rest) = raw.strip_prefix(' ') {
            text.push_str(rest);
            text.push('\n');
            continue;
        }
        let body = raw.get(5..).unwrap_or("");
        text.push_str(body);
        text.push('\n');
        if raw.get(4..5) != Some("-") {
            return Ok(text);
        }
    }
    Err("reply too long".into())
}

const ROUTER_CONF: &str = "router id 10.0.0.1;\nprotocol device { }\n\
protocol kernel { ipv4 { export all; }; }\n\
protocol bfd { interface \"*\" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }\n\
template bgp edge { local as 65000; hold time 3; keepalive time 1; connect retry time 1; bfd on; \
graceful restart off; ipv4 { import all; export all; }; }\n\
protocol bgp a from edge { local 10.0.1.1; neighbor 10.0.1.2 as 65001; }\n\
protocol bgp b from edge { local 10.0.2.1; neighbor 10.0.2.2 as 65002; }\n";

impl Drop for Anycast {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("client.stop"), "");
        if let Some(mut child) = self.client.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (_, child) in &mut self.birds {
            let _ = child.kill();
            let _ = child.wait();
        }
        for node in ["r", "a", "b", "c"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(node)])
                .status();
        }
    }
}
