"""`serve --web.config.file`: the exporter toolkit's web config (TLS, client
certificates, basic auth, headers) over real connections, to a real serve
process over the lab's real containerd, with real clients: Python's ssl,
curl (Debian 12's 7.88), and each Prometheus release the project supports
(2.42 and 3.5) scraping over TLS with basic auth. What the file may say and
how a bad one is refused: tests/test_webconfig.py.

Every time bound is a deadline the server promises plus a generous margin;
none measures speed."""
from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trustme

from cri_exporter.server import MAX_CONNECTIONS, RELOAD_INTERVAL, REQUEST_TIMEOUT
from cri_exporter.webauth import MAX_PENDING
from tests.exporter_proc import REPO, ExporterProcess, Samples, parse, wait_for
from tests.prometheus_proc import RELEASES, PrometheusProcess, release, release_id
from tests.test_http_endpoint import MARGIN, connect, is_closed, raise_nofile, read_until_closed
from tests.test_reliability import cpu_seconds, rss_kb, threads
from tests.webtls import PASSWORD, basic, bcrypt_hash, der_of, make_pki, write_config

# TLS and auth do not depend on the runtime's version: on the newest containerd only.
pytestmark = [pytest.mark.containerd, pytest.mark.newest_runtime]

USER = "prometheus"
CURL = shutil.which("curl") or "/usr/bin/curl"
RELOADED = 10 * RELOAD_INTERVAL + MARGIN  # seconds until a changed file must be in force


def serve(containerd, config: Path, ctx: ssl.SSLContext, *args: str, auth: dict | None = None, **kw) -> ExporterProcess:
    return ExporterProcess(containerd.endpoint, "--host-root", "/", "--web.config.file", str(config), *args,
                           tls=ctx, auth=auth, **kw)


def request(exp: ExporterProcess, ctx: ssl.SSLContext, path: str = "/metrics", headers: dict | None = None,
            conn: http.client.HTTPSConnection | None = None, source: str | None = None) -> tuple[int, dict, bytes]:
    """One request over `conn` (kept open) or a new connection."""
    c = conn or http.client.HTTPSConnection(exp.host, exp.port, context=ctx, timeout=30,
                                            source_address=(source, 0) if source else None)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        if conn is None:
            c.close()


def peer_certificate(exp: ExporterProcess, ctx: ssl.SSLContext) -> bytes:
    with socket.create_connection((exp.host, exp.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        return tls.getpeercert(binary_form=True)


def refused(exp: ExporterProcess, ctx: ssl.SSLContext, path: str = "/healthz") -> str | None:
    """Why a request got no answer (the handshake failed, or the connection was
    closed on it), or None if it was answered."""
    try:
        request(exp, ctx, path)
    except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected) as err:
        return f"{type(err).__name__}: {err}"
    return None


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CURL, "-sS", "--max-time", "30", *args], capture_output=True, text=True, timeout=60, check=False)


def scrape(exp: ExporterProcess, **headers) -> Samples:
    status, _, body = exp.get("/metrics", headers=headers or None)
    assert status == 200, body[:300]
    return parse(body.decode())


def served_families(exp: ExporterProcess) -> set[str]:
    """The exporter's own families (counters with their _total), as docs/metrics.md names them."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = exp.get("/metrics")
    assert status == 200
    return {f.name + ("_total" if f.type == "counter" else "") for f in text_string_to_metric_families(body.decode())
            if f.name.startswith("cri_exporter_")}


def documented_families() -> set[str]:
    return set(re.findall(r"^\| `([a-z_]+)`", (REPO / "docs" / "metrics.md").read_text(), re.MULTILINE))


def standard_container_ids(pods) -> set[str]:
    """The lab's containers as started (the latest attempt of each: one series per container)."""
    return {ids[-1] for pod in (pods.web, pods.burner, pods.batch, pods.flaky) for ids in pod.containers.values()}


# ---- TLS and basic auth ----------------------------------------------------------

