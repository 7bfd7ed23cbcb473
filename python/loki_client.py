# SPDX-License-Identifier: Apache-2.0
"""Pure-Python client for lokid's Unix socket (docs/protocol.md), over python3-msgpack.

Frames are a u32 big-endian length followed by one msgpack map. Two APIs:

* ``Client``: synchronous and thread-safe. A background reader thread resolves
  ``concurrent.futures.Future`` objects; ``submit()`` returns one, ``infer()`` waits.
* ``AsyncClient``: asyncio. ``await client.infer(...)``; a reader task resolves futures.

Every request completes exactly once: with the server's reply, with status "timeout"
when its timeout passes first (a later reply is discarded), or "closed" when the
connection ends. Replies are ``Reply`` objects (dataclass) with the protocol's fields.
"""
import asyncio
import itertools
import socket
import struct
import threading
import concurrent.futures
from dataclasses import dataclass, field
from typing import List, Optional

import msgpack

PROTOCOL_VERSION = 1
_HDR = struct.Struct(">I")


@dataclass
class Reply:
    id: Optional[int]
    status: str
    type: str = "infer"
    outputs: List[bytes] = field(default_factory=list)
    path: List[str] = field(default_factory=list)
    accuracy: float = 0.0
    latency_ms: float = 0.0
    retry_after_ms: Optional[float] = None
    error: Optional[str] = None
    extra: dict = field(default_factory=dict)  # hello/status/metrics fields

    @classmethod
    def from_map(cls, m):
        known = {"id", "status", "type", "outputs", "path", "accuracy", "latency_ms",
                 "retry_after_ms", "error"}
        return cls(id=m.get("id"), status=m.get("status", "error"), type=m.get("type", "error"),
                   outputs=list(m.get("outputs", [])), path=list(m.get("path", [])),
                   accuracy=m.get("accuracy", 0.0), latency_ms=m.get("latency_ms", 0.0),
                   retry_after_ms=m.get("retry_after_ms"), error=m.get("error"),
                   extra={k: v for k, v in m.items() if k not in known})


class ProtocolError(Exception):
    pass


def encode_frame(obj):
    body = msgpack.packb(obj, use_bin_type=True)
    return _HDR.pack(len(body)) + body


def infer_request(rid, pipeline, payload, deadline_ms=None, priority=None):
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError("payload must be bytes")
    m = {"type": "infer", "id": rid, "pipeline": pipeline, "payload": bytes(payload)}
    if deadline_ms is not None:
        m["deadline_ms"] = float(deadline_ms)
    if priority is not None:
        m["priority"] = int(priority)
    return m


class _Framer:
    """Accumulates bytes and yields decoded maps; bounded by max_frame."""

    def __init__(self, max_frame):
        self.buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data):
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            (n,) = _HDR.unpack_from(self.buf)
            if n > self.max_frame:
                raise ProtocolError("reply frame of %d bytes is too big" % n)
            if len(self.buf) < 4 + n:
                break
            body = bytes(self.buf[4:4 + n])
            del self.buf[:4 + n]
            out.append(msgpack.unpackb(body, raw=False))
        return out


