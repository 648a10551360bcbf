#!/usr/bin/python3
"""The lab client of scripts/demo and bench/: a steady request loop against
the floating IP, and the
report over its log. Used by scripts/demo; standard library only.

  lab_client.py run URL LOG STOPFILE [RATE] [MAXSECONDS]
      GET URL at RATE per second (a new connection each, 1 s timeout) until
      STOPFILE exists or MAXSECONDS pass. Appends "time ok|fail node-or-error"
      per request to LOG and prints one summary line a second.
  lab_client.py report LOG MARKS
      For each scenario in MARKS ("start_time end_time name" lines): the
      failed requests, the longest run of failures, and when the other node
      first answered.
"""

import http.client
import sys
import threading
import time


def one(host, path, log, lock, counts):
    start = time.time()
    try:
        conn = http.client.HTTPConnection(host, 80, timeout=1.0)
        conn.request("GET", path)
        answer = conn.getresponse()
        body = answer.read().decode().strip()
        conn.close()
        ok = answer.status == 200
        what = body if ok else "status-%d" % answer.status
    except Exception as e:  # the outage is what we count
        ok, what = False, type(e).__name__
    with lock:
        log.write("%.3f %s %s\n" % (start, "ok" if ok else "fail", what))
        counts["ok" if ok else "fail"] += 1
        if ok:
            counts[what] = counts.get(what, 0) + 1


def run(url, log_path, stop_file, rate=100.0, max_seconds=600.0):
    host = url.split("//", 1)[1].split("/", 1)[0]
    path = "/" + url.split("//", 1)[1].split("/", 1)[1] if url.count("/") > 2 else "/"
    lock = threading.Lock()
    counts = {"ok": 0, "fail": 0}
    began = time.time()
    next_at = began
    next_print = began + 1.0
    import os

    with open(log_path, "a", buffering=1) as log:
        while time.time() - began < max_seconds and not os.path.exists(stop_file):
            now = time.time()
            if now >= next_at:
                threading.Thread(target=one, args=(host, path, log, lock, counts), daemon=True).start()
                next_at += 1.0 / rate
            if now >= next_print:
                with lock:
                    served = ", ".join(
                        "%s %d" % (k, v) for k, v in sorted(counts.items()) if k not in ("ok", "fail")
                    )
                    print(
                        "  client   %4d ok %3d failed  (served by: %s)"
                        % (counts["ok"], counts["fail"], served or "nobody"),
                        flush=True,
                    )
                    counts.clear()
                    counts.update({"ok": 0, "fail": 0})
                next_print += 1.0
            time.sleep(max(0.0, min(next_at, next_print) - time.time()))
        time.sleep(1.2)  # let the last requests finish or time out


def read_log(log_path):
    """The request log as sorted (time, ok, node-or-error) rows."""
    rows = []
    with open(log_path) as f:
        for line in f:
            t, result, what = line.split(None, 2)
            rows.append((float(t), result == "ok", what.strip()))
    rows.sort()
    return rows


def window_stats(rows, start, end):
    """Over the requests sent in [start, end): (requests, failed, longest
    outage in s, seconds until another node than the one before answered).
    The longest outage runs from the last success before failures (maybe
    before the window) to the next success, or to `end` if none came."""
    window = [r for r in rows if start <= r[0] < end]
    failed = sum(1 for r in window if not r[1])
    before = [r for r in rows if r[0] < start and r[1]]
    longest, last_ok, fails = 0.0, (before[-1][0] if before else None), 0
    for t, ok, _ in window:
        if ok:
            if last_ok is not None and fails:
                longest = max(longest, t - last_ok)
            last_ok, fails = t, 0
        else:
            fails += 1
    if fails and last_ok is not None:
        longest = max(longest, end - last_ok)
    old = before[-1][2] if before else None
    moved = next((t - start for t, ok, w in window if ok and old and w != old), None)
    return len(window), failed, longest, moved


def report(log_path, marks_path):
    rows = read_log(log_path)
    print("%-24s %8s %8s %12s %10s" % ("scenario", "requests", "failed", "max outage", "moved in"))
    with open(marks_path) as f:
        for line in f:
            start, end, name = line.split(None, 2)
            requests, failed, longest, moved = window_stats(rows, float(start), float(end))
            print(
                "%-24s %8d %8d %11.2fs %10s"
                % (name.strip(), requests, failed, longest, "%.2fs" % moved if moved is not None else "-")
            )


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "run":
        rate = float(sys.argv[5]) if len(sys.argv) > 5 else 100.0
        most = float(sys.argv[6]) if len(sys.argv) > 6 else 600.0
        run(sys.argv[2], sys.argv[3], sys.argv[4], rate, most)
    elif len(sys.argv) == 4 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
