"""Per-object CRI answers fetched once, not on every scrape.

ListContainers carries no start time, exit code or termination reason
(OOMKilled), and ListPodSandbox does not say whether a pod uses the host's
network; ContainerStatus and PodSandboxStatus do, one object per call. Those
facts never change while a container stays in one state (or for a sandbox's
whole life), so each is fetched once, when first seen, and kept until the
object goes away: the scrape path pays for new objects only.

One cache serves every reader of the same answers (the containers collector
and the container log round share the ContainerStatus cache; the containers
and container_fds collectors the PodSandboxStatus one), so the runtime is
asked once per object, not once per reader. A key being fetched by one
reader is waited for by another, never asked twice (they run side by side).
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, Hashable, Iterable, TypeVar

import structlog

from cri_exporter.cri import CriClient, CriError

log = structlog.get_logger(__name__)

V = TypeVar("V")


def status_key(container_id: str, state: str) -> Hashable:
    """The key of a container's ContainerStatus in a FetchOnce: the id and the
    listed state, as the id alone (the client's interned string, kept anyway)
    for a running container, most of a node's: a (id, state) tuple kept a
    container was 64 bytes, 0.3 MB at 5,000. No id is a tuple, so the keys of
    other states never meet these."""
    return container_id if state == "running" else (container_id, state)


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
        self._asking: dict[Hashable, threading.Event] = {}  # keys being fetched now, by whichever reader

    def get(self, key: Hashable) -> V | None:
        return self._entries.get(key)

    def refresh(self, client: CriClient, wanted: Iterable[tuple[Hashable, str]], keep: Callable[[Hashable], bool],
                timeout: Callable[[], float]) -> None:
        """Fetch what `wanted` (key, object id) lacks; drop keys `keep` rejects.

        Stops at the scrape's deadline; what was not fetched comes next time.
        """
        self.retain(keep)
        for key, object_id in wanted:
            known = self._entries.get(key)
            if known is not None and self._settled(known):
                continue
            t = timeout()
            if t <= 0.01:
                return
            self._ask(client, key, object_id, t)

    def fetch(self, client: CriClient, key: Hashable, object_id: str, timeout: float) -> V | None:
        """The answer for `key`, settled or not: kept, else asked now (and kept)."""
        known = self._entries.get(key)
        return known if known is not None else self._ask(client, key, object_id, timeout)

    def retain(self, keep: Callable[[Hashable], bool]) -> None:
        with self._lock:
            for key in [k for k in self._entries if not keep(k)]:
                del self._entries[key]

    def _ask(self, client: CriClient, key: Hashable, object_id: str, timeout: float) -> V | None:
        with self._lock:
            other = self._asking.get(key)
            if other is None:
                mine = self._asking[key] = threading.Event()
        if other is not None:  # another reader is asking: its answer, not a second call
            other.wait(timeout)
            return self._entries.get(key)
        try:
            value = self._fetch(client, object_id, timeout)
        except CriError as err:
            # Removed between the list and this call, most likely.
            log.debug("status call failed", id=object_id, error=str(err))
            return None
        else:
            with self._lock:
                self._entries[key] = value
            return value
        finally:
            with self._lock:
                del self._asking[key]
            mine.set()