def test_tls_and_basic_auth_as_pythons_ssl_and_curl_see_them(containerd, pods, tmp_path):
    pki = make_pki(tmp_path / "web")
    config = write_config(pki.dir / "web-config.yml", {
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},
        "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff", "Strict-Transport-Security": "max-age=31536000"}},
        "basic_auth_users": {USER: bcrypt_hash(PASSWORD, cost=10)},
    })
    ctx = pki.client_context()
    good, wrong = basic(USER, PASSWORD), basic(USER, "not-" + PASSWORD)
    with serve(containerd, config, ctx, auth=good) as exp:
        conn = http.client.HTTPSConnection(exp.host, exp.port, context=ctx, timeout=30)
        status, headers, _ = request(exp, ctx, conn=conn)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Strict-Transport-Security"] == "max-age=31536000"
        assert conn.sock.version() == "TLSv1.3"  # the toolkit's max_version default
        assert conn.sock.getpeercert(binary_form=True) == der_of(pki.cert_file)
        assert request(exp, ctx, headers=wrong, conn=conn)[0] == 401
        status, headers, body = request(exp, ctx, headers=good, conn=conn)  # the same connection throughout
        assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
        samples = parse(body.decode())
        assert samples.get1("cri_up") == 1
        assert standard_container_ids(pods) <= {s["container_id"] for s in samples.labelsets("cri_container_info")}
        conn.close()

        # /healthz answers the kubelet's probe without credentials; everything else wants them
        assert request(exp, ctx, "/healthz")[:3:2] == (200, b"ok\n")
        for path in ("/doctor", "/", "/nope"):
            assert request(exp, ctx, path)[0] == 401, path
        wait_for(lambda: request(exp, ctx, "/doctor", headers=good)[0] == 200, timeout=60, what="a doctor report")
        assert request(exp, ctx, "/nope", headers=good)[0] == 404

        # curl: verifies the certificate against the CA, sends basic auth, offers h2 and gets HTTP/1.1
        out = curl("--cacert", str(pki.ca_file), "-u", f"{USER}:{PASSWORD}", "--http2", "-o", str(tmp_path / "m"),
                   "-w", "%{http_code} %{http_version} %{ssl_verify_result}", f"{exp.url}/metrics")
        assert out.returncode == 0 and out.stdout == "200 1.1 0", out
        assert parse((tmp_path / "m").read_text()).get1("cri_up") == 1
        out = curl("--cacert", str(pki.ca_file), "--tlsv1.2", "--tls-max", "1.2", "-o", "/dev/null", "-w", "%{http_code}",
                   f"{exp.url}/metrics")
        assert out.stdout == "401", out  # TLS 1.2 is the toolkit's min_version default
        assert curl("-o", "/dev/null", f"{exp.url}/metrics").returncode == 60  # curl does not trust our CA
        plain = curl("-o", "/dev/null", f"http://{exp.host}:{exp.port}/metrics")  # HTTP to the TLS port: no answer
        assert plain.returncode in (52, 56), plain

        s = scrape(exp)
        assert served_families(exp) - documented_families() == set()
        assert s.get1("cri_exporter_http_requests_refused_total", reason="unauthorized") == 6
        assert s.get1("cri_exporter_http_connections_dropped_total", reason="tls_handshake") >= 2  # untrusting curl, plain HTTP
        assert s.get1("cri_exporter_http_password_checks_total") == 2  # the right password once, the wrong once
        assert s.get1("cri_exporter_web_config_last_reload_successful") == 1