class Client:
    """Synchronous, thread-safe client with a background reader thread."""

    def __init__(self, path, timeout=None, hello=True, max_frame=64 << 20):
        self.default_timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._wlock = threading.Lock()
        self._lock = threading.Lock()
        self._pending = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._conn_error = None
        self._framer = _Framer(max_frame)
        self.late_replies = 0
        self.server = {}
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        if hello:
            try:
                r = self.call("hello", timeout=5.0, version=PROTOCOL_VERSION,
                              name="loki_client.py")
            except ConnectionError as e:
                # the server may have refused us and closed before our hello went out:
                # its error frame is still in our receive buffer for the reader to find
                self._reader.join(1.0)
                r = Reply(id=None, status="closed", error=self._conn_error or str(e))
            if r.status == "closed" and self._conn_error and r.error != self._conn_error:
                r = Reply(id=None, status="closed", error=self._conn_error)
            if r.status != "ok":
                self.close()
                if r.error and "permission denied" in r.error:
                    raise PermissionError(r.error)
                raise ProtocolError("hello failed: %s %s" % (r.status, r.error))
            self.server = r.extra

    # -- internals --
    def _complete(self, rid, reply):
        with self._lock:
            ent = self._pending.pop(rid, None)
        if ent is None:
            return False
        fut, timer = ent
        if timer:
            timer.cancel()
        if not fut.done():
            fut.set_result(reply)
        return True

    def _read_loop(self):
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    break
                for m in self._framer.feed(data):
                    if not isinstance(m, dict):
                        continue
                    if m.get("id") is None:
                        self._conn_error = "%s: %s" % (m.get("status"), m.get("error"))
                        continue
                    if not self._complete(m["id"], Reply.from_map(m)):
                        self.late_replies += 1
        except (OSError, ProtocolError, ValueError) as e:
            self._conn_error = self._conn_error or str(e)
        finally:
            self._fail_all()

    def _fail_all(self):
        with self._lock:
            self._closed = True
            ents = list(self._pending.items())
            self._pending.clear()
        why = self._conn_error or "connection closed"
        for rid, (fut, timer) in ents:
            if timer:
                timer.cancel()
            if not fut.done():
                fut.set_result(Reply(id=rid, status="closed", error=why))

    def _send(self, m, timeout):
        fut = concurrent.futures.Future()
        rid = m["id"]
        timeout = self.default_timeout if timeout is None else timeout
        timer = None
        if timeout is not None and timeout > 0:
            timer = threading.Timer(timeout, lambda: self._complete(
                rid, Reply(id=rid, status="timeout", error="timed out waiting for the reply")))
            timer.daemon = True
        with self._lock:
            if self._closed:
                raise ConnectionError(self._conn_error or "connection closed")
            self._pending[rid] = (fut, timer)
        if timer:
            timer.start()
        frame = encode_frame(m)
        try:
            with self._wlock:
                self._sock.sendall(frame)
        except OSError as e:
            if self._complete(rid, None):
                raise ConnectionError(str(e)) from e
        return fut

    # -- API --
    def submit(self, pipeline, payload, deadline_ms=None, priority=None, timeout=None):
        """Send an infer request; returns a Future resolving to a Reply."""
        rid = next(self._ids)
        return self._send(infer_request(rid, pipeline, payload, deadline_ms, priority), timeout)

    def infer(self, pipeline, payload, deadline_ms=None, priority=None, timeout=None):
        """Blocking infer; returns a Reply (status may be "timeout" or "closed")."""
        return self.submit(pipeline, payload, deadline_ms, priority, timeout).result()

    def call(self, type_, timeout=None, **fields):
        """Control request: "hello", "status", "metrics" or "ping"; returns a Reply."""
        m = dict(fields, type=type_, id=next(self._ids))
        return self._send(m, timeout).result()

    def ping(self, timeout=5.0):
        return self.call("ping", timeout=timeout).status == "ok"

    def status(self, timeout=5.0):
        return self.call("status", timeout=timeout)

    def metrics(self, timeout=5.0):
        return self.call("metrics", timeout=timeout).extra.get("metrics", {})

    def close(self):
        """Close; pending requests complete with status "closed"."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if threading.current_thread() is not self._reader:
            self._reader.join()
        self._sock.close()
        self._fail_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncClient:
    """asyncio client: ``c = await AsyncClient.connect(path)``; ``await c.infer(...)``."""

    def __init__(self, reader, writer, timeout, max_frame):
        self._r, self._w = reader, writer
        self.default_timeout = timeout
        self._pending = {}
        self._ids = itertools.count(1)
        self._framer = _Framer(max_frame)
        self._conn_error = None
        self._closed = False
        self.late_replies = 0
        self.server = {}
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect(cls, path, timeout=None, hello=True, max_frame=64 << 20):
        reader, writer = await asyncio.open_unix_connection(path)
        c = cls(reader, writer, timeout, max_frame)
        if hello:
            try:
                r = await c.call("hello", timeout=5.0, version=PROTOCOL_VERSION,
                                 name="loki_client.py")
            except ConnectionError as e:
                r = Reply(id=None, status="closed", error=str(e))
            if r.status != "ok":
                await c.close()
                if r.error and "permission denied" in r.error:
                    raise PermissionError(r.error)
                raise ProtocolError("hello failed: %s %s" % (r.status, r.error))
            c.server = r.extra
        return c

    async def _read_loop(self):
        try:
            while True:
                data = await self._r.read(65536)
                if not data:
                    break
                for m in self._framer.feed(data):
                    if not isinstance(m, dict):
                        continue
                    if m.get("id") is None:
                        self._conn_error = "%s: %s" % (m.get("status"), m.get("error"))
                        continue
                    fut = self._pending.pop(m["id"], None)
                    if fut is None or fut.done():
                        self.late_replies += 1
                    else:
                        fut.set_result(Reply.from_map(m))
        except (OSError, ProtocolError, ValueError) as e:
            self._conn_error = self._conn_error or str(e)
        finally:
            self._closed = True
            why = self._conn_error or "connection closed"
            for rid, fut in list(self._pending.items()):
                if not fut.done():
                    fut.set_result(Reply(id=rid, status="closed", error=why))
            self._pending.clear()

    async def _send(self, m, timeout):
        if self._closed:
            raise ConnectionError(self._conn_error or "connection closed")
        rid = m["id"]
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self._w.write(encode_frame(m))
        await self._w.drain()
        timeout = self.default_timeout if timeout is None else timeout
        try:
            limit = timeout if timeout and timeout > 0 else None
            return await asyncio.wait_for(asyncio.shield(fut), limit)
        except asyncio.TimeoutError:
            self._pending.pop(rid, None)  # a later reply is counted late and dropped
            return Reply(id=rid, status="timeout", error="timed out waiting for the reply")

    async def infer(self, pipeline, payload, deadline_ms=None, priority=None, timeout=None):
        rid = next(self._ids)
        return await self._send(infer_request(rid, pipeline, payload, deadline_ms, priority),
                                timeout)

    async def call(self, type_, timeout=None, **fields):
        return await self._send(dict(fields, type=type_, id=next(self._ids)), timeout)

    async def ping(self, timeout=5.0):
        return (await self.call("ping", timeout=timeout)).status == "ok"

    async def close(self):
        self._w.close()
        try:
            await self._w.wait_closed()
        except OSError:
            pass
        await self._task
