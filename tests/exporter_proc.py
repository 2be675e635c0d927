"""Run `cri-exporter serve` as a subprocess and read its /metrics like Prometheus does."""
from __future__ import annotations

import contextlib
import gzip
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import IO, TypeVar

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Samples(dict[tuple[str, frozenset], float]):
    """{(name, frozenset(labels.items())): value} of one scrape, plus lookups."""

    def get1(self, name: str, **labels) -> float:
        found = self.find(name, **labels)
        assert len(found) == 1, f"{name}{labels}: expected one sample, found {found}"
        return next(iter(found.values()))

    def find(self, name: str, **labels) -> dict[tuple[str, frozenset], float]:
        want = set(labels.items())
        return {k: v for k, v in self.items() if k[0] == name and want <= k[1]}

    def labelsets(self, name: str) -> list[dict]:
        return [dict(k[1]) for k in self if k[0] == name]


def parse(text: str) -> Samples:
    """Parse exposition text; fail on any duplicate series."""
    out, seen = Samples(), Counter[tuple[str, frozenset]]()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            seen[key] += 1
            out[key] = s.value
    dups = [k for k, n in seen.items() if n > 1]
    assert not dups, f"duplicate series: {dups[:5]}"
    return out


def terminate(proc: subprocess.Popen, timeout: float) -> None:
    """Stop a child: TERM, and KILL if it is still there after `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ManagedProcess:
    """A server the tests start: its log file, stop (TERM, then KILL) and `with`."""

    proc: subprocess.Popen
    log_path: Path
    _log: IO[bytes]

    def _start(self, cmd: list[str], **popen) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, **popen)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        terminate(self.proc, 10)
        self._log.close()

    def _wait_answering(self, probe: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        """Until `probe()` is true (an OSError counts as not yet); fails at once if the process exits."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited {self.proc.returncode}:\n{self.log()}")
            try:
                if probe():
                    return
            except OSError:
                pass
            time.sleep(0.1)  # poll interval
        raise RuntimeError(f"{what} did not come up:\n{self.log()}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class ExporterProcess(ManagedProcess):
    def __init__(self, endpoint: str | None, *args: str, env: dict | None = None, wrap: list[str] | None = None,
                 log_path: Path | None = None, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None,
                 auth: dict[str, str] | None = None):
        """`tls`: the client context of an exporter serving HTTPS (a web config);
        `auth`: headers every request sends (basic auth)."""
        self.host = host
        self.port = free_port()
        self.tls, self.auth = tls, auth or {}
        netloc = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.url = f"{'https' if tls else 'http'}://{netloc}"
        self.log_path = log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"cri-exporter-{self.port}.log"
        cmd = [sys.executable, "-m", "cri_exporter", "serve", "--listen-address", netloc,
               "--log-format", "json", *args]
        if endpoint is not None:
            cmd += ["--runtime-endpoint", endpoint]
        cmd = [*(wrap or []), *cmd]
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self._start(cmd, env=full_env, cwd="/")
        self._wait_ready()

    def _wait_ready(self) -> None:
        self._wait_answering(lambda: bool(self.get("/healthz", timeout=1)), "exporter")

    def get(self, path: str, headers: dict | None = None, timeout: float = 15) -> tuple[int, dict, bytes]:
        req = urllib.request.Request(self.url + path, headers={**self.auth, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.tls) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def text(self, headers: dict | None = None) -> str:
        status, hdrs, body = self.get("/metrics", headers)
        assert status == 200, body[:500]
        if hdrs.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return body.decode()

    def scrape(self) -> Samples:
        return parse(self.text())


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.2, what: str = "condition"):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = predicate()
        if last:
            return last
        time.sleep(interval)  # poll interval
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


M = TypeVar("M", bound=ManagedProcess)


@contextlib.contextmanager
def processes(tail: int = 3000) -> Iterator[Callable[[M], M]]:
    """A fixture's servers: `keep(ExporterProcess(...))` inside the block. If the block raises
    (a fixture's setup failed), the tail of each one's log is printed, the last started first,
    for the test's report; either way they are stopped, the last started first."""
    started: list[ManagedProcess] = []

    def keep(p: M) -> M:
        started.append(p)
        return p

    try:
        yield keep
    except BaseException:
        for p in reversed(started):
            print(p.log()[-tail:])
        raise
    finally:
        for p in reversed(started):
            p.stop()
