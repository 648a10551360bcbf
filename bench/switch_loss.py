#!/usr/bin/python3
"""Is a request lost when keepalived moves the VIP in a planned stop, and why?
(handoff issue 17, item 3; docs/benchmarks.md, "The lost request in a planned
stop".) Python 3 standard library, run as root; needs keepalived, nginx,
tcpdump and arping (scripts/apt-install tcpdump iputils-arping).

  switch_loss.py [--profile conservative|fast] [--variant NAME] [--stops N]
                 [--rate R] [--grace S] [--out FILE.json] [--keep] [--full-capture]
  switch_loss.py --arp-check      the ARP demonstration for lo-addr and lo-route
  switch_loss.py --table FILE.json...   a markdown table of --out results

The lab is bench/failover.py's: namespaces a (priority 250) and b (240) run
keepalived with a track file (weight 1) and nginx, and a client c sends R new
TCP connections a second to VIP:80, all on one bridge. A planned stop is
handoff's graceful one, simulated: the track file of a becomes -100
(atomically), we poll a until the VIP is gone from its interfaces, then nginx
on a gets SIGQUIT. Then a is restored (nginx started, track 0, a takes the VIP
back) for the next stop. Each client connection must connect within 300 ms,
so a lost SYN (TCP would retry it after 1 s) is a failure.

Profiles: conservative (VRRPv2, advert_int 1, as config/keepalived.conf) and
fast (vrrp_version 3, advert_int 0.1). Variants (keepalived.conf(5)):
  baseline        vrrp_garp_master_delay 0, as bench/failover.py
  vmac            use_vmac: RFC 5798 virtual MAC on a macvlan vrrp.51
  vmac-xmit-base  use_vmac + vmac_xmit_base (adverts from the base interface)
  vmac-announce   use_vmac, and arp_announce=2 on a and b: keepalived sets
                  arp_ignore/arp_filter for the VMAC but not arp_announce, so
                  the master's own ARP requests (for the client, sent when
                  its SYN-ACK needs it) say "VIP is-at <eth0's MAC>"
  garp-default    keepalived's GARP defaults (5 now, 5 more after 5 s)
  garp-lowprio    the old master sends an advert before leaving
                  (vrrp_higher_prio_send_advert), the new one answers it with
                  GARPs again (vrrp_garp_lower_prio_repeat 5, delay 0)
  garp-spread     10 GARPs 100 ms apart (vrrp_garp_master_repeat 10,
                  vrrp_garp_interval 0.1): one lands after any neigh locktime
  lo-addr         a keeps accepting the VIP after keepalived removed it: before
                  the stop a gets arp_ignore=1, arp_announce=2 and VIP/32 on lo,
                  removed just before nginx's SIGQUIT
  lo-both         lo-addr, and b has VIP/32 on lo (arp_ignore=1, arp_announce=2)
                  all the time, as LVS direct-routing real servers do: it also
                  catches what reaches b before its keepalived added the VIP
                  (use_vmac) and covers the move back to a (the restore)
  vmac-lo-both    vmac-announce and lo-both together
  lo-route        the same as lo-addr with `ip route append local VIP/32 dev lo table
                  local` instead of an address (`add` fails: EEXIST)

tcpdump runs in a, b and c (ARP, VRRP, SYN and RST only) and `ip monitor
address` in a and b, so every failure is explained from the wire: to which MAC
its SYN went, when a lost the VIP, when b's adverts and GARPs arrived. Times
are from b's first advert as master in c's capture: keepalived sends it before
it adds the VIP and sends the GARPs (vrrp.c, vrrp_state_master_tx), and a
drops the VIP when it reads it. (`ip monitor` stamps lines when it reads them,
milliseconds late on a busy host.)
Everything is bounded in time; namespaces, processes and the temporary
directory are removed on exit (--keep keeps the directory).
"""

import argparse
import datetime
import errno
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

