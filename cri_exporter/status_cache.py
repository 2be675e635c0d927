"""ContainerStatus answers, fetched once per container and state.

ListContainers does not carry a container's start time, exit code or
termination reason (OOMKilled); ContainerStatus does, one container per call.
Those facts never change while the container stays in one state, so each is
fetched once when a container is first seen in a state and kept until the
container goes away: the scrape path pays for new containers only.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable

import structlog

from cri_exporter.cri import CriClient, CriError, model

log = structlog.get_logger(__name__)


class ContainerStatusCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, model.ContainerStatus]] = {}

    def get(self, container: model.Container) -> model.ContainerStatus | None:
        entry = self._entries.get(container.id)
        if entry is not None and entry[0] == container.state:
            return entry[1]
        return None

    def refresh(
        self,
        client: CriClient,
        wanted: Iterable[model.Container],
        live_ids: set[str],
        timeout: Callable[[], float],
    ) -> None:
        """Fetch what is missing for `wanted`, drop containers no longer listed.

        Stops at the scrape's deadline; what was not fetched comes next time.
        """
        with self._lock:
            for gone in self._entries.keys() - live_ids:
                del self._entries[gone]
        for c in wanted:
            if self.get(c) is not None:
                continue
            t = timeout()
            if t <= 0.01:
                return
            try:
                status = client.container_status(c.id, timeout=t)
            except CriError as err:
                # Removed between the list and this call, most likely.
                log.debug("ContainerStatus failed", container_id=c.id, error=str(err))
                continue
            with self._lock:
                self._entries[c.id] = (c.state, status)
