"""Per-object CRI answers fetched once, not on every scrape.

ListContainers carries no start time, exit code or termination reason
(OOMKilled), and ListPodSandbox does not say whether a pod uses the host's
network; ContainerStatus and PodSandboxStatus do, one object per call. Those
facts never change while a container stays in one state (or for a sandbox's
whole life), so each is fetched once, when first seen, and kept until the
object goes away: the scrape path pays for new objects only.
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, Hashable, Iterable, TypeVar

import structlog

from cri_exporter.cri import CriClient, CriError

log = structlog.get_logger(__name__)

V = TypeVar("V")


class FetchOnce(Generic[V]):
    """`fetch(client, object_id, timeout)` answers, kept per key (e.g. id + state).

    An answer that `settled` rejects is asked again on the next refresh.
    """

    def __init__(self, fetch: Callable[[CriClient, str, float], V],
                 settled: Callable[[V], bool] = lambda value: True):
        self._fetch = fetch
        self._settled = settled
        self._lock = threading.Lock()
        self._entries: dict[Hashable, V] = {}

    def get(self, key: Hashable) -> V | None:
        return self._entries.get(key)

    def refresh(self, client: CriClient, wanted: Iterable[tuple[Hashable, str]], keep: Callable[[Hashable], bool],
                timeout: Callable[[], float]) -> None:
        """Fetch what `wanted` (key, object id) lacks; drop keys `keep` rejects.

        Stops at the scrape's deadline; what was not fetched comes next time.
        """
        with self._lock:
            for key in [k for k in self._entries if not keep(k)]:
                del self._entries[key]
        for key, object_id in wanted:
            known = self._entries.get(key)
            if known is not None and self._settled(known):
                continue
            t = timeout()
            if t <= 0.01:
                return
            try:
                value = self._fetch(client, object_id, t)
            except CriError as err:
                # Removed between the list and this call, most likely.
                log.debug("status call failed", id=object_id, error=str(err))
                continue
            with self._lock:
                self._entries[key] = value
