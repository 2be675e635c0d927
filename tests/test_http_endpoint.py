"""The HTTP endpoint of `cri-exporter serve` against hostile and unlucky clients
(issue 17), over real sockets to a real serve process. The runtime is the fake
CRI (tests/fakecri.py): what is tested is the HTTP side, plus a runtime that
answers slowly on demand, which a real containerd does not.

Every time bound here is a deadline the server promises plus a generous margin;
none measures speed."""
from __future__ import annotations

import http.client
import re
import resource
import socket
import threading
import time

import pytest

from cri_exporter.server import MAX_CONNECTIONS, REQUEST_TIMEOUT, WRITE_TIMEOUT
from tests.exporter_proc import ExporterProcess, parse, wait_for
from tests.fakecri import fake_node

COLLECTORS = "runtime,containers,stats,imagefs,cgroups"
MARGIN = 15.0  # seconds on top of a server deadline before a test calls it missed


@pytest.fixture
def node(tmp_path):
    with fake_node(tmp_path, 40) as fake:
        yield fake, tmp_path


def serve(node, *args, host="127.0.0.1") -> ExporterProcess:
    fake, root = node
    return ExporterProcess(fake.endpoint, "--host-root", str(root), "--collectors", COLLECTORS, *args, host=host)


def connect(exp: ExporterProcess, timeout: float = 5.0, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in exp.host else socket.AF_INET)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # set before connect: no autotuning
    sock.settimeout(timeout)
    sock.connect((exp.host, exp.port))
    return sock


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """What the server sent, and whether it closed within `timeout` seconds."""
    chunks, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return b"".join(chunks), True
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False


def server_side_open(exp: ExporterProcess) -> list[str]:
    """The exporter's connections its side has not closed (the kernel's /proc/net/tcp{,6}:
    local port the exporter's, state ESTABLISHED or CLOSE_WAIT)."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, remote, state = line.split()[1:4]
                if int(local.rsplit(":", 1)[1], 16) == exp.port and state in ("01", "08"):
                    out.append(f"{remote} state {state}")
    return out


def is_closed(sock: socket.socket) -> bool:
    """Whether the server closed `sock` (without waiting, without consuming data)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def timed_scrape(exp: ExporterProcess, scrape_timeout: float | None = None, **headers):
    if scrape_timeout is not None:
        headers["X-Prometheus-Scrape-Timeout-Seconds"] = str(scrape_timeout)
    start = time.monotonic()
    status, _, body = exp.get("/metrics", headers=headers, timeout=60)
    assert status == 200, body[:300]
    return parse(body.decode()), time.monotonic() - start


def dropped(samples, reason: str) -> float:
    return samples.get1("cri_exporter_http_connections_dropped_total", reason=reason)


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= need, f"this test needs {need} fds (hard limit {hard})"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_get_with_a_body_is_refused_and_the_body_never_runs_as_a_request(node, framing):
    """Issue 17: the body of `GET /metrics` ran as a second request, a way past
    kube-rbac-proxy's --allow-paths=/metrics to /doctor."""
    smuggled = b"GET /doctor HTTP/1.1\r\nHost: x\r\n\r\n"
    if framing == "content-length":
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled
    else:
        request = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"%x\r\n" % len(smuggled) + smuggled + b"\r\n0\r\n\r\n")
    with serve(node) as exp:
        with connect(exp) as sock:
            sock.sendall(request)
            data, closed = read_until_closed(sock, timeout=10)
        assert closed and data.startswith(b"HTTP/1.1 413 "), data[:200]
        assert data.count(b"HTTP/1.1 ") == 1, data  # one answer; nothing answered the body

        # Requests without bodies, pipelined on one connection, are each answered, in order.
        with connect(exp) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data, closed = read_until_closed(sock, timeout=10)
        assert closed and re.findall(rb"HTTP/1.1 (\d+) ", data) == [b"200", b"404"], data
        assert dropped(exp.scrape(), "request_body") == 1


