"""Helpers shared by the area modules."""
from __future__ import annotations

from cri_exporter.cri.client import CriError
from cri_exporter.doctor.model import Finding, skipped


def not_this_runtime(ctx, kind: str) -> Finding | None:
    """A skip when the node does not run `kind` ("containerd" or "crio")."""
    found = ctx.runtime_kind
    if found == kind:
        return None
    return skipped(f"{kind} is not this node's runtime" + (f" ({found} is)" if found else " (none found)"))


def runtime_version(ctx) -> tuple[int, int] | None:
    """(major, minor) of the runtime answering CRI, None when unknown."""
    v = ctx.cri("version")
    if isinstance(v, CriError):
        return None
    digits = v.runtime_version.lstrip("v").split("-")[0].split(".")
    try:
        return int(digits[0]), int(digits[1])
    except (IndexError, ValueError):
        return None


def toml_snippet(table: str, *lines: str) -> str:
    return "\n".join([f"[{table}]"] + [f"  {line}" for line in lines])
