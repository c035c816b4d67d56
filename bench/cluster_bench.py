#!/usr/bin/env python3
"""Probes for bench/run_cluster_bench.sh: the parts of the cluster benchmark
that need a monotonic clock and many HTTP requests a second. Standard
library only. Every figure is printed as a `summary NAME key=value ...`
line (bench/lib.sh's bench_value reads them); per-run lines start with
`run`.

  wait-node URL [--projector NAME] [--members N] [--pid P] [--timeout S]
      until /readyz answers 200 (fails at once when process P exited), the projector (if named) has a status on
      that node, and, when the node serves GET /v1/cluster (the membership
      being built in parallel), N members are "up" there.
  wait-mesh URL... --members N [--poll-ms MS] [--timeout S]
      until every node is ready and lists N members up, polling all of
      them from one process (for the cold-start figure).
  owner URL... --projector NAME
      prints "<owner> <epoch>" once some node reports the projector
      running (the owner's own view), else fails after --timeout.
  takeover --pid PID --signal KILL|STOP --projector NAME --old-epoch E URL...
      sends the signal to PID, then polls GET /v1/projectors/NAME on the
      URLs (the survivors) every --poll-ms until one reports state
      "running" with an epoch above E; prints
      `run takeover signal=.. ms=.. new_owner=.. new_epoch=..`. The clock
      starts just before the signal is sent (time.monotonic).
  wait-state URL --projector NAME --state STATE
      until that node reports the projector in STATE.
  writer URL... --rate R
      appends StudentSubscribed events ({"course": "c<k>"}) at R/s in all,
      one thread per node, until SIGTERM; a frozen node stalls only its
      own thread. Prints how many were acknowledged.
  latency --append URL --same URL --cross URL... --rate R --seconds S
      subscribers (GET /v1/subscribe, NDJSON) on the append node and on
      the others, then appends of one event each (POST /v1/append) at R/s
      from --appenders threads on a fixed schedule; each event's data is
      its sequence number. Latency of an event at a subscriber = the time
      the subscriber read its line minus (a) the time the append's reply
      was read ("ack") and (b) the time the request was sent ("send").
"""

import argparse
import http.client
import json
import os
import signal
import sys
import threading
import time
import urllib.parse

monotonic = time.monotonic


def host_port(url):
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port or 80


class client:
    """One keep-alive HTTP connection that reconnects after an error."""

    def __init__(self, url, timeout=2.0):
        self.host, self.port = host_port(url)
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        """(status, body bytes), or (None, error text)."""
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(
                        self.host, self.port, timeout=self.timeout)
                h = dict(headers or {})
                if body is not None:
                    h.setdefault("Content-Type", "application/json")
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException) as e:
                self.close()
                err = str(e) or type(e).__name__
                if attempt == 1 or isinstance(e, TimeoutError):
                    return None, err
        return None, "unreachable"

    def get_json(self, path):
        status, body = self.request("GET", path)
        if status != 200:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def percentile(sorted_values, p):
    """Nearest rank: the smallest value with at least p% at or below it."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1,
                   int(-(-p * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def fmt(v):
    return "nan" if v != v else "%.2f" % v


# ------------------------------------------------------------------ nodes --

def alive(pid):
    """The process runs (a zombie, exited but not yet reaped, does not)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def not_ready(c, projector, members):
    """Why the node behind client c is not ready yet (None: it is)."""
    status, _ = c.request("GET", "/readyz")
    if status != 200:
        return "readyz %s" % status
    if projector and c.get_json("/v1/projectors/" + projector) is None:
        return "no status for projector " + projector
    if members:
        status, body = c.request("GET", "/v1/cluster")
        if status == 200:  # the membership has landed: wait for the mesh
            try:
                view = json.loads(body)
                listed = view.get("members", [])
            except (ValueError, AttributeError):
                view, listed = {}, []
            up = sum(1 for m in listed if m.get("status") == "up")
            if view.get("self") not in {m.get("name") for m in listed}:
                up += 1  # a list of the peers only: count the node
            if up < members:
                return "%d of %d members up" % (up, members)
    return None


