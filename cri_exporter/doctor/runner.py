"""Runs every selected check and never stops at the first failure.

A check that raises becomes a `skip` finding carrying the exception, so one
bug or one odd file costs one line of the report, never the report.
"""
from __future__ import annotations

import time
import traceback

from cri_exporter.confined_read import DeniedByConfinement
from cri_exporter.doctor import requirements
from cri_exporter.doctor.context import Context
from cri_exporter.doctor.model import Check, CheckResult, Finding, Report, Status, skipped
from cri_exporter.doctor.registry import all_checks
from cri_exporter.hostfs import HostFS


class UnknownCheck(ValueError):
    """A --check/--skip id that matches no check: a usage error (exit 2)."""


def select(checks: dict[str, Check], only=None, skip=None) -> list[Check]:
    """Checks by id, or by id prefix ending in '.' or an area name
    (`--check kernel` runs every kernel.* check)."""

    def matches(pattern: str) -> list[str]:
        if pattern in checks:
            return [pattern]
        prefix = pattern if pattern.endswith(".") else pattern + "."
        return [cid for cid in checks if cid.startswith(prefix)]

    unknown = [p for p in list(only or []) + list(skip or []) if not matches(p)]
    if unknown:
        raise UnknownCheck(
            f"unknown check id(s): {', '.join(unknown)}; `cri-exporter doctor --list` shows the ids"
        )
    chosen = [cid for cid in checks] if not only else [cid for p in only for cid in matches(p)]
    skipped = {cid for p in (skip or []) for cid in matches(p)}
    seen: set[str] = set()
    out = []
    for cid in chosen:
        if cid not in skipped and cid not in seen:
            seen.add(cid)
            out.append(checks[cid])
    return out


def applies(check: Check, ctx: Context) -> Finding | None:
    """None when the check applies to this node, else the skip saying why."""
    why = requirements.unmet(ctx, check.requires)
    return skipped(why) if why else None


def run_check(check: Check, ctx: Context, decided: Finding | Exception | None = None) -> CheckResult:
    """One check's result: `decided` is the skip when the list said it does
    not apply, or what deciding raised (reported like the check raising it)."""
    start = time.perf_counter()
    try:
        if isinstance(decided, Exception):
            raise decided
        finding = decided or check.func(ctx)
        if not isinstance(finding, Finding):
            raise TypeError(f"check returned {type(finding).__name__}, not a Finding")
    except DeniedByConfinement as e:  # our own confinement (serve's or the doctor's), not the node: never a warn or fail
        finding = skipped(f"not judged: {e}", seen=f"{e.host_path}: opening it was denied by our own confinement (Landlock)",
                          restart_needed=e.host_path if e.changed_at is not None else "")
    except Exception as e:  # noqa: BLE001 -- the point: a broken check is a finding
        last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        where = f" ({last.filename.rsplit('/', 1)[-1]}:{last.lineno})" if last else ""
        finding = Finding(
            Status.SKIP,
            f"check could not run: {type(e).__name__}: {e}",
            seen=f"{type(e).__name__}: {e}{where}",
            why="The doctor hit something it did not expect; the other checks still ran.",
            fix="Report this line with `cri-exporter doctor --bundle bundle.tar.gz` attached.",
        )
    return CheckResult(check.id, check.area, check.severity, finding, time.perf_counter() - start)


def run(ctx: Context, only=None, skip=None) -> Report:
    selected = select(all_checks(), only, skip)
    started = time.time()
    t0 = time.perf_counter()
    plan: list[tuple[Check, Finding | Exception | None]] = []
    for c in selected:  # the list is decided before any check runs
        try:
            plan.append((c, applies(c, ctx)))
        except Exception as e:  # noqa: BLE001 -- run_check reports it as the check's own failure
            plan.append((c, e))
    results = [run_check(c, ctx, decided) for c, decided in plan]
    endpoint = ctx.endpoint_if_resolved
    return Report(results, ctx.hostfs.root, endpoint, started, time.perf_counter() - t0)


def run_doctor(hostfs: HostFS, endpoint: str | None, checks=None, skip=None, cri_timeout: float = 3.0,
               netns: str | None = None) -> Report:
    """One full doctor run in this process (tests; the CLI builds its own
    Context to write the bundle from it, and serve runs the CLI as a child).

    Raises UnknownCheck for ids that do not exist; nothing else escapes.
    """
    ctx = Context(hostfs, endpoint, cri_timeout=cri_timeout, netns=netns)
    try:
        return run(ctx, checks, skip)
    finally:
        ctx.close()