def test_client_certificates_verified_and_their_names_checked(containerd, pods, tmp_path):
    pki = make_pki(tmp_path / "web")
    config = write_config(pki.dir / "web-config.yml", {"tls_server_config": {
        "cert_file": "server.crt", "key_file": "server.key", "client_ca_file": "ca.crt",
        "client_auth_type": "RequireAndVerifyClientCert", "client_allowed_sans": ["prometheus.example", "10.0.0.9"]}})
    prometheus = pki.issue("prometheus", "prometheus.example")
    by_address = pki.issue("by-address", "10.0.0.9")
    stranger = pki.issue("stranger", "prometheus.example", ca=trustme.CA())
    other_name = pki.issue("other-name", "grafana.example")
    ctx = pki.client_context(prometheus)
    with serve(containerd, config, ctx) as exp:
        assert request(exp, ctx)[0] == 200
        assert request(exp, pki.client_context(by_address))[0] == 200
        for name, client in (("no certificate", pki.client_context()), ("another CA", pki.client_context(stranger)),
                             ("a name not allowed", pki.client_context(other_name))):
            assert refused(exp, client) is not None, name
        out = curl("--cacert", str(pki.ca_file), "--cert", str(prometheus[0]), "--key", str(prometheus[1]), "-o", "/dev/null",
                   "-w", "%{http_code}", f"{exp.url}/metrics")
        assert out.stdout == "200", out
        assert curl("--cacert", str(pki.ca_file), f"{exp.url}/metrics").returncode != 0
        assert scrape(exp).get1("cri_exporter_http_connections_dropped_total", reason="tls_handshake") >= 4


