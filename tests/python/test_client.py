# SPDX-License-Identifier: Apache-2.0
"""The Python client against a live frontend (loki_echo_server, spawned here).

usage: test_client.py ECHO_SERVER_BINARY
"""
import asyncio
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import loki_client  # noqa: E402


def start(binary, sock, *extra):
    if os.path.exists(sock):
        os.unlink(sock)
    p = subprocess.Popen([binary, sock, *extra], stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"ready"
    return p


def stop(p):
    p.terminate()
    assert p.wait(10) == 0


def test_sync(sock):
    with loki_client.Client(sock, timeout=5.0) as c:
        assert c.server["pipelines"] == ["traffic", "social"]
        r = c.infer("traffic", b"\x00img", deadline_ms=50, priority=1)
        assert r.status == "ok" and r.outputs == [b"\x00img"] and r.path == ["traffic>echo"], r
        assert r.accuracy == 100.0 and r.latency_ms >= 0
        r = c.infer("nosuch", b"x")
        assert r.status == "unknown_pipeline" and r.error == "unknown pipeline 'nosuch'", r
        assert c.ping()
        st = c.status()
        assert st.extra["ready"] is True and st.extra["connections"] == 1, st
        assert c.metrics()["frontend_requests"] >= 1
        # timeout, then the late reply is discarded
        r = c.infer("traffic", b"sleep:300", timeout=0.05)
        assert r.status == "timeout", r
        # the echo server answers after 300 ms; a busy machine may take longer
        deadline = time.monotonic() + 10
        while c.late_replies < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.late_replies == 1
        # concurrent threads: every request answered exactly once
        results = {}
        lock = threading.Lock()

        def worker(t):
            futs = [(i, c.submit("social", b"%d-%d" % (t, i))) for i in range(200)]
            for i, f in futs:
                r = f.result()
                with lock:
                    results[(t, i)] = r
        ths = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        assert len(results) == 800
        for (t, i), r in results.items():
            assert r.status == "ok" and r.outputs == [b"%d-%d" % (t, i)], r
        # close with requests pending: each completes once with "closed"
        futs = [c.submit("traffic", b"sleep:500") for _ in range(5)]
    for f in futs:
        assert f.result(1).status == "closed"


def test_payload_limit(sock):
    """A payload over the server's limit raises before it is sent; the connection carries on.
    It used to go out: over max_payload it was answered bad_request, and a 2 MiB one (over
    the frame limit, max_payload + 1 KiB) got an error frame and the connection closed."""
    with loki_client.Client(sock, timeout=5.0) as c:
        limit = c.server["max_payload"]
        assert limit == 64 * 1024, c.server  # the echo server's
        r = c.infer("traffic", b"x" * limit)
        assert r.status == "ok" and r.outputs == [b"x" * limit], r.status
        for size in (limit + 1, 2 << 20):
            try:
                c.infer("traffic", b"x" * size)
            except loki_client.PayloadTooLarge as e:
                assert e.size == size and e.limit == limit
                assert "payload of %d bytes exceeds the server's limit of %d bytes" % (
                    size, limit) in str(e), str(e)
            else:
                raise AssertionError("a %d-byte payload was sent" % size)
            try:
                c.submit("traffic", bytearray(size))
            except ValueError:  # PayloadTooLarge is one
                pass
            else:
                raise AssertionError("submit() sent a %d-byte payload" % size)
        assert c.ping() and c.infer("traffic", b"after").status == "ok"
        assert c.max_payload == limit
        assert c.metrics()["frontend_bad_requests"] == 0  # nothing too big reached it
    # without a hello the limit is unknown, as in the C client: nothing is checked here
    with loki_client.Client(sock, timeout=5.0, hello=False) as c:
        assert c.max_payload is None
        r = c.infer("traffic", b"x" * (limit + 1))
        assert r.status == "bad_request" and "exceeds the limit" in r.error, r


def test_bad_frames(sock):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    body = loki_client.msgpack.packb({"type": "infer", "id": 5, "pipeline": 3, "payload": b""})
    s.sendall(struct.pack(">I", len(body)) + body)
    f = loki_client._Framer(1 << 20)
    out = []
    while not out:
        out = f.feed(s.recv(4096))
    assert out[0]["status"] == "bad_request" and out[0]["id"] == 5
    assert out[0]["error"] == "field 'pipeline': expected str, got int", out[0]
    s.sendall(struct.pack(">I", 1 << 30))  # unframeable: error frame, then closed
    out = []
    while not out:
        out = f.feed(s.recv(4096))
    assert out[0]["status"] == "bad_request" and "exceeds the limit" in out[0]["error"]
    assert s.recv(4096) == b""
    s.close()


async def async_main(sock):
    c = await loki_client.AsyncClient.connect(sock, timeout=5.0)
    assert c.max_payload == 64 * 1024
    try:
        await c.infer("traffic", b"x" * (2 << 20))
    except loki_client.PayloadTooLarge as e:
        assert e.size == 2 << 20 and e.limit == 64 * 1024, str(e)
    else:
        raise AssertionError("a 2 MiB payload was sent")
    rs = await asyncio.gather(*[c.infer("traffic", b"a%d" % i) for i in range(300)])
    assert [r.outputs[0] for r in rs] == [b"a%d" % i for i in range(300)]
    r = await c.infer("traffic", b"sleep:300", timeout=0.05)
    assert r.status == "timeout"
    assert await c.ping()
    pending = asyncio.ensure_future(c.infer("traffic", b"sleep:2000"))
    await asyncio.sleep(0.05)
    await c.close()
    assert (await pending).status == "closed"


def test_refused(binary, sock):
    p = start(binary, sock, str(os.getuid() + 1))
    try:
        try:
            loki_client.Client(sock)
        except PermissionError as e:
            assert "permission denied" in str(e)
        else:
            raise AssertionError("uid was not refused")
    finally:
        stop(p)


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="loki-py-") as d:
        sock = os.path.join(d, "echo.sock")
        p = start(binary, sock)
        try:
            test_sync(sock)
            test_payload_limit(sock)
            test_bad_frames(sock)
            asyncio.run(async_main(sock))
        finally:
            stop(p)
        test_refused(binary, sock)
    print("python client: all tests passed")


if __name__ == "__main__":
    main()