def test_a_request_its_client_cut_off_gets_no_answer_and_runs_no_scrape(node):
    """Issue 17: after slow clients left, each cut-off request was answered as
    a full scrape. The fake runtime counts ListContainers: ground truth for
    whether a scrape ran."""
    fake, _ = node
    partials = [b"GET /metrics HTTP/1.1", b"GET /metrics HTTP/1.1\r\n", b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: a\r\n\r"]
    with serve(node) as exp:
        before = fake.calls.get("ListContainers", 0)
        for partial in partials:
            with connect(exp) as sock:  # the client says it is done sending: half a request is all there is
                sock.sendall(partial)
                sock.shutdown(socket.SHUT_WR)
                data, closed = read_until_closed(sock, timeout=10)
            assert closed and data == b"", (partial, data)
            with connect(exp) as sock:  # the client just leaves
                sock.sendall(partial)
        # Once the exporter has closed its side of every one of them it is done with them: a scrape
        # one of them started would have been answered (or cut) before its connection was closed.
        wait_for(lambda: not server_side_open(exp), timeout=30, what="the exporter to close the cut-off connections")
        assert fake.calls.get("ListContainers", 0) == before
        exp.scrape()
        assert fake.calls.get("ListContainers", 0) == before + 1


def test_slow_senders_and_slow_readers_are_cut_at_their_deadlines_while_scrapes_go_on(node):
    """Issue 17: the old 15 s limit was per recv, so a header line every 2 s held
    a connection (and a thread) forever, and so did a client reading its answer
    slowly. Now a request head must arrive whole within REQUEST_TIMEOUT and an
    answer be taken within WRITE_TIMEOUT; scrapes meanwhile answer as usual."""
    with serve(node) as exp:
        status, headers, body = exp.get("/metrics")
        full_length = len(body)
        stop = threading.Event()

        trickler = connect(exp)
        trickler.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")

        def trickle():
            n = 0
            while not stop.wait(2):
                try:
                    trickler.sendall(b"X-Slow-%d: a\r\n" % n)
                except OSError:
                    return
                n += 1

        threading.Thread(target=trickle, daemon=True).start()
        silent = connect(exp)
        # The kernel takes up to tcp_wmem's 4 MB of a connection's answers on
        # loopback (the answer is then the kernel's, not the agent's): asking for
        # several answers makes the slow reader hold up the agent's own writes.
        answers = 5_000_000 // full_length + 2
        reader = connect(exp, rcvbuf=4096)
        reader.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * answers)
        reader_got: list[bytes] = []
        reader_closed = threading.Event()

        def read_slowly():
            while not stop.is_set():
                try:
                    chunk = reader.recv(1024)
                except OSError:
                    break
                if not chunk:
                    break
                reader_got.append(chunk)
                time.sleep(1)  # the behaviour under test: a client reading 1 KiB a second
            reader_closed.set()

        threading.Thread(target=read_slowly, daemon=True).start()
        started = time.monotonic()
        try:
            cut = {}
            while time.monotonic() - started < 2 * WRITE_TIMEOUT and len(cut) < 3:
                s, took = timed_scrape(exp, scrape_timeout=5)
                assert s.get1("cri_up") == 1 and took < 4.5 + MARGIN / 3, took
                for name, closed in (("trickler", lambda: is_closed(trickler)), ("silent", lambda: is_closed(silent)),
                                     ("reader", reader_closed.is_set)):
                    if name not in cut and closed():
                        cut[name] = time.monotonic() - started
                time.sleep(0.5)  # poll interval: scraping on while waiting for the cuts, within 2 x WRITE_TIMEOUT
        finally:
            stop.set()
        assert set(cut) == {"trickler", "silent", "reader"}, cut
        assert cut["trickler"] < REQUEST_TIMEOUT + MARGIN and cut["silent"] < REQUEST_TIMEOUT + MARGIN, cut
        # its answer's write starts once the kernel's buffer is full, within seconds
        assert cut["reader"] < 2 * WRITE_TIMEOUT, cut
        assert sum(map(len, reader_got)) < answers * full_length  # dropped mid-answer, not served whole
        assert trickler.recv(65536) == b""  # nothing was ever answered to the half request
        s = exp.scrape()
        assert dropped(s, "request_timeout") == 2 and dropped(s, "write_timeout") == 1
        for sock in (trickler, silent, reader):
            sock.close()