def cmd_wait_node(a):
    c = client(a.url, timeout=1.0)
    deadline = monotonic() + a.timeout
    why = "not ready"
    while monotonic() < deadline:
        if a.pid and not alive(a.pid):
            print("wait-node %s: the node (pid %d) exited" % (a.url, a.pid),
                  file=sys.stderr)
            return 1
        why = not_ready(c, a.projector, a.members)
        if why is None:
            return 0
        time.sleep(0.1)
    print("wait-node %s: %s after %.0f s" % (a.url, why, a.timeout),
          file=sys.stderr)
    return 1


def cmd_wait_mesh(a):
    # One process polls every node (a probe per node, started one after the
    # other, would add its own start-up, about 0.3 s each, to the figure).
    clients = {u: client(u, timeout=1.0) for u in a.urls}
    deadline = monotonic() + a.timeout
    why = {u: "not ready" for u in a.urls}
    while monotonic() < deadline:
        for u in list(why):
            w = not_ready(clients[u], None, a.members)
            if w is None:
                del why[u]
            else:
                why[u] = w
        if not why:
            return 0
        time.sleep(a.poll_ms / 1000.0)
    for u, w in why.items():
        print("wait-mesh %s: %s after %.0f s" % (u, w, a.timeout),
              file=sys.stderr)
    return 1


def cmd_owner(a):
    clients = [client(u, timeout=1.0) for u in a.urls]
    deadline = monotonic() + a.timeout
    while monotonic() < deadline:
        for c in clients:
            s = c.get_json("/v1/projectors/" + a.projector)
            if s and s.get("state") == "running" and s.get("owner"):
                print(s["owner"], s["epoch"])
                return 0
        time.sleep(0.05)
    print("owner: no node runs %s after %.0f s" % (a.projector, a.timeout),
          file=sys.stderr)
    return 1


def cmd_wait_state(a):
    c = client(a.url, timeout=1.0)
    deadline = monotonic() + a.timeout
    last = None
    while monotonic() < deadline:
        s = c.get_json("/v1/projectors/" + a.projector)
        if s:
            last = s
            if s.get("state") == a.state:
                print("state %s owner=%s epoch=%s" %
                      (s["state"], s.get("owner"), s.get("epoch")))
                return 0
        time.sleep(0.05)
    print("wait-state %s: not %s after %.0f s (last: %s)" %
          (a.url, a.state, a.timeout, last), file=sys.stderr)
    return 1


def parent_gone(ppid):
    """The bench script that started us died (we were re-parented)."""
    return os.getppid() != ppid


def cmd_takeover(a):
    ppid = os.getppid()
    clients = [client(u, timeout=1.0) for u in a.urls]
    for c in clients:  # open the connections before the clock starts
        c.request("GET", "/healthz")
    sig = {"KILL": signal.SIGKILL, "STOP": signal.SIGSTOP}[a.signal]
    period = a.poll_ms / 1000.0
    t0 = monotonic()
    os.kill(a.pid, sig)
    deadline = t0 + a.timeout
    polls = 0
    while True:
        start = monotonic()
        for c in clients:
            s = c.get_json("/v1/projectors/" + a.projector)
            polls += 1
            if s and s.get("state") == "running" \
                    and int(s.get("epoch", 0)) > a.old_epoch:
                ms = (monotonic() - t0) * 1000
                print("run takeover signal=%s ms=%.1f new_owner=%s "
                      "new_epoch=%s polls=%d" %
                      (a.signal, ms, s.get("owner"), s.get("epoch"), polls))
                return 0
        if start >= deadline or parent_gone(ppid):
            print("run takeover signal=%s ms=timeout polls=%d" %
                  (a.signal, polls))
            return 1
        rest = period - (monotonic() - start)
        if rest > 0:
            time.sleep(rest)


# ----------------------------------------------------------------- writer --

