"""The HTTP side of `serve`: /metrics, /doctor, /healthz, a landing page.

One asyncio event loop reads and parses every connection; only a request
that arrived whole reaches the work that costs (a /metrics or /doctor answer,
in a small thread pool). Until issue 17 this was a thread per connection
with a socket timeout, which bounds one recv, not a request: a client sending
a byte every 5 s held a thread forever (5,000 such clients made 5,016 threads
and 182 MB), a request cut off by its client was answered as a full scrape,
and a GET's body was parsed as a second request (behind kube-rbac-proxy's
`--allow-paths=/metrics`, a way to reach /doctor). What holds now:

- At most `max_connections` connections (MAX_CONNECTIONS, less what the fd
  limit cannot hold). Past it, the connection that has waited longest for a
  request is closed to make room; when every connection is busy answering,
  the new one is closed. A flood of idle or slow connections cannot lock
  Prometheus out: its connection sends its request at once and is then never
  the one chosen. (Stopping to accept would lock it out instead.)
- A request's head must arrive whole within REQUEST_TIMEOUT (from the
  connection's start for its first request, from its first byte on a
  kept-alive connection, which may idle IDLE_TIMEOUT between requests) and
  within httprequest's size limits. One that does not is closed without an
  answer (or answered 400/414/431 if it broke a limit or the syntax).
- A request announcing a body is refused with 413 and the connection closed;
  no body byte is ever parsed (httprequest.py).
- An answer is written under flow control (a slow reader holds at most
  WRITE_CHUNK bytes of the process's memory besides the shared collection
  text) and must be handed to the kernel whole within WRITE_TIMEOUT, else the
  connection is dropped.
- A scraper waits for the shared collection until its own deadline, on the
  loop, without a thread (Exporter.scrape_timeout, scrape.Collection).

Counted in cri_exporter_http_* (docs/metrics.md). TLS (issue 18) can wrap
the same protocol: loop.create_server(..., ssl=context) in `_serve`.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures as cf
import email.utils
import html
import resource
import socket
import struct
import threading
import time
from http import HTTPStatus

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cri_exporter import __version__
from cri_exporter.exporter import Exporter
from cri_exporter.exposition import CONTENT_TYPE
from cri_exporter.httprequest import BadRequest, Request, head_end, parse_head

log = structlog.get_logger(__name__)

MAX_CONNECTIONS = 1000
# Descriptors kept for the rest of the agent (CRI channel, cgroup and /proc
# reads, the doctor child's pipes, logs) when the fd limit bounds connections.
FD_RESERVE = 128
BACKLOG = 1024  # the kernel's queue of connections not yet accepted
# Connections asyncio accepts in one go before any is admitted or refused. The
# open fds can pass max_connections by about three bursts for a moment
# (accepted and not yet admitted: two loop turns; dropped and not yet closed: one).
ACCEPT_BURST = 64
REQUEST_TIMEOUT = 10.0  # seconds for a request head to arrive whole
IDLE_TIMEOUT = 120.0  # a kept-alive connection between requests (Prometheus scrapes every 15-60 s)
WRITE_TIMEOUT = 30.0  # seconds for an answer to be handed to the kernel whole
WRITE_CHUNK = 16384
LINGER_SECONDS = 1.0  # after an error answer: read and drop what the client still sends...
LINGER_BYTES = 1 << 20  # ...so the close is a FIN after our answer, not a reset that may destroy it
WORKERS = 2  # threads that render answers: CPU-bound under the GIL, gzip on a second core

DROP_REASONS = ("limit", "request_timeout", "write_timeout", "bad_request", "request_body")


def landing_page() -> bytes:
    links = {"/metrics": "Metrics", "/doctor": "Doctor report (JSON)", "/healthz": "Health"}
    items = "\n".join(f'<li><a href="{html.escape(href)}">{html.escape(text)}</a></li>' for href, text in links.items())
    return (
        "<!doctype html><html><head><title>cri-exporter</title></head><body>"
        f"<h1>cri-exporter {html.escape(__version__)}</h1>"
        "<p>Prometheus metrics of the node's CRI container runtime, its containers and pods.</p>"
        f"<ul>{items}</ul></body></html>"
    ).encode()


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as Go programs do at
    start); the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


TEXT = {"Content-Type": "text/plain; charset=utf-8"}
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class Answer:
    """What a route returns: status, headers, and the body as parts (None: a
    HEAD answer whose length is not worth computing)."""

    __slots__ = ("status", "headers", "parts")

    def __init__(self, status: int, headers: dict[str, str], parts: list[bytes] | None):
        self.status, self.headers, self.parts = status, headers, parts


class Server:
    """Listens at `address` from construction (so an address in use fails
    early); `serve_forever` runs the loop in the calling thread until
    `shutdown` (from any thread)."""

    def __init__(self, address: tuple[str, int], exporter: Exporter, max_connections: int = MAX_CONNECTIONS):
        self.exporter = exporter
        fd_limit = raise_fd_limit()
        self.max_connections = max(1, min(max_connections, fd_limit - FD_RESERVE - 3 * ACCEPT_BURST))
        if self.max_connections < max_connections:
            log.warning("connections bounded by the fd limit", max_connections=self.max_connections, nofile=fd_limit)
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(BACKLOG)
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self.connections: set[_Connection] = set()
        # Connections waiting for a request, longest-waiting first: the ones
        # closed when the bound is reached.
        self.idle: collections.OrderedDict[_Connection, None] = collections.OrderedDict()
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.pool = cf.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="http")
        self.routes = {"/metrics": self._metrics, "/doctor": self._doctor, "/healthz": self._healthz, "/": self._index}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = threading.Event()
        exporter.registry.register(_HttpMetrics(self))

    # ---- lifecycle

    def serve_forever(self, poll_interval: float | None = None) -> None:  # poll_interval: socketserver's signature
        asyncio.run(self._serve())

    def shutdown(self) -> None:
        self._stopping.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)

    def server_close(self) -> None:
        self.socket.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stopping.is_set():
            return
        listener = await self._loop.create_server(lambda: _Connection(self), sock=self.socket, backlog=ACCEPT_BURST)
        self.socket.listen(BACKLOG)  # asyncio set the kernel's queue to its burst: restore it
        try:
            await self._stop.wait()
        finally:
            listener.close()
            for conn in list(self.connections):
                conn.transport.abort()

    # ---- the connection bound

    def admit(self, conn: "_Connection") -> bool:
        if len(self.connections) >= self.max_connections:
            if not self.idle:
                self.dropped["limit"] += 1
                return False
            oldest, _ = self.idle.popitem(last=False)
            oldest.drop("limit")
        self.connections.add(conn)
        self.idle[conn] = None
        return True

    def forget(self, conn: "_Connection") -> None:
        self.connections.discard(conn)
        self.idle.pop(conn, None)

    # ---- routes

    async def respond(self, request: Request) -> Answer:
        if request.method not in ("GET", "HEAD"):
            return Answer(405, {**TEXT, "Allow": "GET, HEAD"}, [b"only GET and HEAD\n"])
        route = self.routes.get(request.path)
        if route is None:
            return Answer(404, TEXT, [b"not found\n"])
        if request.method == "HEAD" and route == self._metrics:
            return Answer(200, {"Content-Type": CONTENT_TYPE}, None)  # no scrape for a HEAD
        return await route(request)

    async def _metrics(self, request: Request) -> Answer:
        loop = asyncio.get_running_loop()
        exporter = self.exporter
        deadline = request.arrived + exporter.scrape_timeout(request.headers)
        collection = exporter.scraper.collection()
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(collection.done)), deadline - time.monotonic())
        except TimeoutError:
            pass  # answered from what is ready
        parts, headers = await loop.run_in_executor(self.pool, exporter.render, request.headers, collection)
        return Answer(200, headers, parts)

    async def _doctor(self, request: Request) -> Answer:
        """The latest periodic doctor report, as `cri-exporter doctor --output json` prints it."""
        doctor = self.exporter.doctor
        if doctor is None:
            return Answer(503, TEXT, [b"doctor disabled (--collectors)\n"])
        report = await asyncio.get_running_loop().run_in_executor(self.pool, doctor.latest_json)
        if report is None:
            return Answer(503, TEXT, [b"no doctor run yet\n"])
        return Answer(200, {"Content-Type": "application/json"}, [report.encode()])

    async def _healthz(self, request: Request) -> Answer:
        return Answer(200, TEXT, [b"ok\n"])

    async def _index(self, request: Request) -> Answer:
        return Answer(200, {"Content-Type": "text/html; charset=utf-8"}, [landing_page()])


def _head(status: int, headers: dict[str, str], length: int | None, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Server: cri-exporter/{__version__}",
             f"Date: {email.utils.formatdate(usegmt=True)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Dropped(Exception):
    """The connection went away (the client left, or it was dropped) mid-answer."""


class _Connection(asyncio.Protocol):
    """One client connection: read and parse a request head on the loop, answer
    it (routes may hand work to the server's pool), then wait for the next."""

    __slots__ = ("server", "loop", "transport", "peer", "buffer", "scanned", "timer", "task", "first_request",
                 "head_started", "eof", "lost", "lingered", "drained")

    def __init__(self, server: Server):
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport
        self.peer = "?"
        self.buffer = bytearray()
        self.scanned = 0  # bytes of `buffer` already searched for the head's end
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None  # the answer being made and written
        self.first_request = True
        self.head_started = False
        self.eof = False
        self.lost = False
        self.lingered: int | None = None  # bytes dropped since an error answer
        self.drained: asyncio.Future | None = None  # pending while written bytes wait in our buffer

    # ---- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"
        # Paused as soon as a byte waits in our buffer; resumed once it is all
        # in the kernel: `drained` then says the answer so far is handed over.
        self.transport.set_write_buffer_limits(high=0)
        if not self.server.admit(self):
            self.transport.abort()
            return
        self._arm(REQUEST_TIMEOUT, self._request_timed_out)

    def data_received(self, data: bytes) -> None:
        if self.lingered is not None:
            self.lingered += len(data)
            if self.lingered > LINGER_BYTES:
                self.transport.abort()
            return
        self.buffer += data
        if self.task is None:
            self._parse()
        # else: reading is paused; what still came waits for the answer's end

    def eof_received(self) -> bool:
        self.eof = True
        if self.task is None:
            self.transport.close()  # what came of a request did not come whole: no answer
        return True  # keep writing an answer in progress

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.forget(self)
        self._disarm()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        if self.task is not None:
            self.task.cancel()

    def pause_writing(self) -> None:
        self.drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.drained = None

    # ---- reading

    def _parse(self) -> None:
        if not self.head_started:
            if self.buffer[:1] in (b"\r", b"\n"):  # empty lines before a request line are ignored (RFC 9112 2.2)
                del self.buffer[:len(self.buffer) - len(self.buffer.lstrip(b"\r\n"))]
            if not self.buffer:
                return
            self.head_started = True
            if not self.first_request:  # a kept-alive connection's request: timed from its first byte
                self._arm(REQUEST_TIMEOUT, self._request_timed_out)
        try:
            end = head_end(self.buffer, self.scanned)
            if end < 0:
                self.scanned = len(self.buffer)
                if self.eof:
                    self.transport.close()
                return
            head = bytes(self.buffer[:end]).rstrip(b"\r\n")
            del self.buffer[:end]
            request = parse_head(head)
        except BadRequest as err:
            self._refuse(err)
            return
        request.arrived = time.monotonic()
        self.scanned = 0
        self.head_started = False
        self.first_request = False
        self._disarm()
        self.server.idle.pop(self, None)
        self.transport.pause_reading()
        self.task = self.loop.create_task(self._answer(request))

    def _request_timed_out(self) -> None:
        self.drop("request_timeout")

    def _idle_timed_out(self) -> None:
        self.transport.close()

    # ---- answering

    async def _answer(self, request: Request) -> None:
        try:
            try:
                answer = await self.server.respond(request)
            except Exception:  # a route's bug: a 500, and the endpoint keeps serving
                log.exception("answer failed", path=request.path)
                answer = Answer(500, TEXT, [b"internal error\n"])
            keep_alive = request.keep_alive and answer.status != 500 and not self.eof and not self.server._stopping.is_set()
            parts = answer.parts if answer.parts is not None else []
            length = sum(len(p) for p in parts) if answer.parts is not None else None
            await self._write([_head(answer.status, answer.headers, length, keep_alive)]
                              + (parts if request.method != "HEAD" else []))
        except _Dropped:
            return
        finally:
            self.task = None
        log.debug("http", client=self.peer, method=request.method, path=request.path, status=answer.status)
        if request.path == "/metrics" and request.method == "GET" and answer.status == 200:
            self.server.exporter.release_memory()
        if not keep_alive:
            self.transport.close()
            return
        self.server.idle[self] = None
        self._arm(IDLE_TIMEOUT, self._idle_timed_out)
        self.transport.resume_reading()
        if self.buffer:
            self._parse()  # a pipelined request

    async def _write(self, parts: list[bytes]) -> None:
        """Write `parts` in WRITE_CHUNK pieces, each once the previous one is in
        the kernel, all within WRITE_TIMEOUT."""
        deadline = self.loop.time() + WRITE_TIMEOUT
        written = 0
        for part in parts:
            view = memoryview(part)
            for offset in range(0, len(view), WRITE_CHUNK):
                if self.lost:
                    raise _Dropped
                self.transport.write(view[offset:offset + WRITE_CHUNK])
                written += WRITE_CHUNK
                if self.drained is not None:
                    await self._wait_drained(deadline)
                elif written % (64 * WRITE_CHUNK) == 0:
                    await asyncio.sleep(0)  # a fast reader of a large answer: let others in now and then
        if self.drained is not None:
            await self._wait_drained(deadline)
        if self.lost:
            raise _Dropped

    async def _wait_drained(self, deadline: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self.drained), deadline - self.loop.time())
        except TimeoutError:
            self.drop("write_timeout")
            raise _Dropped from None

    def _refuse(self, err: BadRequest) -> None:
        """Answer a head that broke the syntax or a limit, then close: linger a
        moment reading (and dropping) what the client still sends, so its
        kernel gets our answer and a FIN rather than a reset."""
        self.server.dropped["request_body" if err.status == 413 else "bad_request"] += 1
        self.server.idle.pop(self, None)
        body = f"{err.status} {HTTPStatus(err.status).phrase}: {err}\n".encode()
        self.transport.write(_head(err.status, TEXT, len(body), False) + body)
        self.buffer.clear()
        self.lingered = 0
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(LINGER_SECONDS, self.transport.abort)

    # ---- timers and dropping

    def _arm(self, seconds: float, callback) -> None:
        self._disarm()
        self.timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def drop(self, reason: str) -> None:
        """Close now with a reset: what is still queued in the kernel for this
        client (up to tcp_wmem's 4 MB) is discarded, not delivered at its pace."""
        self.server.dropped[reason] += 1
        log.debug("connection dropped", client=self.peer, reason=reason)
        self.server.forget(self)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass
        self.transport.abort()


class _HttpMetrics:
    """The endpoint's own counters, served with the exporter's metrics."""

    def __init__(self, server: Server):
        self.server = server

    def collect(self):
        yield GaugeMetricFamily("cri_exporter_http_open_connections", "Connections to the HTTP endpoint now open.",
                                value=len(self.server.connections))
        yield GaugeMetricFamily("cri_exporter_http_max_connections",
                                "Connections the HTTP endpoint holds at most; past it, the one waiting longest for a request is closed.",
                                value=self.server.max_connections)
        dropped = CounterMetricFamily(
            "cri_exporter_http_connections_dropped",
            "Connections the HTTP endpoint closed without a complete answer, by reason.", labels=["reason"])
        for reason, count in list(self.server.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped
