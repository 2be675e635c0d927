"""The doctor's values: what a check is, what it found, and the whole report.

Severity is a property of the check (how much a failure hurts) and never
changes between runs, so metric labels built from it stay stable; status is
what this run found. The split follows kubeadm preflight, where each check
returns warnings and errors and the caller decides what is fatal.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Callable


class Status(str, enum.Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


class Severity(str, enum.Enum):
    # Prometheus alerting's usual severities, so alerts can route on them.
    CRITICAL = "critical"  # the node cannot run pods (or will not after a restart)
    WARNING = "warning"  # degraded, risky, or deprecated: will bite later
    INFO = "info"  # hygiene


@dataclass(frozen=True)
class Finding:
    """What one check saw. Every warn and fail carries why/fix/refs so the
    operator never has to search for the meaning of a line."""

    status: Status
    summary: str
    seen: str = ""
    why: str = ""
    fix: str = ""
    refs: tuple[str, ...] = ()
    # On a skip: the host file the confined agent can read only after a restart
    # (replaced after it started; confined_read.py). serve exports and alerts on it.
    restart_needed: str = ""


def passed(summary: str, *, seen: str = "", refs=()) -> Finding:
    return Finding(Status.PASS, summary, seen, refs=tuple(refs))


def skipped(summary: str, *, seen: str = "", restart_needed: str = "") -> Finding:
    return Finding(Status.SKIP, summary, seen, restart_needed=restart_needed)


# Keyword-only: five strings in a row are easy to swap unnoticed.
def warned(summary: str, *, seen: str, why: str, fix: str, refs) -> Finding:
    return Finding(Status.WARN, summary, seen, why, fix, tuple(refs))


def failed(summary: str, *, seen: str, why: str, fix: str, refs) -> Finding:
    return Finding(Status.FAIL, summary, seen, why, fix, tuple(refs))


@dataclass(frozen=True)
class Check:
    """A registered check: a stable id (`area.name...`), a severity, a
    function taking the run's Context and returning one Finding, and the
    requirements that decide whether it applies to this node at all."""

    id: str
    severity: Severity
    func: Callable
    doc: str = ""
    requires: tuple = ()  # of doctor.requirements.Requirement

    @property
    def area(self) -> str:
        return self.id.split(".", 1)[0]


@dataclass(frozen=True)
class CheckResult:
    id: str
    area: str
    severity: Severity
    finding: Finding
    duration_seconds: float = 0.0

    @property
    def status(self) -> Status:
        return self.finding.status

    def to_dict(self) -> dict:
        f = self.finding
        return {
            "id": self.id,
            "area": self.area,
            "status": f.status.value,
            "severity": self.severity.value,
            "summary": f.summary,
            "detail": f.seen,
            "why": f.why,
            "fix": f.fix,
            "refs": list(f.refs),
            **({"restart_needed": f.restart_needed} if f.restart_needed else {}),
        }


@dataclass
class Report:
    results: list[CheckResult]
    host_root: str = "/"
    endpoint: str = ""
    started_at: float = field(default_factory=time.time)
    duration_seconds: float = 0.0
    # How the run was confined (confine_doctor.py): {"state", "abi", "reason"?, "limits"?}; None: not said.
    confinement: dict | None = None

    def counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in Status}
        for r in self.results:
            counts[r.status.value] += 1
        return counts

    @property
    def failed(self) -> bool:
        return any(r.status is Status.FAIL for r in self.results)

    @property
    def warned(self) -> bool:
        return any(r.status is Status.WARN for r in self.results)

    def by_id(self) -> dict[str, CheckResult]:
        return {r.id: r for r in self.results}

    def to_dict(self) -> dict:
        return {
            "checks": [r.to_dict() for r in self.results],
            "summary": {
                **self.counts(),
                "total": len(self.results),
                "ok": not self.failed,
                "host_root": self.host_root,
                "runtime_endpoint": self.endpoint,
                "started_at": self.started_at,
                "duration_seconds": round(self.duration_seconds, 6),
            },
            **({"confinement": self.confinement} if self.confinement is not None else {}),
        }