def cmd_writer(a):
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    acked = [0] * len(a.urls)
    failed = [0] * len(a.urls)

    def loop(i, url):
        c = client(url, timeout=10.0)
        period = len(a.urls) / a.rate
        n = 0
        next_at = monotonic()
        while not stop.is_set():
            course = "c%d" % ((n * len(a.urls) + i) % 40)
            body = json.dumps({"events": [{
                "type": "StudentSubscribed",
                "tags": ["course:" + course],
                "data": json.dumps({"course": course})}]})
            status, _ = c.request("POST", "/v1/append", body)
            if status == 200:
                acked[i] += 1
            else:
                failed[i] += 1
            n += 1
            next_at += period
            rest = next_at - monotonic()
            if rest > 0:
                stop.wait(rest)
            else:
                next_at = monotonic()

    threads = [threading.Thread(target=loop, args=(i, u), daemon=True)
               for i, u in enumerate(a.urls)]
    for t in threads:
        t.start()
    ppid = os.getppid()
    while not stop.is_set() and not parent_gone(ppid):
        stop.wait(0.5)
    stop.set()
    # A thread stuck on a frozen node is not waited for.
    print("writer acked=%d failed=%d" % (sum(acked), sum(failed)))
    return 0


# ---------------------------------------------------------------- latency --

class subscriber(threading.Thread):
    """Follows one node's NDJSON subscription and stamps each event."""

    def __init__(self, role, url, query):
        super().__init__(daemon=True)
        self.role, self.url, self.query = role, url, query
        self.received = {}  # sequence number -> monotonic receive time
        self.caught_up = threading.Event()
        self.error = None
        self.conn = None

    def run(self):
        host, port = host_port(self.url)
        try:
            self.conn = http.client.HTTPConnection(host, port, timeout=60)
            path = "/v1/subscribe?" + urllib.parse.urlencode(
                {"query": json.dumps(self.query), "after": "0"})
            self.conn.request("GET", path,
                              headers={"Accept": "application/x-ndjson"})
            r = self.conn.getresponse()
            if r.status != 200:
                self.error = "HTTP %d: %s" % (r.status, r.read()[:200])
                self.caught_up.set()
                return
            while True:
                line = r.readline()
                now = monotonic()
                if not line:
                    break
                f = json.loads(line)
                kind = f.get("kind")
                if kind == "event":
                    self.received.setdefault(int(f["data"]), now)
                elif kind == "caught_up":
                    self.caught_up.set()
                elif kind == "error":
                    self.error = "error frame: %s" % f
                    break
        except (OSError, http.client.HTTPException, ValueError) as e:
            if self.error is None:
                self.error = str(e) or type(e).__name__
        finally:
            self.caught_up.set()

    def close(self):
        try:
            if self.conn is not None and self.conn.sock is not None:
                self.conn.sock.shutdown(2)
        except OSError:
            pass