VIP = "192.0.2.100"
VRID = 51
MAC = {"a": "02:00:00:00:00:0a", "b": "02:00:00:00:00:0b", "c": "02:00:00:00:00:0c"}
VMAC = "00:00:5e:00:01:%02x" % VRID  # RFC 5798 section 7.3
CONNECT_TIMEOUT = 0.3
REQUEST_TIMEOUT = 1.0
TRACK_STANDBY = -100  # src/failover/keepalived.rs, config/keepalived.conf
PROFILES = {
    "conservative": {"global": "", "advert_int": "1"},
    "fast": {"global": " vrrp_version 3\n", "advert_int": "0.1"},
}
CATCH = ("lo-addr", "lo-both", "vmac-lo-both", "lo-route")  # a catches the VIP on lo in its stop
CATCH_B = ("lo-both", "vmac-lo-both")  # b has the VIP on lo all the time
ANNOUNCE = ("vmac-announce", "vmac-lo-both")  # arp_announce=2 on a and b from the start
VARIANTS = {  # (global_defs lines, vrrp_instance lines)
    "baseline": (" vrrp_garp_master_delay 0\n", ""),
    "vmac": (" vrrp_garp_master_delay 0\n", " use_vmac\n"),
    "vmac-xmit-base": (" vrrp_garp_master_delay 0\n", " use_vmac\n vmac_xmit_base\n"),
    "vmac-announce": (" vrrp_garp_master_delay 0\n", " use_vmac\n"),
    "garp-default": ("", ""),
    "garp-lowprio": (" vrrp_garp_master_delay 0\n vrrp_garp_lower_prio_repeat 5\n vrrp_garp_lower_prio_delay 0\n"
                     " vrrp_higher_prio_send_advert true\n", ""),
    "garp-spread": (" vrrp_garp_master_delay 0\n vrrp_garp_master_repeat 10\n vrrp_garp_interval 0.1\n", ""),
    "lo-addr": (" vrrp_garp_master_delay 0\n", ""),
    "lo-both": (" vrrp_garp_master_delay 0\n", ""),
    "vmac-lo-both": (" vrrp_garp_master_delay 0\n", " use_vmac\n"),
    "lo-route": (" vrrp_garp_master_delay 0\n", ""),
}


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


# ---------------------------------------------------------------- the client


