# SPDX-License-Identifier: Apache-2.0
"""The HTTP front door (KServe v2) of a live lokid on the sim backend, through Python's
http.client only: health and metadata, infer in JSON and with the binary-data extension, the
result tree, errors (404, 400, 405, 413), exactly one response per request under concurrency,
503 with Retry-After when lokid refuses for load, a drain that answers what was in flight, and
HTTPS with a throw-away certificate (when openssl is there). Loopback only; every wait bounded.

usage: test_http_front.py LOKID_BINARY
"""
import base64
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# tests/lokid/small.yaml with a 5 s SLO: a loaded machine must not turn a check into a drop
with open(os.path.join(HERE, "..", "lokid", "small.yaml")) as _f:
    SMALL_TEXT = _f.read().replace("slo_ms: 200", "slo_ms: 5000")

# one slow stage (1 s a query, one at a time), one query in flight at most, 4 KiB payloads,
# and the front door configured in the file, not on the command line
SLOW = """
gpus: {count: 1, memory_mb: 16384}
planner: {interval_ms: 500, min_dwell_s: 600, fallback: false}
frontend:
  max_inflight: 1
  max_payload_bytes: 4096
  idle_timeout_s: 1
  http: {enabled: true, address: 127.0.0.1, port: 0, max_connections: 64,
         connection_timeout_s: 10, request_timeout_s: 20, lokid_connections: 1}
pipelines:
  - name: slow
    slo_ms: 5000
    tasks:
      - name: wait
        variants:
          - {name: w, accuracy: 90, startup_ms: 1, batch_sizes: [1], latency_ms: [1000]}
"""

fails = []


def check(cond, what):
    if not cond:
        fails.append(what)
        print("FAIL:", what, file=sys.stderr)
    return cond


class Lokid:
    """A lokid with its front door; the port comes from its log line."""

    def __init__(self, lokid, topology, tmp, name, extra=()):
        self.log = os.path.join(tmp, name + ".log")
        self.errf = open(self.log, "wb")
        self.sock = os.path.join(tmp, name + ".sock")
        self.p = subprocess.Popen([lokid, "--topology", topology, "--socket", self.sock,
                                   "--initial-demand", "20",
                                   *extra], stdout=subprocess.DEVNULL, stderr=self.errf)
        self.port, self.scheme, self.termed = None, "http", False
        deadline = time.time() + 20
        while time.time() < deadline and self.port is None:
            with open(self.log, "rb") as f:
                m = re.search(rb"front door \(KServe v2\) on (https?)://[^\"]*:(\d+)/v2", f.read())
            if m:
                self.scheme, self.port = m.group(1).decode(), int(m.group(2))
            elif self.p.poll() is not None:
                break
            else:
                time.sleep(0.05)
        if self.port is None:
            self.p.kill()
            raise SystemExit("lokid did not serve HTTP: " + open(self.log).read())

    def conn(self, ctx=None, timeout=10):
        if self.scheme == "https":
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def wait_ready(self, ctx=None):
        deadline = time.time() + 20
        while time.time() < deadline:
            st, _, _ = call(self.conn(ctx), "GET", "/v2/health/ready")
            if st == 200:
                return True
            time.sleep(0.05)
        return False

    def term(self):
        # a second SIGTERM would stop the drain, or, once lokid has stopped listening for
        # signals on its way out, end it with the signal
        if not self.termed and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        self.termed = True

    def stop(self):
        """SIGTERM (once): lokid drains and exits 0."""
        self.term()
        try:
            rc = self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        self.errf.close()
        if rc != 0:
            with open(self.log) as f:
                print("lokid exit %d; its log ends:\n%s" % (rc, f.read()[-2000:]),
                      file=sys.stderr)
        return rc


def front_stats(d):
    """What lokid logged as its front door stopped: {"requests", "2xx", "4xx", "5xx", "infers",
    "connects"}, or {} when it did not."""
    with open(d.log) as f:
        m = re.search(r"http front door stopped: (\d+) requests answered \((\d+) 2xx, (\d+) 4xx, "
                      r"(\d+) 5xx\), (\d+) infer requests handed to lokid, (\d+) connections",
                      f.read())
    keys = ("requests", "2xx", "4xx", "5xx", "infers", "connects")
    return dict(zip(keys, map(int, m.groups()))) if m else {}


