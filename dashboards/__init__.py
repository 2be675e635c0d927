"""Grafana dashboards for cri-exporter, generated from code.

`python -m codegen` rewrites the JSON files beside this package from the
builders; `python -m codegen --check` fails if they are out of date.
Never edit the JSON by hand.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from dashboards import node_overview, pod_detail, runtime_health
from dashboards.common import render

DIR = Path(__file__).resolve().parent

#: file name -> builder
BOARDS: dict[str, Callable[[], dict]] = {
    "node-overview.json": node_overview.build,
    "pod-detail.json": pod_detail.build,
    "runtime-health.json": runtime_health.build,
}


def generate() -> dict[str, str]:
    """{file name: JSON text} of every dashboard."""
    return {name: render(build()) for name, build in BOARDS.items()}