def client(log_path, stop_file, rate, seconds):
    """Runs in namespace c: a new connection to VIP:80 every 1/rate s, one
    thread, epoll. Logs "send_time local_port ok|fail node|error" per
    connection: connect-timeout (no SYN-ACK in 300 ms), read-timeout, or the
    errno name (ECONNRESET, ECONNREFUSED...)."""
    ep = select.epoll()
    conns = {}  # fd -> [socket, sent, port, connected, deadline, data]
    began = time.time()
    next_at, next_stat = began, began
    stop = False
    with open(log_path, "a", buffering=1) as log:

        def done(fd, ok, what):
            s, sent, port = conns.pop(fd)[:3]
            ep.unregister(fd)
            s.close()
            log.write("%.6f %d %s %s\n" % (sent, port, "ok" if ok else "fail", what))

        while conns or not stop:
            now = time.time()
            if now >= next_stat:
                stop = stop or os.path.exists(stop_file) or now - began > seconds
                next_stat = now + 0.1
            while not stop and now >= next_at:
                if now - next_at > 1.0 / rate:  # we were descheduled: no burst to catch up
                    next_at = now
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex((VIP, 80))
                if err not in (0, errno.EINPROGRESS):
                    log.write("%.6f 0 fail %s\n" % (now, errno.errorcode.get(err, str(err))))
                    s.close()
                    next_at += 1.0 / rate
                    continue
                conns[s.fileno()] = [s, now, s.getsockname()[1], False, now + CONNECT_TIMEOUT, b""]
                ep.register(s.fileno(), select.EPOLLOUT)
                next_at += 1.0 / rate
            for fd, c in list(conns.items()):
                if now > c[4]:
                    done(fd, False, "read-timeout" if c[3] else "connect-timeout")
            wake = min([c[4] for c in conns.values()] + [next_stat] + ([] if stop else [next_at]))
            for fd, event in ep.poll(max(0.0, wake - time.time())):
                c = conns[fd]
                try:
                    if not c[3]:
                        err = c[0].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            done(fd, False, errno.errorcode.get(err, str(err)))
                            continue
                        c[0].send(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
                        c[3], c[4] = True, c[1] + REQUEST_TIMEOUT
                        ep.modify(fd, select.EPOLLIN)
                        continue
                    chunk = c[0].recv(4096)
                    if chunk:
                        c[5] += chunk
                        continue
                    head, _, body = c[5].partition(b"\r\n\r\n")
                    if head.startswith(b"HTTP/1.1 200"):
                        done(fd, True, body.decode().strip())
                    else:
                        done(fd, False, "bad-answer")
                except OSError as e:
                    done(fd, False, errno.errorcode.get(e.errno, str(e.errno)))


# ------------------------------------------------------------------- the lab


class Lab:
    """Namespaces hs<pid>{a,b,c,br}: a, b and the client c on a bridge."""

    def __init__(self, profile, variant, rate, keep, grace=0.0, full=False):
        self.profile, self.variant, self.rate, self.keep, self.grace = profile, variant, rate, keep, grace
        self.full = full
        self.dir = tempfile.mkdtemp(prefix="switch-loss.")
        os.chmod(self.dir, 0o755)
        self.ns = {n: "hs%d%s" % (os.getpid() % 10000, n) for n in ("a", "b", "c", "br")}
        self.procs, self.nginx, self.client = [], {}, None
        self.stop_file = self.path("stop-client")
        try:
            self.build()
        except BaseException:
            self.close()
            raise

    def build(self):
        profile, variant = self.profile, self.variant
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            self.exec_(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        sh("ip", "-n", self.ns["br"], "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.ns["br"], "link", "set", "br0", "up")
        for i, n in enumerate("abc", 1):
            ns, port = self.ns[n], "port" + n
            # Both ends are created in our namespaces: nothing touches the host's.
            sh("ip", "-n", ns, "link", "add", "eth0", "address", MAC[n], "type", "veth",
               "peer", "name", port, "netns", self.ns["br"])
            sh("ip", "-n", self.ns["br"], "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", "192.0.2.%d/24" % i, "dev", "eth0")
        glob, inst = VARIANTS[variant]
        prof = PROFILES[profile]
        for n, prio in (("a", 250), ("b", 240)):
            os.makedirs(self.path(n, "tmp"))
            self.write_track(n, 0)
            with open(self.path(n, "keepalived.conf"), "w") as f:
                f.write(
                    "global_defs {\n router_id %s\n%s%s}\n"
                    'track_file handoff {\n file "%s"\n weight 1\n}\n'
                    "vrrp_instance VI_1 {\n state BACKUP\n interface eth0\n virtual_router_id %d\n priority %d\n"
                    " advert_int %s\n%s track_file {\n  handoff weight 1\n }\n virtual_ipaddress {\n  %s/24\n }\n}\n"
                    % (n, prof["global"], glob, self.path(n, "track"), VRID, prio, prof["advert_int"], inst, VIP))
            with open(self.path(n, "nginx.conf"), "w") as f:
                f.write(
                    "daemon off;\nworker_processes 1;\npid %s;\nerror_log %s;\n"
                    "events { worker_connections 1024; }\nhttp {\n access_log off;\n"
                    " client_body_temp_path %s/body;\n proxy_temp_path %s/proxy;\n fastcgi_temp_path %s/fastcgi;\n"
                    " uwsgi_temp_path %s/uwsgi;\n scgi_temp_path %s/scgi;\n"
                    # 0.0.0.0:80, so that lo-addr and lo-route can catch the VIP.
                    ' server { listen 80; location / { return 200 "%s\\n"; } }\n}\n'
                    % ((self.path(n, "nginx.pid"), self.path(n, "nginx.error.log")) + (self.path(n, "tmp"),) * 5 + (n,)))
        for n in "abc":
            self.spawn(n, ["tcpdump", "-i", "eth0", "-Z", "root", "-U", "-n", "-s", "128", "-w", self.path(n + ".pcap"),
                           # Every frame from the VMAC: the bridge learns its port from them.
                           "arp or ip proto 112 or ether src %s or (tcp port 80%s)"
                           % (VMAC, "" if self.full else " and tcp[tcpflags] & (tcp-syn|tcp-rst) != 0")],
                       n + ".tcpdump.log")
        for n in "ab":
            self.spawn(n, ["ip", "-ts", "monitor", "address"], n + ".addr.log")
        for n in "abc":
            self.wait_for(lambda: "listening on" in self.read(n + ".tcpdump.log"), 10, "tcpdump in " + n)
        for n in "ab":
            if variant in ANNOUNCE:
                self.exec_(self.ns[n], "sysctl", "-qw", "net.ipv4.conf.all.arp_announce=2")
            self.start_nginx(n)
            self.spawn(n, ["keepalived", "-n", "-l", "-D", "-P", "-f", self.path(n, "keepalived.conf"),
                           "-p", self.path(n, "keepalived.pid"), "-r", self.path(n, "vrrp.pid")], n + ".keepalived.log")
        self.wait_for(lambda: self.holder() == "a", 30, "a to hold the VIP")
        for n in ("ab" if variant in CATCH_B else "a" if variant in CATCH else ""):
            # Per netns; the effective value is max(conf/all, conf/eth0) and
            # eth0 keeps its default 0 (ip-sysctl.rst).
            self.exec_(self.ns[n], "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2")
        if variant in CATCH_B:
            sh("ip", "-n", self.ns["b"], "addr", "add", VIP + "/32", "dev", "lo")
        self.client = self.spawn("c", [sys.executable, os.path.abspath(__file__), "--client", self.path("requests"),
                                       self.stop_file, str(self.rate), "3600"], "client.log")

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def read(self, name):
        try:
            with open(self.path(name)) as f:
                return f.read()
        except OSError:
            return ""

    def exec_(self, ns, *argv, check=True):
        return sh("ip", "netns", "exec", ns, *argv, check=check)

    def spawn(self, node, argv, log):
        """`ip netns exec` execs argv, so the Popen's pid is argv's."""
        with open(self.path(log), "a") as out:
            p = subprocess.Popen(["ip", "netns", "exec", self.ns[node]] + argv,
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.procs.append(p)
        return p

    def wait_for(self, cond, limit, what, step=0.05):
        end = time.time() + limit
        while time.time() < end:
            if cond():
                return time.time()
            time.sleep(step)
        raise RuntimeError("no %s within %s s (files in %s)" % (what, limit, self.dir))

    def write_track(self, node, value):
        """As handoff does: a temp file in the same directory, then rename
        (keepalived watches the directory with inotify)."""
        tmp = self.path(node, ".track.tmp")
        os.makedirs(self.path(node), exist_ok=True)
        with open(tmp, "w") as f:
            f.write("%d\n" % value)
        os.rename(tmp, self.path(node, "track"))

    def holds(self, node):
        """Whether keepalived's VIP is on an interface of `node` (eth0 or
        vrrp.51; a VIP/32 of ours on lo does not count)."""
        out = sh("ip", "-n", self.ns[node], "-o", "-4", "addr", "show").stdout
        return any(" %s/24 " % VIP in line for line in out.splitlines())

    def holder(self):
        return next((n for n in "ab" if self.holds(n)), None)

    def start_nginx(self, node):
        self.nginx[node] = self.spawn(node, ["nginx", "-c", self.path(node, "nginx.conf")], node + ".nginx.log")
        self.wait_for(lambda: ":80 " in self.exec_(self.ns[node], "ss", "-Hltn").stdout, 10, "nginx on " + node)

    def stop_nginx(self, node, limit=15):
        p = self.nginx.pop(node)
        p.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        try:
            p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def in_addr_errors(self):
        """Ip InAddrErrors of a and b (/proc/net/snmp of their namespace):
        a packet for an address the node does not have, dropped (ip_forward
        is 0), is counted there."""
        counts = {}
        for n in "ab":
            lines = [line.split() for line in self.exec_(self.ns[n], "cat", "/proc/net/snmp").stdout.splitlines()
                     if line.startswith("Ip:")]
            counts[n] = int(dict(zip(lines[0], lines[1]))["InAddrErrors"])
        return counts

    def neigh(self):
        return sh("ip", "-n", self.ns["c"], "-s", "neigh", "show", VIP).stdout.strip()

    def recent_ok(self, since):
        """Whether every request sent since `since` (and at least 20) was
        answered by a."""
        rows = [line.split() for line in self.read("requests").splitlines()]
        rows = [r for r in rows if len(r) == 4 and float(r[0]) >= since and float(r[0]) < time.time() - REQUEST_TIMEOUT]
        return len(rows) >= 20 and all(r[2] == "ok" and r[3] == "a" for r in rows)

    def close(self):
        open(self.stop_file, "w").close()
        for p in sorted(self.procs, key=lambda p: p is not self.client):  # the client first
            if p.poll() is None:
                p.send_signal(signal.SIGQUIT if p in self.nginx.values() else signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for ns in self.ns.values():
            sh("ip", "netns", "del", ns, check=False)
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------- the catch on a


def catch(lab, on):
    """Let a accept the VIP without holding it on eth0 (VIP/32 on lo, or for
    lo-route a local route), or stop that. Returns what `ip` said; for the
    route, `add` is tried first, for the record."""
    ns, route = lab.ns["a"], ["local", VIP + "/32", "dev", "lo", "table", "local"]
    if lab.variant != "lo-route":
        return sh("ip", "-n", ns, "addr", "add" if on else "del", VIP + "/32", "dev", "lo", check=False).stderr.strip()
    if not on:
        return sh("ip", "-n", ns, "route", "del", *route, check=False).stderr.strip()
    added = sh("ip", "-n", ns, "route", "add", *route, check=False)
    if added.returncode == 0:
        return "add: ok"
    appended = sh("ip", "-n", ns, "route", "append", *route, check=False)
    return "add: %s; append: %s" % (added.stderr.strip(), appended.stderr.strip() or "ok")


def arping(lab):
    """The MACs that answer ARP requests for the VIP broadcast from c (two,
    1 s apart: iputils arping takes whole seconds)."""
    out = lab.exec_(lab.ns["c"], "arping", "-I", "eth0", "-b", "-c", "2", "-w", "2", VIP, check=False)
    if "Sent " not in out.stdout:
        raise RuntimeError("arping failed: %s" % (out.stderr or out.stdout))
    return sorted({line.split("[")[1].split("]")[0].lower() for line in out.stdout.splitlines() if "reply from" in line})


# --------------------------------------------------------- planned stops


def planned_stop(lab, number, rec):
    """One planned stop of a and its restore; fills `rec` with times and
    notes (all that the analysis needs once "t_restore" is in)."""
    move = lab.profile == "conservative" and 10 or 3
    lab.wait_for(lambda: lab.recent_ok(time.time() - 1.5), 20, "a steady client before stop %d" % number, 0.25)
    rec.update({"stop": number, "neigh_before": lab.neigh()})
    errors = lab.in_addr_errors()
    if lab.variant in CATCH:
        rec["catch_on"] = catch(lab, True)
    rec["t0"] = time.time()
    lab.write_track("a", TRACK_STANDBY)
    rec["t_gone_polled"] = lab.wait_for(lambda: not lab.holds("a"), move, "the VIP to leave a", 0.005)
    time.sleep(lab.grace)
    if lab.variant in CATCH:
        rec["catch_off"] = catch(lab, False)
    rec["t_quit"] = time.time()
    lab.stop_nginx("a")
    rec["t_nginx_gone"] = time.time()
    rec["neigh_after"] = lab.neigh()
    rec["fdb_after"] = [line for line in sh("ip", "netns", "exec", lab.ns["br"], "bridge", "fdb", "show", "br", "br0")
                        .stdout.splitlines() if line.startswith(VMAC)]
    time.sleep(max(0.0, rec["t_gone_polled"] + 1.5 - time.time()))  # late failures stay in this stop
    rec["in_addr_errors"] = {n: v - errors[n] for n, v in lab.in_addr_errors().items()}
    rec["t_restore"] = time.time()
    lab.start_nginx("a")
    lab.write_track("a", 0)
    lab.wait_for(lambda: lab.holder() == "a", move + 5, "a to take the VIP back")


def run(args):
    lab = Lab(args.profile, args.variant, args.rate, args.keep, args.grace, args.full_capture)
    stops, aborted = [], None
    try:
        try:
            for i in range(args.stops):
                stops.append({})
                planned_stop(lab, i + 1, stops[-1])
                print("  stop %2d done" % (i + 1), file=sys.stderr, flush=True)
            lab.wait_for(lambda: lab.recent_ok(time.time() - 1.5), 20, "a steady client at the end", 0.25)
        except RuntimeError as e:  # a lab that does not recover is a result too
            aborted = str(e)
            print("ABORTED: %s" % aborted)
            time.sleep(REQUEST_TIMEOUT)
        open(lab.stop_file, "w").close()
        lab.client.wait(timeout=10)
        time.sleep(0.5)  # tcpdump -U has written what it saw
        result = analyse(lab, [s for s in stops if "t_restore" in s])
        result["aborted"] = aborted
        print_result(result)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
        return result
    finally:
        print("  files in %s%s" % (lab.dir, "" if args.keep else " (removed)"), file=sys.stderr)
        lab.close()


# -------------------------------------------------------------- analysis


def read_pcap(path):
    """(time, src_mac, dst_mac, kind, fields) per frame: kind arp (op, sender
    mac, sender ip, target ip), vrrp (src ip, priority) or tcp (src, sport,
    dst, dport, flags)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    end, scale = ("<", 1e-6) if magic in (0xA1B2C3D4, 0xA1B23C4D) else (">", 1e-6)
    if magic in (0xA1B23C4D, 0x4D3CB2A1):
        scale = 1e-9
    frames, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(end + "IIII", data[off:off + 16])
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        t = sec + frac * scale
        dst, src, etype = pkt[0:6].hex(":"), pkt[6:12].hex(":"), struct.unpack("!H", pkt[12:14])[0]
        if etype == 0x0806:
            op = struct.unpack("!H", pkt[20:22])[0]
            frames.append((t, src, dst, "arp", (op, pkt[22:28].hex(":"), socket.inet_ntoa(pkt[28:32]),
                                                socket.inet_ntoa(pkt[38:42]))))
        elif etype == 0x0800:
            ihl = (pkt[14] & 15) * 4
            proto, sip, dip = pkt[23], socket.inet_ntoa(pkt[26:30]), socket.inet_ntoa(pkt[30:34])
            l4 = pkt[14 + ihl:]
            if proto == 112:
                frames.append((t, src, dst, "vrrp", (sip, l4[2])))
            elif proto == 6:
                sport, dport = struct.unpack("!HH", l4[:4])
                frames.append((t, src, dst, "tcp", (sip, sport, dip, dport, l4[13])))
    return frames


def monitor_times(text, verb):
    """Times of `ip -ts monitor address` lines "Deleted"/"" for the VIP/24."""
    times = []
    for line in text.splitlines():
        if line.startswith("[") and " %s/24 " % VIP in line:
            stamp, rest = line[1:].split("]", 1)
            if rest.strip().startswith("Deleted") == (verb == "del"):
                times.append(datetime.datetime.fromisoformat(stamp).timestamp())
    return times


def first_after(times, t, limit):
    return next((x for x in sorted(times) if t <= x < t + limit), None)


def vmac_steals(frames, old, new_ip, start, end):
    """The frames `old` sent from the VMAC after the new master's first GARP
    in [start, end), as (ms after that GARP, kind). Each one moves the
    bridge's entry for the VMAC back to old's port. A node that still holds
    the VIP answers the gratuitous request with "VIP is-at VMAC". (old's
    capture also holds what the new master flooded: its GARPs and adverts.)"""
    garps = [f[0] for f in frames["c"] if f[3] == "arp" and f[4][2] == f[4][3] == VIP and f[1] == VMAC
             and start <= f[0] < end]
    if not garps:
        return []
    return [(round((f[0] - garps[0]) * 1000, 2), f[3] + (" reply" if f[3] == "arp" and f[4][0] == 2 else ""))
            for f in frames[old] if f[1] == VMAC and garps[0] < f[0] < end
            and not (f[3] == "arp" and f[4][0] == 1 and f[4][2] == f[4][3] == VIP)
            and not (f[3] == "vrrp" and f[4][0] == new_ip)]


def analyse(lab, stops):
    """Per stop, from the captures: b's first advert as master (the move: a
    drops the VIP when it reads it), b's first GARP, the SYNs that reached a
    after the advert and got no SYN-ACK, the SYNs c still sent to a's MAC
    after b's GARP (a GARP ignored within neigh locktime would show here),
    and per failed request where its SYN went and what answered it."""
    frames = {n: read_pcap(lab.path(n + ".pcap")) for n in "abc"}
    mac_name = {MAC["a"]: "a", MAC["b"]: "b", MAC["c"]: "c", VMAC: "vmac"}
    del_a = monitor_times(lab.read("a.addr.log"), "del")
    requests = [line.split() for line in lab.read("requests").splitlines()]
    requests = [(float(t), int(p), r == "ok", w) for t, p, r, w in (x for x in requests if len(x) == 4)]
    is_syn = lambda f: f[3] == "tcp" and f[4][2] == VIP and f[4][4] & 0x12 == 0x02  # noqa: E731
    is_synack = lambda f: f[3] == "tcp" and f[4][0] == VIP and f[4][4] & 0x12 == 0x12  # noqa: E731
    out = []
    for i, rec in enumerate(stops):
        t0, t_restore = rec["t0"], rec["t_restore"]
        t_next = stops[i + 1]["t0"] if i + 1 < len(stops) else float("inf")
        within = lambda f: t0 <= f[0] < t_restore  # noqa: E731
        adv_b = [f[0] for f in frames["c"] if f[3] == "vrrp" and f[4][0] == "192.0.2.2" and within(f)]
        garp_b = [f[0] for f in frames["c"] if f[3] == "arp" and f[4][2] == f[4][3] == VIP
                  and f[4][1] in (MAC["b"], VMAC) and within(f)]
        move = adv_b[0] if adv_b else rec["t_gone_polled"]
        rec["vmac_frames_from_a_after_garp"] = vmac_steals(frames, "a", "192.0.2.2", t0, t_restore)
        rec["vmac_frames_from_b_in_restore"] = vmac_steals(frames, "b", "192.0.2.1", t_restore, min(t_next, time.time()))
        # a's own adverts (priority 150) that still went out after b's first.
        rec["adverts_a_after_move"] = [round((f[0] - move) * 1000, 2) for f in frames["c"] if f[3] == "vrrp"
                                       and f[4][0] == "192.0.2.1" and move <= f[0] < t_restore]
        rec["t_move"], rec["t_garp_b"], rec["garps_b"] = move, garp_b[0] if garp_b else None, len(garp_b)
        rec["t_del_a_monitor"] = first_after(del_a, t0, 15)
        for n in "ab":
            answered = {f[4][3] for f in frames[n] if is_synack(f) and within(f)}
            rec["syns_unanswered_at_" + n] = [round((f[0] - move) * 1000, 2) for f in frames[n]
                                              if is_syn(f) and within(f) and f[4][1] not in answered]
            if n == "a":
                rec["syns_answered_at_a_after_move"] = sum(1 for f in frames["a"] if is_syn(f) and within(f)
                                                           and f[0] >= move and f[4][1] in answered)
        rec["syns_to_a_mac_after_garp"] = sum(1 for f in frames["c"] if is_syn(f) and f[2] == MAC["a"] and within(f)
                                              and rec["t_garp_b"] and f[0] > rec["t_garp_b"])
        rec["arp_replies_from_a_after_move"] = sum(1 for f in frames["a"] if f[3] == "arp" and f[4][0] == 2
                                                   and f[1] == MAC["a"] and f[4][2] == VIP and f[0] >= move
                                                   and within(f))
        fails = []
        for t, port, ok, what in requests:
            if ok or not t0 <= t < t_next:
                continue
            mine = [f for f in frames["c"] if f[3] == "tcp" and port in (f[4][1], f[4][3])
                    and t - 0.01 <= f[0] <= t + REQUEST_TIMEOUT + 0.1]
            syn = next((f for f in mine if f[4][1] == port and f[4][4] & 0x12 == 0x02), None)
            seen = "".join(n for n in "ab" if any(
                f[3] == "tcp" and f[4][1] == port and t - 0.01 <= f[0] <= t + 1.1 for f in frames[n]))
            fails.append({
                "phase": "stop" if t < t_restore else "restore",
                "sent_rel_move_ms": round((t - move) * 1000, 2),
                "sent_rel_garp_ms": round((t - rec["t_garp_b"]) * 1000, 2) if rec["t_garp_b"] else None,
                "port": port, "error": what,
                "syn_to": mac_name.get(syn[2], syn[2]) if syn else None,
                "synack_from": next((mac_name.get(f[1], f[1]) for f in mine if f[4][3] == port and f[4][4] & 0x12 == 0x12), None),
                "rst_from": next((mac_name.get(f[1], f[1]) for f in mine if f[4][3] == port and f[4][4] & 0x04), None),
                "syn_seen_at": seen,
            })
        rec["failures"] = fails
        rec["requests"] = sum(1 for r in requests if t0 <= r[0] < t_next)
        out.append(rec)
    return {"profile": lab.profile, "variant": lab.variant, "rate": lab.rate, "grace": lab.grace, "loadavg": os.getloadavg(), "stops": out}


def brief(times):
    """A list of times in ms, shortened when long."""
    if len(times) <= 6:
        return "[%s]" % ", ".join("%.1f" % t for t in times)
    return "[%.1f, %.1f ... %.1f: %d]" % (times[0], times[1], times[-1], len(times))


def print_result(res):
    stops = res["stops"]
    print("%s / %s, %d stops at %d connections/s, grace %.2f s (load %.1f); times in ms from b's first advert as"
          " master (the move)" % (res["variant"], res["profile"], len(stops), res["rate"], res["grace"], res["loadavg"][0]))
    for s in stops:
        rel = lambda t: "%+.1f" % ((t - s["t_move"]) * 1000) if t else "-"  # noqa: E731
        print("  stop %2d: advert at track+%.0f, b's GARP %s (%d), ip monitor saw a drop %s; at a: %d SYNs answered after"
              " the move, unanswered at a %s, at b %s; a's adverts after the move %s; c sent %d SYNs to a's MAC after the GARP; InAddrErrors a %d b %d; failed %d stop"
              " + %d restore"
              % (s["stop"], (s["t_move"] - s["t0"]) * 1000, rel(s["t_garp_b"]), s["garps_b"], rel(s["t_del_a_monitor"]),
                 s["syns_answered_at_a_after_move"], brief(s["syns_unanswered_at_a"]), brief(s["syns_unanswered_at_b"]),
                 s["adverts_a_after_move"],
                 s["syns_to_a_mac_after_garp"],
                 s["in_addr_errors"]["a"], s["in_addr_errors"]["b"],
                 sum(f["phase"] == "stop" for f in s["failures"]), sum(f["phase"] == "restore" for f in s["failures"])))
        for f in s["failures"][:8]:
            print("      %-7s sent %+9.2f ms (%+9.2f from the GARP): %s; SYN to %s, SYN-ACK from %s, RST from %s,"
                  " seen at %s" % (f["phase"], f["sent_rel_move_ms"], f["sent_rel_garp_ms"] or 0, f["error"], f["syn_to"],
                                   f["synack_from"], f["rst_from"], f["syn_seen_at"] or "-"))
        if len(s["failures"]) > 8:
            print("      ... and %d more" % (len(s["failures"]) - 8))
        if s["fdb_after"]:
            print("      VMAC frames from a after b's GARP: %s; bridge fdb after the stop: %s; in the restore,"
                  " from b after a's GARP: %s" % (s["vmac_frames_from_a_after_garp"][:4], s["fdb_after"],
                                                  s["vmac_frames_from_b_in_restore"][:4]))
        if s.get("catch_on") is not None:
            print("      catch: %r; ARP replies for the VIP from a after the move: %d"
                  % (s["catch_on"], s["arp_replies_from_a_after_move"]))
    lossy = [s for s in stops if any(f["phase"] == "stop" for f in s["failures"])]
    total = sum(sum(f["phase"] == "stop" for f in s["failures"]) for s in stops)
    restore = sum(sum(f["phase"] == "restore" for f in s["failures"]) for s in stops)
    print("SUMMARY %s %s grace %.2f: %d of %d stops lost requests, %d failed, at %s ms (restores: %d failed), %d requests"
          % (res["variant"], res["profile"], res["grace"], len(lossy), len(stops), total,
             "; ".join(brief([f["sent_rel_move_ms"] for f in s["failures"] if f["phase"] == "stop"])
                       for s in stops if any(f["phase"] == "stop" for f in s["failures"])) or "-",
             restore, sum(s["requests"] for s in stops)))
    if res.get("aborted"):
        print("ABORTED after %d stops: %s" % (len(stops), res["aborted"]))


# ---------------------------------------------------- ARP demonstration


def arp_check(args):
    """With b holding the VIP and the VIP caught on a's lo (address or local
    route): who answers ARP for it with arp_ignore 1/arp_announce 2 and with
    the defaults (0/0)?"""
    report = {}
    for variant in ("lo-addr", "lo-route"):
        lab = Lab(args.profile, variant, 20, args.keep)
        try:
            ns = lab.ns["a"]
            report[variant] = {"catch_while_a_holds_vip": catch(lab, True)}
            lab.write_track("a", TRACK_STANDBY)
            lab.wait_for(lambda: lab.holder() == "b", 15, "b to take the VIP")
            report[variant]["routes_a_after_move"] = sh("ip", "-n", ns, "route", "show", "table", "local",
                                                        VIP).stdout.strip()
            report[variant]["addrs_a_after_move"] = sh("ip", "-n", ns, "-o", "-4", "addr").stdout.strip()
            for ignore, announce in ((1, 2), (0, 0)):
                lab.exec_(ns, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=%d" % ignore,
                          "net.ipv4.conf.all.arp_announce=%d" % announce)
                eff = lab.exec_(ns, "sysctl", "-n", "net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.eth0.arp_ignore",
                                "net.ipv4.conf.all.arp_announce", "net.ipv4.conf.eth0.arp_announce").stdout.split()
                report[variant]["arp_ignore=%d arp_announce=%d" % (ignore, announce)] = {
                    "sysctl all/eth0 ignore, all/eth0 announce": eff,
                    "answering_macs": arping(lab),
                    "client_neigh": lab.neigh(),
                }
            catch(lab, False)
        finally:
            lab.close()
    print(json.dumps(report, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


def table(paths):
    """One line per result file (--out): the figures the issue asks for."""
    print("| variant | profile | load | stops with loss | failed (stop) | kinds | sent, ms from b's advert"
          " | advert to GARP, ms (median, max) | failed in restores |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        with open(path) as f:
            res = json.load(f)
        stops = res["stops"]
        fails = [f for s in stops for f in s["failures"] if f["phase"] == "stop"]
        kinds = {}
        for f in fails:
            kind = "in flight (SYN-ACK from a)" if f["synack_from"] == "a" else "SYN lost at %s" % (f["syn_seen_at"] or "?")
            kinds[kind] = kinds.get(kind, 0) + 1
        gaps = sorted((s["t_garp_b"] - s["t_move"]) * 1000 for s in stops if s["t_garp_b"])
        sent = sorted(f["sent_rel_move_ms"] for f in fails)
        print("| %s%s | %s | %.1f | %d/%d%s | %d | %s | %s | %s | %d |" % (
            res["variant"], " grace %.1f s" % res["grace"] if res.get("grace") else "", res["profile"],
            res["loadavg"][0], sum(1 for s in stops if any(f["phase"] == "stop" for f in s["failures"])), len(stops),
            " (aborted)" if res.get("aborted") else "", len(fails),
            ", ".join("%s %d" % kv for kv in sorted(kinds.items())) or "-",
            ("%+.1f .. %+.1f" % (sent[0], sent[-1]) if sent else "-"),
            "%.1f, %.1f" % (gaps[len(gaps) // 2], gaps[-1]) if gaps else "-",
            sum(1 for s in stops for f in s["failures"] if f["phase"] == "restore")))


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--table":
        table(sys.argv[2:])
        return
    if len(sys.argv) == 6 and sys.argv[1] == "--client":
        client(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="conservative")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="baseline")
    p.add_argument("--stops", type=int, default=20)
    p.add_argument("--rate", type=float, default=300)
    p.add_argument("--out")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--grace", type=float, default=0.0,
                   help="seconds from the VIP leaving a to the catch's removal and nginx's SIGQUIT")
    p.add_argument("--arp-check", action="store_true")
    p.add_argument("--full-capture", action="store_true", help="capture every port 80 segment, not only SYN and RST")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the finally blocks clean up
    arp_check(args) if args.arp_check else run(args)


if __name__ == "__main__":
    main()