def cmd_latency(a):
    tag = "lat:%d-%d" % (os.getpid(), int(time.time()))
    query = {"items": [{"types": ["Latency"], "tags": [tag]}]}
    subs = [subscriber("same_node", a.same, query)]
    subs += [subscriber("cross_node", u, query) for u in a.cross]
    for s in subs:
        s.start()
    for s in subs:
        if not s.caught_up.wait(30) or s.error:
            print("latency: subscription on %s failed: %s" %
                  (s.url, s.error or "no caught_up in 30 s"), file=sys.stderr)
            return 1

    total = int(a.rate * a.seconds)
    sent = [0.0] * total
    acked = [None] * total
    lock = threading.Lock()
    next_seq = [0]
    errors = [0]
    t0 = monotonic() + 0.2

    def appender():
        c = client(a.append, timeout=10.0)
        while True:
            with lock:
                i = next_seq[0]
                next_seq[0] += 1
            if i >= total:
                return
            due = t0 + i / a.rate
            rest = due - monotonic()
            if rest > 0:
                time.sleep(rest)
            body = json.dumps({"events": [
                {"type": "Latency", "tags": [tag], "data": str(i)}]})
            sent[i] = monotonic()
            status, _ = c.request("POST", "/v1/append", body)
            if status == 200:
                acked[i] = monotonic()
            else:
                with lock:
                    errors[0] += 1

    threads = [threading.Thread(target=appender, daemon=True)
               for _ in range(a.appenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = monotonic()
    ok = [i for i in range(total) if acked[i] is not None]
    # Wait for the stragglers, then stop the subscribers.
    deadline = monotonic() + a.drain
    while monotonic() < deadline:
        if all(all(i in s.received for i in ok) for s in subs):
            break
        time.sleep(0.05)
    for s in subs:
        s.close()

    ack_ms = sorted((acked[i] - sent[i]) * 1000 for i in ok)
    print("summary latency_appends events=%d acked=%d errors=%d rate=%g "
          "achieved_rate=%.1f appenders=%d append_p50_ms=%s append_p99_ms=%s "
          "append_max_ms=%s" %
          (total, len(ok), errors[0], a.rate, len(ok) / max(end - t0, 1e-9),
           a.appenders, fmt(percentile(ack_ms, 50)),
           fmt(percentile(ack_ms, 99)), fmt(ack_ms[-1] if ack_ms else
                                            float("nan"))))
    by_role = {}
    for s in subs:
        by_role.setdefault(s.role, []).append(s)
    for role, group in by_role.items():
        from_ack, from_send, missing = [], [], 0
        for s in group:
            for i in ok:
                got = s.received.get(i)
                if got is None:
                    missing += 1
                    continue
                from_ack.append((got - acked[i]) * 1000)
                from_send.append((got - sent[i]) * 1000)
        from_ack.sort()
        from_send.sort()
        before_ack = sum(1 for v in from_ack if v < 0)
        print("summary latency_%s subscribers=%d received=%d missing=%d "
              "ack_p50_ms=%s ack_p99_ms=%s ack_max_ms=%s "
              "send_p50_ms=%s send_p99_ms=%s send_max_ms=%s "
              "before_ack=%d" %
              (role, len(group), len(from_ack), missing,
               fmt(percentile(from_ack, 50)), fmt(percentile(from_ack, 99)),
               fmt(from_ack[-1] if from_ack else float("nan")),
               fmt(percentile(from_send, 50)), fmt(percentile(from_send, 99)),
               fmt(from_send[-1] if from_send else float("nan")),
               before_ack))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    w = sub.add_parser("wait-node")
    w.add_argument("url")
    w.add_argument("--projector")
    w.add_argument("--members", type=int, default=0)
    w.add_argument("--pid", type=int, default=0)
    w.add_argument("--timeout", type=float, default=60)
    w.set_defaults(fn=cmd_wait_node)

    m = sub.add_parser("wait-mesh")
    m.add_argument("urls", nargs="+")
    m.add_argument("--members", type=int, required=True)
    m.add_argument("--poll-ms", type=float, default=20)
    m.add_argument("--timeout", type=float, default=60)
    m.set_defaults(fn=cmd_wait_mesh)

    o = sub.add_parser("owner")
    o.add_argument("urls", nargs="+")
    o.add_argument("--projector", required=True)
    o.add_argument("--timeout", type=float, default=30)
    o.set_defaults(fn=cmd_owner)

    s = sub.add_parser("wait-state")
    s.add_argument("url")
    s.add_argument("--projector", required=True)
    s.add_argument("--state", required=True)
    s.add_argument("--timeout", type=float, default=20)
    s.set_defaults(fn=cmd_wait_state)

    t = sub.add_parser("takeover")
    t.add_argument("urls", nargs="+")
    t.add_argument("--pid", type=int, required=True)
    t.add_argument("--signal", choices=["KILL", "STOP"], required=True)
    t.add_argument("--projector", required=True)
    t.add_argument("--old-epoch", type=int, required=True)
    t.add_argument("--poll-ms", type=float, default=10)
    t.add_argument("--timeout", type=float, default=20)
    t.set_defaults(fn=cmd_takeover)

    wr = sub.add_parser("writer")
    wr.add_argument("urls", nargs="+")
    wr.add_argument("--rate", type=float, default=50)
    wr.set_defaults(fn=cmd_writer)

    la = sub.add_parser("latency")
    la.add_argument("--append", required=True)
    la.add_argument("--same", required=True)
    la.add_argument("--cross", nargs="+", required=True)
    la.add_argument("--rate", type=float, default=500)
    la.add_argument("--seconds", type=float, default=10)
    la.add_argument("--appenders", type=int, default=4)
    la.add_argument("--drain", type=float, default=5)
    la.set_defaults(fn=cmd_latency)

    a = p.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
