"""Runtime identity and conditions, from CRI Version and Status."""
from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily

from cri_exporter.collectors.base import ScrapeContext
from cri_exporter.cri import CriError, model
from cri_exporter.cri.client import socket_identity as _socket_identity
from cri_exporter.exposition import AnyFamily


class RuntimeCollector:
    """`reprobe`, when the endpoint was found by probing, looks for a runtime
    again and says whether the client now talks to another endpoint: an agent
    started before the runtime (or on a node whose runtime changed) finds it
    without a restart.

    Version is asked once per runtime instance, not every scrape: a runtime
    cannot change its version without restarting, and a restart re-creates
    its socket (a new inode), which drops the answer kept (as does another
    endpoint, or any failed call). The scrape still proves the runtime
    answers: Status, asked every scrape, is what sets cri_up then. Where
    Status is not asked (cri_runtime_condition denied) or the endpoint is
    not a unix socket, Version is asked every scrape as before. A call less
    a scrape: a tenth of the fixed CRI cost at 10 containers."""

    name = "runtime"
    # cri_up comes from this collector's Version call (or Status, see above) and is never filtered: it always runs.
    families = ("cri_up", "cri_runtime_info", "cri_runtime_condition")

    def __init__(self, reprobe: Callable[[], bool] | None = None):
        self.reprobe = reprobe
        # (endpoint, socket identity, the answer), identity read before the call.
        self._kept: tuple[str, tuple[int, int, int], model.RuntimeVersion] | None = None

    def collect(self, ctx: ScrapeContext) -> Iterable[AnyFamily]:
        statuses = ctx.wants("cri_runtime_condition")
        version = self._kept_version(ctx.client.endpoint) if statuses else None
        status = None
        if version is not None:
            try:
                status = ctx.client.status(timeout=ctx.rpc_timeout())
            except CriError:
                self._kept = None
                version = None  # ask Version as an agent without it would, then fail as it would
        if version is None:
            identity = _socket_identity(ctx.client.endpoint)
            try:
                version = ctx.client.version(timeout=ctx.rpc_timeout())
            except CriError:
                if self.reprobe is None or not self.reprobe():
                    raise
                identity = _socket_identity(ctx.client.endpoint)
                version = ctx.client.version(timeout=ctx.rpc_timeout())
            if identity is not None:
                self._kept = (ctx.client.endpoint, identity, version)
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

        if not ctx.wants("cri_runtime_condition"):
            return
        if status is None:
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

    def _kept_version(self, endpoint: str) -> model.RuntimeVersion | None:
        """The Version answer kept, if the same runtime instance still listens."""
        kept = self._kept
        if kept is None or kept[0] != endpoint or _socket_identity(endpoint) != kept[1]:
            self._kept = None
            return None
        return kept[2]

