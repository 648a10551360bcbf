#!/usr/bin/python3
"""Role detection latency of handoff's keepalived backend (docs/benchmarks.md),
as root: from the floating IP leaving (or reaching) a local interface to
handoff's `role` log line, the moment the node learns it.

    bench/detect.py [--runs N] [LABEL=PATH/TO/handoff ...]

Without a LABEL=PATH, measures target/release/handoff. For each binary, in a
network namespace of its own (hn<pid><n>, a veth pair, 192.0.2.0/24 only):
`handoff run -- sleep 600` with backend keepalived and vip 192.0.2.100, but
no keepalived: the address is added and removed by this script, through one
`ip -batch -` process (no fork per change), stamped with the wall clock just
before the command is written. Each change waits a random 0.1-1.1 s first,
so that it falls at a random point of the 1 s idle poll. The latency is the
`timestamp` of handoff's JSON `role` line minus that stamp (the same clock,
microseconds); the `ip` command itself is inside it (tens of microseconds).
Prints median, p95 and max per binary and direction, and how each change was
seen (`seen_by`, logged by handoff since event-driven detection; a binary
from before has none). Everything is bounded and removed on exit; only our
own processes are signalled. Prints figures; never fails on noise.
"""

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIP = "192.0.2.100"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def sh(*args):
    subprocess.run(args, check=True, capture_output=True, text=True)


def stamp_ns(text):
    """handoff's JSON timestamp (RFC 3339, UTC, microseconds) in ns."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment - EPOCH) // (datetime.resolution) * 1000


class Node:
    """One handoff in a namespace of its own, and an `ip -batch` in it."""

    def __init__(self, handoff, n):
        self.ns = "hn%d%d" % (os.getpid() % 100000, n)
        self.dir = tempfile.mkdtemp(prefix="handoff-detect.")
        os.chmod(self.dir, 0o755)
        self.handoff = self.ip = None
        sh("ip", "netns", "add", self.ns)
        sh("ip", "-n", self.ns, "link", "add", "vip0", "type", "veth", "peer", "name", "vip1")
        for link in ("lo", "vip0", "vip1"):
            sh("ip", "-n", self.ns, "link", "set", link, "up")
        config = os.path.join(self.dir, "handoff.toml")
        with open(config, "w") as f:
            f.write(
                '[failover]\nbackend = "keepalived"\nfailover_timeout = "2s"\n'
                '[control]\nsocket = "%s/handoff.sock"\nstate_dir = "%s/state"\n'
                '[http]\nlisten = ""\n[log]\nformat = "json"\n'
                '[failover.keepalived]\ntrack_file = "%s/track/handoff.track"\n'
                'vip = ["%s"]\n' % (self.dir, self.dir, self.dir, VIP)
            )
        self.log = os.path.join(self.dir, "handoff.log")
        env = dict(os.environ, RUST_LOG="info")
        env.pop("HANDOFF_CONFIG", None)
        with open(self.log, "w") as err:
            self.handoff = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, handoff, "--config", config, "run", "--",
                 "sleep", "600"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)
        self.ip = subprocess.Popen(
            ["ip", "-n", self.ns, "-batch", "-"], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        self.seen = 0  # log lines already read

    def change(self, verb):
        """`address add|del` of the VIP; the wall clock just before, in ns."""
        now = time.time_ns()
        self.ip.stdin.write("address %s %s/32 dev vip0\n" % (verb, VIP))
        self.ip.stdin.flush()
        return now

    def role(self, wanted, limit=5.0):
        """The next `role` line saying `wanted`: (its time in ns, seen_by)."""
        return self.line("role", "role", wanted, limit)

    def line(self, message, key, wanted, limit):
        """The next line `message` whose `key` is `wanted`: (ns, seen_by)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with open(self.log) as f:
                lines = f.read().splitlines()
            for line in lines[self.seen:]:
                self.seen += 1
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                fields = event.get("fields", {})
                if fields.get("message") == message and fields.get(key) == wanted:
                    return stamp_ns(event["timestamp"]), fields.get("seen_by", "-")
            if self.handoff.poll() is not None:
                raise RuntimeError("handoff exited: see " + self.log)
            time.sleep(0.005)
        raise RuntimeError("no role %s within %.0f s: see %s" % (wanted, limit, self.log))

    def close(self):
        if self.ip and self.ip.poll() is None:
            self.ip.stdin.close()
            self.ip.wait(5)
        if self.handoff and self.handoff.poll() is None:
            self.handoff.send_signal(signal.SIGTERM)
            try:
                self.handoff.wait(10)
            except subprocess.TimeoutExpired:
                self.handoff.kill()
                self.handoff.wait()
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["rm", "-rf", self.dir], capture_output=True)


def measure(handoff, n, runs):
    """Latencies (ms) of the VIP's removals and additions, and their seen_by."""
    node = Node(handoff, n)
    gone, came, seen = [], [], {}
    try:
        # Down at start, then up once the proxy runs (no health check): the
        # level's own role report must not fall into a measurement.
        node.line("level applied", "level", "up", limit=10)
        node.change("add")
        node.role("MASTER", limit=10)
        for _ in range(runs):
            for verb, role, into in (("del", "BACKUP", gone), ("add", "MASTER", came)):
                time.sleep(random.uniform(0.1, 1.1))
                sent = node.change(verb)
                at, by = node.role(role)
                into.append((at - sent) / 1e6)
                seen[by] = seen.get(by, 0) + 1
        node.change("del")  # so that the stop does not wait for a handover
        node.role("BACKUP")
    finally:
        node.close()
    return gone, came, seen


def summary(values):
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * len(ordered))) - 1)]
    return "median %8.2f  p95 %8.2f  max %8.2f" % (
        statistics.median(ordered), p95, ordered[-1])


def main():
    args = sys.argv[1:]
    runs = 20
    if args[:1] == ["--runs"]:
        runs, args = int(args[1]), args[2:]
    contenders = [a.split("=", 1) for a in args] or [
        ["handoff", os.path.join(ROOT, "target", "release", "handoff")]]
    if os.geteuid() != 0:
        sys.exit("bench/detect.py: needs root (network namespaces)")
    print("role detection latency, ms (address change to handoff's role line), "
          "%d runs each, %s" % (runs, datetime.now().strftime("%Y-%m-%d %H:%M")))
    for n, (label, path) in enumerate(contenders):
        gone, came, seen = measure(path, n, runs)
        print("%-10s VIP gone  %s" % (label, summary(gone)))
        print("%-10s VIP came  %s" % (label, summary(came)))
        print("%-10s seen by   %s" % (label, ", ".join(
            "%s %d" % kv for kv in sorted(seen.items()))))


if __name__ == "__main__":
    main()
