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

With a web config file (issue 18, webconfig.py) the same protocol runs over
TLS, behind basic auth and a rate limit:

- TLS starts on the loop once a connection is admitted (loop.start_tls, not
  create_server(ssl=...), which would handshake before the protocol exists):
  the handshake counts against the connection bound and the request's
  REQUEST_TIMEOUT, so a client that opens TLS and stalls is closed like one
  that sends half a request. Each connection takes the TLS context in force
  when it arrives; the file is checked for changes every RELOAD_INTERVAL.
- Basic auth and the rate limit come before any route (a refused client
  learns nothing of the paths), except /healthz, which says only "ok" and
  which the kubelet's probe must reach without credentials and whatever a
  flood did to the rate limit. bcrypt's cost is bounded in webauth.py.

Counted in cri_exporter_http_* (docs/metrics.md).
"""
from __future__ import annotations

import asyncio
import asyncio.sslproto
import collections
import concurrent.futures as cf
import email.utils
import html
import resource
import socket
import ssl
import struct
import threading
import time
from http import HTTPStatus
from typing import cast

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cri_exporter import __version__
from cri_exporter.exporter import Exporter
from cri_exporter.exposition import CONTENT_TYPE
from cri_exporter.httprequest import BadRequest, Request, head_end, parse_head
from cri_exporter.webauth import BUSY, OK, BasicAuth, TokenBucket
from cri_exporter.webconfig import WebConfig, WebConfigFile, sans_of

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
# A /metrics answer is rendered on the loop when the last collection's text
# took less CPU than this to make (at 10 containers 0.25 ms; measured per
# collection, not per answer: a second scraper's answer from the same
# collection costs nothing and says nothing of the next); larger ones in WORKERS.
LOOP_RENDER_SECONDS = 0.002
RELOAD_INTERVAL = 1.0  # seconds between looks at the web config file and the files it names
# After our close_notify, how long a TLS client may take to send its own
# (asyncio waits 30 s by default, holding the connection meanwhile).
TLS_SHUTDOWN_TIMEOUT = 2.0

# asyncio's TLS layer gives each connection a 256 KiB read buffer up front
# (SSLProtocol.max_size, Python 3.11-3.13): 1,000 stalled TLS connections held
# 308 MB (RSS, 3.11.7; plain HTTP: 2 MB), past the DaemonSet's memory limit. A
# request head is at most 64 KiB and TLS records 16 KiB: one record's room will
# do. Only this server uses asyncio's TLS in the agent's process.
TLS_READ_BUFFER = 16384
asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER

DROP_REASONS = ("limit", "request_timeout", "write_timeout", "bad_request", "request_body", "tls_handshake")
REFUSE_REASONS = ("unauthorized", "auth_busy", "rate_limited")  # requests answered 401, 503, 429


def landing_page(doctor: bool = True) -> bytes:
    links = {"/metrics": "Metrics", "/doctor": "Doctor report (JSON)", "/healthz": "Health"}
    if not doctor:
        del links["/doctor"]
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
    `shutdown` (from any thread). `web`: the web config file (TLS, basic
    auth, headers, rate limit), already read once; `doctor_endpoint` False
    answers /doctor 404."""

    def __init__(self, address: tuple[str, int], exporter: Exporter, max_connections: int = MAX_CONNECTIONS,
                 web: WebConfigFile | None = None, doctor_endpoint: bool = True):
        self.exporter = exporter
        self.web = web
        self.auth = BasicAuth() if web is not None else None
        self._bucket: TokenBucket | None = None
        fd_limit = raise_fd_limit()
        self.max_connections = max(1, min(max_connections, fd_limit - FD_RESERVE - 3 * ACCEPT_BURST))
        if self.max_connections < max_connections:
            log.warning("connections bounded by the fd limit", max_connections=self.max_connections, nofile=fd_limit)
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        # IPPROTO_TCP named, not left 0: asyncio turns Nagle off (TCP_NODELAY) only
        # on sockets whose proto says TCP (base_events._set_nodelay, 3.11), and
        # accepted sockets take the listener's. With Nagle on, a kept-alive
        # connection's answer (head, then body) waited for the client's delayed
        # ACK: 53 ms a 10-container scrape instead of 11 (Prometheus keeps its
        # connections; a new connection each hid it: the kernel ACKs at once then).
        self.socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
        self.refused = dict.fromkeys(REFUSE_REASONS, 0)
        self.pool = cf.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="http")
        self.routes = {"/metrics": self._metrics, "/doctor": self._doctor, "/healthz": self._healthz, "/": self._index}
        if not doctor_endpoint:
            del self.routes["/doctor"]
        self._landing_page = landing_page(doctor_endpoint)
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

    @property
    def scheme(self) -> str:
        return "https" if self.web is not None and self.web.config.tls is not None else "http"

    def server_close(self) -> None:
        self.socket.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.auth is not None:
            self.auth.close()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stopping.is_set():
            return
        listener = await self._loop.create_server(lambda: _Connection(self), sock=self.socket, backlog=ACCEPT_BURST)
        self.socket.listen(BACKLOG)  # asyncio set the kernel's queue to its burst: restore it
        watcher = self._loop.create_task(self._watch_web_config()) if self.web is not None else None
        try:
            await self._stop.wait()
        finally:
            if watcher is not None:
                watcher.cancel()
            listener.close()
            for conn in list(self.connections):
                conn.transport.abort()

    async def _watch_web_config(self) -> None:
        """A few stats a second, on the loop; a reload reads a few small files
        and builds an SSLContext (about a millisecond)."""
        assert self.web is not None
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            try:
                self.web.refresh()
            except Exception:  # a bug here must not stop the watching
                log.exception("web config check failed")

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

    async def respond(self, request: Request, client: str = "?") -> Answer:
        if self.web is None:
            return await self._route(request)
        config = self.web.config
        answer = await self._guard(request, client, config)
        if answer is None:
            answer = await self._route(request)
        if config.headers:
            answer.headers = {**answer.headers, **config.headers}
        return answer

    async def _guard(self, request: Request, client: str, config: WebConfig) -> Answer | None:
        """The web config's rate limit and basic auth, in the toolkit's order:
        None lets the request through. Not for /healthz: a liveness probe
        failing on a flood's rate limit would restart the agent."""
        if request.path == "/healthz":
            return None
        if config.rate_limit is not None:
            if self._bucket is None or self._bucket.limit != config.rate_limit:
                self._bucket = TokenBucket(config.rate_limit)
            if not self._bucket.allow():
                self.refused["rate_limited"] += 1
                return Answer(429, TEXT, [b"too many requests\n"])
        if not config.users:
            return None
        assert self.auth is not None
        verdict = await self.auth.check(config.users, request.headers.get("Authorization"), client)
        if verdict == OK:
            return None
        if verdict == BUSY:
            self.refused["auth_busy"] += 1
            return Answer(503, {**TEXT, "Retry-After": "1"}, [b"too many credentials being checked; retry\n"])
        self.refused["unauthorized"] += 1
        return Answer(401, {**TEXT, "WWW-Authenticate": 'Basic realm="cri-exporter", charset="UTF-8"'}, [b"unauthorized\n"])

    async def _route(self, request: Request) -> Answer:
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
        if exporter.encode_seconds < LOOP_RENDER_SECONDS:
            # A small node's answer: rendered here rather than handed to a
            # pool thread and back (two GIL handovers for well under 1 ms).
            parts, headers = exporter.render(request.headers, collection)
        else:
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
        return Answer(200, {"Content-Type": "text/html; charset=utf-8"}, [self._landing_page])


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
                 "head_started", "eof", "lost", "lingered", "drained", "handshake", "tls")

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
        self.handshake: asyncio.Task | None = None  # TLS being set up: nothing is read meanwhile
        self.tls = False

    # ---- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream protocol is given a Transport (typeshed's Protocol says BaseTransport).
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"
        # Paused as soon as a byte waits in our buffer; resumed once it is all
        # in the kernel: `drained` then says the answer so far is handed over.
        # (With TLS: encrypted bytes wait no longer in the socket's buffer
        # than they would in plain text.)
        self.transport.set_write_buffer_limits(high=0)
        if not self.server.admit(self):
            self.transport.abort()
            return
        self._arm(REQUEST_TIMEOUT, self._request_timed_out)  # with TLS, the handshake counts too
        config = self.server.web.config if self.server.web is not None else None
        if config is not None and config.tls is not None:
            self.transport.pause_reading()  # the ClientHello is for the TLS layer, not for _parse
            self.handshake = self.loop.create_task(self._start_tls(config, config.tls))

    async def _start_tls(self, config: WebConfig, context: ssl.SSLContext) -> None:
        """Handshake within the request's deadline (the timer above drops a
        stalled one), then read requests through the TLS transport."""
        raw = self.transport
        try:
            tls = await self.loop.start_tls(raw, self, context, server_side=True,
                                            ssl_handshake_timeout=REQUEST_TIMEOUT + 1,  # our timer comes first
                                            ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT)
        except (OSError, EOFError) as err:  # SSLError, reset, asyncio's own timeout
            self._handshake_failed(raw, err)
            return
        finally:
            self.handshake = None
        if tls is None or self.lost or tls.is_closing():  # dropped (timer, bound) while the handshake ran
            self._handshake_failed(raw, None)
            return
        self.transport = tls
        self.tls = True
        # The same limit as the socket's above: asyncio's TLS layer pauses at
        # size >= high where the socket pauses at size > high (Python 3.11), so
        # high=0 here would pause with nothing buffered and never resume.
        tls.set_write_buffer_limits(high=1, low=0)
        allowed = config.client_allowed_sans
        if allowed is not None and not sans_of(tls.get_extra_info("peercert")) & allowed:
            log.debug("client certificate names none of client_allowed_sans", client=self.peer)
            self.drop("tls_handshake")
            return
        if self.buffer:
            self._parse()

    def _handshake_failed(self, raw: asyncio.Transport, err: BaseException | None) -> None:
        """asyncio tells this protocol nothing of a connection lost mid-handshake: do what connection_lost does."""
        if err is not None and self in self.server.connections:  # else drop() counted it
            self.server.dropped["tls_handshake"] += 1
            log.debug("TLS handshake failed", client=self.peer, error=str(err))
        raw.abort()
        if not self.lost:
            self.connection_lost(None)

    def data_received(self, data: bytes) -> None:
        if self.lingered is not None:
            self.lingered += len(data)
            if self.lingered > LINGER_BYTES:
                self.transport.abort()
            return
        self.buffer += data
        if self.task is None and self.handshake is None:
            self._parse()
        # else: reading is paused; what still came waits for the answer's end

    def eof_received(self) -> bool:
        self.eof = True
        if self.task is None:
            self.transport.close()  # what came of a request did not come whole: no answer
        # Keep writing an answer in progress. TLS has no half-close: asyncio
        # shuts the connection after the client's close_notify whatever this says.
        return not self.tls

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
                answer = await self.server.respond(request, self.peer)
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
        drained = self.drained
        if drained is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(drained), deadline - self.loop.time())
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
        web, auth = self.server.web, self.server.auth
        if web is not None and auth is not None:
            yield GaugeMetricFamily("cri_exporter_web_config_last_reload_successful",
                                    "Whether the last reading of the web config file was taken (0: serving with an older one).",
                                    value=1 if web.last_reload_ok else 0)
            yield GaugeMetricFamily("cri_exporter_web_config_last_reload_success_timestamp_seconds",
                                    "When the web config in force was read, in seconds since the epoch.",
                                    value=web.last_success)
            refused = CounterMetricFamily(
                "cri_exporter_http_requests_refused",
                "Requests answered without running, by reason: 401 unauthorized, 503 auth_busy, 429 rate_limited.",
                labels=["reason"])
            for reason, count in list(self.server.refused.items()):
                refused.add_metric([reason], count)
            yield refused
            yield CounterMetricFamily("cri_exporter_http_password_checks",
                                      "bcrypt checks run for basic auth (credentials once checked are remembered).",
                                      value=auth.hashed)
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
