#!/usr/bin/python3
"""The failover benchmark (docs/benchmarks.md), run by scripts/bench as root.

Two edge nodes a and b with keepalived 2.2 and nginx, and a client sending
100 requests/s to the floating IP, all in network namespaces. keepalived's
timing comes from a shipped profile (BENCH_PROFILE): its VRRP version, its
global vrrp_* settings (GARP, scheduling), advert_int and the priorities of
edge-a and edge-b, read from the file itself:
  conservative  config/keepalived.conf       (VRRPv2, advert_int 1)
  fast          config/keepalived-fast.conf  (VRRPv3, advert_int 0.1)
  both          each in turn (the default)
The rest of the lab's keepalived.conf is the lab's own (addresses, paths,
the track file, the notify FIFO; no vrrp_track_process, since node b runs no
handoff). For each profile and each contender on node a, RUNS planned stops
and crashes of nginx; then the signal-forwarding latency against tini, in
alternating series (tini, handoff, tini, ...; BENCH_SIGNAL_SERIES, default 5)
and the idle footprint of handoff (Consul and HTTP on) against keepalived.
BENCH_ONLY (a list of handoff, wrapper, none, signals, footprint, detect)
picks what runs; detect is bench/detect.py's role detection latency
(BENCH_DETECT_RUNS changes, default 20). BENCH_STOPS and BENCH_CRASHES override RUNS for the planned stops and
the crashes (BENCH_CRASHES=0 skips the crashes): the lost-request count of
issue 17 item 3 wants many stops.

No request lost at the switch (handoff.toml(5), loopback_vip):
  BENCH_LOOPBACK=1  a's handoff runs with [failover.keepalived]
                    loopback_vip = true, the VIP on lo while nginx serves.
                    net.ipv4.conf.all.arp_ignore=1 and arp_announce=2
                    (config/sysctl.d/handoff-loopback-vip.conf) are set in
                    a's and b's namespaces (per namespace: never the host's);
                    handoff refuses to start without them.
  BENCH_SETTLE=100ms  [failover] settle for a's handoff: the wait between the
                    confirmed move and nginx's stop signal, during which a
                    (VIP on lo) still serves the stragglers.
Each stop prints when its failed requests were sent, relative to the VIP's
arrival on b, and when the VIP left a's lo.

Contenders for a planned stop of the master:
  handoff   handoff run -- nginx (graceful handover; the stop is SIGTERM)
  wrapper   bench/wrapper.ksh: the classic script; it traps TERM, writes the
            keepalived equivalent of carpdemote (track file -100), sleeps 15 s,
            un-demotes (0) and then stops nginx
  none      nginx alone, stopped with SIGQUIT (its graceful stop, as systemd's
            nginx.service does); keepalived notices through a vrrp_script
            (interval 1, fall 2, weight -100)
Everything is bounded in time and removed on exit; only our own pids are
signalled. Prints its figures; it never fails on noise.
"""

import bisect
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import lab_client  # noqa: E402  (the demo's request loop and report)

# Where scripts/bench's `cargo build --release` put the binaries: cargo's
# own rule, CARGO_TARGET_DIR (relative to the repository, where scripts/bench
# runs cargo) or target/.
TARGET = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR") or "target")
HANDOFF = os.path.join(TARGET, "release", "handoff")
FIXTURE = os.path.join(TARGET, "release", "handoff-fixture")
VIP = "192.0.2.100"
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
STOPS = int(os.environ.get("BENCH_STOPS") or RUNS)
CRASHES = int(os.environ.get("BENCH_CRASHES") or RUNS)
LOOPBACK = os.environ.get("BENCH_LOOPBACK", "") not in ("", "0")
SETTLE = os.environ.get("BENCH_SETTLE", "")
# What loopback_vip needs (config/sysctl.d/handoff-loopback-vip.conf).
ARP_SYSCTLS = ("net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2")
PROFILES = {"conservative": "config/keepalived.conf", "fast": "config/keepalived-fast.conf"}


def profiles():
    """The profiles BENCH_PROFILE asks for, in order."""
    wanted = os.environ.get("BENCH_PROFILE", "both")
    if wanted == "both":
        return list(PROFILES)
    if wanted not in PROFILES:
        sys.exit("BENCH_PROFILE=%s: conservative, fast or both" % wanted)
    return [wanted]


# The lines of a shipped keepalived profile the lab takes: its timing, not
# its addresses, paths or trackers.
INSTANCE_KEYS = ("advert_int", "priority", "down_timer_adverts", "preempt_delay", "nopreempt",
                 "lower_prio_no_advert", "higher_prio_send_advert")


def profile_lines(profile, node):
    """(global_defs lines, vrrp_instance lines) of `profile` as keepalived
    reads it with config id edge-`node` (keepalived.conf(5), "Conditional
    configuration"): global_defs' vrrp_* settings, and the instance's
    INSTANCE_KEYS and garp_* settings."""
    glob, inst = [], []
    section, depth = None, 0
    with open(os.path.join(ROOT, PROFILES[profile])) as f:
        for line in f:
            line = line.strip()
            if line.startswith("@"):
                cond, _, line = line.partition(" ")
                if cond[1:] != "edge-" + node:
                    continue
                line = line.strip()
            if not line or line.startswith("#"):
                continue
            key = line.split()[0]
            if depth == 0 and line.endswith("{"):
                section = key
            elif depth == 1 and section == "global_defs" and key.startswith("vrrp_"):
                glob.append(line)
            elif depth == 1 and section == "vrrp_instance" and (key in INSTANCE_KEYS or key.startswith("garp_")):
                inst.append(line)
            depth += line.count("{") - line.count("}")
    if not any(l.split()[0] == "priority" for l in inst):
        sys.exit("%s: no priority for edge-%s" % (PROFILES[profile], node))
    return glob, inst


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


class Lab:
    """Namespaces a, b, c (client) on a bridge; keepalived on a and b, with
    the timing of `profile`; `ip monitor address` on a and b. With
    `arp_suppress`, a and b get ARP_SYSCTLS, in their own namespaces."""

    def __init__(self, name, vrrp_script, profile="conservative", arp_suppress=False):
        self.dir = tempfile.mkdtemp(prefix="handoff-bench-%s-%s." % (name, profile))
        os.chmod(self.dir, 0o755)
        self.ns = "hb%d%s%s" % (os.getpid() % 10000, name[0], profile[0])
        self.procs = []
        self.client = None
        self.vip_events = []  # (time, node, "add" | "del"), in order; node "a:lo" for a's lo
        br = self.ns + "br"
        sh("ip", "netns", "add", br)
        sh("ip", "-n", br, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", br, "link", "set", "br0", "up")
        for i, n in enumerate("abc", 1):
            ns = self.ns + n
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", ns + "i", "type", "veth", "peer", "name", ns + "o")
            sh("ip", "link", "set", ns + "i", "netns", ns)
            sh("ip", "link", "set", ns + "o", "netns", br)
            sh("ip", "-n", br, "link", "set", ns + "o", "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", ns + "i", "name", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", "192.0.2.%d/24" % i, "dev", "eth0")
            if arp_suppress and n in "ab":
                # /proc/sys/net is the namespace's own (ip-netns(8)).
                sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", *ARP_SYSCTLS)
        for n in "ab":
            os.makedirs(self.path(n, "tmp"))
            glob, inst = profile_lines(profile, n)
            self.write(n, "track", "0\n")
            self.write(n, "check.sh", "#!/bin/bash\nexec 3<>/dev/tcp/127.0.0.1/8081\n", mode=0o755)
            script = (
                'vrrp_script chk_nginx {\n script "%s"\n interval 1\n fall 2\n rise 2\n weight -100\n}\n'
                % self.path(n, "check.sh")
                if vrrp_script
                else ""
            )
            track_script = "    track_script {\n        chk_nginx\n    }\n" if vrrp_script else ""
            self.write(n, "keepalived.conf", (
                "global_defs {\n router_id %s\n notify_fifo %s\n script_user root\n enable_script_security\n%s}\n"
                "%s"
                'track_file handoff {\n file "%s"\n weight 1\n}\n'
                "vrrp_instance VI_1 {\n state BACKUP\n interface eth0\n virtual_router_id 51\n%s"
                " track_file {\n  handoff weight 1\n }\n%s virtual_ipaddress {\n  %s/24\n }\n}\n"
            ) % (n, self.path(n, "notify.fifo"), "".join(" %s\n" % l for l in glob), script,
                 self.path(n, "track"), "".join(" %s\n" % l for l in inst), track_script, VIP))
            self.write(n, "nginx.conf", (
                "daemon off;\nworker_processes 1;\npid %s;\nerror_log %s;\n"
                "events { worker_connections 512; }\nhttp {\n access_log off;\n"
                " client_body_temp_path %s/body;\n proxy_temp_path %s/proxy;\n fastcgi_temp_path %s/fastcgi;\n"
                " uwsgi_temp_path %s/uwsgi;\n scgi_temp_path %s/scgi;\n"
                ' server { listen 80; location / { return 200 "%s\\n"; } }\n'
                " server { listen 127.0.0.1:8081; location = /nginx_status { stub_status; } }\n}\n"
            ) % ((self.path(n, "nginx.pid"), self.path(n, "nginx.error.log")) + (self.path(n, "tmp"),) * 5 + (n,)))
            self.spawn(n, ["keepalived", "-n", "-l", "-D", "-P", "-f", self.path(n, "keepalived.conf"),
                           "-p", self.path(n, "keepalived.pid"), "-r", self.path(n, "vrrp.pid")],
                       "keepalived.log")
            self.watch_vip(n)

    def watch_vip(self, node):
        """Records when the VIP comes and goes on `node`, with the time
        `ip -ts monitor` stamped on each message (so not delayed by this
        process's scheduling). The VIP on lo (loopback_vip) is recorded
        as node "NODE:lo"."""
        p = subprocess.Popen(["ip", "-n", self.ns + node, "-ts", "-o", "monitor", "address"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
        self.procs.append(p)

        def read():
            for line in p.stdout:
                if " %s/" % VIP not in line or not line.startswith("["):
                    continue
                stamp, _, rest = line[1:].partition("]")
                try:
                    t = datetime.fromisoformat(stamp).timestamp()
                except ValueError:
                    continue
                # "[Deleted ]INDEX: IFACE    inet VIP/..."
                words = rest.split()
                deleted = words[:1] == ["Deleted"]
                iface = words[2 if deleted else 1] if len(words) > 2 else ""
                self.vip_events.append((t, node + ":lo" if iface == "lo" else node, "del" if deleted else "add"))

        threading.Thread(target=read, daemon=True).start()

    def vip_event_after(self, node, what, after):
        """The time of the first `what` ("add" or "del") of the VIP on `node`
        at or after `after`, or None."""
        return next((t for t, n, w in list(self.vip_events) if n == node and w == what and t >= after), None)

    def path(self, node, name):
        return os.path.join(self.dir, node, name)

    def write(self, node, name, text, mode=0o644):
        os.makedirs(os.path.join(self.dir, node), exist_ok=True)
        with open(self.path(node, name), "w") as f:
            f.write(text)
        os.chmod(self.path(node, name), mode)

    def spawn(self, node, argv, log):
        """`ip netns exec` execs argv, so the Popen's pid is argv's."""
        out = open(self.path(node, log), "a")
        p = subprocess.Popen(["ip", "netns", "exec", self.ns + node] + argv,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.procs.append(p)
        return p

    def holder(self):
        for n in "ab":
            out = sh("ip", "-n", self.ns + n, "-o", "addr", "show", "dev", "eth0").stdout
            if " %s/" % VIP in out:
                return n
        return None

    def wait_holder(self, node, limit=30.0):
        end = time.time() + limit
        while time.time() < end:
            if self.holder() == node:
                return
            time.sleep(0.05)
        raise RuntimeError("%s did not get the VIP within %ss (logs in %s)" % (node, limit, self.dir))

    def nginx_pids(self, node):
        """The nginx master of `node` and its workers."""
        try:
            master = int(open(self.path(node, "nginx.pid")).read())
        except (OSError, ValueError):
            return []
        pids = [master]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = open("/proc/%s/stat" % entry).read()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    pids.append(int(entry))
        return pids

    def start_client(self):
        self.requests = os.path.join(self.dir, "requests")
        self.stop_file = os.path.join(self.dir, "stop-client")
        self.client = subprocess.Popen(
            ["ip", "netns", "exec", self.ns + "c", "/usr/bin/python3", os.path.join(ROOT, "scripts", "lab_client.py"),
             "run", "http://%s/" % VIP, self.requests, self.stop_file, "100", "1800"],
            stdout=subprocess.DEVNULL)
        self.procs.append(self.client)

    def close(self):
        if self.client:
            open(self.stop_file, "w").close()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for n in ("a", "b", "c", "br"):
            sh("ip", "netns", "del", self.ns + n, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_gone(pid, limit):
    end = time.time() + limit
    while time.time() < end:
        if not os.path.exists("/proc/%d" % pid):
            return time.time()
        try:
            if open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0] == "Z":
                return time.time()
        except OSError:
            return time.time()
        time.sleep(0.002)
    return None


def failed_offsets(lab, start, end):
    """When the failed requests of [start, end) were sent, from start, and
    why they failed (the client's exception), in order."""
    with open(lab.requests) as f:
        rows = [line.split(None, 2) for line in f]
    return sorted((float(t) - start, what.strip()) for t, result, what in rows
                  if result == "fail" and start <= float(t) < end)


def window_stats(lab, start, end):
    """lab_client.window_stats over this lab's request log."""
    return lab_client.window_stats(lab_client.read_log(lab.requests), start, end)


def handoff_config(lab, node, restart="never", consul=None, interval="200ms", loopback=False, settle=""):
    text = (
        '[proxy]\ncommand = ["%s", "-c", "%s"]\npreset = "nginx"\nstop_timeout = "10s"\nrestart = "%s"\n'
        '[proxy.health]\nhttp = "http://127.0.0.1:8081/nginx_status"\ninterval = "%s"\ntimeout = "150ms"\n'
        '[failover]\nbackend = "keepalived"\nfailover_timeout = "10s"\n%s'
        '[failover.keepalived]\ntrack_file = "%s"\nvip = ["%s"]\nhandover = "graceful"\n'
        'notify_fifo = "%s"\ninstance = "VI_1"\n%s'
        '[control]\nsocket = "%s"\nstate_dir = "%s"\n[http]\nlisten = "127.0.0.1:9480"\n'
    ) % (shutil.which("nginx"), lab.path(node, "nginx.conf"), restart, interval,
         'settle = "%s"\n' % settle if settle else "", lab.path(node, "track"), VIP,
         lab.path(node, "notify.fifo"), "loopback_vip = true\n" if loopback else "",
         lab.path(node, "handoff.sock"), lab.path(node, "state"))
    if consul:
        text += '[consul]\naddress = "unix://%s"\nservice_id = "edge-%s"\nttl = "10s"\n' % (consul, node)
    lab.write(node, "handoff.toml", text)
    return lab.path(node, "handoff.toml")


class Contender:
    """How node a runs nginx, and how it is stopped."""

    def __init__(self, name, lab):
        self.name, self.lab, self.proc = name, lab, None

    def start(self):
        lab = self.lab
        nginx = [shutil.which("nginx"), "-c", lab.path("a", "nginx.conf")]
        if self.name == "handoff":
            config = handoff_config(lab, "a", loopback=LOOPBACK, settle=SETTLE)
            self.proc = lab.spawn("a", [HANDOFF, "--config", config, "run"], "handoff.log")
        elif self.name == "wrapper":
            self.proc = lab.spawn("a", ["/bin/mksh", os.path.join(ROOT, "bench", "wrapper.ksh"),
                                        lab.path("a", "track")] + nginx, "wrapper.log")
        else:
            self.proc = lab.spawn("a", nginx, "nginx.log")
        lab.wait_holder("a")
        time.sleep(1.5)  # steady state

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT if self.name == "none" else signal.SIGTERM)

    def finish(self, limit):
        try:
            self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def since(t, t0):
    return (t - t0) if t is not None else None


def fmt(value, spec="%.3f"):
    return spec % value if value is not None else "-"


def planned_stops(name, profile):
    """STOPS planned stops of contender `name` on node a, then (handoff and
    none) CRASHES crashes of its nginx, with keepalived's `profile`."""
    lab = Lab(name, vrrp_script=(name == "none"), profile=profile, arp_suppress=LOOPBACK)
    results = []
    try:
        b = lab.spawn("b", [shutil.which("nginx"), "-c", lab.path("b", "nginx.conf")], "nginx.log")
        contender = Contender(name, lab)
        contender.start()
        lab.start_client()
        time.sleep(2)
        window = 25.0 if name == "wrapper" else 12.0
        for run in range(STOPS):
            master = lab.nginx_pids("a")[0]
            t0 = time.time()
            contender.stop()
            exited = wait_gone(master, 40)
            time.sleep(max(0.0, t0 + window - time.time()))
            requests, failed, outage, moved = window_stats(lab, t0, t0 + window)
            fails = failed_offsets(lab, t0, t0 + window)
            results.append({"run": run, "requests": requests, "failed": failed, "outage": outage,
                            "moved": moved, "stop": since(exited, t0),
                            "vip_on_peer": since(lab.vip_event_after("b", "add", t0), t0),
                            "vip_off_a": since(lab.vip_event_after("a", "del", t0), t0),
                            "vip_off_lo": since(lab.vip_event_after("a:lo", "del", t0), t0),
                            "failed_at": [f for f, _ in fails], "failed_why": [w for _, w in fails]})
            r = results[-1]
            # The failures' send times from the VIP's arrival on b: negative
            # is before the move, positive the stragglers after it.
            r["failed_from_move"] = ([f - r["vip_on_peer"] for f in r["failed_at"]]
                                     if r["vip_on_peer"] is not None else None)
            # The stragglers: requests sent after the VIP reached b that a
            # still answered (nginx's body names its node).
            r["a_after_move"] = (sum(1 for t, ok, node in lab_client.read_log(lab.requests)
                                     if ok and node == "a" and t0 + r["vip_on_peer"] <= t < t0 + window)
                                 if r["vip_on_peer"] is not None else None)
            print("  %-8s %-12s planned stop %d: %4d failed of %4d, longest outage %.2f s, VIP on b after %s s"
                  " (off a after %s s%s; a answered %s sent after it), proxy exited after %s s%s"
                  % (name, profile, run + 1, failed, requests, outage, fmt(r["vip_on_peer"]), fmt(r["vip_off_a"]),
                     ", off a's lo after %s s" % fmt(r["vip_off_lo"]) if LOOPBACK else "", fmt(r["a_after_move"], "%d"),
                     fmt(r["stop"], "%.2f"),
                     "; failures sent at %s s from the VIP on b (%s)"
                     % (", ".join("%+.3f" % f for f in r["failed_from_move"][:5]), ", ".join(r["failed_why"][:5]))
                     if 0 < failed <= 5 and r["failed_from_move"] is not None else ""), flush=True)
            contender.finish(30)
            if name == "handoff":
                r["handoff_moved_ms"] = last_int(lab.path("a", "handoff.log"), r"moved_after_ms=(\d+)")
            contender.start()  # the supervisor starts it again; a takes the VIP back
        crashes = []
        if name in ("handoff", "none"):
            for run in range(CRASHES):
                time.sleep(2)
                pids = lab.nginx_pids("a")
                t0 = time.time()
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                lab.wait_holder("b", 20)
                time.sleep(1.5)
                requests, failed, outage, moved = window_stats(lab, t0, time.time())
                crashes.append({"run": run, "failed": failed, "outage": outage, "moved": moved,
                                "vip_on_peer": since(lab.vip_event_after("b", "add", t0), t0),
                                "vip_off_a": since(lab.vip_event_after("a", "del", t0), t0)})
                c = crashes[-1]
                if name == "handoff":
                    # From the kill to handoff's `down` (-254, FAULT) in the
                    # track file; the rest is keepalived's own switch.
                    down = first_log_time_after(lab.path("a", "handoff.log"), "level applied backend=\"keepalived\" level=down", t0)
                    c["reaction"] = since(down, t0)
                print("  %-8s %-12s kill -9 %d: %4d failed, longest outage %.3f s, the peer served after %s s,"
                      " VIP on b after %s s (off a after %s s)%s"
                      % (name, profile, run + 1, failed, outage, fmt(moved), fmt(c["vip_on_peer"]), fmt(c["vip_off_a"]),
                         ", handoff wrote down after %s s" % fmt(c.get("reaction")) if name == "handoff" else ""),
                      flush=True)
                contender.finish(15)
                contender.start()
        b.terminate()
        return results, crashes
    finally:
        lab.close()


def first_log_time_after(path, text, after):
    """The time of the first line of handoff's log containing `text` that
    was written after `after` (seconds since the epoch)."""
    for line in open(path):
        if text in line:
            stamp = datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
            if stamp >= after:
                return stamp
    return None


def last_int(path, pattern):
    found = re.findall(pattern, open(path).read())
    return int(found[-1]) if found else None


SIGNAL_SERIES = int(os.environ.get("BENCH_SIGNAL_SERIES", "5"))
SIGNALS_PER_SERIES = 1000


def signal_series(use_tini):
    """SIGHUP to the supervisor until the child's handler ran, 1000 times, 2 ms
    apart; returns the latencies (µs) and how many of the SIGHUPs arrived."""
    d = tempfile.mkdtemp(prefix="handoff-bench-sig.")
    log = os.path.join(d, "events")
    child = [FIXTURE, "proxy", "--log", log]
    if use_tini:
        argv = [shutil.which("tini"), "-s", "--"] + child
    else:
        cfg = os.path.join(d, "h.toml")
        with open(cfg, "w") as f:
            f.write('[failover]\nbackend = "none"\n[control]\nsocket = "%s/s"\nstate_dir = "%s/st"\n[http]\nlisten = ""\n[log]\nlevel = "warn"\n' % (d, d))
        argv = [HANDOFF, "--config", cfg, "run", "--"] + child
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.time() + 10
        while time.time() < end and not (os.path.exists(log) and " start " in open(log).read()):
            time.sleep(0.01)
        sent = []
        for _ in range(SIGNALS_PER_SERIES):
            sent.append(time.monotonic_ns())
            os.kill(p.pid, signal.SIGHUP)
            time.sleep(0.002)
        time.sleep(0.5)
        got = [int(l.split()[0]) for l in open(log) if l.split()[2:4] == ["signal", "SIGHUP"]]
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        shutil.rmtree(d, ignore_errors=True)
    # In order when none was lost; else each arrival is timed from the
    # latest send before it (an estimate: the kernel coalesced some, and a
    # late arrival is credited to a later send).
    if len(got) == len(sent):
        lat = [(g - t) / 1000.0 for t, g in zip(sent, got)]
    else:
        lat = [(g - sent[bisect.bisect_right(sent, g) - 1]) / 1000.0
               for g in got if g >= sent[0]]
    return lat, len(got)


def signal_latency():
    """tini and handoff in alternating series (tini, handoff, tini, ...), so
    that both see the same machine load; the figures pool every series."""
    out = {}
    for series in range(SIGNAL_SERIES):
        for name, use_tini in (("tini", True), ("handoff", False)):
            lat, arrived = signal_series(use_tini)
            row = out.setdefault(name, {"lat": [], "arrived": 0, "sent": 0, "series_medians": []})
            row["lat"].extend(lat)
            row["arrived"] += arrived
            row["sent"] += SIGNALS_PER_SERIES
            row["series_medians"].append(statistics.median(lat) if lat else None)
            print("  series %d %s: %d of %d SIGHUPs arrived, median %.0f µs"
                  % (series + 1, name, arrived, SIGNALS_PER_SERIES, row["series_medians"][-1] or 0), flush=True)
    for row in out.values():
        lat = sorted(row.pop("lat"))
        row.update({"n": len(lat), "median_us": statistics.median(lat),
                    "p99_us": lat[int(len(lat) * 0.99) - 1], "max_us": lat[-1]})
    return out


def proc_sample(pid):
    status = open("/proc/%d/status" % pid).read()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    stat = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    ticks = int(stat[11]) + int(stat[12])
    return rss, ticks


def footprint(seconds):
    """Idle RSS and CPU of handoff (Consul and HTTP on) and keepalived."""
    lab = Lab("footprint", vrrp_script=False)
    consul_bin = os.environ.get("CONSUL_BIN") or sh(os.path.join(ROOT, "scripts", "install-consul")).stdout.strip()
    sock = os.path.join(lab.dir, "consul.sock")
    ports = [str(p) for p in free_ports(4)]
    consul = subprocess.Popen(
        [consul_bin, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-dns-port", "-1", "-grpc-port", "-1",
         "-http-port", ports[0], "-server-port", ports[1], "-serf-lan-port", ports[2], "-serf-wan-port", ports[3],
         "-log-level", "warn", "-hcl", 'addresses { http = "127.0.0.1 unix://%s" }' % sock],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lab.procs.append(consul)
    try:
        end = time.time() + 20
        while not os.path.exists(sock) and time.time() < end:
            time.sleep(0.1)
        time.sleep(1)
        # The shipped defaults: health checks every second (the stop
        # benchmarks check every 200 ms, to come back faster between runs).
        config = handoff_config(lab, "a", consul=sock, interval="1s")
        h = lab.spawn("a", [HANDOFF, "--config", config, "run"], "handoff.log")
        lab.wait_holder("a")
        time.sleep(3)
        keepalived = [int(open(lab.path("a", f)).read()) for f in ("keepalived.pid", "vrrp.pid")]
        hz = os.sysconf("SC_CLK_TCK")
        before = {"handoff": proc_sample(h.pid), "keepalived": [proc_sample(p) for p in keepalived]}
        time.sleep(seconds)
        after = {"handoff": proc_sample(h.pid), "keepalived": [proc_sample(p) for p in keepalived]}
        registered = "edge-a" in unix_get(sock, "/v1/agent/services")
        return {
            "seconds": seconds,
            "consul_registered": registered,
            "handoff_rss_kib": after["handoff"][0],
            "handoff_cpu_pct": 100.0 * (after["handoff"][1] - before["handoff"][1]) / hz / seconds,
            "keepalived_rss_kib": sum(s[0] for s in after["keepalived"]),
            "keepalived_cpu_pct": 100.0 * sum(a[1] - b[1] for a, b in zip(after["keepalived"], before["keepalived"])) / hz / seconds,
        }
    finally:
        lab.close()


def unix_get(path, url):
    """GET `url` from an HTTP server on a Unix socket (the body, or "")."""
    import socket
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        try:
            s.connect(path)
            s.sendall(("GET %s HTTP/1.0\r\nHost: x\r\n\r\n" % url).encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        except OSError:
            return ""
    return data.decode(errors="replace")


def free_ports(n):
    import socket
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def summary(values, fmt="%.2f"):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return (fmt + " (" + fmt + "–" + fmt + ")") % (statistics.median(values), min(values), max(values))


LABELS = {
    "handoff": "handoff",
    "wrapper": "classic wrapper (demote, sleep 15, un-demote, stop)",
    "none": "no wrapper (nginx stopped; vrrp_script interval 1, fall 2)",
}


def column(rows, key, spec="%.3f"):
    return summary([r.get(key) for r in rows], spec)


def print_stops(out):
    print("\n## Planned stop of the master's proxy (%d runs: median (min–max))\n" % STOPS)
    print("| contender | keepalived profile | failed requests | longest outage (s) | stop signal to VIP on the peer (s)"
          " | stop signal to proxy exit (s) |")
    print("|---|---|---|---|---|---|")
    for name in LABELS:
        for profile, stops in out["stops"].items():
            if name in stops:
                rows = stops[name]
                print("| %s | %s | %s | %s | %s | %s |" % (
                    LABELS[name], profile, column(rows, "failed", "%d"), column(rows, "outage", "%.2f"),
                    column(rows, "vip_on_peer"), column(rows, "stop", "%.2f")))
    for profile, stops in out["stops"].items():
        if "handoff" in stops:
            print("\nhandoff, %s: VIP moved (keepalived's own switch, as handoff logged it) %s ms"
                  % (profile, column(stops["handoff"], "handoff_moved_ms", "%d")))


def print_crashes(out):
    if not any(out["crashes"].values()):
        return
    print("\n## Proxy crash (kill -9 of nginx and its workers)\n")
    print("| contender | keepalived profile | failed requests | longest outage (s) | until the peer served (s)"
          " | kill to VIP on the peer (s) |")
    print("|---|---|---|---|---|---|")
    for name in LABELS:
        for profile, crashes in out["crashes"].items():
            if name in crashes:
                rows = crashes[name]
                print("| %s | %s | %s | %s | %s | %s |" % (
                    LABELS[name], profile, column(rows, "failed", "%d"), column(rows, "outage"),
                    column(rows, "moved"), column(rows, "vip_on_peer")))
    for profile, crashes in out["crashes"].items():
        rows = crashes.get("handoff", [])
        if rows:
            switch = [r["moved"] - r["reaction"] for r in rows if r["moved"] is not None and r.get("reaction") is not None]
            print("\nhandoff, %s: kill to down in the track file %s s; from there to the peer serving"
                  " (keepalived's FAULT switch) %s s" % (profile, column(rows, "reaction"), summary(switch, "%.3f")))


def print_profiles(out):
    """handoff under each keepalived profile, side by side, with the goals
    of issue 17 for the fast one."""
    chosen = [p for p in out["stops"] if "handoff" in out["stops"][p]]
    if not chosen:
        return
    print("\n## handoff under each keepalived profile (%d stops, %d crashes: median (min–max))\n" % (STOPS, CRASHES))
    print("| | %s | goal (fast) |" % " | ".join(chosen))
    print("|---|%s---|" % ("---|" * len(chosen)))
    stops = [out["stops"][p]["handoff"] for p in chosen]
    crashes = [out["crashes"].get(p, {}).get("handoff", []) for p in chosen]
    for label, tables, key, spec, goal in (
            ("planned stop: signal to VIP on the peer (s)", stops, "vip_on_peer", "%.3f", "<= 0.5"),
            ("planned stop: failed requests", stops, "failed", "%d", "0 (item 3)"),
            ("planned stop: longest outage (s)", stops, "outage", "%.3f", ""),
            ("planned stop: signal to proxy exit (s)", stops, "stop", "%.3f", ""),
            ("crash: kill -9 to the peer serving (s)", crashes, "moved", "%.3f", "<= 0.15"),
            ("crash: kill -9 to VIP on the peer (s)", crashes, "vip_on_peer", "%.3f", ""),
            ("crash: failed requests", crashes, "failed", "%d", ""),
            ("crash: longest outage (s)", crashes, "outage", "%.3f", "")):
        print("| %s | %s | %s |" % (label, " | ".join(column(rows, key, spec) for rows in tables), goal))


def main():
    if os.geteuid() != 0:
        sys.exit("bench/failover.py: run as root (network namespaces)")
    started = datetime.now()
    out = {"date": started.strftime("%Y-%m-%d %H:%M"), "runs": RUNS, "stops_per_series": STOPS,
           "crashes_per_series": CRASHES, "loopback_vip": LOOPBACK, "settle": SETTLE, "stops": {}, "crashes": {}}
    print("planned stops %d, crashes %d, loopback_vip %s, settle %s"
          % (STOPS, CRASHES, LOOPBACK, SETTLE or "0s"), flush=True)
    only = os.environ.get("BENCH_ONLY", "handoff wrapper none signals footprint detect").split()
    for profile in profiles():
        for name in [n for n in LABELS if n in only]:
            print("planned stops and crashes, contender %s, keepalived profile %s (%s)"
                  % (name, profile, PROFILES[profile]), flush=True)
            stops, crashes = planned_stops(name, profile)
            out["stops"].setdefault(profile, {})[name] = stops
            if crashes:
                out["crashes"].setdefault(profile, {})[name] = crashes
    if os.environ.get("BENCH_ONLY"):
        for profile, stops in out["stops"].items():
            for name, rows in stops.items():
                print(name, profile, [(r["failed"], ["%.3f" % f for f in r["failed_at"]]) for r in rows])
                print("  %s %s: %d of %d stops lost requests, %d failed in all; a answered %d sent after the VIP"
                      " reached b; failures sent at (s from the VIP on b): %s"
                      % (name, profile, sum(1 for r in rows if r["failed"]), len(rows), sum(r["failed"] for r in rows),
                         sum(r["a_after_move"] or 0 for r in rows),
                         " ".join("%+.3f" % f for r in rows for f in r["failed_from_move"] or []) or "-"))
    if "signals" in only:
        print("signal forwarding latency", flush=True)
        out["signals"] = signal_latency()
    if "footprint" in only:
        print("idle footprint over 60 s", flush=True)
        out["footprint"] = footprint(60)
    with open(os.environ.get("BENCH_JSON", "/dev/null"), "w") as f:
        json.dump(out, f, indent=1)

    if out["stops"]:
        print_stops(out)
        print_crashes(out)
        print_profiles(out)
    if "signals" in out:
        print("\n## SIGHUP forwarding latency (%d alternating series of %d signals each)\n"
              % (SIGNAL_SERIES, SIGNALS_PER_SERIES))
        print("| supervisor | arrived | median (µs) | p99 (µs) | max (µs) | series medians (µs) |")
        print("|---|---|---|---|---|---|")
        for name, s in out["signals"].items():
            print("| %s | %d of %d | %.0f | %.0f | %.0f | %s |" % (
                name, s["arrived"], s["sent"], s["median_us"], s["p99_us"], s["max_us"],
                " ".join("%.0f" % m for m in s["series_medians"] if m is not None)))
        h, t = out["signals"]["handoff"], out["signals"]["tini"]
        print("\nhandoff / tini: median %.2fx (goal at most 1.1x), p99 %.2fx (goal at most 2x)"
              % (h["median_us"] / t["median_us"], h["p99_us"] / t["p99_us"]))
    if "footprint" in out:
        fp = out["footprint"]
        print("\n## Idle footprint over %d s\n" % fp["seconds"])
        print("| process | RSS (KiB) | CPU (% of a core) |")
        print("|---|---|---|")
        print("| handoff (HTTP and Consul on; registered: %s) | %d | %.3f |"
              % (fp["consul_registered"], fp["handoff_rss_kib"], fp["handoff_cpu_pct"]))
        print("| keepalived (both processes) | %d | %.3f |" % (fp["keepalived_rss_kib"], fp["keepalived_cpu_pct"]))
    if "detect" in only:
        # Its own lab and tables (docs/benchmarks.md section 6).
        print("\n## Role detection latency\n", flush=True)
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "detect.py"), "--runs",
                        os.environ.get("BENCH_DETECT_RUNS", "20"), "now=" + HANDOFF], check=False)
    print("\nstarted %s, took %d s" % (out["date"], (datetime.now() - started).total_seconds()))


if __name__ == "__main__":
    main()
