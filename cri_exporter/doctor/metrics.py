"""The doctor's findings as Prometheus metrics, for serve mode.

- cri_doctor_check_ok{check,area,severity}: 1 pass, 0 warn or fail. A
  skipped check is NOT exported here: it neither passed nor failed (often it
  does not apply to this node: CRI-O checks on a containerd node), and a 0
  would page someone for nothing. Alert on `cri_doctor_check_ok == 0`.
- cri_doctor_check_status{check,status}: one series per check and status,
  1 for the current one (skips visible here).
- cri_doctor_last_run_timestamp_seconds, cri_doctor_last_run_duration_seconds.
- cri_doctor_run_failures_total: runs that produced no report (the previous
  report is kept; the log says why).

A check skipped because the file it reads was replaced after serve started
(confined_read.py: its Landlock rules hold the old inode) would otherwise be
silent until a restart, whatever the new file holds: each report's such files
go to restart_needed.NEEDED (reason doctor_check), which logs them once with
the remedy and exports cri_exporter_restart_needed.

Doctor runs are slow (CRI calls, file reads), so serve mode runs them on
their own cadence (PeriodicDoctor) and a scrape only renders the last report.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cri_exporter import restart_needed
from cri_exporter.doctor.model import Report, Status
from cri_exporter.doctor.report import render_json


def metric_families(report: Report) -> Iterable[GaugeMetricFamily]:
    ok = GaugeMetricFamily("cri_doctor_check_ok", "1 when the doctor check passed, 0 when it warned or failed "
                           "(skipped checks are not exported).", labels=["check", "area", "severity"])
    status = GaugeMetricFamily("cri_doctor_check_status", "1 for the current status of each doctor check.",
                               labels=["check", "status"])
    for r in report.results:
        if r.status is not Status.SKIP:
            ok.add_metric([r.id, r.area, r.severity.value], 1.0 if r.status is Status.PASS else 0.0)
        for s in Status:
            status.add_metric([r.id, s.value], 1.0 if r.status is s else 0.0)
    yield ok
    yield status
    yield GaugeMetricFamily("cri_doctor_last_run_timestamp_seconds", "When the last doctor run started.",
                            value=report.started_at)
    yield GaugeMetricFamily("cri_doctor_last_run_duration_seconds", "How long the last doctor run took.",
                            value=report.duration_seconds)


def unseen_until_restart(report: Report) -> dict[str, str]:
    """{host file: the checks it left skipped} for the files only a restart lets the agent read."""
    checks: dict[str, list[str]] = {}
    for r in report.results:
        if r.status is Status.SKIP and r.finding.restart_needed:
            checks.setdefault(r.finding.restart_needed, []).append(r.id)
    return {path: "replaced after the agent started; not judged by doctor check(s) " + ", ".join(ids)
            for path, ids in checks.items()}


class DoctorCollector:
    """A prometheus_client collector serving the latest report (none before the first run)."""

    def __init__(self, needed: restart_needed.RestartNeeded | None = None):
        self._lock = threading.Lock()
        self._report: Report | None = None
        self._failures = 0
        self._needed = needed if needed is not None else restart_needed.NEEDED

    def update(self, report: Report) -> None:
        with self._lock:
            self._report = report
        self._needed.set(restart_needed.DOCTOR_CHECK, unseen_until_restart(report))

    def run_failed(self) -> None:
        with self._lock:
            self._failures += 1

    @property
    def report(self) -> Report | None:
        with self._lock:
            return self._report

    def latest_json(self) -> str | None:
        """The body for /doctor."""
        r = self.report
        return None if r is None else render_json(r)

    def collect(self):
        r = self.report
        if r is not None:
            yield from metric_families(r)
        yield CounterMetricFamily("cri_doctor_run_failures", "Doctor runs that produced no report (the previous one is kept).",
                                  value=self._failures)

    def describe(self):
        return []  # no registration-time collect: the first run may not have happened


class PeriodicDoctor(threading.Thread):
    """Runs `run()` (serve passes DoctorChild.run: the doctor in a child process) every
    `interval` seconds off the scrape path and feeds the collector; a run that
    raises keeps the previous report."""

    def __init__(self, run: Callable[[], Report], collector: DoctorCollector, interval: float = 300.0,
                 on_error: Callable[[Exception], None] | None = None):
        super().__init__(name="cri-doctor", daemon=True)
        self._run, self.collector, self.interval = run, collector, interval
        self._on_error = on_error
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.collector.update(self._run())
            except Exception as e:  # noqa: BLE001 -- a bad run must not kill serve mode
                self.collector.run_failed()
                if self._on_error:
                    self._on_error(e)
            self._stopping.wait(self.interval)

    def stop(self) -> None:
        self._stopping.set()
