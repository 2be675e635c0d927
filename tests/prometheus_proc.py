"""Run a real `prometheus` against the exporter, the way the dashboards and
alerts will see it in production, and query its HTTP API.

The tests run every Prometheus release in RELEASES: Debian 12's own 2.42
(scripts/setup.sh installs it) and Debian sid's 3.5, fetched with its
promtool by crilab.debian into a cache outside the repository. Used by
tests/test_prometheus_e2e.py, tests/test_alerts.py, tests/test_dashboards.py
and scripts/render_overview.py. Everything a Prometheus writes (TSDB,
config, rule copy) lives in one temp directory that `stop()` removes.
"""
from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crilab.debian import Suite
from tests.exporter_proc import ManagedProcess, free_port, wait_for

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

# Release (major.minor: what test ids and the docs call it) -> the Debian suite
# it comes from; None: the machine's own (Debian 12, installed by
# scripts/setup.sh). The tests' facts were seen on 2.42.0 and 3.5.3; a suite
# that moves to another minor (sid will) fails release() until this is updated.
RELEASES = {"2.42": None, "3.5": "sid"}


@dataclass(frozen=True)
class Release:
    """One Prometheus release: its server and promtool, and the version both report."""

    name: str
    prometheus: str
    promtool: str
    version: str  # as `--version` prints it, e.g. 3.5.3+ds1


def release_id(name: str) -> str:
    """The test id of a release: `prometheus2.42`, `prometheus3.5`."""
    return f"prometheus{name}"


@functools.cache
def release(name: str) -> Release:
    """The binaries of release `name`, fetched on first use. A release that
    cannot be fetched, or whose binaries report another version, raises: a
    test never passes on a Prometheus other than the one its id names."""
    suite = RELEASES[name]
    if suite is None:
        prometheus, promtool = PROMETHEUS, shutil.which("promtool") or "/usr/bin/promtool"
    else:
        prometheus = str(Suite(suite).unpack("prometheus") / "usr/bin/prometheus")
        promtool = str(Suite(suite).unpack("promtool") / "usr/bin/promtool")
    versions = (_version(prometheus), _version(promtool))
    version = versions[0]
    if version is None or version != versions[1] or not version.startswith(name + "."):
        raise RuntimeError(f"Prometheus {name}: {prometheus} and {promtool} report versions {versions}; "
                           "check the tests' version facts and update tests.prometheus_proc.RELEASES")
    return Release(name, prometheus, promtool, version)


def _version(binary: str) -> str | None:
    """`prometheus, version 3.5.3+ds1 (branch: ...` -> 3.5.3+ds1."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    words = (out.stdout + out.stderr).split()
    return words[2] if len(words) > 2 and words[1] == "version" else None


class PromQLError(Exception):
    """Prometheus answered with status=error (bad_data is a parse error)."""

    def __init__(self, error_type: str, error: str):
        super().__init__(f"{error_type}: {error}")
        self.error_type, self.error = error_type, error


class PrometheusProcess(ManagedProcess):
    """`prometheus` scraping `targets` (host:port) as `job`, every `scrape_interval`.

    `rule_groups` (a list of rule-group dicts, as in a rule file) is written
    to the temp dir and loaded. Evaluation runs at the scrape interval.
    `release`: which Prometheus runs (default: the machine's own binary).
    The scrape config leaves `scrape_protocols` at Prometheus's default and
    sets no `fallback_scrape_protocol`, as an operator's would: Prometheus 3
    then fails any scrape whose Content-Type it does not know. `job_config`
    is merged into the job's scrape config (scheme, tls_config, basic_auth);
    `extra_jobs` are further scrape configs.
    """

    def __init__(self, targets: list[str], job: str = "cri-exporter", scrape_interval: str = "1s",
                 rule_groups: list[dict] | None = None, release: Release | None = None, retention: str = "1d",
                 job_config: dict | None = None, extra_jobs: list[dict] | None = None):
        self.release = release
        binary = release.prometheus if release else PROMETHEUS
        self.dir = Path(tempfile.mkdtemp(prefix="prom-", dir="/tmp"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.job = job
        config: dict = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval,
                       "scrape_timeout": scrape_interval},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}], **(job_config or {})},
                               *(extra_jobs or [])],
        }
        if rule_groups:
            rules = self.dir / "rules.yml"
            rules.write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False))
            config["rule_files"] = [str(rules)]
        self.config_path = self.dir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = self.dir / "prometheus.log"
        self._start(
            [binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--storage.tsdb.retention.time={retention}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--web.enable-lifecycle", "--log.level=warn"],
            cwd=self.dir,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        def ready() -> bool:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                return bool(r.status == 200)
        self._wait_answering(ready, "prometheus")

    # --- HTTP API -------------------------------------------------------
    def api(self, path: str, **params) -> Any:
        """GET /api/v1/<path>; the `data` field, or PromQLError."""
        url = f"{self.url}/api/v1/{path}"
        body = urllib.parse.urlencode(params).encode() if params else None
        req = urllib.request.Request(url, data=body)  # POST: long queries fit
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                payload = json.load(r)
        except urllib.error.HTTPError as err:
            payload = json.loads(err.read() or b"{}")
        if payload.get("status") != "success":
            raise PromQLError(payload.get("errorType", "?"), payload.get("error", repr(payload)))
        return payload["data"]

    def query(self, expr: str, time_: float | None = None) -> list[dict]:
        params = {"query": expr}
        if time_ is not None:
            params["time"] = f"{time_:.3f}"
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        result: list[dict] = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=str(step))["result"]
        return result

    def alerts(self) -> list[dict]:
        alerts: list[dict] = self.api("alerts")["alerts"]
        return alerts

    def rules(self) -> list[dict]:
        groups: list[dict] = self.api("rules")["groups"]
        return groups

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def wait_targets_up(self, timeout: float = 10.0) -> None:
        """Until every target's last scrape succeeded; else fail with the
        scrape errors (Prometheus 3's for an unknown Content-Type, say)."""
        try:
            wait_for(self.targets_up, timeout=timeout, what="Prometheus to scrape every target")
        except AssertionError as err:
            errors = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in self.api("targets")["activeTargets"]]
            raise AssertionError(f"{err}: {errors}") from None

    # --- lifecycle ------------------------------------------------------
    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)
