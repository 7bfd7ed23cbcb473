# SPDX-License-Identifier: Apache-2.0
"""Pure-Python client for lokid's Unix socket (docs/protocol.md), over python3-msgpack.

Frames are a u32 big-endian length followed by one msgpack map. Two APIs:

* ``Client``: synchronous and thread-safe. A background reader thread resolves
  ``concurrent.futures.Future`` objects; ``submit()`` returns one, ``infer()`` waits.
* ``AsyncClient``: asyncio. ``await client.infer(...)``; a reader task resolves futures.

Every request completes exactly once: with the server's reply, with status "timeout"
when its timeout passes first (a later reply is discarded), or "closed" when the
connection ends. Replies are ``Reply`` objects (dataclass) with the protocol's fields.

Like the C client, both learn the server's payload limit from its hello reply and refuse a
larger payload before sending it (``PayloadTooLarge``): sent, it would be answered
"bad_request", or, beyond the frame limit, end the connection. ``retries=N`` (off by
default) lets ``infer()`` resend a request answered "overloaded" up to N times, each after
the reply's ``retry_after_ms``, within the call's timeout and the request's deadline.
"""
import asyncio
import itertools
import math
import socket
import struct
import threading
import time
import concurrent.futures
from dataclasses import dataclass, field
from typing import List, Optional

import msgpack

PROTOCOL_VERSION = 1
_HDR = struct.Struct(">I")
# when an "overloaded" reply carries no usable retry_after_ms: the frontend's own default
DEFAULT_RETRY_AFTER_MS = 50.0


@dataclass
class Node:
    """One answered sub-query of an infer reply's result tree."""
    task: str
    variant: str
    status: str
    output: bytes
    parent: Optional["Node"] = field(default=None, repr=False)
    children: List["Node"] = field(default_factory=list)

    def walk(self):
        """This node, then its descendants, depth first."""
        yield self
        for c in self.children:
            yield from c.walk()


def _tree(items):
    """The reply's "result" list (parents first) as Node objects; returns the root tasks'."""
    nodes, roots = [], []
    for i, m in enumerate(items or []):
        if not isinstance(m, dict):
            raise ProtocolError("result[%d]: expected a map" % i)
        parent = m.get("parent", -1)
        if not isinstance(parent, int) or parent < -1 or parent >= i:
            raise ProtocolError("result[%d].parent: %r is not -1 or an earlier node" % (i, parent))
        n = Node(task=m.get("task", ""), variant=m.get("variant", ""),
                 status=m.get("status", "ok"), output=bytes(m.get("output", b"")))
        if parent < 0:
            roots.append(n)
        else:
            n.parent = nodes[parent]
            nodes[parent].children.append(n)
        nodes.append(n)
    return roots


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
    attempts: int = 1  # requests sent for this reply (more than 1 after retries)
    result: List[Node] = field(default_factory=list)  # the tree: the root task's node(s)

    @classmethod
    def from_map(cls, m):
        known = {"id", "status", "type", "outputs", "path", "accuracy", "latency_ms",
                 "retry_after_ms", "error", "result"}
        return cls(id=m.get("id"), status=m.get("status", "error"), type=m.get("type", "error"),
                   outputs=list(m.get("outputs", [])), path=list(m.get("path", [])),
                   accuracy=m.get("accuracy", 0.0), latency_ms=m.get("latency_ms", 0.0),
                   retry_after_ms=m.get("retry_after_ms"), error=m.get("error"),
                   result=_tree(m.get("result")),
                   extra={k: v for k, v in m.items() if k not in known})


class ProtocolError(Exception):
    pass


class PayloadTooLarge(ValueError):
    """The payload is larger than the server's limit (``max_payload`` of its hello reply)."""

    def __init__(self, size, limit):
        super().__init__("payload of %d bytes exceeds the server's limit of %d bytes "
                         "(max_payload, from its hello reply); it was not sent" % (size, limit))
        self.size = size
        self.limit = limit


def _check_payload(payload, limit):
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError("payload must be bytes")
    size = memoryview(payload).nbytes
    if limit is not None and size > limit:
        raise PayloadTooLarge(size, limit)


def _server_limit(server):
    """The hello reply's max_payload, or None when unknown (no hello, or not a count)."""
    v = server.get("max_payload")
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _retry_delay_ms(reply):
    v = reply.retry_after_ms
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
        return float(v)
    return DEFAULT_RETRY_AFTER_MS