def call(c, method, path, body=None, headers=None):
    """One request on connection @c: (status, headers dict, body bytes)."""
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def infer_json(data, content_type=None, **extra):
    inp = {"name": "payload", "datatype": "BYTES", "shape": [1], "data": [data]}
    if content_type:
        inp["parameters"] = {"content_type": content_type}
    return json.dumps({"inputs": [inp], **extra})


def infer_binary(payload, binary_output=False, **extra):
    hdr = {"inputs": [{"name": "payload", "datatype": "BYTES", "shape": [1],
                       "parameters": {"binary_data_size": 4 + len(payload)}}], **extra}
    if binary_output:
        hdr["outputs"] = [{"name": "output", "parameters": {"binary_data": True}}]
    h = json.dumps(hdr).encode()
    return h + struct.pack("<I", len(payload)) + payload, {
        "Inference-Header-Content-Length": str(len(h)),
        "Content-Type": "application/octet-stream"}


def check_small_ok(st, body, what):
    """small.yaml: detect -> classify with constant fan-out 3."""
    if not check(st == 200, "%s: status %d %s" % (what, st, body[:200])):
        return None
    j = json.loads(body)
    out = j["outputs"][0]
    check(out["name"] == "output" and out["datatype"] == "BYTES" and out["shape"] == [3],
          "%s: output %s" % (what, out))
    check(j["loki"]["status"] == "ok" and 0 < j["loki"]["accuracy"] <= 100,
          "%s: loki %s" % (what, j["loki"]))
    res = j["loki"].get("result", [])
    check(len(res) == 4 and res[0]["task"] == "detect" and res[0]["parent"] == -1 and
          all(n["task"] == "classify" and n["parent"] == 0 for n in res[1:]),
          "%s: result tree %s" % (what, res))
    # the leaves of the tree are the outputs
    check(sorted(n["output"] for n in res[1:]) == sorted(out["data"]),
          "%s: outputs are not the tree's leaves" % what)
    return j


def test_small(d):
    c = d.conn()
    st, h, body = call(c, "GET", "/v2/health/live")
    check(st == 200 and json.loads(body) == {"live": True}, "live: %d %s" % (st, body))
    check(d.wait_ready(), "ready within 20 s")
    st, h, body = call(c, "GET", "/v2")
    check(st == 200 and json.loads(body)["name"] == "lokid", "server metadata %s" % body)
    st, h, body = call(c, "GET", "/v2/models/small")
    m = json.loads(body)
    check(st == 200 and m["name"] == "small" and m["platform"] == "loki" and
          m["inputs"] == [{"name": "payload", "datatype": "BYTES", "shape": [1]}] and
          m["loki"]["root"] == "detect" and m["loki"]["slo_ms"] == 5000,
          "model metadata %d %s" % (st, body))
    st, _, _ = call(c, "GET", "/v2/models/small/ready")
    check(st == 200, "model ready %d" % st)

    # JSON: the bytes as a string, then base64, with an id; all on one kept-alive connection
    st, h, body = call(c, "POST", "/v2/models/small/infer", infer_json("frame-1"))
    check(h.get("content-type") == "application/json", "content type %s" % h)
    check_small_ok(st, body, "infer json")
    st, h, body = call(c, "POST", "/v2/models/small/infer",
                       infer_json(base64.b64encode(b"\x00\xff").decode(), "base64", id="r-42",
                                  parameters={"deadline_ms": 5000, "loki_result": True}))
    j = check_small_ok(st, body, "infer base64")
    check(j and j.get("id") == "r-42" and j.get("model_name") == "small", "id echoed: %s" % j)
    st, h, body = call(c, "POST", "/v2/models/small/infer",
                       infer_json("x", parameters={"loki_result": False}))
    check(st == 200 and "result" not in json.loads(body)["loki"], "loki_result false")

    # the binary-data extension both ways: JSON header, then Triton's BYTES elements
    body, hdrs = infer_binary(b"\x00\x01\x02binary\xff", binary_output=True)
    st, h, data = call(c, "POST", "/v2/models/small/infer", body, hdrs)
    if check(st == 200, "infer binary: %d %s" % (st, data[:200])):
        hl = int(h.get("inference-header-content-length", "0"))
        check(h.get("content-type") == "application/octet-stream" and 0 < hl < len(data),
              "binary response headers %s" % h)
        j = json.loads(data[:hl])
        size = j["outputs"][0]["parameters"]["binary_data_size"]
        raw, elems = data[hl:], []
        check(size == len(raw), "binary_data_size %d, %d bytes" % (size, len(raw)))
        while len(raw) >= 4:
            n = struct.unpack("<I", raw[:4])[0]
            elems.append(raw[4:4 + n])
            raw = raw[4 + n:]
        check(len(elems) == 3 and not raw, "three BYTES elements: %s" % elems)
        leaves = [base64.b64decode(n["output"]) for n in j["loki"]["result"][1:]]
        check(sorted(elems) == sorted(leaves), "binary outputs are the tree's leaves")
    # binary in, JSON out
    body, hdrs = infer_binary(b"in binary")
    st, h, data = call(c, "POST", "/v2/models/small/infer", body, hdrs)
    check_small_ok(st, data, "binary request, JSON response")

    # refusals, each with a KServe error body
    for method, path, body, want in [
            ("POST", "/v2/models/nosuch/infer", infer_json("x"), 404),
            ("GET", "/v2/models/nosuch", None, 404),
            ("GET", "/v2/models/nosuch/ready", None, 404),
            ("GET", "/v2/nothing", None, 404),
            ("GET", "/v2/models/small/versions/1", None, 404),
            ("POST", "/v2/models/small/infer", "{not json", 400),
            ("POST", "/v2/models/small/infer", json.dumps({"inputs": []}), 400),
            ("POST", "/v2/models/small/infer",
             json.dumps({"inputs": [{"name": "p", "datatype": "FP32", "shape": [1],
                                     "data": [1.0]}]}), 400),
            ("GET", "/v2/models/small/infer", None, 405),
            ("POST", "/v2/health/ready", "", 405)]:
        st, h, data = call(c, method, path, body)
        check(st == want and "error" in json.loads(data),
              "%s %s: %d %s, want %d" % (method, path, st, data[:120], want))
    body, hdrs = infer_binary(b"abc")
    hdrs["Inference-Header-Content-Length"] = "oops"
    st, _, data = call(d.conn(), "POST", "/v2/models/small/infer", body, hdrs)
    check(st == 400, "bad Inference-Header-Content-Length: %d %s" % (st, data))

    # several clients at once: each request gets exactly one response, its own. lokid may
    # shed some of the burst on a loaded machine (its planner re-plans for it): those must be
    # lokid's own answers, mapped (503 overloaded, 504 dropped, 500 error), never the front
    # door's
    got, lock = {}, threading.Lock()

    def client(t):
        cc = d.conn()
        for i in range(15):
            rid = "t%d-%d" % (t, i)
            st, _, body = call(cc, "POST", "/v2/models/small/infer",
                               infer_json(rid, id=rid, parameters={"loki_result": False}))
            j = json.loads(body)
            want = {200: "ok", 503: "overloaded", 504: "dropped", 500: "error"}.get(st)
            with lock:
                got.setdefault(rid, []).append(
                    (j.get("id") == rid, st == 200 or j.get("loki", {}).get("status") == want))
                if st != 200:
                    print("concurrent %s: %d %s" % (rid, st, body[:300]), file=sys.stderr)
    ths = [threading.Thread(target=client, args=(t,)) for t in range(6)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(60)
    check(len(got) == 90 and all(v == [(True, True)] for v in got.values()),
          "90 concurrent requests, one answer each with its id, lokid's status: %s" %
          [kv for kv in got.items() if kv[1] != [(True, True)]][:5])
    print("small: health, metadata, infer json/base64/binary, refusals, 90 concurrent: done")


def test_refused_starts(lokid, tmp, small, taken):
    """Start-up refusals, before any worker: a taken port; lokid's uid not allowed on its own
    socket (the front door is a client of it)."""
    r = subprocess.run([lokid, "--topology", small, "--socket", os.path.join(tmp, "b.sock"),
                        "--http-port", str(taken)], capture_output=True, text=True, timeout=20)
    check(r.returncode == 1 and ("cannot serve HTTP on 127.0.0.1 port %d" % taken) in r.stderr,
          "taken port: exit %d, %s" % (r.returncode, r.stderr[-300:]))
    other = os.path.join(tmp, "uids.yaml")
    with open(other, "w") as f:
        f.write(SMALL_TEXT.replace("frontend:\n", "frontend:\n  allowed_uids: [%d]\n" %
                                   (os.geteuid() + 1)))
    r = subprocess.run([lokid, "--topology", other, "--socket", os.path.join(tmp, "c.sock"),
                        "--http-port", "0"], capture_output=True, text=True, timeout=20)
    check(r.returncode == 2 and "allowed_uids does not list lokid's uid" in r.stderr,
          "uid not allowed: exit %d, %s" % (r.returncode, r.stderr[-300:]))


def test_slow(d):
    """max_inflight 1, 1 s a query: keep-alive through the idle timeout, payload limits,
    overload."""
    check(d.wait_ready(), "slow: ready within 20 s")
    # lokid closes connections idle for 1 s: the front door's keep-alive pings hold its own
    time.sleep(2.5)
    st, _, data = call(d.conn(), "POST", "/v2/models/slow/infer", infer_json("after idle"))
    check(st == 200, "after 2.5 s idle: %d %s" % (st, data))
    try:
        sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
        import loki_client
        with loki_client.Client(d.sock, timeout=5) as c:
            m = c.metrics()
            prom = c.call("metrics", timeout=30, format="prometheus").extra.get("report", "")
        check(m.get("frontend_idle_timeouts") == 0,
              "the front door's connection was closed idle: %s" % m)
        # lokid's exposition carries the front door's counters: 2xx so far, 4xx none yet
        ok2 = re.search(r'^loki_http_requests_total\{code="2xx"\} ([0-9]+)$', prom, re.M)
        check(ok2 and int(ok2.group(1)) >= 1 and
              re.search(r"^loki_http_infer_requests_total [1-9][0-9]*$", prom, re.M) and
              re.search(r"^loki_http_lokid_connects_total [1-9][0-9]*$", prom, re.M),
              "the front door's counters in lokid's Prometheus text: %s" %
              [l for l in prom.splitlines() if l.startswith("loki_http")])
    except ImportError:
        print("slow: idle check through loki_client skipped (no msgpack)")
    # 413: a payload over max_payload_bytes (4096), and a body over the budget (read no further)
    body, hdrs = infer_binary(b"x" * 5000)
    st, _, data = call(d.conn(), "POST", "/v2/models/slow/infer", body, hdrs)
    check(st == 413 and b"4096" in data, "payload over the limit: %d %s" % (st, data))
    st, _, data = call(d.conn(), "POST", "/v2/models/slow/infer", b"{" + b" " * 200000 + b"}")
    check(st == 413, "body over the budget: %d %s" % (st, data))

    # overload: four at once against one query in flight; the refused get 503 + Retry-After
    res, lock = [], threading.Lock()

    def one(i):
        try:
            st, h, data = call(d.conn(), "POST", "/v2/models/slow/infer", infer_json("q%d" % i))
        except OSError as e:  # refused: lokid had closed its port (not an accepted request)
            st, h, data = -1, {}, json.dumps({"error": str(e)}).encode()
        with lock:
            res.append((st, h.get("retry-after"), json.loads(data).get("loki", {}).get("status")))
    ths = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(30)
    ok = [r for r in res if r[0] == 200]
    over = [r for r in res if r[0] == 503]
    check(len(res) == 4 and ok and over and len(ok) + len(over) == 4,
          "overload: 200s and 503s, nothing else: %s" % res)
    check(all(r[1] == "1" and r[2] == "overloaded" for r in over),
          "503 overloaded with Retry-After: 1: %s" % over)

    print("slow: idle, 413s, overload %s: done" % sorted(r[0] for r in ok + over))


def in_flight(d, timeout=5):
    """Wait until lokid has a query in flight (its status, through loki_client); without
    msgpack, a generous sleep."""
    try:
        sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
        import loki_client
    except ImportError:
        time.sleep(0.3)
        return
    with loki_client.Client(d.sock, timeout=5) as c:
        deadline = time.time() + timeout
        while time.time() < deadline and not c.status().extra.get("inflight"):
            time.sleep(0.01)


def test_drain(d):
    """A fresh slow lokid (no burst in its demand estimate, so admission takes the query)."""
    check(d.wait_ready(), "drain: ready within 20 s")
    res, lock = [], threading.Lock()

    def one(i):
        st, h, data = call(d.conn(), "POST", "/v2/models/slow/infer", infer_json("q%d" % i))
        with lock:
            res.append((st, h.get("retry-after"), json.loads(data).get("loki", {}).get("status")))
    # drain: SIGTERM with one query in flight (1 s); it is answered 200, and queries sent
    # after the SIGTERM get 503 "draining" with Connection: close
    first = threading.Thread(target=one, args=(10,))
    first.start()
    in_flight(d)
    d.term()
    time.sleep(0.03)
    late, llock = [], threading.Lock()

    def after(i):
        try:
            st, h, data = call(d.conn(), "POST", "/v2/models/slow/infer", infer_json("l%d" % i))
            r = (st, h.get("connection"), json.loads(data).get("loki", {}).get("status"))
        except OSError as e:  # refused: lokid had closed its port (not an accepted request)
            r = (-1, None, str(e))
        with llock:
            late.append(r)
    ths = [threading.Thread(target=after, args=(i,)) for i in range(4)]
    for t in ths:
        t.start()
    for t in ths + [first]:
        t.join(30)
    check(len(res) == 1 and res[0][0] == 200, "in flight at SIGTERM: %s" % res)
    check(len(late) == 4 and all(r[0] == 503 for r in late) and
          any(r[2] == "draining" and r[1] == "close" for r in late),
          "sent while draining: %s" % late)
    check(d.stop() == 0, "lokid exits 0 after the drain")
    print("drain: in flight %s, sent while draining %s: done" % (res, late))


def test_tls(lokid, tmp):
    if not shutil.which("openssl"):
        print("https: skipped (no openssl)")
        return
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    topo = os.path.join(tmp, "tls.yaml")
    text = SMALL_TEXT.replace("frontend:\n", "frontend:\n  http: {enabled: true, port: 0, "
                        "tls_cert: %s, tls_key: %s}\n" % (cert, key))
    with open(topo, "w") as f:
        f.write(text)
    d = Lokid(lokid, topo, tmp, "tls")
    try:
        check(d.scheme == "https", "https in the log line")
        ctx = ssl.create_default_context(cafile=cert)
        check(d.wait_ready(ctx), "https: ready")
        st, _, body = call(d.conn(ctx), "POST", "/v2/models/small/infer", infer_json("tls"))
        check_small_ok(st, body, "https infer")
        # plain HTTP to the TLS port gets no HTTP answer
        try:
            st, _, _ = call(http.client.HTTPConnection("127.0.0.1", d.port, timeout=5), "GET",
                            "/v2/health/live")
            check(st != 200, "plain HTTP on the HTTPS port answered 200")
        except (http.client.HTTPException, OSError):
            pass
        print("https: ready and infer with a verified certificate: done")
    finally:
        check(d.stop() == 0, "https lokid exits 0")


def main():
    lokid = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="loki-http-")
    try:
        small = os.path.join(tmp, "small.yaml")
        with open(small, "w") as f:
            f.write(SMALL_TEXT)
        d = Lokid(lokid, small, tmp, "small", ["--http-port", "0"])
        try:
            test_small(d)
            test_refused_starts(lokid, tmp, small, d.port)
        finally:
            check(d.stop() == 0, "small lokid exits 0")
        st = front_stats(d)
        # two connections to lokid (lokid_connections' default), never made again
        check(st.get("connects") == 2 and st["infers"] == 95 and st["2xx"] >= 10 and
              st["4xx"] == 11 and st["requests"] == st["2xx"] + st["4xx"] + st["5xx"],
              "small: the front door's counters at stop: %s" % st)
        slow = os.path.join(tmp, "slow.yaml")
        with open(slow, "w") as f:
            f.write(SLOW)
        d = Lokid(lokid, slow, tmp, "slow", ["--initial-demand", "0.5"])  # within its 1 qps
        try:
            test_slow(d)
        finally:
            d.stop()
        st = front_stats(d)
        # its one connection held through lokid's 1 s idle timeout by pings: made once
        check(st.get("connects") == 1, "slow: connections to lokid made: %s" % st)
        d = Lokid(lokid, slow, tmp, "drain", ["--initial-demand", "0.5"])
        try:
            test_drain(d)
        finally:
            d.stop()
        test_tls(lokid, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if fails:
        print("%d checks failed" % len(fails), file=sys.stderr)
        sys.exit(1)
    print("http front door: all checks passed")


if __name__ == "__main__":
    main()
