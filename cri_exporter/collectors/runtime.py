"""Runtime identity and conditions, from CRI Version and Status."""
from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily

from cri_exporter.collectors.base import ScrapeContext
from cri_exporter.cri import CriError
from cri_exporter.exposition import AnyFamily


class RuntimeCollector:
    """`reprobe`, when the endpoint was found by probing, looks for a runtime
    again and says whether the client now talks to another endpoint: an agent
    started before the runtime (or on a node whose runtime changed) finds it
    without a restart."""

    name = "runtime"

    def __init__(self, reprobe: Callable[[], bool] | None = None):
        self.reprobe = reprobe

    def collect(self, ctx: ScrapeContext) -> Iterable[AnyFamily]:
        try:
            version = ctx.client.version(timeout=ctx.rpc_timeout())
        except CriError:
            if self.reprobe is None or not self.reprobe():
                raise
            version = ctx.client.version(timeout=ctx.rpc_timeout())
        ctx.runtime_up = True
        info = GaugeMetricFamily(
            "cri_runtime_info",
            "The container runtime's name and versions, from CRI Version; always 1.",
            labels=["runtime_name", "runtime_version", "runtime_api_version", "endpoint"],
        )
        info.add_metric(
            [version.runtime_name, version.runtime_version, version.runtime_api_version, ctx.client.endpoint], 1.0
        )
        yield info

        status = ctx.client.status(timeout=ctx.rpc_timeout())
        cond = GaugeMetricFamily(
            "cri_runtime_condition",
            "Each condition CRI Status reports (RuntimeReady, NetworkReady, ...): 1 true, 0 false.",
            labels=["condition", "reason"],
        )
        seen: set[str] = set()
        for c in status.conditions:
            if c.type in seen:  # a runtime repeating a condition must not make duplicate series
                continue
            seen.add(c.type)
            cond.add_metric([c.type, c.reason], 1.0 if c.status else 0.0)
        yield cond
