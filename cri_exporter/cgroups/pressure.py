"""Pressure stall information (PSI), Documentation/accounting/psi.rst:

    some avg10=0.00 avg60=0.00 avg300=0.00 total=0
    full avg10=0.00 avg60=0.00 avg300=0.00 total=0

`total` is cumulative stall time in µs. cpu.pressure has a `full` line for
cgroups since 5.13. Reading a pressure file with PSI disabled (psi=0) fails
with EOPNOTSUPP: the values stay unknown.

PSI lives in the v2 tree, so on a v1 node it is read from the hybrid
`unified` tree when the runtime placed the container there (runc does).
"""
from __future__ import annotations

import re

from cri_exporter.cgroups import files
from cri_exporter.cgroups.files import CgroupGone
from cri_exporter.cgroups.paths import CgroupPaths
from cri_exporter.cgroups.stats import PressureStats, PsiTotals


def read_pressure(paths: CgroupPaths) -> PressureStats | None:
    """PSI totals, or None if the cgroup is gone; all-None fields without a v2 tree."""
    try:
        return _read_pressure(paths)
    except CgroupGone:
        return None


def parse_psi(text: str | None) -> PsiTotals | None:
    """`some avg10=.. avg60=.. avg300=.. total=N` (and `full ...`): the totals.
    A line without a readable total leaves that total unknown."""
    if text is None:
        return None
    totals = dict(_TOTAL.findall(text))
    some, full = totals.get("some"), totals.get("full")
    return PsiTotals(some_us=int(some) if some else None, full_us=int(full) if full else None)


_TOTAL = re.compile(r"^(some|full)[ \t](?:[^\n]*[ \t])?total=([0-9]+)(?=[ \t]|$)", re.MULTILINE)


_ALL = frozenset({"cpu", "memory", "io"})


def _read_pressure(paths: CgroupPaths, resources: "set[str] | frozenset[str]" = _ALL) -> PressureStats:
    """`resources`: the pressure files to read (the others stay unknown)."""
    d = paths.unified
    if d is None or not resources:
        return PressureStats()
    return PressureStats(
        cpu=parse_psi(files.read(d, "cpu.pressure")) if "cpu" in resources else None,
        memory=parse_psi(files.read(d, "memory.pressure")) if "memory" in resources else None,
        io=parse_psi(files.read(d, "io.pressure")) if "io" in resources else None,
    )
