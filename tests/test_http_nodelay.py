"""Answers on a kept-alive connection go out without waiting for the client's ACK.

An answer is written as its head, then its body. With Nagle's algorithm on,
the body waits until the client ACKs the head, and a client that delays its
ACKs (Linux: 40 ms; every one after a connection's first exchanges) makes each
scrape on a kept-alive connection, the way Prometheus scrapes, wait that long:
53 ms instead of 11 at 10 containers before this was found. asyncio turns
Nagle off only on a socket whose protocol number says TCP (3.11), so the
server must create its listener with IPPROTO_TCP. Asserted on the sockets
themselves (TCP_NODELAY), not by timing."""
from __future__ import annotations

import socket
import threading

import pytest
from prometheus_client import CollectorRegistry

from cri_exporter.server import Server
from tests.exporter_proc import wait_for


class _NoExporter:
    """What Server needs of an Exporter before a request arrives."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=False)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_accepted_connections_have_nagle_off(host):
    server = Server((host, 0), _NoExporter())  # type: ignore[arg-type]
    loop = threading.Thread(target=server.serve_forever, daemon=True)
    loop.start()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as client:
            client.connect(server.server_address[:2])
            wait_for(lambda: len(list(server.connections)) == 1, timeout=30, what="the connection admitted")
            conn = next(iter(list(server.connections)))
            sock = conn.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.shutdown()
        loop.join(30)
        server.server_close()
    assert not loop.is_alive()