def test_versions_ciphers_and_curve_apply_and_reload(containerd, pods, tmp_path):
    """TLS settings change without a restart; set through the environment variable."""
    pki = make_pki(tmp_path / "web")
    tls = {"cert_file": "server.crt", "key_file": "server.key"}
    config = write_config(pki.dir / "web-config.yml", {"tls_server_config": {**tls, "min_version": "TLS13"}})
    ctx = pki.client_context()
    exp = ExporterProcess(containerd.endpoint, "--host-root", "/", tls=ctx,
                          env={"CRI_EXPORTER_WEB_CONFIG_FILE": str(config)})
    with exp:
        assert refused(exp, pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)) is not None
        assert request(exp, ctx)[0] == 200

        write_config(config, {"tls_server_config": {
            **tls, "max_version": "TLS12", "cipher_suites": ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"],
            "curve_preferences": ["CurveP384"]}})

        def negotiated() -> tuple:
            with socket.create_connection((exp.host, exp.port), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return s.version(), s.cipher()[0]

        wait_for(lambda: negotiated()[0] == "TLSv1.2", timeout=RELOADED, what="the new max_version")
        assert negotiated() == ("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384")
        aes128 = pki.client_context()
        aes128.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
        x25519 = pki.client_context()
        x25519.set_ecdh_curve("X25519")
        p384 = pki.client_context()
        p384.set_ecdh_curve("secp384r1")
        assert refused(exp, aes128) is not None and refused(exp, x25519) is not None
        assert request(exp, p384)[0] == 200
        assert scrape(exp).get1("cri_exporter_web_config_last_reload_successful") == 1


def test_basic_auth_over_plain_http_a_rate_limit_and_no_doctor_endpoint(containerd, pods, tmp_path):
    """A file without tls_server_config: basic auth over HTTP (as the toolkit
    allows, for a loopback or a proxy's upstream); the rate limit's bucket
    (5 requests, then one every 10 s); --no-doctor-endpoint."""
    config = write_config(tmp_path / "web-config.yml", {
        "basic_auth_users": {USER: bcrypt_hash(PASSWORD)}, "rate_limit": {"interval": "10s", "burst": 5}})
    good = basic(USER, PASSWORD)
    with ExporterProcess(containerd.endpoint, "--host-root", "/", "--web-config-file", str(config), "--no-doctor-endpoint",
                         auth=good) as exp:
        assert exp.url.startswith("http://")
        assert [exp.get(path)[0] for path in ("/metrics", "/doctor", "/")] == [200, 404, 200]
        assert b"/doctor" not in exp.get("/")[2]
        assert exp.get("/metrics", headers={"Authorization": ""})[0] == 401  # the 5th: the bucket is empty
        assert [exp.get("/metrics")[0] for _ in range(3)] == [429] * 3
        assert exp.get("/healthz", headers={"Authorization": ""})[:3:2] == (200, b"ok\n")  # probes are let through
        time.sleep(10.5)  # the behaviour under test: the rate limit's bucket refills one token in 10 s
        s = scrape(exp)
        assert s.get1("cri_exporter_http_requests_refused_total", reason="rate_limited") == 3
        assert s.get1("cri_exporter_http_requests_refused_total", reason="unauthorized") == 1


# ---- reload: rotated certificates, broken files ------------------------------------

class SecretVolume:
    """A directory laid out as the kubelet lays out a Secret volume: files are
    links through `..data`, itself a link to a timestamped directory that an
    update replaces whole by renaming a new link over `..data`."""

    def __init__(self, directory: Path, files: dict[str, bytes]):
        self.dir = directory
        directory.mkdir(parents=True)
        self.version = 0
        self.update(files)
        for name in files:
            (directory / name).symlink_to(f"..data/{name}")

    def update(self, files: dict[str, bytes]) -> None:
        self.version += 1
        target = self.dir / f"..v{self.version}"
        target.mkdir()
        for name, data in files.items():
            (target / name).write_bytes(data)
        tmp = self.dir / "..data_tmp"
        tmp.symlink_to(target.name)
        os.replace(tmp, self.dir / "..data")


def test_rotated_certificates_and_changed_users_are_taken_and_a_broken_file_is_not(containerd, pods, tmp_path):
    pki = make_pki(tmp_path / "pki")
    first_hash = bcrypt_hash(PASSWORD)
    secret = {"web-config.yml": f"tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
                                f"basic_auth_users:\n  {USER}: {first_hash}\n".encode(),
              "tls.crt": pki.cert_file.read_bytes(), "tls.key": pki.key_file.read_bytes()}
    volume = SecretVolume(tmp_path / "secret", secret)
    ctx, good = pki.client_context(), basic(USER, PASSWORD)
    with serve(containerd, volume.dir / "web-config.yml", ctx, auth=good) as exp:
        assert peer_certificate(exp, ctx) == der_of(pki.cert_file)
        kept = http.client.HTTPSConnection(exp.host, exp.port, context=ctx, timeout=30)
        assert request(exp, ctx, "/healthz", conn=kept)[0] == 200
        first_load = scrape(exp).get1("cri_exporter_web_config_last_reload_success_timestamp_seconds")

        cert, key = pki.issue("rotated", "localhost", "127.0.0.1", rsa=True)
        volume.update({**secret, "tls.crt": cert.read_bytes(), "tls.key": key.read_bytes()})
        wait_for(lambda: peer_certificate(exp, ctx) == der_of(cert), timeout=RELOADED, what="the rotated certificate")
        assert request(exp, ctx, "/healthz", conn=kept)[0] == 200  # a connection made before goes on
        s = scrape(exp)
        assert s.get1("cri_exporter_web_config_last_reload_successful") == 1
        assert s.get1("cri_exporter_web_config_last_reload_success_timestamp_seconds") > first_load

        # broken: a YAML error on a hash's line; served on with what was in force
        second_hash = bcrypt_hash("new-" + PASSWORD)
        volume.update({**secret, "tls.crt": cert.read_bytes(), "tls.key": key.read_bytes(),
                       "web-config.yml": f"basic_auth_users:\n  {USER}: [{second_hash}\n".encode()})
        wait_for(lambda: scrape(exp).get1("cri_exporter_web_config_last_reload_successful") == 0, timeout=RELOADED,
                 what="the failed reload in the metrics")
        assert peer_certificate(exp, ctx) == der_of(cert) and request(exp, ctx, headers=good)[0] == 200

        # users changed: the old password stops working, the new one works
        new = basic(USER, "new-" + PASSWORD)
        volume.update({**secret, "tls.crt": cert.read_bytes(), "tls.key": key.read_bytes(),
                       "web-config.yml": secret["web-config.yml"].replace(first_hash.encode(), second_hash.encode())})
        wait_for(lambda: request(exp, ctx, headers=new)[0] == 200, timeout=RELOADED, what="the new password")
        assert request(exp, ctx, headers=good)[0] == 401
        assert scrape(exp, **new).get1("cri_exporter_web_config_last_reload_successful") == 1

        # TLS off is a restart's business: refused, TLS goes on
        volume.update({"web-config.yml": f"basic_auth_users:\n  {USER}: {second_hash}\n".encode(),
                       "tls.crt": cert.read_bytes(), "tls.key": key.read_bytes()})
        wait_for(lambda: scrape(exp, **new).get1("cri_exporter_web_config_last_reload_successful") == 0,
                 timeout=RELOADED, what="the refused reload")
        assert request(exp, ctx, headers=new)[0] == 200
        kept.close()
        log = exp.log()
    assert log.count('"web config not reloaded; serving with the last good one"') == 2
    assert "while parsing a flow sequence at line 2" in log and "turning TLS off needs a restart" in log
    for secret_text in (PASSWORD, first_hash, second_hash, second_hash[7:29], "PRIVATE KEY"):
        assert secret_text not in log, secret_text
    assert "Traceback" not in log and "has no effect" not in log


# ---- a bad file at start ------------------------------------------------------------

@pytest.mark.parametrize("text, says", [
    ("tls_server_config:\n  cert_filse: server.crt\n", "tls_server_config: unknown field 'cert_filse'"),
    ("tls_server_config:\n  cert_file: gone.crt\n  key_file: server.key\n", "gone.crt: No such file or directory"),
    (f"basic_auth_users:\n  {USER}: {PASSWORD}\n", f"the password of user '{USER}' is not a bcrypt hash"),
], ids=["unknown field", "missing file", "not a hash"])
def test_a_bad_file_at_start_is_a_usage_error(tmp_path, text, says):
    pki = make_pki(tmp_path / "web")
    path = pki.dir / "web-config.yml"
    path.write_text(text)
    for args, env in (([f"--web.config.file={path}"], {}), ([], {"CRI_EXPORTER_WEB_CONFIG_FILE": str(path)})):
        out = subprocess.run([sys.executable, "-m", "cri_exporter", "serve", "--listen-address", "127.0.0.1:0", *args],
                             capture_output=True, text=True, timeout=60, cwd="/", check=False,
                             env={**os.environ, "PYTHONPATH": str(REPO), **env})
        assert out.returncode == 2, out
        assert "Invalid value for '--web-config-file' / '--web.config.file'" in out.stderr and says in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and PASSWORD not in out.stderr


# ---- what a connection may cost ----------------------------------------------------

def test_a_stalled_handshake_is_cut_at_the_request_deadline_and_counts_against_the_bound(containerd, pods, tmp_path):
    """A client that opens TLS and stalls holds a connection no longer than one
    that sends half a request; a flood of them cannot lock a scraper out, and
    holds bounded memory: 1,000 stalled TLS connections took 308 MB with
    asyncio's 256 KiB read buffer each, 64 MB with 16 KiB (Python 3.11.7)."""
    pki = make_pki(tmp_path / "web")
    config = write_config(pki.dir / "web-config.yml", {
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},
        "basic_auth_users": {USER: bcrypt_hash(PASSWORD)}})
    ctx = pki.client_context()
    extra = 50
    raise_nofile(MAX_CONNECTIONS + extra + 200)
    with serve(containerd, config, ctx, auth=basic(USER, PASSWORD)) as exp:
        silent = connect(exp)  # TCP, then nothing
        half = connect(exp)
        half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
        idle = ctx.wrap_socket(connect(exp, timeout=10), server_hostname="localhost")  # handshake done, no request
        started = time.monotonic()

        def all_closed() -> bool:
            return is_closed(silent) and is_closed(half) and tls_closed(idle)

        while time.monotonic() - started < REQUEST_TIMEOUT + MARGIN and not all_closed():
            assert scrape(exp).get1("cri_up") == 1  # scrapes go on meanwhile
            time.sleep(0.5)  # poll interval of the wait for the cuts, bounded by REQUEST_TIMEOUT + MARGIN
        took = time.monotonic() - started
        assert all_closed() and took < REQUEST_TIMEOUT + MARGIN, took
        for sock in (silent, half):
            assert read_until_closed(sock, timeout=1) == (b"", True)
        s = scrape(exp)
        assert s.get1("cri_exporter_http_connections_dropped_total", reason="request_timeout") == 3

        rss_before, threads_before = rss_kb(exp.proc.pid), threads(exp.proc.pid)
        socks = [connect(exp) for _ in range(MAX_CONNECTIONS + extra)]  # each a handshake that never starts
        try:
            wait_for(lambda: sum(map(is_closed, socks)) >= extra, timeout=REQUEST_TIMEOUT / 2, what="the oldest closed")
            grown_mb = (rss_kb(exp.proc.pid) - rss_before) / 1024
            assert grown_mb < 120 and threads(exp.proc.pid) <= threads_before + 2, (grown_mb, threads_before)
            s = scrape(exp)  # over TLS, with basic auth: admitted, and one more of the oldest goes
            assert s.get1("cri_up") == 1 and s.get1("cri_exporter_http_open_connections") == MAX_CONNECTIONS
            assert s.get1("cri_exporter_http_connections_dropped_total", reason="limit") == extra + 1
        finally:
            for sock in socks:
                sock.close()
        for sock in (silent, half, idle):
            sock.close()