class _Retry:
    """When and how to resend an infer answered "overloaded" (shared by both clients)."""

    def __init__(self, retries, timeout, deadline_ms):
        self.left = max(0, int(retries or 0))
        self.t0 = time.monotonic()
        self.given = timeout
        self.end = self.t0 + timeout if timeout is not None and timeout > 0 else None
        self.deadline_ms = deadline_ms
        self.attempts = 0

    def timeout(self):
        """Timeout of the next attempt: what is left of the call's (as given: without one)."""
        return self.given if self.end is None else max(self.end - time.monotonic(), 1e-3)

    def deadline(self):
        """deadline_ms of the next attempt: the caller's, less the time spent before it."""
        if self.deadline_ms is None or self.attempts <= 1:
            return self.deadline_ms
        return self.deadline_ms - (time.monotonic() - self.t0) * 1e3

    def delay(self, reply):
        """Seconds to wait before resending after @reply; None: give @reply to the caller."""
        if reply.status != "overloaded" or self.left <= 0:
            return None
        d = _retry_delay_ms(reply) / 1e3
        now = time.monotonic()
        if self.end is not None and now + d >= self.end:
            return None  # no time left for an answer after the wait
        if self.deadline_ms is not None and (now + d - self.t0) * 1e3 >= self.deadline_ms:
            return None  # the deadline would pass before the request is even sent
        self.left -= 1
        return d

    def still_time(self):
        """After a wait: whether the call's timeout and the request's deadline have not passed."""
        now = time.monotonic()
        return (self.end is None or now < self.end) and (
            self.deadline_ms is None or (now - self.t0) * 1e3 < self.deadline_ms)


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

    def __init__(self, path, timeout=None, hello=True, max_frame=64 << 20, retries=0):
        """Connect to lokid's socket at @path. @timeout: default per-call timeout in seconds
        (None: wait for ever). @hello: say hello first (learns the server's pipelines and
        limits into ``server``; without it no payload limit is checked here). @retries:
        default for ``infer()``: resend an "overloaded" request up to this many times."""
        self.default_timeout = timeout
        self.retries = retries
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

    @property
    def max_payload(self):
        """The server's payload limit in bytes from its hello reply; None when unknown."""
        return _server_limit(self.server)

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
        fut.id = rid  # for cancel()
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
        """Send an infer request; returns a Future resolving to a Reply. Sent once: an
        "overloaded" reply is the Future's result (``infer()`` can retry). Raises
        PayloadTooLarge, before sending, for a payload over the server's limit."""
        _check_payload(payload, self.max_payload)
        rid = next(self._ids)
        return self._send(infer_request(rid, pipeline, payload, deadline_ms, priority), timeout)

    def infer(self, pipeline, payload, deadline_ms=None, priority=None, timeout=None,
              retries=None):
        """Blocking infer; returns a Reply (status may be "timeout" or "closed"). With
        @retries (default: the client's), a reply "overloaded" is retried after its
        retry_after_ms while the call's @timeout and the request's @deadline_ms leave room
        (each retry's deadline_ms is what is left of it); the last reply is returned, its
        ``attempts`` counting the requests sent. Raises PayloadTooLarge as submit() does."""
        timeout = self.default_timeout if timeout is None else timeout
        rt = _Retry(self.retries if retries is None else retries, timeout, deadline_ms)
        while True:
            rt.attempts += 1
            r = self.submit(pipeline, payload, rt.deadline(), priority, rt.timeout()).result()
            r.attempts = rt.attempts
            d = rt.delay(r)
            if d is None:
                return r
            time.sleep(d)
            if not rt.still_time():  # the wait overran: what we have is the answer
                return r

    def cancel(self, rid):
        """Ask the server to drop infer request @rid (a submit() Future's ``id``) if nothing of
        it has been batched yet; its Future still resolves once: "cancelled", or its result."""
        frame = encode_frame({"type": "cancel", "id": rid})
        with self._wlock:
            self._sock.sendall(frame)

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

    def __init__(self, reader, writer, timeout, max_frame, retries=0):
        self._r, self._w = reader, writer
        self.default_timeout = timeout
        self.retries = retries
        self._pending = {}
        self._ids = itertools.count(1)
        self._framer = _Framer(max_frame)
        self._conn_error = None
        self._closed = False
        self.late_replies = 0
        self.server = {}
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect(cls, path, timeout=None, hello=True, max_frame=64 << 20, retries=0):
        """As ``Client()``: the same arguments, the same meaning."""
        reader, writer = await asyncio.open_unix_connection(path)
        c = cls(reader, writer, timeout, max_frame, retries)
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

    @property
    def max_payload(self):
        """The server's payload limit in bytes from its hello reply; None when unknown."""
        return _server_limit(self.server)

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

    async def infer(self, pipeline, payload, deadline_ms=None, priority=None, timeout=None,
                    retries=None):
        """As ``Client.infer()``, retries included."""
        _check_payload(payload, self.max_payload)
        timeout = self.default_timeout if timeout is None else timeout
        rt = _Retry(self.retries if retries is None else retries, timeout, deadline_ms)
        while True:
            rt.attempts += 1
            rid = next(self._ids)
            r = await self._send(infer_request(rid, pipeline, payload, rt.deadline(), priority),
                                 rt.timeout())
            r.attempts = rt.attempts
            d = rt.delay(r)
            if d is None:
                return r
            await asyncio.sleep(d)
            if not rt.still_time():
                return r

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
