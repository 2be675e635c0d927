"""The registry of checks: each area module registers its checks by id.

Like node_exporter's collectors, a check exists by being registered; the
runner selects from here with --check/--skip.
"""
from __future__ import annotations

from typing import Callable

from cri_exporter.doctor.model import Check, Severity

CHECKS: dict[str, Check] = {}


def check(check_id: str, severity: Severity, requires=()) -> Callable:
    """Register `func(ctx) -> Finding` under a stable id; ids never change
    once released because alerts and dashboards key on them. `requires`
    (doctor.requirements, in order) says when the check applies: the
    runner reports a skip naming the first one unmet instead of calling it."""

    def register(func: Callable) -> Callable:
        if check_id in CHECKS:
            raise ValueError(f"duplicate doctor check id {check_id}")
        flat = tuple(r for item in requires for r in (item if isinstance(item, tuple) else (item,)))
        CHECKS[check_id] = Check(check_id, severity, func, (func.__doc__ or "").strip(), flat)
        return func

    return register


def all_checks() -> dict[str, Check]:
    """Every check, in registration order (area modules in a fixed order)."""
    import cri_exporter.doctor.checks  # noqa: F401  (registers on import)

    return CHECKS