def test_a_flood_of_wrong_passwords_neither_starves_scrapes_nor_takes_more_than_a_core(containerd, pods, tmp_path):
    """bcrypt at cost 12 takes 0.3-0.5 s a check here. Six clients send
    distinct wrong passwords as fast as they are answered, first from one
    address, then from six. Throughout, the scraper (its credentials checked
    once, before) answers as always, and the agent's CPU stays within the one
    bcrypt thread plus the loop's own work. While the flood comes from one
    address, a user never seen before, elsewhere, gets its first check
    through; from six (past MAX_PENDING), first checks may wait or be told to
    retry (503): docs/install.md says so."""
    pki = make_pki(tmp_path / "web")
    config = write_config(pki.dir / "web-config.yml", {
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},
        "basic_auth_users": {USER: bcrypt_hash(PASSWORD, cost=12), "grafana": bcrypt_hash("g-" + PASSWORD, cost=12)}})
    ctx = pki.client_context()
    good = basic(USER, PASSWORD)
    with serve(containerd, config, ctx, auth=good) as exp:
        assert request(exp, ctx, headers=good, source="127.0.0.2")[0] == 200  # checked once, remembered

        def flood_while(seconds: float, addresses: list[str], newcomer: bool) -> tuple[list, list, int | None, float]:
            """Scrapes (status, seconds taken), the flood's answers, the newcomer's, and the agent's cores used."""
            stop = threading.Event()
            answers: list[int] = []

            def flood(n: int) -> None:
                source = (addresses[n % len(addresses)], 0)
                conn = http.client.HTTPSConnection(exp.host, exp.port, context=ctx, timeout=30, source_address=source)
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        answers.append(request(exp, ctx, headers=basic(USER, f"guess-{n}-{i}"), conn=conn)[0])
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        conn = http.client.HTTPSConnection(exp.host, exp.port, context=ctx, timeout=30, source_address=source)
                conn.close()

            cpu_before, wall_before = cpu_seconds(exp.proc.pid), time.monotonic()
            threads = [threading.Thread(target=flood, args=(n,), daemon=True) for n in range(6)]
            for t in threads:
                t.start()
            scrapes, first_check = [], None
            try:
                while time.monotonic() - wall_before < seconds:
                    start = time.monotonic()
                    status, _, _ = request(exp, ctx, headers=good, source="127.0.0.2")
                    scrapes.append((status, time.monotonic() - start))
                    if newcomer and first_check is None and time.monotonic() - wall_before > 2:
                        first_check = request(exp, ctx, headers=basic("grafana", "g-" + PASSWORD), source="127.0.0.3")[0]
                    time.sleep(0.5)  # the behaviour under test: Prometheus' scrapes, paced, during the flood
            finally:
                stop.set()
                for t in threads:
                    t.join(60)
            return scrapes, answers, first_check, (cpu_seconds(exp.proc.pid) - cpu_before) / (time.monotonic() - wall_before)

        one = flood_while(6, ["127.0.0.10"], newcomer=True)
        many = flood_while(8, [f"127.0.0.{10 + n}" for n in range(6)], newcomer=False)
        s = scrape(exp)
    for scrapes, answers, _, cores in (one, many):
        assert all(status == 200 for status, _ in scrapes) and max(t for _, t in scrapes) < 8 + MARGIN, scrapes
        assert set(answers) <= {401, 503} and 503 in answers and 401 in answers
        assert cores < 1.5, cores
    assert one[2] == 200
    checks = s.get1("cri_exporter_http_password_checks_total")
    busy = s.get1("cri_exporter_http_requests_refused_total", reason="auth_busy")
    assert busy == one[1].count(503) + many[1].count(503)  # answered at once, without a check
    assert checks <= 2 + one[1].count(401) + many[1].count(401) + MAX_PENDING  # each check a 401 (or the two users')


