"""Run Debian's `prometheus` binary against the exporter, the way the
dashboards and alerts will see it in production, and query its HTTP API.

Used by tests/test_prometheus_e2e.py and scripts/render_overview.py.
Everything (TSDB, config, rule copy) lives in one temp directory that
`stop()` removes.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from tests.exporter_proc import ManagedProcess, free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


class PromQLError(Exception):
    """Prometheus answered with status=error (bad_data is a parse error)."""

    def __init__(self, error_type: str, error: str):
        super().__init__(f"{error_type}: {error}")
        self.error_type, self.error = error_type, error


class PrometheusProcess(ManagedProcess):
    """`prometheus` scraping `targets` (host:port) as `job`, every `scrape_interval`.

    `rule_groups` (a list of rule-group dicts, as in a rule file) is written
    to the temp dir and loaded. Evaluation runs at the scrape interval.
    """

    def __init__(self, targets: list[str], job: str = "cri-exporter", scrape_interval: str = "1s",
                 rule_groups: list[dict] | None = None, binary: str = PROMETHEUS, retention: str = "1d"):
        self.dir = Path(tempfile.mkdtemp(prefix="prom-", dir="/tmp"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.job = job
        config: dict = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval,
                       "scrape_timeout": scrape_interval},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
        }
        if rule_groups:
            rules = self.dir / "rules.yml"
            rules.write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False))
            config["rule_files"] = [str(rules)]
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = self.dir / "prometheus.log"
        self._start(
            [binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--storage.tsdb.retention.time={retention}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--web.enable-lifecycle", "--log.level=warn"],
            cwd=self.dir,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus did not become ready:\n{self.log()}")

    # --- HTTP API -------------------------------------------------------
    def api(self, path: str, **params) -> object:
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
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=str(step))["result"]

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]

    def rules(self) -> list[dict]:
        return self.api("rules")["groups"]

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    # --- lifecycle ------------------------------------------------------
    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)