def test_each_scraper_answers_by_its_own_deadline_and_no_header_shortens_the_shared_collection(node):
    """Issue 17: a scraper that joined a collection in flight waited for its end
    whatever its own deadline (a 3 s scrape took 4.86 s), and the first
    scraper's X-Prometheus-Scrape-Timeout-Seconds (even 0) cut the collection
    every other scraper shared. Here the runtime takes 4 s per list call, so a
    collection takes about 8 s: a scraper that cannot wait that long gets what
    is ready (the runtime collector: its Version call is quick), one that can
    gets everything, and each round's scrapers share one collection."""
    fake, _ = node
    with serve(node, "--scrape-timeout", "30", "--runtime-timeout", "20") as exp:
        exp.scrape()
        fake.list_delay = 4.0

        def round_of(*scrapers):
            """Each (name, header) starts 0.3 s after the one before; their results, and
            how many collections they made (ListContainers calls)."""
            results, threads = {}, []
            before = fake.calls.get("ListContainers", 0)
            for name, timeout in scrapers:
                threads.append(threading.Thread(target=lambda n=name, t=timeout: results.__setitem__(n, timed_scrape(exp, t))))
                threads[-1].start()
                time.sleep(0.3)  # the behaviour under test: scrapers arriving 0.3 s apart during one collection
            for t in threads:
                t.join(60)
            return results, fake.calls.get("ListContainers", 0) - before

        # The first scraper's header 0 must not cut the collection the next one joins...
        first, first_collections = round_of(("zero", 0), ("patient", None))
        # ...and a scraper that joins a collection started with a longer deadline answers by its own.
        second, second_collections = round_of(("patient", None), ("short", 3))
        fake.list_delay = 0

        for s, took, own_deadline in ((*first["zero"], 0.5), (*second["short"], 2.5)):
            assert took < own_deadline + 2.5, took  # the collection itself takes ~8 s
            assert s.get1("cri_scrape_collector_success", collector="containers") == 0
            assert s.get1("cri_scrape_collector_success", collector="runtime") == 1 and s.get1("cri_up") == 1
            assert s.find("cri_runtime_info")
        for s, took in (first["patient"], second["patient"]):
            assert 6 < took < 30 + MARGIN, took
            assert s.get1("cri_scrape_collector_success", collector="containers") == 1
            assert len(s.labelsets("cri_container_info")) == 40
        assert first_collections == second_collections == 1


def test_past_the_connection_bound_the_connection_waiting_longest_is_closed(node):
    """A flood of idle connections cannot lock Prometheus out: past
    MAX_CONNECTIONS the one that has waited longest for its request goes."""
    extra = 50
    raise_nofile(MAX_CONNECTIONS + extra + 200)
    with serve(node) as exp:
        socks = [connect(exp) for _ in range(MAX_CONNECTIONS + extra)]
        try:
            wait_for(lambda: sum(map(is_closed, socks)) >= extra, timeout=REQUEST_TIMEOUT / 2, what="the oldest closed")
            assert [i for i, s in enumerate(socks) if is_closed(s)] == list(range(extra))
            s, _ = timed_scrape(exp)  # its connection is admitted too: one more of the oldest goes
            assert s.get1("cri_exporter_http_open_connections") == MAX_CONNECTIONS
            assert s.get1("cri_exporter_http_max_connections") == MAX_CONNECTIONS
            assert dropped(s, "limit") == extra + 1
            assert is_closed(socks[extra]) and not is_closed(socks[extra + 1])
        finally:
            for sock in socks:
                sock.close()


def test_keep_alive_head_methods_and_ipv6(node):
    """What the endpoint kept from http.server: keep-alive, HEAD, 404s, IPv6 listen addresses."""
    with serve(node, host="::1") as exp:
        conn = http.client.HTTPConnection("::1", exp.port, timeout=30)
        statuses = []
        for path in ("/healthz", "/metrics", "/", "/nope", "/metrics?x=1"):
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            statuses.append(r.status)
            if path == "/healthz":
                first_socket = conn.sock
        assert statuses == [200, 200, 200, 404, 200] and conn.sock is first_socket  # one connection for all
        assert parse(body.decode()).get1("cri_up") == 1

        conn.request("HEAD", "/metrics")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b"" and r.getheader("Content-Type").startswith("text/plain")
        conn.request("HEAD", "/nope")
        r = conn.getresponse()
        assert r.status == 404 and r.read() == b""
        conn.request("POST", "/metrics")
        r = conn.getresponse()
        assert r.status == 405 and r.getheader("Allow") == "GET, HEAD"
        r.read()
        conn.close()
