"""What the confined agent was asked to read but cannot until it restarts.

serve's Landlock rules hold the inodes present at its start (confine.py): a
file replaced after start directly in a split directory, or a reloaded web
config naming a directory it was not allowed at start, stays closed to it
until a restart. The readers turn such a denial into no alarm about the node
(a skipped doctor check, the last good web config kept in force), which left
the operator with nothing to act on: a check skipped so never alerts again,
and a misconfiguration the very edit introduced goes unseen. Here each such
file is counted by a bounded reason, logged once with the restart that reads
it, and exported as cri_exporter_restart_needed{reason} (the
CriExporterRestartNeeded alert).

A process-wide fact, like the confinement itself: one tracker per process.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping

import structlog
from prometheus_client.core import GaugeMetricFamily

from cri_exporter.confined_read import RESTART_HOW

log = structlog.get_logger(__name__)

DOCTOR_CHECK = "doctor_check"  # files doctor checks skipped over (their findings say which)
WEB_CONFIG = "web_config"  # files a reloaded web config names, or its TLS turned on or off
REASONS = (DOCTOR_CHECK, WEB_CONFIG)

METRIC = "cri_exporter_restart_needed"
HELP = ("Things the agent was asked to read or apply but cannot until it restarts (its Landlock rules hold the "
        "files present at its start), by reason: doctor_check (files replaced after start that doctor checks "
        "skipped), web_config (files a reloaded web config names outside the directories allowed at start, or "
        "TLS turned on or off). 0: nothing waits for a restart.")


class RestartNeeded:
    """Per reason, what waits for a restart: {what: detail}. `set` replaces a
    reason's whole list (each reader knows its full state at each pass) and
    logs what appeared (warning, with the remedy) and what went away (info)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, dict[str, str]] = {r: {} for r in REASONS}

    def set(self, reason: str, items: Mapping[str, str]) -> None:
        if reason not in self._items:
            raise ValueError(f"unknown reason {reason!r} (known: {', '.join(REASONS)})")
        with self._lock:
            before, self._items[reason] = self._items[reason], dict(items)
        for what, detail in items.items():
            if what not in before:
                log.warning("the agent needs a restart to see what changed after it started", reason=reason,
                            what=what, detail=detail, remedy=f"restart the agent: {RESTART_HOW}")
        for what in before:
            if what not in items:
                log.info("no longer waiting for a restart", reason=reason, what=what)

    def items(self, reason: str) -> dict[str, str]:
        with self._lock:
            return dict(self._items[reason])

    def collect(self):
        g = GaugeMetricFamily(METRIC, HELP, labels=["reason"])
        with self._lock:
            for reason in REASONS:
                g.add_metric([reason], float(len(self._items[reason])))
        yield g

    def describe(self):
        return [GaugeMetricFamily(METRIC, HELP, labels=["reason"])]


NEEDED = RestartNeeded()