def tls_closed(sock: ssl.SSLSocket) -> bool:
    """Whether the server closed a TLS connection (MSG_PEEK would see its session tickets)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except ssl.SSLWantReadError:
        return False
    except (ConnectionError, ssl.SSLError):
        return True
    finally:
        sock.setblocking(True)




# ---- Prometheus -------------------------------------------------------------------

@pytest.mark.parametrize("name", RELEASES, ids=release_id)
def test_prometheus_scrapes_over_tls_with_basic_auth(containerd, pods, tmp_path, name):
    pki = make_pki(tmp_path / "web")
    config = write_config(pki.dir / "web-config.yml", {
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},
        "basic_auth_users": {USER: bcrypt_hash(PASSWORD, cost=10)}})
    ctx = pki.client_context()
    tls = {"scheme": "https", "tls_config": {"ca_file": str(pki.ca_file)}}
    with serve(containerd, config, ctx, auth=basic(USER, PASSWORD)) as exp:
        target = f"{exp.host}:{exp.port}"
        wrong = {"job_name": "wrong-password", "static_configs": [{"targets": [target]}], **tls,
                 "basic_auth": {"username": USER, "password": "not-" + PASSWORD}}
        with PrometheusProcess([target], release=release(name), extra_jobs=[wrong],
                               job_config={**tls, "basic_auth": {"username": USER, "password": PASSWORD}}) as prom:
            wait_for(lambda: prom.query('up{job="cri-exporter"} == 1'), timeout=30, what="a scrape over TLS")
            # A scrape answers by Prometheus's deadline here (1 s, less the exporter's 0.5 s margin): on
            # a loaded machine the first may come before the containers collector is done (served failed).
            wait_for(lambda: standard_container_ids(pods) <= {
                r["metric"]["container_id"] for r in prom.query('cri_container_info{job="cri-exporter"}')},
                timeout=30, what="the lab's containers in Prometheus")
            assert prom.query('cri_up{job="cri-exporter"}')[0]["value"][1] == "1"

            def targets() -> dict:
                return {t["labels"]["job"]: t for t in prom.api("targets")["activeTargets"]}

            # Both jobs scrape at once; while one password check runs the other
            # may be answered 503 (auth_busy, the bound on bcrypt work), most
            # often on a loaded machine. What each job settles on is the point.
            def settled() -> bool:
                t = targets()
                return "401" in t["wrong-password"]["lastError"] and t["cri-exporter"]["health"] == "up"

            wait_for(settled, timeout=60, what="the wrong password answered 401 while the right one scrapes")
            wrong_target, right_target = targets()["wrong-password"], targets()["cri-exporter"]
            assert wrong_target["health"] == "down" and "401" in wrong_target["lastError"], wrong_target
            assert right_target["health"] == "up" and right_target["scrapeUrl"].startswith("https://")
