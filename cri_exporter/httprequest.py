"""An HTTP/1.x request head: parsed whole, within fixed limits, or refused.

The server (server.py) hands a head to `parse_head` only once its blank line
has arrived, so nothing here ever sees half a request. A request that announces
a body (Content-Length above 0, or any Transfer-Encoding) is refused rather
than read: the endpoint takes no bodies, and a body left on the connection
would otherwise be parsed as the next request (the old http.server did that,
which let a GET /metrics carry a GET /doctor past kube-rbac-proxy's
`--allow-paths=/metrics`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Mapping

MAX_REQUEST_LINE = 8192  # bytes, as http.server and Go's net/http (per line)
MAX_HEAD = 65536  # request line and every header field together
MAX_HEADERS = 100  # fields, as http.server

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_TARGET = re.compile(rb"[\x21-\x7e]+")  # visible ASCII, no spaces
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


class BadRequest(Exception):
    """A head the server answers with `status` and then closes the connection."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class Headers(Mapping[str, str]):
    """Request header fields by case-insensitive name. A repeated field is its
    values joined with ", ", which RFC 9110 (5.3) makes the same field."""

    def __init__(self, fields: Mapping[str, str] | None = None):
        self._fields: dict[str, str] = {}
        for name, value in (fields or {}).items():
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        key = name.lower()
        self._fields[key] = f"{self._fields[key]}, {value}" if key in self._fields else value

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def tokens(self, name: str) -> set[str]:
        """The comma-separated, case-insensitive tokens of a field (Connection)."""
        return {t.strip().lower() for t in self.get(name, "").split(",") if t.strip()}


@dataclass
class Request:
    method: str
    target: str
    version: tuple[int, int]
    headers: Headers
    arrived: float = 0.0  # time.monotonic() when the head was complete: a scrape's deadline counts from it

    @property
    def path(self) -> str:
        """The target's path: origin-form `/metrics?x` or absolute-form `http://host/metrics`."""
        target = self.target
        if not target.startswith("/") and "://" in target:
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        return target.split("?", 1)[0].split("#", 1)[0]

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless told to close; 1.0 only when asked."""
        connection = self.headers.tokens("Connection")
        if self.version >= (1, 1):
            return "close" not in connection
        return "keep-alive" in connection


def head_end(buffer: bytes | bytearray, start: int = 0) -> int:
    """Where the head in `buffer` ends (just past its blank line), or -1 while it
    has not arrived whole. Raises BadRequest once what did arrive already breaks
    a limit, so a client cannot make the server hold more than MAX_HEAD bytes.
    `start`: where the previous call stopped looking (a head that trickles in
    is not scanned again from its first byte)."""
    found = _BLANK_LINE.search(buffer, max(0, start - 3))
    if found is not None and found.end() <= MAX_HEAD:
        return found.end()
    if buffer.find(b"\n", 0, MAX_REQUEST_LINE + 2) < 0 and len(buffer) > MAX_REQUEST_LINE + 1:
        raise BadRequest(414, "request line too long")
    if len(buffer) > MAX_HEAD:
        raise BadRequest(431, "request head too large")
    return -1


def parse_head(head: bytes) -> Request:
    """The request in `head` (request line and fields, without the blank line),
    or BadRequest. Lines may end in CRLF or a bare LF (RFC 9112 2.2)."""
    lines = head.split(b"\n")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    request_line = lines[0]
    if len(request_line) > MAX_REQUEST_LINE:
        raise BadRequest(414, "request line too long")
    parts = request_line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise BadRequest(400, "malformed request line")
    version = _VERSION.fullmatch(parts[2])
    if version is None:
        raise BadRequest(400, "malformed HTTP version")
    if version.group(1) != b"1":
        raise BadRequest(505, "HTTP version not supported")
    target = parts[1].decode("ascii")
    if not (target.startswith("/") or target == "*" or target.lower().startswith(("http://", "https://"))):
        raise BadRequest(400, "malformed request target")

    fields = lines[1:]
    if len(fields) > MAX_HEADERS:
        raise BadRequest(431, "too many header fields")
    headers = Headers()
    content_lengths: set[bytes] = set()
    for line in fields:
        if len(line) > MAX_REQUEST_LINE:
            raise BadRequest(431, "header field too long")
        name, colon, value = line.partition(b":")
        # No whitespace before the colon and no obsolete line folding (RFC 9112 5.1, 5.2):
        # both are how one hop's request becomes another's.
        if not colon or not _TOKEN.fullmatch(name):
            raise BadRequest(400, "malformed header field")
        value = value.strip(b" \t")
        if name.lower() == b"content-length":
            content_lengths.update(v.strip(b" \t") for v in value.split(b","))
        headers.add(name.decode("ascii"), value.decode("latin-1"))

    if "Transfer-Encoding" in headers:
        raise BadRequest(413, "request bodies are not accepted")
    if content_lengths:
        if len(content_lengths) != 1 or not next(iter(content_lengths)).isdigit():
            raise BadRequest(400, "malformed Content-Length")
        if int(next(iter(content_lengths))) > 0:
            raise BadRequest(413, "request bodies are not accepted")
    return Request(parts[0].decode("ascii"), target, (1, int(version.group(2))), headers)


def accepts_encoding(accept_encoding: str | None, coding: str) -> bool:
    """Whether to answer in `coding` (e.g. gzip) given the request's Accept-Encoding
    (RFC 9110 12.5.3): it must be acceptable (listed, or matched by `*`, with q > 0)
    and not less preferred than `identity` when identity is listed. No header: identity.
    `x-gzip` is gzip. Elements that do not parse are ignored."""
    if not accept_encoding:
        return False
    weights: dict[str, float] = {}
    for element in accept_encoding.split(","):
        name, *params = (p.strip() for p in element.split(";"))
        name = name.lower()
        if not name:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
        if not 0.0 <= q <= 1.0:
            continue
        weights["gzip" if name == "x-gzip" else name] = q
    want = weights.get(coding, weights.get("*", 0.0))
    return want > 0 and want >= weights.get("identity", 0.0)
