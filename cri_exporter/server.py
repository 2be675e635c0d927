"""The HTTP side of `serve`: /metrics, /healthz, a landing page.

A thread per connection with a socket timeout, so a client that sends slowly
or never finishes holds one thread for a bounded time and nobody else waits.
"""
from __future__ import annotations

import html
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import structlog

from cri_exporter import __version__
from cri_exporter.exporter import Exporter

log = structlog.get_logger(__name__)

# Prometheus sends its scrape timeout; answering a little before it lets the
# partial result arrive instead of a timed-out scrape.
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
TIMEOUT_MARGIN = 0.5
MAX_REQUEST_LINE = 8192


def landing_page() -> bytes:
    links = {"/metrics": "Metrics", "/doctor": "Doctor report (JSON)", "/healthz": "Health"}
    items = "\n".join(f'<li><a href="{html.escape(href)}">{html.escape(text)}</a></li>' for href, text in links.items())
    return (
        "<!doctype html><html><head><title>cri-exporter</title></head><body>"
        f"<h1>cri-exporter {html.escape(__version__)}</h1>"
        "<p>Prometheus metrics of the node's CRI container runtime, its containers and pods.</p>"
        f"<ul>{items}</ul></body></html>"
    ).encode()


class Handler(BaseHTTPRequestHandler):
    server_version = f"cri-exporter/{__version__}"
    protocol_version = "HTTP/1.1"
    timeout = 15  # seconds a client may take to send its request
    exporter: Exporter
    routes: dict[str, Callable[["Handler"], None]] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        route = self.routes.get(path)
        if route is None:
            self._send(404, b"not found\n", {"Content-Type": "text/plain; charset=utf-8"})
            return
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass  # the client left; nothing to answer

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(200 if self.path.split("?", 1)[0] in self.routes else 404, b"", {}, head=True)

    def metrics(self) -> None:
        timeout = None
        raw = self.headers.get(SCRAPE_TIMEOUT_HEADER)
        if raw:
            try:
                timeout = max(0.5, float(raw) - TIMEOUT_MARGIN)
            except ValueError:
                pass
        gzip_ok = "gzip" in (self.headers.get("Accept-Encoding") or "")
        body, headers = self.exporter.render(timeout=timeout, gzip_ok=gzip_ok)
        self._send(200, body, headers)
        del body
        self.exporter.release_memory()

    def doctor(self) -> None:
        """The latest periodic doctor report, as `cri-exporter doctor --output json` prints it."""
        report = self.exporter.doctor.latest_json() if self.exporter.doctor else None
        if report is None:
            why = b"doctor disabled (--collectors)\n" if self.exporter.doctor is None else b"no doctor run yet\n"
            self._send(503, why, {"Content-Type": "text/plain; charset=utf-8"})
            return
        self._send(200, report.encode(), {"Content-Type": "application/json"})

    def healthz(self) -> None:
        self._send(200, b"ok\n", {"Content-Type": "text/plain; charset=utf-8"})

    def index(self) -> None:
        self._send(200, landing_page(), {"Content-Type": "text/html; charset=utf-8"})

    def _send(self, code: int, body: bytes, headers: dict[str, str], head: bool = False) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        log.debug("http", client=self.client_address[0], request=format % args)


Handler.routes = {"/metrics": Handler.metrics, "/healthz": Handler.healthz, "/doctor": Handler.doctor, "/": Handler.index}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], exporter: Exporter):
        handler = type("BoundHandler", (Handler,), {"exporter": exporter})
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

