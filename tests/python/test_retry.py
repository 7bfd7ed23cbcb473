# SPDX-License-Identifier: Apache-2.0
"""The Python client's opt-in retry of "overloaded" replies, against a fake server (here).

The fake server speaks the protocol's framing and answers hello; an infer whose payload is
b"overload:N:R" is answered "overloaded" with retry_after_ms R (R "-": none) the first N times
that payload arrives, then "ok"; b"status:S" is answered with status S. It records when each
infer arrived and its deadline_ms.

usage: test_retry.py
"""
import asyncio
import os
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import loki_client  # noqa: E402


class FakeServer:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.seen = {}  # payload -> [(monotonic time, deadline_ms)]
        self.ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ls.bind(path)
        self.ls.listen(8)
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arrivals(self, payload):
        with self.lock:
            return list(self.seen.get(payload, []))

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _reply(self, m):
        rid, typ = m.get("id"), m.get("type", "infer")
        if typ == "hello":
            return {"type": "hello", "id": rid, "status": "ok", "version": 1,
                    "pipelines": ["p"], "server": "fake", "max_payload": 4096,
                    "max_outstanding": 64}
        if typ != "infer":
            return {"type": typ, "id": rid, "status": "ok"}
        payload = m["payload"]
        with self.lock:
            arr = self.seen.setdefault(payload, [])
            arr.append((time.monotonic(), m.get("deadline_ms")))
            n = len(arr)
        if payload.startswith(b"status:"):
            return {"type": "infer", "id": rid, "status": payload[7:].decode()}
        if payload.startswith(b"overload:"):
            times, after = payload.decode().split(":")[1:3]  # a 4th part tells calls apart
            if n <= int(times):
                r = {"type": "infer", "id": rid, "status": "overloaded",
                     "error": "too many requests in flight"}
                if after != "-":
                    r["retry_after_ms"] = float(after)
                return r
        return {"type": "infer", "id": rid, "status": "ok", "outputs": [payload],
                "path": ["a>b"], "accuracy": 100.0, "latency_ms": 0.1}

    def _serve(self, c):
        f = loki_client._Framer(1 << 20)
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    return
                for m in f.feed(data):
                    c.sendall(loki_client.encode_frame(self._reply(m)))
        except OSError:
            return

    def close(self):
        self.ls.close()
        for c in self.conns:
            c.close()


def gaps(arr):
    return [b[0] - a[0] for a, b in zip(arr, arr[1:])]


def test_sync(srv):
    # off by default: the overloaded reply is the answer, sent once
    with loki_client.Client(srv.path, timeout=5.0) as c:
        r = c.infer("p", b"overload:1:80")
        assert r.status == "overloaded" and r.retry_after_ms == 80 and r.attempts == 1, r
        assert len(srv.arrivals(b"overload:1:80")) == 1
    with loki_client.Client(srv.path, timeout=5.0, retries=3) as c:
        # two refusals, then served: three requests, each after retry_after_ms
        r = c.infer("p", b"overload:2:80")
        assert r.status == "ok" and r.outputs == [b"overload:2:80"] and r.attempts == 3, r
        arr = srv.arrivals(b"overload:2:80")
        assert len(arr) == 3 and all(g >= 0.079 for g in gaps(arr)), gaps(arr)
        # the per-call count wins over the client's
        r = c.infer("p", b"overload:5:10", retries=1)
        assert r.status == "overloaded" and r.attempts == 2, r
        assert len(srv.arrivals(b"overload:5:10")) == 2
        # more refusals than retries: the last refusal is the answer
        r = c.infer("p", b"overload:9:10")
        assert r.status == "overloaded" and r.attempts == 4, r
        # no retry_after_ms in the reply: the frontend's default, 50 ms
        r = c.infer("p", b"overload:1:-")
        assert r.status == "ok" and r.attempts == 2, r
        assert gaps(srv.arrivals(b"overload:1:-"))[0] >= 0.049
        # only "overloaded" is retried
        for s in ("draining", "dropped", "error"):
            r = c.infer("p", b"status:" + s.encode())
            assert r.status == s and r.attempts == 1, r
        # the deadline shrinks by the time spent; a retry that cannot meet it is not sent
        r = c.infer("p", b"overload:9:80", deadline_ms=100)
        assert r.status == "overloaded" and r.attempts == 2, r
        arr = srv.arrivals(b"overload:9:80")
        assert len(arr) == 2 and arr[0][1] == 100 and 0 < arr[1][1] <= 100 - 79, arr
        # nor one whose wait would outlast the call's timeout
        t0 = time.monotonic()
        r = c.infer("p", b"overload:9:500", timeout=0.2)
        assert r.status == "overloaded" and r.attempts == 1, r
        assert time.monotonic() - t0 < 0.4
        # submit() sends once, whatever the client's retries
        assert c.submit("p", b"overload:1:10").result().status == "overloaded"
        assert len(srv.arrivals(b"overload:1:10")) == 1


async def async_main(srv):
    c = await loki_client.AsyncClient.connect(srv.path, timeout=5.0)
    try:
        r = await c.infer("p", b"overload:1:40")  # off by default here too
        assert r.status == "overloaded" and r.attempts == 1, r
        r = await c.infer("p", b"overload:2:60", retries=2)
        assert r.status == "ok" and r.attempts == 3, r
        arr = srv.arrivals(b"overload:2:60")
        assert len(arr) == 3 and all(g >= 0.059 for g in gaps(arr)), gaps(arr)
        # concurrent calls retry independently
        rs = await asyncio.gather(*(c.infer("p", b"overload:1:30:%d" % i, retries=1)
                                    for i in range(5)))
        assert all(r.status == "ok" and r.attempts == 2 for r in rs), rs
    finally:
        await c.close()


def main():
    with tempfile.TemporaryDirectory(prefix="loki-retry-") as d:
        srv = FakeServer(os.path.join(d, "fake.sock"))
        try:
            test_sync(srv)
            print("sync: ok")
            asyncio.run(async_main(srv))
            print("asyncio: ok")
        finally:
            srv.close()
    print("python client retries: all tests passed")


if __name__ == "__main__":
    main()
