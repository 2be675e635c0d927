"""The request head parser and Accept-Encoding negotiation (cri_exporter/httprequest.py), case by case.
What a client sees of them over a socket is in test_http_endpoint.py."""
from __future__ import annotations

import pytest

from cri_exporter.httprequest import MAX_HEAD, MAX_REQUEST_LINE, BadRequest, Headers, accepts_encoding, head_end, parse_head


@pytest.mark.parametrize("header, gzip", [
    (None, False),
    ("", False),
    ("gzip", True),
    ("GZIP", True),
    ("x-gzip", True),
    ("gzip, deflate, br", True),
    ("gzip;q=0", False),  # issue 17: this still got gzip
    ("gzip; q=0.000", False),
    ("gzip;q=0.001", True),
    ("deflate, br", False),
    ("*", True),
    ("*;q=0", False),
    ("*;q=0, gzip", True),
    ("gzip;q=0, *", False),  # listed explicitly: the explicit q wins over *
    ("identity", False),
    ("identity;q=1, gzip;q=0.5", False),  # identity preferred
    ("identity;q=0.5, gzip;q=0.5", True),  # a tie: the smaller answer
    ("identity;q=0", False),  # nothing acceptable offered: plain text rather than a coding refused
    ("gzip;q=2", False),  # q outside 0..1 does not parse: the element is ignored
    ("gzip;q=abc", False),
    ("gzip;q=nan", False),
    ("gzip;q=abc, *;q=0.3", True),
    (" gzip ; q = 0.8 ", True),
    (",,gzip,,", True),
])
def test_accept_encoding(header, gzip):
    assert accepts_encoding(header, "gzip") is gzip


def test_headers_are_case_insensitive_and_repeats_join():
    h = Headers({"Accept-Encoding": "gzip"})
    h.add("accept-encoding", "br")
    h.add("Connection", "Keep-Alive, Upgrade")
    assert h["ACCEPT-ENCODING"] == "gzip, br" and "accept-encoding" in h
    assert h.tokens("connection") == {"keep-alive", "upgrade"}
    assert dict(Headers(h)) == dict(h)


def _head(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def test_a_plain_get():
    r = parse_head(_head("GET /metrics?x=1 HTTP/1.1\nHost: a\nAccept-Encoding: gzip\nX-Prometheus-Scrape-Timeout-Seconds: 10"))
    assert (r.method, r.path, r.version, r.keep_alive) == ("GET", "/metrics", (1, 1), True)
    assert r.headers["x-prometheus-scrape-timeout-seconds"] == "10"


@pytest.mark.parametrize("head, keep", [
    ("GET / HTTP/1.1", True),
    ("GET / HTTP/1.1\nConnection: close", False),
    ("GET / HTTP/1.1\nConnection: Upgrade, CLOSE", False),
    ("GET / HTTP/1.0", False),
    ("GET / HTTP/1.0\nConnection: keep-alive", True),
])
def test_keep_alive(head, keep):
    assert parse_head(_head(head)).keep_alive is keep


def test_bare_lf_line_endings_and_absolute_form():
    r = parse_head(b"GET http://node:9920/metrics?a HTTP/1.1\nHost: node")
    assert r.path == "/metrics" and r.headers["host"] == "node"
    assert parse_head(b"GET http://node:9920 HTTP/1.1").path == "/"


@pytest.mark.parametrize("head", [
    "GET /metrics HTTP/1.1\nContent-Length: 27",
    "GET /metrics HTTP/1.1\nContent-Length: 27, 27",
    "GET /metrics HTTP/1.1\nTransfer-Encoding: chunked",
    "GET /metrics HTTP/1.1\nTransfer-Encoding: gzip, chunked\nContent-Length: 0",
    "POST /metrics HTTP/1.1\nContent-Length: 1000000",
])
def test_a_request_with_a_body_is_refused(head):
    with pytest.raises(BadRequest) as err:
        parse_head(_head(head))
    assert err.value.status == 413


def test_an_empty_body_is_no_body():
    assert parse_head(_head("GET /metrics HTTP/1.1\nContent-Length: 0")).path == "/metrics"


@pytest.mark.parametrize("head, status", [
    ("GARBAGE", 400),
    ("\x16\x03\x01\x02\x00\x01\x00", 400),  # a TLS hello
    ("GET /metrics", 400),  # HTTP/0.9
    ("GET  /metrics HTTP/1.1", 400),
    ("GET /me trics HTTP/1.1", 400),
    ("GET metrics HTTP/1.1", 400),
    ("GET /metrics HTTP/2.0", 505),
    ("GET /metrics HTTP/1.1x", 400),
    ("GET /metrics HTTP/1.1\nHost : a", 400),  # whitespace before the colon (RFC 9112 5.1)
    ("GET /metrics HTTP/1.1\nHost: a\n continued", 400),  # obsolete line folding
    ("GET /metrics HTTP/1.1\nno colon", 400),
    ("GET /metrics HTTP/1.1\nContent-Length: 1\nContent-Length: 2", 400),
    ("GET /metrics HTTP/1.1\nContent-Length: -1", 400),
    ("GET /metrics HTTP/1.1\nContent-Length: 0x10", 400),
    ("GET /" + "a" * MAX_REQUEST_LINE + " HTTP/1.1", 414),
    ("GET / HTTP/1.1\nX: " + "a" * MAX_REQUEST_LINE, 431),
    ("GET / HTTP/1.1\n" + "".join(f"X-{i}: y\n" for i in range(101)).rstrip("\n"), 431),
])
def test_malformed_heads(head, status):
    with pytest.raises(BadRequest) as err:
        parse_head(_head(head))
    assert err.value.status == status


def test_head_end_waits_for_the_blank_line_and_bounds_what_it_holds():
    assert head_end(b"GET / HTTP/1.1\r\nHost: a\r\n") == -1
    assert head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /doctor") == len(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert head_end(b"GET / HTTP/1.1\n\nrest") == len(b"GET / HTTP/1.1\n\n")
    # trickled in: a search that resumes where the last one stopped still finds a blank line split across reads
    buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r"
    assert head_end(buf) == -1 and head_end(buf + b"\n", len(buf)) == len(buf) + 1
    with pytest.raises(BadRequest) as err:
        head_end(b"GET /" + b"a" * (MAX_REQUEST_LINE + 10))  # no line end yet, already too long
    assert err.value.status == 414
    with pytest.raises(BadRequest) as err:
        head_end(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_HEAD // 6 + 1))
    assert err.value.status == 431
